//! Names, from debuginfod, the frames a stored profile left as `object+0x…`:
//! what `flamebpf query --debuginfod` does to windows written while no debug
//! file was at hand. A location's file offset comes from its mapping (the real
//! range and file offset, or, in files of older versions, a mapping from 0
//! whose addresses are file offsets); the debug file is read by virtual
//! address, through the segments of the object itself when this host still has
//! the same file, else through the debug file's own.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use flamegraphs::{FrameKind, Location, LocationId, Profile, Sample};
use symbolizer::buildid;
use symbolizer::debuginfod::Debuginfod;
use symbolizer::Symbolizer;

use super::intern_symbols;

/// The file offset of a location named `short+0x…` in an object with a
/// build id, if it is one.
fn unnamed(profile: &Profile, l: &Location) -> Option<(Vec<u8>, u64)> {
    let m = &profile.mappings()[l.mapping? as usize];
    let id = m.build_id.clone()?;
    let [frame] = l.frames.as_slice() else {
        return None;
    };
    let short = m.path.rsplit('/').next()?;
    let hex = profile
        .frame(*frame)
        .name
        .strip_prefix(short)?
        .strip_prefix("+0x")?;
    let offset = u64::from_str_radix(hex, 16).ok()?;
    (m.file_offset(l.address) == offset).then_some((id, offset))
}

/// The segments file offsets are mapped through: the object's own when `path`
/// on this host is the same build, else the debug file's.
fn segments(path: &str, build_id: &[u8], debug: &Path) -> Vec<buildid::Segment> {
    if let Ok(f) = File::open(path) {
        if buildid::read(&f).as_deref() == Some(build_id) {
            return buildid::load_segments(&f);
        }
    }
    File::open(debug)
        .map(|f| buildid::load_segments(&f))
        .unwrap_or_default()
}

/// `profile` with every unnamed frame debuginfod could name renamed; the
/// number of locations renamed.
pub fn rename(
    profile: Profile,
    debuginfod: &Debuginfod,
    symbolizer: &Symbolizer,
) -> (Profile, usize) {
    let mut wanted: HashMap<Vec<u8>, Vec<(usize, u64)>> = HashMap::new();
    for (i, l) in profile.locations().iter().enumerate() {
        if let Some((id, offset)) = unnamed(&profile, l) {
            wanted.entry(id).or_default().push((i, offset));
        }
    }
    if wanted.is_empty() {
        return (profile, 0);
    }
    // every file is asked for before any is waited for
    for id in wanted.keys() {
        debuginfod.request(id);
    }
    let mut named: HashMap<usize, symbolizer::symbolize::Frames> = HashMap::new();
    for (id, locations) in &wanted {
        let Some(debug) = debuginfod.debug_file(id) else {
            continue;
        };
        let path = &profile.mappings()
            [profile.locations()[locations[0].0].mapping.unwrap_or(0) as usize]
            .path;
        let segs = segments(path, id, &debug);
        let found: Vec<(usize, u64)> = locations
            .iter()
            .filter_map(|&(i, o)| buildid::virtual_address(&segs, o).map(|v| (i, v)))
            .collect();
        let addrs: Vec<u64> = found.iter().map(|&(_, v)| v).collect();
        if let Ok(frames) = symbolizer.debug_file(&debug, &addrs) {
            for ((i, _), f) in found.iter().zip(frames) {
                if !f.is_empty() {
                    named.insert(*i, f);
                }
            }
        }
    }
    let renamed = named.len();
    (rebuild(&profile, &named), renamed)
}

/// A copy of `profile` with the frames of the locations in `named` replaced.
fn rebuild(profile: &Profile, named: &HashMap<usize, symbolizer::symbolize::Frames>) -> Profile {
    let mut out = Profile::new(profile.meta.clone());
    out.labels = profile.labels.clone();
    out.process_labels = profile.process_labels.clone();
    let locations: Vec<LocationId> = profile
        .locations()
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let mapping = l
                .mapping
                .map(|m| out.intern_mapping(profile.mappings()[m as usize].clone()));
            let frames = match named
                .get(&i)
                .and_then(|syms| intern_symbols(&mut out, syms, FrameKind::User))
            {
                Some(frames) => frames,
                None => l
                    .frames
                    .iter()
                    .map(|&f| out.intern(profile.frame(f).clone()))
                    .collect(),
            };
            out.intern_location(Location {
                mapping,
                address: l.address,
                frames,
            })
        })
        .collect();
    for s in &profile.samples {
        out.samples.push(Sample {
            stack: s.stack.iter().map(|&l| locations[l as usize]).collect(),
            ..s.clone()
        });
    }
    out
}
