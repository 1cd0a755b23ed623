//! The BPF program's sample accounting: one counter per class of
//! `enum flamebpf_stat` (bpf/profile.h), summed over CPUs. The summary line, the
//! daemon's windows and /metrics all use this one type.

use std::ops::{Add, AddAssign, Index, Sub};

pub use super::skel::types::flamebpf_stat as Stat;

/// How many classes there are.
pub const CLASSES: usize = Stat::STAT_MAX.0 as usize;

/// A reading of the counters (cumulative), or the difference of two readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats([u64; CLASSES]);

impl Default for Stats {
    fn default() -> Stats {
        Stats([0; CLASSES])
    }
}

impl Stats {
    /// Counters from their values in enum order.
    pub fn from_array(values: [u64; CLASSES]) -> Stats {
        Stats(values)
    }

    /// The same counters with `stat` set to `value` (for tests and fixtures).
    #[cfg(test)]
    pub fn with(mut self, stat: Stat, value: u64) -> Stats {
        self.0[stat.0 as usize] = value;
        self
    }
}

impl Index<Stat> for Stats {
    type Output = u64;

    fn index(&self, stat: Stat) -> &u64 {
        // Every value the BTF enum defines is below STAT_MAX.
        &self.0[stat.0 as usize]
    }
}

impl Add for Stats {
    type Output = Stats;

    fn add(mut self, other: Stats) -> Stats {
        self += other;
        self
    }
}

impl AddAssign for Stats {
    fn add_assign(&mut self, other: Stats) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }
}

impl Sub for Stats {
    type Output = Stats;

    /// The growth from an earlier reading of the cumulative counters to this one.
    fn sub(mut self, earlier: Stats) -> Stats {
        for (a, b) in self.0.iter_mut().zip(earlier.0) {
            *a = a.saturating_sub(b);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_is_per_class() {
        let a = Stats::default()
            .with(Stat::STAT_SAMPLES, 10)
            .with(Stat::STAT_COUNTS_FULL, 2);
        let b = Stats::default().with(Stat::STAT_SAMPLES, 4);
        assert_eq!((a - b)[Stat::STAT_SAMPLES], 6);
        assert_eq!((a - b)[Stat::STAT_COUNTS_FULL], 2);
        assert_eq!(
            (b - a)[Stat::STAT_SAMPLES],
            0,
            "a reset never goes negative"
        );
        let mut t = a;
        t += b;
        assert_eq!(t, a + b);
        assert_eq!(t[Stat::STAT_SAMPLES], 14);
    }
}
