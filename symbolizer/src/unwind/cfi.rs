//! Evaluating an object's call frame information (`.eh_frame`, or `.debug_frame`)
//! into [`UnwindTable`] rows: each FDE's program is run ([`super::eval`]), every
//! row reduced to the few rules a table expresses ([`classify`]), and the FDEs
//! laid out by address with [`CfaRule::NoInfo`] rows in the gaps between them.
//!
//! Speed matters (libLLVM has 160k FDEs and 1.4M rows, and a build should
//! stay under 100 ms): a first pass ([`super::fdes`]) parses each FDE header
//! once (each CIE once a thread) and sorts the FDEs by address (BOLT leaves
//! them out of order); the second runs every program straight into the table,
//! so no intermediate rows are stored, its instructions decoded by
//! [`Evaluator::run_bytes`] where they are the usual ones, by gimli otherwise.
//! Both passes split the FDEs into runs on up to [`MAX_THREADS`] threads
//! ([`Threads`]); the rows are the same on any number.

use std::ops::Range;
use std::sync::OnceLock;

use gimli::{BaseAddresses, LittleEndian, UnwindOffset, UnwindSection, X86_64};

use super::error::TableError;
use super::eval::{Cfa, Evaluator, Rule, State};
use super::fdes::{scan, Cie, Fde, Reader};
use super::table::{
    Assembler, CfaRule, LoadSegment, RbpRule, UnwindTable, SIGNAL_RBP, SIGNAL_RIP, SIGNAL_RSP,
};

/// The CFI sections of an object, as found in its ELF file.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct CfiSections<'a> {
    /// `.eh_frame`: bytes and address.
    pub eh_frame: Option<(&'a [u8], u64)>,
    /// Address of `.eh_frame_hdr` (for pointers encoded relative to it).
    pub eh_frame_hdr: Option<u64>,
    /// `.debug_frame` bytes.
    pub debug_frame: Option<&'a [u8]>,
    /// Address of `.text` (for text-relative pointers).
    pub text: Option<u64>,
    /// Address of `.got` (for data-relative pointers).
    pub got: Option<u64>,
}

const UNSUPPORTED: (CfaRule, RbpRule) = (CfaRule::Unsupported, RbpRule::Same);

/// Builds the table of an object from its CFI sections: `.eh_frame`, or
/// `.debug_frame` when `.eh_frame` describes no code. FDEs whose start lies
/// outside every executable segment are left out (`.debug_frame` keeps FDEs of
/// functions the linker discarded, at address 0); with no executable segment
/// (a hand-made object) all are kept.
pub(super) fn build(
    sections: &CfiSections<'_>,
    segments: Vec<LoadSegment>,
) -> Result<UnwindTable, TableError> {
    build_with(sections, segments, Threads::available())
}

/// [`build`], with as many threads as `threads` allows.
pub(super) fn build_with(
    sections: &CfiSections<'_>,
    segments: Vec<LoadSegment>,
    threads: Threads,
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
        // an estimate from the objects measured (5 to 8 bytes of .eh_frame a row)
        let rows = bytes.len() / 5;
        match table_of(
            &section,
            Some(bytes),
            &bases,
            &in_code,
            rows,
            &segments,
            threads,
        ) {
            Err(TableError::NoCfi) => {}
            r => return r,
        }
    }
    if let Some(bytes) = sections.debug_frame {
        let mut section = gimli::DebugFrame::new(bytes, LittleEndian);
        section.set_address_size(8);
        let rows = bytes.len() / 5;
        return table_of(&section, None, &bases, &in_code, rows, &segments, threads);
    }
    Err(TableError::NoCfi)
}

/// Most threads one build takes: the rows of the largest objects come in
/// under 100 ms with two, and more would take cores from the process being
/// profiled for little gain.
const MAX_THREADS: usize = 4;

