//! Capture: everything between the command line and a [`raw::RawProfile`].
//!
//! In: the shared sampling options ([`crate::cli::SamplingArgs`]) and a
//! [`target::Target`]. [`setup::Plan`] checks them (event, rate, stack mode) and
//! turns them into a [`setup::Setup`]; [`session::Session`] opens the tracking
//! events ([`tracking`], [`ring`]), loads and attaches the BPF programs
//! ([`sampler`], on perf events from [`perf`]), puts the targets in place and holds
//! the command at its gate ([`gated`]). In CFI mode, [`python`] tells the BPF
//! walk where each process's CPython keeps its frames and names code objects.
//!
//! Out: aggregated samples read back from the maps ([`maps::Drained`], with the
//! program's [`stats::Stats`]) or, in DWARF mode, records unwound in userspace
//! ([`dwarf`]), both turned into a [`raw::RawProfile`]; and the address-space
//! history the symbolize stage needs (`session.tracking.tracker`).

pub mod core_btf;
pub mod dwarf;
pub mod events;
pub mod exec_guard;
pub mod gated;
pub mod mapped;
pub mod maps;
pub mod perf;
pub mod privilege;
pub mod python;
pub mod raw;
pub mod ring;
pub mod sampler;
pub mod sampling;
pub mod session;
pub mod setup;
pub mod skel;
pub mod stats;
pub mod target;
pub mod tracking;
pub mod unwind;

pub use raw::RawProfile;
pub use session::Session;
pub use setup::Plan;
pub use stats::{Stat, Stats};
