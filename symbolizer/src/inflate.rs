//! Separate debug files whose DWARF is compressed (Debian's libc6-dbg and every
//! `-dbgsym` package: zlib, `SHF_COMPRESSED`) are inflated once into a cache and
//! read from there. blazesym inflates every DWARF section of such a file each
//! time it opens it, the location lists it never reads included: libc6-dbg's
//! cost 40 ms of CPU per capture here, most of what a short capture spends, and
//! every process's stack ends in the C library.
//!
//! The copy keeps the original bytes where they were (program headers and notes
//! stay valid), appends each inflated section, then a new section header table
//! that points at them. perf keeps a build-id cache in the same spirit
//! (~/.debug).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use object::elf::{CompressionHeader64, FileHeader64, SectionHeader64};
use object::read::elf::{FileHeader, SectionHeader};
use object::{LittleEndian as LE, ReadCache, ReadRef};

use crate::debuginfod::Cache;

/// Debug files with less compressed DWARF than this are read as they are.
pub const MIN_COMPRESSED: u64 = 256 << 10;
/// The most inflated DWARF one copy may hold: a bound on what a section header
/// can make a root process write.
pub const MAX_INFLATED: u64 = 4 << 30;
/// The default cap of the cache.
pub const CACHE_BYTES: u64 = 2 << 30;
/// DWARF inflates 3 to 10 times; zlib can reach 1000: a section that claims
/// more than this is a bomb, not debug info, and the file is left to blazesym.
pub const MAX_RATIO: u64 = 64;

const SHF_COMPRESSED: u64 = object::elf::SHF_COMPRESSED.0;
const ELFCOMPRESS_ZLIB: u32 = object::elf::ELFCOMPRESS_ZLIB.0;
/// `e_shoff` in a 64-bit ELF header.
const E_SHOFF_AT: u64 = 40;

/// Why a file was not inflated (the caller then reads the original).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Not a 64-bit little-endian ELF file with sane section headers.
    #[error("not an ELF file this reads: {0}")]
    Elf(&'static str),
    /// A section inflated to another size than its header said.
    #[error("section {0}: inflated to {1} bytes, its header says {2}")]
    Size(usize, u64, u64),
    /// More inflated DWARF than [`MAX_INFLATED`], or a section that claims
    /// more than [`MAX_RATIO`] times its compressed size.
    #[error("more than {MAX_INFLATED} bytes of inflated DWARF, or a section inflating more than {MAX_RATIO} times")]
    TooBig,
}

/// A compressed DWARF section: its index, where its compressed bytes are, and
/// its size and alignment inflated.
struct Compressed {
    index: usize,
    data_at: u64,
    data_len: u64,
    size: u64,
    align: u64,
}

/// The zlib-compressed `.debug_*` sections of an ELF file (others are left as
/// they are: blazesym reads them).
fn compressed_sections(file: &ReadCache<File>) -> Result<Vec<Compressed>, Error> {
    let header = FileHeader64::<LE>::parse(file).map_err(|_| Error::Elf("no ELF header"))?;
    let endian = header
        .endian()
        .map_err(|_| Error::Elf("not little-endian"))?;
    let sections = header
        .sections(endian, file)
        .map_err(|_| Error::Elf("no section table"))?;
    let mut found = Vec::new();
    for (index, s) in sections.iter().enumerate() {
        if s.sh_flags(endian).0 & SHF_COMPRESSED == 0 {
            continue;
        }
        let name = sections.section_name(endian, s).unwrap_or_default();
        if !name.starts_with(b".debug_") {
            continue;
        }
        let at = s.sh_offset(endian);
        let len = s.sh_size(endian);
        let chdr_len = std::mem::size_of::<CompressionHeader64<LE>>() as u64;
        let Ok(chdr) = file.read_at::<CompressionHeader64<LE>>(at) else {
            continue;
        };
        if chdr.ch_type.get(endian).0 != ELFCOMPRESS_ZLIB || len < chdr_len {
            continue;
        }
        found.push(Compressed {
            index,
            data_at: at + chdr_len,
            data_len: len - chdr_len,
            size: chdr.ch_size.get(endian),
            align: chdr.ch_addralign.get(endian).max(1),
        });
    }
    Ok(found)
}

/// Bytes of compressed DWARF in the ELF file at `path` (0 when it cannot be read).
pub fn compressed_bytes(path: &Path) -> u64 {
    let Ok(file) = File::open(path) else {
        return 0;
    };
    let file = ReadCache::new(file);
    compressed_sections(&file)
        .map(|c| c.iter().map(|c| c.data_len).sum())
        .unwrap_or(0)
}

