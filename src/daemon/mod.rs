//! The continuous daemon: always-on, low-rate sampling into a local store of
//! windows, with retention, bounded memory, and an optional pprof endpoint.
//!
//! In: a started [`Session`] with two map sets. Every second the BPF program is
//! switched to its other map set and the set it left is read and emptied: no sample
//! is lost or counted twice at the switch. The seconds add up to windows; each
//! window is written to the [`store`] as one gzipped pprof file. Requests to
//! /debug/pprof/profile ([`http`]) collect the seconds that follow them. Out: the
//! store's files, [`metrics`], and the accounting of the run.
//!
//! Two threads: this loop drains the maps and reads the tracking rings, and at a
//! window's end (or a request's) only locates its addresses in the address spaces
//! it keeps; naming, encoding and writing run on the symbolization thread
//! ([`writer`]), so a slow naming never lets the tracking rings overflow.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use flamegraphs::Meta;

use crate::capture::gated::Gated;
use crate::capture::sampler::FLIP_GRACE;
use crate::capture::{tracking, RawProfile, Session, Stats};
use crate::symbolize::{Located, Worker};

pub mod http;
pub mod merge;
pub mod metrics;
pub mod server;
pub mod store;
pub mod writer;

use http::Ask;
use metrics::Metrics;
use writer::{Reply, Window, Writer};

/// How often the map sets are switched and read.
const DRAIN_EVERY: Duration = Duration::from_secs(1);
/// How long the loop sleeps when nothing wakes it.
const TICK: Duration = Duration::from_millis(100);
/// Windows that may wait for the symbolization thread; while this many wait, the
/// window in progress goes on instead of joining them, so a symbolization that
/// falls behind for good costs longer windows, not memory without bound.
const MAX_PENDING_WINDOWS: u64 = 3;

/// A /debug/pprof/profile request being filled.
struct Subscription {
    until: Instant,
    start: SystemTime,
    /// CLOCK_MONOTONIC at its start: it holds no sample of a process gone before.
    start_mono: u64,
    raw: RawProfile,
    reply: Reply,
}

/// Where windows go and how long they stay.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The store's directory.
    pub dir: std::path::PathBuf,
    /// Windows older than this are deleted.
    pub retain: Duration,
    /// The store is kept under this many bytes.
    pub max_disk: u64,
    /// Seconds per window.
    pub window: Duration,
}

/// The daemon's state between ticks.
pub struct Daemon {
    session: Session,
    /// The symbolization thread, and what its jobs share.
    worker: Worker,
    writer: Arc<Writer>,
    metrics: Arc<Metrics>,
    window_length: Duration,
    verbose: bool,
    last_stats: Stats,
    /// Samples of the current window so far.
    window: RawProfile,
    window_start: SystemTime,
    /// When the last drain switched sets (CLOCK_MONOTONIC): every sample of a
    /// process that exited before then has been read out of the maps.
    last_drain: u64,
    subscriptions: Vec<Subscription>,
    total: Stats,
}

impl Daemon {
    /// Switches map sets, reads and empties the one that stopped filling.
    fn drain(&mut self) -> Result<()> {
        let now_mono = tracking::monotonic_ns();
        let old = self.session.sampler.flip();
        self.session
            .sampler
            .flush_off_cpu()
            .context("counting the off-CPU waits so far")?;
        std::thread::sleep(FLIP_GRACE);
        let drained = self
            .session
            .sampler
            .drain_set(old, true)
            .context("reading the BPF maps")?;
        let delta = drained.stats - self.last_stats;
        self.last_stats = drained.stats;
        self.metrics.add_stats(delta);
        self.total += delta;
        let mut tick = RawProfile::default();
        tick.add(&drained);
        for s in &mut self.subscriptions {
            s.raw.merge(&tick);
        }
        self.window.merge(&tick);
        self.session.follow(false)?;
        self.metrics.lost_records.store(
            self.session.tracking.tracker.lost_records(),
            Ordering::Relaxed,
        );
        self.last_drain = now_mono;
        if let (Some(t), Ok(mut m)) = (&self.session.tables, self.metrics.tables.lock()) {
            *m = t.stats;
        }
        if let (Some(p), Ok(mut m)) = (&self.session.python, self.metrics.python_processes.lock()) {
            *m = p.process_counts();
        }
        Ok(())
    }

