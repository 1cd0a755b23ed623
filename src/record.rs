//! `flamebpf record`: check everything, start tracking and sampling, wait for the
//! end (duration, Ctrl-C/SIGTERM, or the command's exit), then symbolize and write.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use flamegraphs::Meta;
use symbolizer::symbolize::Options as SymbolizeOptions;

use crate::cli::{CallGraph, RecordArgs};
use crate::command::Gated;
use crate::dwarf::DwarfCapture;
use crate::events::Event;
use crate::outputs;
use crate::perf;
use crate::progress::Progress;
use crate::raw::RawProfile;
use crate::sampling;
use crate::session::{self, Session, Setup};
use crate::summary::Summary;
use crate::symbolize;
use crate::target::Target;
use crate::tracking;

/// How often the capture loop wakes when nothing else wakes it: tracking records are
/// read (and objects opened) with this latency at worst; a quarter-full ring, the
/// command's exit and signals wake it at once.
const TICK: Duration = Duration::from_millis(100);

/// Runs a capture; returns the process exit code.
pub fn run(args: RecordArgs) -> Result<i32> {
    // Everything that can be refused is refused before any event is opened.
    let event = Event::parse(&args.event).map_err(anyhow::Error::msg)?;
    let max_rate =
        perf::max_sample_rate().context("reading /proc/sys/kernel/perf_event_max_sample_rate")?;
    let rate = sampling::rate(&event, args.freq, args.period, max_rate)?;
    let outputs = outputs::plan(&args.out.output, args.out.format.as_deref())?;
    outputs::preflight(&outputs)?;
    let target = Target::from_args(&args.pid, args.all_cpus, &args.command)?;
    for dir in &args.debug_dir {
        if !dir.is_dir() {
            bail!("--debug-dir {}: no such directory", dir.display());
        }
    }
    let dwarf_setup = match args.call_graph {
        CallGraph::Fp => None,
        CallGraph::Dwarf { stack_bytes } => Some((stack_bytes, ringbuf_bytes(args.ringbuf_size)?)),
    };
    crate::privilege::check().map_err(anyhow::Error::msg)?;
    let cpus = perf::online_cpus().context("reading the online CPUs")?;
    let first_cpu = cpus.first().copied().unwrap_or(0);
    let (sampling, precise_note) = sampling::choose(event, rate, args.precise, first_cpu)?;
    if let Some(note) = precise_note {
        eprintln!("flamebpf: {note}");
    }
    session::raise_fd_limit();
    // Reads kallsyms on its own thread while the capture is set up and runs.
    let symbolizer = symbolize::Worker::start(SymbolizeOptions {
        inlined: !args.no_inline,
        debug_info: true,
        debug_dirs: args.debug_dir.clone(),
    });
    let stop = session::stop_flag()?;
    let mut session = Session::start(&Setup {
        target: target.clone(),
        sampling: sampling.clone(),
        cpus,
        include_idle: args.include_idle,
        stack_map_size: args.stack_map_size,
        counts_map_size: args.counts_map_size,
        comm: None,
        cgroup: None,
        two_sets: false,
        dwarf: dwarf_setup,
        verbose: args.verbose,
    })?;
    let mut dwarf = matches!(args.call_graph, CallGraph::Dwarf { .. }).then(DwarfCapture::new);
    session.go()?;
    let started = Instant::now();
    let started_wall = SystemTime::now();

    let duration = args.duration.map(Duration::from_secs_f64);
    let mut progress = Progress::new(args.quiet || session.child.is_some(), duration);
    let fds = session.wake_fds()?;
    let Session {
        tracking,
        sampler,
        child,
        ..
    } = &mut session;
    let mut child_status = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let elapsed = started.elapsed();
        if duration.is_some_and(|d| elapsed >= d) {
            break;
        }
        if let Some(code) = child.as_ref().and_then(Gated::try_wait) {
            child_status = Some(code);
            break;
        }
        if let Target::Pids(pids) = &target {
            if pids.iter().all(|&p| !process_exists(p)) {
                break; // nothing left to profile, as with perf record -p
            }
        }
        let applied = tracking.process(false);
        if let Some(d) = dwarf.as_mut() {
            d.push(sampler.take_records()?);
            d.process(&tracking.tracker, Some(applied));
        }
        progress.update(elapsed, || sampler.stats().map(|s| s.samples).unwrap_or(0));
        let wait = duration.map_or(TICK, |d| d.saturating_sub(elapsed).min(TICK));
        tracking::wait(&fds, wait.as_millis().max(1) as i32)
            .context("waiting for tracking records")?;
    }
    let elapsed = started.elapsed();
    sampler.disable()?;
    progress.finish();
    tracking.process(true);
    let drained = sampler.drain().context("reading the BPF maps")?;
    if let Some(d) = dwarf.as_mut() {
        d.push(sampler.take_records()?);
        d.process(&tracking.tracker, None);
    }
    if let Some(c) = child.as_ref() {
        if child_status.is_none() {
            // The capture ended first (duration, Ctrl-C, SIGTERM): like perf, end
            // the command too rather than leave it running unprofiled.
            c.terminate(Duration::from_secs(2));
        }
    }

    let meta = Meta {
        start: started_wall,
        duration: elapsed,
        ..sampling::meta(&sampling, &target)
    };
    let (raw, unwound) = match dwarf {
        Some(d) => {
            let stats = d.unwind_stats();
            (d.raw, Some(stats))
        }
        None => {
            let mut raw = RawProfile::default();
            raw.add(&drained);
            (raw, None)
        }
    };
    let summary = Summary {
        stats: drained.stats,
        processes: raw.processes(),
        stacks: raw.stacks(),
        lost_records: tracking.tracker.lost_records(),
        unwound,
    };
    let jit_warnings = tracking.tracker.perf_maps.warnings().to_vec();
    let symbolizing = Instant::now();
    let (profile, sym_stats) = symbolizer.build(raw, std::mem::take(&mut tracking.tracker), meta);
    for w in &jit_warnings {
        eprintln!("flamebpf: {w}");
    }
    if args.verbose {
        eprintln!(
            "flamebpf: named {} user and {} kernel addresses in {} ms",
            sym_stats.user_addrs,
            sym_stats.kernel_addrs,
            symbolizing.elapsed().as_millis()
        );
        for failure in &sym_stats.object_failures {
            eprintln!("flamebpf: no symbols from {failure}");
        }
    }

    outputs::write_all(&outputs, &profile, &outputs::write_options(&args.out))?;

    if !args.quiet || summary.has_losses() {
        eprintln!("{}", summary.line());
    }
    match child_status {
        Some(code) if code != 0 => {
            if !args.quiet {
                eprintln!("flamebpf: the command exited with status {code}");
            }
            Ok(code)
        }
        _ => Ok(0),
    }
}

/// Whether `pid` still runs: a zombie (exited, not yet reaped by its parent) does not.
fn process_exists(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

/// The ring buffer's size: a power of two of at least a page, as BPF wants it.
fn ringbuf_bytes(size: u64) -> Result<u32> {
    let bytes = size.max(4096).next_power_of_two();
    u32::try_from(bytes).map_err(|_| anyhow::anyhow!("--ringbuf-size {size}: at most 2 GiB"))
}
