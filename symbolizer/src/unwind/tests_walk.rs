//! The walker on hand-made tables: small programs are executed instruction by
//! instruction on a simulated stack, and a sample taken at every instruction
//! boundary must unwind to the right callers. The tables come from hand-assembled
//! `.eh_frame` bytes written as GCC writes them, so the builder is checked too.

use super::cfi::tests::{op, plt_program, signal_program, table};
use super::*;

/// Where the simulated stack lives.
const STACK: u64 = 0x7ff0_0000;
const STACK_LEN: u64 = 0x1000;
/// The frame of `X` (a frame-pointer function at 0x5000 that called the code
/// under test from 0x5005), whose caller `O` (at 0x6000, the outermost
/// frame: return address undefined) called it from 0x6005.
const X_FRAME: u64 = STACK + 0xf80;
/// Where the code under test is entered: the return address into X is there.
const ENTRY_SP: u64 = STACK + 0xf00;

#[derive(Debug, Clone, Copy)]
enum Op {
    PushRbp,
    PopRbp,
    MovRbpRsp,
    SubRsp(u64),
    AddRsp(u64),
    /// Use rbp as a general register.
    SetRbp(u64),
    Nop,
    Ret,
}

struct Machine {
    sp: u64,
    bp: u64,
    mem: Vec<u8>,
}

impl Machine {
    /// X's frame set up and a call into the code under test made.
    fn entered() -> Machine {
        let mut m = Machine {
            sp: ENTRY_SP,
            bp: X_FRAME,
            mem: vec![0xcc; STACK_LEN as usize],
        };
        m.write(X_FRAME, 0);
        m.write(X_FRAME + 8, 0x6005);
        m.write(ENTRY_SP, 0x5005);
        m
    }

    fn write(&mut self, addr: u64, v: u64) {
        let o = (addr - STACK) as usize;
        self.mem[o..o + 8].copy_from_slice(&v.to_le_bytes());
    }

    fn read(&self, addr: u64) -> u64 {
        let o = (addr - STACK) as usize;
        u64::from_le_bytes(self.mem[o..o + 8].try_into().unwrap())
    }

    fn exec(&mut self, op: Op) {
        match op {
            Op::PushRbp => {
                self.sp -= 8;
                self.write(self.sp, self.bp);
            }
            Op::PopRbp => {
                self.bp = self.read(self.sp);
                self.sp += 8;
            }
            Op::MovRbpRsp => self.bp = self.sp,
            Op::SubRsp(n) => self.sp -= n,
            Op::AddRsp(n) => self.sp += n,
            Op::SetRbp(v) => self.bp = v,
            Op::Nop | Op::Ret => {}
        }
    }

    /// Unwinds a sample at `ip`, the copy starting at sp as the BPF program takes it.
    fn sample(&self, t: &UnwindTable, ip: u64) -> (Vec<u64>, End) {
        let regs = Regs {
            ip,
            sp: self.sp,
            bp: self.bp,
        };
        let copy = StackCopy {
            base: self.sp,
            bytes: &self.mem[(self.sp - STACK) as usize..],
        };
        unwind(regs, copy, |a| t.lookup(a).map(|r| (r.cfa, r.rbp)), 127)
    }
}

/// Runs `code` (instruction lengths and effects) from `start`, sampling before
/// each instruction, up to and including the `ret`.
fn every_instruction(
    t: &UnwindTable,
    mut m: Machine,
    start: u64,
    code: &[(u64, Op)],
    callers: &[u64],
) {
    let mut ip = start;
    for &(len, op) in code {
        let (frames, end) = m.sample(t, ip);
        let mut want = vec![ip];
        want.extend_from_slice(callers);
        assert_eq!(frames, want, "at {ip:#x} before {op:?}");
        assert_eq!(end, End::Complete, "at {ip:#x} before {op:?}");
        m.exec(op);
        ip += len;
    }
}

