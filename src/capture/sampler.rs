//! The loaded BPF programs: loading with the capture's settings, attaching to the
//! sampling events and the task tracepoints, enabling, switching map sets, and
//! draining a set into [`Drained`] (the map reading itself is in [`super::maps`]).

use std::ffi::CString;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{anyhow, Context, Result};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{AsRawLibbpf, Link, MapCore, MapFlags, OpenObject, PrintLevel};

use super::core_btf;
use super::maps::{read_set, Drained};
use super::skel::limits::COMM_LEN;
use super::skel::{ProfileSkel, ProfileSkelBuilder};
use super::stats::{Stats, CLASSES};

/// Stack map entries in CFI mode, where it holds kernel stacks only.
const CFI_STACK_MAP_SIZE: u32 = 4096;

/// `BPF_F_NO_PREALLOC`: hash maps take memory as entries arrive instead of all at
/// load time (allowed in perf_event programs since Linux 6.1).
const BPF_F_NO_PREALLOC: u32 = 1;

/// Settings the BPF program is loaded with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Sample only the processes in the target set.
    pub filter_pids: bool,
    /// Add children of targets to the target set.
    pub follow_forks: bool,
    /// Keep samples of the idle task.
    pub include_idle: bool,
    /// Entries of the stack-trace map, and of the overflow map beside it.
    pub stack_map_size: u32,
    /// Entries of the counts map (unique pid/tid/comm/stack combinations).
    pub counts_map_size: u32,
    /// Sample only threads with this command name (at most 15 bytes).
    pub comm: Option<String>,
    /// Sample only tasks in this cgroup (v2 directory) or below it.
    pub cgroup: Option<std::path::PathBuf>,
    /// Use both map sets, switching between them ([`Sampler::flip`]); a single
    /// capture uses one and gets the other at minimal size.
    pub two_sets: bool,
    /// Leave this process out: the continuous daemon would otherwise sample its own
    /// symbolization and keep its own large binary's debug information in memory.
    pub exclude_self: bool,
    /// DWARF mode: (bytes of user stack to copy, ring buffer bytes). The sample
    /// records go through the ring buffer; the stack and counts maps stay unused.
    pub dwarf: Option<(u32, u32)>,
    /// CFI mode: rows of unwind table the kernel holds.
    pub cfi: Option<u32>,
    /// `--off-cpu`: waits shorter than this many nanoseconds are left out.
    pub off_cpu_min_ns: Option<u64>,
    /// Keep thread ids in the aggregate (an output shows threads).
    pub per_thread: bool,
    /// Read the Python frames of CPython processes (cfi and fp modes). Off, the verifier
    /// prunes the Python walk: a third of the program's verification time.
    pub python_frames: bool,
    /// `--lines`: Python frames say which instruction they run (CFI mode).
    pub python_lines: bool,
    /// The sampling event is a hardware one, whose samples are taken in NMI and
    /// may interrupt another program half way through its scratch room.
    pub nmi_event: bool,
}

/// The loaded program with its attachments.
pub struct Sampler {
    skel: ProfileSkel<'static>,
    links: Vec<Link>,
    /// The sampling events; each is owned (and closed) by its link.
    events: Vec<RawFd>,
    /// The map set samples go to now.
    active: u32,
    /// DWARF mode: the program that sends records is the one attached.
    dwarf: bool,
    ring: Option<libbpf_rs::RingBuffer<'static>>,
    /// Records the ring buffer delivered, not yet taken.
    records: std::rc::Rc<std::cell::RefCell<Vec<Vec<u8>>>>,
    /// `--off-cpu`: the sched_switch and sched_wakeup links, dropped at the end.
    switch_links: Vec<Link>,
    /// Which kernel types CO-RE relocated against (said with -v).
    pub core_btf: String,
    /// CFI mode: the first chunk of unwind rows, until the tables take it.
    first_chunk: Option<libbpf_rs::MapHandle>,
}

