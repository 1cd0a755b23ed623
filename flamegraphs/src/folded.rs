//! Folded stacks, the text format of Brendan Gregg's flamegraph.pl and inferno:
//! one `comm;outermost;...;leaf WEIGHT` line per unique stack. The weight is in the
//! event's unit (nanoseconds for the clocks, events otherwise), so widths measure
//! the event rather than the number of interrupts.
//!
//! Kernel frames carry the `_[k]` suffix and inlined frames `_[i]`, as perf script's
//! collapsers write them, so inferno colours them apart.

use std::collections::HashMap;
use std::io::Write;

use crate::{Error, Frame, FrameKind, Profile};

/// The name a frame has in folded output: `;` would split the frame in two and a
/// line break would end the line, so both are replaced.
pub fn frame_name(frame: &Frame) -> String {
    let mut name = sanitize(&frame.name);
    match frame.kind {
        FrameKind::Kernel => name.push_str("_[k]"),
        FrameKind::Inline => name.push_str("_[i]"),
        FrameKind::User => {}
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
/// merged and sorted so output is deterministic.
pub fn lines(profile: &Profile) -> Vec<(String, u64)> {
    // Frame names are built once per frame, not once per occurrence.
    let names: Vec<String> = profile.frames().iter().map(frame_name).collect();
    let mut merged: HashMap<String, u64> = HashMap::with_capacity(profile.samples.len());
    let mut line = String::new();
    for sample in &profile.samples {
        line.clear();
        line.push_str(&sanitize(&sample.comm));
        for &id in &sample.stack {
            line.push(';');
            line.push_str(&names[id as usize]);
        }
        if let Some(weight) = merged.get_mut(line.as_str()) {
            *weight += sample.weight;
        } else {
            merged.insert(line.clone(), sample.weight);
        }
    }
    let mut out: Vec<(String, u64)> = merged.into_iter().filter(|(_, c)| *c > 0).collect();
    out.sort_unstable();
    out
}

/// Writes the profile as folded stacks.
pub fn write<W: Write>(profile: &Profile, out: W) -> Result<(), Error> {
    let mut out = std::io::BufWriter::new(out);
    for (stack, count) in lines(profile) {
        writeln!(out, "{stack} {count}")?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Meta, Sample};

    fn sample(p: &mut Profile, comm: &str, frames: &[(&str, FrameKind)], count: u64) {
        let stack = frames
            .iter()
            .map(|(n, k)| p.intern(Frame::named(*n, *k)))
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
        write(&p, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a:b;x:y 40\ndemo;main;helper_[i];sys_read_[k] 10\ndemo;main;work 50\n"
        );
    }

    #[test]
    fn zero_weight_stacks_are_left_out() {
        let mut p = Profile::new(Meta::default());
        sample(&mut p, "demo", &[("main", FrameKind::User)], 0);
        assert!(lines(&p).is_empty());
    }
}
