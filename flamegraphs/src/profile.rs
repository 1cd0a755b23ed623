//! The profile model: interned frames, weighted stacks and capture metadata.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// Index of a frame in [`Profile::frames`].
pub type FrameId = u32;

/// Where a frame's code runs, which decides how writers mark and colour it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrameKind {
    /// A user-space function.
    User,
    /// A kernel function.
    Kernel,
    /// A function inlined into its caller (the frame below it in the stack).
    Inline,
}

/// One stack frame: a function (or, failing that, an object and offset).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Frame {
    /// Function name, demangled; `lib.so+0x1a2b` or `[unknown]` when nothing names it.
    pub name: String,
    /// User, kernel or inlined.
    pub kind: FrameKind,
    /// The object (executable, shared library, `[kernel]`) the code lives in.
    pub module: Option<String>,
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
            module: None,
            file: None,
            line: None,
        }
    }
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
    /// Frames from the outermost caller to the leaf.
    pub stack: Vec<FrameId>,
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
    /// What a unit of weight is: `ns` for the clock events, `events` otherwise.
    pub unit: String,
    /// Sampling frequency in Hz, when the event was sampled by frequency.
    pub frequency: Option<u64>,
    /// Sample period in events, when the event was sampled every N events.
    pub period: Option<u64>,
    /// When the capture started.
    pub start: SystemTime,
    /// How long it sampled.
    pub duration: Duration,
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
        }
    }
}

/// A symbolized capture.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    /// Capture metadata.
    pub meta: Meta,
    frames: Vec<Frame>,
    index: HashMap<Frame, FrameId>,
    /// Unique stacks with their counts; a stack may appear more than once (writers merge).
    pub samples: Vec<Sample>,
}

impl Profile {
    /// An empty profile with the given metadata.
    pub fn new(meta: Meta) -> Profile {
        Profile {
            meta,
            ..Profile::default()
        }
    }

    /// Returns the id of `frame`, adding it to the table the first time it is seen.
    pub fn intern(&mut self, frame: Frame) -> FrameId {
        if let Some(&id) = self.index.get(&frame) {
            return id;
        }
        let id = FrameId::try_from(self.frames.len()).expect("fewer than 2^32 distinct frames");
        self.frames.push(frame.clone());
        self.index.insert(frame, id);
        id
    }

    /// The frame with id `id`.
    pub fn frame(&self, id: FrameId) -> &Frame {
        &self.frames[id as usize]
    }

    /// All frames, indexed by [`FrameId`].
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    /// Total samples over all stacks.
    pub fn total_samples(&self) -> u64 {
        self.samples.iter().map(|s| s.count).sum()
    }

    /// Total weight over all stacks.
    pub fn total_weight(&self) -> u64 {
        self.samples.iter().map(|s| s.weight).sum()
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
}
