//! Handing freed memory back to the system.
//!
//! glibc keeps what a thread frees in that thread's arena for its next
//! allocations. The daemon's worker threads build large things now and then
//! (a 28 MB unwind table for libLLVM, the parsed debug information of a big
//! binary) and free them soon after: without a trim, the process's RSS keeps the
//! high-water mark of every thread for good.

/// Returns the free memory at the top of every arena, and free whole pages
/// inside them, to the kernel. Costs a walk of the arenas: call it after work
/// that freed a lot, not per allocation.
pub fn give_back() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases memory the allocator holds as free.
    unsafe {
        libc::malloc_trim(0);
    }
}
