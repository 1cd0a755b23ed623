//! The command line, parsed by clap: the subcommands and their options. The
//! values options take, and their parsers, are in [`values`].

mod export;
mod values;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use export::ExportArgs;
pub use values::{parse_call_graph, CallGraph, FormatArg};
use values::{
    parse_duration, parse_format, parse_retain, parse_seconds, parse_size, parse_time, parse_wait,
    parse_window, MAX_COUNTS_MAP_SIZE, MAX_STACK_MAP_SIZE, MIN_RING_RECORDS, RING_RECORD_OVERHEAD,
};

/// flamebpf: a CPU profiler for Linux. Samples stacks with BPF on perf events and
/// writes flame graphs.
#[derive(Debug, Parser)]
#[command(name = "flamebpf", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Profile a process, a command or the whole machine and write flame graphs.
    ///
    /// Examples:
    ///   flamebpf record -o out.svg -- ./my-program --its-args
    ///   flamebpf record -p 1234 -d 10 -o out.svg -o out.folded
    ///   flamebpf record -a -d 5 -F 999 -o machine.svg
    #[command(verbatim_doc_comment)]
    Record(Box<RecordArgs>),

    /// List the events flamebpf knows and whether this machine can sample them.
    List,

    /// Turn folded stacks (flamebpf's, perf script | inferno-collapse-perf, or
    /// bcc's profile -f) into any output format.
    ///
    /// Example: flamebpf convert perf.folded -o perf.svg -o perf.speedscope.json
    Convert(ConvertArgs),

    /// Profile continuously at a low rate: one compressed pprof file per window in a
    /// local store, kept for --retain, and optionally a pprof endpoint that Parca,
    /// Pyroscope or `go tool pprof` can pull from.
    ///
    /// Examples:
    ///   flamebpf continuous --dir /var/lib/flamebpf --listen 127.0.0.1:6060
    ///   go tool pprof http://127.0.0.1:6060/debug/pprof/profile?seconds=30
    #[command(verbatim_doc_comment)]
    Continuous(Box<ContinuousArgs>),

    /// Merge windows from a continuous store into any output format.
    ///
    /// Example: flamebpf query --dir /var/lib/flamebpf --since 1h --comm nginx -o nginx.svg
    Query(QueryArgs),

    /// Draw a differential flame graph of two folded profiles: frames that grew
    /// are red, frames that shrank are blue, widths are AFTER's.
    ///
    /// Example: flamebpf diff before.folded after.folded -o diff.svg --normalize
    Diff(DiffArgs),
}

/// Where outputs go and how they look; shared by record and convert.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Write the profile here; repeat for several files. The extension picks the
    /// format: .svg, .folded or .txt, .speedscope.json or .json, .pb.gz or .pprof;
    /// `-` is standard output (folded unless --format). Default: flamebpf.svg.
    #[arg(short, long = "output", value_name = "PATH")]
    pub output: Vec<PathBuf>,

    /// Format for outputs whose extension names none (and for `-`): svg, folded,
    /// speedscope or pprof.
    #[arg(long, value_name = "FORMAT", value_parser = parse_format)]
    pub format: Option<FormatArg>,

    #[command(flatten)]
    pub svg: SvgArgs,

    /// speedscope: one profile per thread instead of one per process.
    #[arg(long)]
    pub per_thread: bool,

    /// Folded and SVG: add the source file and line to frame names where debug
    /// information gives them (speedscope and pprof always carry them). A
    /// recording's Python frames then carry the line each was running, not the
    /// function's first.
    #[arg(long)]
    pub lines: bool,
}

/// How an SVG looks.
#[derive(Debug, Args)]
pub struct SvgArgs {
    /// Title of the SVG flame graph.
    #[arg(long)]
    pub title: Option<String>,

    /// Width of the SVG in pixels (default 1200).
    #[arg(long, value_name = "PIXELS", value_parser = clap::value_parser!(u32).range(100..=100_000))]
    pub width: Option<u32>,

    /// Draw an icicle graph: roots at the top, stacks growing down.
    #[arg(long)]
    pub inverted: bool,
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The folded stacks to read (`-` for standard input).
    #[arg(value_name = "INPUT")]
    pub input: PathBuf,

    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The folded profile before the change.
    #[arg(value_name = "BEFORE")]
    pub before: PathBuf,

    /// The folded profile after the change.
    #[arg(value_name = "AFTER")]
    pub after: PathBuf,

