//! `--off-cpu`: the time threads wait, held to what testdata/offcpu.c measured
//! itself (shares, totals, a thread's wall time), where it waits (pipes, a mutex),
//! a wait going on throughout the capture, continuous windows with both sample
//! types, and the refusals.

use std::ffi::OsStr;
use std::process::{Command, Stdio};

use crate::common::{
    capture_lock, flamebpf, go_pprof, heavy_share, pprof_raw_totals, record, record_holding,
    require_bpf, run, windows, workload, Folded,
};

/// The off-CPU time (both kinds) of the stacks that hold `frame`.
fn off_cpu_with(f: &Folded, frame: &str) -> u64 {
    f.count(|s| is_off_cpu(s) && s.iter().any(|x| x == frame))
}

fn is_off_cpu(stack: &[String]) -> bool {
    matches!(
        stack.last().map(String::as_str),
        Some("[off-cpu]" | "[runqueue]")
    )
}

/// The number the workload printed after `name`.
fn measured(stdout: &[u8], name: &str) -> u64 {
    String::from_utf8_lossy(stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("the workload prints {name}"))
}

#[test]
fn waits_split_300_to_100_ms_weigh_75_to_25_and_total_what_the_threads_measured() {
    require_bpf!();
    let w = workload("offcpu");
    for mode in ["cfi", "fp"] {
        let c = record(
            &["--off-cpu", "-F", "99", "--call-graph", mode],
            &[w.to_str().unwrap(), "split", "6"],
        );
        let long = off_cpu_with(&c.folded, "wait_long");
        let short = off_cpu_with(&c.folded, "wait_short");
        let (long_truth, short_truth) = (
            measured(&c.out.stdout, "wait_long_ns"),
            measured(&c.out.stdout, "wait_short_ns"),
        );
        // against what the threads measured, not the nominal 3:1: on a loaded
        // machine each wakeup adds its wait for a CPU, and the short thread
        // wakes three times as often
        let share = heavy_share(long, short);
        let truth_share = heavy_share(long_truth, short_truth);
        assert!(
            (share - truth_share).abs() <= 0.03,
            "{mode}: wait_long's share of the waits {share:.3} ({long} vs {short} ns), \
             measured by the threads {truth_share:.3} ({long_truth} vs {short_truth} ns)"
        );
        let truth = long_truth + short_truth;
        let seen = long + short;
        assert!(
            (seen as f64 - truth as f64).abs() <= 0.05 * truth as f64,
            "{mode}: {seen} ns off the CPU in the two functions, the threads measured {truth}"
        );
        // the sleeps are blocked time, under the kernel's schedule()
        let blocked = c.folded.count(|s| {
            s.last().is_some_and(|f| f == "[off-cpu]")
                && s.iter().any(|f| f == "wait_long")
                && s.iter().any(|f| f == "schedule_[k]")
        });
        // six sleeps of 300 ms are blocked time; waiting for a CPU after each
        // wakeup (a busy machine) is run-queue time on top
        assert!(
            blocked as f64 > 0.98 * 6.0 * 300e6,
            "{mode}: {blocked} ns of wait_long blocked, of {long}"
        );
        assert!(c.stderr().contains("off-CPU waits "), "{}", c.stderr());
    }
}

#[test]
fn a_pipe_ping_pong_waits_in_pipe_read_and_a_mutex_wait_is_under_the_function_taking_it() {
    require_bpf!();
    let w = workload("offcpu");
    let c = record(
        &["--off-cpu", "-F", "99"],
        &[w.to_str().unwrap(), "pipe", "20000"],
    );
    // blocked time: each thread waits for the other's byte in read(); the time
    // runnable on a busy machine (after a write woke the other) is elsewhere
    let blocked = |s: &[String]| s.last().is_some_and(|f| f == "[off-cpu]");
    let off = c.folded.count(blocked);
    let in_read = c.folded.count(|s| {
        blocked(s)
            && s.iter().any(|f| f.contains("pipe_read"))
            && s.iter().any(|f| f == "schedule_[k]")
            && s.iter().any(|f| f == "ping" || f == "pong")
    });
    assert!(
        in_read as f64 > 0.8 * off as f64,
        "{in_read} of {off} ns blocked under ping/pong's pipe_read"
    );

    let c = record(
        &["--off-cpu", "-F", "99"],
        &[w.to_str().unwrap(), "mutex", "20"],
    );
    let lock_waits = c.folded.count(|s| {
        s.last().is_some_and(|f| f == "[off-cpu]")
            && s.iter().any(|f| f == "take_lock")
            && s.iter().any(|f| f.starts_with("futex_wait"))
    });
    // each thread waits about as long as the other holds the lock: 20 x 20 ms
    assert!(
        lock_waits > 200_000_000,
        "{lock_waits} ns waiting for the mutex under take_lock"
    );
}

