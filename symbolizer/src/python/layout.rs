//! Where CPython keeps what a profiler reads, per version: the offsets of the
//! runtime, interpreter, thread state, frame and code object fields, and the shape
//! of a `str`. 3.10–3.12 have no self-description, so their layouts are compiled
//! in here (taken from each version's structs, never from headers on the machine);
//! 3.13 describes itself in `_Py_DebugOffsets`, the first field of `_PyRuntime`,
//! which [`Layout::from_debug_offsets`] reads.

/// How a version's frame chain says where each run of the evaluation loop (one
/// native `_PyEval_EvalFrameDefault` frame) begins: bpf/profile.h's
/// `enum flamebpf_py_model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// 3.10: a chain of frame objects, each run by an evaluation loop of its own.
    FrameObjects = 1,
    /// 3.11: a run's first frame has `is_entry` set.
    IsEntry = 2,
    /// 3.12+: a frame owned by the C stack lies below each run's first frame.
    CStack = 3,
}

/// The offsets of one CPython version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// (major, minor).
    pub version: (u8, u8),
    /// How runs of the evaluation loop are marked.
    pub model: Model,
    /// `_PyRuntimeState.interpreters.head`.
    pub interp_head: u16,
    /// `PyInterpreterState.threads.head` (`tstate_head` in 3.10).
    pub threads_head: u16,
    /// `PyThreadState.next`.
    pub tstate_next: u16,
    /// `PyThreadState.thread_id` (pthread_self()).
    pub tstate_thread_id: u16,
    /// `PyThreadState.frame` (3.10), `.cframe` (3.11, 3.12), `.current_frame`.
    pub tstate_frame: u16,
    /// `_PyCFrame.current_frame` where the thread state points at a C frame.
    pub cframe_frame: Option<u16>,
    /// The frame's link to its caller (`f_back`, `previous`).
    pub frame_previous: u16,
    /// The frame's code object (`f_code`, `f_executable`).
    pub frame_code: u16,
    /// `is_entry` (3.11) or `owner` (3.12+); unused in 3.10.
    pub frame_flag: u16,
    /// The frame's `f_globals`: the walk fingerprints code objects with it.
    pub frame_globals: u16,
    /// Where the frame says which instruction runs, for `--lines`: 3.10's
    /// `f_lasti` (an `int`, in code units), 3.11 and 3.12's `prev_instr`,
    /// 3.13's `instr_ptr` (pointers into the code object's bytecode).
    pub frame_instr: u16,
    /// `PyCodeObject.co_code_adaptive`: where the bytecode the frame's
    /// instruction pointer points into begins (3.11+; 0 for 3.10).
    pub code_adaptive: u16,
    /// `PyCodeObject.co_linetable` (a `bytes` object).
    pub code_linetable: u16,
    /// `PyCodeObject.co_filename`.
    pub code_filename: u16,
    /// `PyCodeObject.co_name`.
    pub code_name: u16,
    /// `PyCodeObject.co_qualname` (3.11+).
    pub code_qualname: Option<u16>,
    /// `PyCodeObject.co_firstlineno` (an int).
    pub code_firstlineno: u16,
    /// `sizeof(PyASCIIObject)`: where an ASCII string's characters begin.
    pub ascii_size: u16,
    /// `sizeof(PyCompactUnicodeObject)`: where other compact strings' begin.
    pub compact_size: u16,
}

/// The bytes of a frame the BPF walk reads at once (bpf/profile.h's
/// PY_FRAME_BYTES): every frame offset must lie below.
pub const FRAME_BYTES: u16 = 72;

/// The bytes of a 3.10 frame object the walk reads with `--lines`
/// (PY_FRAME_OBJECT_BYTES): `f_lasti` lies past [`FRAME_BYTES`]; a frame object
/// is far larger, so the read stays inside it.
pub const FRAME_OBJECT_BYTES: u16 = 104;

/// The code object bytes [`super::code::read_code`] reads at once: its fields
/// must lie below.
pub const CODE_HEAD_BYTES: u16 = 192;