/// `push rbp; mov rbp,rsp; sub rsp,0x20; ...; add rsp,0x20; pop rbp; ret` at 0x1000.
const WITH_FRAME: [(u64, Op); 7] = [
    (1, Op::PushRbp),
    (3, Op::MovRbpRsp),
    (4, Op::SubRsp(0x20)),
    (4, Op::Nop),
    (4, Op::AddRsp(0x20)),
    (1, Op::PopRbp),
    (1, Op::Ret),
];

fn with_frame_cfi() -> (u64, u64, Vec<u8>) {
    use op::*;
    let program = vec![
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
    ];
    (0x1000, 0x12, program)
}

/// Frameless at 0x2000, rbp saved and used as a general register:
/// `push rbp; sub rsp,0x28; mov ebp,1; ...; add rsp,0x28; pop rbp; ret`.
const FRAMELESS: [(u64, Op); 7] = [
    (1, Op::PushRbp),
    (4, Op::SubRsp(0x28)),
    (5, Op::SetRbp(1)),
    (4, Op::Nop),
    (4, Op::AddRsp(0x28)),
    (1, Op::PopRbp),
    (1, Op::Ret),
];

fn frameless_cfi() -> (u64, u64, Vec<u8>) {
    use op::*;
    let program = vec![
        advance(1),
        DEF_CFA_OFFSET,
        16,
        offset(6),
        2,
        advance(4),
        DEF_CFA_OFFSET,
        56,
        advance(13),
        DEF_CFA_OFFSET,
        16,
        advance(1),
        DEF_CFA_OFFSET,
        8,
    ];
    (0x2000, 0x14, program)
}

/// X (CFA = rbp + 16) and O (outermost).
fn callers_cfi() -> [(u64, u64, Vec<u8>); 2] {
    use op::*;
    [
        (0x5000, 0x100, vec![DEF_CFA, 6, 16, offset(6), 2]),
        (0x6000, 0x100, vec![UNDEFINED, 16]),
    ]
}

fn program_table(extra: &[(u64, u64, Vec<u8>)]) -> UnwindTable {
    let mut fdes = vec![with_frame_cfi(), frameless_cfi()];
    fdes.extend(callers_cfi());
    fdes.extend_from_slice(extra);
    table(&fdes)
}

#[test]
fn a_frame_pointer_function_unwinds_at_every_instruction() {
    let t = program_table(&[]);
    every_instruction(
        &t,
        Machine::entered(),
        0x1000,
        &WITH_FRAME,
        &[0x5005, 0x6005],
    );
}

#[test]
fn a_frameless_function_unwinds_at_every_instruction() {
    let t = program_table(&[]);
    every_instruction(
        &t,
        Machine::entered(),
        0x2000,
        &FRAMELESS,
        &[0x5005, 0x6005],
    );
}

#[test]
fn a_plt_stub_unwinds_on_both_sides_of_the_threshold() {
    use op::*;
    // PLT0 at 0x3000 (push [GOT+8]; jmp [GOT+16]), entries of 16 bytes after it
    // (jmp [GOT+n]; push n; jmp PLT0): the index is pushed from offset 11 on.
    let mut program = vec![
        DEF_CFA_OFFSET,
        16,
        advance(6),
        DEF_CFA_OFFSET,
        24,
        advance(10),
    ];
    program.extend(plt_program(11));
    let t = program_table(&[(0x3000, 0x40, program)]);
    assert_eq!(
        t.lookup(0x3025).map(|r| r.cfa),
        Some(CfaRule::Plt { threshold: 11 })
    );
    let mut m = Machine::entered();
    // entry 2 at 0x3020: jmp at +0, push at +6; +10 is the last byte before the threshold
    for ip in [0x3020, 0x3026, 0x302a] {
        assert_eq!(m.sample(&t, ip), (vec![ip, 0x5005, 0x6005], End::Complete));
    }
    m.sp -= 8;
    m.write(m.sp, 2); // push 2
    assert_eq!(
        m.sample(&t, 0x302b),
        (vec![0x302b, 0x5005, 0x6005], End::Complete)
    );
    // in PLT0, before and after its push
    assert_eq!(
        m.sample(&t, 0x3000),
        (vec![0x3000, 0x5005, 0x6005], End::Complete)
    );
    m.sp -= 8;
    m.write(m.sp, 0x1234); // push [GOT+8]
    assert_eq!(
        m.sample(&t, 0x3006),
        (vec![0x3006, 0x5005, 0x6005], End::Complete)
    );
}

