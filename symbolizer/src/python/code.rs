//! Naming a code object: its qualified name, file and first line, and for
//! `--lines` its line table, read from the process's memory with a version's
//! [`Layout`]. Everything read is untrusted: lengths are bounded, strings not
//! compact or of an unknown kind are refused.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::layout::{Layout, CODE_HEAD_BYTES};
use super::lines::{self, Format, LineTable};

/// The most characters of a name or file name read.
const MAX_CHARS: usize = 1024;

/// A process's memory, or a stand-in for tests.
pub trait Memory {
    /// Fills `buf` from `addr`; false when any byte cannot be read.
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool;
}

/// `/proc/PID/mem`, opened while the process lives.
#[derive(Debug)]
pub struct ProcMem(File);

impl ProcMem {
    /// Opens the memory of `pid` (root, or a process of the same user that
    /// ptrace would allow).
    pub fn open(pid: u32) -> std::io::Result<ProcMem> {
        File::open(format!("/proc/{pid}/mem")).map(ProcMem)
    }
}

impl Memory for ProcMem {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        self.0.read_exact_at(buf, addr).is_ok()
    }
}

/// What a Python frame shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeName {
    /// `co_qualname` (3.11+) or `co_name`.
    pub name: String,
    /// `co_filename`.
    pub file: String,
    /// `co_firstlineno`: the function's first line.
    pub line: u32,
    /// `co_linetable`, read for `--lines` only.
    pub table: Option<LineTable>,
}

impl CodeName {
    /// The line of the instruction a frame word of this code object says
    /// (`--lines`); `None` where it is not known.
    pub fn line_of(&self, word: u64) -> Option<u32> {
        lines::line_at(self.table.as_ref()?, self.line, lines::index_of(word)?)
    }
}

