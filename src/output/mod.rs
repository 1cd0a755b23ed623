//! Output: what a capture leaves behind.
//!
//! In: a symbolized [`flamegraphs::Profile`] and the capture's accounting. Out: the
//! `-o` files in their formats ([`files`]: planned and checked before sampling,
//! written atomically), the progress line while sampling ([`progress`]) and the
//! summary line at the end ([`summary`]), with how many user stacks a
//! frame-pointer walk left broken ([`stack_ends`]).

pub mod files;
pub mod progress;
pub mod stack_ends;
pub mod summary;

pub use files::{plan, preflight, write_all, write_atomic, write_options, Output};
