//! The profile model: interned frames, locations (an address and the frames it
//! expands to, inlined ones included), mappings, weighted stacks and metadata.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

/// Index of a frame in [`Profile::frames`].
pub type FrameId = u32;
/// Index of a location in [`Profile::locations`].
pub type LocationId = u32;
/// Index of a mapping in [`Profile::mappings`].
pub type MappingId = u32;

/// Where a frame's code runs, which decides how writers mark and colour it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrameKind {
    /// A user-space function.
    User,
    /// A kernel function.
    Kernel,
    /// A function inlined into its caller (the frame before it in the stack).
    Inline,
    /// JIT-compiled code, named from the runtime's perf map.
    Jit,
    /// A Python function (CPython's frame of a code object), shown where the
    /// interpreter's evaluation loop ran it.
    Python,
    /// The last frame of off-CPU time: [`OFF_CPU`] (blocked) or [`RUNQUEUE`]
    /// (runnable, waiting for a CPU).
    OffCpu,
}

/// The name of the frame that ends a stack of time spent blocked off the CPU.
pub const OFF_CPU: &str = "[off-cpu]";
/// The name of the frame that ends a stack of time spent runnable but waiting
/// for a CPU.
pub const RUNQUEUE: &str = "[runqueue]";

/// One function in a stack (or, failing a symbol, an object and offset).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Frame {
    /// Function name, demangled; `lib.so+0x1a2b` or `[unknown]` when nothing names it.
    pub name: String,
    /// User, kernel or inlined.
    pub kind: FrameKind,
    /// Source file, when debug information gives one.
    pub file: Option<String>,
    /// Source line, when debug information gives one.
    pub line: Option<u32>,
}

impl Frame {
    /// A frame with only a name and a kind.
    pub fn named(name: impl Into<String>, kind: FrameKind) -> Frame {
        Frame {
            name: name.into(),
            kind,
            file: None,
            line: None,
        }
    }
}

/// An object code was mapped from: an executable, a library, `[kernel.kallsyms]`;
/// with the address range one process mapped it at, when known, so a reader can
/// turn a location's address back into a file offset and symbolize it by build id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mapping {
    /// Its path (or pseudo name).
    pub path: String,
    /// Its GNU build id, when known.
    pub build_id: Option<Vec<u8>>,
    /// First address mapped (0 with `limit` `u64::MAX`: the whole address space,
    /// for the kernel and for input that has no ranges).
    pub start: u64,
    /// One past the last address mapped.
    pub limit: u64,
    /// File offset of `start`: an address `a` of this mapping is the file offset
    /// `a - start + offset`.
    pub offset: u64,
}

impl Default for Mapping {
    fn default() -> Self {
        Mapping {
            path: String::new(),
            build_id: None,
            start: 0,
            limit: u64::MAX,
            offset: 0,
        }
    }
}

impl Mapping {
    /// The file offset of `address`, an address in this mapping.
    pub fn file_offset(&self, address: u64) -> u64 {
        address.wrapping_sub(self.start).wrapping_add(self.offset)
    }
}

/// One address of a stack and what it expands to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// The object the address lies in, when known.
    pub mapping: Option<MappingId>,
    /// The address: a file offset in user objects, the address itself in the kernel.
    pub address: u64,
    /// The frames at this address, outermost first: the function, then the
    /// functions inlined into it, down to the one whose code it is.
    pub frames: Vec<FrameId>,
}

/// A unique stack of one thread, with how often it was sampled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Process id (thread group id).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// The thread's command name when sampled.
    pub comm: String,
    /// Locations from the outermost caller to the leaf.
    pub stack: Vec<LocationId>,
    /// How many samples hit this stack.
    pub count: u64,
    /// The summed sample periods, in [`Meta::unit`]: what flame graph widths show.
    pub weight: u64,
}

/// Facts about the capture that writers show (titles, units, headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// What was profiled, in words: `pid 1234`, `command ./demo`, `all CPUs`.
    pub target: String,
    /// The perf event that drove sampling, as perf names it (`cpu-clock`).
    pub event: String,
    /// What a unit of weight is: `ns` for the clock events, `events` for other
    /// events, `samples` when the weights are plain sample counts (converted input).
    pub unit: String,
    /// Sampling frequency in Hz, when the event was sampled by frequency.
    pub frequency: Option<u64>,
    /// Sample period in events, when the event was sampled every N events.
    pub period: Option<u64>,
    /// When the capture started.
    pub start: SystemTime,
    /// How long it sampled.
    pub duration: Duration,
    /// Whether off-CPU time was measured (`--off-cpu`): stacks ending in an
    /// [`FrameKind::OffCpu`] frame weigh nanoseconds off the CPU.
    pub off_cpu: bool,
}