    /// After a window is located, processes that exited before its last drain, and
    /// before every open request began, have no samples left anywhere that is not
    /// located already: forget them and let go of the objects nothing else maps,
    /// so memory stays flat however many processes come and go. An open request
    /// holds back only the processes that exit during it, for at most its
    /// [`http::MAX_PROFILE_SECONDS`]. Returns the paths of the objects let go of,
    /// whose cached names the symbolization thread drops after the window.
    fn forget(&mut self) -> Vec<std::path::PathBuf> {
        let before = forget_horizon(
            self.last_drain,
            self.subscriptions.iter().map(|s| s.start_mono),
        );
        let released = self.session.tracking.tracker.forget_exited_before(before);
        self.session.evict_tables();
        released
    }

    /// Ends the current window: locates its addresses and queues it for naming
    /// and writing.
    fn end_window(&mut self) -> Result<()> {
        // once a window: reading it walks every BPF program on the machine
        self.metrics
            .missed_runs
            .store(self.session.sampler.missed(), Ordering::Relaxed);
        let end = SystemTime::now();
        let raw = std::mem::take(&mut self.window);
        let located = Located::new(raw, &self.session.tracking.tracker);
        // the window holds clones of the objects it needs: forgetting is safe now
        let released = self.forget();
        let window = Window {
            located,
            start: self.window_start,
            end,
            released,
        };
        self.window_start = end;
        self.metrics.windows_pending.fetch_add(1, Ordering::Relaxed);
        let writer = Arc::clone(&self.writer);
        self.worker
            .submit(move |symbolizer| writer.window(symbolizer, window))
    }

    /// Whether the symbolization thread has so many windows to write that the
    /// current one should go on instead of joining them.
    fn behind(&self) -> bool {
        self.metrics.windows_pending.load(Ordering::Relaxed) >= MAX_PENDING_WINDOWS
    }

