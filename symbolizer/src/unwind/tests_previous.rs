//! The table builder as it was before it was made faster (commit 098677f: one
//! thread, gimli's instruction parser, every FDE parsed twice), kept verbatim as
//! the reference the faster builder must match row for row: the rows go to BPF,
//! so a speed-up may not change a single one. Compared on real objects (this
//! test binary, the libc it runs with, python3) here, and on the largest
//! objects of the bench machine on demand.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};

use gimli::{
    BaseAddresses, CallFrameInstruction, CallFrameInstructionIter, CieOrFde,
    CommonInformationEntry, EndianSlice, LittleEndian, Register, UnwindOffset, UnwindSection,
    X86_64,
};

use super::cfi::{classify, CfiSections};
use super::error::TableError;
use super::eval::{Cfa, Rule, State};
use super::table::{Assembler, CfaRule, LoadSegment, RbpRule, UnwindTable};

type Reader<'a> = EndianSlice<'a, LittleEndian>;

const UNSUPPORTED: (CfaRule, RbpRule) = (CfaRule::Unsupported, RbpRule::Same);

/// The previous `cfi::build`.
pub(super) fn build(
    sections: &CfiSections<'_>,
    segments: Vec<LoadSegment>,
) -> Result<UnwindTable, TableError> {
    let code: Vec<(u64, u64)> = segments
        .iter()
        .filter(|s| s.executable)
        .map(|s| (s.vaddr, s.vaddr.saturating_add(s.file_size)))
        .collect();
    let in_code = |addr: u64| code.is_empty() || code.iter().any(|&(s, e)| s <= addr && addr < e);
    let mut bases = BaseAddresses::default();
    if let Some(text) = sections.text {
        bases = bases.set_text(text);
    }
    if let Some(got) = sections.got {
        bases = bases.set_got(got);
    }
    if let Some((bytes, addr)) = sections.eh_frame {
        let mut section = gimli::EhFrame::new(bytes, LittleEndian);
        section.set_address_size(8);
        let mut bases = bases.clone().set_eh_frame(addr);
        if let Some(hdr) = sections.eh_frame_hdr {
            bases = bases.set_eh_frame_hdr(hdr);
        }
        let rows = bytes.len() / 5;
        match table_of(&section, &bases, &in_code, rows, &segments) {
            Err(TableError::NoCfi) => {}
            r => return r,
        }
    }
    if let Some(bytes) = sections.debug_frame {
        let mut section = gimli::DebugFrame::new(bytes, LittleEndian);
        section.set_address_size(8);
        return table_of(&section, &bases, &in_code, bytes.len() / 5, &segments);
    }
    Err(TableError::NoCfi)
}

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

type Cies<'a> =
    HashMap<usize, (CommonInformationEntry<Reader<'a>>, State), BuildHasherDefault<OffsetHasher>>;

fn cie<'a, S>(
    cies: &mut Cies<'a>,
    eval: &mut Evaluator,
    section: &S,
    bases: &BaseAddresses,
    offset: usize,
) -> gimli::Result<(CommonInformationEntry<Reader<'a>>, State)>
where
    S: UnwindSection<Reader<'a>>,
    S::Offset: UnwindOffset<usize>,
{
    if let Some(c) = cies.get(&offset) {
        return Ok(c.clone());
    }
    let c = section.cie_from_offset(bases, S::Offset::from(offset))?;
    let mut state = State::NONE;
    let factors = Factors {
        code: c.code_alignment_factor(),
        data: c.data_alignment_factor(),
    };
    let program = c.instructions(section, bases);
    if eval
        .run(program, 0, factors, &State::NONE, &mut state, |_, _| {})
        .is_err()
    {
        state = State::NONE;
    }
    cies.insert(offset, (c.clone(), state));
    Ok((c, state))
}

fn scan<'a, S>(
    section: &S,
    bases: &BaseAddresses,
    in_code: &dyn Fn(u64) -> bool,
    cies: &mut Cies<'a>,
    eval: &mut Evaluator,
) -> Vec<usize>
where
    S: UnwindSection<Reader<'a>>,
    S::Offset: UnwindOffset<usize>,
{
    let mut fdes = Vec::new();
    let mut entries = section.entries(bases);
    while let Ok(Some(entry)) = entries.next() {
        let CieOrFde::Fde(partial) = entry else {
            continue;
        };
        let offset = partial.offset();
        let parsed = partial.parse(|s, b, o| Ok(cie(cies, eval, s, b, UnwindOffset::into(o))?.0));
        let Ok(fde) = parsed else { continue };
        if in_code(fde.initial_address()) {
            fdes.push((fde.initial_address(), offset));
        }
    }
    fdes.sort_by_key(|f| f.0);
    fdes.into_iter().map(|f| f.1).collect()
}