fn u64_at(b: &[u8], at: u16) -> Option<u64> {
    let at = usize::from(at);
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Reads the code object at `addr`, with its line table where `lines` is set;
/// with `types` (the addresses of `PyCode_Type` and `PyUnicode_Type`), only an
/// object of that type, with strings of theirs.
pub fn read_code(
    mem: &dyn Memory,
    l: &Layout,
    types: Option<(u64, u64)>,
    addr: u64,
    lines: bool,
) -> Option<CodeName> {
    let mut head = [0u8; CODE_HEAD_BYTES as usize];
    if addr == 0 || !mem.read(addr, &mut head) {
        return None;
    }
    if types.is_some_and(|(code, _)| u64_at(&head, OB_TYPE) != Some(code)) {
        return None;
    }
    let str_type = types.map(|(_, s)| s);
    let name_at = l.code_qualname.unwrap_or(l.code_name);
    let name = read_str(mem, l, str_type, u64_at(&head, name_at)?)
        .or_else(|| read_str(mem, l, str_type, u64_at(&head, l.code_name)?))?;
    let file =
        read_str(mem, l, str_type, u64_at(&head, l.code_filename)?).unwrap_or_else(|| "?".into());
    let at = usize::from(l.code_firstlineno);
    let line = i32::from_le_bytes(head.get(at..at + 4)?.try_into().ok()?);
    let table = if lines {
        u64_at(&head, l.code_linetable).and_then(|t| read_table(mem, Format::of(l), t))
    } else {
        None
    };
    Some(CodeName {
        name,
        file,
        line: u32::try_from(line).unwrap_or(0),
        table,
    })
}

/// Reads a `bytes` object (`co_linetable`), up to [`lines::MAX_TABLE`] of it.
fn read_table(mem: &dyn Memory, format: Format, addr: u64) -> Option<LineTable> {
    // PyBytesObject: ob_size at 16, the bytes at 32
    let mut head = [0u8; 32];
    if addr == 0 || !mem.read(addr, &mut head) {
        return None;
    }
    let len = usize::try_from(i64::from_le_bytes(head[16..24].try_into().ok()?)).ok()?;
    let mut bytes = vec![0u8; len.min(lines::MAX_TABLE)];
    if !mem.read(addr + 32, &mut bytes) {
        return None;
    }
    Some(LineTable {
        format,
        bytes: bytes.into(),
    })
}

/// Where every object keeps its type.
const OB_TYPE: u16 = 8;

/// Reads a compact `str` object (what code objects' names always are), of type
/// `str_type` where known; one with control characters is refused.
pub fn read_str(mem: &dyn Memory, l: &Layout, str_type: Option<u64>, addr: u64) -> Option<String> {
    let mut head = [0u8; 40];
    if addr == 0 || !mem.read(addr, &mut head) {
        return None;
    }
    if str_type.is_some_and(|t| u64_at(&head, OB_TYPE) != Some(t)) {
        return None;
    }
    let length = i64::from_le_bytes(head[16..24].try_into().ok()?);
    let state = u32::from_le_bytes(head[32..36].try_into().ok()?);
    let (kind, compact, ascii) = ((state >> 2) & 7, (state >> 5) & 1, (state >> 6) & 1);
    if compact == 0 || length < 0 || !matches!(kind, 1 | 2 | 4) {
        return None;
    }
    let chars = (length as usize).min(MAX_CHARS);
    let data = addr
        + u64::from(if ascii == 1 {
            l.ascii_size
        } else {
            l.compact_size
        });
    let mut bytes = vec![0u8; chars * kind as usize];
    if !mem.read(data, &mut bytes) {
        return None;
    }
    let s: String = match kind {
        1 => bytes.iter().map(|&b| char::from(b)).collect(),
        2 => bytes
            .chunks_exact(2)
            .map(|c| char::from_u32(u32::from(u16::from_le_bytes([c[0], c[1]]))).unwrap_or('?'))
            .collect(),
        _ => bytes
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_le_bytes([c[0], c[1], c[2], c[3]])).unwrap_or('?'))
            .collect(),
    };
    (!s.chars().any(char::is_control)).then_some(s)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Memory made of byte runs at addresses.
    #[derive(Default)]
    pub struct FakeMem(pub BTreeMap<u64, Vec<u8>>);

    impl Memory for FakeMem {
        fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
            let Some((&at, bytes)) = self.0.range(..=addr).next_back() else {
                return false;
            };
            let off = (addr - at) as usize;
            match bytes.get(off..off + buf.len()) {
                Some(b) => {
                    buf.copy_from_slice(b);
                    true
                }
                None => false,
            }
        }
    }

    /// A compact str of `s` as 3.12 lays it out.
    pub fn str_312(s: &str) -> Vec<u8> {
        let mut b = vec![0u8; 40];
        let wide = s.chars().any(|c| c as u32 > 0xff);
        b[16..24].copy_from_slice(&(s.chars().count() as i64).to_le_bytes());
        let ascii = s.is_ascii();
        let kind: u32 = if wide { 2 } else { 1 };
        let state = (kind << 2) | (1 << 5) | (u32::from(ascii) << 6);
        b[32..36].copy_from_slice(&state.to_le_bytes());
        if !ascii {
            b.resize(56, 0);
        }
        for c in s.chars() {
            if wide {
                b.extend((c as u16).to_le_bytes());
            } else {
                b.push(c as u8);
            }
        }
        b
    }

    /// A 3.12 code object at 0x1000 named `name` in `file`, first line `line`.
    pub fn code_312(mem: &mut FakeMem, at: u64, name: &str, file: &str, line: i32) {
        let mut code = vec![0u8; 192];
        code[112..120].copy_from_slice(&(at + 0x400).to_le_bytes());
        code[120..128].copy_from_slice(&(at + 0x800).to_le_bytes());
        code[128..136].copy_from_slice(&(at + 0x800).to_le_bytes());
        code[68..72].copy_from_slice(&line.to_le_bytes());
        code[136..144].copy_from_slice(&(at + 0xc00).to_le_bytes());
        mem.0.insert(at, code);
        // co_linetable: one unit with no columns on the next line, then two
        // more on it
        let mut table = vec![0u8; 32];
        table[16..24].copy_from_slice(&3i64.to_le_bytes());
        table.extend([0x80 | (13 << 3), 2, 0x80 | 1]);
        mem.0.insert(at + 0xc00, table);
        mem.0.insert(at + 0x400, str_312(file));
        mem.0.insert(at + 0x800, str_312(name));
    }

    #[test]
    fn code_objects_are_named() {
        let l = Layout::known(12).unwrap();
        let mut mem = FakeMem::default();
        code_312(&mut mem, 0x1000, "Worker.run", "/app/w.py", 12);
        let c = read_code(&mem, &l, None, 0x1000, false).unwrap();
        assert_eq!(
            c,
            CodeName {
                name: "Worker.run".into(),
                file: "/app/w.py".into(),
                line: 12,
                table: None,
            }
        );
        // with --lines: the line of the instruction the word says
        let c = read_code(&mem, &l, None, 0x1000, true).unwrap();
        let word = |field: u64| (1u64 << 63) | (field << 48) | 0x1000;
        assert_eq!(c.table.as_ref().unwrap().bytes.len(), 3);
        assert_eq!(c.line_of(word(0)), Some(12), "not begun: the first line");
        assert_eq!(c.line_of(word(1)), Some(13));
        assert_eq!(c.line_of(word(3)), Some(13));
        assert_eq!(c.line_of(word(4)), None, "past the table");
        assert_eq!(c.line_of(word(0x3fff)), None, "unknown");
        code_312(&mut mem, 0x9000, "grüße_λ", "/x.py", -1);
        let c = read_code(&mem, &l, None, 0x9000, false).unwrap();
        assert_eq!((c.name.as_str(), c.line), ("grüße_λ", 0));
    }

    #[test]
    fn garbage_is_refused_or_bounded() {
        let l = Layout::known(12).unwrap();
        let mut mem = FakeMem::default();
        assert!(
            read_code(&mem, &l, None, 0x1000, false).is_none(),
            "unreadable"
        );
        let mut s = str_312("x");
        s[32] = 0; // not compact
        mem.0.insert(0x5000, s);
        assert!(read_str(&mem, &l, None, 0x5000).is_none());
        let mut s = str_312("y");
        s[16..24].copy_from_slice(&(1i64 << 40).to_le_bytes());
        s.resize(40 + MAX_CHARS, b'y');
        mem.0.insert(0x6000, s);
        assert_eq!(read_str(&mem, &l, None, 0x6000).unwrap().len(), MAX_CHARS);
        mem.0.insert(0x7000, str_312("a\u{1}b"));
        assert!(
            read_str(&mem, &l, None, 0x7000).is_none(),
            "control characters"
        );
        // of another type than the process's code objects
        code_312(&mut mem, 0x9000, "f", "/x.py", 1);
        assert!(read_code(&mem, &l, Some((0x4242, 0)), 0x9000, false).is_none());
        // a line table longer than the bound is read up to it; an unreadable
        // one is none
        let mut table = vec![0u8; 32];
        table[16..24].copy_from_slice(&(1i64 << 40).to_le_bytes());
        table.resize(32 + lines::MAX_TABLE, 0x80);
        mem.0.insert(0x9c00, table);
        let c = read_code(&mem, &l, None, 0x9000, true).unwrap();
        assert_eq!(c.table.unwrap().bytes.len(), lines::MAX_TABLE);
        mem.0.remove(&0x9c00);
        let c = read_code(&mem, &l, None, 0x9000, true).unwrap();
        assert!(c.table.is_none());
    }
}
