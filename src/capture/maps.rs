//! Reading a map set back: the counts map in batches, the stacks it names, and the
//! conversion of the BPF key encoding (stack ids, -errno, overflow hashes) into
//! [`StackRef`]s. What leaves is a [`Drained`]: counts and stacks by value.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd};

use anyhow::{Context, Result};
use libbpf_rs::{MapCore, MapFlags, MapMut};

use super::skel::limits::{EEXIST, EFAULT, STACK_HASHED};
use super::skel::types::{flamebpf_sample_kind as K, overflow_stack, sample_key, sample_value};
use super::stats::Stats;

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
            id if (id == -EEXIST || id == -STACK_HASHED) && hash != 0 => StackRef::Overflow(hash),
            id if id == -EFAULT => StackRef::Absent,
            _ => StackRef::Lost,
        }
    }
}

/// What an entry of the counts map measures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Samples of the perf event: where the thread ran.
    #[default]
    OnCpu,
    /// `--off-cpu`: nanoseconds blocked (sleep, I/O, a lock).
    OffCpu,
    /// `--off-cpu`: nanoseconds runnable, waiting for a CPU.
    Runqueue,
}

impl Kind {
    fn from_key(kind: u32) -> Kind {
        match kind {
            k if k == K::SAMPLE_OFF_CPU.0 => Kind::OffCpu,
            k if k == K::SAMPLE_RUNQUEUE.0 => Kind::Runqueue,
            _ => Kind::OnCpu,
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
    /// What it measures.
    pub kind: Kind,
    /// Samples (off the CPU: waits).
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

/// Counts and stacks of one map set.
pub type SetContents = (Vec<Count>, HashMap<StackRef, Vec<u64>>);

/// Reads the counts of one map set and every stack they reference; with `clear`,
/// empties the set for its next turn.
pub fn read_set(
    stack_map: &MapMut<'static>,
    overflow_map: &MapMut<'static>,
    counts_map: &MapMut<'static>,
    clear: bool,
) -> Result<SetContents> {
    let mut counts = Vec::new();
    let entries = read_all(counts_map).context("reading the counts map")?;
    for (k, v) in &entries {
        let (Some(key), Some(val)) = (from_bytes::<sample_key>(k), from_bytes::<sample_value>(v))
        else {
            continue;
        };
        counts.push(Count {
            pid: key.pid,
            tid: key.tid,
            comm: comm_string(&key.comm),
            kernel: StackRef::from_key(key.kernel_stack_id, key.kernel_stack_hash),
            user: StackRef::from_key(key.user_stack_id, key.user_stack_hash),
            kind: Kind::from_key(key.kind),
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
                StackRef::Overflow(h) => overflow_map.lookup(&h.to_ne_bytes(), MapFlags::ANY)?,
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
    Ok((counts, stacks))
}

/// Reads every entry of a hash map with BPF_MAP_LOOKUP_BATCH.
///
/// libbpf-rs's `lookup_batch` iterator ends at the first batch shorter than asked
/// for, but the kernel returns short batches at hash-bucket boundaries long before
/// the end: it silently dropped most of a large counts map. The end is ENOENT.
pub fn read_all(map: &libbpf_rs::MapMut<'_>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
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

/// Copies a plain-old-data struct out of map bytes; `None` when the size is off.
pub fn from_bytes<T: Copy + Default>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: T is a repr(C) struct of integers (generated from the BPF object's
    // BTF) for which every bit pattern is valid, and the length was checked.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// A NUL-padded command name as a string.
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
        assert_eq!(StackRef::from_key(-STACK_HASHED, 7), StackRef::Overflow(7));
        assert_eq!(StackRef::from_key(-EFAULT, 0), StackRef::Absent);
        assert_eq!(StackRef::from_key(-12, 0), StackRef::Lost);
    }

    #[test]
    fn kinds_of_entries_read_back() {
        assert_eq!(Kind::from_key(0), Kind::OnCpu);
        assert_eq!(Kind::from_key(1), Kind::OffCpu);
        assert_eq!(Kind::from_key(2), Kind::Runqueue);
        assert_eq!(Kind::from_key(99), Kind::OnCpu);
    }

    #[test]
    fn shared_structs_have_the_layout_the_c_side_has() {
        // sizes as clang lays them out in bpf/profile.h
        assert_eq!(std::mem::size_of::<sample_key>(), 56);
        assert_eq!(std::mem::size_of::<sample_value>(), 16);
        assert_eq!(
            std::mem::size_of::<overflow_stack>(),
            crate::capture::skel::limits::MAX_DEPTH * 8
        );
    }

    #[test]
    fn shared_errno_values_are_the_kernels() {
        assert_eq!((EEXIST, EFAULT), (libc::EEXIST, libc::EFAULT));
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
