//! Follows address-space changes during a capture: per-CPU tracking events whose
//! ring buffers carry mmap2, comm, fork and exit records, merged in time order and
//! applied to the symbolizer's [`Tracker`].

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use anyhow::{Context, Result};
use symbolizer::records::{self, Record};
use symbolizer::Tracker;

use crate::capture::perf;
use crate::capture::ring::Ring;

/// 256 KiB per CPU: a burst of a few thousand mmaps (a build starting) fits.
const DATA_PAGES: usize = 64;
/// Wake the capture loop once a quarter of a ring is filled (it also polls on a timer).
const WAKEUP_BYTES: u32 = (DATA_PAGES * 4096 / 4) as u32;

/// The tracking events of all CPUs and what they told so far.
pub struct Tracking {
    rings: Vec<Ring>,
    /// The CPU of each ring.
    cpus: Vec<u32>,
    /// Records read but not yet applied: a record is applied only once every CPU's
    /// records up to its time have been read, so a fork is never applied after the
    /// child's first mmap that another CPU reported.
    pending: Vec<Record>,
    /// Address spaces and objects.
    pub tracker: Tracker,
    /// Each record wakes the reader (else a quarter-full ring does).
    eager: bool,
    /// The time up to which every record has been applied (CLOCK_MONOTONIC
    /// ns): the tracker's view of every process is as of then.
    pub applied_up_to: u64,
}

/// CLOCK_MONOTONIC now, in nanoseconds: the clock the tracking events stamp with.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Tracking {
    /// Opens and starts tracking on `cpus`. With `eager`, every record wakes the
    /// reader (CFI mode: a new process is unwound by frame pointers until its
    /// mappings reach the kernel, so they should get there within a millisecond,
    /// not a tick); otherwise a quarter-full ring does.
    pub fn start(cpus: &[u32], eager: bool) -> Result<Tracking> {
        let mut rings = Vec::with_capacity(cpus.len());
        let wakeup = if eager { 1 } else { WAKEUP_BYTES };
        for &cpu in cpus {
            let fd = perf::open_tracking(cpu, wakeup)
                .with_context(|| format!("opening the tracking event on CPU {cpu}"))?;
            rings.push(
                Ring::new(fd, DATA_PAGES)
                    .with_context(|| format!("mapping the tracking buffer of CPU {cpu}"))?,
            );
        }
        Ok(Tracking {
            rings,
            cpus: cpus.to_vec(),
            pending: Vec::new(),
            tracker: Tracker::new(),
            eager,
            applied_up_to: 0,
        })
    }

    /// Descriptors that become readable when records wait.
    pub fn fds(&self) -> Vec<RawFd> {
        self.rings.iter().map(|r| r.fd().as_raw_fd()).collect()
    }

    /// Reads every ring and applies the records that are safe to apply; with
    /// `all`, applies everything (at the end of the capture), losses included.
    /// Returns the time up to which every record has been applied.
    pub fn process(&mut self, all: bool) -> u64 {
        let cutoff = self.apply(all);
        self.applied_up_to = cutoff;
        cutoff
    }

    /// [`Tracking::process`] but for noting the time.
    fn apply(&mut self, all: bool) -> u64 {
        if all {
            // read what is there, so the count of dropped records fits, then
            // bring that count out
            self.read();
            poke_cpus(&self.cpus);
        }
        let cutoff = monotonic_ns();
        self.read();
        if self.pending.is_empty() {
            self.tracker.check_leaders_gone(cutoff);
            self.tracker.refresh_perf_maps();
            return cutoff;
        }
        // Stable sort: records of one CPU with equal times keep their order.
        self.pending.sort_by_key(Record::time);
        let ready = if all {
            self.pending.len()
        } else {
            self.pending.partition_point(|r| r.time() <= cutoff)
        };
        for r in self.pending.drain(..ready) {
            self.tracker.apply(&r);
        }
        self.tracker.check_leaders_gone(cutoff);
        self.tracker.refresh_perf_maps();
        cutoff
    }

    /// Whether the capture loop must come back soon on its own: records do not
    /// wake it one by one (a short-lived process's mappings must be read while
    /// it lives), records wait to be applied (newer than the last round's
    /// cutoff), or the tracker re-reads something (see
    /// [`symbolizer::Tracker::wants_ticks`]).
    pub fn wants_ticks(&self) -> bool {
        !self.eager || !self.pending.is_empty() || self.tracker.wants_ticks()
    }

    /// Reads every ring into `pending`.
    fn read(&mut self) {
        for ring in &mut self.rings {
            let pending = &mut self.pending;
            ring.drain(|kind, misc, body| {
                if let Some(r) = records::parse(kind, misc, body) {
                    pending.push(r);
                }
            });
        }
    }
}

/// The kernel counts the records a full ring drops, but writes that count (a
/// PERF_RECORD_LOST) only in front of the next record that fits in that ring: at
/// the end of a capture there may be none, and a capture that lost records would
/// say it lost nothing. A comm record on each CPU brings the count out: a thread
/// of ours moves to each CPU in turn and renames itself (to the same name; the
/// record names our own process, which nothing samples). Best effort: a CPU it
/// cannot move to keeps its count.
fn poke_cpus(cpus: &[u32]) {
    let cpus = cpus.to_vec();
    let poker = std::thread::spawn(move || {
        let mut name = [0u8; 16];
        // SAFETY: PR_GET_NAME writes at most 16 bytes, NUL included, into name.
        if unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) } != 0 {
            return;
        }
        for cpu in cpus {
            // SAFETY: a zeroed cpu_set_t is valid; CPU_SET takes any index below
            // CPU_SETSIZE, checked first.
            unsafe {
                if cpu as usize >= libc::CPU_SETSIZE as usize {
                    continue;
                }
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu as usize, &mut set);
                // moves this thread there before returning
                if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
                    continue;
                }
                libc::prctl(libc::PR_SET_NAME, name.as_ptr());
            }
        }
    });
    let _ = poker.join();
}

/// Waits until one of `fds` is readable or `timeout_ms` passes; a signal ends the
/// wait early (the caller checks its flags).
pub fn wait(fds: &[RawFd], timeout_ms: i32) -> io::Result<()> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: pfds is a valid array of pollfd for its length.
    let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}
