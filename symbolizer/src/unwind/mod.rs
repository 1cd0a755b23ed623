//! Unwinding copied user stacks with the objects' call frame information (DWARF
//! CFI from `.eh_frame`, and `.debug_frame` where present), for code built without
//! frame pointers.
//!
//! Each object's CFI is evaluated once into a sorted table of rows (address range
//! → how to find the CFA, the return address and the caller's rbp), so unwinding a
//! frame is a binary search and two reads from the copied stack. x86-64 only.
//!
//! [`table::UnwindTable`] is the format being introduced for both this walker and
//! the BPF unwinder; the walker below still uses its own rows until it moves over.

pub mod cache;
mod cfi;
mod elf;
mod error;
mod eval;
pub mod table;

pub use cache::{ObjectKey, TableCache};
pub use error::TableError;

use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use gimli::{CfaRule, RegisterRule, UnwindSection, X86_64};
use object::{Object, ObjectSection, ObjectSegment};

/// How the CFA (the caller's stack pointer) is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cfa {
    Sp(i32),
    Bp(i32),
    Unsupported,
}

/// Where a register's caller value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Unchanged from the callee.
    Same,
    /// Not recoverable: for the return address, the outermost frame.
    Undefined,
    /// Saved at CFA + n.
    AtCfa(i32),
    Unsupported,
}

#[derive(Debug, Clone, Copy)]
struct Row {
    start: u64,
    end: u64,
    cfa: Cfa,
    ra: Rule,
    bp: Rule,
}

/// The CFI of one object, ready for lookups by file offset.
#[derive(Debug, Default)]
pub struct ObjectCfi {
    rows: Vec<Row>,
    /// Loadable segments: (file offset, virtual address, size), to turn the file
    /// offsets that mappings give into the addresses CFI speaks of.
    segments: Vec<(u64, u64, u64)>,
}

fn convert_rule(rule: Option<RegisterRule<usize>>, default_same: bool) -> Rule {
    match rule {
        None if default_same => Rule::Same,
        None => Rule::Undefined,
        Some(RegisterRule::Undefined) => Rule::Undefined,
        Some(RegisterRule::SameValue) => Rule::Same,
        Some(RegisterRule::Offset(n)) => i32::try_from(n).map_or(Rule::Unsupported, Rule::AtCfa),
        Some(_) => Rule::Unsupported,
    }
}

fn collect_rows<'a, S: UnwindSection<gimli::EndianSlice<'a, gimli::LittleEndian>>>(
    section: &S,
    bases: &gimli::BaseAddresses,
    rows: &mut Vec<Row>,
) where
    S::Offset: gimli::UnwindOffset<usize>,
{
    let mut ctx = gimli::UnwindContext::new();
    let mut entries = section.entries(bases);
    while let Ok(Some(entry)) = entries.next() {
        let gimli::CieOrFde::Fde(partial) = entry else {
            continue;
        };
        let Ok(fde) = partial.parse(S::cie_from_offset) else {
            continue;
        };
        let Ok(mut table) = fde.rows(section, bases, &mut ctx) else {
            continue;
        };
        while let Ok(Some(row)) = table.next_row() {
            let cfa = match row.cfa() {
                CfaRule::RegisterAndOffset { register, offset } => {
                    let off = i32::try_from(*offset).ok();
                    match (*register, off) {
                        (X86_64::RSP, Some(o)) => Cfa::Sp(o),
                        (X86_64::RBP, Some(o)) => Cfa::Bp(o),
                        _ => Cfa::Unsupported,
                    }
                }
                CfaRule::Expression(_) => Cfa::Unsupported,
            };
            rows.push(Row {
                start: row.start_address(),
                end: row.end_address(),
                cfa,
                ra: convert_rule(row.register(X86_64::RA), false),
                bp: convert_rule(row.register(X86_64::RBP), true),
            });
        }
    }
}