static LIBBPF_LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn capture_libbpf_log(_level: PrintLevel, msg: String) {
    if let Ok(mut log) = LIBBPF_LOG.lock() {
        log.push(msg);
        if log.len() > 4000 {
            log.drain(..1000);
        }
    }
}

/// The last `n` lines libbpf logged (the verifier log ends up here on failure).
pub fn libbpf_log_tail(n: usize) -> Vec<String> {
    let log = LIBBPF_LOG.lock().map(|l| l.clone()).unwrap_or_default();
    let lines: Vec<String> = log
        .iter()
        .flat_map(|m| m.lines().map(str::to_string).collect::<Vec<_>>())
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// Opens and loads the program; CO-RE relocates against `core_btf` when given
/// (the kernel's types the object reads, core_btf.rs), else the whole kernel BTF.
fn open_and_load(
    config: &Config,
    no_prealloc: bool,
    core_btf: Option<&Path>,
    rows_chunk: BorrowedFd<'_>,
) -> Result<ProfileSkel<'static>> {
    // The skeleton borrows its object storage for as long as it lives; one small
    // allocation per load is leaked so the Sampler owns the skeleton outright.
    let storage: &'static mut MaybeUninit<OpenObject> = Box::leak(Box::new(MaybeUninit::uninit()));
    let builder = ProfileSkelBuilder::default();
    let mut open = match core_btf {
        Some(path) => {
            let path = CString::new(path.as_os_str().as_bytes())
                .context("a cache path with a NUL byte")?;
            let opts = libbpf_rs::libbpf_sys::bpf_object_open_opts {
                sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_object_open_opts>() as _,
                btf_custom_path: path.as_ptr(),
                ..Default::default()
            };
            // libbpf copies the path at open
            builder.open_opts(opts, storage)
        }
        None => builder.open(storage),
    }
    .context("opening the BPF object")?;
    let rodata = open
        .maps
        .rodata_data
        .as_deref_mut()
        .ok_or_else(|| anyhow!("the BPF object has no read-only data"))?;
    rodata.filter_pids = config.filter_pids;
    rodata.follow_forks = config.follow_forks;
    rodata.include_idle = config.include_idle;
    if let Some(comm) = &config.comm {
        rodata.filter_comm = true;
        for (dst, src) in rodata
            .target_comm
            .iter_mut()
            .zip(comm.bytes().take(COMM_LEN - 1))
        {
            *dst = src as i8;
        }
    }
    rodata.filter_cgroup = config.cgroup.is_some();
    if config.exclude_self {
        rodata.exclude_tgid = std::process::id();
    }
    rodata.off_cpu_min_ns = config.off_cpu_min_ns.unwrap_or(0);
    rodata.per_thread = config.per_thread;
    rodata.two_sets = config.two_sets;
    // scratch.h: ROOM_NMI; ROOM_TASK (0) otherwise
    rodata.sample_room = u32::from(config.nmi_event);
    // a single capture's flush ends the waits; a window's counts them so far
    rodata.flush_final = !config.two_sets;
    let (mut stack, mut counts) = (config.stack_map_size, config.counts_map_size);
    let (stack1, counts1) = if config.two_sets {
        (stack, counts)
    } else {
        (1, 1)
    };
    match config.dwarf {
        Some((stack_bytes, ringbuf_bytes)) => {
            rodata.stack_bytes = stack_bytes;
            rodata.ring_wakeup_bytes = u64::from(ringbuf_bytes / 4);
            open.maps.samples.set_max_entries(ringbuf_bytes)?;
            // the aggregation maps stay unused: keep them minimal
            (stack, counts) = (1, 1);
        }
        None => rodata.stack_bytes = 0,
    }
    // CFI mode keeps user stacks by hash in the overflow maps, beside the kernel
    // stacks that collide: give them the room the STACK_TRACE map had.
    let overflow_scale = if config.cfi.is_some() { 2 } else { 1 };
    let (chunks, index) = match config.cfi {
        Some(rows) => {
            rodata.unwind_cfi = true;
            (rows.div_ceil(ROWS_CHUNK), (rows / 8).max(1024))
        }
        None => (1, 1),
    };
    // Python frames are read after the native walk, CFI or frame pointers
    // (bpf/python.h); DWARF mode sends stack copies and reads none
    if config.dwarf.is_none() {
        rodata.python_frames = config.python_frames;
        rodata.python_lines = config.python_lines;
    }
    if config.dwarf.is_some() || !config.python_frames {
        // unused: the thread cache (an LRU hash, always preallocated) and the
        // ring need not take their memory, nor their setup time at start
        open.maps.py_threads.set_max_entries(1)?;
        open.maps.py_stacks.set_max_entries(4096)?;
    }
    open.maps.unwind_rows.set_max_entries(chunks)?;
    // the chunks' shape, and the first chunk: no other is made at load
    open.maps.unwind_rows.set_inner_map_fd(rows_chunk)?;
    open.maps.unwind_index.set_max_entries(index)?;
    open.progs.profile.set_autoload(config.dwarf.is_none());
    open.progs
        .profile_dwarf
        .set_autoload(config.dwarf.is_some());
    // CFI mode keeps user stacks by hash in the overflow maps: the stack map holds
    // kernel stacks alone, far fewer (one that finds its bucket taken goes to the
    // overflow map too), and its entries are allocated and zeroed up front: 16 MB
    // for 16384, a third of a capture's start here
    let trace = |n: u32| {
        if config.cfi.is_some() {
            n.min(CFI_STACK_MAP_SIZE)
        } else {
            n
        }
    };
    let m = &mut open.maps;
    m.stacks0.set_max_entries(trace(stack))?;
    m.overflow0
        .set_max_entries(stack.saturating_mul(overflow_scale))?;
    m.counts0.set_max_entries(counts)?;
    m.stacks1.set_max_entries(trace(stack1))?;
    m.overflow1
        .set_max_entries(stack1.saturating_mul(overflow_scale))?;
    m.counts1.set_max_entries(counts1)?;
    if no_prealloc {
        // 12 KiB a process: taken as processes come, not 200 MB up front
        m.process_maps.set_map_flags(BPF_F_NO_PREALLOC)?;
        // filled as processes come (a capture of one process has one entry):
        // preallocating their free lists was a few ms of every start
        m.targets.set_map_flags(BPF_F_NO_PREALLOC)?;
        m.py_procs.set_map_flags(BPF_F_NO_PREALLOC)?;
        // A context switch may add two stacks and two counts with interrupts off,
        // where a map without preallocation has at most one element of a stack's
        // size at hand (the rest come at the next interrupt): --off-cpu takes the
        // aggregate's memory up front instead of losing stacks.
        if config.off_cpu_min_ns.is_none() {
            for map in [
                &mut m.overflow0,
                &mut m.counts0,
                &mut m.overflow1,
                &mut m.counts1,
            ] {
                map.set_map_flags(BPF_F_NO_PREALLOC)?;
            }
        }
    }
    // exec and exit end a process's tables and its Python
    let execs = config.cfi.is_some() || (config.python_frames && config.dwarf.is_none());
    open.progs
        .on_fork
        .set_autoload(config.follow_forks || execs);
    open.progs
        .on_exit
        .set_autoload(config.follow_forks || execs);
    open.progs.on_exec.set_autoload(execs);
    open.progs.on_prepare_exec.set_autoload(execs);
    let off_cpu = config.off_cpu_min_ns.is_some();
    for prog in [
        &mut open.progs.on_switch,
        &mut open.progs.on_wakeup,
        &mut open.progs.flush_waits,
        &mut open.progs.seed_waits,
    ] {
        prog.set_autoload(off_cpu);
    }
    Ok(open.load()?)
}

