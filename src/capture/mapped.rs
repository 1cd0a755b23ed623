//! A BPF_F_MMAPABLE array map mapped into this process, a chunk at a time.
//!
//! Mapping a whole array up front makes the kernel insert every one of its pages
//! into the page tables (`remap_vmalloc_range`), and take them out again at exit:
//! for the 36 MiB of CFI tables that was 8 ms of the 79 ms `record -p PID -d 0.5`
//! took (`perf stat -r 25`), and 34 MiB of its peak RSS, for a capture that fills
//! a few hundred KiB of them. The array's address range is
//! reserved once (no access, no memory), and each 1 MiB chunk is mapped over it
//! on its first write.

use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::{Context, Result};
use libbpf_rs::MapCore;

/// Bytes mapped at a time: a multiple of the page size.
const CHUNK: usize = 1 << 20;

/// The values of one array map, written by userspace and seen by the program.
pub struct Mapped<T> {
    base: *mut T,
    /// Values in the array.
    pub len: usize,
    /// The reserved range, the array's size rounded up to pages.
    bytes: usize,
    /// Which chunks are mapped.
    chunks: Vec<bool>,
    /// A descriptor of the map, kept for the chunks still to map.
    fd: OwnedFd,
}

impl<T: Copy> Mapped<T> {
    /// Reserves the address range of `map`, whose values must be `T`s.
    pub fn new(map: &impl MapCore) -> Result<Mapped<T>> {
        let len = map.max_entries() as usize;
        // an array map lays its values out 8-byte aligned: T must be that stride
        let size = std::mem::size_of::<T>();
        if map.value_size() as usize != size || !size.is_multiple_of(8) {
            anyhow::bail!("an unwind map's values are not {size}-byte records");
        }
        let bytes = (len * size).next_multiple_of(4096);
        let fd = map
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating an unwind map's descriptor")?;
        // SAFETY: a new private anonymous reservation without access; chunks of
        // the map are mapped over it with MAP_FIXED, and all of it is unmapped in
        // Drop.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error())
                .context("reserving room for an unwind map");
        }
        Ok(Mapped {
            base: base.cast(),
            len,
            bytes,
            chunks: vec![false; bytes.div_ceil(CHUNK)],
            fd,
        })
    }

    /// Copies `values` into the array from index `at`, mapping the chunks they
    /// fall in first. Fails when the kernel refuses a chunk's mapping.
    pub fn write(&mut self, at: u32, values: &[T]) -> Result<()> {
        let at = at as usize;
        assert!(
            at + values.len() <= self.len,
            "a range the Space handed out"
        );
        if values.is_empty() {
            return Ok(());
        }
        for chunk in chunks_of(at, values.len(), std::mem::size_of::<T>()) {
            self.map_chunk(chunk)?;
        }
        // SAFETY: in bounds (checked above) of the reservation, whose chunks
        // holding these indexes were just mapped.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), self.base.add(at), values.len()) };
        Ok(())
    }

    fn map_chunk(&mut self, chunk: usize) -> Result<()> {
        if self.chunks[chunk] {
            return Ok(());
        }
        let offset = chunk * CHUNK;
        let len = CHUNK.min(self.bytes - offset);
        // SAFETY: MAP_FIXED over our own reservation (offset + len <= bytes), a
        // shared mapping of the array at the same offset, which the kernel
        // bounds by the array's size.
        let ptr = unsafe {
            libc::mmap(
                self.base.cast::<u8>().add(offset).cast(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                self.fd.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mapping an unwind map");
        }
        self.chunks[chunk] = true;
        Ok(())
    }
}

/// The chunks that values `at..at + n` of `size` bytes each fall in (n > 0).
fn chunks_of(at: usize, n: usize, size: usize) -> std::ops::RangeInclusive<usize> {
    at * size / CHUNK..=((at + n) * size - 1) / CHUNK
}

impl<T> Drop for Mapped<T> {
    fn drop(&mut self) {
        // SAFETY: the reservation made in new(), with every chunk mapped over it.
        unsafe { libc::munmap(self.base.cast(), self.bytes) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_maps_the_chunks_it_touches_and_no_other() {
        let per_chunk = CHUNK / 8;
        assert_eq!(chunks_of(0, 1, 8), 0..=0);
        assert_eq!(chunks_of(per_chunk - 1, 1, 8), 0..=0);
        assert_eq!(chunks_of(per_chunk - 1, 2, 8), 0..=1);
        assert_eq!(chunks_of(per_chunk, per_chunk, 8), 1..=1);
        assert_eq!(chunks_of(per_chunk, per_chunk + 1, 8), 1..=2);
        // 4 MiB of 16-byte values from byte 48 reach into a fifth chunk
        assert_eq!(chunks_of(3, 2 * per_chunk, 16), 0..=4);
    }
}
