//! Integration tests of the flamebpf binary: real captures of testdata workloads
//! (BPF, so root) and every refusal path (most need no privileges).
//!
//! One test binary with suites in modules, so the workloads are compiled once and
//! captures are serialised (they sample the whole machine's CPUs).

mod common;

mod accuracy;
mod command;
mod continuous;
mod core_btf;
mod debuginfod;
mod dwarf;
mod errors;
mod events;
mod export;
mod hostile;
mod kernel;
mod labels;
mod names;
mod offcpu;
mod outputs;
mod python;
mod receivers;
mod runtimes;
mod stacks;
mod symbols;
mod system;
mod unwind;
mod upgrade;