/// Rows in one chunk of `unwind_rows`.
pub const ROWS_CHUNK: u32 = 1 << super::skel::limits::ROWS_CHUNK_SHIFT;

/// A chunk of unwind rows (bpf/unwind.h's `rows_chunk`), mappable; outside CFI
/// mode a one-row stand-in, which the array of chunks needs to exist.
pub fn rows_chunk(cfi: bool) -> Result<libbpf_rs::MapHandle> {
    let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
        map_flags: libbpf_rs::libbpf_sys::BPF_F_MMAPABLE,
        ..Default::default()
    };
    let value = std::mem::size_of::<super::skel::types::unwind_row>() as u32;
    libbpf_rs::MapHandle::create(
        libbpf_rs::MapType::Array,
        Some("unwind_chunk"),
        4,
        value,
        if cfi { ROWS_CHUNK } else { 1 },
        &opts,
    )
    .context("making a chunk of unwind rows")
}

/// Writes the kernel types `skel`'s object reads to `path` (core_btf.rs).
fn store_core_btf(skel: &ProfileSkel<'_>, path: &Path) -> Result<()> {
    let obj = skel.object().as_libbpf_object();
    // SAFETY: the skeleton's object, alive for this call.
    let local = libbpf_rs::Btf::from_bpf_object(unsafe { obj.as_ref() })?
        .ok_or_else(|| anyhow!("the BPF object has no BTF"))?;
    core_btf::store(&local, || Ok(libbpf_rs::Btf::from_vmlinux()?), path)
}