    /// Where to write the SVG (default diff.svg).
    #[arg(
        short,
        long = "output",
        value_name = "PATH",
        default_value = "diff.svg"
    )]
    pub output: PathBuf,

    /// Scale BEFORE to AFTER's total first, to compare captures of different lengths.
    #[arg(long)]
    pub normalize: bool,

    #[command(flatten)]
    pub svg: SvgArgs,
}

/// What to sample, how often, and how stacks are kept and named: the options
/// `record` and `continuous` share.
#[derive(Debug, Args)]
pub struct SamplingArgs {
    /// The event that triggers a sample, as perf names it: cpu-clock, task-clock,
    /// cycles, instructions, cache-misses, branch-misses, L1-dcache-load-misses,
    /// page-faults, context-switches, a raw PMU code (r01c2), ... (`flamebpf list`).
    #[arg(short, long, value_name = "EVENT", default_value = "cpu-clock")]
    pub event: String,

    /// Sample this many times a second on every CPU; the kernel adapts the period.
    /// Default for record: 99 Hz for cpu-clock and task-clock, 4000 Hz (perf's
    /// default) for other events; for continuous: 19 Hz (a prime, so periodic work
    /// does not alias, and low enough to leave running). At most
    /// /proc/sys/kernel/perf_event_max_sample_rate.
    #[arg(
        short = 'F',
        long = "freq",
        value_name = "HZ",
        conflicts_with = "period"
    )]
    pub freq: Option<u64>,

    /// Sample once every N occurrences of the event instead of at a frequency.
    #[arg(short = 'c', long = "period", value_name = "N")]
    pub period: Option<u64>,

    /// Ask the PMU for precise sampling (precise_ip, e.g. Intel PEBS, AMD IBS),
    /// at the highest level it grants.
    #[arg(long)]
    pub precise: bool,

    /// How user stacks are walked:
    ///   cfi (default): in the kernel, with unwind tables flamebpf builds from each
    ///     object's call frame information (.eh_frame): whole stacks for code built
    ///     without frame pointers (most of a Linux system), aggregated in the
    ///     kernel; frame pointers for code without it (JIT code).
    ///   fp: frame pointers, in the kernel: the cheapest, whole only for code built
    ///     with frame pointers.
    ///   dwarf[,STACK_BYTES] (record only): perf's method, a copy of the top
    ///     STACK_BYTES of the stack (default 16384, at most 65528) sent to
    ///     userspace and unwound there; a cross-check.
    #[arg(long, value_name = "MODE", default_value = "cfi", value_parser = parse_call_graph, verbatim_doc_comment)]
    pub call_graph: CallGraph,

    /// CFI mode: rows of unwind table the kernel may hold for every object in use
    /// together, 8 bytes each, allocated 8 MiB at a time as tables arrive (the
    /// default, 4194304, is 32 MiB at most; at most 33554432: 256 MiB). An object
    /// that finds no room is walked with frame pointers and counted (`-v`).
    #[arg(long, value_name = "ROWS", default_value_t = 4 << 20, value_parser = clap::value_parser!(u32).range(1024..=(32 << 20)))]
    pub unwind_rows: u32,

    /// DWARF mode: the ring buffer that carries samples to userspace (rounded up to
    /// a power of two); raise it when the summary reports samples lost to it. At
    /// least 8 samples' worth (the stack copy plus 2 KiB each: 144 KiB at the
    /// default copy).
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = parse_size)]
    pub ringbuf_size: u64,

    /// Keep samples of the idle task (left out by default); with --off-cpu, also
    /// the waits of kernel threads.
    #[arg(long)]
    pub include_idle: bool,

    /// Also measure the time each target thread spends off the CPU, added in
    /// nanoseconds to the stack at which it left it, under a last frame of
    /// `[off-cpu]` (blocked: sleep, I/O, a lock) or `[runqueue]` (runnable,
    /// waiting for a CPU). With on-CPU samples of a clock event, a thread's
    /// width is its wall-clock time. Not with --call-graph dwarf.
    #[arg(long)]
    pub off_cpu: bool,

    /// With --off-cpu: leave out waits shorter than this (`10us`, `1ms`; `0`
    /// keeps all).
    #[arg(long, value_name = "DURATION", default_value = "1us", value_parser = parse_wait)]
    pub off_cpu_min: std::time::Duration,

    /// Entries of the stack map (of each of the two in continuous mode): raise it
    /// when the summary reports lost stacks. Default: 16384 (record), 4096
    /// (continuous). Each entry takes about 1 KiB of kernel memory, allocated at
    /// once (16384: 17 MB) in `--call-graph fp`; in the default mode, at most 4096
    /// are allocated at once (for kernel stacks) and the rest as stacks come. At
    /// most 262144 (272 MB).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=(MAX_STACK_MAP_SIZE as i64)))]
    pub stack_map_size: Option<u32>,

    /// Entries of the counts map (unique thread and stack pairs; of each of the two
    /// in continuous mode): raise it when the summary reports samples lost to a full
    /// counts map. Default: 65536 (record), 16384 (continuous). Entries take
    /// about 100 bytes of kernel memory as they fill; at most 16777216.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=(MAX_COUNTS_MAP_SIZE as i64)))]
    pub counts_map_size: Option<u32>,

    /// Do not expand inlined functions into frames of their own.
    #[arg(long)]
    pub no_inline: bool,

    /// Keep whole names: C++ parameter lists and return types, Rust hashes. By
    /// default functions are named as perf names them (`ns::Class<T>::method`),
    /// the same in every output format.
    #[arg(long)]
    pub full_names: bool,

    /// Also look for separate debug files (.gnu_debuglink targets, .build-id/xx/…)
    /// here, before /usr/lib/debug; repeatable.
    #[arg(long, value_name = "DIR")]
    pub debug_dir: Vec<PathBuf>,

    /// Where separate debug files whose DWARF is compressed (Debian's -dbg and
    /// -dbgsym packages) are kept inflated, so that a capture does not inflate
    /// them again (libc6-dbg: 40 ms of CPU each time); `none` keeps nothing.
    /// Default: $XDG_CACHE_HOME/flamebpf/inflated (else ~/.cache/…), or
    /// /var/cache/flamebpf/inflated for root; at most 2 GiB, the oldest go first.
    #[arg(long, value_name = "DIR|none")]
    pub debug_cache: Option<PathBuf>,

    // Labels and debuginfod (issue 14): docs/labels.md, docs/debuginfod.md.
    /// Add KEY=VALUE to every sample's labels (pprof); repeatable. KEY: letters,
    /// digits, _; `service_name=NAME` names the service of every process no
    /// --label-rule matches (default: the executable's name).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub label: Vec<String>,

    /// Give the processes whose cgroup, comm or exe matches PATTERN (`*` is the
    /// wildcard) service_name=SERVICE, e.g. `cgroup:*/nginx.service=nginx`;
    /// repeatable, the first match wins.
    #[arg(long = "label-rule", value_name = "WHAT:PATTERN=SERVICE")]
    pub label_rule: Vec<String>,

    #[command(flatten)]
    pub debuginfod: DebuginfodArgs,
}

