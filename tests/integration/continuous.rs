//! `flamebpf continuous`: windows that lose nothing at their edges, the store and
//! its retention, `flamebpf query`, the HTTP endpoint read by `go tool pprof`,
//! SIGTERM, filters, a store that cannot be written, and a symbolization that
//! stalls while processes come and go.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{
    capture_lock, flamebpf, go_pprof, heavy_share, pprof_raw_totals, require_bpf, run, windows,
    workload, Folded, MS,
};

/// A daemon that is stopped (SIGTERM) and reaped however the test ends.
pub struct Daemon(Option<Child>);

impl Daemon {
    pub fn start(args: &[&str]) -> Daemon {
        Daemon::start_with_env(args, &[])
    }

    /// Starts it with more environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let child = flamebpf()
            .arg("continuous")
            .args(args)
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Daemon(Some(child))
    }

    /// SIGTERM, then the exit status and stderr.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        let child = self.0.take().unwrap();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!("daemon stderr: {stderr}");
        (out.status, stderr)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP GET: (status, body).
pub fn get(port: u16, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers end")
        + 4;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, raw[split..].to_vec())
}

/// The value of the first line of /metrics text that starts with `name` (a
/// metric without labels, or with the labels written out).
pub fn metric_value(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} in {metrics}"))
}

/// /metrics now.
pub fn metrics(port: u16) -> String {
    let (status, body) = get(port, "/metrics");
    assert_eq!(status, 200);
    String::from_utf8_lossy(&body).into_owned()
}

