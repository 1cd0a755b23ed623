//! The unwind table of one object: rows sorted by address, each saying from its
//! start up to the next row's start how to find the CFA (the caller's stack
//! pointer) and the caller's rbp. The same rows serve the userspace walker
//! ([`super::walk`]) and, once encoded elsewhere, the BPF unwinder, so every field
//! is a plain number and every rule is one the BPF side can evaluate without
//! DWARF: anything else is a [`CfaRule::Unsupported`] row.

use super::error::TableError;

const PAGE: u64 = 4096;

/// How to find the CFA of a frame, and with it the return address.
///
/// For [`CfaRule::Rsp`], [`CfaRule::Rbp`] and [`CfaRule::Plt`] the return address
/// is at CFA - 8 (the builder turns any other return-address rule into
/// [`CfaRule::Unsupported`]) and the caller's rsp is the CFA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CfaRule {
    /// CFA = rsp + offset.
    Rsp(i32),
    /// CFA = rbp + offset.
    Rbp(i32),
    /// A PLT stub: CFA = rsp + 8, plus 8 when `(rip & 15) >= threshold` (the
    /// stub pushed the relocation index). `rip` is the frame's own pc, which is
    /// always exact here: stubs call nothing, so they are only ever the sampled
    /// frame or the one a signal interrupted. `threshold` is 0..=31.
    Plt {
        /// The `N` of the expression's `DW_OP_litN`.
        threshold: u8,
    },
    /// The signal return trampoline (glibc's `__restore_rt`): rsp points at the
    /// `ucontext_t` the kernel saved, so the interrupted rip, rsp and rbp are read
    /// at rsp + [`SIGNAL_RIP`], [`SIGNAL_RSP`] and [`SIGNAL_RBP`]. The
    /// interrupted rip did not call anything: look it up as is, not at rip - 1.
    Signal,
    /// The return address is undefined: this is the outermost frame (`_start`,
    /// a new thread's first frame in `clone`/`clone3`).
    EndOfStack,
    /// No FDE covers this code: unwind with frame pointers.
    NoInfo,
    /// Call frame information this table does not express (another CFA register
    /// or expression, a return address elsewhere than CFA - 8, an rbp rule other
    /// than same value, undefined or saved at CFA + n).
    Unsupported,
}

/// Where the caller's rbp is. Meaningful for [`CfaRule::Rsp`] and
/// [`CfaRule::Rbp`] rows only: the builder stores [`RbpRule::Same`] in every other
/// kind, so that rows merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RbpRule {
    /// rbp still holds the caller's value.
    Same,
    /// The caller's rbp is saved at CFA + offset (negative in practice: -16 after
    /// `push rbp`). Never below the frame's rsp in an [`CfaRule::Rsp`] row: a save
    /// slot below rsp means rbp was already restored (the `ret` after `pop rbp`,
    /// where compilers keep the old rule), and such rows say [`RbpRule::Same`].
    AtCfa(i32),
    /// The caller's rbp cannot be recovered.
    Undefined,
}

/// Offset from the trampoline's rsp of the interrupted rip in the `ucontext_t`
/// (`uc_mcontext.gregs[REG_RIP]`: 40 bytes of `uc_flags`, `uc_link`, `uc_stack`,
/// then 8 bytes per register in the order r8..r15, rdi, rsi, rbp, rbx, rdx, rax,
/// rcx, rsp, rip). glibc's CFI for `__restore_rt` says the same, and the builder
/// accepts only CFI that does.
pub const SIGNAL_RIP: u64 = 168;
/// Offset of the interrupted rsp (`gregs[REG_RSP]`), see [`SIGNAL_RIP`].
pub const SIGNAL_RSP: u64 = 160;
/// Offset of the interrupted rbp (`gregs[REG_RBP]`), see [`SIGNAL_RIP`].
pub const SIGNAL_RBP: u64 = 120;

/// One row: its rules hold from `base + start` up to the next row's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnwindRow {
    /// Offset from the table's base.
    pub start: u32,
    /// How to find the CFA.
    pub cfa: CfaRule,
    /// Where the caller's rbp is.
    pub rbp: RbpRule,
}

