//! Loads bpf/profile.bpf.c, attaches it to the sampling events and reads back what
//! it aggregated.

use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use anyhow::{anyhow, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, OpenObject, PrintLevel};

mod skel {
    #![allow(clippy::all, clippy::pedantic, missing_docs, non_camel_case_types)]
    include!(concat!(env!("OUT_DIR"), "/profile.skel.rs"));
}

pub use skel::types::dwarf_sample;
use skel::types::{flamebpf_stat, overflow_stack, sample_key, sample_value};
use skel::{ProfileSkel, ProfileSkelBuilder};

/// `BPF_F_NO_PREALLOC`: hash maps take memory as entries arrive instead of all at
/// load time (allowed in perf_event programs since Linux 6.1).
const BPF_F_NO_PREALLOC: u32 = 1;
const EEXIST: i32 = 17;
const EFAULT: i32 = 14;

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
}

/// The loss and classification counters of the BPF program, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Samples of the targets.
    pub samples: u64,
    /// Idle samples left out.
    pub idle_skipped: u64,
    /// Samples taken in user mode (no kernel stack).
    pub kernel_stack_absent: u64,
    /// Samples of kernel threads (no user stack).
    pub user_stack_kthread: u64,
    /// User stacks that could not be read.
    pub user_stack_fault: u64,
    /// Stacks kept in the overflow map after a bucket collision.
    pub stack_overflowed: u64,
    /// Stacks lost: collision with the overflow map full.
    pub stack_lost: u64,
    /// Samples lost: the counts map was full.
    pub counts_full: u64,
    /// Children that could not be added to the target set.
    pub targets_full: u64,
    /// DWARF mode: samples the ring buffer had no room for.
    pub ringbuf_full: u64,
    /// DWARF mode: samples whose user stack could not be copied at all.
    pub stack_copy_failed: u64,
}

/// Where a sample's stack lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StackRef {
    /// In the STACK_TRACE map under this id.
    Id(u32),
    /// In the overflow map under this hash.
    Overflow(u64),
    /// There is no such stack: kernel stack of a user-mode sample, user stack of a
    /// kernel thread or an unreadable one.
    Absent,
    /// The stack existed but could not be kept (map full).
    Lost,
}

impl StackRef {
    fn from_key(id: i32, hash: u64) -> StackRef {
        match id {
            id if id >= 0 => StackRef::Id(id as u32),
            id if id == -EEXIST && hash != 0 => StackRef::Overflow(hash),
            id if id == -EFAULT => StackRef::Absent,
            _ => StackRef::Lost,
        }
    }
}

/// One entry of the counts map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Count {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Command name.
    pub comm: String,
    /// The kernel stack.
    pub kernel: StackRef,
    /// The user stack.
    pub user: StackRef,
    /// Samples.
    pub samples: u64,
    /// Summed sample periods.
    pub weight: u64,
}

/// Everything read back from the maps at the end of a capture.
#[derive(Debug, Default)]
pub struct Drained {
    /// The aggregated samples.
    pub counts: Vec<Count>,
    /// Instruction pointers of each referenced stack, leaf first.
    pub stacks: HashMap<StackRef, Vec<u64>>,
    /// The program's counters.
    pub stats: Stats,
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

fn open_and_load(config: &Config, no_prealloc: bool) -> Result<ProfileSkel<'static>> {
    // The skeleton borrows its object storage for as long as it lives; one small
    // allocation per load is leaked so the Sampler owns the skeleton outright.
    let storage: &'static mut MaybeUninit<OpenObject> = Box::leak(Box::new(MaybeUninit::uninit()));
    let mut open = ProfileSkelBuilder::default()
        .open(storage)
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
        for (dst, src) in rodata.target_comm.iter_mut().zip(comm.bytes().take(15)) {
            *dst = src as i8;
        }
    }
    rodata.filter_cgroup = config.cgroup.is_some();
    if config.exclude_self {
        rodata.exclude_tgid = std::process::id();
    }
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
    open.progs.profile.set_autoload(config.dwarf.is_none());
    open.progs
        .profile_dwarf
        .set_autoload(config.dwarf.is_some());
    let m = &mut open.maps;
    m.stacks0.set_max_entries(stack)?;
    m.overflow0.set_max_entries(stack)?;
    m.counts0.set_max_entries(counts)?;
    m.stacks1.set_max_entries(stack1)?;
    m.overflow1.set_max_entries(stack1)?;
    m.counts1.set_max_entries(counts1)?;
    if no_prealloc {
        for map in [
            &mut m.overflow0,
            &mut m.counts0,
            &mut m.overflow1,
            &mut m.counts1,
        ] {
            map.set_map_flags(BPF_F_NO_PREALLOC)?;
        }
    }
    open.progs.on_fork.set_autoload(config.follow_forks);
    open.progs.on_exit.set_autoload(config.follow_forks);
    Ok(open.load()?)
}