    /// Answers the requests whose time is up (all of them with `all`): their
    /// addresses are located here, the answer is named and sent by the
    /// symbolization thread.
    fn answer(&mut self, all: bool) -> Result<()> {
        let now = Instant::now();
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.subscriptions)
            .into_iter()
            .partition(|s| all || s.until <= now);
        self.subscriptions = waiting;
        for s in due {
            let end = SystemTime::now();
            let located = Located::new(s.raw, &self.session.tracking.tracker);
            let writer = Arc::clone(&self.writer);
            let (start, reply) = (s.start, s.reply);
            self.worker
                .submit(move |symbolizer| writer.answer(symbolizer, located, start, end, reply))?;
        }
        Ok(())
    }

    /// Starts sampling: the first window begins now.
    pub fn start(
        mut session: Session,
        worker: Worker,
        metrics: Arc<Metrics>,
        meta: Meta,
        store: StoreConfig,
        verbose: bool,
    ) -> Result<Daemon> {
        let last_stats = session.sampler.stats()?;
        let window_length = store.window;
        let writer = Arc::new(Writer::new(Arc::clone(&metrics), meta, store, verbose));
        session.go()?;
        Ok(Daemon {
            session,
            worker,
            writer,
            metrics,
            window_length,
            verbose,
            last_stats,
            window: RawProfile::default(),
            window_start: SystemTime::now(),
            last_drain: tracking::monotonic_ns(),
            subscriptions: Vec::new(),
            total: Stats::default(),
        })
    }

    /// Runs until `stop` turns true or the command exits; returns the command's exit
    /// status when it ended the run.
    pub fn run(&mut self, stop: &AtomicBool, asks: &mpsc::Receiver<Ask>) -> Result<Option<i32>> {
        let mut next_drain = Instant::now() + DRAIN_EVERY;
        let mut window_end = Instant::now() + self.window_length;
        let fds = self.session.wake_fds()?;
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            if let Some(code) = self.session.child.as_ref().and_then(Gated::try_wait) {
                return Ok(Some(code));
            }
            if self.take_requests(asks)? {
                next_drain = Instant::now() + DRAIN_EVERY;
            }
            self.session.follow(false)?;
            let now = Instant::now();
            // A window ends with a drain, so it holds exactly the seconds before it.
            if now >= next_drain || now >= window_end {
                self.drain()?;
                next_drain = now + DRAIN_EVERY;
                self.answer(false)?;
            }
            if now >= window_end {
                if self.behind() {
                    self.metrics
                        .windows_extended
                        .fetch_add(1, Ordering::Relaxed);
                    if self.verbose {
                        eprintln!("flamebpf: symbolization is {MAX_PENDING_WINDOWS} windows behind: this window goes on");
                    }
                } else {
                    self.end_window()?;
                }
                window_end = now + self.window_length;
            }
            let next = next_drain.min(window_end);
            let wait = next.saturating_duration_since(Instant::now()).min(TICK);
            tracking::wait(&fds, wait.as_millis().max(1) as i32)
                .context("waiting for tracking records")?;
        }
    }

    /// Opens a subscription per new profile request; true when it drained.
    fn take_requests(&mut self, asks: &mpsc::Receiver<Ask>) -> Result<bool> {
        let mut drained = false;
        while let Ok(Ask::Profile { seconds, reply }) = asks.try_recv() {
            // Start the request on a fresh set, so it holds no sample from before it.
            self.drain()?;
            drained = true;
            self.subscriptions.push(Subscription {
                until: Instant::now() + Duration::from_secs(seconds),
                start: SystemTime::now(),
                start_mono: self.last_drain,
                raw: RawProfile::default(),
                reply,
            });
        }
        Ok(drained)
    }

    /// Writes the last (partial) window and answers open requests with what they
    /// have; ends the command if it still runs (`ended_by_command`: it already
    /// exited). Returns once every window is written, with the run's counters.
    pub fn finish(mut self, ended_by_command: bool) -> Result<Finished> {
        self.drain()?;
        self.session.follow(true)?;
        self.session.sampler.disable()?;
        self.answer(true)?;
        self.end_window()?;
        if let Some(c) = self.session.child.as_ref() {
            if !ended_by_command {
                c.terminate(Duration::from_secs(2));
            }
        }
        self.worker.finish()?;
        // interpreters flamebpf could not read: said once, at the end
        for line in self.session.python.iter().flat_map(|p| p.refusals()) {
            eprintln!("flamebpf: {line}");
        }
        Ok(Finished {
            stats: self.total,
            lost_records: self.session.tracking.tracker.lost_records(),
            missed: self.session.sampler.missed(),
            windows_written: self.metrics.windows_written.load(Ordering::Relaxed),
            window_failures: self.metrics.window_failures.load(Ordering::Relaxed),
        })
    }
}

/// The time before which exited processes can be forgotten: the last drain, or
/// the start of the oldest open request if that is earlier (it may hold samples of
/// processes that exited since it began, never of ones gone before).
fn forget_horizon(last_drain: u64, request_starts: impl Iterator<Item = u64>) -> u64 {
    request_starts.fold(last_drain, u64::min)
}

/// What a finished run reports.
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    /// The BPF program's counters over the run.
    pub stats: Stats,
    /// Tracking records the kernel dropped.
    pub lost_records: u64,
    /// Program runs the kernel skipped (recursion_misses).
    pub missed: u64,
    /// Windows written to the store.
    pub windows_written: u64,
    /// Windows that could not be written.
    pub window_failures: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_request_holds_back_only_what_exited_since_it_began() {
        // before the fix, any open request (even an abandoned hour-long one)
        // stopped every exited process from being forgotten
        assert_eq!(forget_horizon(1000, std::iter::empty()), 1000);
        assert_eq!(forget_horizon(1000, [700, 900].into_iter()), 700);
        assert_eq!(forget_horizon(1000, [1000].into_iter()), 1000);
    }
}
