//! What frames are called: demangled C++ and Rust names, inlined functions as
//! frames of their own, and object+offset where no symbol covers an address.

use std::path::Path;

use crate::common::{
    capture_lock, flamebpf, record, require_bpf, stripped_workload, workload, Folded, MS,
};

fn profile(binary: &std::path::Path, secs: &str) -> Folded {
    record(&["-q", "-F", "999"], &[binary.to_str().unwrap(), secs]).folded
}

#[test]
fn cxx_names_are_demangled_and_inlined_functions_are_frames() {
    require_bpf!();
    let f = profile(&workload("cxxwork"), "1");
    let spin = f.with_frame("demo::Worker<unsigned long>::spin");
    assert!(spin > 100 * MS, "demangled template method: {spin}");
    // mix_step is always inlined into with_inlined: its own frame, marked inlined
    let inlined = f.count(|s| {
        s.windows(2)
            .any(|w| w[0] == "with_inlined" && w[1] == "mix_step_[i]")
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

#[test]
fn children_that_lived_100_ms_each_are_named_in_a_whole_machine_capture() {
    require_bpf!();
    let forker = workload("forker");
    let lock = capture_lock();
    let dir = tempfile::tempdir().unwrap();
    let folded = dir.path().join("all.folded");
    let mut rec = flamebpf()
        .args(["record", "-a", "-F", "999", "-d", "4", "-o"])
        .arg(&folded)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    let status = std::process::Command::new(&forker).status().unwrap();
    assert!(status.success());
    assert!(rec.wait().unwrap().success());
    drop(lock);
    // The children are forks of the workload: same comm, other pids. Count the
    // samples in the workload's own code (main or below it) that the children took.
    let f = Folded::read(&folded);
    let text = std::fs::read_to_string(&folded).unwrap();
    let in_children = f.count(|s| s[0] == "forker" && s.iter().any(|fr| fr == "main"));
    let named = f.count(|s| {
        s[0] == "forker" && s.windows(2).any(|w| w[0] == "main" && w[1] == "child_work")
    });
    assert!(
        in_children > 1000 * MS,
        "about 2 s of children's CPU: {in_children}\n{text}"
    );
    assert!(
        named as f64 >= 0.95 * in_children as f64,
        "{named} of {in_children} named child_work"
    );
}

#[test]
fn inlined_rust_functions_are_frames_and_lines_are_right() {
    require_bpf!();
    let src =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/rustwork.rs"))
            .unwrap();
    let line_of = |marker: &str| src.lines().position(|l| l.contains(marker)).unwrap() + 1;
    let (body, call) = (line_of("// MIX BODY"), line_of("// CALLS MIX"));
    let rust = workload("rustwork");
    let f = record(
        &["-q", "-F", "999", "--lines"],
        &[rust.to_str().unwrap(), "1"],
    )
    .folded;
    let crunch = format!("rustwork::engine::Engine::crunch (rustwork.rs:{call})");
    let mix = format!("rustwork::engine::mix (rustwork.rs:{body})_[i]");
    let inlined = f.count(|s| s.windows(2).any(|w| w[0] == crunch && w[1] == mix));
    assert!(inlined > 300 * MS, "{crunch} → {mix}: {inlined}");

    let f = record(
        &["-q", "-F", "999", "--no-inline"],
        &[rust.to_str().unwrap(), "0.5"],
    )
    .folded;
    assert!(f.with_frame("rustwork::engine::Engine::crunch") > 100 * MS);
    assert_eq!(
        f.count(|s| s.iter().any(|fr| fr.ends_with("_[i]"))),
        0,
        "--no-inline"
    );
}

#[test]
fn a_stripped_binary_is_named_through_its_debuglink_in_a_debug_dir() {
    require_bpf!();
    let split = workload("split");
    let dir = tempfile::tempdir().unwrap();
    let (bin, debug) = (dir.path().join("bin"), dir.path().join("debug"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&debug).unwrap();
    let exe = bin.join("split-dbg");
    std::fs::copy(&split, &exe).unwrap();
    let sh = |cmd: &mut std::process::Command| assert!(cmd.status().unwrap().success());
    sh(std::process::Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(&exe)
        .arg(debug.join("split-dbg.debug")));
    sh(std::process::Command::new("strip").arg("-s").arg(&exe));
    sh(std::process::Command::new("objcopy")
        .current_dir(&debug)
        .arg("--add-gnu-debuglink=split-dbg.debug")
        .arg(&exe));

    let without = record(&["-q", "-F", "999"], &[exe.to_str().unwrap(), "0.5"]).folded;
    assert_eq!(
        without.with_frame("heavy"),
        0,
        "no symbols in the binary itself"
    );
    let debug_dir = debug.to_str().unwrap();
    let with = record(
        &["-q", "-F", "999", "--debug-dir", debug_dir],
        &[exe.to_str().unwrap(), "0.5"],
    )
    .folded;
    assert!(with.with_frame("heavy") > 200 * MS && with.with_frame("light") > 50 * MS);
}

#[test]
fn jit_frames_come_from_the_perf_map_and_a_foreign_map_is_ignored() {
    require_bpf!();
    let jit = workload("jit");
    let c = record(&["-F", "999"], &[jit.to_str().unwrap(), "1"]);
    let named = c.folded.count(|s| {
        s.windows(2)
            .any(|w| w[0] == "run_jitted" && w[1] == "jitted_loop_[j]")
    });
    assert!(named > 800 * MS, "JIT frames under their caller: {named}");

    let c = record(&["-F", "999"], &[jit.to_str().unwrap(), "1", "foreign"]);
    assert_eq!(c.folded.with_frame("jitted_loop_[j]"), 0);
    assert!(
        c.stderr().contains("ignoring /tmp/perf-") && c.stderr().contains("owned by uid 65534"),
        "{}",
        c.stderr()
    );
}

#[test]
fn a_binary_seen_through_another_mount_namespace_is_named() {
    require_bpf!();
    // In its own mount namespace the workload runs as visible/prog; on the host that
    // path holds a different binary (syscalls), so only the process's own view of the
    // file (/proc/PID/map_files) names it right.
    let dir = tempfile::tempdir().unwrap();
    let (hidden, visible) = (dir.path().join("hidden"), dir.path().join("visible"));
    std::fs::create_dir_all(&hidden).unwrap();
    std::fs::create_dir_all(&visible).unwrap();
    std::fs::copy(workload("split"), hidden.join("prog")).unwrap();
    std::fs::copy(workload("syscalls"), visible.join("prog")).unwrap();
    let script = format!(
        "mount --bind {} {} && exec {}/prog 1",
        hidden.display(),
        visible.display(),
        visible.display()
    );
    let f = record(
        &["-q", "-F", "999"],
        &[
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ],
    )
    .folded;
    assert!(
        f.with_frame("heavy") > 500 * MS,
        "named from the namespace's file"
    );
    assert_eq!(
        f.with_frame("read_zero"),
        0,
        "not from the host's file at that path"
    );
}

#[test]
fn vdso_functions_are_named() {
    require_bpf!();
    let f = record(
        &["-q", "-F", "999"],
        &[workload("clock").to_str().unwrap(), "1"],
    )
    .folded;
    let in_vdso = f.count(|s| {
        s.last()
            .is_some_and(|leaf| leaf.contains("clock_gettime") && !leaf.starts_with("__GI"))
    });
    assert!(
        in_vdso > 200 * MS,
        "samples in the vDSO's clock_gettime: {in_vdso}"
    );
    assert_eq!(f.count(|s| s.iter().any(|fr| fr.starts_with("[vdso]+"))), 0);
}
