//! The first pass over a CFI section: the FDEs that describe code, in address
//! order, with what the second pass needs to run each one's program without
//! parsing the FDE again — its CIE (parsed and evaluated once) and, for
//! `.eh_frame` entries of the usual layout, where its instructions lie, so that
//! [`super::eval::Evaluator::run_bytes`] can read them straight from the
//! section.
//!
//! Of FDEs that overlap (broken or duplicated CFI, or BOLT's zero-length
//! copies) the first by address, then by position in the section, is kept;
//! empty ones are dropped. What is left tiles the code in order, so the second
//! pass can split it anywhere and build the pieces on several threads. The
//! FDEs are parsed and sorted on several threads too.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use gimli::{
    constants, BaseAddresses, CieOrFde, CommonInformationEntry, EndianSlice, LittleEndian,
    UnwindOffset, UnwindSection,
};

use super::cfi::Threads;
use super::eval::{uleb, Evaluator, Factors, State};

pub(super) type Reader<'a> = EndianSlice<'a, LittleEndian>;

/// A CIE, parsed, with the rules its initial instructions set.
pub(super) struct Cie<'a> {
    pub cie: CommonInformationEntry<Reader<'a>>,
    /// The rules before an FDE's first instruction, and what DW_CFA_restore
    /// goes back to.
    pub state: State,
    pub factors: Factors,
    /// How its FDEs' headers are laid out, where the fast path knows.
    layout: Option<Layout>,
}

/// The layout of the header of an `.eh_frame` FDE after its length and CIE
/// pointer: the initial address and the address range, `size` bytes each,
/// then, with a `z` augmentation, the augmentation data's length (ULEB128) and
/// the data; the instructions follow, up to the end of the entry.
#[derive(Debug, Clone, Copy)]
struct Layout {
    size: usize,
    signed: bool,
    z: bool,
}

/// An FDE that describes code.
#[derive(Debug, Clone, Copy)]
pub(super) struct Fde {
    /// First address described.
    pub start: u64,
    /// First address past it.
    pub end: u64,
    /// Where the FDE is in the section, for gimli to parse it again when the
    /// fast decoder cannot run its program.
    pub offset: usize,
    /// Index of its CIE in [`Fdes::cies`].
    pub cie: u32,
    /// Its instructions, `program_len` bytes at section offset `program_at`;
    /// `program_len` is [`NO_PROGRAM`] where the header's layout is not the
    /// usual one (and for `.debug_frame`).
    program_at: u32,
    program_len: u32,
}

const NO_PROGRAM: u32 = u32::MAX;

impl Fde {
    /// The bytes of its instructions, when the fast decoder may read them.
    pub fn program<'a>(&self, section: Option<&'a [u8]>) -> Option<&'a [u8]> {
        if self.program_len == NO_PROGRAM {
            return None;
        }
        let at = self.program_at as usize;
        section?.get(at..at + self.program_len as usize)
    }

    /// A measure of the work its rows take, to split the list evenly.
    pub fn weight(&self) -> u64 {
        match self.program_len {
            NO_PROGRAM => 16,
            n => u64::from(n) + 4,
        }
    }
}

/// The FDEs of a section that describe code, by address, and their CIEs.
pub(super) struct Fdes<'a> {
    pub cies: Vec<Cie<'a>>,
    pub list: Vec<Fde>,
}

/// Hashes section offsets (few CIEs, looked up once per FDE): SipHash's
/// resistance to chosen keys buys nothing here and cost 5% of a build.
#[derive(Debug, Default, Clone, Copy)]
struct OffsetHasher(u64);

impl Hasher for OffsetHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// The CIEs met so far, by offset; the last one found is checked first (FDEs
/// come in runs that share a CIE).
struct CieCache<'a> {
    all: Vec<Cie<'a>>,
    by_offset: HashMap<usize, u32, BuildHasherDefault<OffsetHasher>>,
    last: Option<(usize, u32)>,
}