/// Fewest FDEs worth a thread of their own (python3.11 has 10k, libc 3k):
/// starting one costs tens of microseconds.
const MIN_FDES_PER_THREAD: usize = 2048;

/// Splits `fdes` into at most `n` runs of about equal work, none empty.
fn split(fdes: &[Fde], n: usize) -> Vec<Range<usize>> {
    let total: u64 = fdes.iter().map(Fde::weight).sum();
    let mut runs = Vec::with_capacity(n);
    let (mut from, mut sum) = (0, 0);
    for (i, f) in fdes.iter().enumerate() {
        sum += f.weight();
        // the k-th run ends once the weight reaches k/n of the total
        if runs.len() + 1 < n && sum * n as u64 >= total * (runs.len() as u64 + 1) {
            runs.push(from..i + 1);
            from = i + 1;
        }
    }
    if from < fdes.len() {
        runs.push(from..fdes.len());
    }
    runs
}

/// How many threads a build may take, and the fewest FDEs worth one.
#[derive(Debug, Clone, Copy)]
pub(super) struct Threads {
    pub most: usize,
    pub min_fdes: usize,
}

impl Threads {
    /// What [`build`] takes: the CPUs this process may run on, at most
    /// [`MAX_THREADS`] (read once: it reads the cgroup's CPU quota), and a
    /// thread for every [`MIN_FDES_PER_THREAD`] FDEs.
    fn available() -> Threads {
        static MOST: OnceLock<usize> = OnceLock::new();
        let most = *MOST.get_or_init(|| {
            std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS))
        });
        Threads {
            most,
            min_fdes: MIN_FDES_PER_THREAD,
        }
    }
}

/// The table of one CFI section. [`TableError::NoCfi`] when no FDE describes
/// code. A NoInfo row goes where an FDE ends and the next does not
/// start, and after the last, so that no pc takes the rule of a function it is
/// not in. Large sections are split into runs of FDEs built on threads of
/// their own, then joined: the same rows as one thread's, as the runs tile
/// the code in order (see [`super::fdes`]) and rows merge across a join just
/// as they do within a run.
fn table_of<'a, S>(
    section: &S,
    bytes: Option<&'a [u8]>,
    bases: &BaseAddresses,
    in_code: &(dyn Fn(u64) -> bool + Sync),
    rows_estimate: usize,
    segments: &[LoadSegment],
    threads: Threads,
) -> Result<UnwindTable, TableError>
where
    S: UnwindSection<Reader<'a>> + Sync,
    S::Offset: UnwindOffset<usize>,
{
    let fdes = scan(section, bytes, bases, in_code, threads);
    let (Some(first), Some(last)) = (fdes.list.first(), fdes.list.last()) else {
        return Err(TableError::NoCfi);
    };
    let (base, last_end) = (first.start, last.end);
    let n = threads.most.min(fdes.list.len() / threads.min_fdes.max(1));
    let runs = split(&fdes.list, n.max(1));
    let run = Run {
        section,
        bytes,
        bases,
        cies: &fdes.cies,
        base,
    };
    let list = &fdes.list;
    let share = |r: &Range<usize>| rows_estimate.saturating_mul(r.len()) / list.len() + 64;
    let mut a = std::thread::scope(|scope| {
        let mut others = Vec::new();
        for r in runs.iter().skip(1) {
            // the end of the FDE before the run, for the NoInfo row of a gap
            let prev_end = r.start.checked_sub(1).map(|i| list[i].end);
            let job = move || run.rows(&list[r.clone()], prev_end, share(r));
            // no thread to be had: build the run here, after the first
            match std::thread::Builder::new().spawn_scoped(scope, job) {
                Ok(handle) => others.push(Ok(handle)),
                Err(_) => others.push(Err((r, prev_end))),
            }
        }
        let mut a = run.rows(&list[runs[0].clone()], None, rows_estimate);
        for other in others {
            let b = match other {
                Ok(handle) => handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                Err((r, prev_end)) => run.rows(&list[r.clone()], prev_end, share(r)),
            };
            a.append(b);
        }
        a
    });
    a.push(last_end, CfaRule::NoInfo, RbpRule::Same);
    a.finish(segments.to_vec())
}

