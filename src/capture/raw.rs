//! Samples as read from the BPF maps, with their stacks by value: what a capture
//! (or one window of continuous profiling) amounts to before symbolization. Stack
//! ids mean nothing once a map set is cleared, so drains are turned into this form
//! and can then be merged across drains.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::maps::{Drained, Kind, StackRef};
use super::skel::limits::MAX_DEPTH;

/// A stack, leaf first, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RawStack {
    /// The instruction pointers, leaf first.
    Ips(Arc<[u64]>),
    /// No such stack (user-mode sample's kernel stack, kernel thread's user stack).
    Absent,
    /// The stack existed but did not fit the stack maps.
    Lost,
}

/// Who ran, and where.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawKey {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Command name.
    pub comm: Arc<str>,
    /// The user stack.
    pub user: RawStack,
    /// The kernel stack.
    pub kernel: RawStack,
    /// On the CPU, or the kind of wait off it.
    pub kind: Kind,
    /// The user stack was cut at the depth limit: its outermost frames are
    /// missing.
    pub truncated: bool,
}

/// Sample count and summed period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Weight {
    /// Samples.
    pub count: u64,
    /// Summed sample periods.
    pub weight: u64,
}

/// Aggregated samples with their stacks.
#[derive(Debug, Clone, Default)]
pub struct RawProfile {
    /// Every distinct (thread, stacks) with its weight.
    pub samples: HashMap<RawKey, Weight>,
    /// Per-sample mode only: every sample in time order (time, key, weight), so
    /// time-ordered outputs (speedscope) can show what ran when.
    pub timeline: Vec<(u64, RawKey, u64)>,
}

impl RawProfile {
    /// Adds what one drain of a map set read.
    pub fn add(&mut self, drained: &Drained) {
        let stack = |r: &StackRef| match drained.stacks.get(r) {
            Some(ips) => RawStack::Ips(ips.as_slice().into()),
            None if *r == StackRef::Lost => RawStack::Lost,
            None => RawStack::Absent,
        };
        for c in &drained.counts {
            // a stack cut at the depth limit fills it (bpf_get_stackid cuts
            // silently, the CFI walk stops there): one that ends exactly there
            // is rare enough to be marked too
            let at_limit =
                matches!(drained.stacks.get(&c.user), Some(ips) if ips.len() >= MAX_DEPTH);
            let key = RawKey {
                pid: c.pid,
                tid: c.tid,
                comm: c.comm.as_str().into(),
                user: stack(&c.user),
                kernel: stack(&c.kernel),
                kind: c.kind,
                truncated: at_limit,
            };
            let w = self.samples.entry(key).or_default();
            w.count += c.samples;
            w.weight += c.weight;
        }
    }

    /// Adds one sample taken at `time` (per-sample mode).
    pub fn add_sample(&mut self, time: u64, key: RawKey, period: u64) {
        let w = self.samples.entry(key.clone()).or_default();
        w.count += 1;
        w.weight += period;
        self.timeline.push((time, key, period));
    }

    /// Adds another profile's samples.
    pub fn merge(&mut self, other: &RawProfile) {
        for (k, v) in &other.samples {
            let w = self.samples.entry(k.clone()).or_default();
            w.count += v.count;
            w.weight += v.weight;
        }
    }

    /// Samples kept.
    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.samples.values().map(|w| w.count).sum()
    }

    /// Samples whose user stack was cut at the depth limit.
    pub fn truncated(&self) -> u64 {
        self.samples
            .iter()
            .filter(|(k, _)| k.truncated && k.kind == Kind::OnCpu)
            .map(|(_, w)| w.count)
            .sum()
    }

    /// Distinct processes.
    pub fn processes(&self) -> usize {
        self.samples
            .keys()
            .map(|k| k.pid)
            .collect::<HashSet<_>>()
            .len()
    }

    /// Distinct stacks (user and kernel counted apart, as the maps hold them).
    pub fn stacks(&self) -> usize {
        let mut seen: HashSet<&Arc<[u64]>> = HashSet::new();
        for k in self.samples.keys() {
            for s in [&k.user, &k.kernel] {
                if let RawStack::Ips(ips) = s {
                    seen.insert(ips);
                }
            }
        }
        seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::maps::Count;
    use crate::capture::Stats;

    fn drained(samples: u64) -> Drained {
        let mut stacks = HashMap::new();
        stacks.insert(StackRef::Id(1), vec![0x10, 0x20]);
        Drained {
            counts: vec![
                Count {
                    pid: 7,
                    tid: 8,
                    comm: "app".into(),
                    kernel: StackRef::Absent,
                    user: StackRef::Id(1),
                    kind: Kind::OnCpu,
                    samples,
                    weight: samples * 10,
                },
                Count {
                    pid: 9,
                    tid: 9,
                    comm: "other".into(),
                    kernel: StackRef::Lost,
                    user: StackRef::Id(1),
                    kind: Kind::OnCpu,
                    samples: 1,
                    weight: 10,
                },
            ],
            stacks,
            stats: Stats::default(),
        }
    }

    #[test]
    fn drains_merge_by_stack_value_not_by_id() {
        let mut a = RawProfile::default();
        a.add(&drained(3));
        let mut b = RawProfile::default();
        b.add(&drained(4));
        a.merge(&b);
        assert_eq!(a.count(), 3 + 4 + 2);
        assert_eq!(a.processes(), 2);
        assert_eq!(a.stacks(), 1);
        let lost = a.samples.keys().find(|k| k.pid == 9).unwrap();
        assert_eq!(lost.kernel, RawStack::Lost);
        assert_eq!(lost.user, RawStack::Ips(vec![0x10u64, 0x20].into()));
    }
}