impl<'a> CieCache<'a> {
    /// The index of the CIE at `offset`, parsed, evaluated and added if new.
    /// A CIE that fails to parse is not remembered: its FDEs fail with it.
    fn get<S>(
        &mut self,
        eval: &mut Evaluator,
        section: &S,
        bytes: Option<&'a [u8]>,
        bases: &BaseAddresses,
        offset: usize,
    ) -> gimli::Result<u32>
    where
        S: UnwindSection<Reader<'a>>,
        S::Offset: UnwindOffset<usize>,
    {
        if let Some((o, i)) = self.last {
            if o == offset {
                return Ok(i);
            }
        }
        let i = match self.by_offset.get(&offset) {
            Some(&i) => i,
            None => {
                let cie = section.cie_from_offset(bases, S::Offset::from(offset))?;
                let mut state = State::NONE;
                let factors = Factors {
                    code: cie.code_alignment_factor(),
                    data: cie.data_alignment_factor(),
                };
                let program = cie.instructions(section, bases);
                if eval
                    .run(program, 0, factors, &State::NONE, &mut state, |_, _| {})
                    .is_err()
                {
                    state = State::NONE;
                }
                let layout = bytes.and_then(|b| layout(b, &cie));
                let i = u32::try_from(self.all.len())
                    .map_err(|_| gimli::Error::OffsetOutOfBounds(offset as u64))?;
                self.all.push(Cie {
                    cie,
                    state,
                    factors,
                    layout,
                });
                self.by_offset.insert(offset, i);
                i
            }
        };
        self.last = Some((offset, i));
        Ok(i)
    }
}

/// The FDEs of `section` whose first address `in_code` accepts, by address,
/// overlapping and empty ones left out (see the module's doc). `bytes` is the
/// section's bytes where it is `.eh_frame`, whose FDEs the fast decoder reads.
///
/// The walk over the entries is one thread's (an entry's length says where
/// the next starts); parsing the FDEs and sorting them, most of the work, is
/// split into runs of FDEs parsed and sorted on threads of their own, the
/// sorted runs then merged.
pub(super) fn scan<'a, S>(
    section: &S,
    bytes: Option<&'a [u8]>,
    bases: &BaseAddresses,
    in_code: &(dyn Fn(u64) -> bool + Sync),
    threads: Threads,
) -> Fdes<'a>
where
    S: UnwindSection<Reader<'a>> + Sync,
    S::Offset: UnwindOffset<usize>,
{
    let mut offsets = Vec::new();
    let mut entries = section.entries(bases);
    // A malformed entry ends the walk: its length cannot be trusted to find the next.
    while let Ok(Some(entry)) = entries.next() {
        if let CieOrFde::Fde(partial) = entry {
            offsets.push(partial.offset());
        }
    }
    let n = threads.most.min(offsets.len() / threads.min_fdes.max(1));
    let per_run = offsets.len().div_ceil(n.max(1)).max(1);
    let mut runs = offsets.chunks(per_run);
    let first = runs.next().unwrap_or_default();
    let parse = |run| parse(section, bytes, bases, in_code, run);
    let parts: Vec<Fdes<'a>> = std::thread::scope(|scope| {
        let others: Vec<_> = runs
            .map(|run| {
                // no thread to be had: parse the run here, after the first
                std::thread::Builder::new()
                    .spawn_scoped(scope, move || parse(run))
                    .map_err(|_| run)
            })
            .collect();
        let mut parts = vec![parse(first)];
        for other in others {
            parts.push(match other {
                Ok(handle) => handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                Err(run) => parse(run),
            });
        }
        parts
    });
    merge(parts)
}

