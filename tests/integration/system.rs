//! `-a` (the whole machine), `--include-idle`, and `-p PID` ended by Ctrl-C.

use std::process::{Child, Command};
use std::time::Duration;

use crate::common::{
    capture_lock, flamebpf, record, record_holding, require_bpf, workload, Folded, MS,
};

struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn all_cpus_finds_the_workload_by_comm_and_leaves_idle_out() {
    require_bpf!();
    let split = workload("split");
    let lock = capture_lock();
    let _w = Reaped(Command::new(&split).arg("5").spawn().unwrap());
    let f = record_holding(&lock, &["-a", "-d", "1.5", "-F", "499"], &[]).folded;
    let split_heavy = f.count(|s| s[0] == "split" && s.iter().any(|fr| fr == "heavy"));
    assert!(split_heavy > 400 * MS, "split found by comm: {split_heavy}");
    assert_eq!(f.count(|s| s[0].starts_with("swapper")), 0, "idle left out");
}

#[test]
fn include_idle_keeps_the_idle_task() {
    require_bpf!();
    let f = record(&["-a", "--include-idle", "-d", "1", "-F", "499"], &[]).folded;
    let idle = f.count(|s| s[0].starts_with("swapper"));
    assert!(idle > 0, "an idle CPU is sampled");
    // the idle task runs in the kernel only
    assert!(
        f.count(|s| s[0].starts_with("swapper") && s[1..].iter().any(|fr| !fr.ends_with("_[k]")))
            == 0
    );
}

#[test]
fn pid_target_runs_until_ctrl_c_and_still_writes_everything() {
    require_bpf!();
    let split = workload("split");
    let dir = tempfile::tempdir().unwrap();
    let folded = dir.path().join("pid.folded");
    let svg = dir.path().join("pid.svg");
    let _lock = capture_lock();
    let target = Reaped(Command::new(&split).arg("30").spawn().unwrap());
    let other = Reaped(Command::new(&split).arg("30").spawn().unwrap());
    let rec = flamebpf()
        .args([
            "record",
            "-F",
            "999",
            "-p",
            &target.0.id().to_string(),
            "-o",
        ])
        .arg(&folded)
        .arg("-o")
        .arg(&svg)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // loading the BPF programs takes about a second before sampling starts
    std::thread::sleep(Duration::from_millis(3000));
    // SAFETY: signalling our own child, as Ctrl-C would.
    unsafe { libc::kill(rec.id() as i32, libc::SIGINT) };
    let out = rec.wait_with_output().unwrap();
    eprintln!("stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    let f = Folded::read(&folded);
    assert!(f.with_frame("heavy") > 300 * MS);
    assert!(std::fs::read_to_string(&svg).unwrap().contains("heavy"));
    // only the chosen process: both have the same comm, so check the summary's count
    assert!(String::from_utf8_lossy(&out.stderr).contains(", 1 process,"));
    drop(other);
}

#[test]
fn pid_target_capture_ends_when_the_processes_exit() {
    require_bpf!();
    let split = workload("split");
    let lock = capture_lock();
    // long enough to outlast flamebpf's start (about a second of loading)
    let target = Reaped(Command::new(&split).arg("4").spawn().unwrap());
    let t = std::time::Instant::now();
    let pid = target.0.id().to_string();
    let f = record_holding(&lock, &["-F", "999", "-d", "60", "-p", &pid], &[]).folded;
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "ended with the process"
    );
    // the process exited (and is a zombie until reaped): its samples are named
    assert!(f.with_frame("heavy") > 100 * MS);
}

/// `perf record -g -- COMMAND` while flamebpf samples the machine: it used to crash
/// (flamebpf's tracking events asked the kernel for build ids, and the flag
/// leaked into the mmap records perf received).
fn perf_beside(flamebpf_args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let _lock = capture_lock();
    let ours = Reaped(
        flamebpf()
            .args(flamebpf_args)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(1500));
    let data = dir.path().join("perf.data");
    // new mappings while both listen: a command that maps its libraries (a
    // command's perf events, not -a's, were the ones that crashed)
    let out = Command::new("perf")
        .args(["record", "-q", "-g", "-F", "999", "-o"])
        .arg(&data)
        .args([
            "--",
            "sh",
            "-c",
            "for i in 1 2 3 4 5; do ls / >/dev/null; sleep 0.2; done",
        ])
        .output()
        .expect("perf runs (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "perf record beside {flamebpf_args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = Command::new("perf")
        .args(["report", "--stdio", "-q", "-i"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        report.status.success(),
        "perf report: {}",
        String::from_utf8_lossy(&report.stderr)
    );
    drop(ours);
}

#[test]
fn perf_record_works_beside_a_running_record_and_continuous() {
    require_bpf!();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("all.folded");
    perf_beside(&["record", "-a", "-d", "10", "-o", out.to_str().unwrap()]);
    let store = dir.path().join("store");
    perf_beside(&["continuous", "--dir", store.to_str().unwrap()]);
}

/// flamebpf run by `nobody` with the capabilities in `caps` (setpriv), over the
/// whole machine for a second: (success, stderr, folded output).
fn as_nobody_with(caps: &str) -> (bool, String, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let bin = dir.path().join("flamebpf");
    std::fs::copy(env!("CARGO_BIN_EXE_flamebpf"), &bin).unwrap();
    let out_file = dir.path().join("out.folded");
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(format!("--inh-caps={caps}"))
        .arg(format!("--ambient-caps={caps}"))
        .arg(&bin)
        .args(["record", "-a", "-F", "999", "-d", "1", "-o"])
        .arg(&out_file)
        .output()
        .expect("setpriv (util-linux) runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        std::fs::read_to_string(&out_file).unwrap_or_default(),
    )
}

/// CAP_BPF + CAP_PERFMON are enough to profile and to name the kernel: kernel
/// addresses are named by the kernel itself (bpf_snprintf's %pS), not through
/// /proc/kallsyms, which hides them from a process without CAP_SYSLOG.
#[test]
fn cap_bpf_and_cap_perfmon_profile_and_name_the_kernel() {
    require_bpf!();
    let _lock = capture_lock();
    let (ok, stderr, folded) = as_nobody_with("+bpf,+perfmon");
    assert!(ok, "CAP_BPF + CAP_PERFMON: {stderr}");
    assert!(!folded.is_empty(), "samples were written");
    assert!(!stderr.contains("kernel frames are [unknown]"), "{stderr}");
    assert!(
        folded
            .lines()
            .any(|l| l.contains("_[k]") && !l.contains("[unknown]_[k]")),
        "kernel frames named with CAP_BPF + CAP_PERFMON: {stderr}"
    );
    let (ok, stderr, _) = as_nobody_with("-all");
    assert!(!ok && stderr.contains("CAP_BPF"), "{stderr}");
}