/// A loadable segment (PT_LOAD): what turns the file offsets mappings give into
/// the ELF virtual addresses rows speak of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSegment {
    /// `p_offset`.
    pub file_offset: u64,
    /// `p_vaddr`.
    pub vaddr: u64,
    /// `p_filesz`.
    pub file_size: u64,
    /// Whether the segment is executable (`PF_X`).
    pub executable: bool,
}

/// The unwind table of one object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnwindTable {
    pub(super) base: u64,
    pub(super) rows: Vec<UnwindRow>,
    pub(super) segments: Vec<LoadSegment>,
    pub(super) raw_rows: usize,
}

/// Counts and field ranges of a table, for sizing an encoding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableSummary {
    /// Rows of each kind, in [`CfaRule`] order: Rsp, Rbp, Plt, Signal,
    /// EndOfStack, NoInfo, Unsupported.
    pub kinds: [usize; 7],
    /// Smallest and largest offset of `Rsp` rows.
    pub rsp_offsets: Option<(i32, i32)>,
    /// Smallest and largest offset of `Rbp` rows.
    pub rbp_offsets: Option<(i32, i32)>,
    /// Smallest and largest `AtCfa` offset of rbp rules.
    pub rbp_saved_at: Option<(i32, i32)>,
    /// Highest row start (the span of the table).
    pub span: u32,
}

fn widen(range: &mut Option<(i32, i32)>, v: i32) {
    *range = Some(match *range {
        None => (v, v),
        Some((lo, hi)) => (lo.min(v), hi.max(v)),
    });
}

impl UnwindTable {
    /// A table from rows given by hand, ascending by address: each holds up to the
    /// next; a pc at or after the last row's address takes the last rule, so end
    /// with a [`CfaRule::NoInfo`] row. Rows for one address replace the one before,
    /// identical consecutive rules merge. For tests, and for code generators that
    /// describe their code themselves.
    pub fn from_rows(
        rows: impl IntoIterator<Item = (u64, CfaRule, RbpRule)>,
        segments: Vec<LoadSegment>,
    ) -> Result<UnwindTable, TableError> {
        let mut rows = rows.into_iter().peekable();
        let base = rows.peek().map_or(0, |r| r.0);
        let mut a = Assembler::new(base, rows.size_hint().0);
        for (addr, cfa, rbp) in rows {
            a.push(addr, cfa, rbp);
        }
        a.finish(segments)
    }

