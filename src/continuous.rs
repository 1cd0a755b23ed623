//! `flamebpf continuous`: always-on, low-rate sampling into a local store of
//! windows, with retention, bounded memory, and an optional pprof endpoint.
//!
//! Every second the BPF program is switched to its other map set and the set it
//! left is read and emptied: no sample is lost or counted twice at the switch. The
//! seconds add up to windows; each window is symbolized and written to the store as
//! one gzipped pprof file. Requests to /debug/pprof/profile collect the seconds
//! that follow them.

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use flamegraphs::{Meta, Profile};
use symbolizer::symbolize::{Options as SymbolizeOptions, Symbolizer};

use crate::bpf::{Stats, FLIP_GRACE};
use crate::cli::ContinuousArgs;
use crate::events::Event;
use crate::http::{self, Ask};
use crate::metrics::Metrics;
use crate::raw::{stats_since, RawProfile};
use crate::session::{self, Session, Setup};
use crate::summary::Summary;
use crate::target::Target;
use crate::{perf, sampling, store, symbolize, tracking};

/// How often the map sets are switched and read.
const DRAIN_EVERY: Duration = Duration::from_secs(1);
/// How long the loop sleeps when nothing wakes it.
const TICK: Duration = Duration::from_millis(100);
/// Objects whose symbols stay cached between windows.
const MAX_CACHED_OBJECTS: usize = 64;
/// The default rate: prime, so periodic work does not alias with sampling.
const DEFAULT_HZ: u64 = 19;

/// A /debug/pprof/profile request being filled.
struct Subscription {
    until: Instant,
    start: SystemTime,
    raw: RawProfile,
    reply: mpsc::Sender<Result<Vec<u8>, String>>,
}

/// The daemon's state between ticks.
struct Daemon {
    session: Session,
    symbolizer: Symbolizer,
    metrics: Arc<Metrics>,
    meta: Meta,
    dir: std::path::PathBuf,
    retain: Duration,
    max_disk: u64,
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
        std::thread::sleep(FLIP_GRACE);
        let drained = self
            .session
            .sampler
            .drain_set(old, true)
            .context("reading the BPF maps")?;
        let delta = stats_since(&drained.stats, &self.last_stats);
        self.last_stats = drained.stats;
        self.metrics.add_stats(&delta);
        add_stats(&mut self.total, &delta);
        let mut tick = RawProfile::default();
        tick.add(&drained);
        for s in &mut self.subscriptions {
            s.raw.merge(&tick);
        }
        self.window.merge(&tick);
        self.session.tracking.process(false);
        self.metrics.lost_records.store(
            self.session.tracking.tracker.lost_records(),
            Ordering::Relaxed,
        );
        self.last_drain = now_mono;
        Ok(())
    }

    /// After a window is written, processes that exited before its last drain have
    /// no samples left anywhere but in requests still open: forget them and close the
    /// objects nothing else maps, so memory stays flat however many processes come
    /// and go.
    fn forget(&mut self) {
        if !self.subscriptions.is_empty() {
            return; // an open request may hold their samples; the next window will do
        }
        for path in self
            .session
            .tracking
            .tracker
            .forget_exited_before(self.last_drain)
        {
            self.symbolizer.evict(&path);
        }
    }

    fn profile(&self, raw: &RawProfile, start: SystemTime, end: SystemTime) -> Profile {
        let meta = Meta {
            start,
            duration: end.duration_since(start).unwrap_or(Duration::ZERO),
            ..self.meta.clone()
        };
        let (profile, stats) =
            symbolize::build(raw, &self.session.tracking.tracker, &self.symbolizer, meta);
        self.metrics
            .symbolization_failures
            .fetch_add(stats.object_failures.len() as u64, Ordering::Relaxed);
        profile
    }

    /// Symbolizes and writes the current window, then applies retention.
    fn write_window(&mut self) {
        let end = SystemTime::now();
        let raw = std::mem::take(&mut self.window);
        let profile = self.profile(&raw, self.window_start, end);
        let mut bytes = Vec::new();
        let written = flamegraphs::pprof::write(&profile, &mut bytes)
            .map_err(anyhow::Error::from)
            .and_then(|()| {
                std::fs::create_dir_all(&self.dir)
                    .with_context(|| format!("creating {}", self.dir.display()))?;
                store::write(&self.dir, self.window_start, end, &bytes)
            });
        match written {
            Ok(path) => {
                self.metrics.windows_written.fetch_add(1, Ordering::Relaxed);
                if self.verbose {
                    eprintln!(
                        "flamebpf: wrote {} ({} samples, {} bytes)",
                        path.display(),
                        profile.total_samples(),
                        bytes.len()
                    );
                }
            }
            Err(e) => {
                // once per window, as the store may come back (disk freed, remounted)
                self.metrics.window_failures.fetch_add(1, Ordering::Relaxed);
                eprintln!("flamebpf: window not written: {e:#}");
            }
        }
        if let Ok(bytes) = store::enforce(&self.dir, end, self.retain, self.max_disk) {
            self.metrics.store_bytes.store(bytes, Ordering::Relaxed);
        }
        self.window_start = end;
        self.forget();
        self.symbolizer.next_round(MAX_CACHED_OBJECTS);
        self.symbolizer.release_parsed();
    }

    /// Answers the requests whose time is up (all of them with `all`).
    fn answer(&mut self, all: bool) {
        let now = Instant::now();
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.subscriptions)
            .into_iter()
            .partition(|s| all || s.until <= now);
        self.subscriptions = waiting;
        for s in due {
            let profile = self.profile(&s.raw, s.start, SystemTime::now());
            let mut bytes = Vec::new();
            let result = flamegraphs::pprof::write(&profile, &mut bytes)
                .map(|()| bytes)
                .map_err(|e| e.to_string());
            let _ = s.reply.send(result);
        }
    }
}

