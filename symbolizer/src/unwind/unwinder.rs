//! Unwinding the samples of a capture: each sample's addresses resolved through
//! the mapping history of its process at its time, each object's table built
//! once per contents ([`TableCache`]), and the outcomes counted.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::cache::{ObjectKey, TableCache};
use super::table::UnwindTable;
use super::walk::{unwind, End, Regs, StackCopy, MAX_FRAMES};
use crate::objects::ObjectKind;
use crate::vdso::Vdso;
use crate::{ObjectId, Tracker};

/// How unwinding went, over all samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnwindStats {
    /// Stacks unwound to their outermost frame.
    pub complete: u64,
    /// Stacks cut short because the copy ended (a bigger copy would help).
    pub cut_short: u64,
    /// Stacks that stopped at code without CFI or at a rule not evaluated.
    pub failed: u64,
    /// Stacks deeper than the frame limit.
    pub too_deep: u64,
}

/// Unwinds samples of a capture, building each object's table once.
#[derive(Debug, Default)]
pub struct Unwinder {
    /// The table of each object seen (`None`: it has none), so that a frame
    /// costs no key computation.
    by_object: HashMap<ObjectId, Option<Arc<UnwindTable>>>,
    cache: TableCache,
    /// The unwinding outcomes so far.
    pub stats: UnwindStats,
    vdso: Option<Option<(Vdso, UnwindTable)>>,
}

impl Unwinder {
    /// An unwinder with empty caches.
    pub fn new() -> Unwinder {
        Unwinder::default()
    }

    /// The tables built so far, by object identity.
    pub fn cache(&self) -> &TableCache {
        &self.cache
    }

    /// Forgets the objects outside `in_use` (as [`crate::ObjectStore::prune`]
    /// does) and drops the tables no remaining object uses; returns how many
    /// tables went.
    pub fn release_unused(&mut self, in_use: &HashSet<ObjectId>) -> usize {
        self.by_object.retain(|id, _| in_use.contains(id));
        self.cache.evict_unused()
    }

    /// The table of `object`, built (or found in the cache) the first time.
    /// A reference, not an `Arc`: a frame costs no reference count.
    fn table(&mut self, tracker: &Tracker, object: ObjectId) -> Option<&UnwindTable> {
        let obj = tracker.objects.get(object);
        match obj.kind {
            ObjectKind::Anonymous => None,
            ObjectKind::Vdso => {
                let v = self.vdso.get_or_insert_with(|| {
                    let vdso = Vdso::load().ok()?;
                    let table = UnwindTable::load(&vdso.path()).ok()?;
                    Some((vdso, table))
                });
                v.as_ref().map(|(_, t)| t)
            }
            ObjectKind::File => {
                let cache = &mut self.cache;
                self.by_object
                    .entry(object)
                    .or_insert_with(|| {
                        let path = obj.read_path()?;
                        let key = match &obj.build_id {
                            Some(id) => ObjectKey::BuildId(id.clone()),
                            None => ObjectKey::of_file(&path).ok()?,
                        };
                        cache.get_or_build(&key, || UnwindTable::load(&path)).ok()
                    })
                    .as_deref()
            }
        }
    }

    /// Unwinds one sample of `pid` taken at `time`, with the mappings live then.
    pub fn unwind(
        &mut self,
        tracker: &Tracker,
        pid: u32,
        time: u64,
        regs: Regs,
        stack: StackCopy<'_>,
    ) -> (Vec<u64>, End) {
        let (frames, end) = unwind(
            regs,
            stack,
            |addr| {
                let r = tracker.history.resolve_at(pid, addr, time)?;
                let table = self.table(tracker, r.object)?;
                let row = table.lookup(table.vaddr(r.offset)?)?;
                Some((row.cfa, row.rbp))
            },
            MAX_FRAMES,
        );
        match end {
            End::Complete => self.stats.complete += 1,
            End::CutShort => self.stats.cut_short += 1,
            End::NoCfi | End::Unsupported => self.stats.failed += 1,
            End::TooDeep => self.stats.too_deep += 1,
        }
        (frames, end)
    }
}