impl ObjectCfi {
    /// Reads the CFI of the ELF file at `path`.
    pub fn load(path: &Path) -> Result<ObjectCfi, String> {
        let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        ObjectCfi::parse(&data).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Reads the CFI of an ELF image in memory.
    pub fn parse(data: &[u8]) -> Result<ObjectCfi, String> {
        let file = object::File::parse(data).map_err(|e| e.to_string())?;
        let segments = file
            .segments()
            .map(|s| {
                let (offset, size) = s.file_range();
                (offset, s.address(), size)
            })
            .collect();
        let mut rows = Vec::new();
        let text = file
            .section_by_name(".text")
            .map(|s| s.address())
            .unwrap_or(0);
        if let Some(eh) = file.section_by_name(".eh_frame") {
            let bytes = eh.data().map_err(|e| e.to_string())?;
            let section = gimli::EhFrame::new(bytes, gimli::LittleEndian);
            let mut bases = gimli::BaseAddresses::default()
                .set_eh_frame(eh.address())
                .set_text(text);
            if let Some(hdr) = file.section_by_name(".eh_frame_hdr") {
                bases = bases.set_eh_frame_hdr(hdr.address());
            }
            collect_rows(&section, &bases, &mut rows);
        }
        if let Some(df) = file.section_by_name(".debug_frame") {
            let bytes = df.data().map_err(|e| e.to_string())?;
            let section = gimli::DebugFrame::new(bytes, gimli::LittleEndian);
            let bases = gimli::BaseAddresses::default().set_text(text);
            collect_rows(&section, &bases, &mut rows);
        }
        rows.sort_by_key(|r| (r.start, r.end));
        rows.dedup_by_key(|r| r.start);
        rows.shrink_to_fit();
        Ok(ObjectCfi { rows, segments })
    }

    /// Number of table rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the object has no CFI at all.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn vaddr(&self, file_offset: u64) -> u64 {
        self.segments
            .iter()
            .find(|(off, _, size)| file_offset >= *off && file_offset < off + size)
            .map_or(file_offset, |(off, addr, _)| addr + (file_offset - off))
    }

    fn row(&self, file_offset: u64) -> Option<&Row> {
        let vaddr = self.vaddr(file_offset);
        let i = self
            .rows
            .partition_point(|r| r.start <= vaddr)
            .checked_sub(1)?;
        let r = &self.rows[i];
        (vaddr < r.end).then_some(r)
    }
}

/// The user registers a sample gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Regs {
    /// Instruction pointer.
    pub ip: u64,
    /// Stack pointer.
    pub sp: u64,
    /// Frame pointer (rbp).
    pub bp: u64,
}

/// Why unwinding stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The outermost frame was reached (return address undefined, or zero).
    Complete,
    /// The next value to read lies beyond the copied bytes.
    CutShort,
    /// No CFI covers a frame and frame pointers led nowhere.
    NoCfi,
    /// A rule flamebpf does not evaluate (an expression).
    Unsupported,
    /// The stack is deeper than the frame limit.
    TooDeep,
}

/// A copy of the top of a user stack: `bytes` were read from address `base`.
#[derive(Debug, Clone, Copy)]
pub struct StackCopy<'a> {
    /// Where the copy starts (the sampled stack pointer).
    pub base: u64,
    /// The bytes.
    pub bytes: &'a [u8],
}

impl StackCopy<'_> {
    fn read(&self, addr: u64) -> Option<u64> {
        let off = usize::try_from(addr.checked_sub(self.base)?).ok()?;
        let b = self.bytes.get(off..off.checked_add(8)?)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }
}

