//! Folded stacks, the text format of Brendan Gregg's flamegraph.pl and inferno:
//! one `comm;outermost;...;leaf WEIGHT` line per unique stack. The weight is in the
//! event's unit (nanoseconds for the clocks, events otherwise), so widths measure
//! the event rather than the number of interrupts.
//!
//! Kernel frames carry the `_[k]` suffix and inlined frames `_[i]`, as perf script's
//! collapsers write them, so inferno colours them apart.
//!
//! [`parse`] reads folded text back: flamebpf's own, `perf script |
//! inferno-collapse-perf` (or stackcollapse-perf.pl), and bcc's `profile -f`, all of
//! which put the command name first.

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};

use crate::{Error, Frame, FrameKind, Meta, Profile, Sample};

/// Why a folded file was refused, with the 1-based line it was refused at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    /// The line, counting from 1.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// The name a frame has in folded output: `;` would split the frame in two and a
/// line break would end the line, so both are replaced.
pub fn frame_name(frame: &Frame) -> String {
    frame_label(frame, false)
}

/// [`frame_name`], with ` (file:line)` after the function when `lines` is set and
/// debug information gave them (the file's name only: paths would crowd a graph).
pub fn frame_label(frame: &Frame, lines: bool) -> String {
    let mut name = sanitize(&frame.name);
    if lines {
        if let (Some(file), Some(line)) = (&frame.file, frame.line) {
            let base = sanitize(file.rsplit('/').next().unwrap_or(file));
            // a Python function is named `function (file.py)`: the line goes in
            // the parentheses there are
            let bare = format!(" ({base})");
            if frame.kind == FrameKind::Python && name.ends_with(&bare) {
                name.truncate(name.len() - bare.len());
            }
            name.push_str(&format!(" ({base}:{line})"));
        }
    }
    match frame.kind {
        FrameKind::Kernel => name.push_str("_[k]"),
        FrameKind::Inline => name.push_str("_[i]"),
        FrameKind::Jit => name.push_str("_[j]"),
        FrameKind::Python => name.push_str("_[p]"),
        FrameKind::User | FrameKind::OffCpu => {}
    }
    name
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            ';' => ':',
            '\n' | '\r' => ' ',
            c => c,
        })
        .collect()
}

/// The profile as folded lines without their weights, each with its weight,
/// merged and sorted so output is deterministic. `with_lines` adds file:line.
pub fn lines(profile: &Profile, with_lines: bool) -> Vec<(String, u64)> {
    // Frame names are built once per frame, not once per occurrence.
    let names: Vec<String> = profile
        .frames()
        .iter()
        .map(|f| frame_label(f, with_lines))
        .collect();
    let mut merged: HashMap<String, u64> = HashMap::with_capacity(profile.samples.len());
    let mut line = String::new();
    for sample in &profile.samples {
        line.clear();
        line.push_str(&sanitize(&sample.comm));
        for id in profile.stack_frames(&sample.stack) {
            line.push(';');
            line.push_str(&names[id as usize]);
        }
        if let Some(weight) = merged.get_mut(line.as_str()) {
            *weight = weight.saturating_add(sample.weight);
        } else {
            merged.insert(line.clone(), sample.weight);
        }
    }
    let mut out: Vec<(String, u64)> = merged.into_iter().filter(|(_, c)| *c > 0).collect();
    out.sort_unstable();
    out
}

/// Writes the profile as folded stacks; `with_lines` adds file:line to names.
pub fn write<W: Write>(profile: &Profile, with_lines: bool, out: W) -> Result<(), Error> {
    let mut out = std::io::BufWriter::new(out);
    for (stack, count) in lines(profile, with_lines) {
        writeln!(out, "{stack} {count}")?;
    }
    out.flush()?;
    Ok(())
}

/// A frame as a folded file names it: `_[k]` marks the kernel, `_[i]` inlined code,
/// `_[j]` JIT code (which is user code here), `_[p]` a Python function; `[off-cpu]` and `[runqueue]` end
/// stacks of off-CPU time.
fn parse_frame(name: &str) -> Frame {
    if name == crate::OFF_CPU || name == crate::RUNQUEUE {
        Frame::named(name, FrameKind::OffCpu)
    } else if let Some(n) = name.strip_suffix("_[k]") {
        Frame::named(n, FrameKind::Kernel)
    } else if let Some(n) = name.strip_suffix("_[i]") {
        Frame::named(n, FrameKind::Inline)
    } else if let Some(n) = name.strip_suffix("_[j]") {
        Frame::named(n, FrameKind::Jit)
    } else if let Some(n) = name.strip_suffix("_[p]") {
        Frame::named(n, FrameKind::Python)
    } else {
        Frame::named(name, FrameKind::User)
    }
}

