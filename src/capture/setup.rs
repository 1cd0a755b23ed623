//! From the shared sampling options to a [`Setup`] a [`super::Session`] starts
//! from, in two steps so that everything a user can get wrong is refused before
//! privileges are checked or anything is opened: [`Plan::check`] (event, rate,
//! stack mode, directories) needs nothing, [`Plan::setup`] (privileges, CPUs, the
//! event probed on this machine) needs root.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use symbolizer::symbolize::Options as SymbolizeOptions;

use super::events::{Event, Rate};
use super::perf::{self, SamplingEvent};
use super::target::Target;
use super::{privilege, sampling};
use crate::cli::{CallGraph, SamplingArgs};

/// What differs between the commands that sample.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    /// The frequency when neither -F nor -c is given (None: the event's own
    /// default).
    pub clock_hz: Option<u64>,
    /// Stack map entries when --stack-map-size is not given.
    pub stack_map_size: u32,
    /// Counts map entries when --counts-map-size is not given.
    pub counts_map_size: u32,
    /// Two map sets switched by the daemon (continuous mode).
    pub two_sets: bool,
    /// Whether `--call-graph dwarf` is allowed (it sends every sample to userspace,
    /// which only `record` reads).
    pub dwarf_allowed: bool,
}

/// `record`'s defaults.
pub const RECORD: Defaults = Defaults {
    clock_hz: None,
    stack_map_size: 16384,
    counts_map_size: 65536,
    two_sets: false,
    dwarf_allowed: true,
};

/// `continuous`'s defaults: low rate, small maps, two sets.
pub const CONTINUOUS: Defaults = Defaults {
    clock_hz: Some(19),
    stack_map_size: 4096,
    counts_map_size: 16384,
    two_sets: true,
    dwarf_allowed: false,
};

/// Sampling options checked without privileges.
#[derive(Debug, Clone)]
pub struct Plan {
    event: Event,
    rate: Rate,
    precise: bool,
    include_idle: bool,
    stack_map_size: u32,
    counts_map_size: u32,
    two_sets: bool,
    dwarf: Option<(u32, u32)>,
    cfi: Option<u32>,
    off_cpu_min_ns: Option<u64>,
    inlined: bool,
    full_names: bool,
    debug_dirs: Vec<PathBuf>,
    /// `--debug-cache`: None for `none`.
    inflate_cache: Option<PathBuf>,
}

/// How to set a capture up.
pub struct Setup {
    /// What to profile.
    pub target: Target,
    /// The event, rate and precision.
    pub sampling: SamplingEvent,
    /// The online CPUs.
    pub cpus: Vec<u32>,
    /// Keep the idle task.
    pub include_idle: bool,
    /// Stack map entries.
    pub stack_map_size: u32,
    /// Counts map entries.
    pub counts_map_size: u32,
    /// Only threads with this comm.
    pub comm: Option<String>,
    /// Only tasks under this cgroup.
    pub cgroup: Option<PathBuf>,
    /// Two map sets to switch between (continuous mode).
    pub two_sets: bool,
    /// DWARF mode: (stack bytes, ring buffer bytes).
    pub dwarf: Option<(u32, u32)>,
    /// CFI mode: rows of unwind table the kernel holds.
    pub cfi: Option<u32>,
    /// `--off-cpu`: the shortest wait kept, in nanoseconds.
    pub off_cpu_min_ns: Option<u64>,
    /// Keep thread ids apart in the aggregate (an output shows threads).
    pub per_thread: bool,
    /// `--lines`: Python frames carry the line they run, not the function's
    /// first (each line its own stack in the aggregate).
    pub python_lines: bool,
    /// Show the verifier log on a load failure.
    pub verbose: bool,
}

/// Filters only the daemon offers.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// Only threads with this comm.
    pub comm: Option<String>,
    /// Only tasks under this cgroup.
    pub cgroup: Option<PathBuf>,
}

