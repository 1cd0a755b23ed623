//! The line a Python frame runs, from its code object's `co_linetable` and the
//! instruction index the BPF walk put in the frame's word (`--lines`).
//!
//! Two encodings: 3.10's (start delta, line delta) byte pairs (Objects/
//! lnotab_notes.txt), and 3.11+'s location table (Objects/locations.md), entries
//! of a code-unit length and a line delta with column data after. Both are
//! decoded as CPython's `PyCode_Addr2Line` does, and the tables are read from a
//! live process: anything malformed gives no line, never a panic.

use super::layout::Layout;

/// The most bytes of a `co_linetable` read: a table is read from its start,
/// so a longer one still gives the lines of the instructions it covers.
pub const MAX_TABLE: usize = 64 * 1024;

/// Bits 48-61 of a frame word with `--lines` (bpf/profile.h): the instruction
/// index plus one, 0 before the first instruction.
pub const INDEX_SHIFT: u32 = 48;
/// The field's mask, and its value where the index did not fit or made no sense
/// (PY_LINE_UNKNOWN).
pub const INDEX_UNKNOWN: u64 = 0x3fff;

/// How a version encodes `co_linetable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// 3.10: (start delta in bytes, signed line delta) pairs; -128: no line.
    Pairs,
    /// 3.11+: the location table.
    Locations,
}

impl Format {
    /// The encoding `layout`'s version uses.
    pub fn of(layout: &Layout) -> Format {
        if layout.version < (3, 11) {
            Format::Pairs
        } else {
            Format::Locations
        }
    }
}

/// A code object's line table, as read from its process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineTable {
    /// The encoding.
    pub format: Format,
    /// `co_linetable`'s bytes (at most [`MAX_TABLE`]).
    pub bytes: Box<[u8]>,
}

/// What a frame word's bits 48-61 say: `Some(index)` of the instruction in code
/// units (-1: the frame has not begun), `None` when it is unknown.
pub fn index_of(word: u64) -> Option<i64> {
    let field = (word >> INDEX_SHIFT) & INDEX_UNKNOWN;
    (field != INDEX_UNKNOWN).then(|| field as i64 - 1)
}

/// The line of instruction `index` (in code units) of a code object whose first
/// line is `first_line`; `None` where the table gives it none.
pub fn line_at(table: &LineTable, first_line: u32, index: i64) -> Option<u32> {
    // CPython: an instruction before the first is the function's first line
    if index < 0 {
        return Some(first_line);
    }
    let line = match table.format {
        Format::Pairs => pairs(&table.bytes, first_line, index.checked_mul(2)?),
        Format::Locations => locations(&table.bytes, first_line, index),
    }?;
    u32::try_from(line).ok()
}

/// 3.10: `addr` in bytes of bytecode.
fn pairs(table: &[u8], first_line: u32, addr: i64) -> Option<i64> {
    let mut line = i64::from(first_line);
    let mut end = 0i64;
    for pair in table.chunks_exact(2) {
        let start = end;
        end += i64::from(pair[0]);
        let delta = pair[1] as i8;
        // -128 marks a range without a line and leaves the line as it was
        let here = (delta != -128).then(|| {
            line += i64::from(delta);
            line
        });
        if start <= addr && addr < end {
            return here;
        }
    }
    None
}

/// The location table's codes (Objects/locations.md).
const NO_LOCATION: u8 = 15;
const LONG_FORM: u8 = 14;
const NO_COLUMNS: u8 = 13;
const ONE_LINE_0: u8 = 10;

