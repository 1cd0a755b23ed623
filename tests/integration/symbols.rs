//! What frames are called: demangled C++ and Rust names, inlined functions as
//! frames of their own, and object+offset where no symbol covers an address.

use crate::common::{record, require_bpf, stripped_workload, workload, Folded, MS};

fn profile(binary: &std::path::Path, secs: &str) -> Folded {
    record(&["-q", "-F", "999"], &[binary.to_str().unwrap(), secs]).folded
}

#[test]
fn cxx_names_are_demangled_and_inlined_functions_are_frames() {
    require_bpf!();
    let f = profile(&workload("cxxwork"), "1");
    let spin = f.with_frame("demo::Worker<unsigned long>::spin(unsigned long)");
    assert!(spin > 100 * MS, "demangled template method: {spin}");
    // mix_step is always inlined into with_inlined: its own frame, marked inlined
    let inlined = f.count(|s| {
        s.windows(2)
            .any(|w| w[0] == "with_inlined(unsigned long)" && w[1] == "mix_step_[i]")
    });
    assert!(
        inlined > 100 * MS,
        "inlined frame under its caller: {inlined}"
    );
}

#[test]
fn rust_names_are_demangled() {
    require_bpf!();
    let f = profile(&workload("rustwork"), "1");
    let crunch = f.count(|s| {
        s.windows(2)
            .any(|w| w[0] == "rustwork::main" && w[1] == "rustwork::engine::Engine::crunch")
    });
    assert!(
        crunch > 300 * MS,
        "demangled Rust path under its caller: {crunch}"
    );
    assert_eq!(
        f.count(|s| s
            .iter()
            .any(|fr| fr.starts_with("_ZN") || fr.starts_with("_R"))),
        0,
        "nothing left mangled"
    );
}

#[test]
fn addresses_no_symbol_covers_are_object_plus_offset() {
    require_bpf!();
    let f = profile(&stripped_workload("split"), "1");
    let unnamed = f.count(|s| {
        s.iter().any(|fr| {
            fr.strip_prefix("split-stripped+0x")
                .is_some_and(|hex| !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()))
        })
    });
    assert!(
        unnamed as f64 > 0.9 * f.total() as f64,
        "{unnamed} of {}",
        f.total()
    );
    assert_eq!(f.with_frame("heavy"), 0);
    // The workload's own frames are never [unknown]; a stray sample in the dynamic
    // loader (built without frame pointers) can still walk into a garbage address.
    let unknown = f.with_frame("[unknown]");
    assert!(
        unknown * 100 <= f.total(),
        "{unknown} of {} [unknown]",
        f.total()
    );
}
