//! The adapter where capture, symbolization and output meet: turns the drained BPF
//! maps into a [`Profile`], naming each address once however many stacks hold it.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc;
use std::thread::JoinHandle;

use flamegraphs::{
    Frame, FrameId, FrameKind, Location, LocationId, Mapping, Meta, Profile, Sample,
};
use symbolizer::objects::ObjectKind;
use symbolizer::symbolize::{Frames, Options, Symbol};
use symbolizer::{ObjectId, Resolved, Symbolizer, Tracker};

use crate::capture::maps::Kind;
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
    /// Kernel addresses were sampled but /proc/kallsyms showed none: every
    /// kernel frame is [unknown].
    pub no_kernel_symbols: bool,
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

/// Which address space a stack's addresses are read in: samples aggregated in the
/// kernel carry no time, so the newest generation that maps an address answers;
/// timestamped samples (DWARF mode) use the one live at their time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum When {
    Newest,
    Generation(usize),
}

impl When {
    fn of(raw: &RawProfile, tracker: &Tracker, pid: u32, time: u64) -> When {
        if raw.timeline.is_empty() {
            return When::Newest;
        }
        tracker
            .history
            .generation_at(pid, time)
            .map_or(When::Newest, When::Generation)
    }
}

/// Every stack of a capture with the address space it is read in.
fn stack_instances<'a>(raw: &'a RawProfile, tracker: &Tracker) -> HashSet<(&'a RawKey, When)> {
    if raw.timeline.is_empty() {
        raw.samples.keys().map(|k| (k, When::Newest)).collect()
    } else {
        raw.timeline
            .iter()
            .map(|(t, k, _)| (k, When::of(raw, tracker, k.pid, *t)))
            .collect()
    }
}

fn classify(tracker: &Tracker, pid: u32, when: When, addr: u64) -> UserAddr {
    let resolved = match when {
        When::Newest => tracker.resolve(pid, addr),
        When::Generation(g) => tracker.history.resolve_in(pid, g, addr),
    };
    match resolved {
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

/// Builds the profile of a capture: every unique address is named once (kernel
/// addresses in one kallsyms batch, user addresses in one batch per object), then
/// the stacks are put together from the named locations.
pub fn build(
    raw: &RawProfile,
    tracker: &Tracker,
    symbolizer: &Symbolizer,
    meta: Meta,
) -> (Profile, SymbolizeStats) {
    let mut profile = Profile::new(meta);
    let mut stats = SymbolizeStats::default();
    let instances = stack_instances(raw, tracker);
    let (user_addrs, kernel_addrs) = unique_addresses(&instances, tracker);
    stats.user_addrs = user_addrs.len();
    stats.kernel_addrs = kernel_addrs.len();
    let (kernel, no_kernel_symbols) = name_kernel(&mut profile, symbolizer, kernel_addrs);
    stats.no_kernel_symbols = no_kernel_symbols;
    let named = name_user(&mut profile, tracker, symbolizer, &user_addrs, &mut stats);
    let names = Names {
        user_addrs,
        named,
        kernel,
    };
    let stacks = assemble_stacks(&mut profile, &instances, &names);
    push_samples(&mut profile, raw, tracker, &stacks);
    (profile, stats)
}

/// Every address named, by where it was found.
struct Names {
    /// User addresses per process and address space.
    user_addrs: HashMap<(u32, When, u64), UserAddr>,
    /// The location of each (object, offset).
    named: HashMap<Resolved, LocationId>,
    /// The location of each kernel address.
    kernel: HashMap<u64, LocationId>,
}

/// User addresses per process and address space, classified.
type UserAddrs = HashMap<(u32, When, u64), UserAddr>;

/// The unique addresses of a capture: user ones per process and address space,
/// classified (object, JIT or unknown), and kernel ones.
fn unique_addresses(
    instances: &HashSet<(&RawKey, When)>,
    tracker: &Tracker,
) -> (UserAddrs, Vec<u64>) {
    let mut user_addrs: UserAddrs = HashMap::new();
    let mut kernel_addrs: HashSet<u64> = HashSet::new();
    for &(c, when) in instances {
        if let RawStack::Ips(ips) = &c.user {
            for (i, &ip) in ips.iter().enumerate() {
                let a = lookup_addr(ip, i);
                user_addrs
                    .entry((c.pid, when, a))
                    .or_insert_with(|| classify(tracker, c.pid, when, a));
            }
        }
        if let RawStack::Ips(ips) = &c.kernel {
            kernel_addrs.extend(ips.iter().enumerate().map(|(i, &ip)| lookup_addr(ip, i)));
        }
    }
    (user_addrs, kernel_addrs.into_iter().collect())
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
        build_id: None,
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

/// Names the user addresses that fall in objects: one batch per object, shared by
/// every process that maps it.
fn name_user(
    profile: &mut Profile,
    tracker: &Tracker,
    symbolizer: &Symbolizer,
    user_addrs: &UserAddrs,
    stats: &mut SymbolizeStats,
) -> HashMap<Resolved, LocationId> {
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
        let none = || vec![Frames::from([]); offsets.len()];
        let syms: Vec<Frames> = match (obj.kind, obj.read_path()) {
            (ObjectKind::File, Some(path)) => symbolizer.object(&path, &offsets),
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
            let location = profile.intern_location(Location {
                mapping,
                address: *offset,
                frames,
            });
            let offset = *offset;
            named.insert(Resolved { object, offset }, location);
        }
    }
    named
}

/// Each distinct (thread, stacks, address space) as a list of locations, root
/// first.
fn assemble_stacks<'a>(
    profile: &mut Profile,
    instances: &HashSet<(&'a RawKey, When)>,
    names: &Names,
) -> HashMap<(&'a RawKey, When), Vec<LocationId>> {
    let unknown_user = profile.intern(Frame::named("[unknown]", FrameKind::User));
    let lost_user = profile.frame_location(Frame::named("[lost stack]", FrameKind::User));
    let lost_kernel = profile.frame_location(Frame::named("[lost stack]", FrameKind::Kernel));
    let truncated = profile.frame_location(Frame::named("[truncated]", FrameKind::User));
    let off_cpu = profile.frame_location(Frame::named(flamegraphs::OFF_CPU, FrameKind::OffCpu));
    let runqueue = profile.frame_location(Frame::named(flamegraphs::RUNQUEUE, FrameKind::OffCpu));
    let mut stacks = HashMap::with_capacity(instances.len());
    for &(c, when) in instances {
        let mut stack = Vec::new();
        // the outermost frames are missing: say so where they would be
        if c.truncated {
            stack.push(truncated);
        }
        match &c.user {
            RawStack::Ips(ips) => {
                for (i, &ip) in ips.iter().enumerate().rev() {
                    let a = lookup_addr(ip, i);
                    let location = match &names.user_addrs[&(c.pid, when, a)] {
                        UserAddr::Object(r) => names.named[r],
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
    raw: &RawProfile,
    tracker: &Tracker,
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
    if raw.timeline.is_empty() {
        for (c, w) in &raw.samples {
            profile
                .samples
                .push(sample(c, When::Newest, w.count, w.weight));
        }
    } else {
        let mut timeline: Vec<&(u64, RawKey, u64)> = raw.timeline.iter().collect();
        timeline.sort_by_key(|(t, _, _)| *t);
        for (t, c, period) in timeline {
            let when = When::of(raw, tracker, c.pid, *t);
            profile.samples.push(sample(c, when, 1, *period));
        }
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
