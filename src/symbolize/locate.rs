//! The half of symbolization that needs the address spaces: each user address of
//! a capture located in its process's mappings (those live at the sample's time
//! where samples carry one) as an (object, offset), a JIT function, or nothing.
//!
//! What comes out, [`Located`], owns everything naming needs, clones of the
//! objects (and so their open files) included. It can be named on another thread,
//! later, while the tracker goes on applying records and forgets the processes
//! that exited: the continuous daemon locates a window on its sampling thread,
//! which takes milliseconds, and leaves the naming, which can take seconds, to
//! [`super::Worker`].

use std::collections::{HashMap, HashSet};

use std::sync::Arc;

use symbolizer::history::Mapping;
use symbolizer::objects::{Object, ObjectKind};
use symbolizer::processes::ProcessInfo;
use symbolizer::python::{is_python, CodeName};
use symbolizer::{Moment, ObjectId, Resolved, Tracker};

use crate::capture::raw::{RawKey, RawProfile, RawStack};

/// Which address space a stack's addresses are read in: samples aggregated in the
/// kernel carry no time, so the newest mapping of an address answers; timestamped
/// samples (DWARF mode) use the mappings live at their time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum When {
    Newest,
    At(Moment),
}

impl When {
    fn of(tracker: &Tracker, pid: u32, time: u64) -> When {
        tracker
            .history
            .moment(pid, time)
            .map_or(When::Newest, When::At)
    }
}

/// What a user address turned out to be.
pub(super) enum UserAddr {
    /// An offset into a mapped object (file, vDSO), and the mapping it lies in
    /// (pprof writes its real range).
    Object(Resolved, Mapping),
    /// JIT code named by the process's perf map.
    Jit(String),
    /// A Python frame (its code object named while the process lived, or not),
    /// with the line it shows: where it ran with `--lines`, else its
    /// function's first.
    Python(Option<Arc<CodeName>>, Option<u32>),
    /// Nothing covers it.
    Unknown,
}

/// User addresses per process and address space, located.
pub(super) type UserAddrs = HashMap<(u32, When, u64), UserAddr>;

/// A capture whose user addresses are located: the tracker is no longer needed.
pub struct Located {
    /// The capture.
    pub(super) raw: RawProfile,
    /// The address space of each sample of the timeline, in the timeline's order
    /// (empty without one).
    pub(super) whens: Vec<When>,
    /// Every user address of every stack, located.
    pub(super) user_addrs: UserAddrs,
    /// The objects those addresses fall in, as they were when located.
    pub(super) objects: HashMap<ObjectId, Object>,
    /// What each sampled process was (executable and its build id, cgroup), as
    /// captured while it lived: its labels.
    pub(super) processes: HashMap<u32, ProcessInfo>,
}

impl Located {
    /// Locates every user address of `raw` in `tracker`'s address spaces.
    pub fn new(raw: RawProfile, tracker: &Tracker) -> Located {
        let whens: Vec<When> = raw
            .timeline
            .iter()
            .map(|(t, k, _)| When::of(tracker, k.pid, *t))
            .collect();
        let mut located = Located {
            raw,
            whens,
            user_addrs: HashMap::new(),
            objects: HashMap::new(),
            processes: HashMap::new(),
        };
        let mut user_addrs = UserAddrs::new();
        for (c, when) in located.instances() {
            if let RawStack::Ips(ips) = &c.user {
                for (i, &ip) in ips.iter().enumerate() {
                    let a = lookup_addr(ip, i);
                    user_addrs
                        .entry((c.pid, when, a))
                        .or_insert_with(|| classify(tracker, c.pid, when, a));
                }
            }
        }
        for addr in user_addrs.values() {
            if let UserAddr::Object(r, _) = addr {
                located
                    .objects
                    .entry(r.object)
                    .or_insert_with(|| tracker.objects.get(r.object).clone());
            }
        }
        located.user_addrs = user_addrs;
        located.processes = processes(&located, tracker);
        located
    }

    /// Every stack of the capture with the address space it is read in.
    pub(super) fn instances(&self) -> HashSet<(&RawKey, When)> {
        if self.raw.timeline.is_empty() {
            self.raw.samples.keys().map(|k| (k, When::Newest)).collect()
        } else {
            self.raw
                .timeline
                .iter()
                .zip(&self.whens)
                .map(|((_, k, _), &when)| (k, when))
                .collect()
        }
    }
}

/// The facts of every process with samples, its executable's build id taken
/// from the object its address space maps at the executable's path.
fn processes(located: &Located, tracker: &Tracker) -> HashMap<u32, ProcessInfo> {
    let mut out = HashMap::new();
    for (c, _) in located.instances() {
        if out.contains_key(&c.pid) {
            continue;
        }
        let Some(mut info) = tracker.processes.get(c.pid).cloned() else {
            continue;
        };
        if let Some(exe) = info.exe.as_deref() {
            info.exe_build_id = tracker
                .history
                .current(c.pid)
                .iter()
                .map(|m| tracker.objects.get(m.object))
                .find(|o| o.path == exe)
                .and_then(|o| o.build_id.clone());
        }
        out.insert(c.pid, info);
    }
    out
}

/// Return addresses point after the call; the call itself is one byte earlier.
/// The leaf (index 0, the sampled instruction) is not adjusted, nor are Python
/// frames, which are no addresses.
pub(super) fn lookup_addr(ip: u64, index: usize) -> u64 {
    if index == 0 || is_python(ip) {
        ip
    } else {
        ip.saturating_sub(1)
    }
}

fn classify(tracker: &Tracker, pid: u32, when: When, addr: u64) -> UserAddr {
    if is_python(addr) {
        return UserAddr::Python(
            tracker.python.name(pid, addr).cloned(),
            tracker.python.line(pid, addr),
        );
    }
    let mapping = match when {
        When::Newest => tracker.history.mapping(pid, addr),
        When::At(moment) => tracker.history.mapping_in(pid, moment, addr),
    };
    match mapping {
        Some(m) if tracker.objects.get(m.object).kind != ObjectKind::Anonymous => {
            UserAddr::Object(m.resolve(addr), m)
        }
        // anonymous memory, or no mapping seen: JIT code, if a perf map names it
        _ => match tracker.jit_symbol(pid, addr) {
            Some(name) => UserAddr::Jit(name.to_string()),
            None => UserAddr::Unknown,
        },
    }
}