/// What building the rows of a run of FDEs needs; shared by the threads.
struct Run<'s, 'a, S> {
    section: &'s S,
    bytes: Option<&'a [u8]>,
    bases: &'s BaseAddresses,
    cies: &'s [Cie<'a>],
    base: u64,
}

impl<S> Clone for Run<'_, '_, S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for Run<'_, '_, S> {}

impl<'a, S> Run<'_, 'a, S>
where
    S: UnwindSection<Reader<'a>>,
    S::Offset: UnwindOffset<usize>,
{
    /// The rows of `fdes`, in a table of `capacity` rows; `prev_end` is where
    /// the FDE before them ends (none before the first).
    fn rows(&self, fdes: &[Fde], mut prev_end: Option<u64>, capacity: usize) -> Assembler {
        let mut a = Assembler::new(self.base, capacity);
        let mut eval = Evaluator::default();
        for f in fdes {
            if let Some(e) = prev_end.filter(|&e| f.start > e) {
                a.push(e, CfaRule::NoInfo, RbpRule::Same);
            }
            prev_end = Some(f.end);
            self.run(f, &mut a, &mut eval);
        }
        a
    }

    /// Runs the program of `fde` into `a`: decoded here where it can be,
    /// else (or where that gives up) by gimli.
    fn run(&self, fde: &Fde, a: &mut Assembler, eval: &mut Evaluator) {
        let Some(cie) = self.cies.get(fde.cie as usize) else {
            return;
        };
        let (start, end) = (fde.start, fde.end);
        let section = self.section;
        // rows past the end would overrun the next FDE
        let push = |a: &mut Assembler, addr: u64, state: &State| {
            if addr < end {
                let (cfa, rbp) = classify(state, section);
                a.push(addr, cfa, rbp);
            }
        };
        if let Some(program) = fde.program(self.bytes) {
            let checkpoint = a.checkpoint();
            let mut state = cie.state;
            let fast = eval.run_bytes(
                program,
                start,
                cie.factors,
                &cie.state,
                &mut state,
                |at, s| push(a, at, s),
            );
            if fast.is_ok() {
                return;
            }
            a.restore(checkpoint);
        }
        let mark = a.mark();
        let parsed = section.fde_from_offset(self.bases, S::Offset::from(fde.offset), |_, _, _| {
            Ok(cie.cie.clone())
        });
        let ran = parsed.and_then(|f| {
            let mut state = cie.state;
            let program = f.instructions(section, self.bases);
            eval.run(
                program,
                start,
                cie.factors,
                &cie.state,
                &mut state,
                |at, s| push(a, at, s),
            )
        });
        if ran.is_err() {
            // A program that fails part way says nothing reliable about any of
            // the function: one Unsupported row for it all, not a gap that would
            // send the walker to frame pointers in code that may not keep them.
            a.rollback(mark);
            a.push(start, UNSUPPORTED.0, UNSUPPORTED.1);
        }
    }
}

