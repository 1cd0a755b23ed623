//! The values options take (sizes, durations, times, the call-graph mode, the
//! output format) and their parsers: each refuses bad input with one line.

/// The output formats, as `--format` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    /// An SVG flame graph (inferno).
    Svg,
    /// Folded stacks, one line per stack: `frame;frame;frame count`.
    Folded,
    /// speedscope's JSON file format.
    Speedscope,
    /// pprof's gzipped protocol buffer.
    Pprof,
}

impl From<FormatArg> for flamegraphs::Format {
    fn from(f: FormatArg) -> flamegraphs::Format {
        match f {
            FormatArg::Svg => flamegraphs::Format::Svg,
            FormatArg::Folded => flamegraphs::Format::Folded,
            FormatArg::Speedscope => flamegraphs::Format::Speedscope,
            FormatArg::Pprof => flamegraphs::Format::Pprof,
        }
    }
}

/// A `--format` name; clap's own message for a bad one spans several lines, this
/// one names the choices on one.
pub fn parse_format(s: &str) -> Result<FormatArg, String> {
    use clap::ValueEnum;
    FormatArg::from_str(s, true).map_err(|_| {
        let names: Vec<String> = FormatArg::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
            .collect();
        format!("unknown format {s:?}: choose one of {}", names.join(", "))
    })
}

/// How user stacks are walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallGraph {
    /// Unwind tables built from each object's call frame information, walked in
    /// the kernel; frame pointers where an object has none.
    Cfi,
    /// Frame pointers, walked in the kernel.
    Fp,
    /// A copy of the top of the user stack, unwound with DWARF CFI in userspace.
    Dwarf {
        /// Bytes of stack copied per sample.
        stack_bytes: u32,
    },
}

/// The most stack a sample may copy (perf's limit too), from bpf/profile.h.
pub const MAX_STACK_BYTES: u32 = crate::capture::skel::limits::MAX_STACK_BYTES;

/// `cfi`, `fp`, `dwarf` or `dwarf,BYTES` (the last three as perf spells them).
pub fn parse_call_graph(s: &str) -> Result<CallGraph, String> {
    match s.split_once(',') {
        None if s == "cfi" => Ok(CallGraph::Cfi),
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
        _ => Err(format!("{s:?}: use cfi, fp, dwarf or dwarf,STACK_BYTES")),
    }
}

/// A duration as humantime reads it: 24h, 90m, 1h30m, 7d.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (write e.g. 24h, 90m, 30s)"))
}

/// The shortest wait `--off-cpu` keeps: `0`, or a duration (`10us`, `1ms`) of at
/// most a minute (a longer minimum would leave out nearly every wait).
pub fn parse_wait(s: &str) -> Result<std::time::Duration, String> {
    if s.trim() == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{s:?}: {e} (write e.g. 10us, 1ms, or 0)"))?;
    if d > std::time::Duration::from_secs(60) {
        return Err(format!("{s:?}: at most 60s"));
    }
    Ok(d)
}

/// The latest time `--from`/`--to` take: the end of year 9999, as RFC 3339 does.
pub const LAST_TIME_SECS: u64 = 253_402_300_799;

/// A point in time: RFC 3339 (the `T` and `Z` optional) or Unix seconds.
pub fn parse_time(s: &str) -> Result<std::time::SystemTime, String> {
    if let Ok(secs) = s.parse::<u64>() {
        if secs > LAST_TIME_SECS {
            return Err(format!(
                "{s:?}: Unix seconds up to {LAST_TIME_SECS} (the end of year 9999)"
            ));
        }
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

/// The longest `-d`: a year, far below what a `Duration` holds.
pub const MAX_DURATION_SECS: f64 = 365.0 * 86400.0;

/// A number of seconds, fractions allowed, from more than 0 to a year.
pub fn parse_seconds(s: &str) -> Result<f64, String> {
    seconds_within(s, 0.0, MAX_DURATION_SECS)
}

/// The shortest `--window`: one drain of the maps.
pub const MIN_WINDOW_SECS: f64 = 1.0;
/// The longest `--window`: a day.
pub const MAX_WINDOW_SECS: f64 = 86400.0;

/// `continuous --window`: 1 s (one drain: shorter windows would only multiply
/// files) to a day.
pub fn parse_window(s: &str) -> Result<f64, String> {
    seconds_within(s, MIN_WINDOW_SECS, MAX_WINDOW_SECS)
}

fn seconds_within(s: &str, min: f64, max: f64) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("{s:?}: the duration must be more than 0 seconds"));
    }
    if v < min || v > max {
        return Err(format!("{s:?}: give {min} to {max} seconds"));
    }
    Ok(v)
}

/// The shortest `--retain`: a minute, so a slip of the finger does not delete
/// every window as it is written.
pub const MIN_RETAIN: std::time::Duration = std::time::Duration::from_secs(60);

/// `continuous --retain`: a duration of at least a minute.
pub fn parse_retain(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration(s)?;
    if d < MIN_RETAIN {
        return Err(format!(
            "{s:?}: keep windows at least 1m (a shorter retention deletes them as they are written)"
        ));
    }
    Ok(d)
}

/// The most stack map entries: each takes about 1 KiB of kernel memory,
/// preallocated (127 frames of 8 bytes and a header; 16384 entries take 17 MB),
/// so 262144 is about 272 MB of kernel memory per map
/// (twice in continuous mode). Larger maps take minutes to allocate and can run the
/// machine out of memory.
pub const MAX_STACK_MAP_SIZE: u32 = 1 << 18;
/// The most counts map entries (not preallocated; about 100 bytes each when full).
pub const MAX_COUNTS_MAP_SIZE: u32 = 1 << 24;

/// The smallest DWARF-mode ring: this many records of the largest size, so a burst
/// of samples on every CPU does not fill it before the reader wakes.
pub const MIN_RING_RECORDS: u64 = 8;
/// What a DWARF-mode record holds besides its stack copy (registers, the kernel
/// stack, ids), rounded up.
pub const RING_RECORD_OVERHEAD: u64 = 2048;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_name() {
        assert_eq!(parse_format("pprof"), Ok(FormatArg::Pprof));
        assert_eq!(parse_format("SVG"), Ok(FormatArg::Svg));
        let e = parse_format("png").unwrap_err();
        assert!(
            e.contains("unknown format \"png\"") && e.contains("speedscope"),
            "{e}"
        );
    }

    #[test]
    fn call_graph_modes() {
        assert_eq!(parse_call_graph("fp"), Ok(CallGraph::Fp));
        assert_eq!(parse_call_graph("cfi"), Ok(CallGraph::Cfi));
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
    fn every_duration_and_time_is_bounded_at_parse_time() {
        for bad in ["1e300", "1e19", "inf", "NaN", "31536001"] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_seconds("31536000"), Ok(31536000.0));
        for bad in ["1e300", "1e19", "0.001", "0.5", "86401"] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_window("1"), Ok(1.0));
        assert!(parse_time("18446744073709551615").is_err());
        assert!(parse_time("253402300800").is_err());
        assert!(parse_time("253402300799").is_ok());
        for bad in ["0s", "0", "59s", "1ms"] {
            assert!(parse_retain(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_retain("1m"), Ok(std::time::Duration::from_secs(60)));
    }
}