/// The FDEs at `offsets` (in section order) whose first address `in_code`
/// accepts, sorted by address, with the CIEs they point to.
fn parse<'a, S>(
    section: &S,
    bytes: Option<&'a [u8]>,
    bases: &BaseAddresses,
    in_code: &dyn Fn(u64) -> bool,
    offsets: &[usize],
) -> Fdes<'a>
where
    S: UnwindSection<Reader<'a>>,
    S::Offset: UnwindOffset<usize>,
{
    let mut cies = CieCache {
        all: Vec::new(),
        by_offset: HashMap::default(),
        last: None,
    };
    let mut eval = Evaluator::default();
    let mut list = super::huge::vec(offsets.len());
    for &offset in offsets {
        let mut index = 0;
        let parsed = section.fde_from_offset(bases, S::Offset::from(offset), |s, b, o| {
            index = cies.get(&mut eval, s, bytes, b, UnwindOffset::into(o))?;
            Ok(cies.all[index as usize].cie.clone())
        });
        let Ok(fde) = parsed else { continue };
        let start = fde.initial_address();
        if !in_code(start) {
            continue;
        }
        let (program_at, program_len) = bytes
            .zip(cies.all[index as usize].layout)
            .and_then(|(b, layout)| program(b, offset, layout, fde.len()))
            .unwrap_or((0, NO_PROGRAM));
        list.push(Fde {
            start,
            end: fde.end_address(),
            offset,
            cie: index,
            program_at,
            program_len,
        });
    }
    sort(&mut list);
    Fdes {
        cies: cies.all,
        list,
    }
}