impl Sampler {
    /// Loads the program. A load failure carries libbpf's words; the verifier log is
    /// in [`libbpf_log_tail`].
    pub fn load(config: &Config) -> Result<Sampler> {
        libbpf_rs::set_print(Some((PrintLevel::Debug, capture_libbpf_log)));
        let skel = match open_and_load(config, true) {
            Ok(s) => s,
            // Before Linux 6.1, perf_event programs may only use preallocated maps.
            Err(_) => open_and_load(config, false)?,
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
        })
    }

    /// Attaches the fork and exit tracepoints that keep the target set up to date.
    pub fn attach_task_tracepoints(&mut self) -> Result<()> {
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
        Ok(())
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
            crate::perf::enable(fd).context("enabling a perf event")?;
        }
        Ok(())
    }

    /// Stops sampling; what was sampled stays in the maps.
    pub fn disable(&self) -> Result<()> {
        for fd in self.event_fds() {
            crate::perf::disable(fd).context("disabling a perf event")?;
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
        let mut sums = [0u64; flamebpf_stat::STAT_MAX.0 as usize];
        for (i, sum) in sums.iter_mut().enumerate() {
            let per_cpu = map
                .lookup_percpu(&(i as u32).to_ne_bytes(), MapFlags::ANY)
                .context("reading the stats map")?
                .unwrap_or_default();
            *sum = per_cpu.iter().map(|v| read_u64(v)).sum();
        }
        let s = |stat: flamebpf_stat| sums[stat.0 as usize];
        Ok(Stats {
            samples: s(flamebpf_stat::STAT_SAMPLES),
            idle_skipped: s(flamebpf_stat::STAT_IDLE_SKIPPED),
            kernel_stack_absent: s(flamebpf_stat::STAT_KERNEL_STACK_ABSENT),
            user_stack_kthread: s(flamebpf_stat::STAT_USER_STACK_KTHREAD),
            user_stack_fault: s(flamebpf_stat::STAT_USER_STACK_FAULT),
            stack_overflowed: s(flamebpf_stat::STAT_STACK_OVERFLOWED),
            stack_lost: s(flamebpf_stat::STAT_STACK_LOST),
            counts_full: s(flamebpf_stat::STAT_COUNTS_FULL),
            targets_full: s(flamebpf_stat::STAT_TARGETS_FULL),
            ringbuf_full: s(flamebpf_stat::STAT_RINGBUF_FULL),
            stack_copy_failed: s(flamebpf_stat::STAT_STACK_COPY_FAILED),
        })
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
        self.drain_set(self.active, false)
    }

    /// Reads the counts of `set` and every stack they reference; with `clear`,
    /// empties the set for its next turn.
    pub fn drain_set(&self, set: u32, clear: bool) -> Result<Drained> {
        let stats = self.stats()?;
        let (stack_map, overflow_map, counts_map) = self.set(set);
        let mut counts = Vec::new();
        let entries = read_all(counts_map).context("reading the counts map")?;
        for (k, v) in &entries {
            let (Some(key), Some(val)) =
                (from_bytes::<sample_key>(k), from_bytes::<sample_value>(v))
            else {
                continue;
            };
            counts.push(Count {
                pid: key.pid,
                tid: key.tid,
                comm: comm_string(&key.comm),
                kernel: StackRef::from_key(key.kernel_stack_id, key.kernel_stack_hash),
                user: StackRef::from_key(key.user_stack_id, key.user_stack_hash),
                samples: val.samples,
                weight: val.weight,
            });
        }
        let mut stacks = HashMap::new();
        for c in &counts {
            for r in [c.kernel, c.user] {
                if stacks.contains_key(&r) {
                    continue;
                }
                let bytes = match r {
                    StackRef::Id(id) => stack_map.lookup(&id.to_ne_bytes(), MapFlags::ANY)?,
                    StackRef::Overflow(h) => {
                        overflow_map.lookup(&h.to_ne_bytes(), MapFlags::ANY)?
                    }
                    StackRef::Absent | StackRef::Lost => continue,
                };
                let ips = bytes
                    .and_then(|b| from_bytes::<overflow_stack>(&b))
                    .map(|s| s.ips.iter().copied().take_while(|&ip| ip != 0).collect())
                    .unwrap_or_default();
                stacks.insert(r, ips);
            }
        }
        if clear {
            for (k, _) in &entries {
                let _ = counts_map.delete(k);
            }
            // Every stack goes, also those no count refers to (samples lost to a
            // full counts map): the set must start its next turn empty.
            for map in [stack_map, overflow_map] {
                let keys: Vec<Vec<u8>> = map.keys().collect();
                for k in keys {
                    let _ = map.delete(&k);
                }
            }
        }
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

/// Reads every entry of a hash map with BPF_MAP_LOOKUP_BATCH.
///
/// libbpf-rs's `lookup_batch` iterator ends at the first batch shorter than asked
/// for, but the kernel returns short batches at hash-bucket boundaries long before
/// the end: it silently dropped most of a large counts map. The end is ENOENT.
fn read_all(map: &libbpf_rs::MapMut<'_>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    use libbpf_rs::libbpf_sys;
    let key_size = map.key_size() as usize;
    let value_size = map.value_size() as usize;
    let mut cap: u32 = 4096;
    let mut keys = vec![0u8; cap as usize * key_size];
    let mut values = vec![0u8; cap as usize * value_size];
    // The batch cursor of a hash map is a bucket index (u32), but the kernel asks for
    // key_size bytes.
    let mut cursor_in = vec![0u8; key_size.max(4)];
    let mut cursor_out = vec![0u8; key_size.max(4)];
    let mut first = true;
    let mut out = Vec::new();
    let opts = libbpf_sys::bpf_map_batch_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_batch_opts>() as _,
        ..Default::default()
    };
    loop {
        let mut count = cap;
        let in_ptr = if first {
            std::ptr::null_mut()
        } else {
            cursor_in.as_mut_ptr().cast()
        };
        // SAFETY: the buffers hold `cap` keys and values and the cursors key_size bytes.
        let ret = unsafe {
            libbpf_sys::bpf_map_lookup_batch(
                map.as_fd().as_raw_fd(),
                in_ptr,
                cursor_out.as_mut_ptr().cast(),
                keys.as_mut_ptr().cast(),
                values.as_mut_ptr().cast(),
                &mut count,
                &opts,
            )
        };
        let errno = if ret < 0 {
            std::io::Error::last_os_error().raw_os_error()
        } else {
            None
        };
        match errno {
            None | Some(libc::ENOENT) => {}
            Some(libc::ENOSPC) if count == 0 => {
                // One bucket holds more entries than the buffer: make room, ask again.
                cap *= 2;
                keys.resize(cap as usize * key_size, 0);
                values.resize(cap as usize * value_size, 0);
                continue;
            }
            Some(libc::EINTR) => continue,
            Some(e) => return Err(std::io::Error::from_raw_os_error(e).into()),
        }
        for i in 0..count as usize {
            out.push((
                keys[i * key_size..(i + 1) * key_size].to_vec(),
                values[i * value_size..(i + 1) * value_size].to_vec(),
            ));
        }
        if errno == Some(libc::ENOENT) {
            return Ok(out);
        }
        std::mem::swap(&mut cursor_in, &mut cursor_out);
        first = false;
    }
}

fn read_u64(b: &[u8]) -> u64 {
    b.get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_ne_bytes)
        .unwrap_or(0)
}