impl Sampler {
    /// Loads the program. A load failure carries libbpf's words; the verifier log is
    /// in [`libbpf_log_tail`].
    pub fn load(config: &Config) -> Result<Sampler> {
        libbpf_rs::set_print(Some((PrintLevel::Debug, capture_libbpf_log)));
        let cache = core_btf::path_in(
            &crate::symbolize::debuginfod::default_cache("core-btf"),
            env!("FLAMEBPF_PROFILE_BPF_HASH"),
        );
        let cached = cache.as_deref().filter(|p| core_btf::usable(p));
        let first_chunk = rows_chunk(config.cfi.is_some())?;
        let chunk = first_chunk.as_fd();
        let mut used_cache = cached.is_some();
        // Before Linux 6.1, perf_event programs may only use preallocated maps.
        let without_cache = || {
            open_and_load(config, true, None, chunk)
                .or_else(|_| open_and_load(config, false, None, chunk))
        };
        let skel = match cached {
            Some(subset) => match open_and_load(config, true, Some(subset), chunk) {
                Ok(s) => s,
                Err(_) => {
                    // made for another kernel after all, or damaged: made again
                    used_cache = false;
                    let _ = std::fs::remove_file(subset);
                    without_cache()?
                }
            },
            None => without_cache()?,
        };
        let core_btf = match (&cache, cached) {
            (Some(path), Some(_)) if used_cache => {
                format!("the kernel types cached in {}", path.display())
            }
            // for the next start; a capture goes on without it
            (Some(path), _) => match store_core_btf(&skel, path) {
                Ok(()) => format!(
                    "the whole kernel BTF; its types cached in {}",
                    path.display()
                ),
                Err(e) => format!("the whole kernel BTF; not cached: {e:#}"),
            },
            (None, _) => "the whole kernel BTF (no kernel build id or BTF to cache by)".into(),
        };
        if let Some(dir) = &config.cgroup {
            let cg = std::fs::File::open(dir)
                .with_context(|| format!("opening cgroup {}", dir.display()))?;
            skel.maps
                .cgroups
                .update(
                    &0u32.to_ne_bytes(),
                    &cg.as_raw_fd().to_ne_bytes(),
                    MapFlags::ANY,
                )
                .with_context(|| format!("{} is not a cgroup v2 directory", dir.display()))?;
        }
        Ok(Sampler {
            skel,
            links: Vec::new(),
            events: Vec::new(),
            active: 0,
            dwarf: config.dwarf.is_some(),
            ring: None,
            records: Default::default(),
            switch_links: Vec::new(),
            core_btf,
            first_chunk: config.cfi.is_some().then_some(first_chunk),
        })
    }

