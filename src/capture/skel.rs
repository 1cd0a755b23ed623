//! The skeleton libbpf-cargo generates from bpf/profile.bpf.c (build.rs), and the
//! constants shared with the BPF side, taken from its BTF through the skeleton's
//! `types` module rather than copied by hand.

#![allow(clippy::all, clippy::pedantic, missing_docs, non_camel_case_types)]
include!(concat!(env!("OUT_DIR"), "/profile.skel.rs"));

/// The constants of bpf/profile.h's `enum flamebpf_limits`.
pub mod limits {
    use super::types::flamebpf_limits as L;

    /// Frames a stack map entry holds.
    pub const MAX_DEPTH: usize = L::FLAMEBPF_MAX_DEPTH.0 as usize;
    /// The most user stack a DWARF-mode sample copies.
    pub const MAX_STACK_BYTES: u32 = L::FLAMEBPF_MAX_STACK_BYTES.0 as u32;
    /// Bytes of a command name.
    pub const COMM_LEN: usize = L::FLAMEBPF_COMM_LEN.0 as usize;
    /// Executable mappings the kernel keeps per process in CFI mode.
    pub const MAX_MAPPINGS: usize = L::FLAMEBPF_MAX_MAPPINGS.0 as usize;
    /// Bits of a pc one entry of an unwind table's page index covers.
    pub const INDEX_SHIFT: u32 = L::FLAMEBPF_INDEX_SHIFT.0 as u32;
    /// Rows of one chunk of unwind rows: 1 << this.
    pub const ROWS_CHUNK_SHIFT: u32 = L::FLAMEBPF_ROWS_CHUNK_SHIFT.0 as u32;
    /// The stack id (negated) of a stack kept by hash without a STACK_TRACE
    /// bucket: user stacks unwound with CFI.
    pub const STACK_HASHED: i32 = L::FLAMEBPF_STACK_HASHED.0 as i32;
    /// The errno bpf_get_stackid returns (negated) when a stack's bucket holds
    /// another stack.
    pub const EEXIST: i32 = L::FLAMEBPF_EEXIST.0 as i32;
    /// The errno bpf_get_stackid returns (negated) when there is no such stack.
    pub const EFAULT: i32 = L::FLAMEBPF_EFAULT.0 as i32;
}

#[cfg(test)]
mod tests {
    use super::limits;

    #[test]
    fn limits_the_bpf_free_crates_keep_their_own_copy_of_agree() {
        // symbolizer knows nothing of BPF, so it cannot take these from the header.
        assert_eq!(symbolizer::unwind::MAX_FRAMES, limits::MAX_DEPTH);
        assert_eq!(limits::MAX_STACK_BYTES % 8, 0);
        assert_eq!(limits::COMM_LEN, 16, "TASK_COMM_LEN");
    }
}