impl Plan {
    /// Checks the options; nothing is opened and no privilege is needed.
    pub fn check(args: &SamplingArgs, defaults: Defaults) -> Result<Plan> {
        let event = Event::parse(&args.event)?;
        let max_rate = perf::max_sample_rate()
            .context("reading /proc/sys/kernel/perf_event_max_sample_rate")?;
        let freq = match (args.freq, args.period, defaults.clock_hz) {
            (None, None, Some(hz)) => Some(hz.min(max_rate)),
            (freq, _, _) => freq,
        };
        let rate = sampling::rate(&event, freq, args.period, max_rate)?;
        for dir in &args.debug_dir {
            if !dir.is_dir() {
                bail!("--debug-dir {}: no such directory", dir.display());
            }
        }
        let cfi = (args.call_graph == CallGraph::Cfi).then_some(args.unwind_rows);
        let dwarf = match args.call_graph {
            CallGraph::Fp | CallGraph::Cfi => None,
            CallGraph::Dwarf { .. } if !defaults.dwarf_allowed => {
                bail!("--call-graph dwarf is for record: it sends every sample to userspace")
            }
            CallGraph::Dwarf { stack_bytes } => {
                Some((stack_bytes, ringbuf_bytes(args.ringbuf_size)?))
            }
        };
        if args.off_cpu && event.unit() != "ns" {
            bail!(
                "--off-cpu needs a clock event (cpu-clock, task-clock), so that time on and off the CPU are both nanoseconds; {} counts events",
                args.event
            );
        }
        if args.off_cpu && dwarf.is_some() {
            bail!("--off-cpu works with --call-graph cfi or fp, not dwarf (a stack copy at every context switch would cost more than it shows)");
        }
        let off_cpu_min_ns = args
            .off_cpu
            .then(|| u64::try_from(args.off_cpu_min.as_nanos()).unwrap_or(u64::MAX));
        Ok(Plan {
            event,
            rate,
            precise: args.precise,
            include_idle: args.include_idle,
            stack_map_size: args.stack_map_size.unwrap_or(defaults.stack_map_size),
            counts_map_size: args.counts_map_size.unwrap_or(defaults.counts_map_size),
            two_sets: defaults.two_sets,
            dwarf,
            cfi,
            off_cpu_min_ns,
            inlined: !args.no_inline,
            full_names: args.full_names,
            debug_dirs: args.debug_dir.clone(),
            inflate_cache: match &args.debug_cache {
                Some(dir) if dir.as_os_str() == "none" => None,
                Some(dir) => Some(dir.clone()),
                None => Some(crate::symbolize::debuginfod::default_cache("inflated")),
            },
        })
    }

    /// DWARF mode: the bytes of stack each sample copies.
    pub fn dwarf_stack_bytes(&self) -> Option<u32> {
        self.dwarf.map(|(bytes, _)| bytes)
    }

    /// How the capture's addresses are to be named.
    pub fn symbolize_options(&self) -> SymbolizeOptions {
        SymbolizeOptions {
            inlined: self.inlined,
            full_names: self.full_names,
            debug_info: true,
            debug_dirs: self.debug_dirs.clone(),
            inflate_cache: self.inflate_cache.clone(),
            // set by the command (it knows how long it may wait)
            debuginfod: None,
        }
    }

    /// Checks privileges and probes the event on this machine. Returns the setup
    /// and, for `--precise`, a note saying what the PMU granted.
    pub fn setup(
        self,
        target: Target,
        filters: Filters,
        verbose: bool,
    ) -> Result<(Setup, Option<String>)> {
        privilege::check()?;
        let cpus = perf::online_cpus().context("reading the online CPUs")?;
        let first_cpu = cpus.first().copied().unwrap_or(0);
        let (sampling, note) = sampling::choose(self.event, self.rate, self.precise, first_cpu)?;
        let setup = Setup {
            target,
            sampling,
            cpus,
            include_idle: self.include_idle,
            stack_map_size: self.stack_map_size,
            counts_map_size: self.counts_map_size,
            comm: filters.comm,
            cgroup: filters.cgroup,
            two_sets: self.two_sets,
            dwarf: self.dwarf,
            cfi: self.cfi,
            off_cpu_min_ns: self.off_cpu_min_ns,
            per_thread: false,
            python_lines: false,
            verbose,
        };
        Ok((setup, note))
    }
}

/// The ring buffer's size: a power of two of at least a page, as BPF wants it.
fn ringbuf_bytes(size: u64) -> Result<u32> {
    let bytes = size.max(4096).next_power_of_two();
    u32::try_from(bytes).map_err(|_| anyhow::anyhow!("--ringbuf-size {size}: at most 2 GiB"))
}
