//! The vDSO, by name. Every process of a machine maps the same vDSO image, so ours
//! stands for all of them: it is copied out of our own memory into a memfd that the
//! ELF symbolizer can open like any file.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;

use crate::procmaps;

/// Our vDSO image, held in an anonymous file.
#[derive(Debug)]
pub struct Vdso {
    file: File,
}

impl Vdso {
    /// Copies the vDSO of this process into a memfd.
    pub fn load() -> io::Result<Vdso> {
        let maps = procmaps::read(std::process::id())?;
        let m = maps
            .iter()
            .find(|m| m.path == "[vdso]")
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "this process has no vDSO"))?;
        let mut image = vec![0u8; (m.end - m.start) as usize];
        let mut mem = File::open("/proc/self/mem")?;
        mem.seek(SeekFrom::Start(m.start))?;
        mem.read_exact(&mut image)?;
        // SAFETY: memfd_create with a static NUL-terminated name; checked below.
        let fd = unsafe { libc::memfd_create(c"flamebpf-vdso".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor nothing else owns.
        let mut file = unsafe { File::from_raw_fd(fd) };
        file.write_all(&image)?;
        Ok(Vdso { file })
    }

    /// A path that opens the image (while this value lives).
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_vdso_is_an_elf_image() {
        let v = Vdso::load().unwrap();
        let bytes = std::fs::read(v.path()).unwrap();
        assert_eq!(&bytes[..4], b"\x7fELF");
    }
}