fn add_stats(total: &mut Stats, d: &Stats) {
    total.samples += d.samples;
    total.idle_skipped += d.idle_skipped;
    total.kernel_stack_absent += d.kernel_stack_absent;
    total.user_stack_kthread += d.user_stack_kthread;
    total.user_stack_fault += d.user_stack_fault;
    total.stack_overflowed += d.stack_overflowed;
    total.stack_lost += d.stack_lost;
    total.counts_full += d.counts_full;
    total.targets_full += d.targets_full;
    total.ringbuf_full += d.ringbuf_full;
    total.stack_copy_failed += d.stack_copy_failed;
}

fn is_loopback(addr: &std::net::SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// Runs the daemon until SIGINT/SIGTERM (or the command's exit).
pub fn run(args: ContinuousArgs) -> Result<i32> {
    let event = Event::parse(&args.event).map_err(anyhow::Error::msg)?;
    let max_rate =
        perf::max_sample_rate().context("reading /proc/sys/kernel/perf_event_max_sample_rate")?;
    let freq = args.freq.or(if args.period.is_none() {
        Some(DEFAULT_HZ.min(max_rate))
    } else {
        None
    });
    let rate = sampling::rate(&event, freq, args.period, max_rate)?;
    let all = args.pid.is_empty() && args.command.is_empty();
    let target = Target::from_args(&args.pid, all, &args.command)?;
    if let Some(comm) = &args.comm {
        if comm.is_empty() || comm.len() > 15 {
            bail!("--comm {comm:?}: command names are 1 to 15 bytes long");
        }
    }
    if let Some(cg) = &args.cgroup {
        if !cg.is_dir() {
            bail!("--cgroup {}: no such directory (give a cgroup v2 directory, e.g. under /sys/fs/cgroup)", cg.display());
        }
    }
    for dir in &args.debug_dir {
        if !dir.is_dir() {
            bail!("--debug-dir {}: no such directory", dir.display());
        }
    }
    crate::privilege::check().map_err(anyhow::Error::msg)?;
    let cpus = perf::online_cpus().context("reading the online CPUs")?;
    let (sampling, _) = sampling::choose(event, rate, false, cpus.first().copied().unwrap_or(0))?;
    session::raise_fd_limit();

    let metrics = Arc::new(Metrics::default());
    let (asks_tx, asks) = mpsc::channel::<Ask>();
    if let Some(addr) = args.listen {
        let bound = http::serve(addr, Arc::clone(&metrics), args.dir.clone(), asks_tx)?;
        if !is_loopback(&bound) {
            eprintln!("flamebpf: warning: {bound} is not a loopback address: whoever reaches it can read every profile");
        }
        if args.verbose {
            eprintln!("flamebpf: serving on http://{bound}");
        }
    } else {
        drop(asks_tx);
    }
    if let Err(e) = std::fs::create_dir_all(&args.dir) {
        // Not fatal: the store is retried every window, and failures are counted.
        eprintln!(
            "flamebpf: cannot create the store {}: {}",
            args.dir.display(),
            session::io_reason(&e)
        );
    }

    let symbolizer = Symbolizer::new(SymbolizeOptions {
        debug_dirs: args.debug_dir.clone(),
        ..SymbolizeOptions::default()
    });
    symbolizer.warm_kernel();
    let stop = session::stop_flag()?;
    let session = Session::start(&Setup {
        target: target.clone(),
        sampling: sampling.clone(),
        cpus,
        include_idle: args.include_idle,
        stack_map_size: args.stack_map_size,
        counts_map_size: args.counts_map_size,
        comm: args.comm.clone(),
        cgroup: args.cgroup.clone(),
        two_sets: true,
        dwarf: None,
        verbose: args.verbose,
    })?;
    let mut d = Daemon {
        session,
        symbolizer,
        metrics,
        meta: sampling::meta(&sampling, &target),
        dir: args.dir.clone(),
        retain: args.retain,
        max_disk: args.max_disk,
        verbose: args.verbose,
        last_stats: Stats::default(),
        window: RawProfile::default(),
        window_start: SystemTime::now(),
        last_drain: tracking::monotonic_ns(),
        subscriptions: Vec::new(),
        total: Stats::default(),
    };
    d.last_stats = d.session.sampler.stats()?;
    d.session.go()?;
    d.window_start = SystemTime::now();
    let window = Duration::from_secs_f64(args.window);
    let mut next_drain = Instant::now() + DRAIN_EVERY;
    let mut window_end = Instant::now() + window;
    let fds = d.session.wake_fds()?;
    let mut child_status = None;

    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if let Some(code) = d
            .session
            .child
            .as_ref()
            .and_then(crate::command::Gated::try_wait)
        {
            child_status = Some(code);
            break;
        }
        while let Ok(Ask::Profile { seconds, reply }) = asks.try_recv() {
            // Start the request on a fresh set, so it holds no sample from before it.
            d.drain()?;
            next_drain = Instant::now() + DRAIN_EVERY;
            d.subscriptions.push(Subscription {
                until: Instant::now() + Duration::from_secs(seconds),
                start: SystemTime::now(),
                raw: RawProfile::default(),
                reply,
            });
        }
        d.session.tracking.process(false);
        let now = Instant::now();
        // A window ends with a drain, so it holds exactly the seconds before it.
        if now >= next_drain || now >= window_end {
            d.drain()?;
            next_drain = now + DRAIN_EVERY;
            d.answer(false);
        }
        if now >= window_end {
            d.write_window();
            window_end = now + window;
        }
        let next = next_drain.min(window_end);
        let wait = next.saturating_duration_since(Instant::now()).min(TICK);
        tracking::wait(&fds, wait.as_millis().max(1) as i32)
            .context("waiting for tracking records")?;
    }

    // The last (partial) window is written; open requests get what they have.
    d.drain()?;
    d.session.tracking.process(true);
    d.session.sampler.disable()?;
    d.answer(true);
    d.write_window();
    if let Some(c) = d.session.child.as_ref() {
        if child_status.is_none() {
            c.terminate(Duration::from_secs(2));
        }
    }
    let summary = Summary {
        stats: d.total,
        processes: 0,
        stacks: 0,
        lost_records: d.session.tracking.tracker.lost_records(),
        unwound: None,
    };
    let failures = match d.metrics.window_failures.load(Ordering::Relaxed) {
        0 => String::new(),
        n => format!(" ({n} could not be written)"),
    };
    eprintln!(
        "flamebpf: {} samples in {} windows written to {}{failures}; {}",
        d.total.samples,
        d.metrics.windows_written.load(Ordering::Relaxed),
        d.dir.display(),
        summary.classes_and_losses()
    );
    Ok(child_status.filter(|&c| c != 0).unwrap_or(0))
}
