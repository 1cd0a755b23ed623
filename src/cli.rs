//! The command line, parsed by clap.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Default entries of the stack-trace map (and of the overflow map beside it).
pub const DEFAULT_STACK_MAP_SIZE: u32 = 16384;
/// Default entries of the counts map.
pub const DEFAULT_COUNTS_MAP_SIZE: u32 = 65536;

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

    /// Format for outputs whose extension names none: svg, folded, speedscope or
    /// pprof.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,

    #[command(flatten)]
    pub svg: SvgArgs,

    /// speedscope: one profile per thread instead of one per process.
    #[arg(long)]
    pub per_thread: bool,

    /// Folded and SVG: add the source file and line to frame names where debug
    /// information gives them (speedscope and pprof always carry them).
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

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// The event that triggers a sample, as perf names it: cpu-clock, task-clock,
    /// cycles, instructions, cache-misses, branch-misses, L1-dcache-load-misses,
    /// page-faults, context-switches, a raw PMU code (r01c2), ... (`flamebpf list`).
    #[arg(short, long, value_name = "EVENT", default_value = "cpu-clock")]
    pub event: String,

    /// Sample this many times a second on every CPU; the kernel adapts the period.
    /// Default: 99 Hz for cpu-clock and task-clock, 4000 Hz (perf's default) for
    /// other events. At most /proc/sys/kernel/perf_event_max_sample_rate.
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

    /// How user stacks are walked: fp (frame pointers, in the kernel) or
    /// dwarf[,STACK_BYTES] (a copy of the top STACK_BYTES of the stack, default
    /// 16384, at most 65528, unwound in userspace with the objects' DWARF call frame
    /// information: whole stacks for code built without frame pointers).
    #[arg(long, value_name = "MODE", default_value = "fp", value_parser = parse_call_graph)]
    pub call_graph: CallGraph,

    /// DWARF mode: the ring buffer that carries samples to userspace (rounded up to
    /// a power of two); raise it when the summary reports samples lost to it.
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = parse_size)]
    pub ringbuf_size: u64,

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

    /// Keep samples of the idle task (left out by default).
    #[arg(long)]
    pub include_idle: bool,

    /// Stop after this many seconds (fractions allowed). Without it, sampling runs
    /// until Ctrl-C, or until the command exits.
    #[arg(short, long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub duration: Option<f64>,

    #[command(flatten)]
    pub out: OutputArgs,

    /// Do not expand inlined functions into frames of their own.
    #[arg(long)]
    pub no_inline: bool,

    /// Also look for separate debug files (.gnu_debuglink targets, .build-id/xx/…)
    /// here, before /usr/lib/debug; repeatable.
    #[arg(long, value_name = "DIR")]
    pub debug_dir: Vec<PathBuf>,

    /// Entries of the stack map: raise it when the summary reports lost stacks.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_STACK_MAP_SIZE, value_parser = clap::value_parser!(u32).range(1..))]
    pub stack_map_size: u32,

    /// Entries of the counts map (unique thread and stack pairs): raise it when the
    /// summary reports samples lost to a full counts map.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_COUNTS_MAP_SIZE, value_parser = clap::value_parser!(u32).range(1..))]
    pub counts_map_size: u32,

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
    /// The event that triggers a sample (see `record --help` and `flamebpf list`).
    #[arg(short, long, value_name = "EVENT", default_value = "cpu-clock")]
    pub event: String,

    /// Samples a second on every CPU. Default 19: a prime, so periodic work does
    /// not alias with the sampling, and low enough to leave running.
    #[arg(
        short = 'F',
        long = "freq",
        value_name = "HZ",
        conflicts_with = "period"
    )]
    pub freq: Option<u64>,

    /// Sample once every N occurrences of the event instead.
    #[arg(short = 'c', long = "period", value_name = "N")]
    pub period: Option<u64>,

    /// Profile only these processes (default: the whole machine).
    #[arg(short, long, value_name = "PID", value_delimiter = ',')]
    pub pid: Vec<u32>,

    /// Profile only threads with this command name (as `ps -o comm` shows it).
    #[arg(long, value_name = "NAME")]
    pub comm: Option<String>,

    /// Profile only tasks in this cgroup (a cgroup v2 directory) and below it.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,

    /// Keep samples of the idle task (left out by default).
    #[arg(long)]
    pub include_idle: bool,

    /// Seconds per window: each window becomes one file in the store.
    #[arg(long, value_name = "SECONDS", default_value = "60", value_parser = parse_seconds)]
    pub window: f64,

    /// The store: one compressed pprof file per window.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/flamebpf")]
    pub dir: PathBuf,

    /// Delete windows older than this (e.g. 24h, 90m, 7d).
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    pub retain: std::time::Duration,

    /// Keep the store under this size, oldest windows first (e.g. 1GiB, 500MB).
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = parse_size)]
    pub max_disk: u64,

    /// Serve /debug/pprof/profile, /flamegraph.svg, /metrics and /healthz on this
    /// address (off by default; use a loopback address such as 127.0.0.1:6060 unless
    /// the network is trusted).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,

    /// Entries of each of the two stack maps.
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub stack_map_size: u32,

    /// Entries of each of the two counts maps.
    #[arg(long, value_name = "N", default_value_t = 16384, value_parser = clap::value_parser!(u32).range(1..))]
    pub counts_map_size: u32,

    /// Also look for separate debug files here; repeatable.
    #[arg(long, value_name = "DIR")]
    pub debug_dir: Vec<PathBuf>,

    /// Print a line per window written.
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
    pub out: OutputArgs,
}

