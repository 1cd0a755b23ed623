//! Every process's address space over the capture, rebuilt from tracking records.
//!
//! perf reports new mappings (MMAP2), exec (COMM with the exec flag), fork and exit,
//! but not munmap: a mapping lives until a newer one covers its range, the process
//! execs, or the capture ends. Exec starts a new *generation* of the address space
//! and keeps the old one, so an address sampled before the exec can still be
//! resolved. For samples that carry a time (DWARF mode) the parts of mappings that
//! newer ones covered can be kept too ([`MappingHistory::keep_replaced`]), so a
//! library unloaded and another loaded at its address still name the samples taken
//! in each. Nothing here reads /proc or needs privileges: it is fed with records.

use std::collections::{BTreeMap, HashMap};

use crate::objects::ObjectId;

/// A file-backed (or pseudo) executable mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// File offset of `start`.
    pub pgoff: u64,
    /// The object mapped.
    pub object: ObjectId,
}

/// An address resolved against a process's mappings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Resolved {
    /// The object the address falls in.
    pub object: ObjectId,
    /// The address as an offset into that object's file.
    pub offset: u64,
}

/// Parts of covered mappings kept per generation, at most: beyond, samples taken
/// before a mapping was covered resolve in the newer one, as without
/// [`MappingHistory::keep_replaced`]. A program that loads and unloads libraries
/// all the time stays bounded.
const MAX_REPLACED: usize = 4096;

#[derive(Debug, Clone, Default)]
struct Generation {
    /// When this address space came to be (exec or fork time; 0 when unknown).
    since: u64,
    /// Non-overlapping mappings by start address.
    maps: BTreeMap<u64, Mapping>,
    /// With [`MappingHistory::keep_replaced`]: each part of a mapping that a
    /// newer one covered, with the time it was covered; in that time's order (records
    /// come in time order).
    replaced: Vec<(Mapping, u64)>,
}

/// A process's address space as it was at some time, to the precision that
/// matters: the generation (one per exec) and, within it, the last time a mapping
/// was covered by another before then. All times with the same moment resolve
/// every address alike, so callers can name each address once per moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Moment {
    /// Which generation: 0 is the oldest.
    pub generation: usize,
    /// The last time a mapping of that generation was covered, up to then (0 if
    /// none was).
    changed: u64,
}

#[derive(Debug, Clone, Default)]
struct Process {
    /// Oldest first; never empty.
    generations: Vec<Generation>,
    /// When it exited, if it did.
    exited: Option<u64>,
}

impl Process {
    fn current(&mut self) -> &mut Generation {
        if self.generations.is_empty() {
            self.generations.push(Generation::default());
        }
        self.generations.last_mut().expect("just ensured non-empty")
    }
}

/// Address spaces of all processes seen during a capture.
#[derive(Debug, Default)]
pub struct MappingHistory {
    procs: HashMap<u32, Process>,
    keep_replaced: bool,
}

impl MappingHistory {
    /// An empty history.
    pub fn new() -> MappingHistory {
        MappingHistory::default()
    }

    /// Keep what newer mappings cover, for samples that carry a time: off by
    /// default, as samples aggregated in the kernel have none (and a long-running
    /// process that keeps loading and unloading libraries would make it grow).
    pub fn keep_replaced(&mut self, keep: bool) {
        self.keep_replaced = keep;
    }

    /// Records a new mapping of `pid` made at an unknown time (as if at 0).
    pub fn map(&mut self, pid: u32, start: u64, len: u64, pgoff: u64, object: ObjectId) {
        self.map_at(pid, start, len, pgoff, object, 0);
    }

    /// Records a new mapping of `pid` made at `time`; it covers whatever it
    /// overlaps.
    pub fn map_at(
        &mut self,
        pid: u32,
        start: u64,
        len: u64,
        pgoff: u64,
        object: ObjectId,
        time: u64,
    ) {
        let Some(end) = start.checked_add(len).filter(|&e| e > start) else {
            return;
        };
        let keep = self.keep_replaced;
        let gen = self.procs.entry(pid).or_default().current();
        let covered = insert(
            &mut gen.maps,
            Mapping {
                start,
                end,
                pgoff,
                object,
            },
        );
        if keep {
            let room = MAX_REPLACED.saturating_sub(gen.replaced.len());
            gen.replaced
                .extend(covered.into_iter().take(room).map(|m| (m, time)));
        }
    }

