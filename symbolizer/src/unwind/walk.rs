//! The userspace walker: unwinds a copy of the top of a user stack (what the BPF
//! program sends in `--call-graph dwarf` mode) with table rows, one frame per row
//! looked up, reading saved values only from the copy. It evaluates exactly what
//! the BPF unwinder will, so the two can be checked against each other.

use super::table::{CfaRule, RbpRule, SIGNAL_RBP, SIGNAL_RIP, SIGNAL_RSP};

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
    /// A rule the table does not express, or a caller's frame that is not above
    /// its callee's.
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

/// The deepest user stack kept, as with frame pointers.
pub const MAX_FRAMES: usize = 127;

/// Unwinds a stack copy. `rule(addr)` gives the rules that hold at a code
/// address (`None` where no table covers it, such as JIT code: frame pointers are
/// tried there, as for [`CfaRule::NoInfo`]). Returns the instruction pointers,
/// leaf first, and why it stopped.
pub fn unwind(
    regs: Regs,
    stack: StackCopy<'_>,
    mut rule: impl FnMut(u64) -> Option<(CfaRule, RbpRule)>,
    max_frames: usize,
) -> (Vec<u64>, End) {
    let mut frames = vec![regs.ip];
    let (mut pc, mut sp, mut bp) = (regs.ip, regs.sp, Some(regs.bp));
    // A caller's pc is a return address, and the call is the byte before it
    // (which matters when the call ends a function); the sampled pc and one a
    // signal interrupted are the instruction itself.
    let mut exact = true;
    let read = |addr: u64| stack.read(addr).ok_or(End::CutShort);
    loop {
        if frames.len() >= max_frames {
            return (frames, End::TooDeep);
        }
        let lookup = if exact { pc } else { pc.saturating_sub(1) };
        let (cfa_rule, rbp_rule) = rule(lookup).unwrap_or((CfaRule::NoInfo, RbpRule::Same));
        let step = match cfa_rule {
            CfaRule::Rsp(_) | CfaRule::Rbp(_) | CfaRule::Plt { .. } => {
                cfi_step(cfa_rule, rbp_rule, pc, sp, bp, read)
            }
            CfaRule::Signal => signal_step(sp, read),
            CfaRule::NoInfo => frame_pointer_step(sp, bp, &stack),
            CfaRule::EndOfStack => Err(End::Complete),
            CfaRule::Unsupported => Err(End::Unsupported),
        };
        let (next_pc, next_sp, next_bp) = match step {
            Ok(s) => s,
            Err(end) => return (frames, end),
        };
        if next_pc == 0 {
            return (frames, End::Complete);
        }
        // The stack grows down: a caller's frame is never below its callee's.
        // (A signal may have run on another stack; frame-pointer steps check rbp
        // against sp themselves.)
        let checked = !matches!(cfa_rule, CfaRule::Signal | CfaRule::NoInfo);
        if checked && next_sp <= sp && frames.len() > 1 {
            return (frames, End::Unsupported);
        }
        frames.push(next_pc);
        exact = cfa_rule == CfaRule::Signal;
        pc = next_pc;
        sp = next_sp;
        bp = next_bp;
    }
}

type Step = Result<(u64, u64, Option<u64>), End>;

/// A frame whose CFA is a register plus an offset, the return address at CFA - 8.
fn cfi_step(
    cfa_rule: CfaRule,
    rbp_rule: RbpRule,
    pc: u64,
    sp: u64,
    bp: Option<u64>,
    read: impl Fn(u64) -> Result<u64, End>,
) -> Step {
    let cfa = match cfa_rule {
        CfaRule::Rsp(o) => sp.wrapping_add_signed(i64::from(o)),
        CfaRule::Rbp(o) => bp
            .ok_or(End::Unsupported)?
            .wrapping_add_signed(i64::from(o)),
        CfaRule::Plt { threshold } => {
            let pushed = if pc & 15 >= u64::from(threshold) {
                8
            } else {
                0
            };
            sp.wrapping_add(8 + pushed)
        }
        _ => return Err(End::Unsupported),
    };
    let ra = read(cfa.wrapping_sub(8))?;
    let next_bp = match rbp_rule {
        RbpRule::Same => bp,
        RbpRule::AtCfa(o) => Some(read(cfa.wrapping_add_signed(i64::from(o)))?),
        RbpRule::Undefined => None,
    };
    Ok((ra, cfa, next_bp))
}

/// The signal trampoline: the interrupted registers are in the ucontext at rsp.
fn signal_step(sp: u64, read: impl Fn(u64) -> Result<u64, End>) -> Step {
    let rip = read(sp.wrapping_add(SIGNAL_RIP))?;
    let rsp = read(sp.wrapping_add(SIGNAL_RSP))?;
    let rbp = read(sp.wrapping_add(SIGNAL_RBP))?;
    Ok((rip, rsp, Some(rbp)))
}

/// No CFI: rbp points at the saved rbp, the return address above it, if this
/// code keeps frame pointers; rbp must point into the copy, above sp.
fn frame_pointer_step(sp: u64, bp: Option<u64>, stack: &StackCopy<'_>) -> Step {
    let b = bp.filter(|&b| b >= sp).ok_or(End::NoCfi)?;
    match (stack.read(b), stack.read(b.wrapping_add(8))) {
        (Some(saved_bp), Some(ra)) => Ok((ra, b.wrapping_add(16), Some(saved_bp))),
        _ if stack.read(sp).is_some() => Err(End::NoCfi),
        _ => Err(End::CutShort),
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
