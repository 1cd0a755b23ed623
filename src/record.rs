//! `flamebpf record`: check everything, start tracking and sampling, wait for the
//! end (duration, Ctrl-C/SIGTERM, or the command's exit), then symbolize and write.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use flamegraphs::Meta;
use symbolizer::symbolize::Options as SymbolizeOptions;

use crate::bpf::{self, Sampler};
use crate::cli::RecordArgs;
use crate::command::Gated;
use crate::events::{Event, Rate};
use crate::outputs;
use crate::perf;
use crate::progress::Progress;
use crate::sampling;
use crate::summary::Summary;
use crate::symbolize;
use crate::target::Target;
use crate::tracking::{self, Tracking};

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
    crate::privilege::check().map_err(anyhow::Error::msg)?;
    let cpus = perf::online_cpus().context("reading the online CPUs")?;
    let first_cpu = cpus.first().copied().unwrap_or(0);
    let (sampling, precise_note) = sampling::choose(event, rate, args.precise, first_cpu)?;
    if let Some(note) = precise_note {
        eprintln!("flamebpf: {note}");
    }
    raise_fd_limit();
    // Reads kallsyms on its own thread while the capture is set up and runs.
    let symbolizer = symbolize::Worker::start(SymbolizeOptions {
        inlined: !args.no_inline,
        debug_info: true,
        debug_dirs: args.debug_dir.clone(),
    });

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }

    let mut tracking = Tracking::start(&cpus).map_err(|e| event_error(e, "tracking"))?;
    let follow_forks = matches!(target, Target::Command { .. });
    let config = bpf::Config {
        filter_pids: !matches!(target, Target::All),
        follow_forks,
        include_idle: args.include_idle,
        stack_map_size: args.stack_map_size,
        counts_map_size: args.counts_map_size,
    };
    let mut sampler = Sampler::load(&config).map_err(|e| load_error(e, args.verbose))?;
    if follow_forks {
        sampler.attach_task_tracepoints()?;
    }
    for &cpu in &cpus {
        let name = &sampling.event.name;
        let fd = perf::open_sampling(&sampling, cpu)
            .with_context(|| format!("opening {name} on CPU {cpu}"))
            .map_err(|e| event_error(e, name))?;
        sampler.attach_event(fd)?;
    }

    let mut child = None;
    match &target {
        Target::Pids(pids) => {
            for &pid in pids {
                sampler.add_target(pid)?;
                // A process that exits right now is still profiled for its last moments.
                let _ = tracking.tracker.snapshot(pid);
            }
        }
        Target::All => tracking.tracker.snapshot_all(),
        Target::Command { program, args } => {
            // Until it execs, the child runs our own image.
            let _ = tracking.tracker.snapshot(std::process::id());
            let c = Gated::spawn(program, args)
                .with_context(|| format!("starting {}", program.display()))?;
            sampler.add_target(c.pid())?;
            child = Some(c);
        }
    }

    sampler.enable()?;
    let started = Instant::now();
    let started_wall = SystemTime::now();
    if let (Some(c), Target::Command { program, .. }) = (child.as_mut(), &target) {
        if let Err(e) = c.release() {
            let _ = sampler.disable();
            bail!("cannot run {}: {}", program.display(), io_reason(&e));
        }
    }

    let duration = args.duration.map(Duration::from_secs_f64);
    let mut progress = Progress::new(args.quiet || child.is_some(), duration);
    let exit_fd = child.as_ref().and_then(Gated::exit_fd);
    let mut fds = tracking.fds();
    fds.extend(exit_fd.as_ref().map(|fd| fd.as_raw_fd()));
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
        tracking.process(false);
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
    if let Some(c) = child.as_ref() {
        if child_status.is_none() {
            // The capture ended first (duration, Ctrl-C, SIGTERM): like perf, end
            // the command too rather than leave it running unprofiled.
            c.terminate(Duration::from_secs(2));
        }
    }

    let meta = Meta {
        target: target.describe(),
        event: sampling.event.name.clone(),
        unit: sampling.event.unit().into(),
        frequency: match sampling.rate {
            Rate::Frequency(hz) => Some(hz),
            Rate::Period(_) => None,
        },
        period: match sampling.rate {
            Rate::Period(n) => Some(n),
            Rate::Frequency(_) => None,
        },
        start: started_wall,
        duration: elapsed,
    };
    let summary = Summary {
        stats: drained.stats,
        processes: {
            let mut pids: Vec<u32> = drained.counts.iter().map(|c| c.pid).collect();
            pids.sort_unstable();
            pids.dedup();
            pids.len()
        },
        stacks: drained.stacks.len(),
        lost_records: tracking.tracker.lost_records(),
    };
    let jit_warnings = tracking.tracker.perf_maps.warnings().to_vec();
    let symbolizing = Instant::now();
    let (profile, sym_stats) =
        symbolizer.build(drained, std::mem::take(&mut tracking.tracker), meta);
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

/// Many processes map many objects, each kept open until the end: lift the soft
/// limit on descriptors to the hard one (allowed without privileges).
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
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

fn io_reason(e: &io::Error) -> String {
    let s = e.to_string();
    // "Permission denied (os error 13)" reads better without the number.
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Turns a perf_event_open failure into the sentence a user can act on.
fn event_error(e: anyhow::Error, what: &str) -> anyhow::Error {
    let errno = e
        .chain()
        .find_map(|c| c.downcast_ref::<io::Error>())
        .and_then(io::Error::raw_os_error);
    match errno {
        Some(libc::EACCES) | Some(libc::EPERM) => anyhow::anyhow!(
            "not allowed to open the {what} perf event: run as root, or with CAP_PERFMON (kernel.perf_event_paranoid is {})",
            std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into())
        ),
        Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::EOPNOTSUPP) => {
            anyhow::anyhow!("the {what} event is not supported on this machine")
        }
        _ => e,
    }
}

/// A BPF load failure as one line; with -v, the verifier's last words first.
fn load_error(e: anyhow::Error, verbose: bool) -> anyhow::Error {
    if verbose {
        for line in bpf::libbpf_log_tail(40) {
            eprintln!("libbpf: {line}");
        }
    }
    let hint = if verbose {
        ""
    } else {
        " (run with -v for the verifier log)"
    };
    anyhow::anyhow!(
        "loading the BPF program failed: {}{hint}",
        one_line(&format!("{e:#}"))
    )
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
