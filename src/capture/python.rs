//! CPython in the targets: finds the interpreter of each process whose address
//! space changed (`_PyRuntime` and the version's layout, symbolizer::python), tells
//! the BPF walk (bpf/python.h) where to read it through `py_procs`, and names the
//! code objects of every new stack with Python frames the walk announces on
//! `py_stacks`, right away, while the process lives (a 300 ms script is gone by
//! the end of the capture).
//!
//! A version it cannot read is left to native unwinding and said once.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::rc::Rc;

use anyhow::{Context, Result};
use libbpf_rs::{MapCore, MapMut};
use symbolizer::objects::ObjectKind;
use symbolizer::python::{Interpreter, Layout};
use symbolizer::Tracker;

use super::exec_guard::ExecGuard;
use super::maps::from_bytes;
use super::skel::types::{flamebpf_py_model, py_process, py_stack_event};

/// What was found in a process.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    /// Read with this layout, its runtime at this address, with the addresses
    /// of its code and str types.
    Python(Layout, u64, Option<(u64, u64)>),
    /// CPython that cannot be read.
    Refused,
    /// No CPython.
    None,
}

/// The test every search for CPython starts from: a file named like python (the
/// interpreter or libpython), so that no process it can read is passed over.
pub fn named_like_python(obj: &symbolizer::objects::Object) -> bool {
    obj.kind == ObjectKind::File && obj.short_name().contains("python")
}

/// Whether `pid`, as the tracker knows it now, maps an object named like python.
pub fn may_run_python(tracker: &Tracker, pid: u32) -> bool {
    tracker
        .history
        .current(pid)
        .iter()
        .any(|m| named_like_python(tracker.objects.get(m.object)))
}

/// At most this many announced stacks wait a round for their process's Python.
const MAX_WAITING: usize = 4096;

/// Stacks the ring delivered, not yet named: (pid, words).
type Announced = Rc<RefCell<Vec<(u32, Vec<u64>)>>>;

/// The Python side of a capture.
pub struct Python {
    ring: libbpf_rs::RingBuffer<'static>,
    events: Announced,
    /// Objects looked at, by the path they were read from.
    inspected: HashMap<PathBuf, Option<Interpreter>>,
    /// What each process was found to run.
    found: HashMap<u32, Found>,
    /// Announced stacks of processes not yet known to run Python (a child whose
    /// fork record is not applied yet), tried once more at the next call.
    waiting: Vec<(u32, Vec<u64>)>,
    /// Interpreters that cannot be read (object, why), with the processes
    /// that ran them.
    refused: BTreeMap<(String, String), BTreeSet<u32>>,
}

impl Python {
    /// Opens the consumer of `py_stacks`.
    pub fn new(stacks: &MapMut<'_>) -> Result<Python> {
        let events: Announced = Rc::default();
        let sink = Rc::clone(&events);
        let mut b = libbpf_rs::RingBufferBuilder::new();
        b.add(stacks, move |data: &[u8]| {
            if let Some(e) = from_bytes::<py_stack_event>(data) {
                let n = (e.n as usize).min(e.st.ips.len());
                sink.borrow_mut().push((e.pid, e.st.ips[..n].to_vec()));
            }
            0
        })?;
        let ring = b.build().context("opening the Python stack ring buffer")?;
        Ok(Python {
            ring,
            events,
            inspected: HashMap::new(),
            found: HashMap::new(),
            waiting: Vec::new(),
            refused: BTreeMap::new(),
        })
    }

    /// A descriptor that turns readable when stacks wait to be named.
    pub fn wake_fd(&self) -> std::os::fd::RawFd {
        self.ring.epoll_fd()
    }

    /// Looks at the processes in `changed` (their address space changed) and
    /// writes, or removes, their `py_procs` entries; then names the code objects
    /// of the stacks announced since the last call. Returns whether an entry
    /// was written or removed.
    pub fn sync(
        &mut self,
        changed: &BTreeSet<u32>,
        tracker: &mut Tracker,
        procs: &MapMut<'_>,
        guard: &ExecGuard<'_>,
    ) -> Result<bool> {
        let mut wrote = false;
        for &pid in changed {
            wrote |= self.look_at(pid, tracker, procs, guard)?;
        }
        self.name_new(tracker)?;
        Ok(wrote)
    }

    /// Whether `pid` was looked at (its entry must go when it exits).
    pub fn follows(&self, pid: u32) -> bool {
        self.found.contains_key(&pid)
    }

    /// Processes whose CPython is read now, and processes seen running one that
    /// cannot be read (for /metrics).
    pub fn process_counts(&self) -> (u64, u64) {
        let read = self
            .found
            .values()
            .filter(|f| matches!(f, Found::Python(..)))
            .count() as u64;
        let refused: BTreeSet<u32> = self.refused.values().flatten().copied().collect();
        (read, refused.len() as u64)
    }

    /// One line per interpreter that could not be read, for the summary.
    pub fn refusals(&self) -> Vec<String> {
        self.refused
            .iter()
            .map(|((object, why), pids)| {
                let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
                format!(
                    "Python of {object} is profiled natively (pid {}): {why}",
                    pids.join(", ")
                )
            })
            .collect()
    }

    /// Names the code objects of the stacks the ring holds now.
    pub fn name_new(&mut self, tracker: &mut Tracker) -> Result<()> {
        self.ring
            .consume()
            .context("reading the Python stack ring buffer")?;
        for (pid, words) in std::mem::take(&mut self.waiting) {
            tracker.python.note(pid, &words);
        }
        for (pid, words) in self.events.borrow_mut().drain(..) {
            if tracker.python.names_for(pid) {
                tracker.python.note(pid, &words);
            } else if self.waiting.len() < MAX_WAITING {
                self.waiting.push((pid, words));
            }
        }
        Ok(())
    }

