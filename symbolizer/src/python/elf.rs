//! Finding CPython in an object file: the `_PyRuntime` symbol (exported by every
//! build, Debian's stripped python3.11 included, as its dynamic symbols are kept),
//! the version (`Py_Version` from 3.11, else the file's name) and the layout of
//! that version.

use std::fs::File;
use std::path::Path;

use object::{Object, ObjectSegment, ObjectSymbol, ReadCache};

use super::layout::Layout;

/// A CPython runtime found in an object.
#[derive(Debug, Clone)]
pub struct Interpreter {
    /// The version, where the object says it.
    pub version: Option<(u8, u8)>,
    /// The layout to read it with, or why it cannot be read.
    pub layout: Result<Layout, String>,
    /// `_PyRuntime`'s address in the object.
    runtime: u64,
    /// `PyCode_Type`'s and `PyUnicode_Type`'s, where the object exports them.
    types: Option<(u64, u64)>,
    /// The loadable segments: (file offset, vaddr).
    segments: Vec<(u64, u64, u64)>,
}

/// `PY_VERSION_HEX`: (major, minor).
fn from_hex(hex: u32) -> (u8, u8) {
    (((hex >> 24) & 0xff) as u8, ((hex >> 16) & 0xff) as u8)
}

/// The version a file's name gives: `python3.10`, `libpython3.10.so.1.0`.
pub fn version_from_name(path: &Path) -> Option<(u8, u8)> {
    let name = path.file_name()?.to_str()?;
    let at = name.find("python")? + "python".len();
    let rest = &name[at..];
    let (major, rest) = rest.split_once('.')?;
    let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((major.parse().ok()?, minor.parse().ok()?))
}

impl Interpreter {
    /// Reads `path`; `Ok(None)` when it defines no `_PyRuntime`.
    pub fn inspect(path: &Path) -> std::io::Result<Option<Interpreter>> {
        let file = File::open(path)?;
        let cache = ReadCache::new(file);
        let obj = object::File::parse(&cache)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        let segments: Vec<(u64, u64, u64)> = obj
            .segments()
            .map(|s| {
                let (off, size) = s.file_range();
                (off, size, s.address())
            })
            .collect();
        let find = |name: &str| {
            obj.dynamic_symbols()
                .chain(obj.symbols())
                .find(|s| s.name() == Ok(name) && !s.is_undefined())
                .map(|s| s.address())
        };
        let Some(runtime) = find("_PyRuntime") else {
            return Ok(None);
        };
        let types = find("PyCode_Type").zip(find("PyUnicode_Type"));
        let mut interp = Interpreter {
            version: None,
            layout: Err(String::new()),
            runtime,
            types,
            segments,
        };
        let read = |vaddr: u64, len: usize| -> Option<Vec<u8>> {
            let off = interp.file_offset(vaddr)?;
            let bytes = object::ReadRef::read_bytes_at(&cache, off, len as u64).ok()?;
            Some(bytes.to_vec())
        };
        let hex = find("Py_Version")
            .and_then(|a| read(a, 4))
            .and_then(|b| Some(u32::from_le_bytes(b.get(..4)?.try_into().ok()?)));
        let version = hex.map(from_hex).or_else(|| version_from_name(path));
        let layout = match version {
            Some((3, minor)) if minor >= 13 => read(runtime, 71 * 8)
                .ok_or_else(|| "_PyRuntime unreadable".to_string())
                .and_then(|b| Layout::from_debug_offsets(&b)),
            Some((3, minor)) => {
                Layout::known(minor).ok_or_else(|| format!("3.{minor} is not supported"))
            }
            Some((major, minor)) => Err(format!("{major}.{minor} is not supported")),
            None => Err("the version is unknown".into()),
        };
        interp.version = version;
        interp.layout = layout;
        Ok(Some(interp))
    }

