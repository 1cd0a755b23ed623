//! What a process was when it was first seen (and again at each exec): its
//! executable, its command name and its cgroup, read from /proc while it lives.
//!
//! Windows are written after the processes in them have often exited, so these
//! facts are captured when the tracking records first name a process, not when its
//! samples are named. Everything read here comes from a process that may be
//! hostile (a command name, a path it chose): each read is bounded, and a process
//! gone meanwhile simply has no facts.

use std::collections::HashMap;
use std::io::Read;

/// The most bytes of /proc/PID/cgroup read: v2 has one line, v1 hierarchies
/// a dozen.
const MAX_CGROUP_FILE: u64 = 16 << 10;
/// The longest cgroup path kept; a longer one is left out rather than cut, as a
/// cut path would name another cgroup. Kubernetes paths are under 250 bytes.
pub const MAX_CGROUP_PATH: usize = 1024;
/// The longest executable path kept (PATH_MAX).
const MAX_EXE_PATH: usize = 4096;

/// The facts of one process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    /// The executable (`/proc/PID/exe`), without ` (deleted)`; `None` for kernel
    /// threads and when it could not be read.
    pub exe: Option<String>,
    /// The command name of the process (its main thread), when read.
    pub comm: Option<String>,
    /// The cgroup v2 path (`0::/…` in /proc/PID/cgroup), when the process is in
    /// the unified hierarchy.
    pub cgroup: Option<String>,
    /// The build id of the executable, filled in from the mapped objects when a
    /// capture is located (see `Processes` users).
    pub exe_build_id: Option<Vec<u8>>,
}

impl ProcessInfo {
    /// Reads the facts of `pid` now; `None` when the process is gone.
    pub fn read(pid: u32) -> Option<ProcessInfo> {
        let dir = format!("/proc/{pid}");
        let cgroup = read_bounded(&format!("{dir}/cgroup"), MAX_CGROUP_FILE)?;
        let exe = std::fs::read_link(format!("{dir}/exe"))
            .ok()
            .and_then(|p| p.into_os_string().into_string().ok())
            .map(|p| match p.strip_suffix(" (deleted)") {
                Some(live) => live.to_string(),
                None => p,
            })
            .filter(|p| p.len() <= MAX_EXE_PATH);
        let comm = read_bounded(&format!("{dir}/comm"), 64)
            .map(|c| c.trim_end_matches('\n').to_string())
            .filter(|c| !c.is_empty());
        Some(ProcessInfo {
            exe,
            comm,
            cgroup: unified_cgroup(&cgroup),
            exe_build_id: None,
        })
    }
}

fn read_bounded(path: &str, max: u64) -> Option<String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(max)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// The cgroup v2 path of a /proc/PID/cgroup text: the `0::PATH` line.
pub fn unified_cgroup(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::trim_end)
        .filter(|p| !p.is_empty() && p.len() <= MAX_CGROUP_PATH)
        .map(str::to_string)
}

/// The facts of every process the tracking records named, until it is forgotten.
#[derive(Debug, Default)]
pub struct Processes {
    known: HashMap<u32, ProcessInfo>,
}

impl Processes {
    /// An empty table.
    pub fn new() -> Processes {
        Processes::default()
    }

    /// Reads `pid`'s facts the first time it is seen.
    pub fn first_sight(&mut self, pid: u32) {
        if !self.known.contains_key(&pid) {
            self.read(pid);
        }
    }

    /// Reads `pid`'s facts again (it exec'd: another executable, maybe another
    /// cgroup, as a container runtime moves it before the exec).
    pub fn read(&mut self, pid: u32) {
        if let Some(info) = ProcessInfo::read(pid) {
            self.known.insert(pid, info);
        }
    }

    /// `pid` exec'd, taking the command name `comm`: its facts are read again.
    /// When it is gone already, what it was before the exec (its parent's
    /// executable, as a fork) is wrong: only the cgroup is kept, with `comm`.
    pub fn exec(&mut self, pid: u32, comm: &str) {
        if let Some(info) = ProcessInfo::read(pid) {
            self.known.insert(pid, info);
        } else if let Some(info) = self.known.get_mut(&pid) {
            info.exe = None;
            info.exe_build_id = None;
            info.comm = Some(comm.to_string());
        }
    }

    /// A new process: a fork has its parent's executable and cgroup until it
    /// execs (when they are read again), so they are copied, not read: a build
    /// forks thousands of times a second. Read only when the parent is unknown.
    pub fn fork(&mut self, parent: u32, child: u32) {
        match self.known.get(&parent).cloned() {
            Some(info) => {
                self.known.insert(child, info);
            }
            None => self.read(child),
        }
    }

    /// The facts of `pid`, if known.
    pub fn get(&self, pid: u32) -> Option<&ProcessInfo> {
        self.known.get(&pid)
    }

    /// Forgets processes that are gone.
    pub fn forget(&mut self, pids: &[u32]) {
        for pid in pids {
            self.known.remove(pid);
        }
    }

    /// Processes known.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// Whether none is known.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unified_line_is_the_path() {
        let v1_and_v2 =
            "12:pids:/user.slice\n1:name=systemd:/init.scope\n0::/system.slice/docker-abc.scope\n";
        assert_eq!(
            unified_cgroup(v1_and_v2).as_deref(),
            Some("/system.slice/docker-abc.scope")
        );
        assert_eq!(unified_cgroup("3:cpu:/a\n"), None);
        let long = format!("0::/{}\n", "a".repeat(MAX_CGROUP_PATH + 1));
        assert_eq!(unified_cgroup(&long), None, "too long: left out, not cut");
    }

    #[test]
    fn our_own_facts_are_read() {
        let me = ProcessInfo::read(std::process::id()).expect("we live");
        let exe = std::env::current_exe().unwrap();
        assert_eq!(me.exe.as_deref(), exe.to_str());
        assert!(me.comm.is_some());
        assert_eq!(ProcessInfo::read(u32::MAX), None);
    }

    #[test]
    fn a_fork_gone_at_once_inherits_its_parents_facts() {
        let mut p = Processes::new();
        p.first_sight(std::process::id());
        p.fork(std::process::id(), u32::MAX - 1);
        assert_eq!(p.get(u32::MAX - 1), p.get(std::process::id()));
        // it exec'd and exited before the record was read
        p.exec(u32::MAX - 1, "child");
        let child = p.get(u32::MAX - 1).unwrap();
        assert_eq!(child.exe, None, "not the parent's executable");
        assert_eq!(child.comm.as_deref(), Some("child"));
        assert_eq!(child.cgroup, p.get(std::process::id()).unwrap().cgroup);
        p.forget(&[u32::MAX - 1]);
        assert_eq!(p.len(), 1);
    }
}