fn table_of<'a, S>(
    section: &S,
    bases: &BaseAddresses,
    in_code: &dyn Fn(u64) -> bool,
    rows_estimate: usize,
    segments: &[LoadSegment],
) -> Result<UnwindTable, TableError>
where
    S: UnwindSection<Reader<'a>>,
    S::Offset: UnwindOffset<usize>,
{
    let mut cies: Cies<'a> = HashMap::default();
    let mut eval = Evaluator::default();
    let order = scan(section, bases, in_code, &mut cies, &mut eval);
    let mut table: Option<(Assembler, u64)> = None;
    for offset in order {
        let mut initial = State::NONE;
        let parsed = section.fde_from_offset(bases, S::Offset::from(offset), |s, b, o| {
            let (c, state) = cie(&mut cies, &mut eval, s, b, UnwindOffset::into(o))?;
            initial = state;
            Ok(c)
        });
        let Ok(fde) = parsed else { continue };
        let (start, end) = (fde.initial_address(), fde.end_address());
        if start >= end || !in_code(start) {
            continue;
        }
        let (a, last_end) = match &mut table {
            None => {
                let (a, last_end) = table.insert((Assembler::new(start, rows_estimate), start));
                (a, last_end)
            }
            Some((a, last_end)) => {
                if start < *last_end {
                    continue;
                }
                if start > *last_end {
                    a.push(*last_end, CfaRule::NoInfo, RbpRule::Same);
                }
                (a, last_end)
            }
        };
        *last_end = end;
        let mark = a.mark();
        let factors = Factors {
            code: fde.cie().code_alignment_factor(),
            data: fde.cie().data_alignment_factor(),
        };
        let mut state = initial;
        let program = fde.instructions(section, bases);
        let ran = eval.run(
            program,
            start,
            factors,
            &initial,
            &mut state,
            |addr, state| {
                if addr < end {
                    let (cfa, rbp) = classify(state, section);
                    a.push(addr, cfa, rbp);
                }
            },
        );
        if ran.is_err() {
            a.rollback(mark);
            a.push(start, UNSUPPORTED.0, UNSUPPORTED.1);
        }
    }
    let (mut a, last_end) = table.ok_or(TableError::NoCfi)?;
    a.push(last_end, CfaRule::NoInfo, RbpRule::Same);
    a.finish(segments.to_vec())
}

fn set(state: &mut State, register: Register, rule: Rule) {
    if register == X86_64::RA {
        state.ra = rule;
    } else if register == X86_64::RBP {
        state.rbp = rule;
    }
}

fn get(state: &State, register: Register) -> Rule {
    if register == X86_64::RA {
        state.ra
    } else if register == X86_64::RBP {
        state.rbp
    } else {
        Rule::Unset
    }
}

const MAX_REMEMBERED: usize = 16;

/// The previous `eval::Evaluator`.
#[derive(Debug, Default)]
struct Evaluator {
    remembered: Vec<State>,
}

#[derive(Debug, Clone, Copy)]
struct Factors {
    code: u64,
    data: i64,
}

