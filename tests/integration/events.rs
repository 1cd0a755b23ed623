//! Events other than the timer: software overflow events with periods (the same
//! path hardware events take), weights in event units, the refusal of events this
//! machine cannot sample, and hardware events where a PMU exists.

use crate::common::{
    capture_lock, flamebpf, heavy_share, perf_samples, record, require_bpf, run, share_containing,
    workload, Folded,
};

/// Whether `flamebpf list` says this machine can sample `event`, and its line.
fn can_sample(event: &str) -> (bool, String) {
    let out = flamebpf().arg("list").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(event))
        .unwrap_or_else(|| panic!("{event} is listed: {text}"))
        .to_string();
    (line.ends_with(" yes"), line)
}

#[test]
fn page_faults_every_100_split_3_to_1_weigh_100_each_and_agree_with_perf() {
    require_bpf!();
    let faults = workload("faults");
    let c = record(
        &["-e", "page-faults", "-c", "100", "-o", "{dir}/pf.svg"],
        &[faults.to_str().unwrap()],
    );
    let f = &c.folded;
    let (a, b) = (f.with_frame("fault_a"), f.with_frame("fault_b"));
    eprintln!("flamebpf: fault_a {a}, fault_b {b} page faults");
    let share = heavy_share(a, b);
    assert!(
        (share - 0.75).abs() <= 0.03,
        "fault_a share {share:.3}, want 0.75 ± 0.03"
    );
    assert_eq!(
        f.total(),
        c.samples() * 100,
        "every sample weighs its period"
    );
    assert!(a + b >= 790_000, "about 800,000 faults: {}", a + b);
    let svg = std::fs::read_to_string(c.dir.path().join("pf.svg")).unwrap();
    assert!(
        svg.contains("page-faults every 100 events"),
        "the subtitle names the event and period"
    );
    assert!(svg.contains(" page-faults, "), "tooltips count page faults");

    let _lock = capture_lock();
    if let Some(perf) = perf_samples(
        &["-g", "-e", "page-faults", "-c", "100"],
        &[faults.as_os_str()],
        c.dir.path(),
    )
    .map(|s| share_containing(&s, "fault_a", "fault_b"))
    {
        assert!(
            (share - perf).abs() <= 0.03,
            "flamebpf {share:.3} vs perf {perf:.3}"
        );
    }
}

#[test]
fn frequency_mode_weights_add_up_to_the_sampled_cpu_time() {
    require_bpf!();
    let split = workload("split");
    let c = record(&["-F", "999"], &[split.to_str().unwrap(), "2"]);
    let total = c.folded.total();
    // cpu-clock at 999 Hz fires every 1e9/999 ns of CPU time
    assert_eq!(total, c.samples() * 1_001_001);
    let secs = total as f64 / 1e9;
    assert!(
        (1.8..=2.2).contains(&secs),
        "2 s of CPU-bound work weighs {secs:.3} s"
    );
}

#[test]
fn an_event_this_machine_cannot_sample_is_refused_naming_the_available_ones() {
    require_bpf!();
    let (ok, line) = can_sample("cycles");
    if ok {
        eprintln!(
            "skipped: this machine can sample cycles, so it cannot show the refusal ({line})"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = run(flamebpf()
        .current_dir(dir.path())
        .args(["record", "-e", "cycles", "-a", "-d", "1", "-o", "x.svg"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("flamebpf: cannot sample cycles here: "),
        "{stderr}"
    );
    assert!(
        stderr.contains("events this machine can sample: cpu-clock"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

#[test]
fn hardware_cycles_split_3_to_1_where_a_pmu_exists() {
    require_bpf!();
    let (ok, line) = can_sample("cycles");
    if !ok {
        eprintln!("skipped: no hardware events here: {line}");
        return;
    }
    let split = workload("split");
    let c = record(
        &["-e", "cycles", "-c", "1000003", "--precise"],
        &[split.to_str().unwrap(), "2"],
    );
    let f = &c.folded;
    let share = heavy_share(f.with_frame("heavy"), f.with_frame("light"));
    assert!((share - 0.75).abs() <= 0.05, "cycles in heavy: {share:.3}");
    assert_eq!(f.total(), c.samples() * 1_000_003);
    assert!(c.stderr().contains("--precise"), "says what --precise got");
}

#[test]
fn list_shows_the_software_events_as_available() {
    let (ok, line) = can_sample("cpu-clock");
    assert!(ok, "{line}");
    let (_, line) = can_sample("L1-dcache-load-misses");
    assert!(line.contains("hardware cache"), "{line}");
}

#[test]
fn precise_on_a_software_event_says_there_is_no_skid() {
    require_bpf!();
    let split = workload("split");
    let c = record(
        &["--precise", "-e", "task-clock"],
        &[split.to_str().unwrap(), "0.3"],
    );
    assert!(
        c.stderr()
            .contains("--precise: task-clock is a software event"),
        "{}",
        c.stderr()
    );
    assert!(c.folded.with_frame("heavy") > 0);
    let _ = Folded::parse("");
}
