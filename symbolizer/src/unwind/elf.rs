//! Finding the CFI sections and the loadable segments of an ELF object. A file is
//! read through a cache of the ranges asked for, not whole: librustc_driver is
//! 150 MB and its `.eh_frame` 6 MB, and copying the rest would cost more than
//! building the table.

use std::fs::File;
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
        let cache = ReadCache::new(file);
        from_elf(&cache)
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
    let bytes = |name: &[u8]| match find(name) {
        Some(s) => contents(s, endian, data).map(|b| b.map(|b| (b, s.sh_addr(endian)))),
        None => Ok(None),
    };
    let sections = CfiSections {
        eh_frame: bytes(b".eh_frame")?,
        eh_frame_hdr: address(b".eh_frame_hdr"),
        debug_frame: bytes(b".debug_frame")?.map(|(b, _)| b),
        text: address(b".text"),
        got: address(b".got"),
    };
    Ok((sections, segments))
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