/// The longest folded line read: 127 frames of 8 KiB names is far less.
pub const MAX_LINE_BYTES: usize = 1 << 20;
/// The most folded input read, in bytes.
pub const MAX_INPUT_BYTES: u64 = 1 << 30;

/// Parses folded stacks into a profile whose weights are the lines' counts. The
/// whole input is checked before anything is returned: the first malformed line
/// refuses it.
pub fn parse(text: &str, meta: Meta) -> Result<Profile, ParseError> {
    parse_reader(text.as_bytes(), meta)
}

/// [`parse`], streaming from a reader: a line longer than [`MAX_LINE_BYTES`], input
/// past [`MAX_INPUT_BYTES`] and counts that add up past 2^64 - 1 are refused, so
/// memory stays in proportion to the distinct stacks. Names need not be UTF-8.
pub fn parse_reader(reader: impl Read, meta: Meta) -> Result<Profile, ParseError> {
    let mut reader = std::io::BufReader::new(reader.take(MAX_INPUT_BYTES + 1));
    let mut profile = Profile::new(meta);
    let mut buf = Vec::new();
    let mut total: u64 = 0;
    let mut read: u64 = 0;
    for i in 0.. {
        let err = |reason: &str| ParseError {
            line: i + 1,
            reason: reason.to_string(),
        };
        buf.clear();
        let n = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| err(&format!("cannot read: {e}")))?;
        if n == 0 {
            break;
        }
        read += n as u64;
        if read > MAX_INPUT_BYTES {
            return Err(err(&format!(
                "the input is over {} GiB",
                MAX_INPUT_BYTES >> 30
            )));
        }
        if buf.len() > MAX_LINE_BYTES {
            return Err(err(&format!(
                "the line is over {} MiB",
                MAX_LINE_BYTES >> 20
            )));
        }
        let text = String::from_utf8_lossy(&buf);
        let line = text.trim_end();
        if line.trim().is_empty() {
            continue;
        }
        let Some((stack, count)) = line.rsplit_once(' ') else {
            return Err(err("expected `stack count`, found no count"));
        };
        let count: u64 = count
            .parse()
            .map_err(|_| err(&format!("the count {count:?} is not a whole number")))?;
        total = total
            .checked_add(count)
            .ok_or_else(|| err("the counts add up to more than 2^64 - 1"))?;
        let stack = stack.trim_end();
        if stack.is_empty() {
            return Err(err("the stack is empty"));
        }
        let mut parts = stack.split(';');
        let comm = parts.next().unwrap_or_default().to_string();
        let mut locations = Vec::new();
        for name in parts {
            if name.is_empty() {
                return Err(err("empty frame name (two `;` in a row)"));
            }
            locations.push(profile.frame_location(parse_frame(name)));
        }
        profile.samples.push(Sample {
            pid: 0,
            tid: 0,
            comm,
            stack: locations,
            count,
            weight: count,
        });
    }
    Ok(profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(p: &mut Profile, comm: &str, frames: &[(&str, FrameKind)], count: u64) {
        let stack = frames
            .iter()
            .map(|(n, k)| p.frame_location(Frame::named(*n, *k)))
            .collect();
        p.samples.push(Sample {
            pid: 1,
            tid: 1,
            comm: comm.into(),
            stack,
            count,
            weight: count * 10,
        });
    }

    #[test]
    fn python_frames_are_marked_and_take_their_line_in_their_parentheses() {
        let f = Frame {
            name: "Worker.run (w.py)".into(),
            kind: FrameKind::Python,
            file: Some("/app/w.py".into()),
            line: Some(12),
        };
        assert_eq!(frame_label(&f, false), "Worker.run (w.py)_[p]");
        assert_eq!(frame_label(&f, true), "Worker.run (w.py:12)_[p]");
        let back = parse_frame("Worker.run (w.py)_[p]");
        assert_eq!(
            (back.name.as_str(), back.kind),
            ("Worker.run (w.py)", FrameKind::Python)
        );
    }

    #[test]
    fn writes_merged_sorted_lines_with_suffixes() {
        let mut p = Profile::new(Meta::default());
        use FrameKind::*;
        sample(&mut p, "demo", &[("main", User), ("work", User)], 3);
        sample(&mut p, "demo", &[("main", User), ("work", User)], 2);
        sample(
            &mut p,
            "demo",
            &[("main", User), ("helper", Inline), ("sys_read", Kernel)],
            1,
        );
        sample(&mut p, "a;b", &[("x;y", User)], 4);
        let mut out = Vec::new();
        write(&p, false, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a:b;x:y 40\ndemo;main;helper_[i];sys_read_[k] 10\ndemo;main;work 50\n"
        );
    }

    #[test]
    fn lines_add_the_file_name_and_line() {
        let mut p = Profile::new(Meta::default());
        let f = p.frame_location(Frame {
            name: "step".into(),
            kind: FrameKind::Inline,
            file: Some("/src/app/engine.rs".into()),
            line: Some(42),
        });
        let g = p.frame_location(Frame::named("main", FrameKind::User));
        p.samples.push(Sample {
            pid: 1,
            tid: 1,
            comm: "app".into(),
            stack: vec![g, f],
            count: 1,
            weight: 1,
        });
        assert_eq!(
            lines(&p, true),
            [("app;main;step (engine.rs:42)_[i]".to_string(), 1)]
        );
        assert_eq!(lines(&p, false), [("app;main;step_[i]".to_string(), 1)]);
    }

    #[test]
    fn zero_weight_stacks_are_left_out() {
        let mut p = Profile::new(Meta::default());
        sample(&mut p, "demo", &[("main", FrameKind::User)], 0);
        assert!(lines(&p, false).is_empty());
    }
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    fn samples_meta() -> Meta {
        Meta {
            unit: "samples".into(),
            event: "samples".into(),
            ..Meta::default()
        }
    }

    #[test]
    fn reads_flamebpf_perf_and_bcc_folded_and_writes_the_same_back() {
        let text = "\
demo;main;helper_[i];sys_read_[k] 10
demo;main;work 50
perf-app;_start;main;[unknown];do_syscall_64_[k] 3
bcc;java::Foo_[j];bar 2
";
        let p = parse(text, samples_meta()).unwrap();
        assert_eq!(p.total_weight(), 65);
        assert_eq!(p.samples[0].comm, "demo");
        let kinds: Vec<FrameKind> = p
            .stack_frames(&p.samples[0].stack)
            .map(|f| p.frame(f).kind)
            .collect();
        assert_eq!(
            kinds,
            [FrameKind::User, FrameKind::Inline, FrameKind::Kernel]
        );
        let mut out = Vec::new();
        write(&p, false, &mut out).unwrap();
        let back = String::from_utf8(out).unwrap();
        assert_eq!(back, "bcc;java::Foo_[j];bar 2\ndemo;main;helper_[i];sys_read_[k] 10\ndemo;main;work 50\nperf-app;_start;main;[unknown];do_syscall_64_[k] 3\n");
    }

    #[test]
    fn malformed_lines_are_refused_with_their_number() {
        let cases = [
            ("a;b 1\nno-count-here\n", 2, "no count"),
            ("a;b 1\n\na;b x\n", 3, "not a whole number"),
            ("a;;b 4\n", 1, "empty frame"),
            (" 4\n", 1, "stack is empty"),
            ("a;b -3\n", 1, "not a whole number"),
        ];
        for (text, line, what) in cases {
            let e = parse(text, samples_meta()).unwrap_err();
            assert_eq!(e.line, line, "{text:?}");
            assert!(e.reason.contains(what), "{e} should say {what}");
        }
    }

    #[test]
    fn long_lines_and_counts_past_u64_are_refused() {
        let mut long = "a;".to_string();
        long.push_str(&"x".repeat(MAX_LINE_BYTES + 10));
        long.push_str(" 1\n");
        let e = parse(&long, samples_meta()).unwrap_err();
        assert!(e.reason.contains("over 1 MiB"), "{e}");
        // a sparse file: NULs and no line break
        let zeros = std::io::repeat(0).take(64 << 20);
        let e = parse_reader(zeros, samples_meta()).unwrap_err();
        assert!(e.reason.contains("over 1 MiB"), "{e}");
        let half = u64::MAX / 2 + 1;
        let e = parse(&format!("a;b {half}\na;c {half}\n"), samples_meta()).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.reason.contains("2^64"), "{e}");
        let p = parse(&format!("a;b {}\n", u64::MAX), samples_meta()).unwrap();
        assert_eq!(p.total_weight(), u64::MAX);
    }

    #[test]
    fn sums_saturate_rather_than_wrap() {
        let mut p = parse(&format!("a;b {}\n", u64::MAX), samples_meta()).unwrap();
        let again = p.samples[0].clone();
        p.samples.push(again);
        assert_eq!(p.total_weight(), u64::MAX);
        assert_eq!(lines(&p, false), [("a;b".to_string(), u64::MAX)]);
    }

    #[test]
    fn blank_lines_and_trailing_spaces_are_fine() {
        let p = parse("\n  \na;b 1  \n\n", samples_meta()).unwrap();
        assert_eq!(p.total_weight(), 1);
    }
}
