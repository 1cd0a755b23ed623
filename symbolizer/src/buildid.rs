//! An ELF file's GNU build id, read from its PT_NOTE segments with a few bounded
//! reads: the files are whatever processes map, so a hostile or huge note cannot
//! make this read much or long (a general ELF reader would follow the file's own
//! sizes).

use std::fs::File;
use std::os::unix::fs::FileExt;

/// The most program headers looked at.
const MAX_PHDRS: usize = 128;
/// The largest note segment read.
const MAX_NOTES: u64 = 64 << 10;
const PT_NOTE: u32 = 4;
const NT_GNU_BUILD_ID: u32 = 3;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The build id of a 64-bit little-endian ELF file (x86-64's kind), `None` when
/// it has none or is not such a file.
pub fn read(file: &File) -> Option<Vec<u8>> {
    let header = header(file)?;
    let table = Table {
        offset: u64_at(&header, 32)?,
        entry_size: usize::from(u16_at(&header, 54)?),
        entries: usize::from(u16_at(&header, 56)?).min(MAX_PHDRS),
        min_entry_size: 56,
        note_type: PT_NOTE,
        // p_type, p_offset, p_filesz
        type_at: 0,
        offset_at: 8,
        size_at: 32,
    };
    table.build_id(file)
}

/// The most section headers looked at.
const MAX_SHDRS: usize = 4096;
const SHT_NOTE: u32 = 7;
const PT_LOAD: u32 = 1;

/// The ELF header of a 64-bit little-endian file.
fn header(file: &File) -> Option<[u8; 64]> {
    let mut header = [0u8; 64];
    file.read_exact_at(&mut header, 0).ok()?;
    // ELFCLASS64, ELFDATA2LSB
    (&header[..4] == b"\x7fELF" && header[4] == 2 && header[5] == 1).then_some(header)
}

/// The build id of a file whose program headers may not lead to it: a debug
/// file (`objcopy --only-keep-debug`, what debuginfod serves) keeps its notes
/// in sections. Tries the segments, then the note sections.
pub fn read_any(file: &File) -> Option<Vec<u8>> {
    if let Some(id) = read(file) {
        return Some(id);
    }
    let header = header(file)?;
    let shoff = u64_at(&header, 40)?;
    if shoff == 0 {
        return None;
    }
    let table = Table {
        offset: shoff,
        entry_size: usize::from(u16_at(&header, 58)?),
        entries: usize::from(u16_at(&header, 60)?).min(MAX_SHDRS),
        min_entry_size: 64,
        note_type: SHT_NOTE,
        // sh_type, sh_offset, sh_size
        type_at: 4,
        offset_at: 24,
        size_at: 32,
    };
    table.build_id(file)
}

/// A table of program or section headers, and where in an entry its type, the
/// file offset and the size of what it describes lie.
struct Table {
    offset: u64,
    entry_size: usize,
    entries: usize,
    min_entry_size: usize,
    note_type: u32,
    type_at: usize,
    offset_at: usize,
    size_at: usize,
}

impl Table {
    /// The build id in the first of the table's notes that holds one; every
    /// read bounded (MAX_NOTES, and the entries capped by the caller).
    fn build_id(&self, file: &File) -> Option<Vec<u8>> {
        if self.entry_size < self.min_entry_size {
            return None;
        }
        let mut table = vec![0u8; self.entry_size * self.entries];
        file.read_exact_at(&mut table, self.offset).ok()?;
        for e in table.chunks_exact(self.entry_size) {
            if u32_at(e, self.type_at)? != self.note_type {
                continue;
            }
            let (offset, size) = (u64_at(e, self.offset_at)?, u64_at(e, self.size_at)?);
            if size == 0 || size > MAX_NOTES {
                continue;
            }
            let mut notes = vec![0u8; size as usize];
            if file.read_exact_at(&mut notes, offset).is_err() {
                continue;
            }
            if let Some(id) = find_build_id(&notes) {
                return Some(id);
            }
        }
        None
    }
}

/// A loadable segment: `filesz` bytes at file offset `offset` are mapped at
/// virtual address `vaddr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// `p_offset`.
    pub offset: u64,
    /// `p_vaddr`.
    pub vaddr: u64,
    /// `p_filesz`.
    pub filesz: u64,
}

