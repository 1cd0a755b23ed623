//! `flamebpf record -- COMMAND`: short-lived commands, children, exit status, stdout.

use std::time::{Duration, Instant};

use crate::common::{capture_lock, flamebpf, record, require_bpf, run, workload, Folded, MS};

#[test]
fn a_command_that_exits_before_the_duration_ends_the_capture_and_is_named() {
    require_bpf!();
    let split = workload("split");
    let t = Instant::now();
    let f = record(
        &["-F", "999", "-d", "60"],
        &[split.to_str().unwrap(), "0.5"],
    )
    .folded;
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "the capture ended with the command"
    );
    assert!(f.with_frame("heavy") > 0 && f.with_frame("light") > 0);
    assert!(f.with_frame("main") > 0);
    assert!(
        f.0.iter()
            .all(|(s, _)| s[0] == "split" || s[0] == "flamebpf"),
        "only the command"
    );
}

#[test]
fn children_of_the_command_are_profiled_and_its_exit_status_is_kept() {
    require_bpf!();
    let split = workload("split");
    let dir = tempfile::tempdir().unwrap();
    let folded = dir.path().join("kids.folded");
    let _lock = capture_lock();
    let script = format!(
        "{} 0.5; {} 0.3 & wait; exit 3",
        split.display(),
        split.display()
    );
    let out = run(flamebpf()
        .args(["record", "-F", "499", "-o"])
        .arg(&folded)
        .args(["--", "sh", "-c", &script]));
    assert_eq!(
        out.status.code(),
        Some(3),
        "flamebpf exits with the command's status"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("exited with status 3"));
    let f = Folded::read(&folded);
    assert!(f.count(|s| s[0] == "split" && s.iter().any(|fr| fr == "heavy")) > 0);
}

#[test]
fn stdout_belongs_to_the_command_unless_asked_for() {
    require_bpf!();
    let dir = tempfile::tempdir().unwrap();
    let _lock = capture_lock();
    let out = run(flamebpf()
        .args(["record", "-o"])
        .arg(dir.path().join("x.svg"))
        .args(["--", "sh", "-c", "echo hello"]));
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");

    let split = workload("split");
    let out = run(flamebpf()
        .args(["record", "-q", "-F", "999", "-o", "-", "--"])
        .arg(&split)
        .arg("0.3"));
    assert!(out.status.success());
    let f = Folded::parse(&String::from_utf8_lossy(&out.stdout));
    assert!(f.with_frame("heavy") > 0, "folded on stdout with -o -");
    assert!(out.stderr.is_empty(), "-q: nothing on stderr");
}

#[test]
fn sigterm_ends_the_capture_writes_the_outputs_and_ends_the_command() {
    require_bpf!();
    let split = workload("split");
    let dir = tempfile::tempdir().unwrap();
    let folded = dir.path().join("term.folded");
    let _lock = capture_lock();
    let child = flamebpf()
        .args(["record", "-F", "999", "-o"])
        .arg(&folded)
        .arg("--")
        .arg(&split)
        .arg("60")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The command runs once sampling is on (loading the BPF programs takes a
    // while): from then on, 1.5 s of it.
    let running = || {
        std::process::Command::new("pgrep")
            .arg("-f")
            .arg(split.to_str().unwrap())
            .output()
            .is_ok_and(|o| !o.stdout.is_empty())
    };
    let waited = Instant::now();
    while !running() && waited.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let t = Instant::now();
    let out = child.wait_with_output().unwrap();
    eprintln!("stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    assert!(t.elapsed() < Duration::from_secs(10));
    let f = Folded::read(&folded);
    // 1.5 s of a 3:1 split, less what other tests running beside it take of the
    // CPU: some samples of heavy prove the outputs were written at the signal
    assert!(f.with_frame("heavy") > 100 * MS, "samples up to the signal");
    let still_running = std::process::Command::new("pgrep")
        .arg("-f")
        .arg(split.to_str().unwrap())
        .output()
        .unwrap();
    assert!(still_running.stdout.is_empty(), "the command was ended too");
}

#[test]
fn threads_that_outlive_the_thread_group_leader_are_still_sampled() {
    require_bpf!();
    let w = workload("leaderexit");
    let f = record(&["-F", "999"], &[w.to_str().unwrap()]).folded;
    let outlive = f.count(|s| s.iter().any(|x| x == "outlive"));
    let leader = f.count(|s| s.iter().any(|x| x == "leader_work"));
    // 1.2 s of spinning, a second of it after the leader exited
    assert!(
        outlive > 1_000 * MS,
        "{outlive} ns of the thread that outlived the leader"
    );
    assert!(leader > 100 * MS, "{leader} ns of the leader");
    // and unwound whole: the process's unwind tables stay in the kernel until its
    // last thread exits (glibc has no frame pointers: clone3 is out of their reach)
    let whole = f.count(|s| s.iter().any(|x| x == "outlive") && s.iter().any(|x| x == "clone3"));
    assert!(
        whole * 10 >= outlive * 9,
        "{whole} of {outlive} ns of the thread that outlived the leader reach clone3"
    );
}
