//! Reader of a perf event's mmap'd ring buffer.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use perf_event_open_sys::bindings::perf_event_mmap_page;

/// A perf ring buffer: one metadata page followed by 2^n data pages.
pub struct Ring {
    base: *mut u8,
    len: usize,
    data_offset: usize,
    data_size: usize,
    scratch: Vec<u8>,
    fd: OwnedFd,
}

impl Ring {
    /// Maps `data_pages` (a power of two) data pages of the event `fd`.
    pub fn new(fd: OwnedFd, data_pages: usize) -> io::Result<Ring> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let len = page * (1 + data_pages);
        // SAFETY: a fresh shared mapping of the event's buffer; checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let meta = base as *const perf_event_mmap_page;
        // SAFETY: the first page is the metadata page, mapped above.
        let (off, size) = unsafe { ((*meta).data_offset as usize, (*meta).data_size as usize) };
        // Kernels before 4.1 leave these zero; the layout is then page + rest.
        let (data_offset, data_size) = if size == 0 {
            (page, len - page)
        } else {
            (off, size)
        };
        Ok(Ring {
            base: base.cast(),
            len,
            data_offset,
            data_size,
            scratch: Vec::new(),
            fd,
        })
    }

    /// The event's descriptor, for poll().
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    fn meta(&self) -> *mut perf_event_mmap_page {
        self.base.cast()
    }

    /// Calls `f(type, misc, body)` for each record written since the last call and
    /// hands the space back to the kernel.
    pub fn drain(&mut self, mut f: impl FnMut(u32, u16, &[u8])) {
        let meta = self.meta();
        // SAFETY: data_head/data_tail are u64 fields of the mapped metadata page,
        // shared with the kernel, which is what the atomics are for.
        let (head_ptr, tail_ptr) = unsafe {
            (
                AtomicU64::from_ptr(std::ptr::addr_of_mut!((*meta).data_head)),
                AtomicU64::from_ptr(std::ptr::addr_of_mut!((*meta).data_tail)),
            )
        };
        let head = head_ptr.load(Ordering::Acquire);
        let mut tail = tail_ptr.load(Ordering::Relaxed);
        while tail + 8 <= head {
            let mut header = [0u8; 8];
            self.copy_out(tail, &mut header);
            let kind = u32::from_ne_bytes(header[0..4].try_into().expect("4 bytes"));
            let misc = u16::from_ne_bytes(header[4..6].try_into().expect("2 bytes"));
            let size = u16::from_ne_bytes(header[6..8].try_into().expect("2 bytes")) as u64;
            if size < 8 || tail + size > head {
                break; // a torn or corrupt record: leave it, never loop forever
            }
            let mut body = std::mem::take(&mut self.scratch);
            body.resize(size as usize - 8, 0);
            self.copy_out(tail + 8, &mut body);
            f(kind, misc, &body);
            self.scratch = body;
            tail += size;
        }
        tail_ptr.store(tail, Ordering::Release);
    }

    /// Copies bytes at ring position `pos` into `out`, across the wrap if needed.
    fn copy_out(&self, pos: u64, out: &mut [u8]) {
        let start = (pos % self.data_size as u64) as usize;
        let first = out.len().min(self.data_size - start);
        // SAFETY: both ranges lie inside the mapped data area.
        unsafe {
            let data = self.base.add(self.data_offset);
            std::ptr::copy_nonoverlapping(data.add(start), out.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(data, out.as_mut_ptr().add(first), out.len() - first);
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: base/len are the mapping made in new().
        unsafe {
            libc::munmap(self.base.cast(), self.len);
        }
    }
}