impl Layout {
    /// The compiled-in layout of 3.`minor`, for the versions that do not describe
    /// themselves; `None` for the others.
    pub fn known(minor: u8) -> Option<Layout> {
        let l = match minor {
            10 => Layout {
                version: (3, 10),
                model: Model::FrameObjects,
                interp_head: 32,
                threads_head: 8,
                tstate_next: 8,
                tstate_thread_id: 176,
                tstate_frame: 24,
                cframe_frame: None,
                frame_previous: 24,
                frame_code: 32,
                frame_flag: 0,
                frame_globals: 48,
                frame_instr: 96,
                code_adaptive: 0,
                code_linetable: 120,
                code_filename: 104,
                code_name: 112,
                code_qualname: None,
                code_firstlineno: 40,
                ascii_size: 48,
                compact_size: 72,
            },
            11 => Layout {
                version: (3, 11),
                model: Model::IsEntry,
                interp_head: 40,
                threads_head: 16,
                tstate_next: 8,
                tstate_thread_id: 152,
                tstate_frame: 56,
                cframe_frame: Some(8),
                frame_previous: 48,
                frame_code: 32,
                frame_flag: 68,
                frame_globals: 8,
                frame_instr: 56,
                code_adaptive: 184,
                code_linetable: 136,
                code_filename: 112,
                code_name: 120,
                code_qualname: Some(128),
                code_firstlineno: 72,
                ascii_size: 48,
                compact_size: 72,
            },
            12 => Layout {
                version: (3, 12),
                model: Model::CStack,
                interp_head: 40,
                threads_head: 72,
                tstate_next: 8,
                tstate_thread_id: 136,
                tstate_frame: 56,
                cframe_frame: Some(0),
                frame_previous: 8,
                frame_code: 0,
                frame_flag: 70,
                frame_globals: 24,
                frame_instr: 56,
                code_adaptive: 192,
                code_linetable: 136,
                code_filename: 112,
                code_name: 120,
                code_qualname: Some(128),
                code_firstlineno: 68,
                ascii_size: 40,
                compact_size: 56,
            },
            _ => return None,
        };
        Some(l)
    }

    /// The layout a 3.13+ interpreter states in `_Py_DebugOffsets` (`bytes`: the
    /// start of `_PyRuntime`). Refused: another cookie, a free-threaded build,
    /// offsets the BPF walk cannot take.
    pub fn from_debug_offsets(bytes: &[u8]) -> Result<Layout, String> {
        let word = |i: usize| -> Option<u64> {
            let b = bytes.get(i * 8..i * 8 + 8)?;
            Some(u64::from_le_bytes(b.try_into().ok()?))
        };
        if bytes.get(..8) != Some(b"xdebugpy".as_slice()) {
            return Err("no _Py_DebugOffsets in _PyRuntime".into());
        }
        let hex = word(1).ok_or("short _Py_DebugOffsets")?;
        let version = (((hex >> 24) & 0xff) as u8, ((hex >> 16) & 0xff) as u8);
        if version != (3, 13) {
            // later versions moved fields of the structure itself
            return Err(format!("{}.{} is not supported", version.0, version.1));
        }
        if word(2) != Some(0) {
            return Err("a free-threaded build is not supported".into());
        }
        // field indexes in 3.13's _Py_DebugOffsets, in 8-byte words
        let small = |i: usize| -> Result<u16, String> {
            word(i)
                .and_then(|v| u16::try_from(v).ok())
                .ok_or_else(|| format!("_Py_DebugOffsets word {i} out of range"))
        };
        let l = Layout {
            version,
            model: Model::CStack,
            interp_head: small(5)?,
            threads_head: small(9)?,
            tstate_next: small(21)?,
            tstate_thread_id: small(24)?,
            tstate_frame: small(23)?,
            cframe_frame: None,
            frame_previous: small(29)?,
            frame_code: small(30)?,
            frame_flag: small(33)?,
            // _Py_DebugOffsets has no f_globals: 3.13's frame begins
            // f_executable, previous, f_funcobj, f_globals
            frame_globals: 24,
            frame_instr: small(31)?,
            code_adaptive: small(43)?,
            code_linetable: small(38)?,
            code_filename: small(35)?,
            code_name: small(36)?,
            code_qualname: Some(small(37)?),
            code_firstlineno: small(39)?,
            ascii_size: small(70)?,
            // PyCompactUnicodeObject adds utf8_length and utf8 to PyASCIIObject
            compact_size: small(70)? + 16,
        };
        l.check()?;
        Ok(l)
    }

