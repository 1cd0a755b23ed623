//! Running call frame programs (DW_CFA_* instructions) while keeping only the
//! three columns a table row needs: the CFA, the return address and rbp.
//! gimli's own evaluator keeps every register of every row and runs a CIE's
//! initial instructions again for each FDE; this one keeps three values and
//! runs each CIE once, which halves the time to build a table of a large object.
//! The usual instructions are decoded here ([`Evaluator::run_bytes`]), the rest
//! by gimli ([`Evaluator::run`]); both go through one evaluation step.

use gimli::{
    CallFrameInstruction, CallFrameInstructionIter, Reader, Register, UnwindExpression, X86_64,
};

/// How the CFA is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cfa {
    /// Register plus offset.
    RegOffset(Register, i64),
    /// A DWARF expression.
    Expr(UnwindExpression<usize>),
    /// Not defined, or changed by an instruction that needs a register rule
    /// while it was an expression.
    Invalid,
}

/// A register's rule, as far as the table cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rule {
    /// No rule given.
    Unset,
    Undefined,
    Same,
    /// Saved at CFA + n.
    Offset(i64),
    /// Saved at the address an expression gives.
    Expr(UnwindExpression<usize>),
    /// Any other rule (value rules, another register).
    Other,
}

/// The columns of one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct State {
    pub cfa: Cfa,
    pub ra: Rule,
    pub rbp: Rule,
}

impl State {
    /// Before a CIE's initial instructions.
    pub const NONE: State = State {
        cfa: Cfa::Invalid,
        ra: Rule::Unset,
        rbp: Rule::Unset,
    };

    fn set(&mut self, register: Register, rule: Rule) {
        if register == X86_64::RA {
            self.ra = rule;
        } else if register == X86_64::RBP {
            self.rbp = rule;
        }
    }

    fn get(&self, register: Register) -> Rule {
        if register == X86_64::RA {
            self.ra
        } else if register == X86_64::RBP {
            self.rbp
        } else {
            Rule::Unset
        }
    }
}

/// Deepest DW_CFA_remember_state nesting accepted (compilers use 1).
const MAX_REMEMBERED: usize = 16;

/// Runs call frame programs; one serves every FDE of an object, so the
/// remember/restore stack is allocated once.
#[derive(Debug, Default)]
pub(super) struct Evaluator {
    remembered: Vec<State>,
}

/// The alignment factors of a CIE.
#[derive(Debug, Clone, Copy)]
pub(super) struct Factors {
    pub code: u64,
    pub data: i64,
}

/// The fast decoder met something it leaves to gimli: an instruction it does
/// not decode (`DW_CFA_set_loc`, expressions, unknown opcodes), an encoding it
/// does not take (a LEB128 number of 10 bytes or more), bytes that end inside
/// an instruction, or a program gimli's evaluation would fail on. Nothing it
/// reported is to be kept: the FDE is run again with gimli's parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Unhandled;

impl Evaluator {
    /// Runs `program` on `state` from address `start`, calling `row(address,
    /// state)` when a row is complete (at each advance, and at the end): the row
    /// holds from that address to the next one reported. `initial` is what
    /// DW_CFA_restore goes back to (the CIE's rules; [`State::NONE`] while the
    /// CIE's own instructions run).
    pub fn run<R: Reader<Offset = usize>>(
        &mut self,
        mut program: CallFrameInstructionIter<'_, R>,
        start: u64,
        factors: Factors,
        initial: &State,
        state: &mut State,
        mut row: impl FnMut(u64, &State),
    ) -> gimli::Result<()> {
        self.remembered.clear();
        let mut loc = start;
        while let Some(instruction) = program.next()? {
            self.step(instruction, &mut loc, factors, initial, state, &mut row)?;
        }
        row(loc, state);
        Ok(())
    }

