//! The perf ring-buffer records that describe address-space changes, and their parser.
//!
//! The tracking events that produce them are opened with `sample_id_all` and
//! `sample_type = TID | TIME`, so every record ends in a 16-byte trailer holding
//! pid, tid and a timestamp; [`parse`] relies on that layout.

/// `PERF_RECORD_*` types this crate reads.
pub mod kind {
    /// Records lost because the ring buffer was full.
    pub const LOST: u32 = 2;
    /// A thread changed its command name (or exec'd, with `MISC_COMM_EXEC`).
    pub const COMM: u32 = 3;
    /// A thread exited.
    pub const EXIT: u32 = 4;
    /// A thread or process was created.
    pub const FORK: u32 = 7;
    /// An executable mapping was created, with inode or build id.
    pub const MMAP2: u32 = 10;
}

/// `misc` flag: the COMM record comes from exec.
pub const MISC_COMM_EXEC: u16 = 1 << 13;
/// `misc` flag: the MMAP2 record carries a build id instead of device and inode.
pub const MISC_MMAP_BUILD_ID: u16 = 1 << 14;

/// Size of the `sample_id_all` trailer for `sample_type = TID | TIME`.
pub const SAMPLE_ID_LEN: usize = 16;

/// How the file behind a mapping is identified.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FileId {
    /// The GNU build id of the ELF file.
    BuildId(Vec<u8>),
    /// Device and inode of the file (with the inode generation).
    Inode {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
        /// Inode number.
        ino: u64,
        /// Inode generation.
        generation: u64,
    },
    /// Nothing identifies it but its path.
    Unknown,
}

/// A new mapping in a process's address space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mmap {
    /// Process id.
    pub pid: u32,
    /// Thread that made the mapping.
    pub tid: u32,
    /// First address.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// File offset of `start`.
    pub pgoff: u64,
    /// The file's identity.
    pub file: FileId,
    /// `PROT_*` bits.
    pub prot: u32,
    /// Path as the process saw it, or a pseudo name (`[vdso]`, `//anon`).
    pub path: String,
    /// Timestamp (CLOCK_MONOTONIC ns with `use_clockid`).
    pub time: u64,
}

/// A thread's new command name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comm {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// The new name.
    pub comm: String,
    /// Set when the name changed because the process exec'd a new program.
    pub exec: bool,
    /// Timestamp.
    pub time: u64,
}

/// A fork or an exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// Process id of the new (or exiting) thread.
    pub pid: u32,
    /// Process id of its parent.
    pub ppid: u32,
    /// Thread id.
    pub tid: u32,
    /// Parent thread id.
    pub ptid: u32,
    /// Timestamp.
    pub time: u64,
}

/// One record of the tracking ring buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// `PERF_RECORD_MMAP2`.
    Mmap(Mmap),
    /// `PERF_RECORD_COMM`.
    Comm(Comm),
    /// `PERF_RECORD_FORK`.
    Fork(Task),
    /// `PERF_RECORD_EXIT`.
    Exit(Task),
    /// `PERF_RECORD_LOST`: this many records were dropped.
    Lost {
        /// Records lost.
        lost: u64,
        /// Timestamp.
        time: u64,
    },
}

