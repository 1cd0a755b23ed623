//! CPython: finding the interpreter in a process ([`elf`], [`layout`]) and naming
//! the code objects its frames run ([`code`]), read while the process lives and
//! kept per process with a bound on how many ([`PythonNames`]).
//!
//! A Python frame reaches userspace as one word of a user stack (bpf/python.h):
//! bit 63 set, bit 62 on the first frame of a run of the evaluation loop, the code
//! object's address in the low 48 bits, and in bits 48-61 a fingerprint of the
//! frame's globals or, with `--lines`, where it runs ([`lines`]).

pub mod code;
pub mod elf;
pub mod layout;
pub mod lines;

use std::collections::HashMap;
use std::sync::Arc;

pub use code::{CodeName, Memory, ProcMem};
pub use elf::Interpreter;
pub use layout::{Layout, Model};

/// Bit 63 of a stack word: a Python frame.
pub const FRAME_BIT: u64 = 1 << 63;
/// Bit 62: the first frame of a run of the evaluation loop.
pub const ENTRY_BIT: u64 = 1 << 62;

/// Whether a user stack word is a Python frame.
pub fn is_python(word: u64) -> bool {
    word & FRAME_BIT != 0
}

/// The code object of a Python frame word (0: an empty run).
pub fn code_of(word: u64) -> u64 {
    word & ((1 << 48) - 1)
}

/// What names a Python frame word: its code object and the fingerprint of its
/// globals (a code object freed and another made at its address differ there),
/// without the run flag. With `--lines` ([`PythonNames::lines`]) bits 48-61
/// say where the frame runs instead, and the code object alone names it.
pub fn identity(word: u64) -> u64 {
    word & !(FRAME_BIT | ENTRY_BIT)
}

/// The key a frame word's name is kept under.
fn key(lines: bool, word: u64) -> u64 {
    if lines {
        code_of(word)
    } else {
        identity(word)
    }
}

/// The most code objects named across all processes: about 300 bytes each.
pub const MAX_CODES: usize = 1 << 18;

/// One process's interpreter and the names read from it.
#[derive(Debug)]
struct Process {
    layout: Layout,
    /// The addresses of `PyCode_Type` and `PyUnicode_Type` in the process:
    /// what is read must be of those types.
    types: Option<(u64, u64)>,
    mem: Option<ProcMem>,
    codes: HashMap<u64, Arc<CodeName>>,
}

/// The names of code objects, per process.
#[derive(Debug, Default)]
pub struct PythonNames {
    procs: HashMap<u32, Process>,
    /// Children forked from a Python process, each with that process: until a
    /// child execs (subprocess forks, then execs) it runs its parent's image,
    /// and the BPF walk, which copies the parent's entry at fork, reads the
    /// parent's code objects in it. Their names are the parent's.
    forked: HashMap<u32, u32>,
    total: usize,
    /// Code objects left unnamed because [`MAX_CODES`] were held.
    pub over_bound: u64,
    /// `--lines`: the walk put instruction indexes in bits 48-61, and code
    /// objects are read with their line tables.
    lines: bool,
}

impl PythonNames {
    /// Starts naming the code objects of `pid`, which runs `layout`'s version
    /// (forgetting what an earlier image of the pid had).
    pub fn add_process(&mut self, pid: u32, layout: Layout, types: Option<(u64, u64)>) {
        // the link to a parent stays (see `note`)
        if let Some(p) = self.procs.remove(&pid) {
            self.total -= p.codes.len();
        }
        self.procs.insert(
            pid,
            Process {
                layout,
                types,
                mem: ProcMem::open(pid).ok(),
                codes: HashMap::new(),
            },
        );
    }

    /// Reads line tables, and takes bits 48-61 of frame words for instruction
    /// indexes (the BPF walk's `python_lines`); set before any word is noted.
    pub fn set_lines(&mut self, lines: bool) {
        self.lines = lines;
    }

    /// Whether bits 48-61 of frame words are instruction indexes.
    pub fn lines(&self) -> bool {
        self.lines
    }

    /// Whether `pid` is known to run Python.
    pub fn knows(&self, pid: u32) -> bool {
        self.procs.contains_key(&pid)
    }

    /// The version `pid` runs.
    pub fn version(&self, pid: u32) -> Option<(u8, u8)> {
        self.procs.get(&self.owner(pid)).map(|p| p.layout.version)
    }

