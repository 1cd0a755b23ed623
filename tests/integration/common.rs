//! Helpers shared by the suites: the binary, workloads compiled from testdata/,
//! the BPF gate, and a folded-stacks reader.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// The flamebpf binary under test.
pub fn flamebpf() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flamebpf"))
}

/// Why BPF captures cannot run here, if they cannot.
pub fn bpf_unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        let caps = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("CapEff:"))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            })
            .unwrap_or(0);
        let bpf_and_perfmon = (1u64 << 39) | (1u64 << 38);
        if caps & (1 << 21) == 0 && caps & bpf_and_perfmon != bpf_and_perfmon {
            return Some(format!(
                "not root (uid {euid}) and without CAP_BPF + CAP_PERFMON"
            ));
        }
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Some("the kernel has no BTF (/sys/kernel/btf/vmlinux)".into());
    }
    None
}

/// Returns from the test, with the reason printed, when BPF cannot be used here;
/// fails the test instead when FLAMEBPF_REQUIRE_BPF=1 (as CI sets it).
macro_rules! require_bpf {
    () => {
        if let Some(why) = $crate::common::bpf_unavailable() {
            if std::env::var("FLAMEBPF_REQUIRE_BPF").as_deref() == Ok("1") {
                panic!("FLAMEBPF_REQUIRE_BPF=1 but BPF is unavailable: {why}");
            }
            // the test thread carries the test's name: scripts/test.sh lists them
            eprintln!(
                "skipped: {}: needs BPF: {why}",
                std::thread::current().name().unwrap_or("a test")
            );
            return;
        }
    };
}
pub(crate) use require_bpf;

/// Captures sample every CPU: one at a time, so they do not skew each other.
pub fn capture_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Compiles testdata/NAME.c (or .cc, or .rs) once per test run, with frame pointers
/// kept and debug information, and returns the binary.
pub fn workload(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(HashMap::new()));
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get(name) {
        return p.clone();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("workloads");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join(name);
    let testdata = root.join("testdata");
    // these workloads are built the way distributions build: no frame pointers
    let c_flags: &[&str] = if ["omitfp", "prologue"].contains(&name) {
        &[
            "-O2",
            "-g",
            "-fomit-frame-pointer",
            "-fno-optimize-sibling-calls",
            "-fasynchronous-unwind-tables",
            "-o",
        ]
    } else {
        &[
            "-O2",
            "-g",
            "-fno-omit-frame-pointer",
            "-fno-optimize-sibling-calls",
            "-o",
        ]
    };
    let mut cmd = if testdata.join(format!("{name}.c")).exists() {
        let mut c = Command::new("gcc");
        c.args(c_flags)
            .arg(&out)
            .arg(testdata.join(format!("{name}.c")));
        c
    } else if testdata.join(format!("{name}.cc")).exists() {
        let mut c = Command::new("g++");
        c.args(c_flags)
            .arg(&out)
            .arg(testdata.join(format!("{name}.cc")));
        c
    } else {
        let mut c = Command::new("rustc");
        c.args(["-O", "-g", "-C", "force-frame-pointers=yes", "-o"])
            .arg(&out)
            .arg(testdata.join(format!("{name}.rs")));
        c
    };
    let status = cmd.status().expect("the compiler runs");
    assert!(status.success(), "compiling workload {name}");
    built.insert(name.to_string(), out.clone());
    out
}

/// testdata/NAME.c built as a shared library the way distributions build them
/// (no frame pointers, CFI only), once per test run.
pub fn shared_library(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(HashMap::new()));
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get(name) {
        return p.clone();
    }
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("workloads");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join(format!("lib{name}.so"));
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(format!("{name}.c"));
    let status = Command::new("gcc")
        .args([
            "-O2",
            "-g",
            "-fomit-frame-pointer",
            "-fno-optimize-sibling-calls",
            "-shared",
            "-fPIC",
            "-o",
        ])
        .arg(&out)
        .arg(src)
        .status()
        .expect("the compiler runs");
    assert!(status.success(), "compiling library {name}");
    built.insert(name.to_string(), out.clone());
    out
}

