//! What to profile: processes by pid, a command, or the whole machine, checked
//! before anything starts.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{bail, Result};

/// The validated target of a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// These processes (thread group ids), all their threads.
    Pids(Vec<u32>),
    /// A command to run: the resolved program and its argv (argv[0] included).
    Command {
        /// The program, resolved through $PATH.
        program: PathBuf,
        /// Its arguments, argv[0] included.
        args: Vec<OsString>,
    },
    /// Everything on every CPU.
    All,
}

impl Target {
    /// Picks and checks the target from the command line: every pid must name a
    /// running process (a thread id stands for its process), and the command must
    /// be found and executable.
    pub fn from_args(pids: &[u32], all: bool, command: &[OsString]) -> Result<Target> {
        let chosen =
            usize::from(!pids.is_empty()) + usize::from(all) + usize::from(!command.is_empty());
        if chosen == 0 {
            bail!("nothing to profile: give -p PID, -a (the whole machine), or -- COMMAND");
        }
        if chosen > 1 {
            bail!("choose one target: -p PID, -a, or -- COMMAND");
        }
        if all {
            return Ok(Target::All);
        }
        if let Some(program) = command.first() {
            let Some(resolved) = crate::capture::gated::resolve(program) else {
                bail!("command not found: {}", program.to_string_lossy());
            };
            return Ok(Target::Command {
                program: resolved,
                args: command.to_vec(),
            });
        }
        let mut tgids = Vec::with_capacity(pids.len());
        for &pid in pids {
            let Some(tgid) = tgid_of(pid) else {
                bail!("no such process: {pid}");
            };
            if !tgids.contains(&tgid) {
                tgids.push(tgid);
            }
        }
        Ok(Target::Pids(tgids))
    }

    /// How the target reads in titles: `pid 12`, `command ./demo`, `all CPUs`.
    pub fn describe(&self) -> String {
        match self {
            Target::Pids(p) if p.len() == 1 => format!("pid {}", p[0]),
            Target::Pids(p) => format!(
                "pids {}",
                p.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
            ),
            Target::Command { args, .. } => {
                let words: Vec<String> = args
                    .iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect();
                format!("command {}", words.join(" "))
            }
            Target::All => "all CPUs".to_string(),
        }
    }
}

/// The process a task id belongs to, from /proc/PID/status; `None` when no task
/// has that id.
fn tgid_of(pid: u32) -> Option<u32> {
    if pid == 0 {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_target() {
        let e = Target::from_args(&[], false, &[]).unwrap_err().to_string();
        assert!(e.starts_with("nothing to profile"), "{e}");
        assert!(Target::from_args(&[1], true, &[]).is_err());
        assert_eq!(Target::from_args(&[], true, &[]).unwrap(), Target::All);
    }

    #[test]
    fn pids_must_exist_and_threads_map_to_their_process() {
        let me = std::process::id();
        assert_eq!(
            Target::from_args(&[me, me], false, &[]).unwrap(),
            Target::Pids(vec![me])
        );
        let e = Target::from_args(&[0], false, &[]).unwrap_err().to_string();
        assert_eq!(e, "no such process: 0");
        let e = Target::from_args(&[u32::MAX - 1], false, &[])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("no such process"));
        // a thread id stands for its process
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let h = std::thread::spawn(move || {
            tx.send(unsafe { libc::gettid() } as u32).unwrap();
            done_rx.recv().unwrap();
        });
        let live = rx.recv().unwrap();
        assert_eq!(
            Target::from_args(&[live], false, &[]).unwrap(),
            Target::Pids(vec![me])
        );
        done_tx.send(()).unwrap();
        h.join().unwrap();
    }

    #[test]
    fn commands_are_resolved_or_refused() {
        let t = Target::from_args(&[], false, &["sh".into(), "-c".into(), "true".into()]).unwrap();
        assert!(matches!(&t, Target::Command { program, .. } if program.ends_with("sh")));
        assert_eq!(t.describe(), "command sh -c true");
        let e = Target::from_args(&[], false, &["flamebpf-no-such-cmd".into()]).unwrap_err();
        assert_eq!(e.to_string(), "command not found: flamebpf-no-such-cmd");
    }
}