    /// Whether the code objects of `pid`'s frames can be named: it, or the
    /// process it was forked from, is known to run Python.
    pub fn names_for(&self, pid: u32) -> bool {
        self.procs.contains_key(&self.owner(pid))
    }

    /// `child` was forked from `parent`: if the parent runs Python, the child's
    /// Python frames are named from the parent's code objects until it has a
    /// Python of its own (an exec) or is forgotten.
    pub fn fork(&mut self, parent: u32, child: u32) {
        let owner = self.owner(parent);
        if self.procs.contains_key(&owner) && !self.procs.contains_key(&child) {
            self.forked.insert(child, owner);
        }
    }

    /// The process whose names `pid`'s frames take: itself, or the Python
    /// process it was forked from.
    fn owner(&self, pid: u32) -> u32 {
        match self.forked.get(&pid) {
            Some(&parent) if !self.procs.contains_key(&pid) => parent,
            _ => pid,
        }
    }

    /// Names the code objects of the Python frames among `words` that are not
    /// named yet, reading `pid`'s memory now.
    pub fn note(&mut self, pid: u32, words: &[u64]) {
        let lines = self.lines;
        // a forked child's memory is its parent's (vfork) or a copy of it
        // (fork); one that exec'd since cannot be read any more, and its
        // parent's memory serves, for a runtime of the same version
        let owner = self.owner(pid);
        let parent = self.forked.get(&pid).copied().filter(|&p| p != owner);
        let Some(version) = self.procs.get(&owner).map(|p| p.layout.version) else {
            return;
        };
        let read = |q: &Process, code: u64| {
            let mem = q.mem.as_ref()?;
            code::read_code(mem, &q.layout, q.types, code, lines)
        };
        for &w in words.iter().filter(|&&w| is_python(w)) {
            let id = key(lines, w);
            let Some(p) = self.procs.get(&owner) else {
                return;
            };
            if code_of(w) == 0 || p.codes.contains_key(&id) {
                continue;
            }
            if self.total >= MAX_CODES {
                self.over_bound += 1;
                continue;
            }
            let name = read(p, code_of(w)).or_else(|| {
                let q = self.procs.get(&parent?)?;
                (q.layout.version == version).then(|| read(q, code_of(w)))?
            });
            if let (Some(name), Some(p)) = (name, self.procs.get_mut(&owner)) {
                p.codes.insert(id, Arc::new(name));
                self.total += 1;
            }
        }
    }

    /// Names read from a stand-in memory (tests).
    pub fn note_from(&mut self, pid: u32, mem: &dyn Memory, words: &[u64]) {
        let lines = self.lines;
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        for &w in words.iter().filter(|&&w| is_python(w)) {
            if let Some(name) = code::read_code(mem, &p.layout, p.types, code_of(w), lines) {
                p.codes.insert(key(lines, w), Arc::new(name));
                self.total += 1;
            }
        }
    }

    /// The name of a Python frame word of `pid`.
    pub fn name(&self, pid: u32, word: u64) -> Option<&Arc<CodeName>> {
        let id = key(self.lines, word);
        let own = self.procs.get(&self.owner(pid))?;
        // a child's frames before its exec are its parent's, named there too
        // (not those of another Python it exec'd since)
        own.codes.get(&id).or_else(|| {
            let parent = self.procs.get(self.forked.get(&pid)?)?;
            (parent.layout.version == own.layout.version)
                .then(|| parent.codes.get(&id))
                .flatten()
        })
    }

    /// The line a Python frame word of `pid` shows: where it runs with
    /// `--lines` (`None` where that is not known), else its function's first.
    pub fn line(&self, pid: u32, word: u64) -> Option<u32> {
        let name = self.name(pid, word)?;
        if self.lines {
            name.line_of(word)
        } else {
            Some(name.line)
        }
    }

    /// Drops what `pid` held.
    pub fn forget(&mut self, pid: u32) {
        self.forked.remove(&pid);
        if let Some(p) = self.procs.remove(&pid) {
            self.total -= p.codes.len();
        }
    }

