//! `flamebpf record`: check everything, start tracking and sampling, wait for the
//! end (duration, Ctrl-C/SIGTERM, or the command's exit), then symbolize and write.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use flamegraphs::{Meta, Profile};

use crate::capture::dwarf::DwarfCapture;
use crate::capture::gated::Gated;
use crate::capture::setup::{Filters, RECORD};
use crate::capture::target::Target;
use crate::capture::{sampling, session, tracking, Plan, RawProfile, Session, Stat};
use crate::cli::{CallGraph, RecordArgs};
use crate::output::progress::Progress;
use crate::output::stack_ends;
use crate::output::summary::{Accounting, Summary};
use crate::output::{self, Output};
use crate::symbolize;

/// How often the capture loop wakes when nothing else wakes it: tracking records are
/// read (and objects opened) with this latency at worst; a quarter-full ring, the
/// command's exit and signals wake it at once.
const TICK: Duration = Duration::from_millis(100);
/// The loop's period when nothing waits for a tick (see `sample`).
const QUIET_TICK: Duration = Duration::from_millis(500);

/// Runs a capture; returns the process exit code.
pub fn run(args: RecordArgs) -> Result<i32> {
    // Everything that can be refused is refused before any event is opened.
    args.sampling.check().map_err(anyhow::Error::msg)?;
    crate::labels::configure(
        crate::labels::from_args(&args.sampling.label, &args.sampling.label_rule)
            .map_err(anyhow::Error::msg)?,
    );
    let plan = Plan::check(&args.sampling, RECORD)?;
    let outputs = output::plan(&args.out.output, args.out.format.map(Into::into))?;
    output::preflight(&outputs)?;
    let target = Target::from_args(&args.pid, args.all_cpus, &args.command)?;
    let (mut setup, precise_note) =
        plan.clone()
            .setup(target.clone(), Filters::default(), args.verbose)?;
    // only speedscope's per-thread profiles need threads kept apart
    setup.per_thread = args.out.per_thread;
    // Python frames' lines cost a word of each frame's read and split stacks by
    // line: only where the output shows them
    setup.python_lines = args.out.lines;
    if let Some(note) = precise_note {
        eprintln!("flamebpf: {note}");
    }
    session::raise_fd_limit();
    // Reads kallsyms on its own thread while the capture is set up and runs.
    let mut symbolize_options = plan.symbolize_options();
    symbolize_options.debuginfod = crate::symbolize::debuginfod::start(
        &args.sampling.debuginfod,
        crate::symbolize::debuginfod::RECORD_WAIT,
    )?;
    let symbolizer = symbolize::Worker::start(symbolize_options);
    let stop = session::stop_flag()?;
    let mut session = Session::start(&setup)?;
    let mut dwarf = plan.dwarf_stack_bytes().map(DwarfCapture::new);
    session.go()?;
    let started_wall = SystemTime::now();
    let sampled = sample(&args, &target, &mut session, dwarf.as_mut(), &stop)?;

    session.sampler.disable()?;
    session
        .sampler
        .stop_off_cpu()
        .context("ending the off-CPU waits")?;
    sampled.progress.finish();
    session.follow(true)?;
    let drained = session.sampler.drain().context("reading the BPF maps")?;
    if let Some(d) = dwarf.as_mut() {
        d.push(session.sampler.take_records()?);
        d.process(&session.tracking.tracker, None);
    }
    if let Some(c) = session.child.as_ref() {
        if sampled.child_status.is_none() {
            // The capture ended first (duration, Ctrl-C, SIGTERM): like perf, end
            // the command too rather than leave it running unprofiled.
            c.terminate(Duration::from_secs(2));
        }
    }

    let meta = Meta {
        start: started_wall,
        duration: sampled.elapsed,
        ..sampling::meta(&setup.sampling, &target, setup.off_cpu_min_ns.is_some())
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
    let mut summary = Summary {
        accounting: Accounting {
            stats: drained.stats,
            lost_records: session.tracking.tracker.lost_records(),
            unwound,
            stack_ends: None,
            truncated: None,
            missed: session.sampler.missed(),
        },
        processes: raw.processes(),
        stacks: raw.stacks(),
    };
    if args.verbose {
        if let Some(t) = &session.tables {
            eprintln!("flamebpf: {}", t.stats.line());
        }
    }
    let truncated = raw.truncated();
    let profile = write(&args, &outputs, symbolizer, raw, &session, meta)?;
    if args.sampling.call_graph == CallGraph::Fp {
        // only this mode walks blind: cfi and dwarf count how their walks ended
        summary.accounting.stack_ends = Some(stack_ends::count(&profile));
        summary.accounting.truncated = Some(truncated);
    }
    if !args.quiet || summary.accounting.has_losses() {
        eprintln!("{}", summary.line());
    }
    for line in session.python.iter().flat_map(|p| p.refusals()) {
        eprintln!("flamebpf: {line}");
    }
    match sampled.child_status {
        Some(code) if code != 0 => {
            if !args.quiet {
                eprintln!("flamebpf: the command exited with status {code}");
            }
            Ok(code)
        }
        _ => Ok(0),
    }
}

/// How the sampling loop ended.
struct Sampled {
    elapsed: Duration,
    child_status: Option<i32>,
    progress: Progress,
}

/// Samples until the duration is up, a signal comes, the command exits or every
/// target process is gone; meanwhile applies tracking records and (DWARF mode)
/// unwinds the samples whose address spaces are known.
fn sample(
    args: &RecordArgs,
    target: &Target,
    session: &mut Session,
    mut dwarf: Option<&mut DwarfCapture>,
    stop: &AtomicBool,
) -> Result<Sampled> {
    let started = Instant::now();
    let duration = args.duration.map(Duration::from_secs_f64);
    let mut progress = Progress::new(args.quiet || session.child.is_some(), duration);
    let mut fds = session.wake_fds()?;
    // -p: a pidfd per target turns readable when it exits, so the loop neither
    // reads /proc at every tick nor waits for one to notice
    let exits: Vec<(u32, Option<OwnedFd>)> = match target {
        Target::Pids(pids) => pids.iter().map(|&p| (p, pidfd_open(p))).collect(),
        _ => Vec::new(),
    };
    fds.extend(
        exits
            .iter()
            .filter_map(|(_, fd)| fd.as_ref().map(|f| f.as_raw_fd())),
    );
    let mut child_status = None;
    loop {
        let elapsed = started.elapsed();
        if stop.load(Ordering::Relaxed) || duration.is_some_and(|d| elapsed >= d) {
            break;
        }
        if let Some(code) = session.child.as_ref().and_then(Gated::try_wait) {
            child_status = Some(code);
            break;
        }
        if !exits.is_empty() && exits.iter().all(|(p, fd)| has_exited(*p, fd.as_ref())) {
            break; // nothing left to profile, as with perf record -p
        }
        let applied = session.follow(false)?;
        if let Some(d) = dwarf.as_deref_mut() {
            d.push(session.sampler.take_records()?);
            d.process(&session.tracking.tracker, Some(applied));
        }
        let sampler = &session.sampler;
        progress.update(elapsed, || {
            sampler.stats().map(|s| s[Stat::STAT_SAMPLES]).unwrap_or(0)
        });
        // every source of work wakes the loop through a descriptor; the tick
        // is for what has none, and otherwise only costs wake-ups (each about
        // 80 µs of CPU with the CPUs busy: a tenth of a quiet 10 s capture's)
        let tick = if dwarf.is_some() || progress.visible() || session.tracking.wants_ticks() {
            TICK
        } else {
            QUIET_TICK
        };
        let wait = duration.map_or(tick, |d| d.saturating_sub(elapsed).min(tick));
        tracking::wait(&fds, wait.as_millis().max(1) as i32)
            .context("waiting for tracking records")?;
    }
    Ok(Sampled {
        elapsed: started.elapsed(),
        child_status,
        progress,
    })
}

/// Names the profile's addresses and writes every output; returns the profile.
fn write(
    args: &RecordArgs,
    outputs: &[Output],
    symbolizer: symbolize::Worker,
    raw: RawProfile,
    session: &Session,
    meta: Meta,
) -> Result<Profile> {
    let tracker = &session.tracking.tracker;
    let jit_warnings = tracker.perf_maps.warnings().to_vec();
    let symbolizing = Instant::now();
    let located = symbolize::Located::new(raw, tracker);
    let (profile, sym_stats) = symbolizer.build(located, meta)?;
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
    if sym_stats.no_kernel_symbols {
        eprintln!(
            "flamebpf: kernel frames are [unknown]: /proc/kallsyms shows this process no addresses (run as root, or add CAP_SYSLOG)"
        );
    }
    output::write_all(outputs, &profile, &output::write_options(&args.out))?;
    Ok(profile)
}

/// A pidfd of `pid`: readable once it exits (None where the kernel has none).
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a descriptor just returned to us, owned by nothing else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Whether `pid` exited, through its pidfd when there is one.
fn has_exited(pid: u32, pidfd: Option<&OwnedFd>) -> bool {
    let Some(fd) = pidfd else {
        return !process_exists(pid);
    };
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no waiting.
    unsafe { libc::poll(&mut p, 1, 0) == 1 && p.revents & libc::POLLIN != 0 }
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