/// Reduces the columns of a row to a table rule.
pub(super) fn classify<'a, S: UnwindSection<Reader<'a>>>(
    state: &State,
    section: &S,
) -> (CfaRule, RbpRule) {
    let State { cfa, ra, rbp } = *state;
    if ra == Rule::Undefined {
        return (CfaRule::EndOfStack, RbpRule::Same);
    }
    let ra_at_cfa = ra == Rule::Offset(-8);
    match cfa {
        Cfa::RegOffset(register, offset) => {
            let Ok(offset) = i32::try_from(offset) else {
                return UNSUPPORTED;
            };
            let cfa = match register {
                X86_64::RSP => CfaRule::Rsp(offset),
                X86_64::RBP => CfaRule::Rbp(offset),
                _ => return UNSUPPORTED,
            };
            if !ra_at_cfa {
                return UNSUPPORTED;
            }
            let rbp = match rbp {
                Rule::Unset | Rule::Same => RbpRule::Same,
                Rule::Undefined => RbpRule::Undefined,
                Rule::Offset(n) => {
                    let Ok(n) = i32::try_from(n) else {
                        return UNSUPPORTED;
                    };
                    match cfa {
                        // The slot is below rsp: rbp was popped already.
                        CfaRule::Rsp(o) if i64::from(o) + i64::from(n) < 0 => RbpRule::Same,
                        _ => RbpRule::AtCfa(n),
                    }
                }
                Rule::Expr(_) | Rule::Other => return UNSUPPORTED,
            };
            (cfa, rbp)
        }
        Cfa::Expr(e) => {
            let Ok(expr) = e.get(section) else {
                return UNSUPPORTED;
            };
            let bytes = expr.0.slice();
            if let Some(threshold) = plt_threshold(bytes) {
                if ra_at_cfa && matches!(rbp, Rule::Unset | Rule::Same) {
                    return (CfaRule::Plt { threshold }, RbpRule::Same);
                }
                return UNSUPPORTED;
            }
            let at_rsp_plus = |rule: Rule, want: u64| match rule {
                Rule::Expr(e) => e
                    .get(section)
                    .is_ok_and(|x| rsp_plus(x.0.slice()) == Some(want)),
                _ => false,
            };
            if signal_cfa(bytes) && at_rsp_plus(ra, SIGNAL_RIP) && at_rsp_plus(rbp, SIGNAL_RBP) {
                return (CfaRule::Signal, RbpRule::Same);
            }
            UNSUPPORTED
        }
        Cfa::Invalid => UNSUPPORTED,
    }
}

const DW_OP_BREG7: u8 = 0x77;
const DW_OP_BREG16: u8 = 0x80;
const DW_OP_DEREF: u8 = 0x06;
const DW_OP_LIT0: u8 = 0x30;
const DW_OP_LIT31: u8 = 0x4f;

/// The `N` of the PLT expression GNU ld writes for `.plt`:
/// `DW_OP_breg7 8; DW_OP_breg16 0; DW_OP_lit15; DW_OP_and; DW_OP_litN; DW_OP_ge;
/// DW_OP_lit3; DW_OP_shl; DW_OP_plus`, that is rsp + 8 + ((rip & 15) >= N) * 8.
pub(super) fn plt_threshold(expr: &[u8]) -> Option<u8> {
    match *expr {
        [DW_OP_BREG7, 0x08, DW_OP_BREG16, 0x00, 0x3f, 0x1a, lit, 0x2a, 0x33, 0x24, 0x22]
            if (DW_OP_LIT0..=DW_OP_LIT31).contains(&lit) =>
        {
            Some(lit - DW_OP_LIT0)
        }
        _ => None,
    }
}

/// Whether the CFA expression is glibc's `__restore_rt` one: `DW_OP_breg7
/// SIGNAL_RSP; DW_OP_deref` (the CFA is the interrupted rsp in the ucontext).
fn signal_cfa(expr: &[u8]) -> bool {
    expr.split_last()
        .is_some_and(|(&last, head)| last == DW_OP_DEREF && rsp_plus(head) == Some(SIGNAL_RSP))
}

/// `n` of an expression that is exactly `DW_OP_breg7 n` (the address rsp + n).
fn rsp_plus(expr: &[u8]) -> Option<u64> {
    let (&op, mut rest) = expr.split_first()?;
    if op != DW_OP_BREG7 {
        return None;
    }
    let n = sleb128(&mut rest)?;
    if !rest.is_empty() {
        return None;
    }
    u64::try_from(n).ok()
}