/// 3.11+: `addr` in code units.
fn locations(table: &[u8], first_line: u32, addr: i64) -> Option<i64> {
    let mut line = i64::from(first_line);
    let mut end = 0i64;
    let mut at = 0;
    while let Some(&b) = table.get(at) {
        // every entry begins with the high bit set
        if b & 0x80 == 0 {
            return None;
        }
        let code = (b >> 3) & 15;
        let delta = match code {
            LONG_FORM | NO_COLUMNS => signed_varint(table.get(at + 1..)?)?,
            c if (ONE_LINE_0..NO_COLUMNS).contains(&c) => i64::from(c - ONE_LINE_0),
            // the short forms and "no location" keep the line
            _ => 0,
        };
        line += delta;
        let start = end;
        end += i64::from(b & 7) + 1;
        if start <= addr && addr < end {
            return (code != NO_LOCATION).then_some(line);
        }
        at += 1;
        while table.get(at).is_some_and(|b| b & 0x80 == 0) {
            at += 1;
        }
    }
    None
}

/// A varint of 6-bit chunks, least significant first, bit 6 saying more
/// follow.
fn varint(bytes: &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate() {
        // a line fits in far fewer chunks: more is garbage
        if i >= 6 {
            return None;
        }
        value |= u64::from(b & 63) << (6 * i);
        if b & 64 == 0 {
            return Some(value);
        }
    }
    None
}

