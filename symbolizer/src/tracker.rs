//! Follows address spaces during a capture: applies tracking records and /proc
//! snapshots to the mapping history, opening each object when it first appears.

use std::collections::BTreeSet;
use std::io;

use crate::history::{Mapping, MappingHistory, Resolved};
use crate::objects::{ObjectId, ObjectStore, ANONYMOUS};
use crate::perfmap::PerfMaps;
use crate::processes::Processes;
use crate::procmaps;
use crate::python::PythonNames;
use crate::records::{FileId, Record};

const PROT_EXEC: u32 = 4;

/// Mapping history plus the objects it names.
#[derive(Debug)]
pub struct Tracker {
    /// Address spaces over time.
    pub history: MappingHistory,
    /// Objects the mappings name.
    pub objects: ObjectStore,
    /// JIT symbol maps of processes with anonymous executable memory.
    pub perf_maps: PerfMaps,
    /// Executable, command name and cgroup of each process, read at first sight
    /// and at exec: the labels of its samples.
    pub processes: Processes,
    /// Names of the Python code objects of processes that run CPython.
    pub python: PythonNames,
    /// Processes with anonymous executable memory: where JIT code can be.
    jit_pids: BTreeSet<u32>,
    /// Processes whose address space changed since [`Tracker::take_changed`].
    changed: BTreeSet<u32>,
    /// Processes whose thread-group leader exited while other threads lived on:
    /// the process (its mappings, its unwind tables) lasts until the last of them.
    leaders_gone: BTreeSet<u32>,
    /// How many threads a process has now, zombie leader included; None once it
    /// is gone. /proc, but a test puts its own in.
    threads_of: fn(u32) -> Option<u32>,
    lost_records: u64,
}

impl Default for Tracker {
    fn default() -> Tracker {
        Tracker::new()
    }
}

/// The `Threads:` line of /proc/PID/status: the threads of the group that have
/// not been reaped, a zombie leader among them.
fn proc_threads(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
}

impl Tracker {
    /// An empty tracker.
    pub fn new() -> Tracker {
        Tracker {
            history: MappingHistory::new(),
            objects: ObjectStore::new(),
            perf_maps: PerfMaps::new(),
            processes: Processes::new(),
            python: PythonNames::default(),
            jit_pids: BTreeSet::new(),
            changed: BTreeSet::new(),
            leaders_gone: BTreeSet::new(),
            threads_of: proc_threads,
            lost_records: 0,
        }
    }

    /// Applies one tracking record. Records must come in time order.
    pub fn apply(&mut self, record: &Record) {
        match record {
            Record::Mmap(m) => {
                if m.prot & PROT_EXEC == 0 {
                    return;
                }
                let end = m.start.saturating_add(m.len);
                let id = self.objects.observe(m.pid, m.start, end, &m.path, &m.file);
                self.history
                    .map_at(m.pid, m.start, m.len, m.pgoff, id, m.time);
                self.note_object(m.pid, id, &m.path);
                self.changed.insert(m.pid);
                self.processes.first_sight(m.pid);
            }
            Record::Comm(c) if c.exec => {
                // exec leaves one thread, the group's leader from then on
                self.leaders_gone.remove(&c.pid);
                self.history.exec(c.pid, c.time);
                self.processes.exec(c.pid, &c.comm);
                self.changed.insert(c.pid);
            }
            Record::Comm(_) => {}
            Record::Fork(t) => {
                if t.ppid != t.pid {
                    // the pid names a new process: any old one is over
                    self.leaders_gone.remove(&t.pid);
                    self.python.fork(t.ppid, t.pid);
                }
                self.history.fork(t.ppid, t.pid, t.time);
                if t.ppid != t.pid {
                    self.changed.insert(t.pid);
                    self.processes.fork(t.ppid, t.pid);
                }
            }
            Record::Exit(t) => {
                // A leader that leaves with pthread_exit sends its exit record
                // first; the threads that outlive it still run in its mappings.
                let leader = t.pid == t.tid;
                if leader && (self.threads_of)(t.pid).is_some_and(|n| n > 1) {
                    self.leaders_gone.insert(t.pid);
                } else if leader || self.leaders_gone.contains(&t.pid) {
                    self.end_of_threads(t.pid, t.time);
                }
            }
            Record::Lost { lost, .. } => self.lost_records += lost,
        }
    }