impl Evaluator {
    fn run<R: gimli::Reader<Offset = usize>>(
        &mut self,
        mut program: CallFrameInstructionIter<'_, R>,
        start: u64,
        factors: Factors,
        initial: &State,
        state: &mut State,
        mut row: impl FnMut(u64, &State),
    ) -> gimli::Result<()> {
        use CallFrameInstruction as I;
        self.remembered.clear();
        let mut loc = start;
        let offset = |factored: i64| factored.wrapping_mul(factors.data);
        while let Some(instruction) = program.next()? {
            match instruction {
                I::SetLoc { address } => {
                    if address < loc {
                        return Err(gimli::Error::InvalidCfiSetLoc(address));
                    }
                    row(loc, state);
                    loc = address;
                }
                I::AdvanceLoc { delta } => {
                    row(loc, state);
                    let delta = u64::from(delta).wrapping_mul(factors.code);
                    loc = loc
                        .checked_add(delta)
                        .ok_or(gimli::Error::AddressOverflow)?;
                }
                I::DefCfa { register, offset } => {
                    state.cfa = Cfa::RegOffset(register, offset as i64);
                }
                I::DefCfaSf {
                    register,
                    factored_offset,
                } => state.cfa = Cfa::RegOffset(register, offset(factored_offset)),
                I::DefCfaRegister { register } => {
                    state.cfa = match state.cfa {
                        Cfa::RegOffset(_, o) => Cfa::RegOffset(register, o),
                        _ => Cfa::Invalid,
                    }
                }
                I::DefCfaOffset { offset } => {
                    state.cfa = match state.cfa {
                        Cfa::RegOffset(r, _) => Cfa::RegOffset(r, offset as i64),
                        _ => Cfa::Invalid,
                    }
                }
                I::DefCfaOffsetSf { factored_offset } => {
                    state.cfa = match state.cfa {
                        Cfa::RegOffset(r, _) => Cfa::RegOffset(r, offset(factored_offset)),
                        _ => Cfa::Invalid,
                    }
                }
                I::DefCfaExpression { expression } => state.cfa = Cfa::Expr(expression),
                I::Undefined { register } => set(state, register, Rule::Undefined),
                I::SameValue { register } => set(state, register, Rule::Same),
                I::Offset {
                    register,
                    factored_offset,
                } => set(
                    state,
                    register,
                    Rule::Offset(offset(factored_offset as i64)),
                ),
                I::OffsetExtendedSf {
                    register,
                    factored_offset,
                } => set(state, register, Rule::Offset(offset(factored_offset))),
                I::ValOffset { register, .. }
                | I::ValOffsetSf { register, .. }
                | I::ValExpression { register, .. }
                | I::Register {
                    dest_register: register,
                    ..
                } => set(state, register, Rule::Other),
                I::Expression {
                    register,
                    expression,
                } => set(state, register, Rule::Expr(expression)),
                I::Restore { register } => set(state, register, get(initial, register)),
                I::RememberState => {
                    if self.remembered.len() >= MAX_REMEMBERED {
                        return Err(gimli::Error::CfiInstructionInInvalidContext);
                    }
                    self.remembered.push(*state);
                }
                I::RestoreState => {
                    *state = self
                        .remembered
                        .pop()
                        .ok_or(gimli::Error::PopWithEmptyStack)?;
                }
                I::ArgsSize { .. } | I::NegateRaState | I::Nop => {}
            }
        }
        row(loc, state);
        Ok(())
    }
}

/// The table of the object at `path` built both ways must be the same: base,
/// every row (start, both rules), the rows before merging, the segments;
/// built now on as many threads as the machine gives (from the bytes in
/// memory and from the file), and in 1, 2, 3 and 7 runs whatever the machine.
pub(super) fn same_as_before(path: &Path) {
    let data = std::fs::read(path).unwrap();
    let (sections, segments) = super::elf::cfi_sections(&*data).unwrap();
    let before = build(&sections, segments.clone()).unwrap();
    let now = super::cfi::build(&sections, segments.clone()).unwrap();
    same(&now, &before, &path.display().to_string());
    // read from the file, not from memory
    let loaded = UnwindTable::load(path).unwrap();
    same(&loaded, &before, &format!("{}, loaded", path.display()));
    for most in [1, 2, 3, 7] {
        let threads = super::cfi::Threads { most, min_fdes: 1 };
        let now = super::cfi::build_with(&sections, segments.clone(), threads).unwrap();
        same(&now, &before, &format!("{}, {most} runs", path.display()));
    }
}

fn same(now: &UnwindTable, before: &UnwindTable, name: &str) {
    if let Some(i) =
        (0..now.len().max(before.len())).find(|&i| now.rows.get(i) != before.rows.get(i))
    {
        let around = |t: &UnwindTable| t.rows[i.saturating_sub(2)..(i + 3).min(t.len())].to_vec();
        panic!(
            "{name}: row {i} differs:\nnow    {:x?}\nbefore {:x?}",
            around(now),
            around(before)
        );
    }
    assert_eq!(now, before, "{name}");
}

/// The system's python3, when there is one (`None` says why not).
fn python3() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin/python3");
    match p.canonicalize() {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("{}: {e}: not compared", p.display());
            None
        }
    }
}

