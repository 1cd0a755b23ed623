//! JIT symbol maps: `/tmp/perf-PID.map`, as Node (`--perf-basic-prof`), Java's
//! perf-map-agent and Python 3.12 (`-X perf`) write them: `START SIZE NAME` lines,
//! hexadecimal, one per generated function.
//!
//! A map is trusted only when it is a regular file (not a link) owned by the
//! process's user or by root, as perf does: anyone can write /tmp, and a planted
//! map would put false names in a profile.
//!
//! The file is opened once with `O_NOFOLLOW | O_NONBLOCK` and the checks are made on
//! the opened file (fstat), so nothing can be swapped in between a check and the
//! read, and a FIFO cannot block the reader. A root process reads it, so it is read
//! only up to [`MAX_MAP_BYTES`] and [`MAX_MAP_LINES`]: a sparse 2 GB map would
//! otherwise cost gigabytes and seconds at every read.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The most of a map file that is read. Node's maps grow by about 100 bytes a
/// compiled function; 64 MiB is over half a million functions.
pub const MAX_MAP_BYTES: u64 = 64 << 20;
/// The most lines of a map file that are read.
pub const MAX_MAP_LINES: usize = 1 << 20;

/// One process's JIT symbols, sorted by start address.
#[derive(Debug, Default, Clone)]
pub struct PerfMap {
    entries: Vec<(u64, u64, String)>,
}

impl PerfMap {
    /// Parses map text; malformed lines are skipped, as perf skips them.
    pub fn parse(text: &str) -> PerfMap {
        PerfMap::parse_bytes(text.as_bytes(), usize::MAX).0
    }

    /// Parses at most `max_lines` lines of map bytes (names need not be UTF-8);
    /// true when lines were left unread.
    pub fn parse_bytes(bytes: &[u8], max_lines: usize) -> (PerfMap, bool) {
        let mut lines = bytes.split(|&b| b == b'\n');
        let mut entries: Vec<(u64, u64, String)> = lines
            .by_ref()
            .take(max_lines)
            .filter_map(|line| {
                let line = String::from_utf8_lossy(line);
                let mut parts = line.splitn(3, ' ');
                let start = u64::from_str_radix(parts.next()?.trim_start_matches("0x"), 16).ok()?;
                let size = u64::from_str_radix(parts.next()?.trim_start_matches("0x"), 16).ok()?;
                let name = parts.next()?.trim();
                (size > 0 && !name.is_empty()).then(|| (start, size, name.to_string()))
            })
            .collect();
        let more = lines.any(|l| !l.is_empty());
        entries.sort_by_key(|e| e.0);
        (PerfMap { entries }, more)
    }

    /// The function whose code covers `addr`.
    pub fn resolve(&self, addr: u64) -> Option<&str> {
        let i = self
            .entries
            .partition_point(|e| e.0 <= addr)
            .checked_sub(1)?;
        let (start, size, name) = &self.entries[i];
        (addr < start.saturating_add(*size)).then_some(name.as_str())
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map names nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Why a map file is not trusted, if it is not: `owner` is the file's uid,
/// `process_uid` the process's (when known).
pub fn distrust(
    is_file: bool,
    is_link: bool,
    owner: u32,
    process_uid: Option<u32>,
) -> Option<String> {
    if is_link {
        return Some("it is a symbolic link".into());
    }
    if !is_file {
        return Some("it is not a regular file".into());
    }
    if owner == 0 || Some(owner) == process_uid {
        return None;
    }
    Some(match process_uid {
        Some(uid) => format!(
            "it is owned by uid {owner}, but the process runs as uid {uid} (only maps of the \
             process's user or root are trusted, as by perf); a leftover of an earlier process? delete it"
        ),
        None => format!("it is owned by uid {owner}, not root, and the process's user is unknown"),
    })
}

/// When `pid` started, in seconds since the epoch: a map file older than its
/// process was written by an earlier process that had the same pid.
fn process_start(pid: u32) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // field 22, counted after the command name (which may hold spaces)
    let ticks: i64 = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()?;
    let boot: i64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| boot + ticks / hz)
}

/// The perf maps of the processes that have JIT code, read while they live and kept
/// after they exit.
#[derive(Debug, Default)]
pub struct PerfMaps {
    maps: HashMap<u32, PerfMap>,
    /// (mtime, size) of the file last read, so unchanged maps are not read again.
    seen: HashMap<u32, (i64, u64, u32)>,
    /// Process uids, learned while the processes were alive.
    uids: HashMap<u32, u32>,
    /// Process start times (seconds since the epoch), learned with the uids.
    starts: HashMap<u32, i64>,
    warned: HashMap<PathBuf, ()>,
    warnings: Vec<String>,
    dir: PathBuf,
}

