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