    /// Adds a mapping read from a /proc snapshot, unless tracking records already
    /// cover any of its range (those are at least as recent).
    pub fn map_from_snapshot(&mut self, pid: u32, mapping: Mapping) {
        if mapping.end <= mapping.start {
            return;
        }
        let gen = self.procs.entry(pid).or_default().current();
        let overlaps = gen
            .maps
            .range(..mapping.end)
            .next_back()
            .is_some_and(|(_, m)| m.end > mapping.start);
        if !overlaps {
            gen.maps.insert(mapping.start, mapping);
        }
    }

    /// `pid` exec'd a new program at `time`: a new, empty address space.
    pub fn exec(&mut self, pid: u32, time: u64) {
        let proc = self.procs.entry(pid).or_default();
        proc.exited = None;
        if proc.current().maps.is_empty() {
            proc.current().since = time;
            return;
        }
        proc.generations.push(Generation {
            since: time,
            ..Generation::default()
        });
    }

    /// `child` was forked from `parent` at `time` and starts with a copy of its
    /// address space. A reused pid starts over.
    pub fn fork(&mut self, parent: u32, child: u32, time: u64) {
        if parent == child {
            return; // a new thread shares the address space
        }
        let maps = self
            .procs
            .get(&parent)
            .and_then(|p| p.generations.last())
            .map(|g| g.maps.clone())
            .unwrap_or_default();
        self.procs.insert(
            child,
            Process {
                generations: vec![Generation {
                    since: time,
                    maps,
                    replaced: Vec::new(),
                }],
                exited: None,
            },
        );
    }

    /// `pid` exited at `time`. Its mappings are kept: its samples still need them.
    pub fn exit(&mut self, pid: u32, time: u64) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.exited = Some(time);
        }
    }

    /// Whether `pid` is known to have exited.
    pub fn has_exited(&self, pid: u32) -> bool {
        self.procs.get(&pid).is_some_and(|p| p.exited.is_some())
    }

    /// Forgets the processes that exited before `time` (their samples have all been
    /// symbolized); returns their pids. Keeps a long-running capture's memory flat.
    pub fn forget_exited_before(&mut self, time: u64) -> Vec<u32> {
        let gone: Vec<u32> = self
            .procs
            .iter()
            .filter(|(_, p)| p.exited.is_some_and(|t| t < time))
            .map(|(&pid, _)| pid)
            .collect();
        for pid in &gone {
            self.procs.remove(pid);
        }
        gone
    }

    /// Every object some known process maps, or mapped where a newer mapping
    /// covered it (its samples may still need it).
    pub fn objects_in_use(&self) -> std::collections::HashSet<ObjectId> {
        self.procs
            .values()
            .flat_map(|p| p.generations.iter())
            .flat_map(|g| {
                g.maps
                    .values()
                    .chain(g.replaced.iter().map(|(m, _)| m))
                    .map(|m| m.object)
            })
            .collect()
    }

    /// The mappings of `pid`'s current address space (its newest generation),
    /// by start address; empty for an unknown process.
    pub fn current(&self, pid: u32) -> Vec<Mapping> {
        self.procs
            .get(&pid)
            .and_then(|p| p.generations.last())
            .map(|g| g.maps.values().copied().collect())
            .unwrap_or_default()
    }

    /// Whether anything is known about `pid`.
    pub fn knows(&self, pid: u32) -> bool {
        self.procs.contains_key(&pid)
    }

    /// Number of processes with a known address space.
    pub fn processes(&self) -> usize {
        self.procs.len()
    }

    /// Resolves `addr` in `pid`'s address space. Samples aggregated in the kernel carry
    /// no timestamp, so the newest generation that maps the address wins.
    pub fn resolve(&self, pid: u32, addr: u64) -> Option<Resolved> {
        self.mapping(pid, addr).map(|m| m.resolve(addr))
    }

    /// The mapping [`MappingHistory::resolve`] resolves `addr` in: where pprof's
    /// mappings get their real address ranges.
    pub fn mapping(&self, pid: u32, addr: u64) -> Option<Mapping> {
        let proc = self.procs.get(&pid)?;
        proc.generations
            .iter()
            .rev()
            .find_map(|g| lookup(&g.maps, addr))
    }

    /// Resolves `addr` as it was mapped at `time` (for timestamped samples).
    pub fn resolve_at(&self, pid: u32, addr: u64, time: u64) -> Option<Resolved> {
        self.resolve_in(pid, self.moment(pid, time)?, addr)
    }

    /// `pid`'s address space as it was at `time`: the generation live then (one
    /// per exec), and within it what mappings had been covered by then. `None`
    /// for an unknown process.
    pub fn moment(&self, pid: u32, time: u64) -> Option<Moment> {
        let proc = self.procs.get(&pid)?;
        let generation = proc
            .generations
            .iter()
            .rposition(|g| g.since <= time)
            .unwrap_or(0);
        let replaced = &proc.generations[generation].replaced;
        let before = replaced.partition_point(|(_, until)| *until <= time);
        let changed = before.checked_sub(1).map_or(0, |i| replaced[i].1);
        Some(Moment {
            generation,
            changed,
        })
    }

    /// Resolves `addr` in `pid`'s address space at `moment`: in the first part
    /// covered after it, if one holds `addr` (that was what `addr` meant then),
    /// else in the mappings live now.
    pub fn resolve_in(&self, pid: u32, moment: Moment, addr: u64) -> Option<Resolved> {
        self.mapping_in(pid, moment, addr).map(|m| m.resolve(addr))
    }

    /// The mapping [`MappingHistory::resolve_in`] resolves `addr` in.
    pub fn mapping_in(&self, pid: u32, moment: Moment, addr: u64) -> Option<Mapping> {
        let gen = self.procs.get(&pid)?.generations.get(moment.generation)?;
        let after = gen
            .replaced
            .partition_point(|(_, until)| *until <= moment.changed);
        gen.replaced[after..]
            .iter()
            .find(|(m, _)| m.start <= addr && addr < m.end)
            .map(|(m, _)| *m)
            .or_else(|| lookup(&gen.maps, addr))
    }
}