/// Writes to `out` a copy of the ELF file `src` with its compressed DWARF
/// sections inflated.
pub fn inflate(src: &File, out: &mut File) -> Result<(), Error> {
    let cache = ReadCache::new(src.try_clone()?);
    let header = FileHeader64::<LE>::parse(&cache).map_err(|_| Error::Elf("no ELF header"))?;
    let endian = header
        .endian()
        .map_err(|_| Error::Elf("not little-endian"))?;
    if usize::from(header.e_shentsize.get(endian)) != std::mem::size_of::<SectionHeader64<LE>>() {
        return Err(Error::Elf("odd section header size"));
    }
    let mut headers: Vec<SectionHeader64<LE>> = header
        .section_headers(endian, &cache)
        .map_err(|_| Error::Elf("no section table"))?
        .to_vec();
    let compressed = compressed_sections(&cache)?;
    let ratio_ok = |c: &Compressed| c.size <= c.data_len.saturating_mul(MAX_RATIO).max(1 << 20);
    if compressed.iter().map(|c| c.size).sum::<u64>() > MAX_INFLATED
        || !compressed.iter().all(ratio_ok)
    {
        return Err(Error::TooBig);
    }
    let mut original = src.try_clone()?;
    original.seek(SeekFrom::Start(0))?;
    let mut end = io::copy(&mut original, out)?;
    for c in &compressed {
        end = pad_to(out, end, c.align.max(8))?;
        let bytes = cache
            .read_bytes_at(c.data_at, c.data_len)
            .map_err(|_| Error::Elf("a section lies past the end of the file"))?;
        let mut inflater = flate2::read::ZlibDecoder::new(bytes).take(c.size);
        let n = io::copy(&mut inflater, out)?;
        if n != c.size {
            return Err(Error::Size(c.index, n, c.size));
        }
        let h = &mut headers[c.index];
        h.sh_offset.set(endian, end);
        h.sh_size.set(endian, c.size);
        h.sh_addralign.set(endian, c.align);
        let flags = h.sh_flags.get(endian).0 & !SHF_COMPRESSED;
        h.sh_flags.set(endian, object::elf::SectionFlags(flags));
        end += n;
    }
    let table_at = pad_to(out, end, 8)?;
    for h in &headers {
        out.write_all(object::pod::bytes_of(h))?;
    }
    out.seek(SeekFrom::Start(E_SHOFF_AT))?;
    out.write_all(&table_at.to_le_bytes())?;
    out.flush()?;
    Ok(())
}

fn pad_to(out: &mut File, at: u64, align: u64) -> io::Result<u64> {
    let to = at.div_ceil(align) * align;
    out.write_all(&vec![0u8; (to - at) as usize])?;
    Ok(to)
}

/// The separate debug file of the object at `path`, found by its build id as
/// `DIR/.build-id/xx/yyyy.debug`, with that build id.
pub fn debug_file_of(path: &Path, dirs: &[PathBuf]) -> Option<(Vec<u8>, PathBuf)> {
    let id = crate::buildid::read(&File::open(path).ok()?)?;
    let hex = crate::debuginfod::hex(&id);
    if hex.len() < 3 {
        return None;
    }
    let (head, tail) = hex.split_at(2);
    dirs.iter()
        .map(|d| d.join(".build-id").join(head).join(format!("{tail}.debug")))
        .find(|p| p.is_file())
        .map(|p| (id, p))
}