/// The kernel's signal frame below the stack of the code it interrupted: the
/// handler is entered with sp at the return address into the trampoline (0x4000,
/// whose FDE starts a byte before it, as glibc's does), the ucontext above.
fn signal_delivered(interrupted: &Machine, ip: u64) -> Machine {
    let mut m = Machine {
        sp: interrupted.sp,
        bp: interrupted.bp,
        mem: interrupted.mem.clone(),
    };
    let uc = interrupted.sp - 128 - 0x400;
    m.write(uc + SIGNAL_RIP, ip);
    m.write(uc + SIGNAL_RSP, interrupted.sp);
    m.write(uc + SIGNAL_RBP, interrupted.bp);
    m.sp = uc - 8;
    m.write(m.sp, 0x4000);
    // the handler's rbp is whatever the interrupted code had; make it useless
    m.bp = 0xbad;
    m
}

#[test]
fn a_signal_frame_unwinds_into_the_interrupted_instruction() {
    let t = program_table(&[(0x3fff, 0x10, signal_program())]);
    assert_eq!(t.lookup(0x3fff).map(|r| r.cfa), Some(CfaRule::Signal));
    // Interrupted at the first instruction of the frame-pointer function: looked
    // up at pc - 1 (0xfff, below the table) it would take the frame-pointer path
    // and skip X.
    let interrupted = Machine::entered();
    let m = signal_delivered(&interrupted, 0x1000);
    every_instruction(&t, m, 0x2000, &FRAMELESS, &[0x4000, 0x1000, 0x5005, 0x6005]);
    // and in the middle of the frameless one, rbp clobbered
    let mut interrupted = Machine::entered();
    for &(_, op) in &FRAMELESS[..3] {
        interrupted.exec(op);
    }
    let m = signal_delivered(&interrupted, 0x200a);
    every_instruction(&t, m, 0x2000, &FRAMELESS, &[0x4000, 0x200a, 0x5005, 0x6005]);
}

#[test]
fn a_signal_frame_cut_from_the_copy_is_cut_short() {
    let t = program_table(&[(0x3fff, 0x10, signal_program())]);
    let m = signal_delivered(&Machine::entered(), 0x1000);
    let regs = Regs {
        ip: 0x2000,
        sp: m.sp,
        bp: m.bp,
    };
    let start = (m.sp - STACK) as usize;
    let copy = StackCopy {
        base: m.sp,
        bytes: &m.mem[start..start + 64],
    };
    let (frames, end) = unwind(regs, copy, |a| t.lookup(a).map(|r| (r.cfa, r.rbp)), 127);
    assert_eq!((frames, end), (vec![0x2000, 0x4000], End::CutShort));
}

#[test]
fn code_in_a_gap_between_fdes_unwinds_with_frame_pointers() {
    let t = program_table(&[]);
    // 0x1800 lies after the frame-pointer function: its last rule (CFA = rsp + 8)
    // would take the garbage at sp for a return address
    assert_eq!(t.lookup(0x1800).map(|r| r.cfa), Some(CfaRule::NoInfo));
    let mut m = Machine::entered();
    m.exec(Op::PushRbp);
    m.exec(Op::MovRbpRsp);
    m.exec(Op::SubRsp(0x10));
    m.write(m.sp, 0x9999);
    assert_eq!(
        m.sample(&t, 0x1800),
        (vec![0x1800, 0x5005, 0x6005], End::Complete)
    );
    // without a frame pointer there is nothing to go on
    m.bp = 0;
    assert_eq!(m.sample(&t, 0x1800), (vec![0x1800], End::NoCfi));
}

#[test]
fn an_unsupported_row_stops_the_walk() {
    let t = program_table(&[(0x7000, 0x10, vec![op::DEF_CFA_REGISTER, 3])]);
    let m = Machine::entered();
    assert_eq!(m.sample(&t, 0x7004), (vec![0x7004], End::Unsupported));
}