impl Default for Meta {
    fn default() -> Self {
        Meta {
            target: String::new(),
            event: "cpu-clock".into(),
            unit: "ns".into(),
            frequency: None,
            period: None,
            start: SystemTime::UNIX_EPOCH,
            duration: Duration::ZERO,
            off_cpu: false,
        }
    }
}

/// A symbolized capture.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    /// Capture metadata.
    pub meta: Meta,
    frames: Vec<Frame>,
    frame_index: HashMap<Frame, FrameId>,
    locations: Vec<Location>,
    location_index: HashMap<Location, LocationId>,
    mappings: Vec<Mapping>,
    mapping_index: HashMap<Mapping, MappingId>,
    /// Unique stacks with their counts; a stack may appear more than once (writers merge).
    pub samples: Vec<Sample>,
    /// Labels of every sample: the host, the user's (see [`crate::labels`]).
    pub labels: crate::Labels,
    /// Each process's own labels, by pid: executable, cgroup, container,
    /// service. They win over [`Profile::labels`] on a shared key.
    pub process_labels: BTreeMap<u32, crate::Labels>,
}

fn intern<T: Clone + Eq + std::hash::Hash>(
    table: &mut Vec<T>,
    index: &mut HashMap<T, u32>,
    item: T,
) -> u32 {
    if let Some(&id) = index.get(&item) {
        return id;
    }
    let id = u32::try_from(table.len()).expect("fewer than 2^32 distinct entries");
    table.push(item.clone());
    index.insert(item, id);
    id
}

impl Profile {
    /// An empty profile with the given metadata.
    pub fn new(meta: Meta) -> Profile {
        Profile {
            meta,
            ..Profile::default()
        }
    }

    /// Returns the id of `frame`, adding it the first time it is seen.
    pub fn intern(&mut self, frame: Frame) -> FrameId {
        intern(&mut self.frames, &mut self.frame_index, frame)
    }

    /// Returns the id of `mapping`, adding it the first time it is seen.
    pub fn intern_mapping(&mut self, mapping: Mapping) -> MappingId {
        intern(&mut self.mappings, &mut self.mapping_index, mapping)
    }

    /// Returns the id of `location`, adding it the first time it is seen.
    pub fn intern_location(&mut self, location: Location) -> LocationId {
        intern(&mut self.locations, &mut self.location_index, location)
    }

    /// A location of one frame with no address: for input that has only names
    /// (folded files) and for placeholders such as `[unknown]`.
    pub fn frame_location(&mut self, frame: Frame) -> LocationId {
        let frame = self.intern(frame);
        self.intern_location(Location {
            mapping: None,
            address: 0,
            frames: vec![frame],
        })
    }

    /// The frame with id `id`.
    pub fn frame(&self, id: FrameId) -> &Frame {
        &self.frames[id as usize]
    }

    /// All frames, indexed by [`FrameId`].
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    /// The location with id `id`.
    pub fn location(&self, id: LocationId) -> &Location {
        &self.locations[id as usize]
    }

    /// All locations, indexed by [`LocationId`].
    pub fn locations(&self) -> &[Location] {
        &self.locations
    }

    /// All mappings, indexed by [`MappingId`].
    pub fn mappings(&self) -> &[Mapping] {
        &self.mappings
    }