    /// Attaches the task tracepoints: fork and exit keep the target set up to date,
    /// and, with `execs`, exec and exit end the per-process mappings (CFI mode)
    /// and Python runtimes. Returns why sched_prepare_exec is not attached, when
    /// it is not (kernels before 6.9).
    pub fn attach_task_tracepoints(&mut self, execs: bool) -> Result<Option<String>> {
        let mut missing = None;
        if execs {
            self.links.push(
                self.skel
                    .progs
                    .on_exec
                    .attach()
                    .context("attaching to sched_process_exec")?,
            );
            // 6.9 and later; without it on_exec ends the old image's tables at
            // the end of the exec instead of at its point of no return
            match self.skel.progs.on_prepare_exec.attach() {
                Ok(link) => self.links.push(link),
                Err(e) => missing = Some(e.to_string()),
            }
        }
        self.links.push(
            self.skel
                .progs
                .on_fork
                .attach()
                .context("attaching to sched_process_fork")?,
        );
        self.links.push(
            self.skel
                .progs
                .on_exit
                .attach()
                .context("attaching to sched_process_exit")?,
        );
        Ok(missing)
    }

    /// `--off-cpu`: begins the waits of the target threads off the CPU now, then
    /// attaches to sched_switch and sched_wakeup.
    pub fn start_off_cpu(&mut self, seed: bool) -> Result<()> {
        if seed {
            run_iterator(&self.skel.progs.seed_waits).context("finding the waits going now")?;
        }
        let p = &self.skel.progs;
        self.switch_links
            .push(p.on_switch.attach().context("attaching to sched_switch")?);
        self.switch_links
            .push(p.on_wakeup.attach().context("attaching to sched_wakeup")?);
        Ok(())
    }

    /// `--off-cpu`: counts the waits still going up to now, into the set they
    /// began in (call right after [`Sampler::flip`], before draining the old set).
    /// At the end of a capture, [`Sampler::stop_off_cpu`] first.
    pub fn flush_off_cpu(&self) -> Result<()> {
        if self.switch_links.is_empty() {
            return Ok(());
        }
        run_iterator(&self.skel.progs.flush_waits).context("counting the waits still going")
    }

    /// `--off-cpu`: stops following context switches and counts the waits still
    /// going up to now.
    pub fn stop_off_cpu(&mut self) -> Result<()> {
        if self.switch_links.is_empty() {
            return Ok(());
        }
        self.switch_links.clear();
        run_iterator(&self.skel.progs.flush_waits).context("counting the waits still going")
    }

    /// Attaches the sampling program to a (disabled) perf event. The link takes the
    /// descriptor over: libbpf closes it when the link goes.
    pub fn attach_event(&mut self, fd: OwnedFd) -> Result<()> {
        let prog = if self.dwarf {
            &self.skel.progs.profile_dwarf
        } else {
            &self.skel.progs.profile
        };
        let link = prog
            .attach_perf_event(fd.as_raw_fd())
            .context("attaching the BPF program to the perf event")?;
        self.links.push(link);
        self.events.push(fd.into_raw_fd());
        Ok(())
    }