    /// Writes or removes `pid`'s entry as it needs; returns whether it did.
    fn look_at(
        &mut self,
        pid: u32,
        tracker: &mut Tracker,
        procs: &MapMut<'_>,
        guard: &ExecGuard<'_>,
    ) -> Result<bool> {
        let key = pid.to_ne_bytes();
        if tracker.history.has_exited(pid) || !tracker.history.knows(pid) {
            let had = self.found.remove(&pid).is_some();
            if had {
                let _ = procs.delete(&key);
            }
            tracker.python.close(pid);
            return Ok(had);
        }
        let found = self.find(pid, tracker);
        if self.found.get(&pid) == Some(&found) {
            return Ok(false);
        }
        match &found {
            Found::Python(layout, runtime, types) => {
                // a process that exec'd since the records is looked at again
                // when the exec's own records arrive
                if !guard.write(procs, pid, as_bytes(&entry(layout, *runtime)))? {
                    return Ok(false);
                }
                tracker.python.add_process(pid, *layout, *types);
            }
            Found::Refused | Found::None => {
                let _ = procs.delete(&key);
                // a process that exec'd another program keeps the names read
                // before, for its samples from before; they go with the process
                tracker.python.close(pid);
            }
        }
        self.found.insert(pid, found);
        Ok(true)
    }

    /// The CPython `pid` maps, if any: the first object named like python that
    /// defines `_PyRuntime` (the executable, or libpython).
    fn find(&mut self, pid: u32, tracker: &Tracker) -> Found {
        for m in tracker.history.current(pid) {
            let obj = tracker.objects.get(m.object);
            if !named_like_python(obj) {
                continue;
            }
            let Some(path) = obj.read_path() else {
                continue;
            };
            let interp = self
                .inspected
                .entry(path.clone())
                .or_insert_with(|| Interpreter::inspect(&path).ok().flatten());
            let Some(interp) = interp.as_ref() else {
                continue;
            };
            return match (&interp.layout, interp.runtime_at(m.start, m.pgoff)) {
                (Ok(layout), Some(runtime)) => {
                    Found::Python(*layout, runtime, interp.types_at(m.start, m.pgoff))
                }
                (Err(why), _) => {
                    self.refused
                        .entry((obj.short_name().to_string(), why.clone()))
                        .or_default()
                        .insert(pid);
                    Found::Refused
                }
                (Ok(_), None) => Found::Refused,
            };
        }
        Found::None
    }
}

/// The BPF walk's entry for a runtime.
fn entry(l: &Layout, runtime: u64) -> py_process {
    // SAFETY: a repr(C) struct of integers, all zeros is a valid value.
    let mut e: py_process = unsafe { std::mem::zeroed() };
    e.runtime = runtime;
    e.interp_head = l.interp_head;
    e.threads_head = l.threads_head;
    e.tstate_next = l.tstate_next;
    e.tstate_thread_id = l.tstate_thread_id;
    e.tstate_frame = l.tstate_frame;
    e.cframe_frame = l
        .cframe_frame
        .unwrap_or(flamebpf_py_model::PY_NO_CFRAME.0 as u16);
    e.frame_previous = l.frame_previous;
    e.frame_code = l.frame_code;
    e.frame_flag = l.frame_flag;
    e.frame_globals = l.frame_globals;
    e.frame_instr = l.frame_instr;
    e.code_adaptive = l.code_adaptive;
    e.model = l.model as u8;
    e
}

fn as_bytes<T>(v: &T) -> &[u8] {
    // SAFETY: T is a repr(C) struct of integers from the skeleton, read as bytes.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use symbolizer::python::Model;

    #[test]
    fn entries_carry_the_layout_and_the_models_agree_with_bpf() {
        let l = Layout::known(11).unwrap();
        let e = entry(&l, 0xa5_b740);
        assert_eq!(e.runtime, 0xa5_b740);
        assert_eq!((e.tstate_frame, e.cframe_frame), (56, 8));
        assert_eq!(e.model, flamebpf_py_model::PY_MODEL_IS_ENTRY.0 as u8);
        let e = entry(&Layout::known(10).unwrap(), 1);
        assert_eq!(e.cframe_frame, 0xffff);
        assert_eq!(
            Model::FrameObjects as u32,
            flamebpf_py_model::PY_MODEL_FRAME_OBJECTS.0
        );
        assert_eq!(Model::CStack as u32, flamebpf_py_model::PY_MODEL_CSTACK.0);
        assert_eq!(std::mem::size_of::<py_process>(), 40);
        assert_eq!(e.frame_globals, 48);
        assert_eq!((e.frame_instr, e.code_adaptive), (96, 0));
        assert_eq!(
            u64::from(flamebpf_py_model::PY_LINE_UNKNOWN.0),
            symbolizer::python::lines::INDEX_UNKNOWN
        );
        assert_eq!(
            flamebpf_py_model::PY_FRAME_OBJECT_BYTES.0,
            u32::from(symbolizer::python::layout::FRAME_OBJECT_BYTES)
        );
        assert_eq!(
            (1u64 << flamebpf_py_model::PY_GLOBALS_SHIFT.0)
                * (u64::from(flamebpf_py_model::PY_GLOBALS_MASK.0) + 1),
            symbolizer::python::ENTRY_BIT,
            "the fingerprint fills bits 48-61"
        );
        assert_eq!(
            1u64 << flamebpf_py_model::PY_FRAME_BIT.0,
            symbolizer::python::FRAME_BIT
        );
        assert_eq!(
            1u64 << flamebpf_py_model::PY_ENTRY_BIT.0,
            symbolizer::python::ENTRY_BIT
        );
    }
}