    /// The lowest address described: row starts are offsets from it.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The rows, sorted by start.
    pub fn rows(&self) -> &[UnwindRow] {
        &self.rows
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Rows the CFI gave before identical neighbours were merged (and gaps marked).
    pub fn raw_rows(&self) -> usize {
        self.raw_rows
    }

    /// Heap bytes the rows take.
    pub fn bytes(&self) -> usize {
        self.rows.capacity() * std::mem::size_of::<UnwindRow>()
            + self.segments.capacity() * std::mem::size_of::<LoadSegment>()
    }

    /// The object's loadable segments.
    pub fn segments(&self) -> &[LoadSegment] {
        &self.segments
    }

    /// The ELF virtual address at `file_offset` of the object: the segment whose
    /// bytes hold it, else the one whose first page does (a mapping starts at the
    /// page boundary below `p_offset`). `None` outside every segment.
    pub fn vaddr(&self, file_offset: u64) -> Option<u64> {
        let exact = |s: &&LoadSegment| {
            file_offset >= s.file_offset && file_offset - s.file_offset < s.file_size
        };
        let paged = |s: &&LoadSegment| {
            file_offset >= s.file_offset & !(PAGE - 1)
                && file_offset < s.file_offset.saturating_add(s.file_size)
        };
        let s = self
            .segments
            .iter()
            .find(exact)
            .or_else(|| self.segments.iter().find(paged))?;
        Some(
            s.vaddr
                .wrapping_add(file_offset)
                .wrapping_sub(s.file_offset),
        )
    }

    /// The bias of a mapping of this object (`len` bytes at `start`, from file
    /// offset `file_offset`): runtime address = ELF vaddr + bias (wrapping), what
    /// the BPF side adds per mapping. Taken from the executable segment the
    /// mapping's bytes overlap (a page can hold the end of one segment and the
    /// start of the next, and only code is unwound), else any segment it
    /// overlaps; `None` when it overlaps none.
    pub fn bias(&self, start: u64, file_offset: u64, len: u64) -> Option<u64> {
        let end = file_offset.saturating_add(len);
        let overlaps = |s: &&LoadSegment| {
            s.file_offset < end && file_offset < s.file_offset.saturating_add(s.file_size)
        };
        let s = self
            .segments
            .iter()
            .filter(|s| s.executable)
            .find(overlaps)
            .or_else(|| self.segments.iter().find(overlaps))?;
        // start holds file_offset, and file offset o holds vaddr o - p_offset + p_vaddr
        Some(
            start
                .wrapping_sub(file_offset)
                .wrapping_add(s.file_offset)
                .wrapping_sub(s.vaddr),
        )
    }

    /// The row that holds at ELF virtual address `vaddr`; `None` below the table.
    /// Past the last FDE the table's closing [`CfaRule::NoInfo`] row answers.
    pub fn lookup(&self, vaddr: u64) -> Option<&UnwindRow> {
        let off = vaddr.checked_sub(self.base)?;
        let off = u32::try_from(off).unwrap_or(u32::MAX);
        let i = self
            .rows
            .partition_point(|r| r.start <= off)
            .checked_sub(1)?;
        self.rows.get(i)
    }

    /// Counts and field ranges.
    pub fn summary(&self) -> TableSummary {
        let mut s = TableSummary::default();
        for r in &self.rows {
            let kind = match r.cfa {
                CfaRule::Rsp(o) => {
                    widen(&mut s.rsp_offsets, o);
                    0
                }
                CfaRule::Rbp(o) => {
                    widen(&mut s.rbp_offsets, o);
                    1
                }
                CfaRule::Plt { .. } => 2,
                CfaRule::Signal => 3,
                CfaRule::EndOfStack => 4,
                CfaRule::NoInfo => 5,
                CfaRule::Unsupported => 6,
            };
            s.kinds[kind] += 1;
            if let RbpRule::AtCfa(o) = r.rbp {
                widen(&mut s.rbp_saved_at, o);
            }
            s.span = s.span.max(r.start);
        }
        s
    }
}

/// A point [`Assembler::restore`] goes back to.
#[derive(Debug, Clone, Copy)]
pub(super) struct Checkpoint {
    rows: usize,
    pushed: usize,
    too_far: Option<u64>,
}

/// Appends rows in address order, merging identical neighbours: what keeps
/// tables small (a function's epilogue row often equals the next function's
/// first row, and most FDEs end where the next begins).
pub(super) struct Assembler {
    base: u64,
    rows: Vec<UnwindRow>,
    pushed: usize,
    /// The largest offset from `base` that did not fit in u32.
    too_far: Option<u64>,
}

impl Assembler {
    pub(super) fn new(base: u64, capacity: usize) -> Assembler {
        Assembler {
            base,
            rows: super::huge::vec(capacity),
            pushed: 0,
            too_far: None,
        }
    }

    /// Adds the row at `addr`; one below `base` or before the last row is
    /// dropped (callers lay rows out in order, this only keeps it so), one more
    /// than 4 GiB above `base` fails the table in [`Assembler::finish`].
    pub(super) fn push(&mut self, addr: u64, cfa: CfaRule, rbp: RbpRule) {
        self.pushed += 1;
        let Some(off) = addr.checked_sub(self.base) else {
            return;
        };
        let Ok(start) = u32::try_from(off) else {
            self.too_far = self.too_far.max(Some(off));
            return;
        };
        self.place(start, cfa, rbp);
    }