#[test]
fn a_threads_time_on_and_off_the_cpu_adds_up_to_its_wall_time() {
    require_bpf!();
    let w = workload("offcpu");
    let c = record(
        &["--off-cpu", "-F", "999"],
        &[w.to_str().unwrap(), "wall", "2000"],
    );
    let thread = c.folded.count(|s| s[0] == "wallthread");
    let on = c.folded.count(|s| s[0] == "wallthread" && !is_off_cpu(s));
    let truth = measured(&c.out.stdout, "wallthread_ns");
    assert!(
        (thread as f64 - truth as f64).abs() <= 0.05 * truth as f64,
        "on + off CPU {thread} ns, the thread lived {truth} ns"
    );
    // it spins half the time
    let on_share = on as f64 / thread as f64;
    assert!((on_share - 0.5).abs() < 0.1, "on-CPU share {on_share:.3}");
}

#[test]
fn a_thread_asleep_through_the_whole_capture_shows_the_whole_of_it() {
    require_bpf!();
    let w = workload("offcpu");
    let lock = capture_lock();
    let mut sleeper = Command::new(&w)
        .args(["sleep", "30"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let pid = sleeper.id().to_string();
    let c = record_holding(&lock, &["--off-cpu", "-p", &pid, "-d", "2"], &[]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let off = c
        .folded
        .count(|s| s.last().is_some_and(|f| f == "[off-cpu]"));
    assert!(
        (off as f64 - 2e9).abs() <= 0.05 * 2e9,
        "{off} ns off the CPU over a 2 s capture of a sleeping process"
    );
    assert!(
        c.folded
            .count(|s| is_off_cpu(s) && s.iter().any(|f| f.contains("nanosleep")))
            == off,
        "under the kernel's nanosleep"
    );
}

#[test]
fn continuous_windows_carry_both_sample_types_and_query_reads_them_back() {
    require_bpf!();
    let w = workload("offcpu");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let _lock = capture_lock();
    let out = run(flamebpf()
        .args([
            "continuous",
            "--off-cpu",
            "-F",
            "99",
            "--window",
            "1",
            "--dir",
        ])
        .arg(&store)
        .arg("--")
        .arg(&w)
        .args(["split", "8"]));
    assert!(out.status.success());
    let files: Vec<_> = windows(&store).iter().map(|n| store.join(n)).collect();
    assert!(files.len() >= 2, "{files:?}");
    let mut off_total = 0;
    for p in &files {
        let raw = go_pprof(&[OsStr::new("-raw"), p.as_os_str()]);
        assert!(
            raw.contains("samples/count cpu/nanoseconds[dflt] off_cpu/nanoseconds"),
            "{}: {}",
            p.display(),
            &raw[..raw.len().min(400)]
        );
        off_total += pprof_raw_totals(&raw).get(2).copied().unwrap_or(0);
    }
    let truth = measured(&out.stdout, "wait_long_ns") + measured(&out.stdout, "wait_short_ns");
    assert!(
        off_total >= truth,
        "{off_total} ns off the CPU in the windows, {truth} slept"
    );

    let q = dir.path().join("q.folded");
    let out = run(flamebpf()
        .args(["query", "--dir"])
        .arg(&store)
        .arg("-o")
        .arg(&q));
    assert!(out.status.success());
    let f = Folded::read(&q);
    let share = heavy_share(
        off_cpu_with(&f, "wait_long"),
        off_cpu_with(&f, "wait_short"),
    );
    assert!(
        (share - 0.75).abs() <= 0.03,
        "wait_long's share over the windows: {share:.3}"
    );
}

#[test]
fn off_cpu_refuses_the_dwarf_mode_counting_events_and_a_bad_minimum() {
    for (flags, words) in [
        (&["--call-graph", "dwarf"][..], "not dwarf"),
        (&["-e", "page-faults"][..], "needs a clock event"),
        (&["--off-cpu-min", "soon"][..], "--off-cpu-min"),
        (&["--off-cpu-min", "2h"][..], "at most 60s"),
    ] {
        let out = run(flamebpf()
            .args(["record", "--off-cpu", "-d", "1"])
            .args(flags)
            .args(["-o", "/tmp/never-written.folded"]));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} was accepted");
        assert!(err.contains(words), "{flags:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}