/// The sign in the lowest bit.
fn signed_varint(bytes: &[u8]) -> Option<i64> {
    let v = varint(bytes)?;
    let magnitude = (v >> 1) as i64;
    Some(if v & 1 == 1 { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    fn table(format: Format, bytes: &[u8]) -> LineTable {
        LineTable {
            format,
            bytes: bytes.into(),
        }
    }

    #[test]
    fn words_carry_the_index_plus_one() {
        let word = |field: u64| (1 << 63) | (field << 48) | 0x1000;
        assert_eq!(index_of(word(0)), Some(-1));
        assert_eq!(index_of(word(1)), Some(0));
        assert_eq!(index_of(word(0x3ffe)), Some(0x3ffd));
        assert_eq!(index_of(word(INDEX_UNKNOWN)), None);
        assert_eq!(index_of(word(INDEX_UNKNOWN) | (1 << 62)), None);
    }

    #[test]
    fn pairs_are_decoded() {
        // 4 bytes on line 10, 6 on line 12, 2 without a line, 0 bytes that
        // move the line by 100, then 2 bytes on line 111 (-1)
        let t = table(Format::Pairs, &[4, 0, 6, 2, 2, 0x80, 0, 100, 2, 0xff]);
        let lines: Vec<Option<u32>> = (0..8).map(|i| line_at(&t, 10, i)).collect();
        assert_eq!(
            lines,
            [
                Some(10),
                Some(10),
                Some(12),
                Some(12),
                Some(12),
                None,
                Some(111),
                None
            ]
        );
        assert_eq!(line_at(&t, 10, -1), Some(10), "not begun: the first line");
    }

    #[test]
    fn locations_are_decoded() {
        // 1 unit with no columns, line +1; 2 units short form; 1 unit one-line
        // form +2 (two column bytes); 3 units long form, line -3; 1 unit with
        // no location
        let t = table(
            Format::Locations,
            &[
                0x80 | (13 << 3),
                2,
                0x80 | 1,
                5,
                0x80 | (12 << 3),
                1,
                2,
                0x80 | (14 << 3) | 2,
                7,
                0,
                1,
                1,
                0x80 | (15 << 3),
            ],
        );
        let lines: Vec<Option<u32>> = (0..9).map(|i| line_at(&t, 20, i)).collect();
        assert_eq!(
            lines,
            [
                Some(21),
                Some(21),
                Some(21),
                Some(23),
                Some(20),
                Some(20),
                Some(20),
                None,
                None
            ]
        );
    }

    #[test]
    fn garbage_gives_no_line() {
        for bytes in [
            &[0x01u8, 2, 3][..],
            &[0x80 | (14 << 3)],
            &[0x80 | (13 << 3), 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f],
            &[],
        ] {
            assert_eq!(line_at(&table(Format::Locations, bytes), 5, 0), None);
        }
        // a line below zero
        let t = table(Format::Locations, &[0x80 | (13 << 3), 21]);
        assert_eq!(line_at(&t, 5, 0), None);
        assert_eq!(line_at(&table(Format::Pairs, &[1]), 5, 0), None);
        assert_eq!(line_at(&table(Format::Pairs, &[2, 1]), 5, i64::MAX), None);
    }

    /// The interpreters of the versions with line tables: the system's (Debian's
    /// 3.11) and each of pyenv's, where present.
    fn interpreters() -> Vec<(u8, PathBuf)> {
        let mut found = Vec::new();
        let home = std::env::var("HOME").unwrap_or_default();
        for minor in [10u8, 11, 12, 13] {
            let system = PathBuf::from(format!("/usr/bin/python3.{minor}"));
            let versions = Path::new(&home).join(".pyenv/versions");
            let mut candidates: Vec<PathBuf> = std::fs::read_dir(&versions)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.starts_with(&format!("3.{minor}.")))
                })
                .map(|e| e.path().join(format!("bin/python3.{minor}")))
                .filter(|p| p.exists())
                .collect();
            candidates.sort();
            if system.exists() {
                candidates.insert(0, system);
            }
            if candidates.is_empty() {
                eprintln!("no CPython 3.{minor} here: skipped");
            }
            found.extend(candidates.into_iter().map(|p| (minor, p)));
        }
        found
    }

    /// The layout flamebpf reads `python` with: from the executable, or from
    /// the libpython it is linked with.
    fn layout_of(python: &Path) -> Layout {
        let lib = |minor: &str| {
            python
                .parent()
                .and_then(Path::parent)
                .map(|p| p.join(format!("lib/libpython{minor}.so.1.0")))
        };
        let mut objects = vec![python.to_path_buf()];
        if let Some(name) = python.file_name().and_then(|n| n.to_str()) {
            objects.extend(lib(name.trim_start_matches("python")));
        }
        for o in objects {
            if let Ok(Some(i)) = super::super::Interpreter::inspect(&o) {
                return i.layout.expect("a layout flamebpf reads");
            }
        }
        panic!("no CPython runtime in {}", python.display());
    }

    #[test]
    fn python_offsets_and_decoders_agree_with_the_interpreters() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/python/positions.py");
        let all = interpreters();
        if all.is_empty() {
            eprintln!("no CPython 3.10-3.13 on this machine: nothing to compare with");
            return;
        }
        for (minor, python) in all {
            let layout = layout_of(&python);
            assert_eq!(layout.version, (3, minor), "{}", python.display());
            let out = Command::new(&python)
                .arg(&script)
                .args(
                    [
                        layout.frame_instr,
                        layout.code_adaptive,
                        layout.code_linetable,
                    ]
                    .map(|v| v.to_string()),
                )
                .output()
                .expect("python runs");
            assert!(
                out.status.success(),
                "{}: {}",
                python.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8(out.stdout).unwrap();
            let mut lines = text.lines();
            assert_eq!(
                lines.next(),
                Some("offsets ok"),
                "3.{minor}: the layout's frame and code offsets"
            );
            let (mut codes, mut units) = (0, 0);
            for l in lines {
                let f: Vec<&str> = l.split(' ').collect();
                assert_eq!((f.len(), f[0]), (4, "code"), "{l}");
                let first: u32 = f[1].parse().unwrap();
                let bytes: Vec<u8> = if f[2] == "-" {
                    Vec::new()
                } else {
                    (0..f[2].len())
                        .step_by(2)
                        .map(|i| u8::from_str_radix(&f[2][i..i + 2], 16).unwrap())
                        .collect()
                };
                let t = LineTable {
                    format: Format::of(&layout),
                    bytes: bytes.into(),
                };
                for (i, want) in f[3].split(',').enumerate() {
                    let want = want.parse::<u32>().ok();
                    assert_eq!(
                        line_at(&t, first, i as i64),
                        want,
                        "3.{minor}: code unit {i} of the code at line {first}"
                    );
                    units += 1;
                }
                codes += 1;
            }
            eprintln!(
                "3.{minor} ({}): offsets ok; {codes} code objects, {units} code units decoded as CPython does",
                python.display()
            );
            assert!(codes > 100, "3.{minor}: code objects checked: {codes}");
        }
    }
}