impl Mapping {
    /// `addr`, which this mapping covers, as (object, file offset).
    pub fn resolve(&self, addr: u64) -> Resolved {
        Resolved {
            object: self.object,
            offset: self.pgoff + (addr - self.start),
        }
    }
}

fn lookup(maps: &BTreeMap<u64, Mapping>, addr: u64) -> Option<Mapping> {
    let (_, m) = maps.range(..=addr).next_back()?;
    (addr < m.end).then_some(*m)
}

/// Inserts `new`, trimming or splitting the mappings it overlaps; returns the
/// parts it covered that meant something else than `new` does there (another
/// object, or the same one at other offsets: a mapping renewed in place changes
/// nothing).
fn insert(maps: &mut BTreeMap<u64, Mapping>, new: Mapping) -> Vec<Mapping> {
    let overlapped: Vec<Mapping> = maps
        .range(..new.end)
        .rev()
        .take_while(|(_, m)| m.end > new.start)
        .map(|(_, m)| *m)
        .collect();
    let mut covered = Vec::new();
    for old in overlapped.into_iter().rev() {
        let same = old.object == new.object
            && old.pgoff.wrapping_sub(old.start) == new.pgoff.wrapping_sub(new.start);
        if !same {
            let start = old.start.max(new.start);
            covered.push(Mapping {
                start,
                end: old.end.min(new.end),
                pgoff: old.pgoff + (start - old.start),
                object: old.object,
            });
        }
        maps.remove(&old.start);
        if old.start < new.start {
            maps.insert(
                old.start,
                Mapping {
                    end: new.start,
                    ..old
                },
            );
        }
        if old.end > new.end {
            maps.insert(
                new.end,
                Mapping {
                    start: new.end,
                    pgoff: old.pgoff + (new.end - old.start),
                    ..old
                },
            );
        }
    }
    maps.insert(new.start, new);
    covered
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ObjectId = ObjectId(1);
    const B: ObjectId = ObjectId(2);
    const C: ObjectId = ObjectId(3);
    const D: ObjectId = ObjectId(4);

    fn at(object: ObjectId, offset: u64) -> Option<Resolved> {
        Some(Resolved { object, offset })
    }

    #[test]
    fn resolves_addresses_to_file_offsets() {
        let mut h = MappingHistory::new();
        h.map(1, 0x1000, 0x2000, 0x400, A);
        assert_eq!(h.resolve(1, 0x1000), at(A, 0x400));
        assert_eq!(h.resolve(1, 0x2fff), at(A, 0x23ff));
        assert_eq!(h.resolve(1, 0x3000), None);
        assert_eq!(h.resolve(1, 0xfff), None);
        assert_eq!(h.resolve(2, 0x1000), None);
    }

    #[test]
    fn mmap_over_mmap_splits_the_old_mapping() {
        let mut h = MappingHistory::new();
        h.map(1, 0x1000, 0x4000, 0, A); // [0x1000, 0x5000)
        h.map(1, 0x2000, 0x1000, 0x9000, B); // punches [0x2000, 0x3000)
        assert_eq!(h.resolve(1, 0x1800), at(A, 0x800));
        assert_eq!(h.resolve(1, 0x2800), at(B, 0x9800));
        // the right remainder keeps its original file offsets
        assert_eq!(h.resolve(1, 0x3800), at(A, 0x2800));
        // a mapping covering several old ones replaces them all
        h.map(1, 0x0, 0x10000, 0, C);
        for addr in [0x800, 0x1800, 0x2800, 0x3800, 0x8000] {
            assert_eq!(h.resolve(1, addr), at(C, addr));
        }
    }

    #[test]
    fn mmap_overlapping_the_start_or_end_trims() {
        let mut h = MappingHistory::new();
        h.map(1, 0x2000, 0x2000, 0, A); // [0x2000, 0x4000)
        h.map(1, 0x1000, 0x1800, 0, B); // overlaps the start
        h.map(1, 0x3800, 0x1000, 0, C); // overlaps the end
        assert_eq!(h.resolve(1, 0x2400), at(B, 0x1400));
        assert_eq!(h.resolve(1, 0x2800), at(A, 0x800));
        assert_eq!(h.resolve(1, 0x37ff), at(A, 0x17ff));
        assert_eq!(h.resolve(1, 0x3800), at(C, 0));
    }

    #[test]
    fn munmap_is_not_reported_so_old_mappings_stay() {
        // perf has no munmap record: an unmapped library still resolves, which
        // is right for samples taken before the unmap.
        let mut h = MappingHistory::new();
        h.map(1, 0x1000, 0x1000, 0, A);
        assert_eq!(h.resolve(1, 0x1100), at(A, 0x100));
    }

    #[test]
    fn exec_replaces_the_address_space_but_keeps_the_old_one() {
        let mut h = MappingHistory::new();
        h.map(1, 0x1000, 0x1000, 0, A); // the shell before exec
        h.map(1, 0x8000, 0x1000, 0, A);
        h.exec(1, 100);
        h.map(1, 0x1000, 0x1000, 0, B); // the new program at the same address
        assert_eq!(h.resolve(1, 0x1100), at(B, 0x100));
        // addresses the new program does not map fall back to the old image
        assert_eq!(h.resolve(1, 0x8100), at(A, 0x100));
        // with timestamps the right generation is chosen
        assert_eq!(h.resolve_at(1, 0x1100, 50), at(A, 0x100));
        assert_eq!(h.resolve_at(1, 0x1100, 150), at(B, 0x100));
    }

    #[test]
    fn a_library_loaded_where_another_was_resolves_by_time_when_asked() {
        // dlclose(A), then dlopen(B) at the address A had: one generation
        let mut h = MappingHistory::new();
        h.keep_replaced(true);
        h.map_at(1, 0x1000, 0x2000, 0x400, A, 10);
        h.map_at(1, 0x2000, 0x1000, 0, B, 20); // covers A's second half
        assert_eq!(h.resolve_at(1, 0x2100, 15), at(A, 0x1500));
        assert_eq!(h.resolve_at(1, 0x2100, 25), at(B, 0x100));
        assert_eq!(h.resolve(1, 0x2100), at(B, 0x100), "untimed: the newest");
        // A's first half was never covered
        assert_eq!(h.resolve_at(1, 0x1100, 15), at(A, 0x500));
        assert_eq!(h.resolve_at(1, 0x1100, 25), at(A, 0x500));
        // C comes after B went, D covers it: each sample in what it ran
        h.map_at(1, 0x2000, 0x1000, 0, C, 30);
        h.map_at(1, 0x2000, 0x1000, 0, D, 40);
        assert_eq!(h.resolve_at(1, 0x2100, 35), at(C, 0x100));
        assert_eq!(h.resolve_at(1, 0x2100, 45), at(D, 0x100));
        assert_eq!(h.resolve_at(1, 0x2100, 25), at(B, 0x100));
        // the covered objects are still needed by the samples taken in them
        let in_use = h.objects_in_use();
        assert!([A, B, C, D].iter().all(|o| in_use.contains(o)));
    }

    #[test]
    fn times_between_the_same_two_changes_are_one_moment() {
        let mut h = MappingHistory::new();
        h.keep_replaced(true);
        h.map_at(1, 0x1000, 0x1000, 0, A, 10);
        h.map_at(1, 0x1000, 0x1000, 0, B, 20);
        assert_eq!(h.moment(1, 12), h.moment(1, 19));
        assert_ne!(h.moment(1, 19), h.moment(1, 20));
        assert_eq!(h.moment(1, 20), h.moment(1, 99));
        // a mapping renewed in place (same object, same offsets) changes nothing
        h.map_at(1, 0x1000, 0x1000, 0, B, 30);
        assert_eq!(h.moment(1, 25), h.moment(1, 35));
        assert_eq!(h.moment(2, 25), None);
    }

    #[test]
    fn without_keep_replaced_a_covered_mapping_is_gone() {
        let mut h = MappingHistory::new();
        h.map_at(1, 0x1000, 0x1000, 0, A, 10);
        h.map_at(1, 0x1000, 0x1000, 0, B, 20);
        assert_eq!(h.resolve_at(1, 0x1100, 15), at(B, 0x100));
        assert!(!h.objects_in_use().contains(&A));
    }

    #[test]
    fn exec_of_a_process_with_no_mappings_yet_does_not_add_a_generation() {
        let mut h = MappingHistory::new();
        h.exec(1, 10);
        h.exec(1, 20);
        h.map(1, 0x1000, 0x1000, 0, A);
        assert_eq!(h.resolve_at(1, 0x1100, 25), at(A, 0x100));
    }

    #[test]
    fn fork_inherits_the_parent_address_space() {
        let mut h = MappingHistory::new();
        h.map(1, 0x1000, 0x1000, 0, A);
        h.fork(1, 2, 10);
        assert_eq!(h.resolve(2, 0x1100), at(A, 0x100));
        // later changes stay in their own process
        h.map(2, 0x1000, 0x1000, 0, B);
        assert_eq!(h.resolve(1, 0x1100), at(A, 0x100));
        assert_eq!(h.resolve(2, 0x1100), at(B, 0x100));
        // a new thread (same pid) changes nothing
        h.fork(2, 2, 11);
        assert_eq!(h.resolve(2, 0x1100), at(B, 0x100));
        // a fork of an unknown parent gives an empty address space
        h.fork(77, 3, 12);
        assert!(h.knows(3));
        assert_eq!(h.resolve(3, 0x1100), None);
    }

    #[test]
    fn exited_processes_still_resolve() {
        let mut h = MappingHistory::new();
        h.map(1, 0x1000, 0x1000, 0, A);
        h.exit(1, 50);
        assert!(h.has_exited(1));
        assert_eq!(h.resolve(1, 0x1100), at(A, 0x100));
    }

    #[test]
    fn exited_processes_are_forgotten_once_symbolized() {
        let mut h = MappingHistory::new();
        h.map(1, 0x1000, 0x1000, 0, A);
        h.map(2, 0x1000, 0x1000, 0, B);
        h.map(3, 0x1000, 0x1000, 0, C);
        h.exit(1, 50);
        h.exit(2, 150);
        assert_eq!(h.forget_exited_before(100), [1]);
        assert!(!h.knows(1) && h.knows(2) && h.knows(3));
        let in_use = h.objects_in_use();
        assert!(!in_use.contains(&A) && in_use.contains(&B) && in_use.contains(&C));
    }

    #[test]
    fn snapshot_mappings_never_override_tracked_ones() {
        let mut h = MappingHistory::new();
        h.map(1, 0x1000, 0x1000, 0, A);
        let snap = |start, end, object| Mapping {
            start,
            end,
            pgoff: 0,
            object,
        };
        h.map_from_snapshot(1, snap(0x1000, 0x2000, B));
        h.map_from_snapshot(1, snap(0x3000, 0x4000, B));
        assert_eq!(h.resolve(1, 0x1100), at(A, 0x100));
        assert_eq!(h.resolve(1, 0x3100), at(B, 0x100));
    }
}
