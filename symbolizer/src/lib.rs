//! Turns sampled addresses into function names for flamebpf.
//!
//! Three parts, each usable on its own and free of BPF and root:
//! - [`records`] parses the perf ring-buffer records (mmap2, comm, fork, exit, lost)
//!   that tell how address spaces change while a capture runs;
//! - [`history`] keeps every process's address space over time, fed with those
//!   records and with `/proc/PID/maps` snapshots ([`procmaps`]), so an address of a
//!   process that has long exited still resolves to (object, file offset);
//! - [`objects`] holds the objects those mappings name, opened while their process
//!   lives, and [`symbolize`] names (object, offset) pairs and kernel addresses with
//!   blazesym, one cache per object.
//!
//! [`Tracker`] ties the first three together for the capture loop, with
//! [`processes`]: what each process was (executable, cgroup) while it lived.

pub mod buildid;
pub mod debuginfod;
pub mod history;
pub mod inflate;
pub mod kallsyms;
pub mod names;
pub mod objects;
pub mod perfmap;
pub mod processes;
pub mod procmaps;
pub mod python;
pub mod records;
pub mod symbolize;
mod tracker;
pub mod unwind;
pub mod vdso;

pub use history::{MappingHistory, Moment, Resolved};
pub use kallsyms::KernelNames;
pub use objects::{ObjectId, ObjectStore};
pub use records::Record;
pub use symbolize::{Symbol, Symbolizer};
pub use tracker::Tracker;
