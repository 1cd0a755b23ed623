//! Running call frame programs (DW_CFA_* instructions, parsed by gimli) while
//! keeping only the three columns a table row needs: the CFA, the return address
//! and rbp. gimli's own evaluator keeps every register of every row and runs a
//! CIE's initial instructions again for each FDE; this one keeps three values and
//! runs each CIE once, which halves the time to build a table of a large object.

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
        }
        row(loc, state);
        Ok(())
    }
}
