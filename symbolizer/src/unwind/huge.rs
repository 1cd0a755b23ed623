//! Buffers for the rows of large tables, on transparent huge pages where the
//! kernel allows them (`/sys/kernel/mm/transparent_hugepage/enabled` set to
//! `madvise` or `always`). libLLVM's rows take 28 MB: 7,000 page faults on
//! 4 KiB pages, a fifth of a build's time spent in the kernel; on 2 MiB pages,
//! fourteen. The rows are the same either way: only how the kernel backs them
//! changes.

use std::mem::size_of;

const HUGE_PAGE: usize = 2 << 20;

/// Smallest buffer worth advising: below two huge pages the aligned part is
/// small or empty.
const MIN_BYTES: usize = 2 * HUGE_PAGE;

/// An empty vector with room for `capacity` items, the huge-page-aligned part
/// of its buffer advised `MADV_HUGEPAGE`. The advice is a hint: where it is
/// refused (old kernels, THP off) the buffer is an ordinary one.
pub(super) fn vec<T>(capacity: usize) -> Vec<T> {
    let v = Vec::with_capacity(capacity);
    let bytes = v.capacity().saturating_mul(size_of::<T>());
    if bytes >= MIN_BYTES {
        let start = v.as_ptr() as usize;
        let from = start.next_multiple_of(HUGE_PAGE);
        let to = (start + bytes) & !(HUGE_PAGE - 1);
        if to > from {
            // SAFETY: madvise only advises on pages of this buffer, which is
            // allocated (capacity) and not yet written; it cannot change their
            // contents or the allocator's view of them.
            unsafe {
                libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE);
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_advised_buffer_is_an_ordinary_vector() {
        for n in [0, 10, 3 << 20] {
            let mut v: Vec<u64> = super::vec(n);
            assert!(v.is_empty() && v.capacity() >= n);
            v.extend(0..n as u64);
            assert_eq!(
                v.iter().sum::<u64>(),
                (n as u64) * (n as u64).saturating_sub(1) / 2
            );
        }
    }
}