    /// Adds a row at offset `start`, or merges it.
    fn place(&mut self, start: u32, cfa: CfaRule, rbp: RbpRule) {
        let n = self.rows.len();
        match self.rows.last_mut() {
            Some(last) if start < last.start => {}
            // An empty row (two rows at one address): the later rule holds there.
            Some(last) if start == last.start => {
                last.cfa = cfa;
                last.rbp = rbp;
                if n >= 2 && (self.rows[n - 2].cfa, self.rows[n - 2].rbp) == (cfa, rbp) {
                    self.rows.pop();
                }
            }
            Some(last) if (last.cfa, last.rbp) == (cfa, rbp) => {}
            _ => self.rows.push(UnwindRow { start, cfa, rbp }),
        }
    }

    /// A point to go back to with [`Assembler::rollback`].
    pub(super) fn mark(&self) -> usize {
        self.rows.len()
    }

    /// Drops the rows added since `mark` (rows only ever append, or replace a
    /// row at the same address, which a new FDE never starts at).
    pub(super) fn rollback(&mut self, mark: usize) {
        self.rows.truncate(mark);
    }

    /// Everything to go back to with [`Assembler::restore`]: unlike a
    /// [`Assembler::mark`], the count of rows pushed too, for rows that are
    /// to be pushed again (a program the fast decoder gave up on, run again
    /// with gimli's).
    pub(super) fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            rows: self.rows.len(),
            pushed: self.pushed,
            too_far: self.too_far,
        }
    }

    /// Forgets what was pushed since `checkpoint` (see [`Assembler::rollback`]
    /// for why truncating is enough).
    pub(super) fn restore(&mut self, checkpoint: Checkpoint) {
        self.rows.truncate(checkpoint.rows);
        self.pushed = checkpoint.pushed;
        self.too_far = checkpoint.too_far;
    }

    /// Appends the rows `next` assembled (same base, all its rows after this
    /// one's), as if they had been pushed here: the rows of an address range
    /// built on another thread. Its rows rise strictly and no two neighbours
    /// are equal, so only its first row can merge with this one's last (or
    /// replace it, at the same address), and whatever becomes of it, the row
    /// then last differs from its second: the rest are copied as they are.
    pub(super) fn append(&mut self, next: Assembler) {
        self.pushed += next.pushed;
        self.too_far = self.too_far.max(next.too_far);
        let Some((first, rest)) = next.rows.split_first() else {
            return;
        };
        self.place(first.start, first.cfa, first.rbp);
        self.rows.extend_from_slice(rest);
    }

    pub(super) fn finish(mut self, segments: Vec<LoadSegment>) -> Result<UnwindTable, TableError> {
        if let Some(span) = self.too_far {
            return Err(TableError::TooLarge { span });
        }
        self.rows.shrink_to_fit();
        Ok(UnwindTable {
            base: self.base,
            rows: self.rows,
            segments,
            raw_rows: self.pushed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_neighbours_merge_and_empty_rows_give_way() {
        let t = UnwindTable::from_rows(
            [
                (0x1000, CfaRule::Rsp(8), RbpRule::Same),
                (0x1001, CfaRule::Rsp(16), RbpRule::AtCfa(-16)),
                (0x1004, CfaRule::Rsp(16), RbpRule::AtCfa(-16)),
                (0x1010, CfaRule::Rsp(8), RbpRule::Same),
                // next function starts with the same rule: one row
                (0x1011, CfaRule::Rsp(8), RbpRule::Same),
                // an empty row then the real one at the same address
                (0x1020, CfaRule::Rsp(16), RbpRule::Same),
                (0x1020, CfaRule::Rsp(8), RbpRule::Same),
                (0x1030, CfaRule::NoInfo, RbpRule::Same),
            ],
            vec![],
        )
        .unwrap();
        let starts: Vec<u32> = t.rows().iter().map(|r| r.start).collect();
        assert_eq!(starts, [0, 1, 0x10, 0x30]);
        assert_eq!(t.raw_rows(), 8);
        assert_eq!(t.base(), 0x1000);
        assert_eq!(t.lookup(0xfff), None);
        assert_eq!(t.lookup(0x1003).map(|r| r.cfa), Some(CfaRule::Rsp(16)));
        assert_eq!(t.lookup(0x1025).map(|r| r.cfa), Some(CfaRule::Rsp(8)));
        assert_eq!(t.lookup(0x9999_9999).map(|r| r.cfa), Some(CfaRule::NoInfo));
    }

    proptest::proptest! {
        /// Rows assembled in two parts, the second appended, are the rows
        /// assembled in one (what joining the runs of threads relies on):
        /// merges and same-address replacements across the join included.
        #[test]
        fn rows_assembled_in_two_parts_then_appended_are_the_same(
            steps in proptest::collection::vec((0u64..3, 0u8..3, 0u8..2), 1..40),
            cut in 0usize..40,
        ) {
            let rules = [CfaRule::Rsp(8), CfaRule::Rsp(16), CfaRule::NoInfo];
            let rbps = [RbpRule::Same, RbpRule::AtCfa(-16)];
            let mut addr = 0x1000;
            let rows: Vec<(u64, CfaRule, RbpRule)> = steps
                .iter()
                .map(|&(step, c, r)| {
                    addr += step;
                    (addr, rules[usize::from(c)], rbps[usize::from(r)])
                })
                .collect();
            // a join falls between FDEs: the second part starts higher
            let joins: Vec<usize> = (0..=rows.len())
                .filter(|&c| c == 0 || c == rows.len() || rows[c].0 > rows[c - 1].0)
                .collect();
            let cut = joins[cut % joins.len()];
            let mut one = Assembler::new(0x1000, 0);
            for &(a, c, r) in &rows {
                one.push(a, c, r);
            }
            let (mut first, mut second) = (Assembler::new(0x1000, 0), Assembler::new(0x1000, 0));
            for &(a, c, r) in &rows[..cut] {
                first.push(a, c, r);
            }
            for &(a, c, r) in &rows[cut..] {
                second.push(a, c, r);
            }
            first.append(second);
            proptest::prop_assert_eq!(first.finish(vec![]).unwrap(), one.finish(vec![]).unwrap());
        }
    }

    #[test]
    fn more_than_4_gib_of_code_is_refused() {
        let r = UnwindTable::from_rows(
            [
                (0x1000, CfaRule::Rsp(8), RbpRule::Same),
                (0x1000 + (1 << 32), CfaRule::NoInfo, RbpRule::Same),
            ],
            vec![],
        );
        assert!(matches!(r, Err(TableError::TooLarge { span }) if span == 1 << 32));
    }

    #[test]
    fn file_offsets_map_to_vaddrs_through_segments() {
        let t = UnwindTable {
            segments: vec![
                LoadSegment {
                    file_offset: 0,
                    vaddr: 0,
                    file_size: 0x1234,
                    executable: false,
                },
                // text: mapped from file offset 0x1000 (the page below p_offset)
                LoadSegment {
                    file_offset: 0x1240,
                    vaddr: 0x2240,
                    file_size: 0x5000,
                    executable: true,
                },
            ],
            ..UnwindTable::default()
        };
        assert_eq!(t.vaddr(0x100), Some(0x100));
        assert_eq!(t.vaddr(0x1240), Some(0x2240));
        assert_eq!(t.vaddr(0x2000), Some(0x3000));
        // in the first segment's page but past its bytes: the text's page
        assert_eq!(t.vaddr(0x1238), Some(0x2238));
        assert_eq!(t.vaddr(0x9000), None);
        // the text mapping starts at file offset 0x1000, a page the first segment
        // shares: its bias comes from the text segment all the same
        let bias = t.bias(0x5555_0000_1000, 0x1000, 0x5000).unwrap();
        assert_eq!(0x2240u64.wrapping_add(bias), 0x5555_0000_1240);
        assert_eq!(t.bias(0x5555_0000_0000, 0, 0x1000), Some(0x5555_0000_0000));
    }
}