    /// Whether the BPF walk can read frames with these offsets.
    pub fn check(&self) -> Result<(), String> {
        // words are read whole; the flag is a byte
        let word = |off: u16| off < FRAME_BYTES && off.is_multiple_of(8);
        // 3.10's f_lasti is an int, read from the frame object's longer read;
        // the others' instruction pointer is a word of the frame
        let instr = match self.model {
            Model::FrameObjects => {
                self.frame_instr + 4 <= FRAME_OBJECT_BYTES && self.frame_instr.is_multiple_of(4)
            }
            _ => word(self.frame_instr),
        };
        let readable = word(self.frame_previous)
            && word(self.frame_code)
            && word(self.frame_globals)
            && self.frame_flag < FRAME_BYTES
            && instr;
        if !readable {
            return Err(format!(
                "{}.{}: frame fields beyond what the walk reads",
                self.version.0, self.version.1
            ));
        }
        let head = [
            self.code_filename,
            self.code_name,
            self.code_qualname.unwrap_or(0),
            self.code_linetable,
        ];
        if head.iter().any(|&off| off + 8 > CODE_HEAD_BYTES)
            || self.code_firstlineno + 4 > CODE_HEAD_BYTES
        {
            return Err(format!(
                "{}.{}: code object fields beyond what is read",
                self.version.0, self.version.1
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_in_layouts_fit_the_walk() {
        for minor in 10..=12 {
            let l = Layout::known(minor).unwrap();
            assert_eq!(l.version, (3, minor));
            l.check().unwrap();
        }
        assert!(Layout::known(9).is_none());
        assert!(Layout::known(13).is_none(), "3.13 describes itself");
    }

    fn offsets_313() -> Vec<u8> {
        let mut words = vec![0u64; 71];
        words[1] = 0x030d_00f0;
        for (i, v) in [
            (5, 632),
            (9, 7344),
            (21, 8),
            (23, 72),
            (24, 152),
            (29, 8),
            (30, 0),
            (33, 70),
            (35, 112),
            (36, 120),
            (37, 128),
            (39, 68),
            (31, 56),
            (38, 136),
            (43, 200),
            (70, 40),
        ] {
            words[i] = v;
        }
        let mut b: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        b[..8].copy_from_slice(b"xdebugpy");
        b
    }

    #[test]
    fn debug_offsets_give_the_313_layout() {
        let l = Layout::from_debug_offsets(&offsets_313()).unwrap();
        assert_eq!(l.version, (3, 13));
        assert_eq!((l.interp_head, l.threads_head), (632, 7344));
        assert_eq!((l.tstate_frame, l.tstate_thread_id), (72, 152));
        assert_eq!((l.frame_previous, l.frame_code, l.frame_flag), (8, 0, 70));
        assert_eq!((l.ascii_size, l.compact_size), (40, 56));
        assert_eq!(
            (l.frame_instr, l.code_adaptive, l.code_linetable),
            (56, 200, 136)
        );
    }

    #[test]
    fn debug_offsets_refuse_what_they_cannot_read() {
        let mut b = offsets_313();
        b[16] = 1; // free-threaded
        assert!(Layout::from_debug_offsets(&b).is_err());
        let mut b = offsets_313();
        b[0] = b'y';
        assert!(Layout::from_debug_offsets(&b).is_err());
        let mut b = offsets_313();
        b[8 * 33] = 200; // owner beyond the bytes read
        assert!(Layout::from_debug_offsets(&b).is_err());
        let mut b = offsets_313();
        b[8 * 31] = 60; // instr_ptr not a word of its own
        assert!(Layout::from_debug_offsets(&b).is_err());
        let mut b = offsets_313();
        b[8 * 38] = 190; // co_linetable beyond the code object bytes read
        assert!(Layout::from_debug_offsets(&b).is_err());
        assert!(Layout::from_debug_offsets(&b[..100]).is_err());
    }
}
