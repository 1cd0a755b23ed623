//! Hostile input and careless use: what a local user or a slip of the finger can
//! throw at flamebpf (issue 15). Each is refused up front with one line, bounded,
//! or survived; none panics.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::{capture_lock, flamebpf, require_bpf};

/// Runs flamebpf and expects a quick one-line refusal naming `expect`.
fn refused(args: &[&std::ffi::OsStr], expect: &str) {
    let t = Instant::now();
    let out = flamebpf().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "must fail: {args:?}");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "{args:?} took {:?}",
        t.elapsed()
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.contains(expect), "{stderr:?} should say {expect:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn os(args: &[&str]) -> Vec<std::ffi::OsString> {
    args.iter().map(std::ffi::OsString::from).collect()
}

fn refused_str(args: &[&str], expect: &str) {
    let a = os(args);
    refused(&a.iter().map(|s| s.as_os_str()).collect::<Vec<_>>(), expect);
}

#[test]
fn out_of_range_durations_times_and_sizes_are_refused_at_parse_time() {
    refused_str(&["record", "-d", "1e300", "--", "true"], "seconds");
    refused_str(&["continuous", "--window", "1e300"], "--window");
    refused_str(&["continuous", "--window", "1e19"], "--window");
    refused_str(
        &["continuous", "--window", "0.001"],
        "give 1 to 86400 seconds",
    );
    refused_str(&["continuous", "--retain", "0"], "at least 1m");
    refused_str(&["query", "--from", "18446744073709551615"], "year 9999");
    refused_str(
        &["record", "-a", "--stack-map-size", "4294967295"],
        "--stack-map-size",
    );
    refused_str(
        &[
            "record",
            "-a",
            "--call-graph",
            "dwarf",
            "--ringbuf-size",
            "1KiB",
        ],
        "at least 8 samples",
    );
    refused_str(
        &["continuous", "--window", "600", "--retain", "5m"],
        "shorter than one --window",
    );
}

#[test]
fn a_store_that_is_a_file_is_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    refused(
        &["continuous".as_ref(), "--dir".as_ref(), file.as_os_str()],
        "not a directory",
    );
}

#[test]
fn a_name_too_long_for_the_filesystem_is_refused_before_sampling() {
    let dir = tempfile::tempdir().unwrap();
    let long = dir.path().join(format!("{}.svg", "x".repeat(300)));
    refused(
        &[
            "record".as_ref(),
            "-a".as_ref(),
            "-o".as_ref(),
            long.as_os_str(),
        ],
        "more than the 255",
    );
}