/// Whether a folded stack (comm first, root next) starts at a process's or a
/// thread's outermost frame: `_start`, the libc start functions, or
/// `start_thread`/`clone3` (a stripped binary's `_start` is `exe+0x…`, so the
/// outermost three frames are looked at).
pub fn reaches_outermost(stack: &[String]) -> bool {
    const OUTERMOST: [&str; 6] = [
        "_start",
        "__libc_start_main",
        "__libc_start_main_impl",
        "__libc_start_call_main",
        "start_thread",
        "clone3",
    ];
    stack
        .iter()
        .skip(1)
        .take(3)
        .any(|f| OUTERMOST.contains(&f.as_str()))
}

/// A copy of workload `name` with every symbol and all debug information stripped.
pub fn stripped_workload(name: &str) -> PathBuf {
    let src = workload(name);
    let out = src.with_file_name(format!("{name}-stripped"));
    let status = Command::new("strip")
        .arg("-s")
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .expect("strip runs");
    assert!(status.success());
    out
}

/// Runs flamebpf and returns its output, echoing stderr for the test log.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("flamebpf runs");
    eprintln!("flamebpf stderr: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// A millisecond in the weight unit of the clock events (nanoseconds).
pub const MS: u64 = 1_000_000;

/// The window files of a continuous store, oldest first.
pub fn windows(dir: &Path) -> Vec<String> {
    let mut w: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("window-") && n.ends_with(".pb.gz"))
        .collect();
    w.sort();
    w
}

/// Folded stacks: (frames with the comm first, weight).
pub struct Folded(pub Vec<(Vec<String>, u64)>);

impl Folded {
    pub fn parse(text: &str) -> Folded {
        Folded(
            text.lines()
                .map(|l| {
                    let (stack, count) = l.rsplit_once(' ').expect("`stack count` lines");
                    (
                        stack.split(';').map(str::to_string).collect(),
                        count.parse().expect("a count"),
                    )
                })
                .collect(),
        )
    }

    pub fn read(path: &Path) -> Folded {
        Folded::parse(&std::fs::read_to_string(path).expect("the folded output exists"))
    }

    pub fn total(&self) -> u64 {
        self.0.iter().map(|(_, c)| c).sum()
    }

    /// Samples whose stack satisfies `pred`.
    pub fn count(&self, pred: impl Fn(&[String]) -> bool) -> u64 {
        self.0.iter().filter(|(s, _)| pred(s)).map(|(_, c)| c).sum()
    }

    /// Samples with a frame named `name` anywhere in the stack.
    pub fn with_frame(&self, name: &str) -> u64 {
        self.count(|s| s[1..].iter().any(|f| f == name))
    }
}

/// Samples of `heavy` as a share of `heavy` plus `light`.
pub fn heavy_share(heavy: u64, light: u64) -> f64 {
    assert!(heavy + light > 0, "no samples of heavy or light");
    heavy as f64 / (heavy + light) as f64
}

/// What one `flamebpf record` run left: its output, the folded profile, and the
/// directory it wrote into (kept until dropped).
pub struct Capture {
    pub out: Output,
    pub folded: Folded,
    pub dir: tempfile::TempDir,
}

impl Capture {
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }

    /// Samples taken, from the summary line.
    pub fn samples(&self) -> u64 {
        summary_count(&self.stderr(), "samples")
    }
}

/// The number the summary line puts before `what` ("22290 unique stacks").
pub fn summary_count(summary: &str, what: &str) -> u64 {
    summary
        .split(&format!(" {what}"))
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the summary counts {what}: {summary}"))
}

/// Runs `flamebpf record FLAGS -o DIR/out.folded [-- COMMAND...]` under the capture
/// lock and checks that it succeeded. `FLAGS` may name files in DIR as `{dir}/…`.
pub fn record(flags: &[&str], command: &[&str]) -> Capture {
    let lock = capture_lock();
    record_holding(&lock, flags, command)
}

/// [`record`] for a test that already holds the capture lock (it started a
/// workload that must not wait for other tests' captures).
pub fn record_holding(
    _lock: &MutexGuard<'static, ()>,
    flags: &[&str],
    command: &[&str],
) -> Capture {
    let dir = tempfile::tempdir().unwrap();
    let folded = dir.path().join("out.folded");
    let d = dir.path().to_str().unwrap();
    let mut cmd = flamebpf();
    cmd.arg("record")
        .args(flags.iter().map(|f| f.replace("{dir}", d)))
        .arg("-o")
        .arg(&folded);
    if !command.is_empty() {
        cmd.arg("--").args(command);
    }
    let out = run(&mut cmd);
    assert!(out.status.success(), "flamebpf record failed");
    Capture {
        out,
        folded: Folded::read(&folded),
        dir,
    }
}

