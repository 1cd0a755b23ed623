//! JIT runtimes named through their perf maps, as they are today: Node with
//! `--perf-basic-prof` (the map grows while it runs) and a JVM with
//! `-XX:+DumpPerfMapAtExit` (the map is written as it exits), using the machine's
//! node and JDK (testdata/runtimes/). Each test says why it skips where the
//! runtime is absent.

use std::path::Path;
use std::process::Command;

use crate::common::{record, require_bpf};

fn testdata(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/runtimes")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn node_with_perf_basic_prof_names_its_hot_js_function() {
    require_bpf!();
    if !have("node") {
        eprintln!("skipped: no node here");
        return;
    }
    // node --perf-basic-prof also writes a V8 log into its working directory
    let cwd = tempfile::tempdir().unwrap();
    let command = format!(
        "cd {} && exec node --perf-basic-prof {} 2",
        cwd.path().display(),
        testdata("hot.js")
    );
    let c = record(&["-F", "499"], &["sh", "-c", &command]);
    let f = &c.folded;
    let hot = f.count(|s| {
        s.iter()
            .any(|fr| fr.contains("hotLoop") && fr.ends_with("_[j]"))
    });
    let total = f.count(|s| s[0] == "node");
    eprintln!("node: hotLoop {hot} of {total}");
    assert!(
        hot as f64 >= 0.5 * total as f64,
        "the hot JS function named from the perf map: {hot} of {total}"
    );
}

#[test]
fn a_jvm_dumping_its_perf_map_at_exit_names_its_hot_method() {
    require_bpf!();
    if !have("java") || !have("javac") {
        eprintln!("skipped: no JDK (java, javac) here");
        return;
    }
    let classes = Path::new(env!("CARGO_TARGET_TMPDIR")).join("runtimes");
    std::fs::create_dir_all(&classes).unwrap();
    let out = Command::new("javac")
        .arg("-d")
        .arg(&classes)
        .arg(testdata("Hot.java"))
        .output()
        .expect("javac runs");
    assert!(
        out.status.success(),
        "javac: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = record(
        &["-F", "499"],
        &[
            "java",
            "-XX:+UnlockDiagnosticVMOptions",
            "-XX:+DumpPerfMapAtExit",
            "-cp",
            classes.to_str().unwrap(),
            "Hot",
            "3",
        ],
    );
    let f = &c.folded;
    let hot = f.count(|s| {
        s.iter()
            .any(|fr| fr.contains("Hot.hotMethod") && fr.ends_with("_[j]"))
    });
    let total = f.total();
    eprintln!("java: Hot.hotMethod {hot} of {total}");
    assert!(
        hot as f64 >= 0.5 * total as f64,
        "the hot method named from the map written at exit: {hot} of {total}"
    );
}
