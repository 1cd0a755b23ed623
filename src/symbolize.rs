//! The adapter where capture, symbolization and output meet: turns the drained BPF
//! maps into a [`Profile`], naming each address once however many stacks hold it.

use std::collections::HashMap;
use std::sync::mpsc;
use std::thread::JoinHandle;

use flamegraphs::{
    Frame, FrameId, FrameKind, Location, LocationId, Mapping, Meta, Profile, Sample,
};
use symbolizer::objects::ObjectKind;
use symbolizer::symbolize::{Frames, Options, Symbol};
use symbolizer::{ObjectId, Resolved, Symbolizer, Tracker};

use crate::capture::raw::{RawKey, RawProfile, RawStack};

/// Counters of what could not be named, for the summary.
#[derive(Debug, Default, Clone)]
pub struct SymbolizeStats {
    /// Unique user addresses named.
    pub user_addrs: usize,
    /// Unique kernel addresses named.
    pub kernel_addrs: usize,
    /// Objects whose symbols could not be read at all, with the reason.
    pub object_failures: Vec<String>,
}

/// A thread that owns the symbolizer: it reads kallsyms while the capture runs,
/// then builds the profile when handed the capture, so the end of a capture does
/// not wait for kallsyms (blazesym's caches cannot move between threads, so the
/// work goes to the thread instead).
pub struct Worker {
    jobs: mpsc::Sender<(RawProfile, Tracker, Meta)>,
    thread: JoinHandle<Option<(Profile, SymbolizeStats)>>,
}

impl Worker {
    /// Starts the thread and its warm-up.
    pub fn start(options: Options) -> Worker {
        let (jobs, rx) = mpsc::channel::<(RawProfile, Tracker, Meta)>();
        let thread = std::thread::spawn(move || {
            let symbolizer = Symbolizer::new(options);
            symbolizer.warm_kernel();
            let (raw, tracker, meta) = rx.recv().ok()?;
            Some(build(&raw, &tracker, &symbolizer, meta))
        });
        Worker { jobs, thread }
    }

