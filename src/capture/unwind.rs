//! `--call-graph cfi`: the tables the BPF unwinder (bpf/unwind.h) reads.
//!
//! In: the objects and address spaces the tracker follows. Each object (every
//! executable file a target maps, and the vDSO) is built into an unwind table from
//! its call frame information (symbolizer::unwind, on a worker thread, shared by
//! build id or file identity), encoded into 8-byte rows plus a page index and
//! copied into the mmap'd `unwind_rows` and `unwind_index` arrays. Each process's
//! executable mappings, each with where its object's table lies, go to
//! `process_maps`, rewritten when the process maps, execs or exits and when a table
//! it waits for arrives (a forked child gets its parent's in BPF, at once).
//! Out: tables in the kernel, and the counts of what was loaded and left out.
//! Objects no process maps any more are removed (the daemon asks each window).

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use libbpf_rs::MapCore;

use super::exec_guard::ExecGuard;
use super::mapped::Mapped;
use super::sampler::ROWS_CHUNK;
use symbolizer::objects::ObjectKind;
use symbolizer::unwind::{
    CfaRule, ObjectKey, RbpRule, TableCache, TableError, UnwindRow, UnwindTable,
};
use symbolizer::{ObjectId, Tracker};

use super::skel::limits::{INDEX_SHIFT, MAX_MAPPINGS};
use super::skel::types::{
    exec_mapping, flamebpf_cfa, flamebpf_mapping, flamebpf_process_flags, index_entry,
    process_mappings, unwind_row,
};

/// Encodes one row for the BPF unwinder; rules whose numbers do not fit the
/// encoding become `CFA_UNSUPPORTED` (counted when a walk meets one).
pub fn encode(row: &UnwindRow) -> unwind_row {
    let eighths = |off: i32| (off >= 0 && off % 8 == 0).then(|| u16::try_from(off / 8).ok())?;
    let (cfa, cfa_q) = match row.cfa {
        CfaRule::Rsp(off) => eighths(off).map_or((flamebpf_cfa::CFA_UNSUPPORTED, 0), |q| {
            (flamebpf_cfa::CFA_RSP, q)
        }),
        CfaRule::Rbp(off) => eighths(off).map_or((flamebpf_cfa::CFA_UNSUPPORTED, 0), |q| {
            (flamebpf_cfa::CFA_RBP, q)
        }),
        CfaRule::Plt { threshold } => (flamebpf_cfa::CFA_PLT, u16::from(threshold)),
        CfaRule::Signal => (flamebpf_cfa::CFA_SIGNAL, 0),
        CfaRule::EndOfStack => (flamebpf_cfa::CFA_END, 0),
        CfaRule::NoInfo => (flamebpf_cfa::CFA_NONE, 0),
        CfaRule::Unsupported => (flamebpf_cfa::CFA_UNSUPPORTED, 0),
    };
    let rbp_q = match row.rbp {
        RbpRule::Same | RbpRule::Undefined => Some(0),
        RbpRule::AtCfa(off) if off % 8 == 0 && off != 0 => i8::try_from(off / 8).ok(),
        RbpRule::AtCfa(_) => None,
    };
    let (cfa, cfa_q, rbp_q) = match rbp_q {
        Some(q) => (cfa, cfa_q, q),
        None => (flamebpf_cfa::CFA_UNSUPPORTED, 0, 0),
    };
    unwind_row {
        pc: row.start,
        cfa: cfa.0 as u8,
        rbp_q,
        cfa_q,
    }
}

/// The page index of a table: for each page p of its span, the rows that can
/// cover a pc in it: from the last row at or below the page's first address to
/// the last row at or below the next page's.
pub fn page_index(rows: &[UnwindRow], span: u64) -> Vec<index_entry> {
    let pages = (span >> INDEX_SHIFT) + 1;
    let last_at_or_below = |at: u64| {
        let i = rows.partition_point(|r| u64::from(r.start) <= at);
        i.saturating_sub(1) as u32
    };
    (0..pages)
        .map(|p| index_entry {
            lo: last_at_or_below(p << INDEX_SHIFT),
            hi: last_at_or_below((p + 1) << INDEX_SHIFT),
        })
        .collect()
}