/// The inflated copy of `debug`, the debug file of build id `id`: from the cache,
/// else made now when the file has at least [`MIN_COMPRESSED`] bytes of
/// compressed DWARF. None: read the original.
pub fn inflated(cache: &Cache, id: &[u8], debug: &Path) -> Option<PathBuf> {
    if let Some(copy) = cache.get(id) {
        // a copy is trusted as far as its build id: a torn or foreign file is
        // made again
        let same = File::open(&copy)
            .ok()
            .and_then(|f| crate::buildid::read_any(&f))
            .is_some_and(|got| got == id);
        if same {
            return Some(copy);
        }
    }
    if compressed_bytes(debug) < MIN_COMPRESSED {
        return None;
    }
    let src = File::open(debug).ok()?;
    let mut temp = cache.temp().ok()?;
    inflate(&src, temp.as_file_mut()).ok()?;
    cache.store(id, temp).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A debug file of our own, its DWARF compressed by the linker, when the
    /// toolchain here can make one.
    fn compressed_fixture(dir: &Path) -> Option<PathBuf> {
        let src = dir.join("f.c");
        std::fs::write(
            &src,
            "static int twice(int x) { return 2 * x; }\n\
             int __attribute__((noinline)) work(int x) { return twice(x) + 1; }\n\
             int main(int c, char **v) { (void)v; return work(c); }\n",
        )
        .ok()?;
        let out = dir.join("f");
        let ok = std::process::Command::new("gcc")
            .args(["-O2", "-g", "-gz=zlib", "-Wl,--build-id"])
            .arg(&src)
            .arg("-o")
            .arg(&out)
            .status()
            .ok()?
            .success();
        ok.then_some(out)
    }

    #[test]
    fn an_inflated_copy_has_the_same_dwarf_uncompressed() {
        let dir = tempfile::tempdir().unwrap();
        let Some(f) = compressed_fixture(dir.path()) else {
            eprintln!("skipped: gcc cannot build a file with compressed DWARF here");
            return;
        };
        assert!(
            compressed_bytes(&f) > 0,
            "gcc -gz wrote no compressed DWARF"
        );
        let copy = dir.path().join("copy");
        let mut out = File::create_new(&copy).unwrap();
        inflate(&File::open(&f).unwrap(), &mut out).unwrap();
        drop(out);
        assert_eq!(compressed_bytes(&copy), 0);
        // readelf agrees the copy is a well-formed ELF file with the same sections
        let sections = |p: &Path| {
            let out = std::process::Command::new("readelf")
                .args(["-S", "-W"])
                .arg(p)
                .output()
                .unwrap();
            assert!(out.status.success());
            String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
                .filter(|n| n.starts_with('.'))
                .collect::<Vec<_>>()
        };
        assert_eq!(sections(&f), sections(&copy));
        // and the same DWARF: readelf decompresses the original as it reads it
        let info = |p: &Path| {
            let out = std::process::Command::new("readelf")
                .arg("--debug-dump=info")
                .arg(p)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains("DW_AT_name"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let names = info(&f);
        assert!(names.iter().any(|l| l.contains("twice")), "{names:?}");
        assert_eq!(names, info(&copy));
        // the symbolizer names the same frames through either
        let s = crate::symbolize::Symbolizer::new(Default::default());
        let nm = std::process::Command::new("nm").arg(&f).output().unwrap();
        let work = String::from_utf8(nm.stdout)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_suffix(" T work"))
            .map(|a| u64::from_str_radix(a, 16).unwrap())
            .expect("nm names work");
        let a = s.debug_file(&f, &[work]).unwrap();
        let b = s.debug_file(&copy, &[work]).unwrap();
        assert_eq!(a, b);
        assert_eq!(a[0][0].name, "work");
    }

    #[test]
    fn a_truncated_file_is_refused_not_copied() {
        let dir = tempfile::tempdir().unwrap();
        let Some(f) = compressed_fixture(dir.path()) else {
            eprintln!("skipped: gcc cannot build a file with compressed DWARF here");
            return;
        };
        let bytes = std::fs::read(&f).unwrap();
        let cut = dir.path().join("cut");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let mut out = File::create_new(dir.path().join("copy")).unwrap();
        assert!(inflate(&File::open(&cut).unwrap(), &mut out).is_err());
        // a section that claims to inflate a thousand times: refused before
        // anything is written
        let debug_info = compressed_sections(&ReadCache::new(File::open(&f).unwrap()))
            .unwrap()
            .into_iter()
            .max_by_key(|c| c.data_len)
            .unwrap();
        let mut forged = bytes.clone();
        let at = (debug_info.data_at - 24 + 8) as usize; // ch_size
        let claim = (debug_info.data_len * 1000).max(64 << 20);
        forged[at..at + 8].copy_from_slice(&claim.to_le_bytes());
        let bomb = dir.path().join("bomb");
        std::fs::write(&bomb, &forged).unwrap();
        let mut out = File::create_new(dir.path().join("bomb-copy")).unwrap();
        assert!(matches!(
            inflate(&File::open(&bomb).unwrap(), &mut out),
            Err(Error::TooBig)
        ));
        assert_eq!(out.metadata().unwrap().len(), 0);
        let garbage = dir.path().join("garbage");
        std::fs::write(&garbage, vec![0x7fu8; 4096]).unwrap();
        assert!(inflate(&File::open(&garbage).unwrap(), &mut out).is_err());
        assert_eq!(compressed_bytes(&garbage), 0);
    }

    #[test]
    fn the_c_library_is_named_the_same_through_its_inflated_debug_file() {
        let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
        let dirs = [PathBuf::from("/usr/lib/debug")];
        let Some((_, debug)) = debug_file_of(libc, &dirs) else {
            eprintln!("skipped: no separate debug file of the C library (libc6-dbg)");
            return;
        };
        if compressed_bytes(&debug) < MIN_COMPRESSED {
            eprintln!("skipped: the C library's debug file is not compressed");
            return;
        }
        let cache = tempfile::tempdir().unwrap();
        let plain = crate::symbolize::Symbolizer::new(Default::default());
        let cached = crate::symbolize::Symbolizer::new(crate::symbolize::Options {
            inflate_cache: Some(cache.path().to_path_buf()),
            ..Default::default()
        });
        // every 97th byte of the first 1.5 MiB of code
        let offsets: Vec<u64> = (0x28000..0x1a0000).step_by(97).collect();
        let a = plain.object(libc, &offsets).unwrap();
        let b = cached.object(libc, &offsets).unwrap();
        let named = a.iter().filter(|f| !f.is_empty()).count();
        assert!(
            named > offsets.len() / 2,
            "{named} of {} named",
            offsets.len()
        );
        assert!(a.iter().any(|f| f.len() > 1), "no inlined frames read");
        for (o, (x, y)) in offsets.iter().zip(a.iter().zip(&b)) {
            assert_eq!(x, y, "offset {o:#x}");
        }
        assert!(
            std::fs::read_dir(cache.path()).unwrap().count() > 0,
            "nothing cached"
        );
    }
}