/// One list of the sorted `parts` (of FDEs in section order, part after
/// part), their CIEs in one list too; FDEs that start together come in
/// section order, and the overlapping and empty ones are dropped.
fn merge(parts: Vec<Fdes<'_>>) -> Fdes<'_> {
    let mut cies = Vec::new();
    let mut list: Option<Vec<Fde>> = None;
    for mut p in parts {
        // a CIE index fits u32: so did each part's (CieCache::get)
        let base = cies.len() as u32;
        cies.append(&mut p.cies);
        if base > 0 {
            p.list.iter_mut().for_each(|f| f.cie += base);
        }
        list = Some(match list {
            None => p.list,
            Some(before) => merge_two(&before, &p.list),
        });
    }
    let mut list = list.unwrap_or_default();
    let mut last_end = None;
    list.retain(|f| {
        let keep = f.start < f.end && last_end.is_none_or(|e| f.start >= e);
        if keep {
            last_end = Some(f.end);
        }
        keep
    });
    Fdes { cies, list }
}

/// The FDEs of `a` and `b`, both sorted, `b`'s all later in the section, in
/// one sorted list: of FDEs that start together, `a`'s come first.
fn merge_two(a: &[Fde], b: &[Fde]) -> Vec<Fde> {
    let mut out = super::huge::vec(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while let (Some(x), Some(y)) = (a.get(i), b.get(j)) {
        if y.start < x.start {
            out.push(*y);
            j += 1;
        } else {
            out.push(*x);
            i += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// Sorts FDEs, listed in section order, by first address, those that start
/// together left in section order. BOLT and hot/cold splitting leave them out
/// of order (libLLVM: 160k FDEs, a descent every 6), and sorting the 40-byte
/// records themselves took 8 ms: this sorts 8-byte keys, the address (less
/// the lowest) above the index, then gathers the records.
fn sort(list: &mut Vec<Fde>) {
    const INDEX_BITS: u32 = 24;
    if list.is_sorted_by_key(|f| f.start) {
        return;
    }
    let min = list.iter().map(|f| f.start).min().unwrap_or(0);
    let max = list.iter().map(|f| f.start).max().unwrap_or(0);
    if list.len() >= 1 << INDEX_BITS || (max - min) >> (64 - INDEX_BITS) != 0 {
        // keys would not fit: sort the records (offsets differ, so unstable is enough)
        list.sort_unstable_by_key(|f| (f.start, f.offset));
        return;
    }
    let mut keys: Vec<u64> = (0u64..)
        .zip(list.iter())
        .map(|(i, f)| ((f.start - min) << INDEX_BITS) | i)
        .collect();
    keys.sort_unstable();
    let mut sorted = super::huge::vec(list.len());
    sorted.extend(
        keys.iter()
            .map(|&k| list[(k & ((1 << INDEX_BITS) - 1)) as usize]),
    );
    *list = sorted;
}

/// The layout of the FDEs of `cie`, an `.eh_frame` CIE of the usual kind: a
/// 32-bit entry whose augmentation is none or starts with `z`, addresses in a
/// fixed-size encoding. `None` for anything else (gimli then parses).
fn layout(bytes: &[u8], cie: &CommonInformationEntry<Reader<'_>>) -> Option<Layout> {
    let at = cie.offset();
    // length, CIE id, version, then the augmentation string
    let length = u32::from_le_bytes(*bytes.get(at..)?.first_chunk::<4>()?);
    if length == u32::MAX {
        return None;
    }
    let z = match *bytes.get(at + 9)? {
        b'z' => true,
        0 => false,
        _ => return None,
    };
    if z != cie.augmentation().is_some() {
        return None;
    }
    let address = usize::from(cie.address_size());
    let (size, signed) = match cie.fde_address_encoding() {
        None => (address, false),
        Some(e) => match e.format() {
            constants::DW_EH_PE_absptr => (address, false),
            constants::DW_EH_PE_udata2 => (2, false),
            constants::DW_EH_PE_udata4 => (4, false),
            constants::DW_EH_PE_udata8 => (8, false),
            constants::DW_EH_PE_sdata2 => (2, true),
            constants::DW_EH_PE_sdata4 => (4, true),
            constants::DW_EH_PE_sdata8 => (8, true),
            _ => return None,
        },
    };
    (size <= 8).then_some(Layout { size, signed, z })
}

/// Where the instructions of the FDE at `offset` lie: `(at, len)`. `range` is
/// the address range gimli read: the one read here must be the same, a check
/// that the layout is the one gimli saw.
fn program(bytes: &[u8], offset: usize, layout: Layout, range: u64) -> Option<(u32, u32)> {
    let length = u32::from_le_bytes(*bytes.get(offset..)?.first_chunk::<4>()?);
    if length == u32::MAX {
        return None;
    }
    let end = offset.checked_add(4)?.checked_add(length as usize)?;
    let entry = bytes.get(..end)?;
    let mut at = offset + 8 + layout.size;
    let field = entry.get(at..at + layout.size)?;
    let mut raw = [0u8; 8];
    raw[..layout.size].copy_from_slice(field);
    let mut value = u64::from_le_bytes(raw);
    let bits = 8 * layout.size as u32;
    if layout.signed && bits < 64 {
        // sign-extend, as gimli reads sdataN
        value = (((value << (64 - bits)) as i64) >> (64 - bits)) as u64;
    }
    if value != range {
        return None;
    }
    at += layout.size;
    if layout.z {
        let mut rest = entry.get(at..)?;
        let n = uleb(&mut rest).ok()?;
        at = (end - rest.len()).checked_add(usize::try_from(n).ok()?)?;
    }
    if at > end {
        return None;
    }
    Some((u32::try_from(at).ok()?, u32::try_from(end - at).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorting_keeps_fdes_that_start_together_in_section_order() {
        // addresses that fit in a key, and ones spread too far for it
        for spread in [1u64, 1 << 50] {
            let starts = [5u64, 3, 5, 1, 3, 9, 5, 0].map(|s| s * spread);
            let mut list: Vec<Fde> = (0..)
                .zip(starts)
                .map(|(offset, start)| Fde {
                    start,
                    end: start + 1,
                    offset,
                    cie: 0,
                    program_at: 0,
                    program_len: NO_PROGRAM,
                })
                .collect();
            let mut want = list.clone();
            want.sort_by_key(|f| f.start);
            sort(&mut list);
            let order = |l: &[Fde]| l.iter().map(|f| (f.start, f.offset)).collect::<Vec<_>>();
            assert_eq!(order(&list), order(&want));
        }
    }
}
