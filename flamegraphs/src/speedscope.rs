//! speedscope's JSON file format (https://www.speedscope.app/file-format-schema.json):
//! a shared frame table and one `sampled` profile per process (or per thread), each
//! sample a stack of frame indices with its weight in the event's unit.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use serde::Serialize;

use crate::{folded, Error, Profile};

/// What the speedscope file holds.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpeedscopeOptions {
    /// One profile per thread instead of one per process.
    pub per_thread: bool,
}

#[derive(Serialize)]
struct File {
    #[serde(rename = "$schema")]
    schema: &'static str,
    name: String,
    exporter: String,
    #[serde(rename = "activeProfileIndex")]
    active_profile_index: usize,
    shared: Shared,
    profiles: Vec<Sampled>,
}

#[derive(Serialize)]
struct Shared {
    frames: Vec<Frame>,
}

#[derive(Serialize)]
struct Frame {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u32>,
}

#[derive(Serialize)]
struct Sampled {
    #[serde(rename = "type")]
    kind: &'static str,
    name: String,
    unit: &'static str,
    #[serde(rename = "startValue")]
    start_value: u64,
    #[serde(rename = "endValue")]
    end_value: u64,
    samples: Vec<Vec<u32>>,
    weights: Vec<u64>,
}

/// speedscope's name for the unit of a profile's weights.
fn unit(profile: &Profile) -> &'static str {
    match profile.meta.unit.as_str() {
        "ns" => "nanoseconds",
        _ => "none",
    }
}

/// Writes the profile as a speedscope file.
pub fn write<W: Write>(
    profile: &Profile,
    options: &SpeedscopeOptions,
    out: W,
) -> Result<(), Error> {
    let frames = profile
        .frames()
        .iter()
        .map(|f| Frame {
            name: folded::frame_name(f),
            file: f.file.clone(),
            line: f.line,
        })
        .collect();
    // Group by process (or thread); BTreeMap keeps the grouping deterministic.
    let unit = unit(profile);
    let mut groups: BTreeMap<(u32, u32), Sampled> = BTreeMap::new();
    // A process's name is the command that weighs most in it: a child sampled
    // before its exec still carries its parent's name for a moment.
    let mut names: HashMap<(u32, u32), HashMap<&str, u64>> = HashMap::new();
    for s in profile.samples.iter().filter(|s| s.weight > 0) {
        let key = (s.pid, if options.per_thread { s.tid } else { 0 });
        let w = names
            .entry(key)
            .or_default()
            .entry(s.comm.as_str())
            .or_default();
        *w = w.saturating_add(s.weight);
        let g = groups.entry(key).or_insert_with(|| Sampled {
            kind: "sampled",
            name: String::new(),
            unit,
            start_value: 0,
            end_value: 0,
            samples: Vec::new(),
            weights: Vec::new(),
        });
        g.samples.push(profile.stack_frames(&s.stack).collect());
        g.weights.push(s.weight);
        g.end_value = g.end_value.saturating_add(s.weight);
    }
    for ((pid, tid), g) in groups.iter_mut() {
        let comm = names[&(*pid, *tid)]
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
            .map_or("", |(c, _)| *c);
        g.name = if options.per_thread {
            format!("{comm} (pid {pid}, tid {tid})")
        } else {
            format!("{comm} (pid {pid})")
        };
    }
    let mut profiles: Vec<Sampled> = groups.into_values().collect();
    // The heaviest first: speedscope opens the first profile.
    profiles.sort_by(|a, b| {
        b.end_value
            .cmp(&a.end_value)
            .then_with(|| a.name.cmp(&b.name))
    });
    let m = &profile.meta;
    let file = File {
        schema: "https://www.speedscope.app/file-format-schema.json",
        name: format!("{} · {}", m.target, m.event),
        exporter: format!("flamebpf {}", env!("CARGO_PKG_VERSION")),
        active_profile_index: 0,
        shared: Shared { frames },
        profiles,
    };
    let mut out = std::io::BufWriter::new(out);
    serde_json::to_writer(&mut out, &file).map_err(|e| Error::Io(e.into()))?;
    out.flush()?;
    Ok(())
}