/// Copies a plain-old-data struct out of map bytes; `None` when the size is off.
pub fn from_bytes<T: Copy + Default>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: T is a repr(C) struct of integers (generated from the BPF object's
    // BTF) for which every bit pattern is valid, and the length was checked.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

pub fn comm_string(comm: &[i8]) -> String {
    let bytes: Vec<u8> = comm
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_refs_follow_the_key_encoding() {
        assert_eq!(StackRef::from_key(5, 0), StackRef::Id(5));
        assert_eq!(StackRef::from_key(-EEXIST, 99), StackRef::Overflow(99));
        assert_eq!(StackRef::from_key(-EEXIST, 0), StackRef::Lost);
        assert_eq!(StackRef::from_key(-EFAULT, 0), StackRef::Absent);
        assert_eq!(StackRef::from_key(-12, 0), StackRef::Lost);
    }

    #[test]
    fn shared_structs_have_the_layout_the_c_side_has() {
        // sizes as clang lays them out in bpf/profile.h
        assert_eq!(std::mem::size_of::<sample_key>(), 48);
        assert_eq!(std::mem::size_of::<sample_value>(), 16);
        assert_eq!(std::mem::size_of::<overflow_stack>(), 127 * 8);
    }

    #[test]
    fn comm_stops_at_nul() {
        let mut c = [0i8; 16];
        for (i, b) in b"demo".iter().enumerate() {
            c[i] = *b as i8;
        }
        assert_eq!(comm_string(&c), "demo");
    }
}