/// The executable segments an object's code can be mapped from, each with its
/// `file offset + delta = address relative to the table's base`. Objects have
/// one or two (BOLT-optimized ones such as librustc_driver and libLLVM add a
/// second with another vaddr-to-offset difference); a mapping takes the delta of
/// the segment it maps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Segments {
    /// (first file offset, end file offset, delta); unused ones are empty.
    list: [(u64, u64, i64); 4],
}

impl Segments {
    fn of(table: &UnwindTable) -> Segments {
        let mut s = Segments::default();
        let exec = table.segments().iter().filter(|g| g.executable);
        for (slot, g) in s.list.iter_mut().zip(exec) {
            *slot = (
                g.file_offset,
                g.file_offset.saturating_add(g.file_size),
                g.vaddr as i64 - g.file_offset as i64 - table.base() as i64,
            );
        }
        s
    }

    /// The delta for a mapping of `len` bytes from file offset `pgoff`: of the
    /// executable segment it overlaps (a mapping starts at the page boundary at or
    /// below its segment's first byte).
    fn delta(&self, pgoff: u64, len: u64) -> i64 {
        let end = pgoff.saturating_add(len);
        self.list
            .iter()
            .find(|&&(a, b, _)| b > a && a < end && pgoff < b)
            .or_else(|| self.list.first())
            .map_or(0, |&(_, _, d)| d)
    }
}

/// The span of addresses the table must cover: to the end of its last executable
/// segment.
fn span(table: &UnwindTable) -> u64 {
    let end = table
        .segments()
        .iter()
        .filter(|s| s.executable)
        .map(|s| s.vaddr.saturating_add(s.file_size))
        .max()
        .unwrap_or(0);
    let last_row = table.rows().last().map_or(0, |r| u64::from(r.start));
    end.saturating_sub(table.base()).max(last_row)
}

/// First-fit ranges of a fixed-size array, freed ranges merged with neighbours.
#[derive(Debug)]
struct Space {
    free: Vec<(u32, u32)>, // (start, len), sorted by start
}

impl Space {
    fn new(len: u32) -> Space {
        Space {
            free: vec![(0, len)],
        }
    }

    fn take(&mut self, len: u32) -> Option<u32> {
        let i = self.free.iter().position(|&(_, l)| l >= len)?;
        let (start, l) = self.free[i];
        if l == len {
            self.free.remove(i);
        } else {
            self.free[i] = (start + len, l - len);
        }
        Some(start)
    }

    fn give(&mut self, start: u32, len: u32) {
        let i = self.free.partition_point(|&(s, _)| s < start);
        self.free.insert(i, (start, len));
        if i + 1 < self.free.len() && self.free[i].0 + self.free[i].1 == self.free[i + 1].0 {
            self.free[i].1 += self.free[i + 1].1;
            self.free.remove(i + 1);
        }
        if i > 0 && self.free[i - 1].0 + self.free[i - 1].1 == self.free[i].0 {
            self.free[i - 1].1 += self.free[i].1;
            self.free.remove(i);
        }
    }
}

/// One chunk of unwind rows (bpf/unwind.h), in its slot of `unwind_rows`.
struct Chunk {
    /// Keeps the array alive with its mapping (the slot holds it for the
    /// program).
    _map: libbpf_rs::MapHandle,
    rows: Mapped<unwind_row>,
}

impl Chunk {
    /// Puts `map` in slot `k` of `slots` and maps it.
    fn place(slots: &libbpf_rs::MapHandle, k: u32, map: libbpf_rs::MapHandle) -> Result<Chunk> {
        let rows = Mapped::new(&map)?;
        let fd = map.as_fd().as_raw_fd() as u32;
        slots
            .update(
                &k.to_ne_bytes(),
                &fd.to_ne_bytes(),
                libbpf_rs::MapFlags::ANY,
            )
            .context("putting a chunk of unwind rows in place")?;
        Ok(Chunk { _map: map, rows })
    }
}