    /// [`Evaluator::run`] on a program's bytes, decoded here rather than by
    /// gimli: the instructions compilers emit for x86-64 functions, read the way
    /// gimli reads them, evaluated by the same [`Evaluator::step`]. gimli's
    /// parser, general over every encoding and returning a large enum, took
    /// as long as the evaluation itself. Anything else is [`Unhandled`], and
    /// the caller drops what was reported and runs the FDE with gimli: so the
    /// rows are the same either way.
    pub fn run_bytes(
        &mut self,
        mut program: &[u8],
        start: u64,
        factors: Factors,
        initial: &State,
        state: &mut State,
        mut row: impl FnMut(u64, &State),
    ) -> Result<(), Unhandled> {
        use CallFrameInstruction as I;
        self.remembered.clear();
        let mut loc = start;
        let p = &mut program;
        while let Some((&op, rest)) = p.split_first() {
            *p = rest;
            let instruction = match op >> 6 {
                1 => I::AdvanceLoc {
                    delta: u32::from(op & 0x3f),
                },
                2 => I::Offset {
                    register: Register(u16::from(op & 0x3f)),
                    factored_offset: uleb(p)?,
                },
                3 => I::Restore {
                    register: Register(u16::from(op & 0x3f)),
                },
                _ => match op {
                    0x00 => I::Nop,
                    0x02 => I::AdvanceLoc {
                        delta: u32::from(fixed::<1>(p)?[0]),
                    },
                    0x03 => I::AdvanceLoc {
                        delta: u32::from(u16::from_le_bytes(fixed(p)?)),
                    },
                    0x04 => I::AdvanceLoc {
                        delta: u32::from_le_bytes(fixed(p)?),
                    },
                    0x05 => I::Offset {
                        register: register(p)?,
                        factored_offset: uleb(p)?,
                    },
                    0x06 => I::Restore {
                        register: register(p)?,
                    },
                    0x07 => I::Undefined {
                        register: register(p)?,
                    },
                    0x08 => I::SameValue {
                        register: register(p)?,
                    },
                    0x09 => I::Register {
                        dest_register: register(p)?,
                        src_register: register(p)?,
                    },
                    0x0a => I::RememberState,
                    0x0b => I::RestoreState,
                    0x0c => I::DefCfa {
                        register: register(p)?,
                        offset: uleb(p)?,
                    },
                    0x0d => I::DefCfaRegister {
                        register: register(p)?,
                    },
                    0x0e => I::DefCfaOffset { offset: uleb(p)? },
                    0x11 => I::OffsetExtendedSf {
                        register: register(p)?,
                        factored_offset: sleb(p)?,
                    },
                    0x12 => I::DefCfaSf {
                        register: register(p)?,
                        factored_offset: sleb(p)?,
                    },
                    0x13 => I::DefCfaOffsetSf {
                        factored_offset: sleb(p)?,
                    },
                    0x2e => I::ArgsSize { size: uleb(p)? },
                    _ => return Err(Unhandled),
                },
            };
            self.step(instruction, &mut loc, factors, initial, state, &mut row)
                .map_err(|_| Unhandled)?;
        }
        row(loc, state);
        Ok(())
    }

    /// Applies one instruction.
    #[inline(always)]
    fn step(
        &mut self,
        instruction: CallFrameInstruction<usize>,
        loc: &mut u64,
        factors: Factors,
        initial: &State,
        state: &mut State,
        row: &mut impl FnMut(u64, &State),
    ) -> gimli::Result<()> {
        use CallFrameInstruction as I;
        let offset = |factored: i64| factored.wrapping_mul(factors.data);
        match instruction {
            I::SetLoc { address } => {
                if address < *loc {
                    return Err(gimli::Error::InvalidCfiSetLoc(address));
                }
                row(*loc, state);
                *loc = address;
            }
            I::AdvanceLoc { delta } => {
                row(*loc, state);
                let delta = u64::from(delta).wrapping_mul(factors.code);
                *loc = loc
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
            I::Undefined { register } => state.set(register, Rule::Undefined),
            I::SameValue { register } => state.set(register, Rule::Same),
            I::Offset {
                register,
                factored_offset,
            } => state.set(register, Rule::Offset(offset(factored_offset as i64))),
            I::OffsetExtendedSf {
                register,
                factored_offset,
            } => state.set(register, Rule::Offset(offset(factored_offset))),
            I::ValOffset { register, .. }
            | I::ValOffsetSf { register, .. }
            | I::ValExpression { register, .. }
            | I::Register {
                dest_register: register,
                ..
            } => state.set(register, Rule::Other),
            I::Expression {
                register,
                expression,
            } => state.set(register, Rule::Expr(expression)),
            I::Restore { register } => state.set(register, initial.get(register)),
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
        Ok(())
    }
}

/// The next `N` bytes.
fn fixed<const N: usize>(p: &mut &[u8]) -> Result<[u8; N], Unhandled> {
    let (bytes, rest) = p.split_first_chunk::<N>().ok_or(Unhandled)?;
    *p = rest;
    Ok(*bytes)
}

/// An unsigned LEB128 number of at most 9 bytes (63 bits): what gimli reads
/// the same. Longer ones, where gimli checks the 10th byte, are left to it.
pub(super) fn uleb(p: &mut &[u8]) -> Result<u64, Unhandled> {
    let mut value = 0u64;
    for (i, &b) in p.iter().enumerate().take(9) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *p = &p[i + 1..];
            return Ok(value);
        }
    }
    Err(Unhandled)
}

/// A signed LEB128 number of at most 9 bytes, sign-extended as gimli does.
fn sleb(p: &mut &[u8]) -> Result<i64, Unhandled> {
    let mut value = 0i64;
    for (i, &b) in p.iter().enumerate().take(9) {
        let shift = 7 * i as u32;
        value |= i64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            *p = &p[i + 1..];
            // 9 bytes fill bits 0..63: bit 62 is the sign, extended to bit 63
            if b & 0x40 != 0 {
                value |= -1i64 << (shift + 7);
            }
            return Ok(value);
        }
    }
    Err(Unhandled)
}

/// A register number, which gimli refuses above u16.
fn register(p: &mut &[u8]) -> Result<Register, Unhandled> {
    u16::try_from(uleb(p)?).map(Register).map_err(|_| Unhandled)
}
