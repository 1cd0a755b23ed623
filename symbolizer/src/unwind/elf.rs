//! Finding the CFI sections and the loadable segments of an ELF object. A file is
//! read in the parts needed, not whole: librustc_driver is 150 MB and its
//! `.eh_frame` 6 MB, and copying the rest would cost more than building the
//! table. The headers go through object's cache of ranges; the CFI sections
//! are read straight into buffers of their own (on huge pages where large),
//! not zeroed first as that cache does: zeroing 8 MB of fresh memory cost as
//! much as reading it.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use object::elf::{
    FileHeader64, SectionHeader64, EM_X86_64, PF_X, PT_LOAD, SHF_COMPRESSED, SHT_NOBITS,
};
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};
use object::{Endianness, FileKind, ReadCache, ReadRef};

use super::cfi::{self, CfiSections};
use super::error::TableError;
use super::table::{LoadSegment, UnwindTable};

impl UnwindTable {
    /// Builds the table of the ELF object at `path`.
    pub fn load(path: &Path) -> Result<UnwindTable, TableError> {
        let file = File::open(path)?;
        let cache = ReadCache::new(&file);
        let (found, segments) = find(&cache)?;
        let len = file.metadata()?.len();
        let read = |s: Option<(SectionHeader64<Endianness>, u64)>| match s {
            Some((s, addr)) => {
                Ok(read_section(&file, len, &s, found.endian, &cache)?.map(|bytes| (bytes, addr)))
            }
            None => Ok::<_, TableError>(None),
        };
        let eh_frame = read(found.eh_frame)?;
        let debug_frame = read(found.debug_frame)?;
        let sections = CfiSections {
            eh_frame: eh_frame.as_ref().map(|(b, addr)| (&b[..], *addr)),
            eh_frame_hdr: found.eh_frame_hdr,
            debug_frame: debug_frame.as_ref().map(|(b, _)| &b[..]),
            text: found.text,
            got: found.got,
        };
        cfi::build(&sections, segments)
    }

    /// Builds the table of an ELF image in memory.
    pub fn parse(data: &[u8]) -> Result<UnwindTable, TableError> {
        from_elf(data)
    }
}

fn from_elf<'d, R: ReadRef<'d>>(data: R) -> Result<UnwindTable, TableError> {
    let (sections, segments) = cfi_sections(data)?;
    cfi::build(&sections, segments)
}

/// The CFI sections and loadable segments of an x86-64 ELF object.
pub(super) fn cfi_sections<'d, R: ReadRef<'d>>(
    data: R,
) -> Result<(CfiSections<'d>, Vec<LoadSegment>), TableError> {
    let (found, segments) = find(data)?;
    let bytes = |s: Option<(SectionHeader64<Endianness>, u64)>| match s {
        Some((s, addr)) => contents(&s, found.endian, data).map(|b| b.map(|b| (b, addr))),
        None => Ok(None),
    };
    let sections = CfiSections {
        eh_frame: bytes(found.eh_frame)?,
        eh_frame_hdr: found.eh_frame_hdr,
        debug_frame: bytes(found.debug_frame)?.map(|(b, _)| b),
        text: found.text,
        got: found.got,
    };
    Ok((sections, segments))
}

/// The headers of the CFI sections (with their addresses) and the addresses
/// [`CfiSections`] takes, as found in the section table.
struct Found {
    endian: Endianness,
    eh_frame: Option<(SectionHeader64<Endianness>, u64)>,
    eh_frame_hdr: Option<u64>,
    debug_frame: Option<(SectionHeader64<Endianness>, u64)>,
    text: Option<u64>,
    got: Option<u64>,
}