fn sleb128(bytes: &mut &[u8]) -> Option<i64> {
    let mut value: i64 = 0;
    let mut shift = 0;
    loop {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        if shift >= 63 {
            return None;
        }
        value |= i64::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            if shift < 64 && b & 0x40 != 0 {
                value |= -1i64 << shift;
            }
            return Some(value);
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    //! Hand-assembled `.eh_frame` sections: a CIE like GCC's and FDEs with the
    //! programs given, so the builder is tested on bytes, not on gimli's view.

    use super::*;
    use gimli::CieOrFde;

    /// DW_CFA instructions, for building FDE programs by hand.
    pub mod op {
        pub const NOP: u8 = 0x00;
        pub const DEF_CFA: u8 = 0x0c;
        pub const DEF_CFA_REGISTER: u8 = 0x0d;
        pub const DEF_CFA_OFFSET: u8 = 0x0e;
        pub const DEF_CFA_EXPRESSION: u8 = 0x0f;
        pub const UNDEFINED: u8 = 0x07;
        pub const EXPRESSION: u8 = 0x10;
        pub const REMEMBER_STATE: u8 = 0x0a;
        pub const RESTORE_STATE: u8 = 0x0b;
        /// DW_CFA_advance_loc by `n` < 64.
        pub fn advance(n: u8) -> u8 {
            0x40 | n
        }
        /// DW_CFA_offset: register `r` saved at CFA + 8 * -`n`.
        pub fn offset(r: u8) -> u8 {
            0x80 | r
        }
    }

    /// An `.eh_frame` with one CIE (CFA = rsp + 8, return address at CFA - 8,
    /// absolute 8-byte addresses) and FDEs `(start, length, program)`.
    pub fn eh_frame(fdes: &[(u64, u64, Vec<u8>)]) -> Vec<u8> {
        let mut s = Vec::new();
        let entry = |s: &mut Vec<u8>, body: Vec<u8>| {
            let mut body = body;
            while !(body.len() + 4).is_multiple_of(8) {
                body.push(op::NOP);
            }
            s.extend_from_slice(&(body.len() as u32).to_le_bytes());
            s.extend_from_slice(&body);
        };
        // id 0, version 1, no augmentation, code align 1, data align -8, RA r16
        let mut cie = vec![0, 0, 0, 0, 1, 0, 1, 0x78, 16];
        cie.extend_from_slice(&[op::DEF_CFA, 7, 8, op::offset(16), 1]);
        entry(&mut s, cie);
        for (start, len, program) in fdes {
            let cie_pointer = (s.len() + 4) as u32;
            let mut body = cie_pointer.to_le_bytes().to_vec();
            body.extend_from_slice(&start.to_le_bytes());
            body.extend_from_slice(&len.to_le_bytes());
            body.extend_from_slice(program);
            entry(&mut s, body);
        }
        s.extend_from_slice(&[0, 0, 0, 0]);
        s
    }

    /// The table of a hand-made `.eh_frame` (at address 0, no segments).
    pub fn table(fdes: &[(u64, u64, Vec<u8>)]) -> UnwindTable {
        let bytes = eh_frame(fdes);
        let sections = CfiSections {
            eh_frame: Some((&bytes, 0)),
            ..CfiSections::default()
        };
        build(&sections, vec![]).unwrap()
    }

    /// The PLT CFA expression with threshold `n`, as a DW_CFA_def_cfa_expression.
    pub fn plt_program(n: u8) -> Vec<u8> {
        vec![
            op::DEF_CFA_EXPRESSION,
            11,
            0x77,
            8,
            0x80,
            0,
            0x3f,
            0x1a,
            0x30 + n,
            0x2a,
            0x33,
            0x24,
            0x22,
        ]
    }

    /// glibc's `__restore_rt` program: CFA = *(rsp + 160), rbp and rip in the
    /// ucontext at rsp.
    pub fn signal_program() -> Vec<u8> {
        vec![
            op::DEF_CFA_EXPRESSION,
            4,
            0x77,
            0xa0,
            0x01,
            0x06,
            op::EXPRESSION,
            6,
            3,
            0x77,
            0xf8,
            0x00,
            op::EXPRESSION,
            7,
            3,
            0x77,
            0xa0,
            0x01,
            op::EXPRESSION,
            16,
            3,
            0x77,
            0xa8,
            0x01,
        ]
    }

    fn rules(t: &UnwindTable) -> Vec<(u64, CfaRule, RbpRule)> {
        t.rows()
            .iter()
            .map(|r| (t.base() + u64::from(r.start), r.cfa, r.rbp))
            .collect()
    }

    #[test]
    fn sleb128_reads_what_glibc_writes() {
        assert_eq!(sleb128(&mut &[0xa0, 0x01][..]), Some(160));
        assert_eq!(sleb128(&mut &[0xf8, 0x00][..]), Some(120));
        assert_eq!(sleb128(&mut &[0x78][..]), Some(-8));
        assert_eq!(sleb128(&mut &[0x80][..]), None);
    }

    #[test]
    fn gcc_prologue_and_epilogue_rows() {
        use op::*;
        // push rbp; mov rbp,rsp; ...; pop rbp; ret
        let t = table(&[(
            0x1000,
            0x12,
            vec![
                advance(1),
                DEF_CFA_OFFSET,
                16,
                offset(6),
                2,
                advance(3),
                DEF_CFA_REGISTER,
                6,
                advance(13),
                DEF_CFA,
                7,
                8,
            ],
        )]);
        assert_eq!(
            rules(&t),
            [
                (0x1000, CfaRule::Rsp(8), RbpRule::Same),
                (0x1001, CfaRule::Rsp(16), RbpRule::AtCfa(-16)),
                (0x1004, CfaRule::Rbp(16), RbpRule::AtCfa(-16)),
                // GCC keeps "rbp at CFA-16" after pop rbp: the slot is below rsp
                (0x1011, CfaRule::Rsp(8), RbpRule::Same),
                (0x1012, CfaRule::NoInfo, RbpRule::Same),
            ]
        );
        assert_eq!(t.raw_rows(), 5);
    }

    #[test]
    fn gaps_between_fdes_get_no_info_and_adjacent_fdes_merge() {
        let t = table(&[
            (0x2000, 0x10, vec![]),
            // listed out of order, and adjacent to the first
            (0x1000, 0x1000, vec![]),
            (0x3000, 0x10, vec![op::UNDEFINED, 16]),
        ]);
        assert_eq!(
            rules(&t),
            [
                (0x1000, CfaRule::Rsp(8), RbpRule::Same),
                (0x2010, CfaRule::NoInfo, RbpRule::Same),
                (0x3000, CfaRule::EndOfStack, RbpRule::Same),
                (0x3010, CfaRule::NoInfo, RbpRule::Same),
            ]
        );
    }

    #[test]
    fn plt_and_signal_expressions_are_recognised_by_their_bytes() {
        let mut other_expression = plt_program(11);
        other_expression[7] = 0x1b; // DW_OP_div instead of DW_OP_and
        let t = table(&[
            (0x1000, 0x10, plt_program(11)),
            (0x1010, 0x10, plt_program(10)),
            (0x1020, 0x10, other_expression),
            (0x1030, 0x10, signal_program()),
        ]);
        assert_eq!(
            rules(&t),
            [
                (0x1000, CfaRule::Plt { threshold: 11 }, RbpRule::Same),
                (0x1010, CfaRule::Plt { threshold: 10 }, RbpRule::Same),
                (0x1020, CfaRule::Unsupported, RbpRule::Same),
                (0x1030, CfaRule::Signal, RbpRule::Same),
                (0x1040, CfaRule::NoInfo, RbpRule::Same),
            ]
        );
    }

    #[test]
    fn rules_a_table_cannot_express_are_unsupported() {
        use op::*;
        let t = table(&[
            // CFA in rbx
            (0x1000, 0x10, vec![DEF_CFA_REGISTER, 3]),
            // return address at CFA-16
            (0x1010, 0x10, vec![offset(16), 2]),
            // rbp given by an expression (DW_OP_breg6 0)
            (0x1020, 0x10, vec![EXPRESSION, 6, 2, 0x76, 0]),
            // remember/restore state around an epilogue: rows come back
            (
                0x1030,
                0x10,
                vec![
                    advance(1),
                    DEF_CFA_OFFSET,
                    16,
                    advance(1),
                    REMEMBER_STATE,
                    DEF_CFA_OFFSET,
                    8,
                    advance(1),
                    RESTORE_STATE,
                ],
            ),
        ]);
        assert_eq!(
            rules(&t),
            [
                (0x1000, CfaRule::Unsupported, RbpRule::Same),
                (0x1030, CfaRule::Rsp(8), RbpRule::Same),
                (0x1031, CfaRule::Rsp(16), RbpRule::Same),
                (0x1032, CfaRule::Rsp(8), RbpRule::Same),
                (0x1033, CfaRule::Rsp(16), RbpRule::Same),
                (0x1040, CfaRule::NoInfo, RbpRule::Same),
            ]
        );
    }

    #[test]
    fn no_fde_is_no_cfi() {
        let bytes = eh_frame(&[]);
        let sections = CfiSections {
            eh_frame: Some((&bytes, 0)),
            ..CfiSections::default()
        };
        assert!(matches!(build(&sections, vec![]), Err(TableError::NoCfi)));
        assert!(matches!(
            build(&CfiSections::default(), vec![]),
            Err(TableError::NoCfi)
        ));
    }

    /// The table as gimli's own evaluator sees the CFI: every FDE run with
    /// `UnwindTable::next_row`, the rows classified and laid out as the builder
    /// does. The reference the faster evaluator must agree with.
    fn gimli_reference(sections: &CfiSections<'_>, segments: Vec<LoadSegment>) -> UnwindTable {
        use gimli::{RegisterRule, UnwindContext};
        let (bytes, addr) = sections.eh_frame.unwrap();
        let mut section = gimli::EhFrame::new(bytes, LittleEndian);
        section.set_address_size(8);
        let mut bases = BaseAddresses::default().set_eh_frame(addr);
        if let Some(hdr) = sections.eh_frame_hdr {
            bases = bases.set_eh_frame_hdr(hdr);
        }
        let code: Vec<(u64, u64)> = segments
            .iter()
            .filter(|s| s.executable)
            .map(|s| (s.vaddr, s.vaddr + s.file_size))
            .collect();
        let rule = |r: Option<RegisterRule<usize>>| match r {
            None => Rule::Unset,
            Some(RegisterRule::Undefined) => Rule::Undefined,
            Some(RegisterRule::SameValue) => Rule::Same,
            Some(RegisterRule::Offset(n)) => Rule::Offset(n),
            Some(RegisterRule::Expression(e)) => Rule::Expr(e),
            Some(_) => Rule::Other,
        };
        let mut ctx = UnwindContext::new();
        let mut fdes = Vec::new();
        let mut entries = section.entries(&bases);
        while let Ok(Some(entry)) = entries.next() {
            let CieOrFde::Fde(partial) = entry else {
                continue;
            };
            let Ok(fde) = partial.parse(gimli::EhFrame::cie_from_offset) else {
                continue;
            };
            let (start, end) = (fde.initial_address(), fde.end_address());
            if start >= end || !code.iter().any(|&(s, e)| s <= start && start < e) {
                continue;
            }
            let mut rows = Vec::new();
            let ok = match fde.rows(&section, &bases, &mut ctx) {
                Ok(mut table) => loop {
                    match table.next_row() {
                        Ok(Some(row)) if row.start_address() < end => {
                            let state = State {
                                cfa: match row.cfa() {
                                    gimli::CfaRule::RegisterAndOffset { register, offset } => {
                                        Cfa::RegOffset(*register, *offset)
                                    }
                                    gimli::CfaRule::Expression(e) => Cfa::Expr(*e),
                                },
                                ra: rule(row.register(X86_64::RA)),
                                rbp: rule(row.register(X86_64::RBP)),
                            };
                            let (cfa, rbp) = classify(&state, &section);
                            rows.push((row.start_address(), cfa, rbp));
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => break true,
                        Err(_) => break false,
                    }
                },
                Err(_) => false,
            };
            if !ok {
                rows = vec![(start, UNSUPPORTED.0, UNSUPPORTED.1)];
            }
            fdes.push((start, end, rows));
        }
        fdes.sort_by_key(|f| (f.0, f.1));
        let mut laid = Vec::new();
        let mut last_end: Option<u64> = None;
        for (start, end, rows) in fdes {
            if let Some(e) = last_end {
                if start < e {
                    continue;
                }
                if start > e {
                    laid.push((e, CfaRule::NoInfo, RbpRule::Same));
                }
            }
            laid.extend(rows);
            last_end = Some(end);
        }
        let end = last_end.unwrap();
        laid.push((end, CfaRule::NoInfo, RbpRule::Same));
        UnwindTable::from_rows(laid, segments).unwrap()
    }

    /// Equal tables, or a panic showing where they part.
    fn assert_same(a: &UnwindTable, b: &UnwindTable, what: &str) {
        assert_eq!(a.base(), b.base(), "{what}: base");
        let at = |t: &UnwindTable, i: usize| {
            t.rows()
                .get(i)
                .map(|r| (t.base() + u64::from(r.start), r.cfa, r.rbp))
        };
        if let Some(i) = (0..a.len().max(b.len())).find(|&i| at(a, i) != at(b, i)) {
            let around = |t: &UnwindTable| {
                (i.saturating_sub(2)..i + 3)
                    .map(|j| at(t, j))
                    .collect::<Vec<_>>()
            };
            panic!(
                "{what}: row {i} differs:\n{:x?}\n{:x?}",
                around(a),
                around(b)
            );
        }
    }

    fn agrees_with_gimli(path: &std::path::Path) {
        let data = std::fs::read(path).unwrap();
        let (sections, segments) = super::super::elf::cfi_sections(&*data).unwrap();
        let ours = build(&sections, segments.clone()).unwrap();
        let reference = gimli_reference(&sections, segments.clone());
        let name = path.display().to_string();
        assert_same(&ours, &reference, &format!("{name}, gimli"));
    }

    #[test]
    fn the_fast_evaluator_agrees_with_gimli_on_real_objects() {
        agrees_with_gimli(&std::env::current_exe().unwrap());
        agrees_with_gimli(&super::super::tests_real::our_libc());
    }

    /// The biggest objects of the machine the figures in
    /// benches/UNWIND_TABLES.md come from, those present.
    pub fn large_objects() -> Vec<std::path::PathBuf> {
        let lib = "/root/.rustup/toolchains/1.95.0-x86_64-unknown-linux-gnu/lib";
        let mut paths: Vec<std::path::PathBuf> = std::fs::read_dir(lib)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        paths.retain(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("librustc_driver-") || name.starts_with("libLLVM.so")
        });
        paths.extend(["/usr/bin/node", "/usr/bin/python3.11"].map(std::path::PathBuf::from));
        paths.retain(|p| p.exists());
        paths
    }

    /// The same on the biggest objects (slow unoptimised, so on demand:
    /// `cargo test -p symbolizer --release -- --ignored`).
    #[test]
    #[ignore]
    fn the_fast_evaluator_agrees_with_gimli_on_large_objects() {
        for p in large_objects() {
            agrees_with_gimli(&p);
        }
    }
}