/// How long the table worker waits for a job before it lets go of the tables
/// the kernel already holds.
const TABLE_IDLE: Duration = Duration::from_millis(500);

/// An object's table in the kernel.
#[derive(Debug, Clone, Copy)]
struct Loaded {
    rows: (u32, u32),
    /// Rows of the table (the range holds at least one).
    len: u32,
    index: (u32, u32),
    /// Which delta a mapping takes.
    segments: Segments,
}

/// What the unwinder can do with an object's code.
#[derive(Debug, Clone, Copy)]
enum State {
    Table(Loaded),
    /// No call frame information, or unreadable: frame pointers.
    NoTable,
    /// Being built, or no room was left: frame pointers, counted.
    NotLoaded,
}

/// A table the worker built, or why it could not.
struct Built {
    key: ObjectKey,
    result: Result<Arc<UnwindTable>, TableError>,
    took: Duration,
}

/// What the tables amount to, for the summary and /metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Objects whose tables are in the kernel now.
    pub objects: u64,
    /// Processes whose mappings are in the kernel now.
    pub processes: u64,
    /// Processes with more executable mappings than the kernel keeps per process.
    pub too_many_mappings: u64,
    /// Rows in the kernel now.
    pub rows: u64,
    /// Objects without call frame information (stepped with frame pointers).
    pub without_cfi: u64,
    /// Objects whose table did not fit `--unwind-rows` (frame pointers, counted).
    pub no_room: u64,
    /// Objects that could not be read.
    pub unreadable: u64,
    /// Tables built (not taken from the cache), and the slowest build.
    pub built: u64,
    /// The slowest build, in milliseconds.
    pub slowest_build_ms: u64,
}

impl TableStats {
    /// One line for `-v`.
    pub fn line(&self) -> String {
        format!(
            "unwind tables: {} objects, {} rows ({:.1} MiB) in the kernel for {} processes; \
             {} built (slowest {} ms), {} without CFI, {} unreadable, {} without room \
             (raise --unwind-rows), {} processes with more than {MAX_MAPPINGS} executable mappings",
            self.objects,
            self.rows,
            (self.rows * 8) as f64 / (1 << 20) as f64,
            self.processes,
            self.built,
            self.slowest_build_ms,
            self.without_cfi,
            self.unreadable,
            self.no_room,
            self.too_many_mappings
        )
    }
}

/// The unwind tables of a capture.
pub struct Tables {
    /// `unwind_rows`, the array of chunks the program reads rows through.
    chunk_slots: libbpf_rs::MapHandle,
    /// Each chunk of rows, once made.
    chunks: Vec<Option<Chunk>>,
    index: Mapped<index_entry>,
    row_space: Space,
    index_space: Space,
    /// Each object's table key and where to read it; objects without one
    /// (anonymous memory) are absent.
    keys: HashMap<ObjectId, (ObjectKey, PathBuf)>,
    /// What each table key amounts to in the kernel.
    states: HashMap<ObjectKey, State>,
    /// The processes whose entry names each table key, to rewrite when it changes.
    users: HashMap<ObjectKey, HashSet<u32>>,
    /// Every object below this id has been looked at.
    seen_up_to: u32,
    jobs: mpsc::Sender<(ObjectKey, PathBuf)>,
    done: mpsc::Receiver<Built>,
    /// Readable when the worker has finished a table: wakes the capture loop.
    ready: Arc<std::os::fd::OwnedFd>,
    /// Processes to write again.
    dirty: HashSet<u32>,
    /// Processes with an entry in the kernel.
    written: HashSet<u32>,
    /// The generation of the last entry written (`process_mappings.gen`).
    generation: u32,
    /// This process's copy of the vDSO, which every process maps.
    vdso: Option<symbolizer::vdso::Vdso>,
    /// Leave flamebpf's own process out.
    skip_self: bool,
    /// Counts so far.
    pub stats: TableStats,
}