/// The CFI sections and loadable segments of an x86-64 ELF object, the
/// sections not yet read.
fn find<'d, R: ReadRef<'d>>(data: R) -> Result<(Found, Vec<LoadSegment>), TableError> {
    match FileKind::parse(data) {
        Ok(FileKind::Elf64) => {}
        // Tables are x86-64 only; the 32-bit header's machine is not worth reading.
        Ok(FileKind::Elf32) => return Err(TableError::UnsupportedArch { machine: 0 }),
        Ok(_) => return Err(TableError::NotElf(None)),
        Err(e) => return Err(TableError::NotElf(Some(e))),
    }
    let header =
        FileHeader64::<Endianness>::parse(data).map_err(|e| TableError::NotElf(Some(e)))?;
    let endian = header.endian().map_err(|e| TableError::NotElf(Some(e)))?;
    let machine = header.e_machine(endian);
    if machine != EM_X86_64 || endian != Endianness::Little {
        return Err(TableError::UnsupportedArch { machine: machine.0 });
    }
    let segments = header
        .program_headers(endian, data)
        .map_err(|e| TableError::NotElf(Some(e)))?
        .iter()
        .filter(|p| p.p_type(endian) == PT_LOAD)
        .map(|p| LoadSegment {
            file_offset: p.p_offset(endian),
            vaddr: p.p_vaddr(endian),
            file_size: p.p_filesz(endian),
            executable: p.p_flags(endian).contains(PF_X),
        })
        .collect();
    let table = header
        .sections(endian, data)
        .map_err(|e| TableError::NotElf(Some(e)))?;
    let find = |name: &[u8]| table.section_by_name(endian, name).map(|(_, s)| s);
    let address = |name: &[u8]| find(name).map(|s| s.sh_addr(endian));
    let header = |name: &[u8]| find(name).map(|s| (*s, s.sh_addr(endian)));
    let found = Found {
        endian,
        eh_frame: header(b".eh_frame"),
        eh_frame_hdr: address(b".eh_frame_hdr"),
        debug_frame: header(b".debug_frame"),
        text: address(b".text"),
        got: address(b".got"),
    };
    Ok((found, segments))
}

/// The bytes of a section; `None` when it holds none in the file (`SHT_NOBITS`,
/// as in a file of separated debug info) or is compressed (only `.debug_frame`
/// ever is, and reading it would need zlib or zstd for objects that nearly
/// always have `.eh_frame` as well).
fn contents<'d, R: ReadRef<'d>>(
    s: &SectionHeader64<Endianness>,
    endian: Endianness,
    data: R,
) -> Result<Option<&'d [u8]>, TableError> {
    if s.sh_type(endian) == SHT_NOBITS || s.sh_flags(endian).contains(SHF_COMPRESSED) {
        return Ok(None);
    }
    let bytes = s
        .data(endian, data)
        .map_err(|e| TableError::NotElf(Some(e)))?;
    Ok((!bytes.is_empty()).then_some(bytes))
}

/// [`contents`] of a section of `file` (`len` bytes long), read into a buffer
/// of its own. A section that does not lie inside the file fails as
/// [`contents`] says (through `cache`); a read that comes short (the file
/// shrank meanwhile) is an I/O error, worth trying again.
fn read_section(
    file: &File,
    len: u64,
    s: &SectionHeader64<Endianness>,
    endian: Endianness,
    cache: &ReadCache<&File>,
) -> Result<Option<Vec<u8>>, TableError> {
    let (offset, size) = (s.sh_offset(endian), s.sh_size(endian));
    let inside = offset.checked_add(size).is_some_and(|end| end <= len);
    let readable = s.sh_type(endian) != SHT_NOBITS && !s.sh_flags(endian).contains(SHF_COMPRESSED);
    if !inside || !readable || size == 0 {
        return contents(s, endian, cache).map(|b| b.map(<[u8]>::to_vec));
    }
    let size_usize =
        usize::try_from(size).map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
    let mut bytes = super::huge::vec(size_usize);
    let mut f = file;
    f.seek(SeekFrom::Start(offset))?;
    // read_to_end fills the spare capacity as is: no zeroing first
    f.take(size).read_to_end(&mut bytes)?;
    if bytes.len() != size_usize {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
    }
    Ok(Some(bytes))
}