/// Polls /metrics until `until` holds of it, for at most `limit`; the last text.
pub fn wait_for_metrics(port: u16, limit: Duration, until: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let m = metrics(port);
        if until(&m) || std::time::Instant::now() > deadline {
            return m;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `flamebpf query` of every window in `store`, as folded stacks (written in `dir`).
fn query_all(store: &std::path::Path, dir: &std::path::Path) -> Folded {
    let q = dir.join("q.folded");
    let out = run(flamebpf()
        .args(["query", "--dir"])
        .arg(store)
        .arg("-o")
        .arg(&q));
    assert!(out.status.success());
    Folded::read(&q)
}

pub fn wait_for_port(port: u16) {
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the daemon never listened on {port}");
}

#[test]
fn two_second_windows_lose_nothing_at_their_edges_and_query_keeps_the_split() {
    require_bpf!();
    let split = workload("split");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let _lock = capture_lock();
    let out = run(flamebpf()
        .args(["continuous", "-F", "199", "--window", "2", "--dir"])
        .arg(&store)
        .arg("--")
        .arg(&split)
        .arg("10"));
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let total: u64 = stderr
        .split(" samples in ")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the final line counts samples: {stderr}"));
    let w = windows(&store);
    assert!(w.len() >= 4, "windows: {w:?}");
    // every sample is in exactly one window: the windows' samples add up to the total
    let in_windows = samples_in_windows(&store, &w);
    assert_eq!(
        in_windows, total,
        "samples across windows vs the sampler's count"
    );
    let expected = 199.0 * 10.0;
    assert!(
        (total as f64 - expected).abs() < 0.1 * expected,
        "{total} samples for 10 s at 199 Hz"
    );

    let f = query_all(&store, dir.path());
    let share = heavy_share(f.with_frame("heavy"), f.with_frame("light"));
    assert!(
        (share - 0.75).abs() <= 0.04,
        "heavy share over all windows: {share:.3}"
    );
}

#[test]
fn a_stack_that_comes_back_after_a_window_without_it_is_whole() {
    require_bpf!();
    // eight stack shapes in turn, a quarter second each: with one-second windows a
    // shape is kept in one map set, absent while the other fills, and back when
    // the first (emptied in between) fills again. The sampler's per-CPU memory of
    // the stacks it kept must not outlive the set's emptying, or the returning
    // shape is counted under a stack the map no longer holds.
    let rotate = workload("rotate");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let _lock = capture_lock();
    let out = run(flamebpf()
        .args(["continuous", "-F", "499", "--window", "1", "--dir"])
        .arg(&store)
        .arg("--")
        .arg(&rotate)
        .args(["8", "0.25"]));
    assert!(out.status.success());
    let f = query_all(&store, dir.path());
    let mine = f.count(|s| s[0] == "rotate");
    let whole = f.count(|s| s[0] == "rotate" && s.iter().any(|x| x == "main"));
    eprintln!(
        "rotate: {} ms, {} ms of it reaching main",
        mine / MS,
        whole / MS
    );
    assert!(mine > 5_000 * MS, "about 8 s of rotate: {} ms", mine / MS);
    assert!(
        whole as f64 >= 0.99 * mine as f64,
        "stacks that reach main: {} of {} ms",
        whole / MS,
        mine / MS
    );
}

#[test]
fn the_pprof_endpoint_is_read_by_go_tool_pprof_and_bad_parameters_get_400() {
    require_bpf!();
    let split = workload("split");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _lock = capture_lock();
    let listen = format!("127.0.0.1:{port}");
    let store = dir.path().join("store");
    let d = Daemon::start(&[
        "-F",
        "99",
        "--window",
        "1",
        "--listen",
        &listen,
        "--dir",
        store.to_str().unwrap(),
        "--",
        split.to_str().unwrap(),
        "30",
    ]);
    wait_for_port(port);

    let url = format!("http://{listen}/debug/pprof/profile?seconds=2");
    let raw = go_pprof(&[OsStr::new("-raw"), OsStr::new(&url)]);
    let totals = pprof_raw_totals(&raw);
    assert!(totals[0] >= 150, "about 2 s at 99 Hz: {totals:?}");
    assert!(raw.contains("comm:[split]"));

    let (status, body) = get(port, "/debug/pprof/profile?seconds=abc");
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert_eq!(get(port, "/debug/pprof/profile?file=/etc/passwd").0, 400);
    assert_eq!(get(port, "/nope").0, 404);
    let (status, body) = get(port, "/healthz");
    assert_eq!((status, body.as_slice()), (200, &b"ok\n"[..]));
    let (status, body) = get(port, "/metrics");
    let metrics = String::from_utf8_lossy(&body);
    assert_eq!(status, 200);
    assert!(metrics.contains("flamebpf_samples_total "), "{metrics}");
    assert!(metrics.contains("flamebpf_lost_total{class=\"stack_map\"} 0"));
    std::thread::sleep(Duration::from_millis(1500));
    let (status, body) = get(port, "/flamegraph.svg?since=10m&comm=split");
    assert_eq!(status, 200);
    let svg = String::from_utf8_lossy(&body);
    assert!(
        svg.contains("<svg") && svg.contains("heavy"),
        "the store's windows drawn"
    );
    assert_eq!(get(port, "/flamegraph.svg?since=later").0, 400);
    let (status, _) = d.stop();
    assert!(status.success());
}

#[test]
fn sigterm_writes_the_last_window_and_exits_0() {
    require_bpf!();
    let split = workload("split");
    let dir = tempfile::tempdir().unwrap();
    let _lock = capture_lock();
    let mut w = Command::new(&split).arg("10").spawn().unwrap();
    let d = Daemon::start(&[
        "--window",
        "60",
        "-F",
        "99",
        "--comm",
        "split",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    std::thread::sleep(Duration::from_millis(2500));
    let (status, stderr) = d.stop();
    let _ = w.kill();
    let _ = w.wait();
    assert!(status.success(), "{stderr}");
    let names = windows(dir.path());
    assert_eq!(
        names.len(),
        1,
        "the window in progress was written: {names:?}"
    );
    let q = dir.path().join("q.folded");
    assert!(run(flamebpf()
        .args(["query", "--dir"])
        .arg(dir.path())
        .arg("-o")
        .arg(&q))
    .status
    .success());
    let f = Folded::read(&q);
    assert!(f.with_frame("heavy") > 0);
    assert!(
        f.0.iter().all(|(s, _)| s[0] == "split"),
        "--comm split keeps only split"
    );
}

#[test]
fn retention_keeps_only_recent_windows() {
    require_bpf!();
    let dir = tempfile::tempdir().unwrap();
    // windows of two and three hours ago, and one of a minute ago
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for ago_s in [3 * 3600, 2 * 3600, 60] {
        let start = now - ago_s * 1000;
        let name = format!("window-{start}-{}.pb.gz", start + 1000);
        std::fs::write(dir.path().join(name), b"old").unwrap();
    }
    let _lock = capture_lock();
    let d = Daemon::start(&[
        "--window",
        "1",
        "--retain",
        "1h",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    std::thread::sleep(Duration::from_secs(3));
    let (status, _) = d.stop();
    assert!(status.success());
    let names = windows(dir.path());
    let old: Vec<&String> = names
        .iter()
        .filter(|n| n.as_str() < format!("window-{}", now - 3_600_000).as_str())
        .collect();
    assert!(old.is_empty(), "windows older than 1h are gone: {names:?}");
    assert!(names.len() >= 3, "the recent ones stay: {names:?}");
}

#[test]
fn an_unwritable_store_keeps_the_daemon_sampling_and_is_counted() {
    require_bpf!();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _lock = capture_lock();
    // idle samples too, so there is something to sample on a quiet machine
    let d = Daemon::start(&[
        "--window",
        "1",
        "--include-idle",
        "--listen",
        &listen,
        "--dir",
        store.to_str().unwrap(),
    ]);
    wait_for_port(port);
    // The store is refused up front when it is a file; here it turns into one
    // under the running daemon.
    std::fs::remove_dir_all(&store).unwrap();
    std::fs::write(&store, "in the way").unwrap();
    // Windows end every second once sampling runs; starting can take a while on a
    // loaded machine, so wait for two failures rather than for a fixed time.
    let metrics = wait_for_metrics(port, Duration::from_secs(20), |m| {
        metric_value(m, "flamebpf_window_write_failures_total") >= 2
    });
    let value = |name: &str| metric_value(&metrics, name);
    assert!(
        value("flamebpf_window_write_failures_total") >= 2,
        "{metrics}"
    );
    assert_eq!(value("flamebpf_windows_written_total"), 0);
    assert!(value("flamebpf_samples_total") > 0, "sampling goes on");
    let (status, stderr) = d.stop();
    assert!(status.success(), "still running and stopping cleanly");
    let failures = stderr
        .lines()
        .filter(|l| l.contains("window not written"))
        .count();
    assert!(failures >= 3, "one line per window: {stderr}");
}

#[test]
fn refusals_of_bad_continuous_flags() {
    let dir = tempfile::tempdir().unwrap();
    for (args, expect) in [
        (vec!["continuous", "--window", "0"], "more than 0 seconds"),
        (vec!["continuous", "--retain", "soon"], "--retain"),
        (vec!["continuous", "--max-disk", "lots"], "not a size"),
        (
            vec!["continuous", "--comm", "a-name-longer-than-15"],
            "1 to 15 bytes",
        ),
        (
            vec!["continuous", "--cgroup", "/no/such/cgroup"],
            "--cgroup /no/such/cgroup: no such directory",
        ),
        (vec!["continuous", "--listen", "not-an-address"], "--listen"),
        (
            vec!["query", "--dir", "/no/such/store", "-o", "x.svg"],
            "no store at /no/such/store",
        ),
    ] {
        let out = flamebpf()
            .current_dir(dir.path())
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// The cgroup v2 hierarchy, wherever this machine mounts it.
fn cgroup2_root() -> Option<std::path::PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == "cgroup2")
        .map(|f| std::path::PathBuf::from(f[1]))
}

#[test]
fn cgroup_filter_keeps_only_tasks_in_that_cgroup() {
    require_bpf!();
    let Some(root) = cgroup2_root() else {
        eprintln!("skipped: no cgroup v2 hierarchy is mounted");
        return;
    };
    let cg = root.join(format!("flamebpf-test-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir(&cg) {
        eprintln!(
            "skipped: cannot create a cgroup under {}: {e}",
            root.display()
        );
        return;
    }
    let split = workload("split");
    let dir = tempfile::tempdir().unwrap();
    let _lock = capture_lock();
    let mut inside = Command::new(&split).arg("6").spawn().unwrap();
    let mut outside = Command::new(&split).arg("6").spawn().unwrap();
    std::fs::write(cg.join("cgroup.procs"), inside.id().to_string()).unwrap();
    let d = Daemon::start(&[
        "-F",
        "99",
        "--window",
        "60",
        "--cgroup",
        cg.to_str().unwrap(),
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    std::thread::sleep(Duration::from_millis(2500));
    let (status, _) = d.stop();
    let pid = inside.id();
    for c in [&mut inside, &mut outside] {
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = std::fs::remove_dir(&cg);
    assert!(status.success());
    let out_pid = dir.path().join("pid.folded");
    let all = dir.path().join("all.folded");
    assert!(run(flamebpf()
        .args(["query", "--dir"])
        .arg(dir.path())
        .arg("-o")
        .arg(&all))
    .status
    .success());
    assert!(run(flamebpf()
        .args(["query", "--pid", &pid.to_string(), "--dir"])
        .arg(dir.path())
        .arg("-o")
        .arg(&out_pid))
    .status
    .success());
    let (all, only) = (Folded::read(&all), Folded::read(&out_pid));
    assert!(all.total() > 0, "the task in the cgroup was sampled");
    assert_eq!(all.total(), only.total(), "and nothing else");
}

#[test]
fn the_endpoint_answers_off_cpu_time_as_a_sample_type_of_its_own() {
    require_bpf!();
    let w = workload("offcpu");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _lock = capture_lock();
    let listen = format!("127.0.0.1:{port}");
    let store = dir.path().join("store");
    let d = Daemon::start(&[
        "--off-cpu",
        "-F",
        "99",
        "--window",
        "1",
        "--listen",
        &listen,
        "--dir",
        store.to_str().unwrap(),
        "--",
        w.to_str().unwrap(),
        "split",
        "30",
    ]);
    wait_for_port(port);
    let url = format!("http://{listen}/debug/pprof/profile?seconds=2");
    let raw = go_pprof(&[OsStr::new("-raw"), OsStr::new(&url)]);
    assert!(
        raw.contains("off_cpu/nanoseconds"),
        "{}",
        &raw[..raw.len().min(400)]
    );
    let totals = pprof_raw_totals(&raw);
    // two threads asleep most of 2 s: well over a second off the CPU each
    assert!(totals.len() == 3 && totals[2] > 2_000_000_000, "{totals:?}");
    let (status, _) = d.stop();
    assert!(status.success());
}

/// How long the symbolization thread stalls before each window in the test below
/// (FLAMEBPF_TEST_SYMBOLIZE_DELAY_MS, read by the daemon for tests only).
const STALL: Duration = Duration::from_secs(10);

/// With the stall on the sampling thread (where naming ran before it had a thread
/// of its own) the same run lost ~9000-13000 tracking records, and blip_burn was
/// named in about 40% of the blips' time, [unknown] in about 60%.
#[test]
fn a_ten_second_symbolization_stall_loses_no_tracking_record() {
    require_bpf!();
    let blip = workload("blip");
    let dir = tempfile::tempdir().unwrap();
    // distinct binaries, each an object of its own for the daemon to open
    let copies: Vec<std::path::PathBuf> = (0..16)
        .map(|i| {
            let p = dir.path().join(format!("blip{i:02}"));
            std::fs::copy(&blip, &p).unwrap();
            p
        })
        .collect();
    let store = dir.path().join("store");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _lock = capture_lock();
    // Windows of 10 s: the first one's stall covers the spawning below, and no
    // other window ends before the daemon is stopped (each would stall 10 s more).
    let stall_ms = STALL.as_millis().to_string();
    let d = Daemon::start_with_env(
        &[
            "-F",
            "199",
            "--window",
            "10",
            "--listen",
            &listen,
            "--dir",
            store.to_str().unwrap(),
        ],
        &[("FLAMEBPF_TEST_SYMBOLIZE_DELAY_MS", &stall_ms)],
    );
    wait_for_port(port);
    // The first window has ended and waits for the stalled symbolization thread.
    let m = wait_for_metrics(port, Duration::from_secs(40), |m| {
        metric_value(m, "flamebpf_windows_pending") >= 1
    });
    assert_eq!(metric_value(&m, "flamebpf_windows_pending"), 1, "{m}");
    let stalled = std::time::Instant::now();
    // Hundreds of short processes: each exec brings mmap, comm and exit records,
    // far more than the tracking rings hold if nobody reads them for 10 s.
    let (mut blips, mut shells) = (0, 0);
    let spawning = STALL - Duration::from_secs(3);
    for c in copies.iter().cycle() {
        if stalled.elapsed() >= spawning {
            break;
        }
        assert!(Command::new(c).arg("20").status().unwrap().success());
        blips += 1;
        for _ in 0..10 {
            Command::new("/bin/sh")
                .args(["-c", "true"])
                .status()
                .unwrap();
            shells += 1;
        }
    }
    eprintln!("spawned {blips} blips and {shells} shells");
    let m = metrics(port);
    assert!(
        stalled.elapsed() < STALL && metric_value(&m, "flamebpf_windows_written_total") == 0,
        "all of it happened while the first window's symbolization stalled: {m}"
    );
    assert_eq!(
        metric_value(&m, r#"flamebpf_lost_total{class="tracking_records"}"#),
        0,
        "{m}"
    );
    let (status, stderr) = d.stop();
    assert!(status.success(), "{stderr}");
    assert!(
        !stderr.contains("address-space records"),
        "no tracking record lost up to the end: {stderr}"
    );
    assert_eq!(
        windows(&store).len(),
        2,
        "the stalled window and the last one"
    );

    // The processes that came and went during the stall are named.
    let q = dir.path().join("q.folded");
    assert!(run(flamebpf()
        .args(["query", "--dir"])
        .arg(&store)
        .arg("-o")
        .arg(&q))
    .status
    .success());
    let f = Folded::read(&q);
    let is_blip = |s: &[String]| s[0].starts_with("blip");
    let burns = |s: &[String]| is_blip(s) && s.iter().any(|fr| fr == "blip_burn");
    let sampled = f.count(is_blip);
    let named = f.count(burns);
    let unknown = f.count(|s| is_blip(s) && s.iter().any(|fr| fr == "[unknown]"));
    let names: std::collections::BTreeSet<&str> =
        f.0.iter()
            .filter(|(s, _)| burns(s))
            .map(|(s, _)| s[0].as_str())
            .collect();
    eprintln!(
        "blips: {} ms sampled, {} ms in blip_burn, {} ms with [unknown] frames; binaries named {names:?}",
        sampled / MS,
        named / MS,
        unknown / MS
    );
    assert!(sampled >= 250 * MS, "the blips were sampled: {sampled} ns");
    // the rest is their start (the dynamic loader, exec) and exit
    assert!(
        named as f64 >= 0.8 * sampled as f64,
        "blip_burn named in {named} of {sampled} ns"
    );
    assert!(
        unknown as f64 <= 0.05 * sampled as f64,
        "[unknown] in {unknown} of {sampled} ns"
    );
    assert!(names.len() >= 12, "most binaries named: {names:?}");
}

#[test]
fn a_symbolization_that_falls_behind_for_good_lengthens_windows_and_loses_no_sample() {
    require_bpf!();
    let split = workload("split");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _lock = capture_lock();
    // 1 s windows, each named in 2 s: the backlog would grow without end
    let mut child = flamebpf()
        .args([
            "continuous",
            "-F",
            "199",
            "--window",
            "1",
            "--listen",
            &listen,
            "--dir",
        ])
        .arg(&store)
        .arg("--")
        .arg(&split)
        .arg("10")
        .env("FLAMEBPF_TEST_SYMBOLIZE_DELAY_MS", "2000")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_port(port);
    let mut most_pending = 0;
    while child.try_wait().unwrap().is_none() {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            // the endpoint goes away with the daemon: a failed read ends the loop
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut text = String::new();
            if write!(s, "GET /metrics HTTP/1.0\r\n\r\n").is_ok()
                && s.read_to_string(&mut text).is_ok()
                && text.contains("flamebpf_windows_pending")
            {
                most_pending = most_pending.max(metric_value(&text, "flamebpf_windows_pending"));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("daemon stderr: {stderr}");
    assert!(out.status.success());
    // three while sampling runs, and the last one once it ends
    assert!(
        most_pending <= 4,
        "at most 3 + 1 windows wait: {most_pending}"
    );
    let total: u64 = stderr
        .split(" samples in ")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the final line counts samples: {stderr}"));
    let w = windows(&store);
    let lengths: Vec<u64> = w
        .iter()
        .map(|n| {
            let (a, b) = n
                .trim_start_matches("window-")
                .trim_end_matches(".pb.gz")
                .split_once('-')
                .unwrap();
            b.parse::<u64>().unwrap() - a.parse::<u64>().unwrap()
        })
        .collect();
    eprintln!("window lengths (ms): {lengths:?}");
    assert!(
        lengths.iter().any(|&ms| ms >= 1900),
        "windows were lengthened while symbolization was behind: {lengths:?}"
    );
    // every sample is in exactly one window, lengthened or not
    let in_windows = samples_in_windows(&store, &w);
    assert_eq!(
        in_windows, total,
        "samples across windows vs the sampler's count"
    );
}

/// The samples of the named windows of a store, as `go tool pprof -raw` reads them.
fn samples_in_windows(store: &std::path::Path, names: &[String]) -> u64 {
    names
        .iter()
        .map(|name| {
            let raw = go_pprof(&[OsStr::new("-raw"), store.join(name).as_os_str()]);
            pprof_raw_totals(&raw).first().copied().unwrap_or(0)
        })
        .sum()
}