    /// Builds the profile of a capture on the worker thread.
    pub fn build(self, raw: RawProfile, tracker: Tracker, meta: Meta) -> (Profile, SymbolizeStats) {
        self.jobs
            .send((raw, tracker, meta))
            .expect("the symbolizer thread waits for its job");
        match self.thread.join() {
            Ok(Some(result)) => result,
            Ok(None) => unreachable!("the job was sent"),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// Return addresses point after the call; the call itself is one byte earlier.
/// The leaf (index 0, the sampled instruction) is not adjusted.
fn lookup_addr(ip: u64, index: usize) -> u64 {
    if index == 0 {
        ip
    } else {
        ip.saturating_sub(1)
    }
}

/// What a user address turned out to be.
enum UserAddr {
    /// An offset into a mapped object (file, vDSO).
    Object(Resolved),
    /// JIT code named by the process's perf map.
    Jit(String),
    /// Nothing covers it.
    Unknown,
}

fn classify(tracker: &Tracker, pid: u32, addr: u64) -> UserAddr {
    match tracker.resolve(pid, addr) {
        Some(r) if tracker.objects.get(r.object).kind != ObjectKind::Anonymous => {
            UserAddr::Object(r)
        }
        // anonymous memory, or no mapping seen: JIT code, if a perf map names it
        _ => match tracker.jit_symbol(pid, addr) {
            Some(name) => UserAddr::Jit(name.to_string()),
            None => UserAddr::Unknown,
        },
    }
}

/// Builds the profile of a capture.
pub fn build(
    raw: &RawProfile,
    tracker: &Tracker,
    symbolizer: &Symbolizer,
    meta: Meta,
) -> (Profile, SymbolizeStats) {
    let mut profile = Profile::new(meta);
    let mut stats = SymbolizeStats::default();

    // Unique addresses: user ones per process (address spaces differ), kernel ones global.
    let mut user_addrs: HashMap<(u32, u64), UserAddr> = HashMap::new();
    let mut kernel_addrs: HashMap<u64, LocationId> = HashMap::new();
    for c in raw.samples.keys() {
        if let RawStack::Ips(ips) = &c.user {
            for (i, &ip) in ips.iter().enumerate() {
                let a = lookup_addr(ip, i);
                user_addrs
                    .entry((c.pid, a))
                    .or_insert_with(|| classify(tracker, c.pid, a));
            }
        }
        if let RawStack::Ips(ips) = &c.kernel {
            for (i, &ip) in ips.iter().enumerate() {
                kernel_addrs.entry(lookup_addr(ip, i)).or_insert(0);
            }
        }
    }
    stats.user_addrs = user_addrs.len();
    stats.kernel_addrs = kernel_addrs.len();

    // Kernel: one kallsyms batch.
    let kaddrs: Vec<u64> = kernel_addrs.keys().copied().collect();
    let ksyms = if kaddrs.is_empty() {
        Ok(Vec::new())
    } else {
        symbolizer.kernel(&kaddrs)
    };
    let ksyms = ksyms.unwrap_or_else(|_| vec![Frames::from([]); kaddrs.len()]);
    let kernel_mapping = profile.intern_mapping(Mapping {
        path: "[kernel.kallsyms]".into(),
        build_id: None,
    });
    for (addr, syms) in kaddrs.iter().zip(ksyms) {
        let frames = intern_symbols(&mut profile, &syms, FrameKind::Kernel)
            .unwrap_or_else(|| vec![profile.intern(Frame::named("[unknown]", FrameKind::Kernel))]);
        let location = profile.intern_location(Location {
            mapping: Some(kernel_mapping),
            address: *addr,
            frames,
        });
        kernel_addrs.insert(*addr, location);
    }

    // User: one batch per object, shared by every process that maps it.
    let mut per_object: HashMap<ObjectId, Vec<u64>> = HashMap::new();
    for addr in user_addrs.values() {
        if let UserAddr::Object(r) = addr {
            per_object.entry(r.object).or_default().push(r.offset);
        }
    }
    let mut named: HashMap<Resolved, LocationId> = HashMap::new();
    for (object, mut offsets) in per_object {
        offsets.sort_unstable();
        offsets.dedup();
        let obj = tracker.objects.get(object);
        let mapping = (obj.kind != ObjectKind::Anonymous).then(|| {
            profile.intern_mapping(Mapping {
                path: obj.path.clone(),
                build_id: obj.build_id.clone(),
            })
        });
        let syms: Vec<Frames> = match (obj.kind, obj.read_path()) {
            (ObjectKind::File, Some(path)) => {
                symbolizer.object(&path, &offsets).unwrap_or_else(|e| {
                    stats.object_failures.push(e.to_string());
                    vec![Frames::from([]); offsets.len()]
                })
            }
            (ObjectKind::Vdso, _) => symbolizer.vdso(&offsets).unwrap_or_else(|e| {
                stats.object_failures.push(e.to_string());
                vec![Frames::from([]); offsets.len()]
            }),
            _ => vec![Frames::from([]); offsets.len()],
        };
        for (offset, syms) in offsets.iter().zip(syms) {
            let frames =
                intern_symbols(&mut profile, &syms, FrameKind::User).unwrap_or_else(|| {
                    let name = match obj.kind {
                        ObjectKind::Anonymous => "[unknown]".to_string(),
                        _ => format!("{}+{:#x}", obj.short_name(), offset),
                    };
                    vec![profile.intern(Frame::named(name, FrameKind::User))]
                });
            let location = profile.intern_location(Location {
                mapping,
                address: *offset,
                frames,
            });
            named.insert(
                Resolved {
                    object,
                    offset: *offset,
                },
                location,
            );
        }
    }
    let unknown_user = profile.intern(Frame::named("[unknown]", FrameKind::User));
    let lost_user = profile.frame_location(Frame::named("[lost stack]", FrameKind::User));
    let lost_kernel = profile.frame_location(Frame::named("[lost stack]", FrameKind::Kernel));

    let mut stacks: HashMap<&RawKey, Vec<LocationId>> = HashMap::with_capacity(raw.samples.len());
    for c in raw.samples.keys() {
        let mut stack = Vec::new();
        match &c.user {
            RawStack::Ips(ips) => {
                for (i, &ip) in ips.iter().enumerate().rev() {
                    let a = lookup_addr(ip, i);
                    let location = match &user_addrs[&(c.pid, a)] {
                        UserAddr::Object(r) => named[r],
                        UserAddr::Jit(name) => {
                            let frame = profile.intern(Frame::named(name.clone(), FrameKind::Jit));
                            profile.intern_location(Location {
                                mapping: None,
                                address: a,
                                frames: vec![frame],
                            })
                        }
                        // an address nothing covers keeps its own location
                        UserAddr::Unknown => profile.intern_location(Location {
                            mapping: None,
                            address: a,
                            frames: vec![unknown_user],
                        }),
                    };
                    stack.push(location);
                }
            }
            RawStack::Lost => stack.push(lost_user),
            RawStack::Absent => {}
        }
        match &c.kernel {
            RawStack::Ips(ips) => {
                for (i, &ip) in ips.iter().enumerate().rev() {
                    stack.push(kernel_addrs[&lookup_addr(ip, i)]);
                }
            }
            RawStack::Lost => stack.push(lost_kernel),
            RawStack::Absent => {}
        }
        stacks.insert(c, stack);
    }
    let sample = |c: &RawKey, stack: Vec<LocationId>, count, weight| Sample {
        pid: c.pid,
        tid: c.tid,
        comm: c.comm.to_string(),
        stack,
        count,
        weight,
    };
    if raw.timeline.is_empty() {
        for (c, w) in &raw.samples {
            profile
                .samples
                .push(sample(c, stacks[c].clone(), w.count, w.weight));
        }
    } else {
        // Per-sample mode: one sample each, in time order, for the writers that
        // show time (speedscope); the others merge equal stacks anyway.
        let mut timeline: Vec<&(u64, RawKey, u64)> = raw.timeline.iter().collect();
        timeline.sort_by_key(|(t, _, _)| *t);
        for (_, c, period) in timeline {
            profile
                .samples
                .push(sample(c, stacks[c].clone(), 1, *period));
        }
    }
    (profile, stats)
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