impl PerfMaps {
    /// Maps read from /tmp.
    pub fn new() -> PerfMaps {
        PerfMaps::in_dir("/tmp")
    }

    /// Maps read from `dir` (tests).
    pub fn in_dir(dir: impl Into<PathBuf>) -> PerfMaps {
        PerfMaps {
            dir: dir.into(),
            ..PerfMaps::default()
        }
    }

    /// Notes the user of `pid` now, while it lives, for the ownership check.
    pub fn learn_uid(&mut self, pid: u32) {
        if self.uids.contains_key(&pid) {
            return;
        }
        let uid = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|v| v.split_whitespace().nth(1)?.parse().ok()) // effective uid
            });
        if let Some(uid) = uid {
            self.uids.insert(pid, uid);
        }
        if let Some(start) = process_start(pid) {
            self.starts.insert(pid, start);
        }
    }

    /// Records the uid of `pid` (tests).
    pub fn set_uid(&mut self, pid: u32, uid: u32) {
        self.uids.insert(pid, uid);
    }

    /// Records when `pid` started, in seconds since the epoch (tests).
    pub fn set_start(&mut self, pid: u32, start: i64) {
        self.starts.insert(pid, start);
    }

    /// Reads (again, if it changed) the map of `pid`.
    pub fn refresh(&mut self, pid: u32) {
        let path = self.dir.join(format!("perf-{pid}.map"));
        // One open, then checks on what was opened: no window to swap the file.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path);
        let (file, meta) = match file.and_then(|f| f.metadata().map(|m| (f, m))) {
            Ok(fm) => fm,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                self.refuse(pid, &path, "it is a symbolic link".into());
                return;
            }
            Err(_) => return,
        };
        // a change of owner (chown keeps the mtime) must be checked again too
        let stamp = (
            meta.mtime_nsec() + meta.mtime() * 1_000_000_000,
            meta.size(),
            meta.uid(),
        );
        if self.seen.get(&pid) == Some(&stamp) {
            return;
        }
        self.seen.insert(pid, stamp);
        // btime and the start are whole seconds: a second of slack
        let stale = self
            .starts
            .get(&pid)
            .is_some_and(|&start| meta.mtime() < start - 1);
        let why = if stale {
            Some(format!(
                "it is older than process {pid}, so it is stale: a leftover of an earlier \
                 process with the same pid; delete it"
            ))
        } else {
            distrust(
                meta.is_file(),
                false,
                meta.uid(),
                self.uids.get(&pid).copied(),
            )
        };
        if let Some(why) = why {
            self.refuse(pid, &path, why);
            return;
        }
        let mut bytes = Vec::new();
        if file
            .take(MAX_MAP_BYTES + 1)
            .read_to_end(&mut bytes)
            .is_err()
        {
            return;
        }
        let cut_bytes = bytes.len() as u64 > MAX_MAP_BYTES;
        if cut_bytes {
            // keep whole lines only
            let keep = bytes[..MAX_MAP_BYTES as usize]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            bytes.truncate(keep);
        }
        let (map, cut_lines) = PerfMap::parse_bytes(&bytes, MAX_MAP_LINES);
        if (cut_bytes || cut_lines) && self.warned.insert(path.clone(), ()).is_none() {
            self.warnings.push(format!(
                "the perf map of process {pid} ({}) is over {} MiB or {} lines: only its start is read",
                path.display(),
                MAX_MAP_BYTES >> 20,
                MAX_MAP_LINES
            ));
        }
        self.maps.insert(pid, map);
    }

    fn refuse(&mut self, pid: u32, path: &Path, why: String) {
        self.maps.remove(&pid);
        if self.warned.insert(path.to_path_buf(), ()).is_none() {
            self.warnings
                .push(format!("ignoring {}: {why}", path.display()));
        }
    }

    /// Drops what is known of `pid` (it exited and its samples are symbolized).
    pub fn forget(&mut self, pid: u32) {
        self.maps.remove(&pid);
        self.seen.remove(&pid);
        self.uids.remove(&pid);
        self.starts.remove(&pid);
    }

    /// The JIT function of `pid` covering `addr`.
    pub fn resolve(&self, pid: u32, addr: u64) -> Option<&str> {
        self.maps.get(&pid)?.resolve(addr)
    }

    /// Maps that were refused, one line each.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The directory maps are read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_resolves_like_perf() {
        let m = PerfMap::parse(
            "7f0000001000 40 LazyCompile:~fib /app/fib.js:1\n\
             0x7f0000002000 0x10 py::spin:/app/x.py\n\
             garbage\n\
             7f0000003000 0 empty\n",
        );
        assert_eq!(m.len(), 2);
        assert_eq!(
            m.resolve(0x7f0000001000),
            Some("LazyCompile:~fib /app/fib.js:1")
        );
        assert_eq!(
            m.resolve(0x7f000000103f),
            Some("LazyCompile:~fib /app/fib.js:1")
        );
        assert_eq!(m.resolve(0x7f0000001040), None);
        assert_eq!(m.resolve(0x7f0000002008), Some("py::spin:/app/x.py"));
        assert_eq!(m.resolve(0x10), None);
    }

    #[test]
    fn trust_follows_perf() {
        assert_eq!(distrust(true, false, 1000, Some(1000)), None);
        assert_eq!(
            distrust(true, false, 0, Some(1000)),
            None,
            "root's maps are trusted"
        );
        assert!(distrust(true, false, 1001, Some(1000))
            .unwrap()
            .contains("uid 1001"));
        assert!(distrust(true, false, 1001, None).is_some());
        assert!(distrust(true, true, 1000, Some(1000))
            .unwrap()
            .contains("symbolic link"));
        assert!(distrust(false, false, 1000, Some(1000))
            .unwrap()
            .contains("not a regular file"));
    }

    #[test]
    fn maps_are_kept_after_the_file_goes_and_links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut maps = PerfMaps::in_dir(dir.path());
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        maps.set_uid(1, me);
        std::fs::write(dir.path().join("perf-1.map"), "1000 10 jitted\n").unwrap();
        maps.refresh(1);
        std::fs::remove_file(dir.path().join("perf-1.map")).unwrap();
        maps.refresh(1);
        assert_eq!(
            maps.resolve(1, 0x1004),
            Some("jitted"),
            "kept after the file is gone"
        );

        maps.set_uid(2, me);
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), dir.path().join("perf-2.map"))
            .unwrap();
        maps.refresh(2);
        assert_eq!(maps.resolve(2, 0x1004), None);
        assert_eq!(maps.warnings().len(), 1);
        assert!(maps.warnings()[0].contains("symbolic link"));
    }

    #[test]
    fn a_map_older_than_its_process_is_stale_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let mut maps = PerfMaps::in_dir(dir.path());
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        let path = dir.path().join("perf-3.map");
        std::fs::write(&path, "1000 10 jitted\n").unwrap();
        let written = std::fs::metadata(&path).unwrap().mtime();
        maps.set_uid(3, me);
        maps.set_start(3, written + 60);
        maps.refresh(3);
        assert_eq!(maps.resolve(3, 0x1004), None);
        assert_eq!(maps.warnings().len(), 1);
        assert!(
            maps.warnings()[0].contains("stale"),
            "{:?}",
            maps.warnings()
        );
        assert!(maps.warnings()[0].contains("delete it"));

        // the same file for a process that started before it was written is used
        let mut maps = PerfMaps::in_dir(dir.path());
        maps.set_uid(3, me);
        maps.set_start(3, written - 60);
        maps.refresh(3);
        assert_eq!(maps.resolve(3, 0x1004), Some("jitted"));
        assert!(maps.warnings().is_empty());
    }

    #[test]
    fn fifos_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let mut maps = PerfMaps::in_dir(dir.path());
        // SAFETY: geteuid has no preconditions.
        maps.set_uid(3, unsafe { libc::geteuid() });
        let path = std::ffi::CString::new(
            dir.path()
                .join("perf-3.map")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        maps.refresh(3); // a blocking open would hang here
        assert!(maps.warnings()[0].contains("not a regular file"));
    }

    #[test]
    fn a_huge_sparse_map_is_read_only_up_to_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let mut maps = PerfMaps::in_dir(dir.path());
        // SAFETY: geteuid has no preconditions.
        maps.set_uid(4, unsafe { libc::geteuid() });
        let path = dir.path().join("perf-4.map");
        let mut f = std::fs::File::create(&path).unwrap();
        std::io::Write::write_all(&mut f, b"1000 10 first\n").unwrap();
        f.set_len(2 << 30).unwrap(); // 2 GiB, sparse: costs no disk
        drop(f);
        maps.refresh(4);
        assert_eq!(maps.resolve(4, 0x1000), Some("first"));
        assert!(
            maps.warnings()[0].contains("process 4") && maps.warnings()[0].contains("64 MiB"),
            "{:?}",
            maps.warnings()
        );
    }

    #[test]
    fn lines_past_the_cap_are_not_parsed() {
        let text: String = (0..10)
            .map(|i| format!("{:x} 10 f{i}\n", 0x1000 + i * 0x10))
            .collect();
        let (m, more) = PerfMap::parse_bytes(text.as_bytes(), 4);
        assert_eq!((m.len(), more), (4, true));
        let (m, more) = PerfMap::parse_bytes(text.as_bytes(), 10);
        assert_eq!((m.len(), more), (10, false));
        let (m, _) = PerfMap::parse_bytes(b"1000 10 caf\xff\n", 4);
        assert_eq!(m.resolve(0x1000), Some("caf\u{fffd}"));
    }
}
