//! perf_event_open for the sampling events (the BPF program's trigger) and the
//! tracking events (mmap2, comm and task records), one of each per online CPU.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use perf_event_open_sys as sys;
use sys::bindings as b;

use crate::capture::events::{Event, Rate};

/// A sampling event: what it counts, how often it interrupts, how precisely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamplingEvent {
    /// The event.
    pub event: Event,
    /// Frequency or period.
    pub rate: Rate,
    /// `precise_ip` (0: as the PMU pleases, up to 3: zero skid).
    pub precise_ip: u8,
}

fn attr_size() -> u32 {
    std::mem::size_of::<b::perf_event_attr>() as u32
}

fn open(attr: &mut b::perf_event_attr, cpu: u32) -> io::Result<OwnedFd> {
    // SAFETY: attr is a valid, fully initialised perf_event_attr.
    let fd =
        unsafe { sys::perf_event_open(attr, -1, cpu as i32, -1, b::PERF_FLAG_FD_CLOEXEC as u64) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: perf_event_open returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn sampling_attr(s: &SamplingEvent) -> b::perf_event_attr {
    let mut attr = b::perf_event_attr {
        type_: s.event.type_,
        size: attr_size(),
        config: s.event.config,
        ..Default::default()
    };
    match s.rate {
        Rate::Frequency(hz) => {
            attr.set_freq(1);
            attr.__bindgen_anon_1.sample_freq = hz;
        }
        Rate::Period(n) => attr.__bindgen_anon_1.sample_period = n,
    }
    attr.set_precise_ip(u64::from(s.precise_ip));
    attr.set_disabled(1);
    attr
}

/// Opens `event` on `cpu` for every task, disabled until [`enable`].
pub fn open_sampling(event: &SamplingEvent, cpu: u32) -> io::Result<OwnedFd> {
    open(&mut sampling_attr(event), cpu)
}

/// Whether `event` can be opened: system-wide on `cpu` when `system_wide`, else
/// for this process's user-space only (what an unprivileged user may ask).
pub fn probe(event: &SamplingEvent, cpu: u32, system_wide: bool) -> io::Result<()> {
    let mut attr = sampling_attr(event);
    if system_wide {
        return open(&mut attr, cpu).map(drop);
    }
    attr.set_exclude_kernel(1);
    attr.set_exclude_hv(1);
    // SAFETY: attr is a valid, fully initialised perf_event_attr.
    let fd = unsafe { sys::perf_event_open(&mut attr, 0, -1, -1, b::PERF_FLAG_FD_CLOEXEC as u64) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nothing else owns.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(())
}

/// Why perf_event_open refused an event, in words a user can act on.
pub fn refusal_reason(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENODEV) => {
            "this machine has no counter for it (a VM without a virtual PMU has none)".into()
        }
        Some(libc::EOPNOTSUPP) => {
            "its PMU cannot interrupt on overflow, so it cannot be sampled".into()
        }
        Some(libc::EACCES) | Some(libc::EPERM) => {
            "not permitted (run as root, or with CAP_PERFMON)".into()
        }
        Some(libc::EINVAL) => "the PMU rejects this event or setting".into(),
        Some(libc::EBUSY) => "the counter is in use by someone else".into(),
        _ => {
            let s = e.to_string();
            s.split(" (os error").next().unwrap_or(&s).to_string()
        }
    }
}

/// Opens the tracking event of `cpu`: a dummy software event that writes mmap2
/// (with device and inode), comm, fork and exit records of every task into its
/// ring buffer, each stamped with CLOCK_MONOTONIC time.
///
/// Build ids are not asked of the kernel (`build_id`): Linux sets the
/// MMAP_BUILD_ID flag on the mmap event it hands every listener in turn and does
/// not clear it, so the other listeners' records (`perf record`'s) carried the
/// flag over device and inode data and perf 6.1 crashed reading them. Build ids
/// are read from the files instead (symbolizer::buildid).
pub fn open_tracking(cpu: u32, wakeup_bytes: u32) -> io::Result<OwnedFd> {
    let mut attr = b::perf_event_attr {
        type_: b::PERF_TYPE_SOFTWARE,
        size: attr_size(),
        config: u64::from(b::PERF_COUNT_SW_DUMMY),
        sample_type: u64::from(b::PERF_SAMPLE_TID | b::PERF_SAMPLE_TIME),
        clockid: libc::CLOCK_MONOTONIC,
        ..Default::default()
    };
    attr.__bindgen_anon_1.sample_period = 1;
    attr.set_mmap(1);
    attr.set_mmap2(1);
    attr.set_comm(1);
    attr.set_comm_exec(1);
    attr.set_task(1);
    attr.set_sample_id_all(1);
    attr.set_use_clockid(1);
    attr.set_watermark(1);
    attr.__bindgen_anon_2.wakeup_watermark = wakeup_bytes;
    open(&mut attr, cpu)
}

/// Starts counting (and sampling) on `fd`.
pub fn enable(fd: impl AsFd) -> io::Result<()> {
    // SAFETY: fd is an open perf event descriptor.
    if unsafe { sys::ioctls::ENABLE(fd.as_fd().as_raw_fd(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Stops counting (and sampling) on `fd`.
pub fn disable(fd: impl AsFd) -> io::Result<()> {
    // SAFETY: fd is an open perf event descriptor.
    if unsafe { sys::ioctls::DISABLE(fd.as_fd().as_raw_fd(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The online CPUs, from /sys/devices/system/cpu/online (`0-3,6`).
pub fn online_cpus() -> io::Result<Vec<u32>> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online")?;
    parse_cpu_list(text.trim())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad CPU list {text:?}")))
}

fn parse_cpu_list(s: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<u32>().ok()?..=b.parse::<u32>().ok()?),
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

/// The highest sampling frequency the kernel allows
/// (/proc/sys/kernel/perf_event_max_sample_rate).
pub fn max_sample_rate() -> io::Result<u64> {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_max_sample_rate")?
        .trim()
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        assert_eq!(parse_cpu_list("0-3,6,8-9"), Some(vec![0, 1, 2, 3, 6, 8, 9]));
        assert_eq!(parse_cpu_list("x"), None);
        assert!(!online_cpus().unwrap().is_empty());
    }

    #[test]
    fn max_rate_is_readable() {
        assert!(max_sample_rate().unwrap() > 0);
    }
}
