//! The adapter where capture, symbolization and output meet: turns the drained BPF
//! maps into a [`Profile`], naming each address once however many stacks hold it.
//!
//! Two halves: [`Located::new`] reads the address spaces (the tracker) and
//! [`name`] reads the objects (the symbolizer); between them a capture needs
//! neither, so [`Worker`] can name it on a thread of its own.

use std::collections::{HashMap, HashSet};

use flamegraphs::{
    Frame, FrameId, FrameKind, Location, LocationId, Mapping, Meta, Profile, Sample,
};
use symbolizer::objects::ObjectKind;
use symbolizer::python::{code_of, is_python, CodeName};
use symbolizer::symbolize::{Frames, Symbol};
use symbolizer::{ObjectId, Resolved, Symbolizer};

use crate::capture::maps::Kind;
use crate::capture::raw::{RawKey, RawStack};

pub mod debuginfod;
mod kernel_symbols;
mod locate;
mod python;
pub mod stored;
mod worker;

pub use locate::Located;
use locate::{lookup_addr, UserAddr, UserAddrs, When};
pub use worker::Worker;

/// Counters of what could not be named, for the summary.
#[derive(Debug, Default, Clone)]
pub struct SymbolizeStats {
    /// Unique user addresses named.
    pub user_addrs: usize,
    /// Unique kernel addresses named.
    pub kernel_addrs: usize,
    /// Objects whose symbols could not be read at all, with the reason.
    pub object_failures: Vec<String>,
    /// Kernel addresses were sampled but /proc/kallsyms showed none: every
    /// kernel frame is [unknown].
    pub no_kernel_symbols: bool,
}

/// Names a located capture: every unique address once (kernel addresses in one
/// kallsyms batch, user addresses in one batch per object), then the stacks are
/// put together from the named locations.
pub fn name(located: &Located, symbolizer: &Symbolizer, meta: Meta) -> (Profile, SymbolizeStats) {
    let mut profile = Profile::new(meta);
    let mut stats = SymbolizeStats::default();
    let instances = located.instances();
    let kernel_addrs = kernel_addresses(&instances);
    stats.user_addrs = located.user_addrs.len();
    stats.kernel_addrs = kernel_addrs.len();
    let (kernel, no_kernel_symbols) = name_kernel(&mut profile, symbolizer, kernel_addrs);
    stats.no_kernel_symbols = no_kernel_symbols;
    let named = name_user(&mut profile, located, symbolizer, &mut stats);
    let names = Names {
        user_addrs: &located.user_addrs,
        named,
        kernel,
    };
    let stacks = assemble_stacks(&mut profile, &instances, &names);
    push_samples(&mut profile, located, &stacks);
    label(&mut profile, located);
    (profile, stats)
}

/// Every address named, by where it was found.
struct Names<'a> {
    /// User addresses per process and address space.
    user_addrs: &'a UserAddrs,
    /// The frames of each (object, offset), and the object's path and build id.
    named: HashMap<Resolved, Named>,
    /// The location of each kernel address.
    kernel: HashMap<u64, LocationId>,
}

/// The unique kernel addresses of a capture.
fn kernel_addresses(instances: &HashSet<(&RawKey, When)>) -> Vec<u64> {
    let mut kernel_addrs: HashSet<u64> = HashSet::new();
    for &(c, _) in instances {
        if let RawStack::Ips(ips) = &c.kernel {
            kernel_addrs.extend(ips.iter().enumerate().map(|(i, &ip)| lookup_addr(ip, i)));
        }
    }
    kernel_addrs.into_iter().collect()
}

/// Names the kernel addresses in one kallsyms batch.
fn name_kernel(
    profile: &mut Profile,
    symbolizer: &Symbolizer,
    kaddrs: Vec<u64>,
) -> (HashMap<u64, LocationId>, bool) {
    let ksyms = if kaddrs.is_empty() {
        Ok(Vec::new())
    } else {
        symbolizer.kernel(&kaddrs)
    };
    let unnamed = ksyms.is_err();
    let ksyms = ksyms.unwrap_or_else(|_| vec![Frames::from([]); kaddrs.len()]);
    let kernel_mapping = profile.intern_mapping(Mapping {
        path: "[kernel.kallsyms]".into(),
        ..Mapping::default()
    });
    let mut locations = HashMap::with_capacity(kaddrs.len());
    for (addr, syms) in kaddrs.iter().zip(ksyms) {
        let frames = intern_symbols(profile, &syms, FrameKind::Kernel)
            .unwrap_or_else(|| vec![profile.intern(Frame::named("[unknown]", FrameKind::Kernel))]);
        let location = profile.intern_location(Location {
            mapping: Some(kernel_mapping),
            address: *addr,
            frames,
        });
        locations.insert(*addr, location);
    }
    (locations, unnamed)
}

/// What one (object, offset) was named: its frames, and the object as pprof's
/// mappings show it (`None` for anonymous memory).
#[derive(Clone)]
struct Named {
    frames: Vec<FrameId>,
    object: Option<(String, Option<Vec<u8>>)>,
}

