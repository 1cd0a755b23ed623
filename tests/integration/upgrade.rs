//! Names after a package upgrade under a running `flamebpf continuous`: a
//! library replaced the way dpkg replaces it (the new version written beside the
//! old and renamed over its path) is named from the new file for the processes
//! that map the new file, and from the old one for a process still running the
//! old version.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{capture_lock, flamebpf, require_bpf, run, Folded, MS};
use crate::continuous::{
    free_port, metric_value, metrics, wait_for_metrics, wait_for_port, Daemon,
};

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

/// testdata/libversion.c built at `out` with its hot function called `hot`.
pub fn library(out: &Path, hot: &str) {
    let status = Command::new("gcc")
        .args([
            "-O2",
            "-g",
            "-fno-omit-frame-pointer",
            "-fno-optimize-sibling-calls",
            "-shared",
            "-fPIC",
            "-Wl,-soname,libversion.so",
            &format!("-DHOT={hot}"),
            "-o",
        ])
        .arg(out)
        .arg(testdata("libversion.c"))
        .status()
        .expect("gcc runs");
    assert!(status.success(), "building {hot}");
}

/// The store's samples of `pid`, folded.
fn query_pid(store: &Path, pid: u32, out: &Path) -> Folded {
    assert!(run(flamebpf()
        .args(["query", "--pid", &pid.to_string(), "--dir"])
        .arg(store)
        .arg("-o")
        .arg(out))
    .status
    .success());
    Folded::read(out)
}

#[test]
fn a_library_upgraded_under_the_daemon_is_named_from_the_new_file() {
    require_bpf!();
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("libversion.so");
    // The two versions have the same layout: hot_v2 is where hot_v1 was, so
    // names cached for the old file's offsets would name the new file's wrongly.
    library(&lib, "hot_v1");
    let v2 = dir.path().join("libversion.so.v2");
    library(&v2, "hot_v2");
    let program = dir.path().join("uselib");
    let status = Command::new("gcc")
        .args(["-O2", "-g", "-fno-omit-frame-pointer", "-o"])
        .arg(&program)
        .arg(testdata("uselib.c"))
        .arg("-L")
        .arg(dir.path())
        .arg("-lversion")
        .arg(format!("-Wl,-rpath,{}", dir.path().display()))
        .status()
        .expect("gcc runs");
    assert!(status.success());

    let store = dir.path().join("store");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _lock = capture_lock();
    let d = Daemon::start(&[
        "-F",
        "199",
        "--window",
        "1",
        "--comm",
        "uselib",
        "--listen",
        &listen,
        "--dir",
        store.to_str().unwrap(),
    ]);
    wait_for_port(port);
    let m = wait_for_metrics(port, Duration::from_secs(30), |m| {
        metric_value(m, "flamebpf_windows_written_total") >= 1
    });
    assert!(
        metric_value(&m, "flamebpf_windows_written_total") >= 1,
        "{m}"
    );

    // A process of the old version that is still running at the upgrade, as
    // services are when their package is upgraded.
    let mut old_run = Command::new(&program).arg("5").spawn().unwrap();
    let before = old_run.id();
    // Once windows with its samples are named, the old file's names are cached
    // under the library's path: two windows written from now on.
    let written = metric_value(&metrics(port), "flamebpf_windows_written_total");
    let m = wait_for_metrics(port, Duration::from_secs(30), |m| {
        metric_value(m, "flamebpf_windows_written_total") >= written + 2
    });
    assert!(
        metric_value(&m, "flamebpf_windows_written_total") >= written + 2,
        "{m}"
    );
    assert!(
        old_run.try_wait().unwrap().is_none(),
        "the old version still runs at the upgrade"
    );
    // dpkg: the new file is unpacked beside the old one, then renamed over it
    let unpacked = dir.path().join("libversion.so.dpkg-new");
    std::fs::copy(&v2, &unpacked).unwrap();
    std::fs::rename(&unpacked, &lib).unwrap();
    let mut new_run = Command::new(&program).arg("1.5").spawn().unwrap();
    let after = new_run.id();
    assert!(new_run.wait().unwrap().success());
    assert!(old_run.wait().unwrap().success());
    let (status, stderr) = d.stop();
    assert!(status.success(), "{stderr}");

    let old = query_pid(&store, before, &dir.path().join("before.folded"));
    let new = query_pid(&store, after, &dir.path().join("after.folded"));
    let ms = |f: &Folded, name: &str| f.with_frame(name) / MS;
    eprintln!(
        "before: hot_v1 {} ms, hot_v2 {} ms; after: hot_v1 {} ms, hot_v2 {} ms",
        ms(&old, "hot_v1"),
        ms(&old, "hot_v2"),
        ms(&new, "hot_v1"),
        ms(&new, "hot_v2")
    );
    assert!(ms(&old, "hot_v1") >= 1500, "the old version in hot_v1");
    assert_eq!(
        old.with_frame("hot_v2"),
        0,
        "the old version never in hot_v2, before or after the upgrade"
    );
    assert!(
        ms(&new, "hot_v2") >= 300,
        "the run after the upgrade in hot_v2"
    );
    assert_eq!(new.with_frame("hot_v1"), 0, "and never in hot_v1");
}