fn convert(input: &Path, outputs: &[&std::ffi::OsStr], extra: &[&str]) -> std::process::Output {
    flamebpf()
        .arg("convert")
        .arg(input)
        .args(outputs.iter().flat_map(|o| [std::ffi::OsStr::new("-o"), o]))
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn devices_fifos_links_and_names_that_are_not_utf8_are_written_as_asked() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.folded");
    std::fs::write(&input, "app;main;work 5\n").unwrap();

    let out = convert(&input, &["/dev/null".as_ref()], &["--format", "pprof"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = std::fs::symlink_metadata("/dev/null").unwrap();
    assert!(
        m.file_type().is_char_device(),
        "/dev/null must stay a device"
    );

    // a pipe behind /dev/stdout -> /proc/self/fd/1: written in place
    let out = convert(&input, &["/dev/stdout".as_ref()], &["--format", "folded"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"app;main;work 5\n");

    let name = std::ffi::OsStr::from_bytes(b"caf\xe9.pb.gz");
    let odd = dir.path().join(name);
    let out = convert(&input, &[odd.as_os_str()], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(odd.is_file());
    assert_eq!(
        std::fs::metadata(&odd).unwrap().permissions().mode() & 0o777,
        0o600,
        "pprof files carry kernel addresses: root only"
    );

    let real = dir.path().join("real.svg");
    let link = dir.path().join("link.svg");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let out = convert(&input, &[link.as_os_str()], &[]);
    assert!(out.status.success());
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(std::fs::read_to_string(&real).unwrap().contains("<svg"));
}

#[test]
fn oversized_folded_input_is_refused_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("long.folded");
    let mut line = "app;".to_string();
    line.push_str(&"f;".repeat(8 << 20)); // a 16 MiB line
    line.push_str("g 1\n");
    std::fs::write(&input, line).unwrap();
    let out = convert(&input, &[dir.path().join("o.svg").as_os_str()], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(":1: the line is over 1 MiB"), "{stderr}");

    let sparse = dir.path().join("sparse.folded");
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let t = Instant::now();
    let out = convert(&sparse, &[dir.path().join("o.svg").as_os_str()], &[]);
    assert!(!out.status.success());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(!dir.path().join("o.svg").exists());
}

#[test]
fn query_skips_fifos_and_corrupt_windows_and_serves_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let folded = dir.path().join("w.folded");
    std::fs::write(&folded, "app;main 3\n").unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let good = store.join("window-1000-2000.pb.gz");
    assert!(convert(&folded, &[good.as_os_str()], &[]).status.success());
    std::fs::write(store.join("window-2000-3000.pb.gz"), b"\x1f\x8bbroken").unwrap();
    let fifo = std::ffi::CString::new(
        store
            .join("window-3000-4000.pb.gz")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let t = Instant::now();
    let out = flamebpf()
        .args(["query", "--dir"])
        .arg(&store)
        .args(["-o", "-"])
        .output()
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "a FIFO must not hang it"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "app;main 3\n");
    assert_eq!(stderr.lines().count(), 1, "one warning: {stderr}");
    assert!(stderr.contains("window-2000-3000.pb.gz") && stderr.contains("not a profile"));
}

/// A daemon killed however the test ends.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn exchange(port: u16, request: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn the_daemon_survives_hostile_requests_and_keeps_its_store_private() {
    require_bpf!();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _lock = capture_lock();
    let child = flamebpf()
        .args(["continuous", "--window", "1", "--include-idle", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--dir")
        .arg(&store)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut d = Daemon(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = exchange(
        port,
        b"GET /healthz HTTP/1.1\r\nContent-Length: 99999999999999\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let mut url = b"GET /".to_vec();
    url.extend(std::iter::repeat_n(b'a', 16 << 20));
    let r = exchange(port, &url);
    assert!(r.starts_with("HTTP/1.1 431"), "{}", &r[..r.len().min(100)]);
    std::thread::sleep(Duration::from_millis(2500));
    // a corrupt window is skipped, counted, and the rest served
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let corrupt = format!("window-{}-{}.pb.gz", now_ms - 5000, now_ms - 4000);
    std::fs::write(store.join(&corrupt), b"junk").unwrap();
    let r = exchange(port, b"GET /flamegraph.svg?since=1h HTTP/1.1\r\n\r\n");
    assert!(
        r.starts_with("HTTP/1.1 200") && r.contains("<svg"),
        "{}",
        &r[..r.len().min(300)]
    );
    let r = exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n");
    let skipped: u64 = r
        .lines()
        .find_map(|l| l.strip_prefix("flamebpf_store_windows_skipped_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no skipped-window counter in {r}"));
    assert!(skipped >= 1, "{r}");
    assert!(
        d.0.try_wait().unwrap().is_none(),
        "the daemon is still running"
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&store), 0o700, "the store holds kernel addresses");
    let window = std::fs::read_dir(&store)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".pb.gz") && *e.file_name() != *corrupt)
        .expect("a window was written");
    assert_eq!(mode(&window.path()), 0o600);
}

#[test]
fn the_commands_children_end_with_the_capture() {
    require_bpf!();
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let script = format!(
        "sh -c 'while :; do :; done' & echo $! >> {0}; sh -c 'while :; do :; done' & echo $! >> {0}; wait",
        pids.display()
    );
    let _lock = capture_lock();
    let out = flamebpf()
        .args(["record", "-q", "-d", "1", "-o"])
        .arg(dir.path().join("o.folded"))
        .args(["--", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(out.stderr.is_empty() || !String::from_utf8_lossy(&out.stderr).contains("panicked"));
    let pids: Vec<i32> = std::fs::read_to_string(&pids)
        .unwrap()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert_eq!(pids.len(), 2);
    let alive = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|&p| alive(p)) {
        assert!(
            Instant::now() < deadline,
            "children left spinning: {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
