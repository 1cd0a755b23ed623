//! Unwinding user stacks with the objects' call frame information (DWARF CFI
//! from `.eh_frame`, or `.debug_frame` where an object has only that), for code
//! built without frame pointers. x86-64 only.
//!
//! Each object's CFI is evaluated once into an [`UnwindTable`]: rows sorted by
//! address, each saying how to find the CFA and the caller's rbp up to the next
//! row, in a handful of kinds ([`CfaRule`]) that need no DWARF to evaluate: a
//! register plus an offset, the PLT expression, the signal trampoline, the end of
//! the stack, no information (frame pointers then), or unsupported. The same
//! table serves the userspace walker ([`unwind()`], [`Unwinder`]) and, encoded by
//! the BPF loader, the in-kernel unwinder; [`TableCache`] shares tables between
//! processes that map the same object.
//!
//! - [`table`]: the rows and their lookup, file offset → ELF address;
//! - `cfi`: building rows from CFI (`fdes`: the FDEs in address order,
//!   `eval`: running their programs); `elf`: finding the sections;
//! - [`cache`]: tables by object identity;
//! - [`walk`]: the walker over a stack copy; `unwinder`: over a capture.

mod cfi;
mod elf;
mod error;
mod eval;
mod fdes;
mod huge;
mod unwinder;

pub mod cache;
pub mod table;
pub mod walk;

pub use cache::{ObjectKey, TableCache};
pub use error::TableError;
pub use table::{
    CfaRule, LoadSegment, RbpRule, TableSummary, UnwindRow, UnwindTable, SIGNAL_RBP, SIGNAL_RIP,
    SIGNAL_RSP,
};
pub use unwinder::{UnwindStats, Unwinder};
pub use walk::{snapshot_here, unwind, End, Regs, StackCopy, MAX_FRAMES};

/// The name the table had before it became one format for BPF and userspace.
pub type ObjectCfi = UnwindTable;

#[cfg(test)]
mod tests_decode;
#[cfg(test)]
mod tests_previous;
#[cfg(test)]
mod tests_real;
#[cfg(test)]
mod tests_walk;
