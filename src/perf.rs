//! perf_event_open for the sampling events (the BPF program's trigger) and the
//! tracking events (mmap2, comm and task records), one of each per online CPU.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use perf_event_open_sys as sys;
use sys::bindings as b;

/// What a sampling event counts and how often it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SamplingEvent {
    /// `PERF_TYPE_*`.
    pub type_: u32,
    /// The event within its type.
    pub config: u64,
    /// Fire `hz` times a second of the event (the kernel adapts the period).
    pub frequency: Option<u64>,
    /// Fire every `n` events.
    pub period: Option<u64>,
}

impl SamplingEvent {
    /// The software CPU clock at `hz`: the timer that `perf record -F` uses.
    pub fn cpu_clock(hz: u64) -> SamplingEvent {
        SamplingEvent {
            type_: b::PERF_TYPE_SOFTWARE,
            config: u64::from(b::PERF_COUNT_SW_CPU_CLOCK),
            frequency: Some(hz),
            period: None,
        }
    }
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

/// Opens `event` on `cpu` for every task, disabled until [`enable`].
pub fn open_sampling(event: &SamplingEvent, cpu: u32) -> io::Result<OwnedFd> {
    let mut attr = b::perf_event_attr {
        type_: event.type_,
        size: attr_size(),
        config: event.config,
        ..Default::default()
    };
    if let Some(hz) = event.frequency {
        attr.set_freq(1);
        attr.__bindgen_anon_1.sample_freq = hz;
    } else {
        attr.__bindgen_anon_1.sample_period = event.period.unwrap_or(1);
    }
    attr.set_disabled(1);
    open(&mut attr, cpu)
}

/// Opens the tracking event of `cpu`: a dummy software event that writes mmap2
/// (with build ids where the kernel can), comm, fork and exit records of every task
/// into its ring buffer, each stamped with CLOCK_MONOTONIC time.
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
    attr.set_build_id(1);
    match open(&mut attr, cpu) {
        // Kernels before 5.12 do not know build ids in mmap2 records.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            attr.set_build_id(0);
            open(&mut attr, cpu)
        }
        r => r,
    }
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