/// Names the user addresses that fall in objects: one batch per object, shared by
/// every process that maps it.
fn name_user(
    profile: &mut Profile,
    located: &Located,
    symbolizer: &Symbolizer,
    stats: &mut SymbolizeStats,
) -> HashMap<Resolved, Named> {
    let mut per_object: HashMap<ObjectId, Vec<u64>> = HashMap::new();
    for addr in located.user_addrs.values() {
        if let UserAddr::Object(r, _) = addr {
            per_object.entry(r.object).or_default().push(r.offset);
        }
    }
    let mut named: HashMap<Resolved, Named> = HashMap::new();
    for (object, mut offsets) in per_object {
        offsets.sort_unstable();
        offsets.dedup();
        let obj = &located.objects[&object];
        let mapping =
            (obj.kind != ObjectKind::Anonymous).then(|| (obj.path.clone(), obj.build_id.clone()));
        let none = || vec![Frames::from([]); offsets.len()];
        let syms: Vec<Frames> = match (obj.kind, obj.read_path()) {
            (ObjectKind::File, Some(path)) => {
                symbolizer.object_by_id(&path, obj.build_id.as_deref(), &offsets)
            }
            (ObjectKind::Vdso, _) => symbolizer.vdso(&offsets),
            _ => Ok(none()),
        }
        .unwrap_or_else(|e| {
            stats.object_failures.push(e.to_string());
            none()
        });
        for (offset, syms) in offsets.iter().zip(syms) {
            let frames = intern_symbols(profile, &syms, FrameKind::User).unwrap_or_else(|| {
                let name = match obj.kind {
                    ObjectKind::Anonymous => "[unknown]".to_string(),
                    _ => format!("{}+{:#x}", obj.short_name(), offset),
                };
                vec![profile.intern(Frame::named(name, FrameKind::User))]
            });
            let offset = *offset;
            named.insert(
                Resolved { object, offset },
                Named {
                    frames,
                    object: mapping.clone(),
                },
            );
        }
    }
    named
}

/// The location of a named user address: in the mapping of this process it was
/// found in, at its own virtual address, so pprof readers see real ranges.
fn user_location(
    profile: &mut Profile,
    named: &Named,
    range: &symbolizer::history::Mapping,
    address: u64,
) -> LocationId {
    let mapping = named.object.as_ref().map(|(path, build_id)| {
        profile.intern_mapping(Mapping {
            path: path.clone(),
            build_id: build_id.clone(),
            start: range.start,
            limit: range.end,
            offset: range.pgoff,
        })
    });
    profile.intern_location(Location {
        mapping,
        address,
        frames: named.frames.clone(),
    })
}

/// Each distinct (thread, stacks, address space) as a list of locations, root
/// first.
fn assemble_stacks<'a>(
    profile: &mut Profile,
    instances: &HashSet<(&'a RawKey, When)>,
    names: &Names<'_>,
) -> HashMap<(&'a RawKey, When), Vec<LocationId>> {
    let unknown_user = profile.intern(Frame::named("[unknown]", FrameKind::User));
    let lost_user = profile.frame_location(Frame::named("[lost stack]", FrameKind::User));
    let lost_kernel = profile.frame_location(Frame::named("[lost stack]", FrameKind::Kernel));
    let truncated = profile.frame_location(Frame::named("[truncated]", FrameKind::User));
    let off_cpu = profile.frame_location(Frame::named(flamegraphs::OFF_CPU, FrameKind::OffCpu));
    let runqueue = profile.frame_location(Frame::named(flamegraphs::RUNQUEUE, FrameKind::OffCpu));
    let mut stacks = HashMap::with_capacity(instances.len());
    let mut user_locations: HashMap<(u32, When, u64), LocationId> = HashMap::new();
    for &(c, when) in instances {
        let mut stack = Vec::new();
        // the outermost frames are missing: say so where they would be
        if c.truncated {
            stack.push(truncated);
        }
        match &c.user {
            RawStack::Ips(ips) => {
                let mut location_of = |i: usize, ip: u64| {
                    let a = lookup_addr(ip, i);
                    match &names.user_addrs[&(c.pid, when, a)] {
                        // one location per process, address space and address:
                        // a stack's frames are looked up, not interned again
                        UserAddr::Object(r, range) => *user_locations
                            .entry((c.pid, when, a))
                            .or_insert_with(|| user_location(profile, &names.named[r], range, a)),
                        UserAddr::Jit(name) => {
                            let frame = profile.intern(Frame::named(name.clone(), FrameKind::Jit));
                            profile.intern_location(Location {
                                mapping: None,
                                address: a,
                                frames: vec![frame],
                            })
                        }
                        UserAddr::Python(name, line) => {
                            python_location(profile, code_of(a), name.as_deref(), *line)
                        }
                        // an address nothing covers keeps its own location
                        UserAddr::Unknown => profile.intern_location(Location {
                            mapping: None,
                            address: a,
                            frames: vec![unknown_user],
                        }),
                    }
                };
                if ips.iter().any(|&ip| is_python(ip)) {
                    // leaf first: the native frames, then the Python runs
                    let mut native = Vec::new();
                    let mut words = Vec::new();
                    for (i, &ip) in ips.iter().enumerate() {
                        if is_python(ip) {
                            words.push(ip);
                        } else {
                            native.push(location_of(i, ip));
                        }
                    }
                    let runs: Vec<Vec<LocationId>> = python::runs(&words)
                        .into_iter()
                        .map(|run| run.into_iter().map(|w| location_of(1, w)).collect())
                        .collect();
                    let native: Vec<(LocationId, bool)> = native
                        .into_iter()
                        .map(|l| (l, is_eval_loop(profile, l)))
                        .collect();
                    stack.extend(python::merge(&native, runs).into_iter().rev());
                } else {
                    for (i, &ip) in ips.iter().enumerate().rev() {
                        stack.push(location_of(i, ip));
                    }
                }
            }
            RawStack::Lost => stack.push(lost_user),
            RawStack::Absent => {}
        }
        match &c.kernel {
            RawStack::Ips(ips) => {
                for (i, &ip) in ips.iter().enumerate().rev() {
                    stack.push(names.kernel[&lookup_addr(ip, i)]);
                }
            }
            RawStack::Lost => stack.push(lost_kernel),
            RawStack::Absent => {}
        }
        match c.kind {
            Kind::OnCpu => {}
            Kind::OffCpu | Kind::Runqueue => {
                cut_at_schedule(profile, &mut stack);
                stack.push(if c.kind == Kind::OffCpu {
                    off_cpu
                } else {
                    runqueue
                });
            }
        }
        stacks.insert((c, when), stack);
    }
    stacks
}