#[test]
fn the_builder_gives_the_previous_rows_on_real_objects() {
    same_as_before(&std::env::current_exe().unwrap());
    same_as_before(&super::tests_real::our_libc());
    if let Some(p) = python3() {
        same_as_before(&p);
    }
}

/// The largest objects of the machine the figures in benches/UNWIND_TABLES.md
/// come from (slow unoptimised, so on demand: `cargo test -p symbolizer
/// --release -- --ignored`).
#[test]
#[ignore]
fn the_builder_gives_the_previous_rows_on_large_objects() {
    for p in super::cfi::tests::large_objects() {
        same_as_before(&p);
    }
}

/// Hand-made FDEs of the shapes compilers emit, and a PLT one.
fn sample_fdes() -> Vec<(u64, u64, Vec<u8>)> {
    use super::cfi::tests::{op::*, plt_program};
    let frame = vec![advance(1), DEF_CFA_OFFSET, 16, offset(6), 2, advance(3)];
    let frame = [frame, vec![DEF_CFA_REGISTER, 6, 0x02, 40, DEF_CFA, 7, 8]].concat();
    let epilogue = vec![advance(4), REMEMBER_STATE, DEF_CFA_OFFSET, 8, advance(1)];
    let epilogue = [epilogue, vec![RESTORE_STATE, advance(2)]].concat();
    vec![
        (0x1000, 0x30, plt_program(11)),
        (0x1030, 0x40, frame.clone()),
        (0x1080, 0x20, epilogue),
        (0x10a0, 0x60, frame),
        (0x1090, 0x10, vec![]),
        (0x1200, 0x08, vec![UNDEFINED, 16]),
    ]
}

/// The first whole entries (up to 4 KiB) of this test binary's `.eh_frame`,
/// ended, and its address: CIEs as compilers write them ("zR", "zPLR",
/// pc-relative pointers), which the hand-made ones are not.
fn real_prefix() -> (Vec<u8>, u64) {
    static PREFIX: std::sync::OnceLock<(Vec<u8>, u64)> = std::sync::OnceLock::new();
    PREFIX.get_or_init(read_prefix).clone()
}

fn read_prefix() -> (Vec<u8>, u64) {
    let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    let (sections, _) = super::elf::cfi_sections(&*exe).unwrap();
    let (bytes, addr) = sections.eh_frame.unwrap();
    let mut end = 0;
    while let Some(len) = bytes.get(end..end + 4) {
        let len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
        let next = end + 4 + len;
        if len == 0 || len == u32::MAX as usize || next > 4096 {
            break;
        }
        end = next;
    }
    let mut prefix = bytes[..end].to_vec();
    prefix.extend([0; 4]);
    (prefix, addr)
}

#[test]
fn the_undamaged_samples_give_tables() {
    let bytes = super::cfi::tests::eh_frame(&sample_fdes());
    let (real, addr) = real_prefix();
    for (bytes, addr, rows) in [(&bytes, 0, 8), (&real, addr, 20)] {
        let sections = CfiSections {
            eh_frame: Some((bytes, addr)),
            ..CfiSections::default()
        };
        let t = build(&sections, vec![]).unwrap();
        assert!(t.len() >= rows, "{} rows", t.len());
        assert_eq!(super::cfi::build(&sections, vec![]).unwrap(), t);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 1024,
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Damaged CFI (bytes overwritten anywhere: lengths, pointers, encodings,
    /// programs) gives the same table, or the same error, as before, built in
    /// one run or in several.
    #[test]
    fn damaged_cfi_gives_what_it_gave_before(
        damage in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 1..6),
    ) {
        let (real, addr) = real_prefix();
        for (mut bytes, addr) in [(super::cfi::tests::eh_frame(&sample_fdes()), 0), (real, addr)] {
            for &(at, b) in &damage {
                let n = bytes.len();
                bytes[at % n] = b;
            }
            let sections = CfiSections {
                eh_frame: Some((&bytes, addr)),
                ..CfiSections::default()
            };
            let before = format!("{:?}", build(&sections, vec![]));
            for most in [1, 3] {
                let threads = super::cfi::Threads { most, min_fdes: 1 };
                let now = format!("{:?}", super::cfi::build_with(&sections, vec![], threads));
                proptest::prop_assert_eq!(&now, &before);
            }
        }
    }
}