    /// Anonymous executable memory may hold JIT code: learn the process's user
    /// while it lives (for the perf map's ownership check) and read its map.
    /// The kernel's own executable pages ([vsyscall], which every x86-64 process
    /// shows, and uprobe trampolines) are no JIT's: they would make every process
    /// one whose perf map is looked for at every tick.
    fn note_object(&mut self, pid: u32, object: ObjectId, path: &str) {
        let kernels = path == "[vsyscall]" || path.starts_with("[uprobes]");
        if object == ANONYMOUS && !kernels && self.jit_pids.insert(pid) {
            self.perf_maps.learn_uid(pid);
            self.perf_maps.refresh(pid);
        }
    }

    /// Whether something must be looked at again with no record to say so: a
    /// process whose leader exited (its last thread's exit is read from /proc),
    /// or a JIT process whose perf map grows.
    pub fn wants_ticks(&self) -> bool {
        !self.leaders_gone.is_empty() || !self.jit_pids.is_empty()
    }

    /// Ends, at `time`, the processes whose leader exited before and whose other
    /// threads are gone by now: called as records are applied, since the exit
    /// record of the last thread may come while the kernel still counts it.
    pub fn check_leaders_gone(&mut self, time: u64) {
        let pids: Vec<u32> = self.leaders_gone.iter().copied().collect();
        for pid in pids {
            self.end_of_threads(pid, time);
        }
    }

    /// `pid` exited at `time` if no thread but its zombie leader is left.
    fn end_of_threads(&mut self, pid: u32, time: u64) {
        if (self.threads_of)(pid).is_some_and(|n| n > 1) {
            return;
        }
        self.leaders_gone.remove(&pid);
        self.history.exit(pid, time);
        self.changed.insert(pid);
    }

    /// Reads again the perf maps that changed since they were last read; called
    /// while the capture runs, since a runtime adds functions as it compiles them
    /// and may delete its map when it exits.
    pub fn refresh_perf_maps(&mut self) {
        for &pid in &self.jit_pids {
            self.perf_maps.refresh(pid);
        }
    }

    /// Forgets processes that exited before `time` and closes the objects no
    /// remaining process maps; returns the paths those objects were read from, for
    /// the symbolizer to drop their caches.
    pub fn forget_exited_before(&mut self, time: u64) -> Vec<std::path::PathBuf> {
        let gone = self.history.forget_exited_before(time);
        if gone.is_empty() {
            return Vec::new();
        }
        for pid in &gone {
            self.jit_pids.remove(pid);
            self.perf_maps.forget(*pid);
            self.python.forget(*pid);
        }
        self.processes.forget(&gone);
        let in_use = self.history.objects_in_use();
        self.objects.prune(&in_use)
    }

    /// Tracking records the kernel dropped because the ring buffer was full.
    pub fn lost_records(&self) -> u64 {
        self.lost_records
    }

    /// Adds what `/proc/PID/maps` says of a process that was running before
    /// tracking started.
    pub fn snapshot(&mut self, pid: u32) -> io::Result<()> {
        self.processes.first_sight(pid);
        for m in procmaps::read(pid)?.into_iter().filter(|m| m.exec) {
            let file = FileId::Inode {
                major: m.major,
                minor: m.minor,
                ino: m.ino,
                generation: 0,
            };
            let object = self.objects.observe(pid, m.start, m.end, &m.path, &file);
            self.note_object(pid, object, &m.path);
            self.history.map_from_snapshot(
                pid,
                Mapping {
                    start: m.start,
                    end: m.end,
                    pgoff: m.offset,
                    object,
                },
            );
        }
        self.changed.insert(pid);
        Ok(())
    }

    /// The processes whose address space changed (mapped, exec'd, forked, exited,
    /// snapshotted) since the last call, for whoever mirrors address spaces
    /// elsewhere (the BPF unwinder's per-process tables).
    pub fn take_changed(&mut self) -> BTreeSet<u32> {
        std::mem::take(&mut self.changed)
    }