    fn event_fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        // SAFETY: each descriptor stays open as long as its link, which self owns.
        self.events
            .iter()
            .map(|&fd| unsafe { BorrowedFd::borrow_raw(fd) })
    }

    /// Starts sampling on every attached event.
    pub fn enable(&self) -> Result<()> {
        for fd in self.event_fds() {
            crate::capture::perf::enable(fd).context("enabling a perf event")?;
        }
        Ok(())
    }

    /// Stops sampling; what was sampled stays in the maps.
    pub fn disable(&self) -> Result<()> {
        for fd in self.event_fds() {
            crate::capture::perf::disable(fd).context("disabling a perf event")?;
        }
        Ok(())
    }

    /// DWARF mode: a descriptor that turns readable when records wait in the ring
    /// buffer (opening the consumer on first use).
    pub fn ring_fd(&mut self) -> Result<Option<RawFd>> {
        if !self.dwarf {
            return Ok(None);
        }
        if self.ring.is_none() {
            let records = std::rc::Rc::clone(&self.records);
            let mut b = libbpf_rs::RingBufferBuilder::new();
            b.add(&self.skel.maps.samples, move |data: &[u8]| {
                records.borrow_mut().push(data.to_vec());
                0
            })?;
            self.ring = Some(b.build().context("opening the sample ring buffer")?);
        }
        Ok(self.ring.as_ref().map(|r| r.epoll_fd()))
    }

    /// DWARF mode: the records the ring buffer holds now, in arrival order.
    pub fn take_records(&mut self) -> Result<Vec<Vec<u8>>> {
        if let Some(ring) = &self.ring {
            ring.consume().context("reading the sample ring buffer")?;
        }
        Ok(std::mem::take(&mut *self.records.borrow_mut()))
    }

    /// CFI mode: the unwind table maps (rows, page index, process mappings).
    /// CFI mode: the first chunk of unwind rows, made before the load; the
    /// tables put it in place and own it.
    pub fn take_first_chunk(&mut self) -> Option<libbpf_rs::MapHandle> {
        self.first_chunk.take()
    }

    pub fn unwind_maps(
        &self,
    ) -> (
        &libbpf_rs::MapMut<'static>,
        &libbpf_rs::MapMut<'static>,
        &libbpf_rs::MapMut<'static>,
    ) {
        let m = &self.skel.maps;
        (&m.unwind_rows, &m.unwind_index, &m.process_maps)
    }

    /// Says that `py_procs` changed, so that the per-CPU copies of its
    /// entries (bpf/python.h) are read again.
    pub fn python_changed(&mut self) {
        if let Some(bss) = self.skel.maps.bss_data.as_deref_mut() {
            // SAFETY: an aligned u32 in the mmap'd .bss, which the programs
            // also bump (atomically, at exec and exit) and otherwise only read.
            let gen = unsafe { std::sync::atomic::AtomicU32::from_ptr(&mut bss.py_gen) };
            gen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// The Python maps (runtimes per process, announced stacks).
    /// When each process's last exec ended (src/capture/exec_guard.rs).
    pub fn exec_seen(&self) -> &libbpf_rs::MapMut<'static> {
        &self.skel.maps.exec_seen
    }

    pub fn python_maps(&self) -> (&libbpf_rs::MapMut<'static>, &libbpf_rs::MapMut<'static>) {
        let m = &self.skel.maps;
        (&m.py_procs, &m.py_stacks)
    }

    /// Whether the program samples process `pid`: any when the capture is of the
    /// whole machine, else those in the target set (the targets and, with
    /// follow-forks, their children, which the kernel adds at fork, before any
    /// record of theirs is read).
    pub fn samples(&self, pid: u32) -> bool {
        let filtered = self.skel.maps.rodata_data.is_some_and(|r| r.filter_pids);
        !filtered
            || self
                .skel
                .maps
                .targets
                .lookup(&pid.to_ne_bytes(), MapFlags::ANY)
                .ok()
                .flatten()
                .is_some()
    }

    /// Adds a process to the target set.
    pub fn add_target(&self, pid: u32) -> Result<()> {
        self.skel
            .maps
            .targets
            .update(&pid.to_ne_bytes(), &[1], MapFlags::ANY)
            .with_context(|| format!("adding pid {pid} to the target set"))
    }

    /// The program's counters now.
    pub fn stats(&self) -> Result<Stats> {
        let map = &self.skel.maps.stats;
        let mut sums = [0u64; CLASSES];
        for (i, sum) in sums.iter_mut().enumerate() {
            let per_cpu = map
                .lookup_percpu(&(i as u32).to_ne_bytes(), MapFlags::ANY)
                .context("reading the stats map")?
                .unwrap_or_default();
            *sum = per_cpu.iter().map(|v| read_u64(v)).sum();
        }
        Ok(Stats::from_array(sums))
    }

    /// How often the kernel skipped the sampling (and off-CPU) programs because
    /// another BPF program was running on that CPU (the programs'
    /// `recursion_misses`): samples that never reached the counters.
    pub fn missed(&self) -> u64 {
        let p = &self.skel.progs;
        let mut ids = Vec::new();
        for prog in [&p.profile, &p.profile_dwarf, &p.on_switch] {
            if let Ok(id) = libbpf_rs::Program::id_from_fd(prog.as_fd()) {
                ids.push(id);
            }
        }
        libbpf_rs::query::ProgInfoIter::default()
            .filter(|info| ids.contains(&info.id))
            .map(|info| info.recursion_misses)
            .sum()
    }

    /// The maps of one set: stacks, overflow stacks, counts.
    fn set(
        &self,
        set: u32,
    ) -> (
        &libbpf_rs::MapMut<'static>,
        &libbpf_rs::MapMut<'static>,
        &libbpf_rs::MapMut<'static>,
    ) {
        let m = &self.skel.maps;
        if set == 0 {
            (&m.stacks0, &m.overflow0, &m.counts0)
        } else {
            (&m.stacks1, &m.overflow1, &m.counts1)
        }
    }

    /// Sends samples to the other map set and returns the set that stopped filling.
    /// A program that read the old value may still be writing to it: wait a moment
    /// ([`FLIP_GRACE`]) before draining it.
    pub fn flip(&mut self) -> u32 {
        let old = self.active;
        self.active = 1 - old;
        if let Some(bss) = self.skel.maps.bss_data.as_deref_mut() {
            // SAFETY: a plain u32 in the mmap'd .bss the program reads.
            unsafe { std::ptr::write_volatile(&mut bss.active_set, self.active) };
        }
        old
    }

    /// Reads the counts of the active set and every stack they reference. Call
    /// after [`Sampler::disable`].
    pub fn drain(&self) -> Result<Drained> {
        self.read_contents(self.active, false)
    }

    /// Reads the counts of `set` and every stack they reference; with `clear`,
    /// empties the set for its next turn.
    pub fn drain_set(&mut self, set: u32, clear: bool) -> Result<Drained> {
        if clear {
            // before a stack goes: what the rooms remember having kept in this
            // set (bpf/scratch.h) holds no more
            if let Some(bss) = self.skel.maps.bss_data.as_deref_mut() {
                let epoch = &mut bss.set_epoch[(set & 1) as usize];
                // SAFETY: a plain u32 in the mmap'd .bss the program reads.
                unsafe { std::ptr::write_volatile(epoch, epoch.wrapping_add(1)) };
            }
        }
        self.read_contents(set, clear)
    }

    fn read_contents(&self, set: u32, clear: bool) -> Result<Drained> {
        let stats = self.stats()?;
        let (stacks, overflow, counts) = self.set(set);
        let (counts, stacks) = read_set(stacks, overflow, counts, clear)?;
        Ok(Drained {
            counts,
            stacks,
            stats,
        })
    }
}

/// How long after [`Sampler::flip`] a program may still write to the old set: a
/// sample's program runs for about a microsecond with preemption off.
pub const FLIP_GRACE: std::time::Duration = std::time::Duration::from_millis(10);

/// Runs a task iterator program over every task once.
fn run_iterator(prog: &libbpf_rs::ProgramMut<'static>) -> Result<()> {
    use std::io::Read;
    let link = prog.attach()?;
    let mut iter = libbpf_rs::Iter::new(&link)?;
    // the programs print nothing: reading to the end runs them over every task
    let mut sink = Vec::new();
    iter.read_to_end(&mut sink)?;
    Ok(())
}

fn read_u64(b: &[u8]) -> u64 {
    b.get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_ne_bytes)
        .unwrap_or(0)
}