    /// The frames of a stack, outermost first, inlined frames expanded.
    pub fn stack_frames<'a>(
        &'a self,
        stack: &'a [LocationId],
    ) -> impl Iterator<Item = FrameId> + 'a {
        stack
            .iter()
            .flat_map(|&l| self.locations[l as usize].frames.iter().copied())
    }

    /// The labels of a sample of `pid` (the profile's and its process's).
    pub fn sample_labels(&self, pid: u32) -> Vec<(&str, &str)> {
        crate::labels::of_sample(&self.labels, &self.process_labels, pid)
    }

    /// Adds `other`'s samples (and the frames, locations and mappings they use).
    /// The metadata stays this profile's; labels are merged, `other`'s process
    /// labels winning (a later window knows a reused pid as it is now).
    pub fn merge(&mut self, other: &Profile) {
        for (k, v) in &other.labels {
            if crate::labels::get(&self.labels, k).is_none() {
                self.labels.push((k.clone(), v.clone()));
            }
        }
        for (pid, labels) in &other.process_labels {
            self.process_labels.insert(*pid, labels.clone());
        }
        let mappings: Vec<MappingId> = other
            .mappings
            .iter()
            .map(|m| self.intern_mapping(m.clone()))
            .collect();
        let frames: Vec<FrameId> = other
            .frames
            .iter()
            .map(|f| self.intern(f.clone()))
            .collect();
        let locations: Vec<LocationId> = other
            .locations
            .iter()
            .map(|l| {
                self.intern_location(Location {
                    mapping: l.mapping.map(|m| mappings[m as usize]),
                    address: l.address,
                    frames: l.frames.iter().map(|&f| frames[f as usize]).collect(),
                })
            })
            .collect();
        for s in &other.samples {
            self.samples.push(Sample {
                stack: s.stack.iter().map(|&l| locations[l as usize]).collect(),
                ..s.clone()
            });
        }
    }

    /// Total samples over all stacks (saturating: a sum never wraps).
    pub fn total_samples(&self) -> u64 {
        self.samples
            .iter()
            .fold(0u64, |t, s| t.saturating_add(s.count))
    }

    /// Whether a sample measures time off the CPU: its last frame says so.
    pub fn is_off_cpu(&self, sample: &Sample) -> bool {
        sample
            .stack
            .last()
            .and_then(|&l| self.locations[l as usize].frames.last())
            .is_some_and(|&f| self.frames[f as usize].kind == FrameKind::OffCpu)
    }

    /// Total weight of the samples off the CPU (saturating).
    pub fn off_cpu_weight(&self) -> u64 {
        self.samples
            .iter()
            .filter(|s| self.is_off_cpu(s))
            .fold(0u64, |t, s| t.saturating_add(s.weight))
    }

    /// Total weight over all stacks (saturating: a sum never wraps).
    pub fn total_weight(&self) -> u64 {
        self.samples
            .iter()
            .fold(0u64, |t, s| t.saturating_add(s.weight))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_reuses_ids() {
        let mut p = Profile::default();
        let a = p.intern(Frame::named("main", FrameKind::User));
        let b = p.intern(Frame::named("main", FrameKind::Kernel));
        let c = p.intern(Frame::named("main", FrameKind::User));
        assert_eq!(a, c);
        assert_ne!(a, b);
        assert_eq!(p.frames().len(), 2);
        assert_eq!(p.frame(b).kind, FrameKind::Kernel);
    }

    #[test]
    fn merging_reinterns_everything() {
        let mut a = Profile::default();
        let la = a.frame_location(Frame::named("a", FrameKind::User));
        a.samples.push(Sample {
            pid: 1,
            tid: 1,
            comm: "x".into(),
            stack: vec![la],
            count: 1,
            weight: 2,
        });
        let mut b = Profile::default();
        let lz = b.frame_location(Frame::named("z", FrameKind::User));
        let lb = b.frame_location(Frame::named("a", FrameKind::User));
        b.samples.push(Sample {
            pid: 2,
            tid: 2,
            comm: "y".into(),
            stack: vec![lz, lb],
            count: 3,
            weight: 4,
        });
        a.merge(&b);
        assert_eq!(a.total_weight(), 6);
        let names: Vec<&str> = a
            .stack_frames(&a.samples[1].stack)
            .map(|f| a.frame(f).name.as_str())
            .collect();
        assert_eq!(names, ["z", "a"]);
        assert_eq!(a.frames().len(), 2, "a is shared");
    }

    #[test]
    fn locations_expand_to_their_frames() {
        let mut p = Profile::default();
        let m = p.intern_mapping(Mapping {
            path: "/bin/demo".into(),
            ..Mapping::default()
        });
        let main = p.intern(Frame::named("main", FrameKind::User));
        let helper = p.intern(Frame::named("helper", FrameKind::Inline));
        let l1 = p.intern_location(Location {
            mapping: Some(m),
            address: 0x10,
            frames: vec![main, helper],
        });
        let l2 = p.frame_location(Frame::named("leaf", FrameKind::User));
        let again = p.intern_location(p.location(l1).clone());
        assert_eq!(again, l1);
        let names: Vec<&str> = p
            .stack_frames(&[l1, l2])
            .map(|f| p.frame(f).name.as_str())
            .collect();
        assert_eq!(names, ["main", "helper", "leaf"]);
        assert_eq!(p.mappings().len(), 1);
    }
}