    /// Snapshots every process in /proc; processes that vanish meanwhile are skipped.
    pub fn snapshot_all(&mut self) {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in dir.flatten() {
            if let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
                let _ = self.snapshot(pid);
            }
        }
    }

    /// Resolves a user address of `pid` to (object, file offset).
    pub fn resolve(&self, pid: u32, addr: u64) -> Option<Resolved> {
        self.history.resolve(pid, addr)
    }

    /// The JIT function of `pid` at `addr`, from its perf map.
    pub fn jit_symbol(&self, pid: u32, addr: u64) -> Option<&str> {
        self.perf_maps.resolve(pid, addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{Comm, Mmap, Task};

    #[test]
    fn records_build_address_spaces_that_outlive_the_process() {
        let exe = std::env::current_exe().unwrap();
        let path = exe.to_str().unwrap().to_string();
        let mut t = Tracker::new();
        let mmap = |pid, start, prot| {
            Record::Mmap(Mmap {
                pid,
                tid: pid,
                start,
                len: 0x1000,
                pgoff: 0x2000,
                file: FileId::Unknown,
                prot,
                path: path.clone(),
                time: 1,
            })
        };
        t.apply(&mmap(100, 0x10000, PROT_EXEC));
        t.apply(&mmap(100, 0x50000, 1)); // not executable: ignored
        t.apply(&Record::Fork(Task {
            pid: 101,
            ppid: 100,
            tid: 101,
            ptid: 100,
            time: 2,
        }));
        t.apply(&Record::Exit(Task {
            pid: 101,
            ppid: 100,
            tid: 101,
            ptid: 100,
            time: 3,
        }));
        t.apply(&Record::Comm(Comm {
            pid: 100,
            tid: 100,
            comm: "new".into(),
            exec: true,
            time: 4,
        }));
        t.apply(&Record::Lost { lost: 3, time: 5 });
        assert_eq!(t.lost_records(), 3);
        let r = t.resolve(101, 0x10010).expect("inherited by fork");
        assert_eq!(r.offset, 0x2010);
        assert_eq!(t.objects.get(r.object).path, path);
        assert!(t.history.has_exited(101));
        assert_eq!(t.resolve(100, 0x50010), None);
        // the exec'd process keeps its old image for old addresses
        assert!(t.resolve(100, 0x10010).is_some());
    }

    static THREADS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

    fn fake_threads(_pid: u32) -> Option<u32> {
        match THREADS.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }

    fn exit(pid: u32, tid: u32, time: u64) -> Record {
        Record::Exit(Task {
            pid,
            ppid: 1,
            tid,
            ptid: 1,
            time,
        })
    }

    #[test]
    fn a_process_lasts_until_its_last_thread_not_its_leader() {
        use std::sync::atomic::Ordering::Relaxed;
        let mut t = Tracker::new();
        t.threads_of = fake_threads;
        for pid in [300, 400, 500] {
            t.history.fork(1, pid, 1);
        }
        // the leader leaves with pthread_exit; a thread and the zombie are left
        assert!(!t.wants_ticks());
        THREADS.store(2, Relaxed);
        t.apply(&exit(300, 300, 10));
        assert!(!t.history.has_exited(300));
        // nothing will say when the last thread goes: the loop must look
        assert!(t.wants_ticks());
        t.check_leaders_gone(11);
        assert!(!t.history.has_exited(300));
        // the last thread's record comes while the kernel still counts it
        t.apply(&exit(300, 301, 20));
        assert!(!t.history.has_exited(300));
        // then only the zombie leader is left
        THREADS.store(1, Relaxed);
        t.check_leaders_gone(25);
        assert!(t.history.has_exited(300));
        assert!(!t.wants_ticks());
        // a leader that is the last thread ends the process at once
        THREADS.store(1, Relaxed);
        t.apply(&exit(400, 400, 30));
        assert!(t.history.has_exited(400));
        // an exec by a surviving thread makes it the leader: the process goes on
        THREADS.store(2, Relaxed);
        t.apply(&exit(500, 500, 40));
        t.apply(&Record::Comm(Comm {
            pid: 500,
            tid: 500,
            comm: "next".into(),
            exec: true,
            time: 41,
        }));
        THREADS.store(1, Relaxed);
        t.check_leaders_gone(42);
        assert!(!t.history.has_exited(500));
    }

    #[test]
    fn snapshot_of_ourselves_resolves_our_code() {
        let mut t = Tracker::new();
        t.snapshot(std::process::id()).unwrap();
        let addr = snapshot_of_ourselves_resolves_our_code as *const () as usize as u64;
        let r = t.resolve(std::process::id(), addr).unwrap();
        let exe = std::env::current_exe().unwrap();
        assert_eq!(t.objects.get(r.object).path, exe.to_str().unwrap());
        // [vsyscall] (where the kernel shows it) is executable and anonymous,
        // but no JIT's: no perf map to look for
        assert!(!t.jit_pids.contains(&std::process::id()));
    }
}