    /// Closes the memory of `pid` (it exited); its names stay until forgotten.
    pub fn close(&mut self, pid: u32) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.mem = None;
        }
    }

    /// Processes known to run Python.
    pub fn processes(&self) -> usize {
        self.procs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::code::tests::{code_312, FakeMem};
    use super::*;

    #[test]
    fn words_are_named_once_and_forgotten_with_their_process() {
        let mut names = PythonNames::default();
        names.add_process(7, Layout::known(12).unwrap(), None);
        let mut mem = FakeMem::default();
        code_312(&mut mem, 0x1000, "f", "/a.py", 3);
        let words = [0x40_1234, FRAME_BIT | 0x1000, FRAME_BIT | ENTRY_BIT];
        names.note_from(7, &mem, &words);
        assert_eq!(
            names.name(7, FRAME_BIT | ENTRY_BIT | 0x1000).unwrap().name,
            "f"
        );
        assert!(
            names.name(7, FRAME_BIT | (5 << 48) | 0x1000).is_none(),
            "other globals"
        );
        assert!(names.name(7, 0x40_1234).is_none(), "native words are left");
        assert_eq!(names.version(7), Some((3, 12)));
        names.forget(7);
        assert!(names.name(7, FRAME_BIT | 0x1000).is_none());
        assert_eq!(names.total, 0);
    }

    #[test]
    fn a_forked_child_takes_its_parents_names_until_it_has_its_own() {
        let mut names = PythonNames::default();
        names.add_process(7, Layout::known(12).unwrap(), None);
        let mut mem = FakeMem::default();
        code_312(&mut mem, 0x1000, "f", "/a.py", 3);
        names.note_from(7, &mem, &[FRAME_BIT | 0x1000]);
        // a native parent gives nothing to its children
        names.fork(9, 10);
        assert!(names.name(10, FRAME_BIT | 0x1000).is_none());
        names.fork(7, 8);
        names.fork(8, 11); // and a grandchild, before either execs
        for child in [8, 11] {
            assert_eq!(names.name(child, FRAME_BIT | 0x1000).unwrap().name, "f");
            assert_eq!(names.version(child), Some((3, 12)));
        }
        // the child is found to run Python itself (its own memory, which it may
        // have exec'd away since): what its parent named still names it
        names.add_process(8, Layout::known(12).unwrap(), None);
        assert_eq!(names.name(8, FRAME_BIT | 0x1000).unwrap().name, "f");
        assert!(names.name(8, FRAME_BIT | 0x2000).is_none());
        // a child that exec'd another Python version takes nothing of its parent
        names.fork(7, 12);
        names.add_process(12, Layout::known(11).unwrap(), None);
        assert!(names.name(12, FRAME_BIT | 0x1000).is_none());
        // a forgotten child leaves its parent's names be
        names.forget(11);
        assert!(names.name(11, FRAME_BIT | 0x1000).is_none());
        assert_eq!(names.name(7, FRAME_BIT | 0x1000).unwrap().name, "f");
    }

    #[test]
    fn with_lines_the_code_object_alone_names_a_word_and_its_bits_say_the_line() {
        let mut names = PythonNames::default();
        names.set_lines(true);
        names.add_process(7, Layout::known(12).unwrap(), None);
        let mut mem = FakeMem::default();
        code_312(&mut mem, 0x1000, "f", "/a.py", 3);
        // not begun, then instruction 2
        let (w0, w2) = (FRAME_BIT | 0x1000, FRAME_BIT | (3 << 48) | 0x1000);
        names.note_from(7, &mem, &[w0]);
        assert_eq!(names.name(7, w2).unwrap().name, "f");
        assert_eq!(names.line(7, w0), Some(3));
        assert_eq!(names.line(7, w2), Some(4));
        assert_eq!(names.line(7, FRAME_BIT | (0x3fff << 48) | 0x1000), None);
        // without --lines: the first line, whatever the bits
        let mut names = PythonNames::default();
        names.add_process(7, Layout::known(12).unwrap(), None);
        names.note_from(7, &mem, &[w2]);
        assert_eq!(names.line(7, w2), Some(3));
        assert!(names.name(7, w2).unwrap().table.is_none());
    }

    #[test]
    fn words_say_what_they_are() {
        assert!(is_python(FRAME_BIT | 5));
        assert!(!is_python(0x7fff_0000_1000));
        assert_eq!(
            code_of(FRAME_BIT | ENTRY_BIT | 0x7f00_1234_5678),
            0x7f00_1234_5678
        );
    }
}