impl Tables {
    /// Maps the program's table arrays, puts the first chunk of rows in place
    /// (`rows_cap` rows may be used in all) and starts the worker that builds
    /// tables.
    pub fn new(
        chunk_slots: &libbpf_rs::MapMut<'_>,
        first_chunk: libbpf_rs::MapHandle,
        rows_cap: u32,
        index: &libbpf_rs::MapMut<'_>,
    ) -> Result<Tables> {
        let chunk_slots =
            libbpf_rs::MapHandle::try_from(chunk_slots).context("duplicating unwind_rows")?;
        let mut chunks: Vec<Option<Chunk>> = (0..chunk_slots.max_entries()).map(|_| None).collect();
        chunks[0] = Some(Chunk::place(&chunk_slots, 0, first_chunk)?);
        let index = Mapped::<index_entry>::new(index)?;
        let (jobs, job_rx) = mpsc::channel::<(ObjectKey, PathBuf)>();
        let (done_tx, done) = mpsc::channel();
        // SAFETY: eventfd with valid flags; the result is checked.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if efd < 0 {
            return Err(std::io::Error::last_os_error()).context("creating an eventfd");
        }
        // SAFETY: a new descriptor nothing else owns.
        let ready =
            Arc::new(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(efd) });
        let signal = Arc::clone(&ready);
        std::thread::Builder::new()
            .name("flamebpf-tables".into())
            .spawn(move || {
                let mut cache = TableCache::new();
                loop {
                    let (key, path) = match job_rx.recv_timeout(TABLE_IDLE) {
                        Ok(job) => job,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            // The capture loop has installed what was sent by now
                            // and dropped its reference: the kernel holds its own
                            // copy of the rows. Right after a send it still holds
                            // one, so the last table of a burst (libLLVM's is
                            // 28 MB) would otherwise stay until the next build.
                            if cache.evict_unused() > 0 {
                                crate::memory::give_back();
                            }
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    };
                    let started = Instant::now();
                    let result = cache.get_or_build(&key, || UnwindTable::load(&path));
                    let built = Built {
                        key,
                        result,
                        took: started.elapsed(),
                    };
                    if done_tx.send(built).is_err() {
                        break;
                    }
                    let one = 1u64.to_ne_bytes();
                    // SAFETY: an 8-byte write to the eventfd signal keeps open.
                    unsafe { libc::write(signal.as_raw_fd(), one.as_ptr().cast(), 8) };
                }
            })
            .context("starting the unwind table worker")?;
        Ok(Tables {
            row_space: Space::new(rows_cap.min(chunks.len() as u32 * ROWS_CHUNK)),
            index_space: Space::new(index.len as u32),
            chunk_slots,
            chunks,
            index,
            keys: HashMap::new(),
            states: HashMap::new(),
            users: HashMap::new(),
            seen_up_to: 0,
            jobs,
            done,
            ready,
            dirty: HashSet::new(),
            written: HashSet::new(),
            generation: 0,
            vdso: None,
            skip_self: false,
            stats: TableStats::default(),
        })
    }

    /// Brings the kernel up to date with the tracker: asks for the tables of new
    /// objects, installs the tables built since, and writes the entries of the
    /// processes that changed. With `wait`, first waits up to that long for every
    /// table asked for. Only processes that `sampled` says the capture samples
    /// get an entry (and so tables): tracking sees every process on the machine,
    /// and `record -p` of one process built tables for a compiler that happened
    /// to start beside it. Returns the processes whose address space changed,
    /// among those.
    pub fn sync(
        &mut self,
        tracker: &mut Tracker,
        processes: &libbpf_rs::MapMut<'_>,
        guard: &ExecGuard<'_>,
        wait: Option<Duration>,
        sampled: &dyn Fn(u32) -> bool,
    ) -> Result<std::collections::BTreeSet<u32>> {
        self.request_new(tracker);
        // one that has an entry keeps being followed, so that its exit removes it
        let changed: std::collections::BTreeSet<u32> = tracker
            .take_changed()
            .into_iter()
            .filter(|&pid| self.written.contains(&pid) || sampled(pid))
            .collect();
        self.dirty.extend(&changed);
        self.install(wait);
        for pid in std::mem::take(&mut self.dirty) {
            // flamebpf itself, when only the command's child runs its image until
            // exec: its table would keep the worker from the command's
            if !(self.skip_self && pid == std::process::id()) {
                self.write_process(pid, tracker, processes, guard)?;
            }
        }
        Ok(changed)
    }

    /// Sends the objects the tracker found since the last call to the worker.
    fn request_new(&mut self, tracker: &Tracker) {
        let total = tracker.objects.len() as u32;
        for raw in self.seen_up_to..total {
            let id = ObjectId(raw);
            let obj = tracker.objects.get(id);
            let request = match obj.kind {
                ObjectKind::Anonymous => None,
                ObjectKind::Vdso => {
                    if self.vdso.is_none() {
                        self.vdso = symbolizer::vdso::Vdso::load().ok();
                    }
                    // the image lives in a memfd that self.vdso keeps open
                    self.vdso.as_ref().and_then(|v| {
                        let path = v.path();
                        Some((ObjectKey::of_file(&path).ok()?, path))
                    })
                }
                // by file identity, not build id: mmap records carry a build id only
                // when the kernel finds it in memory, and prewarm() has none
                ObjectKind::File => obj
                    .read_path()
                    .and_then(|path| Some((ObjectKey::of_file(&path).ok()?, path))),
            };
            let Some((key, path)) = request else {
                continue;
            };
            self.keys.insert(id, (key, path));
        }
        self.seen_up_to = total;
    }

    /// Asks for the tables of files that a command is about to map (its program,
    /// the C library), before it does; flamebpf's own process is left out from
    /// now on (the command runs its image only until it execs).
    pub fn prepare_for_command(&mut self, paths: &[PathBuf]) {
        self.skip_self = true;
        for path in paths {
            if let Ok(key) = ObjectKey::of_file(path) {
                self.request(&key, path);
            }
        }
    }

    /// Asks the worker for an object's table the first time a process needs it.
    fn request(&mut self, key: &ObjectKey, path: &std::path::Path) {
        if !self.states.contains_key(key)
            && self.jobs.send((key.clone(), path.to_path_buf())).is_ok()
        {
            self.states.insert(key.clone(), State::NotLoaded);
        }
    }

    /// A descriptor that turns readable when a table is ready to install.
    pub fn wake_fd(&self) -> std::os::fd::RawFd {
        self.ready.as_raw_fd()
    }

    /// Copies the tables the worker finished into the kernel.
    fn install(&mut self, wait: Option<Duration>) {
        let mut count = [0u8; 8];
        // SAFETY: an 8-byte read from the nonblocking eventfd: resets its count.
        unsafe { libc::read(self.ready.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
        let deadline = wait.map(|w| Instant::now() + w);
        loop {
            let waiting = self.states.values().any(|s| matches!(s, State::NotLoaded));
            let built = match deadline {
                Some(d) if waiting => {
                    match self
                        .done
                        .recv_timeout(d.saturating_duration_since(Instant::now()))
                    {
                        Ok(b) => b,
                        Err(_) => return,
                    }
                }
                _ => match self.done.try_recv() {
                    Ok(b) => b,
                    Err(_) => return,
                },
            };
            let ms = built.took.as_millis() as u64;
            self.stats.slowest_build_ms = self.stats.slowest_build_ms.max(ms);
            let state = match built.result {
                Ok(table) => {
                    self.stats.built += 1;
                    self.put(&table).map_or(State::NotLoaded, State::Table)
                }
                Err(TableError::NoCfi) => {
                    self.stats.without_cfi += 1;
                    State::NoTable
                }
                Err(_) => {
                    self.stats.unreadable += 1;
                    State::NoTable
                }
            };
            if let Some(pids) = self.users.get(&built.key) {
                self.dirty.extend(pids);
            }
            self.states.insert(built.key, state);
        }
    }

    /// Copies one table into the arrays; `None` when it does not fit.
    fn put(&mut self, table: &UnwindTable) -> Option<Loaded> {
        let rows: Vec<unwind_row> = table.rows().iter().map(encode).collect();
        let index = page_index(table.rows(), span(table));
        let (Ok(nrows), Ok(nindex)) = (u32::try_from(rows.len()), u32::try_from(index.len()))
        else {
            self.stats.no_room += 1;
            return None;
        };
        let Some(rows_at) = self.row_space.take(nrows.max(1)) else {
            self.stats.no_room += 1;
            return None;
        };
        let Some(index_at) = self.index_space.take(nindex) else {
            self.row_space.give(rows_at, nrows.max(1));
            self.stats.no_room += 1;
            return None;
        };
        if self.write_rows(rows_at, &rows).is_err() || self.index.write(index_at, &index).is_err() {
            // the kernel refused to map the chunk: as good as no room
            self.row_space.give(rows_at, nrows.max(1));
            self.index_space.give(index_at, nindex);
            self.stats.no_room += 1;
            return None;
        }
        self.stats.objects += 1;
        self.stats.rows += u64::from(nrows);
        Some(Loaded {
            rows: (rows_at, nrows.max(1)),
            len: nrows,
            index: (index_at, nindex),
            segments: Segments::of(table),
        })
    }

    /// Copies rows into `unwind_rows` from row number `at`, making the chunks
    /// they fall in first.
    fn write_rows(&mut self, at: u32, rows: &[unwind_row]) -> Result<()> {
        let mut at = at;
        let mut rest = rows;
        while !rest.is_empty() {
            let (k, off) = ((at / ROWS_CHUNK) as usize, at % ROWS_CHUNK);
            let n = rest.len().min((ROWS_CHUNK - off) as usize);
            if self.chunks[k].is_none() {
                let made = super::sampler::rows_chunk(true)?;
                self.chunks[k] = Some(Chunk::place(&self.chunk_slots, k as u32, made)?);
            }
            let chunk = self.chunks[k].as_mut().expect("made above");
            chunk.rows.write(off, &rest[..n])?;
            at += n as u32;
            rest = &rest[n..];
        }
        Ok(())
    }

    /// Writes (or, once it exited, removes) one process's entry.
    fn write_process(
        &mut self,
        pid: u32,
        tracker: &Tracker,
        processes: &libbpf_rs::MapMut<'_>,
        guard: &ExecGuard<'_>,
    ) -> Result<()> {
        if tracker.history.has_exited(pid) || !tracker.history.knows(pid) {
            if self.written.remove(&pid) {
                let _ = processes.delete(&pid.to_ne_bytes());
                self.stats.processes -= 1;
                // a daemon sees thousands of processes come and go through the
                // C library: their pids must not pile up in its users
                for pids in self.users.values_mut() {
                    pids.remove(&pid);
                }
            }
            return Ok(());
        }
        // SAFETY: a repr(C) struct of integers, all zeros is a valid value.
        let mut entry: process_mappings = unsafe { std::mem::zeroed() };
        let mut len = 0;
        for m in tracker.history.current(pid) {
            if super::python::named_like_python(tracker.objects.get(m.object)) {
                entry.flags |= flamebpf_process_flags::PROCESS_MAY_RUN_PYTHON.0;
            }
            let Some((key, path)) = self.keys.get(&m.object).cloned() else {
                continue; // anonymous memory: not listed, walked with frame pointers
            };
            self.request(&key, &path);
            let key = &key;
            self.users.entry(key.clone()).or_default().insert(pid);
            if len == MAX_MAPPINGS {
                self.stats.too_many_mappings += 1;
                break;
            }
            let state = self.states.get(key).copied().unwrap_or(State::NotLoaded);
            entry.m[len] = mapping_entry(m.start, m.end, m.pgoff, state);
            len += 1;
        }
        entry.len = len as u32;
        // rows the kernel cached for this process's earlier mappings go stale
        self.generation = self.generation.wrapping_add(1).max(1);
        entry.gen = self.generation;
        // a process that exec'd since the records: the exec's own records bring
        // its new image
        if !guard.write(processes, pid, as_bytes(&entry))? {
            return Ok(());
        }
        if self.written.insert(pid) {
            self.stats.processes += 1;
        }
        Ok(())
    }

    /// Frees the tables no process the tracker still knows maps.
    pub fn evict(&mut self, tracker: &Tracker) {
        let in_use: HashSet<&ObjectKey> = tracker
            .history
            .objects_in_use()
            .iter()
            .filter_map(|id| self.keys.get(id).map(|(k, _)| k))
            .collect();
        let gone: Vec<ObjectKey> = self
            .states
            .keys()
            .filter(|k| !in_use.contains(k))
            .cloned()
            .collect();
        for key in gone {
            self.users.remove(&key);
            if let Some(State::Table(l)) = self.states.remove(&key) {
                self.row_space.give(l.rows.0, l.rows.1);
                self.index_space.give(l.index.0, l.index.1);
                self.stats.objects -= 1;
                self.stats.rows -= u64::from(l.len);
            }
        }
        let known: HashSet<ObjectId> = tracker.history.objects_in_use();
        self.keys.retain(|id, _| known.contains(id));
        self.written.retain(|pid| tracker.history.knows(*pid));
    }
}

/// One mapping as the BPF side reads it.
fn mapping_entry(start: u64, end: u64, pgoff: u64, state: State) -> exec_mapping {
    // SAFETY: a repr(C) struct of integers, all zeros is a valid value.
    let mut e: exec_mapping = unsafe { std::mem::zeroed() };
    e.start = start;
    e.end = end;
    match state {
        State::Table(l) => {
            e.kind = flamebpf_mapping::MAPPING_TABLE.0;
            // pc - start + pgoff is the file offset; + delta, relative to the base
            let delta = l.segments.delta(pgoff, end.saturating_sub(start));
            e.rel = (pgoff as i64)
                .wrapping_sub(start as i64)
                .wrapping_add(delta);
            e.rows_start = l.rows.0;
            e.rows_len = l.len;
            e.index_start = l.index.0;
            e.index_len = l.index.1;
        }
        State::NoTable => e.kind = flamebpf_mapping::MAPPING_NO_TABLE.0,
        State::NotLoaded => e.kind = flamebpf_mapping::MAPPING_NOT_LOADED.0,
    }
    e
}

fn as_bytes<T>(v: &T) -> &[u8] {
    // SAFETY: T is a repr(C) struct of integers from the skeleton, read as bytes.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(start: u32, cfa: CfaRule, rbp: RbpRule) -> UnwindRow {
        UnwindRow { start, cfa, rbp }
    }

    #[test]
    fn rows_encode_in_eighths_and_refuse_what_does_not_fit() {
        let r = encode(&row(0x10, CfaRule::Rsp(8), RbpRule::Same));
        assert_eq!((r.pc, r.cfa, r.cfa_q, r.rbp_q), (0x10, 1, 1, 0));
        let r = encode(&row(0, CfaRule::Rbp(16), RbpRule::AtCfa(-16)));
        assert_eq!((r.cfa, r.cfa_q, r.rbp_q), (2, 2, -2));
        let r = encode(&row(0, CfaRule::Plt { threshold: 11 }, RbpRule::Same));
        assert_eq!((r.cfa, r.cfa_q), (3, 11));
        for odd in [
            row(0, CfaRule::Rsp(12), RbpRule::Same),
            row(0, CfaRule::Rsp(-8), RbpRule::Same),
            row(0, CfaRule::Rsp(8 << 16), RbpRule::Same),
            row(0, CfaRule::Rbp(16), RbpRule::AtCfa(-12)),
            row(0, CfaRule::Rbp(16), RbpRule::AtCfa(-8 * 200)),
        ] {
            assert_eq!(
                encode(&odd).cfa,
                flamebpf_cfa::CFA_UNSUPPORTED.0 as u8,
                "{odd:?}"
            );
        }
        assert_eq!(
            encode(&row(0, CfaRule::EndOfStack, RbpRule::Undefined)).cfa,
            5
        );
        assert_eq!(encode(&row(0, CfaRule::Signal, RbpRule::Same)).cfa, 4);
        assert_eq!(encode(&row(0, CfaRule::NoInfo, RbpRule::Same)).cfa, 0);
    }

    #[test]
    fn the_page_index_brackets_every_pc() {
        let rows: Vec<UnwindRow> = [0u32, 0x10, 0x900, 0x1000, 0x1008, 0x2ff0, 0x3800]
            .iter()
            .map(|&s| row(s, CfaRule::Rsp(8), RbpRule::Same))
            .collect();
        let index = page_index(&rows, 0x3900);
        assert_eq!(index.len(), 4);
        for pc in (0..0x3900u32).step_by(7) {
            let want = rows.partition_point(|r| r.start <= pc) - 1;
            let p = (pc >> INDEX_SHIFT) as usize;
            let (lo, hi) = (index[p].lo as usize, index[p].hi as usize);
            assert!(
                lo <= want && want <= hi,
                "pc {pc:#x}: row {want} not in {lo}..={hi}"
            );
        }
    }

    #[test]
    fn space_is_reused_and_merged() {
        let mut s = Space::new(100);
        let a = s.take(40).unwrap();
        let b = s.take(40).unwrap();
        assert_eq!((a, b), (0, 40));
        assert!(s.take(40).is_none());
        s.give(a, 40);
        s.give(b, 40);
        assert_eq!(s.take(100), Some(0), "freed neighbours merge");
    }

    #[test]
    fn mapping_entries_turn_pcs_into_table_offsets() {
        // two executable segments, as BOLT leaves them: file 0x1000.. at vaddr
        // 0x2000.. and file 0x5000.. at vaddr 0x5000..; the table's base is 0x2000
        let mut segments = Segments::default();
        segments.list[0] = (0x1000, 0x3000, 0x2000 - 0x1000 - 0x2000);
        segments.list[1] = (0x5000, 0x9000, -0x2000);
        let l = Loaded {
            rows: (100, 10),
            len: 10,
            index: (7, 3),
            segments,
        };
        // the first mapped at 0x7f0000001000: pc 0x...1234 is vaddr 0x2234
        let e = mapping_entry(0x7f00_0000_1000, 0x7f00_0000_3000, 0x1000, State::Table(l));
        assert_eq!(0x7f00_0000_1234i64.wrapping_add(e.rel), 0x234);
        // the second mapped at 0x7f0000005000: pc 0x...5010 is vaddr 0x5010
        let e = mapping_entry(0x7f00_0000_5000, 0x7f00_0000_9000, 0x5000, State::Table(l));
        assert_eq!(0x7f00_0000_5010i64.wrapping_add(e.rel), 0x5010 - 0x2000);
        assert_eq!(
            (e.rows_start, e.rows_len, e.index_start, e.index_len),
            (100, 10, 7, 3)
        );
        assert_eq!(e.kind, flamebpf_mapping::MAPPING_TABLE.0);
        let e = mapping_entry(1, 2, 0, State::NotLoaded);
        assert_eq!(e.kind, flamebpf_mapping::MAPPING_NOT_LOADED.0);
    }
}