/// The location of a Python frame: `function (file.py)`, with the file and the
/// line for `--lines` (where it ran, or without one where that is unknown).
fn python_location(
    profile: &mut Profile,
    code: u64,
    name: Option<&CodeName>,
    line: Option<u32>,
) -> LocationId {
    let frame = match name {
        Some(n) => {
            let base = n.file.rsplit('/').next().unwrap_or(&n.file);
            Frame {
                name: format!("{} ({base})", n.name),
                kind: FrameKind::Python,
                file: Some(n.file.clone()),
                line,
            }
        }
        None => Frame::named("[unknown]", FrameKind::Python),
    };
    let frame = profile.intern(frame);
    profile.intern_location(Location {
        mapping: None,
        address: code,
        frames: vec![frame],
    })
}

/// Whether a native location is a run of Python's evaluation loop.
fn is_eval_loop(profile: &Profile, location: LocationId) -> bool {
    profile
        .location(location)
        .frames
        .iter()
        .any(|&f| profile.frame(f).name.starts_with(python::EVAL_LOOP))
}

/// An off-CPU stack was taken in the sched_switch tracepoint: the frames past
/// `__schedule` are the tracepoint's and the BPF program's, not the thread's.
fn cut_at_schedule(profile: &Profile, stack: &mut Vec<LocationId>) {
    let at = stack.iter().rposition(|&l| {
        profile
            .location(l)
            .frames
            .iter()
            .any(|&f| profile.frame(f).name == "__schedule")
    });
    if let Some(at) = at {
        stack.truncate(at + 1);
    }
}

/// The profile's samples: one per distinct key, or, in per-sample mode, one per
/// sample in time order for the writers that show time (speedscope); the others
/// merge equal stacks anyway.
fn push_samples(
    profile: &mut Profile,
    located: &Located,
    stacks: &HashMap<(&RawKey, When), Vec<LocationId>>,
) {
    let sample = |c: &RawKey, when, count, weight| Sample {
        pid: c.pid,
        tid: c.tid,
        comm: c.comm.to_string(),
        stack: stacks[&(c, when)].clone(),
        count,
        weight,
    };
    let raw = &located.raw;
    if raw.timeline.is_empty() {
        for (c, w) in &raw.samples {
            profile
                .samples
                .push(sample(c, When::Newest, w.count, w.weight));
        }
    } else {
        let mut timeline: Vec<(&(u64, RawKey, u64), &When)> =
            raw.timeline.iter().zip(&located.whens).collect();
        timeline.sort_by_key(|((t, _, _), _)| *t);
        for ((_, c, period), &when) in timeline {
            profile.samples.push(sample(c, when, 1, *period));
        }
    }
}

/// The labels of the profile (the run's) and of each of its processes, from the
/// facts captured while they lived.
fn label(profile: &mut Profile, located: &Located) {
    let config = crate::labels::config();
    profile.labels = config.common.clone();
    for s in &profile.samples {
        profile.process_labels.entry(s.pid).or_insert_with(|| {
            crate::labels::of_process(config, located.processes.get(&s.pid), &s.comm)
        });
    }
}

/// Interns the frames of one address (function, then inlined callees); `None` when
/// nothing named it.
fn intern_symbols(profile: &mut Profile, syms: &[Symbol], kind: FrameKind) -> Option<Vec<FrameId>> {
    if syms.is_empty() {
        return None;
    }
    Some(
        syms.iter()
            .map(|s| {
                profile.intern(Frame {
                    name: s.name.clone(),
                    kind: if s.inlined { FrameKind::Inline } else { kind },
                    file: s.file.clone(),
                    line: s.line,
                })
            })
            .collect(),
    )
}