/// A hand-made table for a three-function program at 0x1000..: leaf without a
/// frame (CFA = rsp+8), middle with a frame pointer (CFA = rbp+16, rbp saved at
/// CFA-16), outer whose return address is undefined.
fn three_functions() -> UnwindTable {
    UnwindTable::from_rows(
        [
            (0x1000, CfaRule::Rsp(8), RbpRule::Same),
            (0x1100, CfaRule::NoInfo, RbpRule::Same),
            (0x2000, CfaRule::Rbp(16), RbpRule::AtCfa(-16)),
            (0x2100, CfaRule::NoInfo, RbpRule::Same),
            (0x3000, CfaRule::EndOfStack, RbpRule::Same),
            (0x3100, CfaRule::NoInfo, RbpRule::Same),
        ],
        vec![],
    )
    .unwrap()
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

fn rules_of(t: &UnwindTable) -> impl FnMut(u64) -> Option<(CfaRule, RbpRule)> + '_ {
    |a| t.lookup(a).map(|r| (r.cfa, r.rbp))
}

#[test]
fn unwinds_frameless_and_frame_pointer_functions_to_the_outermost() {
    let t = three_functions();
    let base = 0x7fff_0000;
    // leaf at 0x1010, sp = base: its return address (into middle) at base
    // middle's frame: rbp = base+0x20; saved rbp at base+0x20, ra at base+0x28
    let bytes = stack(
        base,
        &[(base, 0x2050), (base + 0x20, 0xdead), (base + 0x28, 0x3010)],
    );
    let regs = Regs {
        ip: 0x1010,
        sp: base,
        bp: base + 0x20,
    };
    let copy = StackCopy {
        base,
        bytes: &bytes,
    };
    let (frames, end) = unwind(regs, copy, rules_of(&t), 127);
    assert_eq!(frames, [0x1010, 0x2050, 0x3010]);
    assert_eq!(end, End::Complete);
}

#[test]
fn a_copy_too_short_cuts_the_stack_and_says_so() {
    let t = three_functions();
    let base = 0x7fff_0000;
    let bytes = stack(base, &[(base, 0x2050)]); // middle's frame was not copied
    let regs = Regs {
        ip: 0x1010,
        sp: base,
        bp: base + 0x20,
    };
    let copy = StackCopy {
        base,
        bytes: &bytes,
    };
    let (frames, end) = unwind(regs, copy, rules_of(&t), 127);
    assert_eq!(frames, [0x1010, 0x2050]);
    assert_eq!(end, End::CutShort);
}

#[test]
fn code_without_cfi_falls_back_to_frame_pointers() {
    let t = three_functions();
    let base = 0x7fff_0000;
    // JIT code at 0x9000 with a frame: rbp = base+0x10 → saved rbp, ra = 0x3010
    let bytes = stack(base, &[(base + 0x10, 0), (base + 0x18, 0x3010)]);
    let regs = Regs {
        ip: 0x9000,
        sp: base,
        bp: base + 0x10,
    };
    let copy = StackCopy {
        base,
        bytes: &bytes,
    };
    let (frames, end) = unwind(
        regs,
        copy,
        |a| {
            (a < 0x8000)
                .then(|| t.lookup(a).map(|r| (r.cfa, r.rbp)))
                .flatten()
        },
        127,
    );
    assert_eq!(frames, [0x9000, 0x3010]);
    assert_eq!(end, End::Complete);
}

#[test]
fn the_frame_limit_is_kept() {
    let t = three_functions();
    let base = 0x7fff_0000;
    // a recursion: every frame returns into 0x1010
    let words: Vec<(u64, u64)> = (0..300).map(|i| (base + 8 * i, 0x1010)).collect();
    let bytes = stack(base, &words);
    let regs = Regs {
        ip: 0x1010,
        sp: base,
        bp: 0,
    };
    let copy = StackCopy {
        base,
        bytes: &bytes,
    };
    let (frames, end) = unwind(regs, copy, rules_of(&t), 127);
    assert_eq!(frames.len(), 127);
    assert_eq!(end, End::TooDeep);
}