/// Where debug files of objects that lack symbols are fetched from by build id.
#[derive(Debug, Args)]
pub struct DebuginfodArgs {
    /// A debuginfod server (http:// or https://) to fetch missing debug files
    /// from, by build id; repeatable. Default: $DEBUGINFOD_URLS (space-separated).
    /// Fetches run in the background: samples named before a file arrives stay
    /// `object+0x…`.
    #[arg(long = "debuginfod", id = "debuginfod", value_name = "URL")]
    pub urls: Vec<String>,

    /// Where fetched debug files are kept. Default: $XDG_CACHE_HOME/flamebpf/debuginfod
    /// (else ~/.cache/…), or /var/cache/flamebpf/debuginfod for root.
    #[arg(long = "debuginfod-cache", value_name = "DIR")]
    pub cache: Option<PathBuf>,
}

impl SamplingArgs {
    /// The checks that span several options, made before anything starts.
    pub fn check(&self) -> Result<(), String> {
        if let CallGraph::Dwarf { stack_bytes } = self.call_graph {
            let min = MIN_RING_RECORDS * (u64::from(stack_bytes) + RING_RECORD_OVERHEAD);
            if self.ringbuf_size < min {
                return Err(format!(
                    "--ringbuf-size {}: with {stack_bytes}-byte stack copies the ring must hold at least {MIN_RING_RECORDS} samples, {} KiB",
                    self.ringbuf_size,
                    min.div_ceil(1024)
                ));
            }
        }
        Ok(())
    }
}