impl Record {
    /// When the record was written.
    pub fn time(&self) -> u64 {
        match self {
            Record::Mmap(m) => m.time,
            Record::Comm(c) => c.time,
            Record::Fork(t) | Record::Exit(t) => t.time,
            Record::Lost { time, .. } => *time,
        }
    }
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// A NUL-terminated string starting at `off` and ending before `end`.
fn cstr_at(b: &[u8], off: usize, end: usize) -> Option<String> {
    let bytes = b.get(off..end)?;
    let len = bytes.iter().position(|&c| c == 0).unwrap_or(bytes.len());
    Some(String::from_utf8_lossy(&bytes[..len]).into_owned())
}

/// Parses a record body (the bytes after the 8-byte `perf_event_header`).
/// Returns `None` for record types this crate does not use and for truncated bodies.
pub fn parse(kind: u32, misc: u16, body: &[u8]) -> Option<Record> {
    let trailer = body.len().checked_sub(SAMPLE_ID_LEN)?;
    let time = u64_at(body, trailer + 8)?;
    match kind {
        kind::MMAP2 => {
            let file = if misc & MISC_MMAP_BUILD_ID != 0 {
                let size = (*body.get(32)? as usize).min(20);
                FileId::BuildId(body.get(36..36 + size)?.to_vec())
            } else {
                FileId::Inode {
                    major: u32_at(body, 32)?,
                    minor: u32_at(body, 36)?,
                    ino: u64_at(body, 40)?,
                    generation: u64_at(body, 48)?,
                }
            };
            Some(Record::Mmap(Mmap {
                pid: u32_at(body, 0)?,
                tid: u32_at(body, 4)?,
                start: u64_at(body, 8)?,
                len: u64_at(body, 16)?,
                pgoff: u64_at(body, 24)?,
                file,
                prot: u32_at(body, 56)?,
                path: cstr_at(body, 64, trailer)?,
                time,
            }))
        }
        kind::COMM => Some(Record::Comm(Comm {
            pid: u32_at(body, 0)?,
            tid: u32_at(body, 4)?,
            comm: cstr_at(body, 8, trailer)?,
            exec: misc & MISC_COMM_EXEC != 0,
            time,
        })),
        kind::FORK | kind::EXIT => {
            let task = Task {
                pid: u32_at(body, 0)?,
                ppid: u32_at(body, 4)?,
                tid: u32_at(body, 8)?,
                ptid: u32_at(body, 12)?,
                time,
            };
            Some(if kind == kind::FORK {
                Record::Fork(task)
            } else {
                Record::Exit(task)
            })
        }
        kind::LOST => Some(Record::Lost {
            lost: u64_at(body, 8)?,
            time,
        }),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn trailer(out: &mut Vec<u8>, pid: u32, tid: u32, time: u64) {
        out.extend(pid.to_ne_bytes());
        out.extend(tid.to_ne_bytes());
        out.extend(time.to_ne_bytes());
    }

    fn padded_str(out: &mut Vec<u8>, s: &str) {
        out.extend(s.as_bytes());
        out.push(0);
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
    }

    /// Body bytes of an MMAP2 record as the kernel lays it out.
    pub(crate) fn mmap2_body(m: &Mmap) -> (u16, Vec<u8>) {
        let mut b = Vec::new();
        b.extend(m.pid.to_ne_bytes());
        b.extend(m.tid.to_ne_bytes());
        b.extend(m.start.to_ne_bytes());
        b.extend(m.len.to_ne_bytes());
        b.extend(m.pgoff.to_ne_bytes());
        let misc = match &m.file {
            FileId::BuildId(id) => {
                b.push(id.len() as u8);
                b.extend([0u8; 3]);
                let mut id20 = id.clone();
                id20.resize(20, 0);
                b.extend(id20);
                MISC_MMAP_BUILD_ID
            }
            FileId::Inode {
                major,
                minor,
                ino,
                generation,
            } => {
                b.extend(major.to_ne_bytes());
                b.extend(minor.to_ne_bytes());
                b.extend(ino.to_ne_bytes());
                b.extend(generation.to_ne_bytes());
                0
            }
            FileId::Unknown => {
                b.extend([0u8; 24]);
                0
            }
        };
        b.extend(m.prot.to_ne_bytes());
        b.extend(0u32.to_ne_bytes());
        padded_str(&mut b, &m.path);
        trailer(&mut b, m.pid, m.tid, m.time);
        (misc, b)
    }

    #[test]
    fn parses_mmap2_with_build_id_and_with_inode() {
        for file in [
            FileId::BuildId((1..=20).collect()),
            FileId::Inode {
                major: 8,
                minor: 1,
                ino: 1234,
                generation: 5,
            },
        ] {
            let m = Mmap {
                pid: 10,
                tid: 11,
                start: 0x5555_0000,
                len: 0x2000,
                pgoff: 0x1000,
                file,
                prot: 5,
                path: "/usr/lib/libdemo.so".into(),
                time: 99,
            };
            let (misc, body) = mmap2_body(&m);
            assert_eq!(parse(kind::MMAP2, misc, &body), Some(Record::Mmap(m)));
        }
    }

    #[test]
    fn parses_comm_fork_exit_and_lost() {
        let mut b = Vec::new();
        b.extend(5u32.to_ne_bytes());
        b.extend(6u32.to_ne_bytes());
        padded_str(&mut b, "worker");
        trailer(&mut b, 5, 6, 7);
        assert_eq!(
            parse(kind::COMM, MISC_COMM_EXEC, &b),
            Some(Record::Comm(Comm {
                pid: 5,
                tid: 6,
                comm: "worker".into(),
                exec: true,
                time: 7
            }))
        );

        let mut b = Vec::new();
        for v in [20u32, 10, 21, 10] {
            b.extend(v.to_ne_bytes());
        }
        b.extend(3u64.to_ne_bytes());
        trailer(&mut b, 20, 21, 3);
        let task = Task {
            pid: 20,
            ppid: 10,
            tid: 21,
            ptid: 10,
            time: 3,
        };
        assert_eq!(parse(kind::FORK, 0, &b), Some(Record::Fork(task.clone())));
        assert_eq!(parse(kind::EXIT, 0, &b), Some(Record::Exit(task)));

        let mut b = Vec::new();
        b.extend(1u64.to_ne_bytes());
        b.extend(42u64.to_ne_bytes());
        trailer(&mut b, 0, 0, 8);
        assert_eq!(
            parse(kind::LOST, 0, &b),
            Some(Record::Lost { lost: 42, time: 8 })
        );
    }

    #[test]
    fn truncated_and_unknown_records_are_refused() {
        assert_eq!(parse(kind::MMAP2, 0, &[0u8; 20]), None);
        assert_eq!(parse(kind::COMM, 0, &[]), None);
        assert_eq!(parse(9999, 0, &[0u8; 64]), None);
    }
}