/// Unwinds a stack copy. `cfi(addr)` gives the CFI and the file offset of an
/// address (None for code no object covers, such as JIT code: there frame pointers
/// are tried). Returns the instruction pointers, leaf first, and why it stopped.
pub fn unwind(
    regs: Regs,
    stack: StackCopy<'_>,
    mut cfi: impl FnMut(u64) -> Option<(Rc<ObjectCfi>, u64)>,
    max_frames: usize,
) -> (Vec<u64>, End) {
    let mut frames = vec![regs.ip];
    let (mut pc, mut sp, mut bp) = (regs.ip, regs.sp, Some(regs.bp));
    loop {
        if frames.len() >= max_frames {
            return (frames, End::TooDeep);
        }
        // A caller's pc is a return address: the call is the byte before it.
        let lookup = if frames.len() == 1 {
            pc
        } else {
            pc.saturating_sub(1)
        };
        let row = cfi(lookup).and_then(|(c, off)| c.row(off).copied());
        let (next_pc, next_sp, next_bp) = match row {
            Some(row) => {
                let cfa = match row.cfa {
                    Cfa::Sp(o) => sp.wrapping_add_signed(i64::from(o)),
                    Cfa::Bp(o) => match bp {
                        Some(b) => b.wrapping_add_signed(i64::from(o)),
                        None => return (frames, End::Unsupported),
                    },
                    Cfa::Unsupported => return (frames, End::Unsupported),
                };
                let ra = match row.ra {
                    Rule::AtCfa(o) => match stack.read(cfa.wrapping_add_signed(i64::from(o))) {
                        Some(v) => v,
                        None => return (frames, End::CutShort),
                    },
                    Rule::Undefined => return (frames, End::Complete),
                    Rule::Same | Rule::Unsupported => return (frames, End::Unsupported),
                };
                let new_bp = match row.bp {
                    Rule::Same => bp,
                    Rule::AtCfa(o) => match stack.read(cfa.wrapping_add_signed(i64::from(o))) {
                        Some(v) => Some(v),
                        None => return (frames, End::CutShort),
                    },
                    Rule::Undefined | Rule::Unsupported => None,
                };
                (ra, cfa, new_bp)
            }
            None => {
                // No CFI here: a frame-pointer step, if rbp points into the copy.
                let Some(b) = bp.filter(|&b| b >= sp) else {
                    return (frames, End::NoCfi);
                };
                match (stack.read(b), stack.read(b.wrapping_add(8))) {
                    (Some(saved_bp), Some(ra)) => (ra, b.wrapping_add(16), Some(saved_bp)),
                    _ if stack.read(sp).is_some() => return (frames, End::NoCfi),
                    _ => return (frames, End::CutShort),
                }
            }
        };
        if next_pc == 0 {
            return (frames, End::Complete);
        }
        // The stack grows down: a caller's frame is never below its callee's.
        if next_sp <= sp && row.is_some() && frames.len() > 1 {
            return (frames, End::Unsupported);
        }
        frames.push(next_pc);
        pc = next_pc;
        sp = next_sp;
        bp = next_bp;
    }
}

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

/// Unwinds samples of a capture, loading each object's CFI once.
#[derive(Debug, Default)]
pub struct Unwinder {
    cfi: HashMap<crate::ObjectId, Option<Rc<ObjectCfi>>>,
    /// The unwinding outcomes so far.
    pub stats: UnwindStats,
    vdso: Option<Option<(crate::vdso::Vdso, Rc<ObjectCfi>)>>,
}

impl Unwinder {
    /// An unwinder with empty caches.
    pub fn new() -> Unwinder {
        Unwinder::default()
    }

    fn object_cfi(
        &mut self,
        tracker: &crate::Tracker,
        object: crate::ObjectId,
    ) -> Option<Rc<ObjectCfi>> {
        use crate::objects::ObjectKind;
        let obj = tracker.objects.get(object);
        match obj.kind {
            ObjectKind::Anonymous => None,
            ObjectKind::Vdso => {
                let v = self.vdso.get_or_insert_with(|| {
                    let vdso = crate::vdso::Vdso::load().ok()?;
                    let cfi = ObjectCfi::load(&vdso.path()).ok()?;
                    Some((vdso, Rc::new(cfi)))
                });
                v.as_ref().map(|(_, c)| Rc::clone(c))
            }
            ObjectKind::File => self
                .cfi
                .entry(object)
                .or_insert_with(|| {
                    obj.read_path()
                        .and_then(|p| ObjectCfi::load(&p).ok())
                        .map(Rc::new)
                })
                .clone(),
        }
    }