/// The checks of continuous mode that span several options.
pub fn check_continuous(args: &ContinuousArgs) -> Result<(), String> {
    args.sampling.check()?;
    if args.retain.as_secs_f64() < args.window {
        return Err(format!(
            "--retain {}: shorter than one --window ({} s), so every window would be deleted as it is written",
            humantime::format_duration(args.retain),
            args.window
        ));
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    #[command(flatten)]
    pub sampling: SamplingArgs,

    /// Profile these processes (all their threads), comma-separated or repeated.
    #[arg(
        short,
        long,
        value_name = "PID",
        value_delimiter = ',',
        conflicts_with = "all_cpus"
    )]
    pub pid: Vec<u32>,

    /// Profile everything running on every CPU.
    #[arg(short = 'a', long)]
    pub all_cpus: bool,

    /// Stop after this many seconds (fractions allowed, at most a year). Without
    /// it, sampling runs until Ctrl-C, or until the command exits.
    #[arg(short, long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub duration: Option<f64>,

    #[command(flatten)]
    pub out: OutputArgs,

    /// No progress line.
    #[arg(short, long)]
    pub quiet: bool,

    /// Explain failures in detail (the BPF verifier log, among others).
    #[arg(short, long)]
    pub verbose: bool,

    /// The command to run and profile, with its arguments, after `--`. Its children
    /// are profiled too; flamebpf exits with its exit status.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct ContinuousArgs {
    #[command(flatten)]
    pub sampling: SamplingArgs,

    /// Profile only these processes (default: the whole machine).
    #[arg(short, long, value_name = "PID", value_delimiter = ',')]
    pub pid: Vec<u32>,

    /// Profile only threads with this command name (as `ps -o comm` shows it).
    #[arg(long, value_name = "NAME")]
    pub comm: Option<String>,

    /// Profile only tasks in this cgroup (a cgroup v2 directory) and below it.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,

    /// Seconds per window: each window becomes one file in the store. From 1 (one
    /// drain of the maps) to 86400.
    #[arg(long, value_name = "SECONDS", default_value = "60", value_parser = parse_window)]
    pub window: f64,

    /// The store: one compressed pprof file per window.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/flamebpf")]
    pub dir: PathBuf,

    /// Delete windows older than this (e.g. 24h, 90m, 7d); at least 1m and at least
    /// one window.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_retain)]
    pub retain: std::time::Duration,

    /// Keep the store under this size, oldest windows first (e.g. 1GiB, 500MB).
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = parse_size)]
    pub max_disk: u64,

    /// Serve /debug/pprof/profile, /flamegraph.svg, /metrics and /healthz on this
    /// address (off by default; use a loopback address such as 127.0.0.1:6060 unless
    /// the network is trusted).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,

    #[command(flatten)]
    pub export: ExportArgs,

    /// Print a line per window written; explain load failures in detail.
    #[arg(short, long)]
    pub verbose: bool,

    /// A command to run and profile (with its children); the daemon stops when it
    /// exits.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The store written by `flamebpf continuous`.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/flamebpf")]
    pub dir: PathBuf,

    /// Windows of the last DURATION (e.g. 15m, 1h); default: all.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with_all = ["from", "to"])]
    pub since: Option<std::time::Duration>,

    /// Windows from this time on (RFC 3339, e.g. 2026-11-25T14:00:00Z, or Unix seconds).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub from: Option<std::time::SystemTime>,

    /// Windows up to this time.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub to: Option<std::time::SystemTime>,

    /// Only this process.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,

    /// Only threads with this command name.
    #[arg(long, value_name = "NAME")]
    pub comm: Option<String>,

    #[command(flatten)]
    pub debuginfod: DebuginfodArgs,

    #[command(flatten)]
    pub out: OutputArgs,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<RecordArgs, clap::Error> {
        let mut full = vec!["flamebpf", "record"];
        full.extend_from_slice(args);
        Cli::try_parse_from(full).map(|c| match c.command {
            Command::Record(r) => *r,
            _ => unreachable!("parsed a record command"),
        })
    }

    #[test]
    fn defaults() {
        let r = parse(&["-a"]).unwrap();
        assert_eq!(r.sampling.freq, None);
        assert_eq!(r.sampling.period, None);
        assert_eq!(r.sampling.event, "cpu-clock");
        assert!(r.all_cpus && !r.sampling.include_idle && r.duration.is_none());
        assert_eq!(r.sampling.stack_map_size, None);
    }

    #[test]
    fn pids_commands_and_outputs() {
        let r = parse(&["-p", "1,2", "-p", "3", "-o", "a.svg", "-o", "b.folded"]).unwrap();
        assert_eq!(r.pid, [1, 2, 3]);
        assert_eq!(r.out.output.len(), 2);
        let r = parse(&["-F", "999", "--", "ls", "-l", "--", "x"]).unwrap();
        assert_eq!(r.sampling.freq, Some(999));
        assert_eq!(r.command, ["ls", "-l", "--", "x"]);
    }

    #[test]
    fn continuous_defaults() {
        let c = Cli::try_parse_from(["flamebpf", "continuous"]).unwrap();
        let Command::Continuous(c) = c.command else {
            panic!()
        };
        assert_eq!(
            (c.sampling.freq, c.window, c.max_disk),
            (None, 60.0, 1 << 30)
        );
        assert_eq!(c.retain, std::time::Duration::from_secs(86400));
        assert_eq!(c.dir, PathBuf::from("/var/lib/flamebpf"));
    }

    /// Each repeatable URL flag fills its own field: two arguments of one id
    /// would share their values in a release build, where clap checks nothing.
    #[test]
    fn export_and_debuginfod_urls_stay_apart() {
        let c = Cli::try_parse_from([
            "flamebpf",
            "continuous",
            "--export",
            "grpc://127.0.0.1:4317",
            "--debuginfod",
            "http://127.0.0.1:8002",
        ])
        .unwrap();
        let Command::Continuous(c) = c.command else {
            panic!()
        };
        assert_eq!(c.export.urls, ["grpc://127.0.0.1:4317"]);
        assert_eq!(c.sampling.debuginfod.urls, ["http://127.0.0.1:8002"]);
    }

    #[test]
    fn sizes_whose_cost_is_unbounded_are_refused() {
        assert!(parse(&["-a", "--stack-map-size", "4294967295"]).is_err());
        assert!(parse(&["-a", "--stack-map-size", "20000000"]).is_err());
        assert!(parse(&["-a", "--stack-map-size", "262144"]).is_ok());
        assert!(parse(&["-a", "--counts-map-size", "100000000"]).is_err());
        let r = parse(&["-a", "--call-graph", "dwarf", "--ringbuf-size", "1KiB"]).unwrap();
        assert!(r
            .sampling
            .check()
            .unwrap_err()
            .contains("at least 8 samples"));
        let r = parse(&["-a", "--call-graph", "dwarf"]).unwrap();
        assert_eq!(r.sampling.check(), Ok(()));
        let r = parse(&["-a", "--ringbuf-size", "1KiB"]).unwrap();
        assert_eq!(
            r.sampling.check(),
            Ok(()),
            "the ring is only for dwarf mode"
        );
        assert!(parse(&["-d", "1e300", "--", "true"]).is_err());
    }

    #[test]
    fn continuous_bounds() {
        let c = |args: &[&str]| {
            let mut full = vec!["flamebpf", "continuous"];
            full.extend_from_slice(args);
            Cli::try_parse_from(full).map(|c| match c.command {
                Command::Continuous(c) => c,
                _ => unreachable!("parsed a continuous command"),
            })
        };
        for bad in [
            &["--window", "1e300"][..],
            &["--window", "1e19"],
            &["--window", "0.001"],
            &["--retain", "0"],
        ] {
            assert!(c(bad).is_err(), "{bad:?}");
        }
        let short = c(&["--window", "600", "--retain", "5m"]).unwrap();
        assert!(check_continuous(&short)
            .unwrap_err()
            .contains("shorter than one --window"));
        assert_eq!(check_continuous(&c(&[]).unwrap()), Ok(()));
        let q = Cli::try_parse_from(["flamebpf", "query", "--from", "18446744073709551615"]);
        assert!(q.is_err());
    }

    #[test]
    fn bad_values_are_clap_errors() {
        assert!(parse(&["-d", "0"]).is_err());
        assert!(parse(&["-d", "-1"]).is_err());
        assert!(parse(&["-d", "soon"]).is_err());
        assert!(parse(&["-F", "fast"]).is_err());
        assert!(parse(&["-p", "x"]).is_err());
        assert!(parse(&["-p", "1", "-a"]).is_err());
        assert!(parse(&["--stack-map-size", "0"]).is_err());
        assert!(parse(&["-a", "--unwind-rows", "40000000"]).is_err());
        assert!(parse(&["-a", "--unwind-rows", "100"]).is_err());
        assert_eq!(
            parse(&["-a", "--unwind-rows", "1048576"])
                .unwrap()
                .sampling
                .unwind_rows,
            1 << 20
        );
        assert_eq!(parse(&["-d", "1.5"]).unwrap().duration, Some(1.5));
        assert!(parse(&["-a", "--format", "png"]).is_err());
        assert_eq!(
            parse(&["-a", "--format", "pprof"]).unwrap().out.format,
            Some(FormatArg::Pprof)
        );
        assert!(
            parse(&["-a", "-F", "99", "-c", "100"]).is_err(),
            "-F and -c exclude each other"
        );
        let r = parse(&["-a", "-e", "page-faults", "-c", "100", "--precise"]).unwrap();
        let s = &r.sampling;
        assert_eq!(
            (s.event.as_str(), s.period, s.precise),
            ("page-faults", Some(100), true)
        );
    }
}
