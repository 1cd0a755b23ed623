//! Keeps userspace from writing a process's BPF entries (`py_procs`,
//! `process_maps`) from a view of it older than its last exec.
//!
//! Userspace builds an entry from the tracking records applied up to some time
//! (`Tracking::applied_up_to`). A process that exec'd after that time runs
//! another image: its old entry was dropped by the kernel at the exec, and
//! writing it again would have the BPF walks read the new image's memory with
//! the old image's tables and Python runtime until the exec's own records
//! arrive (a spawner's children lost a fifth of their walks so on a busy
//! machine, where userspace runs behind). The kernel notes when each exec ends
//! in `exec_seen` (bpf/profile.bpf.c); a write is checked before and after, so an
//! exec that overtakes it undoes it.

use anyhow::{Context, Result};
use libbpf_rs::{MapCore, MapFlags};

/// Writes entries for processes whose view is as of `as_of` (CLOCK_MONOTONIC ns).
pub struct ExecGuard<'a> {
    seen: &'a libbpf_rs::MapMut<'static>,
    as_of: u64,
}

impl<'a> ExecGuard<'a> {
    pub fn new(seen: &'a libbpf_rs::MapMut<'static>, as_of: u64) -> ExecGuard<'a> {
        ExecGuard { seen, as_of }
    }

    /// Whether `pid` exec'd after the view (or is exec'ing now).
    fn overtaken(&self, pid: u32) -> bool {
        match self.seen.lookup(&pid.to_ne_bytes(), MapFlags::ANY) {
            Ok(Some(v)) => exec_after(&v, self.as_of),
            _ => false,
        }
    }

    /// Writes `value` as `pid`'s entry in `map` unless `pid` exec'd after the
    /// view; removes it again when an exec overtook the write. Returns whether
    /// the entry stands.
    pub fn write(&self, map: &libbpf_rs::MapMut<'_>, pid: u32, value: &[u8]) -> Result<bool> {
        if self.overtaken(pid) {
            return Ok(false);
        }
        let key = pid.to_ne_bytes();
        map.update(&key, value, MapFlags::ANY).with_context(|| {
            format!(
                "writing the {} entry of pid {pid}",
                map.name().to_string_lossy()
            )
        })?;
        // an exec between the check and the write dropped nothing and left this
        if self.overtaken(pid) {
            let _ = map.delete(&key);
            return Ok(false);
        }
        Ok(true)
    }
}

/// Whether an `exec_seen` value (the end of an exec, or ~0 while one runs) is
/// later than `as_of`.
fn exec_after(value: &[u8], as_of: u64) -> bool {
    value
        .try_into()
        .map(|b: [u8; 8]| u64::from_ne_bytes(b) > as_of)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exec_after_the_view_or_running_overtakes_it() {
        let at = |t: u64| t.to_ne_bytes();
        assert!(exec_after(&at(101), 100));
        assert!(exec_after(&at(u64::MAX), 100));
        assert!(!exec_after(&at(100), 100));
        assert!(!exec_after(&at(5), 100));
        assert!(!exec_after(&[1, 2, 3], 0));
    }
}