/// The PT_LOAD segments of a 64-bit little-endian ELF file (bounded reads).
pub fn load_segments(file: &File) -> Vec<Segment> {
    let Some(header) = header(file) else {
        return Vec::new();
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (
        u64_at(&header, 32),
        u16_at(&header, 54).map(usize::from),
        u16_at(&header, 56).map(|n| usize::from(n).min(MAX_PHDRS)),
    ) else {
        return Vec::new();
    };
    if phentsize < 56 {
        return Vec::new();
    }
    let mut phdrs = vec![0u8; phentsize * phnum];
    if file.read_exact_at(&mut phdrs, phoff).is_err() {
        return Vec::new();
    }
    phdrs
        .chunks_exact(phentsize)
        .filter(|ph| u32_at(ph, 0) == Some(PT_LOAD))
        .filter_map(|ph| {
            Some(Segment {
                offset: u64_at(ph, 8)?,
                vaddr: u64_at(ph, 16)?,
                filesz: u64_at(ph, 32)?,
            })
        })
        .collect()
}

/// The virtual address (as the ELF file lays it out) of a file offset.
pub fn virtual_address(segments: &[Segment], file_offset: u64) -> Option<u64> {
    segments
        .iter()
        .find(|s| s.offset <= file_offset && file_offset - s.offset < s.filesz)
        .map(|s| s.vaddr + (file_offset - s.offset))
}

/// The NT_GNU_BUILD_ID note's descriptor in a note segment (or in
/// /sys/kernel/notes, the running kernel's).
pub fn find_build_id(notes: &[u8]) -> Option<Vec<u8>> {
    let align4 = |n: usize| n.checked_add(3).map(|n| n & !3);
    let mut at = 0usize;
    while at + 12 <= notes.len() {
        let namesz = u32_at(notes, at)? as usize;
        let descsz = u32_at(notes, at + 4)? as usize;
        let kind = u32_at(notes, at + 8)?;
        let name_at = at + 12;
        let desc_at = name_at.checked_add(align4(namesz)?)?;
        let end = desc_at.checked_add(align4(descsz)?)?;
        let name = notes.get(name_at..name_at.checked_add(namesz)?)?;
        let desc = notes.get(desc_at..desc_at.checked_add(descsz)?)?;
        if kind == NT_GNU_BUILD_ID && name == b"GNU\0" && !desc.is_empty() && desc.len() <= 64 {
            return Some(desc.to_vec());
        }
        at = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn reads_what_readelf_reads() {
        let path = "/bin/ls";
        let out = std::process::Command::new("readelf")
            .args(["-n", path])
            .output()
            .expect("readelf (binutils) runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let expected = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Build ID: "))
            .expect("/bin/ls has a build id")
            .trim()
            .to_string();
        let got = read(&File::open(path).unwrap()).expect("a build id");
        assert_eq!(hex(&got), expected);
    }

    #[test]
    fn a_debug_only_file_has_its_build_id_in_sections() {
        let dir = tempfile::tempdir().unwrap();
        let debug = dir.path().join("ls.debug");
        let ok = std::process::Command::new("objcopy")
            .arg("--only-keep-debug")
            .arg("/bin/ls")
            .arg(&debug)
            .status()
            .expect("objcopy (binutils) runs");
        assert!(ok.success());
        let ls = read(&File::open("/bin/ls").unwrap());
        assert!(ls.is_some());
        assert_eq!(read_any(&File::open(&debug).unwrap()), ls);
    }

    #[test]
    fn file_offsets_become_virtual_addresses_through_the_segments() {
        let segs = load_segments(&File::open("/bin/ls").unwrap());
        assert!(!segs.is_empty());
        let text = segs[1];
        assert_eq!(
            virtual_address(&segs, text.offset + 5),
            Some(text.vaddr + 5)
        );
        assert_eq!(virtual_address(&[], 5), None);
    }

    #[test]
    fn garbage_and_truncated_files_have_none() {
        let ls = std::fs::read("/bin/ls").unwrap();
        for bytes in [
            Vec::new(),
            b"\x7fELF".to_vec(),
            vec![0xffu8; 4096],
            ls[..100].to_vec(),
            ls[..ls.len() / 3].to_vec(),
        ] {
            let mut f = tempfile::tempfile().unwrap();
            f.write_all(&bytes).unwrap();
            // anything but a panic; a cut file may still hold its notes
            let _ = read(&f);
            let _ = read_any(&f);
            let _ = load_segments(&f);
        }
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&vec![0xffu8; 4096]).unwrap();
        assert_eq!(read(&f), None);
    }

    #[test]
    fn notes_that_overrun_their_segment_are_refused() {
        let mut n = Vec::new();
        n.extend(4u32.to_le_bytes());
        n.extend(u32::MAX.to_le_bytes()); // descsz past the end
        n.extend(NT_GNU_BUILD_ID.to_le_bytes());
        n.extend(b"GNU\0");
        n.extend([1, 2, 3]);
        assert_eq!(find_build_id(&n), None);
        let mut ok = Vec::new();
        ok.extend(4u32.to_le_bytes());
        ok.extend(3u32.to_le_bytes());
        ok.extend(NT_GNU_BUILD_ID.to_le_bytes());
        ok.extend(b"GNU\0");
        ok.extend([1, 2, 3, 0]);
        assert_eq!(find_build_id(&ok), Some(vec![1, 2, 3]));
    }
}
