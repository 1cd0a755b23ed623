//! `--debuginfod` against Debian's real server (`debuginfod -F DIR`), serving
//! an unstripped copy of a workload: a stripped copy's functions are named with
//! it and are `object+0x…` without it (record and the daemon), and a server that
//! stalls (SIGSTOP) holds up neither a record nor the daemon's windows.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{capture_lock, flamebpf, require_bpf, run, windows, workload, Folded};
use crate::continuous::free_port;

/// A `debuginfod -F` on loopback, killed (and continued first, if stopped)
/// when dropped.
struct Server {
    child: Child,
    port: u16,
    /// The unstripped and stripped copies, and the server's database.
    dir: tempfile::TempDir,
}

impl Server {
    /// [`Server::start`], or `None` after printing why the test skips.
    fn start_or_skip(name: &str) -> Option<Server> {
        Server::start(name)
            .map_err(|why| eprintln!("skipped: {why}"))
            .ok()
    }

    /// Serves an unstripped copy of workload `name`; `Err` when the package is
    /// not installed (scripts/setup.sh installs it).
    fn start(name: &str) -> Result<Server, String> {
        if Command::new("debuginfod")
            .arg("--version")
            .output()
            .is_err()
        {
            return Err("debuginfod is not installed (scripts/setup.sh installs it)".into());
        }
        let dir = tempfile::tempdir().unwrap();
        let served = dir.path().join("served");
        std::fs::create_dir(&served).unwrap();
        std::fs::copy(workload(name), served.join(name)).unwrap();
        let port = free_port();
        let child = Command::new("debuginfod")
            .arg("-F")
            .arg(&served)
            .arg("-p")
            .arg(port.to_string())
            .arg("-d")
            .arg(dir.path().join("db.sqlite"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("debuginfod does not start: {e}"))?;
        let server = Server { child, port, dir };
        // it serves a file once its first scan indexed it
        let id = build_id(&served.join(name));
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_status(port, &format!("/buildid/{id}/debuginfo")) != Some(200) {
            assert!(Instant::now() < deadline, "debuginfod never served {id}");
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(server)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A stripped copy of what the server serves (same build id).
    fn stripped(&self, name: &str) -> PathBuf {
        let out = self.dir.path().join(format!("{name}-stripped"));
        let ok = Command::new("strip")
            .arg("-s")
            .arg("-o")
            .arg(&out)
            .arg(self.dir.path().join("served").join(name))
            .status()
            .expect("strip runs");
        assert!(ok.success());
        assert_eq!(build_id(&out), build_id(&workload(name)));
        out
    }

    /// SIGSTOP: it accepts connections (the kernel does) and answers nothing.
    fn stall(&self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGSTOP) };
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGCONT) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn build_id(path: &Path) -> String {
    let out = Command::new("readelf")
        .arg("-n")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .expect("a build id")
        .to_string()
}

/// The status of `GET path`, `None` when nothing answers within a second.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// `record -F 99 FLAGS -o DIR/out.folded -- BINARY 1`: the folded stacks and
/// how long it took.
fn record_stripped(binary: &Path, flags: &[&str], env: &[(&str, &str)]) -> (Folded, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.folded");
    let cache = dir.path().join("cache");
    let started = Instant::now();
    let r = run(flamebpf()
        .args(["record", "-F", "99", "--debuginfod-cache"])
        .arg(&cache)
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg("--")
        .arg(binary)
        .arg("1")
        .env_remove("DEBUGINFOD_URLS")
        .envs(env.iter().copied()));
    let took = started.elapsed();
    assert!(r.status.success());
    (Folded::read(&out), took)
}

fn named(f: &Folded) -> bool {
    f.with_frame("heavy") > 0 && f.with_frame("light") > 0
}

fn unnamed(f: &Folded) -> bool {
    f.count(|s| s.iter().any(|fr| fr.starts_with("split-stripped+0x"))) > 0
        && f.with_frame("heavy") == 0
}

#[test]
fn record_names_a_stripped_binary_from_debuginfod_and_not_without() {
    require_bpf!();
    let Some(server) = Server::start_or_skip("split") else {
        return;
    };
    let stripped = server.stripped("split");
    let _lock = capture_lock();
    let (without, _) = record_stripped(&stripped, &[], &[]);
    assert!(
        unnamed(&without),
        "object+0x… without a server: {:?}",
        without.0
    );
    let url = server.url();
    let (with, _) = record_stripped(&stripped, &["--debuginfod", &url], &[]);
    assert!(named(&with), "named from the server: {:?}", with.0);
    // DEBUGINFOD_URLS, space-separated, as perf and samply read it
    let urls = format!("http://127.0.0.1:1 {url}");
    let (env, _) = record_stripped(&stripped, &[], &[("DEBUGINFOD_URLS", &urls)]);
    assert!(named(&env), "named through DEBUGINFOD_URLS: {:?}", env.0);
}

#[test]
fn a_stalled_server_holds_up_neither_record_nor_the_daemons_windows() {
    require_bpf!();
    let Some(server) = Server::start_or_skip("split") else {
        return;
    };
    let stripped = server.stripped("split");
    let url = server.url();
    server.stall();
    let _lock = capture_lock();
    // record waits 5 s at most for debug files, then writes what it has
    let (folded, took) = record_stripped(&stripped, &["--debuginfod", &url], &[]);
    assert!(unnamed(&folded), "{:?}", folded.0);
    assert!(took < Duration::from_secs(15), "record took {took:?}");

    // the daemon never waits: 1 s windows keep coming while the fetch hangs
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let cache = dir.path().join("cache");
    let started = Instant::now();
    let out = run(flamebpf()
        .args([
            "continuous",
            "-F",
            "99",
            "--window",
            "1",
            "--debuginfod",
            &url,
        ])
        .arg("--debuginfod-cache")
        .arg(&cache)
        .arg("--dir")
        .arg(&store)
        .arg("--")
        .arg(&stripped)
        .arg("4"));
    let took = started.elapsed();
    assert!(out.status.success());
    assert!(took < Duration::from_secs(12), "the daemon took {took:?}");
    let written = windows(&store).len();
    assert!(written >= 3, "a window a second: {written}");
}

#[test]
fn the_daemon_names_later_windows_once_the_file_arrived() {
    require_bpf!();
    let Some(server) = Server::start_or_skip("split") else {
        return;
    };
    let stripped = server.stripped("split");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let _lock = capture_lock();
    let out = run(flamebpf()
        .args(["continuous", "-F", "99", "--window", "1", "--debuginfod"])
        .arg(server.url())
        .arg("--debuginfod-cache")
        .arg(dir.path().join("cache"))
        .arg("--dir")
        .arg(&store)
        .arg("--")
        .arg(&stripped)
        .arg("4"));
    assert!(out.status.success());
    // the last window with half a second of the workload: the very last ones
    // may hold only the command's exit, or a few samples all in heavy (a round
    // is 30 ms of heavy, then 10 of light)
    let profiles: Vec<flamegraphs::Profile> = windows(&store)
        .iter()
        .map(|w| flamegraphs::pprof::read(&std::fs::read(store.join(w)).unwrap()).unwrap())
        .collect();
    let last = profiles
        .iter()
        .rev()
        .find(|p| {
            p.samples
                .iter()
                .filter(|s| s.comm == "split-stripped")
                .map(|s| s.count)
                .sum::<u64>()
                >= 50
        })
        .expect("windows with half a second of the workload");
    let names: Vec<&str> = last.frames().iter().map(|f| f.name.as_str()).collect();
    assert!(
        names.contains(&"heavy") && names.contains(&"light"),
        "the last window is named: {names:?}"
    );
}

#[test]
fn query_names_stored_windows_from_debuginfod() {
    require_bpf!();
    let Some(server) = Server::start_or_skip("split") else {
        return;
    };
    let stripped = server.stripped("split");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    {
        let _lock = capture_lock();
        let out = run(flamebpf()
            .args(["continuous", "-F", "99", "--window", "60", "--dir"])
            .arg(&store)
            .env_remove("DEBUGINFOD_URLS")
            .arg("--")
            .arg(&stripped)
            .arg("1"));
        assert!(out.status.success());
    }
    let query = |flags: &[&str], name: &str| -> Folded {
        let out = dir.path().join(name);
        assert!(run(flamebpf()
            .args(["query", "--dir"])
            .arg(&store)
            .args(flags)
            .arg("-o")
            .arg(&out)
            .env_remove("DEBUGINFOD_URLS"))
        .status
        .success());
        Folded::read(&out)
    };
    let before = query(&[], "before.folded");
    assert!(unnamed(&before), "{:?}", before.0);
    let cache = dir.path().join("cache");
    let url = server.url();
    let after = query(
        &[
            "--debuginfod",
            &url,
            "--debuginfod-cache",
            cache.to_str().unwrap(),
        ],
        "after.folded",
    );
    assert!(named(&after), "{:?}", after.0);
    assert_eq!(before.total(), after.total(), "the same samples");
}