/// How user stacks are walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallGraph {
    /// Frame pointers, walked in the kernel.
    Fp,
    /// A copy of the top of the user stack, unwound with DWARF CFI in userspace.
    Dwarf {
        /// Bytes of stack copied per sample.
        stack_bytes: u32,
    },
}

/// The most stack a sample may copy (perf's limit, and FLAMEBPF_MAX_STACK_BYTES).
pub const MAX_STACK_BYTES: u32 = 65528;

/// `fp`, `dwarf` or `dwarf,BYTES`, as perf spells them.
pub fn parse_call_graph(s: &str) -> Result<CallGraph, String> {
    match s.split_once(',') {
        None if s == "fp" => Ok(CallGraph::Fp),
        None if s == "dwarf" => Ok(CallGraph::Dwarf { stack_bytes: 16384 }),
        Some(("dwarf", n)) => match n.parse::<u32>() {
            Ok(b) if (8..=MAX_STACK_BYTES).contains(&b) && b % 8 == 0 => {
                Ok(CallGraph::Dwarf { stack_bytes: b })
            }
            _ => Err(format!(
                "{s:?}: the stack copy is a multiple of 8 bytes from 8 to {MAX_STACK_BYTES}"
            )),
        },
        _ => Err(format!("{s:?}: use fp, dwarf or dwarf,STACK_BYTES")),
    }
}

/// A duration as humantime reads it: 24h, 90m, 1h30m, 7d.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (write e.g. 24h, 90m, 30s)"))
}

/// A point in time: RFC 3339 (the `T` and `Z` optional) or Unix seconds.
pub fn parse_time(s: &str) -> Result<std::time::SystemTime, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
    }
    humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("{s:?}: {e} (write e.g. 2026-11-25T14:00:00Z)"))
}

/// A size in bytes: 1GiB, 500MB, 64k, 1048576.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (write e.g. 1GiB, 500MB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        _ => return Err(format!("{s:?}: unknown unit (write e.g. 1GiB, 500MB)")),
    };
    let bytes = n
        .checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))?;
    if bytes == 0 {
        return Err(format!("{s:?}: the size must be more than 0"));
    }
    Ok(bytes)
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("{s:?}: the duration must be more than 0 seconds"));
    }
    Ok(v)
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
        assert_eq!(r.freq, None);
        assert_eq!(r.period, None);
        assert_eq!(r.event, "cpu-clock");
        assert!(r.all_cpus && !r.include_idle && r.duration.is_none());
        assert_eq!(r.stack_map_size, DEFAULT_STACK_MAP_SIZE);
    }

    #[test]
    fn pids_commands_and_outputs() {
        let r = parse(&["-p", "1,2", "-p", "3", "-o", "a.svg", "-o", "b.folded"]).unwrap();
        assert_eq!(r.pid, [1, 2, 3]);
        assert_eq!(r.out.output.len(), 2);
        let r = parse(&["-F", "999", "--", "ls", "-l", "--", "x"]).unwrap();
        assert_eq!(r.freq, Some(999));
        assert_eq!(r.command, ["ls", "-l", "--", "x"]);
    }

    #[test]
    fn call_graph_modes() {
        assert_eq!(parse_call_graph("fp"), Ok(CallGraph::Fp));
        assert_eq!(
            parse_call_graph("dwarf"),
            Ok(CallGraph::Dwarf { stack_bytes: 16384 })
        );
        assert_eq!(
            parse_call_graph("dwarf,8192"),
            Ok(CallGraph::Dwarf { stack_bytes: 8192 })
        );
        for bad in [
            "lbr",
            "dwarf,0",
            "dwarf,65536",
            "dwarf,100",
            "dwarf,x",
            "fp,8",
        ] {
            assert!(parse_call_graph(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_durations_and_times() {
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("64k"), Ok(64_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(
            parse_size("lots").is_err() && parse_size("0").is_err() && parse_size("5XB").is_err()
        );
        assert_eq!(
            parse_duration("24h"),
            Ok(std::time::Duration::from_secs(86400))
        );
        assert!(parse_duration("soon").is_err());
        let t = parse_time("2026-11-25T14:00:00Z").unwrap();
        assert_eq!(
            t,
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(1795615200)
        );
        assert_eq!(parse_time("1795615200"), Ok(t));
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn continuous_defaults() {
        let c = Cli::try_parse_from(["flamebpf", "continuous"]).unwrap();
        let Command::Continuous(c) = c.command else {
            panic!()
        };
        assert_eq!((c.freq, c.window, c.max_disk), (None, 60.0, 1 << 30));
        assert_eq!(c.retain, std::time::Duration::from_secs(86400));
        assert_eq!(c.dir, PathBuf::from("/var/lib/flamebpf"));
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
        assert_eq!(parse(&["-d", "1.5"]).unwrap().duration, Some(1.5));
        assert!(
            parse(&["-a", "-F", "99", "-c", "100"]).is_err(),
            "-F and -c exclude each other"
        );
        let r = parse(&["-a", "-e", "page-faults", "-c", "100", "--precise"]).unwrap();
        assert_eq!(
            (r.event.as_str(), r.period, r.precise),
            ("page-faults", Some(100), true)
        );
    }
}
