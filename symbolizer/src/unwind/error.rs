//! Why an object has no unwind table: each reason a variant a caller can match on
//! (retry later, give up on the object for good, or fall back to frame pointers).

use std::io;

/// Why an unwind table could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    /// The object could not be read (gone, no permission, truncated).
    #[error("cannot read the object: {0}")]
    Io(#[from] io::Error),
    /// The bytes are no ELF file, or a malformed one (with what the ELF reader
    /// found wrong, when it read that far).
    #[error("not an ELF object")]
    NotElf(#[source] Option<object::Error>),
    /// An ELF object for another architecture (tables describe x86-64 only);
    /// the value is the ELF `e_machine`, or 0 for a 32-bit object.
    #[error("ELF object for machine {machine}, not x86-64")]
    UnsupportedArch {
        /// `e_machine` of the object (0 for an ELFCLASS32 object).
        machine: u16,
    },
    /// Neither `.eh_frame` nor `.debug_frame` describes any code.
    #[error("no call frame information")]
    NoCfi,
    /// The code the CFI describes spans more than the 4 GiB that u32 row
    /// offsets can address.
    #[error("the call frame information spans {span:#x} bytes, more than 4 GiB")]
    TooLarge {
        /// Bytes from the lowest to the highest address described.
        span: u64,
    },
}