/// Runs one of the real-client scripts in tests/clients (speedscope in Chromium,
/// the SVG search box) with node. They are installed by scripts/setup.sh.
pub fn client(script: &str, args: &[&std::ffi::OsStr]) -> Output {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    assert!(
        dir.join("node_modules/speedscope").exists() && Path::new("/usr/bin/chromium").exists(),
        "the client tests need speedscope, playwright-core and chromium: run scripts/setup.sh"
    );
    let out = Command::new("node")
        .arg(dir.join(script))
        .args(args)
        .output()
        .expect("node runs");
    eprintln!(
        "{script}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `go tool pprof ARGS`; installed by scripts/setup.sh (Debian's golang-go).
pub fn go_pprof(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new("go")
        .args(["tool", "pprof"])
        .args(args)
        .output()
        .expect("go tool pprof runs (scripts/setup.sh installs golang-go)");
    assert!(
        out.status.success(),
        "go tool pprof failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sums of each value column over all samples of `go tool pprof -raw` output.
pub fn pprof_raw_totals(raw: &str) -> Vec<u64> {
    let mut totals: Vec<u64> = Vec::new();
    let samples = raw.split("Samples:").nth(1).expect("-raw lists samples");
    let body = samples.split("Locations").next().unwrap_or(samples);
    for line in body.lines().skip(2) {
        let Some((values, _)) = line.split_once(':') else {
            continue;
        };
        let nums: Vec<u64> = values
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if nums.is_empty() || nums.len() != values.split_whitespace().count() {
            continue;
        }
        totals.resize(totals.len().max(nums.len()), 0);
        for (t, n) in totals.iter_mut().zip(nums) {
            *t += n;
        }
    }
    totals
}

/// `perf record` of a command with `perf_flags` (e.g. `-g -F 999`), read back with
/// `perf script`: each sample's frame names, leaf first. `None` (with the reason
/// printed) where perf cannot record here, so the comparison is skipped, not
/// failed; where BPF tests are required (CI), perf must work too.
pub fn perf_samples(
    perf_flags: &[&str],
    command: &[&std::ffi::OsStr],
    dir: &std::path::Path,
) -> Option<Vec<Vec<String>>> {
    let data = dir.join("perf.data");
    let rec = Command::new("perf")
        .arg("record")
        .arg("-q")
        .args(perf_flags)
        .arg("-o")
        .arg(&data)
        .arg("--")
        .args(command)
        .output();
    let required = std::env::var("FLAMEBPF_REQUIRE_BPF").as_deref() == Ok("1");
    match rec {
        Ok(o) if o.status.success() => {}
        Ok(o) if required => panic!(
            "perf record failed where the comparisons are required: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) if required => panic!("perf is not installed (scripts/setup.sh installs it): {e}"),
        Ok(o) => {
            eprintln!(
                "skipped the perf comparison: perf record failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            return None;
        }
        Err(e) => {
            eprintln!("skipped the perf comparison: perf is not installed ({e})");
            return None;
        }
    }
    let script = Command::new("perf")
        .args(["script", "-F", "ip,sym", "-i"])
        .arg(&data)
        .output()
        .expect("perf script runs");
    Some(
        String::from_utf8_lossy(&script.stdout)
            .split("\n\n")
            .map(|s| {
                s.lines()
                    .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
                    .collect()
            })
            .filter(|v: &Vec<String>| !v.is_empty())
            .collect(),
    )
}

/// `a`'s share of the samples whose stack holds `a` or (and not `a`) `b`.
pub fn share_containing(samples: &[Vec<String>], a: &str, b: &str) -> f64 {
    let (mut na, mut nb) = (0, 0);
    for frames in samples {
        if frames.iter().any(|f| f == a) {
            na += 1;
        } else if frames.iter().any(|f| f == b) {
            nb += 1;
        }
    }
    eprintln!("perf: {a} {na}, {b} {nb}");
    heavy_share(na, nb)
}
