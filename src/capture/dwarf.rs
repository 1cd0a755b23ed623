//! `--call-graph dwarf`: the records the BPF program sends (registers, a copy of
//! the top of the user stack, the kernel stack) unwound in userspace with the
//! objects' DWARF CFI, into the same [`RawProfile`] frame-pointer capture fills:
//! from there on symbolization and the writers are shared.

use std::collections::VecDeque;
use std::sync::Arc;

use symbolizer::unwind::{End, Regs, StackCopy, UnwindStats, Unwinder};
use symbolizer::Tracker;

use super::maps::{comm_string, from_bytes};
use super::skel::types::dwarf_sample;
use crate::capture::maps::Kind;
use crate::capture::raw::{RawKey, RawProfile, RawStack};

/// Bytes of a record before its stack copy.
const HEADER: usize = std::mem::offset_of!(dwarf_sample, stack);

/// Samples received, unwound once the address spaces they need are known.
#[derive(Default)]
pub struct DwarfCapture {
    /// Records waiting for the tracking records up to their time, by time.
    pending: VecDeque<(u64, Vec<u8>)>,
    unwinder: Unwinder,
    /// Everything unwound so far.
    pub raw: RawProfile,
    malformed: u64,
    /// Bytes each sample asked to copy.
    stack_bytes: u32,
    /// Stacks the unwinder found cut short whose copy had reached the end of the
    /// stack mapping: a bigger copy would not help, so they are failures.
    at_stack_end: u64,
}

fn header(record: &[u8]) -> Option<dwarf_sample> {
    if record.len() < HEADER {
        return None;
    }
    // The struct ends in the stack array; copy the header into a zeroed struct.
    let mut full = vec![0u8; std::mem::size_of::<dwarf_sample>()];
    full[..HEADER].copy_from_slice(&record[..HEADER]);
    from_bytes::<dwarf_sample>(&full)
}

impl DwarfCapture {
    /// A capture with nothing yet, of samples that copy `stack_bytes` each.
    pub fn new(stack_bytes: u32) -> DwarfCapture {
        DwarfCapture {
            stack_bytes,
            ..DwarfCapture::default()
        }
    }

    /// Queues records from the ring buffer.
    pub fn push(&mut self, records: Vec<Vec<u8>>) {
        for r in records {
            match header(&r) {
                Some(h) => self.pending.push_back((h.time, r)),
                None => self.malformed += 1,
            }
        }
        // CPUs deliver in their own order; unwinding goes by time.
        self.pending.make_contiguous().sort_by_key(|(t, _)| *t);
    }

    /// Unwinds every queued record taken at or before `cutoff` (all with `None`):
    /// the tracking records up to then are applied, so the mappings are known.
    pub fn process(&mut self, tracker: &Tracker, cutoff: Option<u64>) {
        while let Some((time, _)) = self.pending.front() {
            if cutoff.is_some_and(|c| *time > c) {
                break;
            }
            let (_, record) = self.pending.pop_front().expect("front exists");
            let Some(h) = header(&record) else { continue };
            let kernel_ips: Vec<u64> =
                h.kernel_ips[..(h.kernel_len as usize / 8).min(h.kernel_ips.len())].to_vec();
            let kernel = if kernel_ips.is_empty() {
                RawStack::Absent
            } else {
                RawStack::Ips(kernel_ips.into())
            };
            let mut truncated = false;
            let user = if h.user_regs == 0 {
                RawStack::Absent
            } else {
                let len = (h.stack_len as usize).min(record.len() - HEADER);
                let stack = StackCopy {
                    base: h.sp,
                    bytes: &record[HEADER..HEADER + len],
                };
                let regs = Regs {
                    ip: h.ip,
                    sp: h.sp,
                    bp: h.bp,
                };
                let (frames, end): (Vec<u64>, End) =
                    self.unwinder.unwind(tracker, h.pid, h.time, regs, stack);
                if end == End::CutShort && h.stack_len < self.stack_bytes {
                    self.at_stack_end += 1;
                }
                truncated = end == End::TooDeep;
                RawStack::Ips(frames.into())
            };
            let key = RawKey {
                pid: h.pid,
                tid: h.tid,
                comm: Arc::from(comm_string(&h.comm).as_str()),
                user,
                kernel,
                kind: Kind::OnCpu,
                truncated,
            };
            self.raw.add_sample(h.time, key, h.period);
        }
    }

    /// How unwinding went; a record too short to read counts as a failure.
    pub fn unwind_stats(&self) -> UnwindStats {
        let mut s = self.unwinder.stats;
        s.failed += self.malformed + self.at_stack_end;
        s.cut_short -= self.at_stack_end;
        s
    }
}