    /// Unwinds one sample of `pid` taken at `time`, with the mappings live then.
    pub fn unwind(
        &mut self,
        tracker: &crate::Tracker,
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
                let cfi = self.object_cfi(tracker, r.object)?;
                Some((cfi, r.offset))
            },
            crate::unwind::MAX_FRAMES,
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

/// Registers and a copy of up to `bytes` of the stack, taken where this is called,
/// as the BPF program takes them from a sampled thread: for tests and benchmarks of
/// the unwinder. Reads go through /proc/self/mem, which fails instead of faulting
/// past the end of the stack; shorter copies are tried as in the BPF program.
#[inline(never)]
pub fn snapshot_here(bytes: usize) -> (Regs, Vec<u8>) {
    let (ip, sp, bp): (u64, u64, u64);
    // SAFETY: reads three registers into locals.
    unsafe {
        std::arch::asm!("lea {ip}, [rip]", "mov {sp}, rsp", "mov {bp}, rbp", ip = out(reg) ip, sp = out(reg) sp, bp = out(reg) bp);
    }
    use std::os::unix::fs::FileExt;
    let mut copy = vec![0u8; bytes];
    let mut len = copy.len();
    if let Ok(mem) = std::fs::File::open("/proc/self/mem") {
        while len > 0 && mem.read_exact_at(&mut copy[..len], sp).is_err() {
            len /= 2;
        }
    } else {
        len = 0;
    }
    copy.truncate(len);
    (Regs { ip, sp, bp }, copy)
}

/// The deepest user stack kept, as with frame pointers.
pub const MAX_FRAMES: usize = 127;

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-made table for a three-function program at 0x1000.. (vaddr = file
    /// offset): leaf without a frame (CFA = rsp+8), middle with a frame pointer
    /// (CFA = rbp+16, rbp saved at CFA-16), outer whose return address is undefined.
    fn table() -> Rc<ObjectCfi> {
        let row = |start, end, cfa, ra, bp| Row {
            start,
            end,
            cfa,
            ra,
            bp,
        };
        Rc::new(ObjectCfi {
            rows: vec![
                row(0x1000, 0x1100, Cfa::Sp(8), Rule::AtCfa(-8), Rule::Same),
                row(
                    0x2000,
                    0x2100,
                    Cfa::Bp(16),
                    Rule::AtCfa(-8),
                    Rule::AtCfa(-16),
                ),
                row(0x3000, 0x3100, Cfa::Sp(8), Rule::Undefined, Rule::Same),
            ],
            segments: vec![],
        })
    }

    fn stack(base: u64, words: &[(u64, u64)]) -> Vec<u8> {
        let len = words.iter().map(|(a, _)| a - base + 8).max().unwrap_or(0);
        let mut b = vec![0u8; len as usize];
        for &(a, v) in words {
            let o = (a - base) as usize;
            b[o..o + 8].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    #[test]
    fn unwinds_frameless_and_frame_pointer_functions_to_the_outermost() {
        let t = table();
        let base = 0x7fff_0000;
        // leaf at 0x1010, sp = base: its return address (into middle) at base
        // middle's frame: rbp = base+0x20; saved rbp at base+0x20, ra at base+0x28
        let bytes = stack(
            base,
            &[(base, 0x2050), (base + 0x20, 0xdead), (base + 0x28, 0x3010)],
        );
        let (frames, end) = unwind(
            Regs {
                ip: 0x1010,
                sp: base,
                bp: base + 0x20,
            },
            StackCopy {
                base,
                bytes: &bytes,
            },
            |a| Some((t.clone(), a)),
            127,
        );
        assert_eq!(frames, [0x1010, 0x2050, 0x3010]);
        assert_eq!(end, End::Complete);
    }

    #[test]
    fn a_copy_too_short_cuts_the_stack_and_says_so() {
        let t = table();
        let base = 0x7fff_0000;
        let bytes = stack(base, &[(base, 0x2050)]); // middle's frame was not copied
        let (frames, end) = unwind(
            Regs {
                ip: 0x1010,
                sp: base,
                bp: base + 0x20,
            },
            StackCopy {
                base,
                bytes: &bytes,
            },
            |a| Some((t.clone(), a)),
            127,
        );
        assert_eq!(frames, [0x1010, 0x2050]);
        assert_eq!(end, End::CutShort);
    }

    #[test]
    fn code_without_cfi_falls_back_to_frame_pointers() {
        let t = table();
        let base = 0x7fff_0000;
        // JIT code at 0x9000 with a frame: rbp = base+0x10 → saved rbp, ra = 0x3010
        let bytes = stack(base, &[(base + 0x10, 0), (base + 0x18, 0x3010)]);
        let (frames, end) = unwind(
            Regs {
                ip: 0x9000,
                sp: base,
                bp: base + 0x10,
            },
            StackCopy {
                base,
                bytes: &bytes,
            },
            |a| (a < 0x8000).then(|| (t.clone(), a)),
            127,
        );
        assert_eq!(frames, [0x9000, 0x3010]);
        assert_eq!(end, End::Complete);
    }

    #[test]
    fn the_frame_limit_is_kept() {
        let t = Rc::new(ObjectCfi {
            rows: vec![Row {
                start: 0x1000,
                end: 0x1100,
                cfa: Cfa::Sp(8),
                ra: Rule::AtCfa(-8),
                bp: Rule::Same,
            }],
            segments: vec![],
        });
        let base = 0x7fff_0000;
        // a recursion: every frame returns into 0x1010
        let words: Vec<(u64, u64)> = (0..300).map(|i| (base + 8 * i, 0x1010)).collect();
        let bytes = stack(base, &words);
        let (frames, end) = unwind(
            Regs {
                ip: 0x1010,
                sp: base,
                bp: 0,
            },
            StackCopy {
                base,
                bytes: &bytes,
            },
            |a| Some((t.clone(), a)),
            127,
        );
        assert_eq!(frames.len(), 127);
        assert_eq!(end, End::TooDeep);
    }

    #[inline(never)]
    fn caller_of_the_snapshot() -> (Regs, Vec<u8>) {
        let r = snapshot_here(16384);
        std::hint::black_box(r)
    }

    #[test]
    fn unwinds_a_snapshot_of_this_very_stack() {
        let (regs, bytes) = caller_of_the_snapshot();
        let mut tracker = crate::Tracker::new();
        tracker.snapshot(std::process::id()).unwrap();
        let mut u = Unwinder::new();
        let (frames, _end) = u.unwind(
            &tracker,
            std::process::id(),
            u64::MAX,
            regs,
            StackCopy {
                base: regs.sp,
                bytes: &bytes,
            },
        );
        assert!(frames.len() >= 3, "{frames:x?}");
        // name the frames: the snapshot, its caller, this test, in that order
        let exe = std::env::current_exe().unwrap();
        let s = crate::Symbolizer::new(crate::symbolize::Options::default());
        let mut names = Vec::new();
        for (i, &pc) in frames.iter().enumerate() {
            let lookup = if i == 0 { pc } else { pc - 1 };
            if let Some(r) = tracker.resolve(std::process::id(), lookup) {
                if tracker.objects.get(r.object).path == exe.to_str().unwrap() {
                    let f = s.object(&exe, &[r.offset]).unwrap();
                    names.extend(f[0].iter().map(|f| f.name.clone()));
                }
            }
        }
        let pos = |n: &str| {
            names
                .iter()
                .position(|x| x.ends_with(n))
                .unwrap_or_else(|| panic!("{n} in {names:?}"))
        };
        assert!(pos("snapshot_here") < pos("caller_of_the_snapshot"));
        assert!(pos("caller_of_the_snapshot") < pos("unwinds_a_snapshot_of_this_very_stack"));
        assert_eq!(
            u.stats.complete + u.stats.cut_short + u.stats.failed + u.stats.too_deep,
            1
        );
    }

    #[test]
    fn our_own_binary_has_cfi_for_this_function() {
        let exe = std::env::current_exe().unwrap();
        let cfi = ObjectCfi::load(&exe).unwrap();
        assert!(cfi.len() > 1000, "{} rows", cfi.len());
        // find this function's file offset through our own mappings
        let addr = our_own_binary_has_cfi_for_this_function as *const () as usize as u64;
        let maps = crate::procmaps::read(std::process::id()).unwrap();
        let m = maps
            .iter()
            .find(|m| m.start <= addr && addr < m.end)
            .unwrap();
        assert!(cfi.row(addr - m.start + m.offset).is_some());
    }
}