    /// Where the object's address `vaddr` lies in its file, if it is in one.
    fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|&&(_, size, a)| vaddr >= a && vaddr < a + size)
            .map(|&(off, _, a)| off + (vaddr - a))
    }

    /// What the object's addresses must be moved by in a process that maps its
    /// file offset `pgoff` at `start`.
    fn bias(&self, start: u64, pgoff: u64) -> Option<u64> {
        // the segment that holds file offset pgoff gives vaddr - offset
        let &(off, _, vaddr) = self
            .segments
            .iter()
            .find(|&&(off, size, _)| size > 0 && pgoff >= off & !0xfff && pgoff < off + size)?;
        Some(
            start
                .wrapping_sub(pgoff)
                .wrapping_sub(vaddr.wrapping_sub(off)),
        )
    }

    /// `_PyRuntime`'s address in a process that maps the object's file offset
    /// `pgoff` at `start`.
    pub fn runtime_at(&self, start: u64, pgoff: u64) -> Option<u64> {
        Some(self.runtime.wrapping_add(self.bias(start, pgoff)?))
    }

    /// `PyCode_Type`'s and `PyUnicode_Type`'s addresses in that process.
    pub fn types_at(&self, start: u64, pgoff: u64) -> Option<(u64, u64)> {
        let bias = self.bias(start, pgoff)?;
        self.types
            .map(|(c, s)| (c.wrapping_add(bias), s.wrapping_add(bias)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_names() {
        let v = |s: &str| version_from_name(Path::new(s));
        assert_eq!(v("/usr/bin/python3.11"), Some((3, 11)));
        assert_eq!(v("/x/lib/libpython3.10.so.1.0"), Some((3, 10)));
        assert_eq!(v("/usr/bin/python3"), None);
        assert_eq!(v("/usr/bin/perl"), None);
    }

    #[test]
    fn the_runtime_moves_with_the_mapping() {
        let i = Interpreter {
            version: Some((3, 12)),
            layout: Err(String::new()),
            runtime: 0x5a_0000,
            types: Some((0x5b_0000, 0x5c_0000)),
            // text at file 0x1000.. vaddr 0x1000..; data at file 0x3f_0000, vaddr 0x3f_1000
            segments: vec![
                (0, 0x1000, 0),
                (0x1000, 0x20_0000, 0x1000),
                (0x3f_0000, 0x20_0000, 0x3f_1000),
            ],
        };
        // text mapped at 0x7f00_0000_1000 from offset 0x1000: bias 0x7f00_0000_0000
        assert_eq!(
            i.runtime_at(0x7f00_0000_1000, 0x1000),
            Some(0x7f00_005a_0000)
        );
        assert_eq!(
            i.types_at(0x7f00_0000_1000, 0x1000),
            Some((0x7f00_005b_0000, 0x7f00_005c_0000))
        );
        // a non-PIE executable mapped where it was linked
        assert_eq!(i.runtime_at(0x1000, 0x1000), Some(0x5a_0000));
        assert_eq!(i.runtime_at(0x1000, 0x90_0000), None);
    }

    #[test]
    fn the_machines_pythons_are_found_where_present() {
        let home = std::env::var("HOME").unwrap_or_default();
        let pyenv =
            |v: &str, m: &str| format!("{home}/.pyenv/versions/{v}/lib/libpython{m}.so.1.0");
        for (path, want) in [
            ("/usr/bin/python3.11".to_string(), (3, 11)),
            (pyenv("3.10.13", "3.10"), (3, 10)),
            (pyenv("3.12.1", "3.12"), (3, 12)),
            (pyenv("3.13.0", "3.13"), (3, 13)),
        ] {
            if !Path::new(&path).exists() {
                eprintln!("{path} absent: skipped");
                continue;
            }
            let i = Interpreter::inspect(Path::new(&path)).unwrap().unwrap();
            assert_eq!(i.version, Some(want), "{path}");
            assert!(i.types.is_some(), "{path}: PyCode_Type, PyUnicode_Type");
            let l = i.layout.unwrap();
            assert_eq!(l.version, want);
            if want == (3, 13) {
                assert_eq!((l.interp_head, l.tstate_frame), (632, 72), "{path}");
            }
        }
        assert!(Interpreter::inspect(Path::new("/bin/sh"))
            .unwrap()
            .is_none());
    }
}
