//! `flamebpf continuous --export`: every window reaches OTLP (gRPC and HTTP) and
//! Pyroscope receivers built from the official definitions ([`crate::receivers`])
//! with the same samples as the store's file for it; a backend that is down and a
//! daemon restarted meanwhile lose nothing and duplicate nothing; TLS with a
//! private CA and a required token; a stalled backend stalls nothing; bad flags
//! are one line before anything starts.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;

use crate::common::{capture_lock, flamebpf, require_bpf, run, windows, workload};
use crate::continuous::{free_port, get, metric_value, wait_for_metrics, wait_for_port};
use crate::receivers::{Got, Identity, Log, Policy, Receiver};

const FAST_RETRY: (&str, &str) = ("FLAMEBPF_TEST_EXPORT_MAX_BACKOFF_MS", "200");
const OTLP_PATH: &str = "/v1development/profiles";
const PUSH_PATH: &str = "/push.v1.PusherService/Push";

/// A store's windows, oldest first: (start in ms, file bytes).
fn stored(dir: &Path) -> Vec<(u64, Vec<u8>)> {
    windows(dir)
        .into_iter()
        .map(|name| {
            let start = name
                .trim_start_matches("window-")
                .split('-')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap();
            (start, std::fs::read(dir.join(&name)).unwrap())
        })
        .collect()
}

/// The daemon's last words on a backend: (windows exported, windows waiting).
fn summary(stderr: &str, backend: &str) -> (u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.contains(&format!(" exported to {backend} (")))
        .unwrap_or_else(|| panic!("a summary line on {backend}: {stderr}"));
    let number = |after: &str| -> u64 {
        line[line.find(after).unwrap() + after.len()..]
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{line}"))
    };
    (number("flamebpf: "), number(&format!("{backend} (")))
}

/// A window file's `samples` column as folded stacks (functions root first).
fn pprof_stacks(bytes: &[u8]) -> BTreeMap<String, i64> {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut raw)
        .unwrap();
    let p = flamegraphs::pprof::PProfile::decode(raw.as_slice()).unwrap();
    let s = |i: i64| p.string_table[i as usize].clone();
    assert_eq!(s(p.sample_type[0].r#type), "samples");
    let mut out = BTreeMap::new();
    for sample in &p.sample {
        if sample.value[0] == 0 {
            continue;
        }
        let mut names = Vec::new();
        for id in sample.location_id.iter().rev() {
            let l = p.location.iter().find(|l| l.id == *id).unwrap();
            for line in l.line.iter().rev() {
                let f = p
                    .function
                    .iter()
                    .find(|f| f.id == line.function_id)
                    .unwrap();
                names.push(s(f.name));
            }
        }
        *out.entry(names.join(";")).or_default() += sample.value[0];
    }
    out
}

/// What an OTLP request carries of a window: its start (ms), the `samples`
/// profile as folded stacks, service.name, and the samples' thread.name values.
struct OtlpWindow {
    start_ms: u64,
    stacks: BTreeMap<String, i64>,
    service: String,
    threads: Vec<String>,
}

fn otlp_window(r: &ExportProfilesServiceRequest) -> OtlpWindow {
    let d = r.dictionary.as_ref().expect("a dictionary");
    let s = |i: i32| d.string_table[i as usize].clone();
    let rp = &r.resource_profiles[0];
    let service = rp
        .resource
        .as_ref()
        .unwrap()
        .attributes
        .iter()
        .find(|a| a.key == "service.name")
        .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
            Value::StringValue(v) => Some(v.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let profiles = &rp.scope_profiles[0].profiles;
    let p = profiles
        .iter()
        .find(|p| s(p.sample_type.unwrap().type_strindex) == "samples")
        .expect("a samples profile");
    let mut stacks = BTreeMap::new();
    let mut threads = Vec::new();
    for sample in &p.samples {
        let mut names = Vec::new();
        for &l in d.stack_table[sample.stack_index as usize]
            .location_indices
            .iter()
            .rev()
        {
            for line in d.location_table[l as usize].lines.iter().rev() {
                names.push(s(
                    d.function_table[line.function_index as usize].name_strindex
                ));
            }
        }
        *stacks.entry(names.join(";")).or_default() += sample.values[0];
        for &a in &sample.attribute_indices {
            let kv = &d.attribute_table[a as usize];
            if let (true, Some(Value::StringValue(v))) = (
                s(kv.key_strindex) == "thread.name",
                kv.value.as_ref().and_then(|v| v.value.as_ref()),
            ) {
                threads.push(v.clone());
            }
        }
    }
    OtlpWindow {
        start_ms: p.time_unix_nano / 1_000_000,
        stacks,
        service,
        threads,
    }
}

/// Every stored window arrived once, in order, with the file's samples.
fn check_otlp(what: &str, got: &[Got], stored: &[(u64, Vec<u8>)], service: &str) {
    let windows: Vec<OtlpWindow> = got
        .iter()
        .map(|g| match g {
            Got::Otlp(r) => otlp_window(r),
            Got::Push(_) => panic!("{what}: a push"),
        })
        .collect();
    assert_eq!(
        windows.iter().map(|w| w.start_ms).collect::<Vec<_>>(),
        stored.iter().map(|s| s.0).collect::<Vec<_>>(),
        "{what}: every window once, in order"
    );
    let mut total = 0;
    for (w, (start, bytes)) in windows.iter().zip(stored) {
        assert_eq!(w.stacks, pprof_stacks(bytes), "{what}: window {start}");
        assert_eq!(w.service, service, "{what}: service.name");
        total += w.stacks.values().sum::<i64>();
    }
    assert!(total > 0, "{what}: no samples at all");
    assert!(
        windows
            .iter()
            .any(|w| w.threads.iter().any(|t| t == "split")),
        "{what}: the samples' comm as thread.name"
    );
}

/// Every stored window arrived once, in order, as the file's bytes.
fn check_push(got: &[Got], stored: &[(u64, Vec<u8>)], service: &str) {
    assert_eq!(got.len(), stored.len(), "every window once");
    for (g, (start, bytes)) in got.iter().zip(stored) {
        let Got::Push(p) = g else {
            panic!("an OTLP request on the push path")
        };
        let series = &p.series[0];
        let label = |n: &str| {
            series
                .labels
                .iter()
                .find(|l| l.name == n)
                .map(|l| l.value.as_str())
        };
        assert_eq!(label("__name__"), Some("process_cpu"));
        assert_eq!(label("service_name"), Some(service));
        assert!(
            series.samples[0].raw_profile == *bytes,
            "window {start}: the store's file, as it is, in order"
        );
    }
}

#[test]
fn every_window_reaches_otlp_grpc_otlp_http_and_pyroscope_with_the_stores_samples() {
    require_bpf!();
    let split = workload("split");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (grpc_log, http_log) = (Log::default(), Log::default());
    let g = Receiver::grpc(0, Policy::default(), grpc_log.clone());
    let h = Receiver::http(0, Policy::default(), http_log.clone());
    let _lock = capture_lock();
    let out = run(flamebpf()
        .args(["continuous", "-F", "99", "--window", "1", "--dir"])
        .arg(&store)
        .args(["--export", &format!("grpc://127.0.0.1:{}", g.port)])
        .args([
            "--export",
            &format!("http://127.0.0.1:{}{OTLP_PATH}", h.port),
        ])
        .args([
            "--export",
            &format!("http://localhost:{}{PUSH_PATH}", h.port),
        ])
        .args(["--export-tenant", "team-a", "--"])
        .arg(&split)
        .arg("3"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stored = stored(&store);
    assert!(stored.len() >= 3, "windows: {}", stored.len());
    check_otlp("gRPC", &grpc_log.accepted("grpc"), &stored, "split");
    check_otlp("HTTP", &http_log.accepted(OTLP_PATH), &stored, "split");
    check_push(&http_log.accepted(PUSH_PATH), &stored, "split");
    let all = [grpc_log.all(), http_log.all()].concat();
    assert!(all.iter().all(|a| a.tenant.as_deref() == Some("team-a")));
    assert_eq!(
        stderr.matches(" waiting for the next start").count(),
        3,
        "a line per backend: {stderr}"
    );
    let grpc = format!("grpc://127.0.0.1:{}", g.port);
    assert_eq!(summary(&stderr, &grpc), (stored.len() as u64, 0));
}

#[test]
fn a_backend_down_for_several_windows_and_a_restart_in_between_lose_nothing() {
    require_bpf!();
    let split = workload("split");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (gp, hp, mp) = (free_port(), free_port(), free_port());
    let grpc = format!("grpc://127.0.0.1:{gp}");
    let push = format!("http://127.0.0.1:{hp}{PUSH_PATH}");
    let daemon = |secs: &str, more: &[&str]| {
        let mut c = flamebpf();
        c.args(["continuous", "-F", "99", "--window", "1", "--dir"])
            .arg(&store)
            .args(["--export", &grpc, "--export", &push])
            .args(more)
            .arg("--")
            .arg(&split)
            .arg(secs)
            .env(FAST_RETRY.0, FAST_RETRY.1);
        c
    };
    let _lock = capture_lock();
    // the first daemon never reaches the backends
    let out = run(&mut daemon("3", &[]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("retrying with backoff"), "{stderr}");
    let first = windows(&store).len();
    assert!(first >= 3);
    assert_eq!(summary(&stderr, &grpc), (0, first as u64), "{stderr}");

    // the second starts with them down, and they come up two windows later
    let listen = format!("127.0.0.1:{mp}");
    let child = daemon("6", &["--listen", &listen])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_port(mp);
    std::thread::sleep(Duration::from_millis(2500));
    let (grpc_log, http_log) = (Log::default(), Log::default());
    let _g = Receiver::grpc(gp, Policy::default(), grpc_log.clone());
    let _h = Receiver::http(hp, Policy::default(), http_log.clone());
    let exported = format!("flamebpf_export_windows_total{{backend=\"{grpc}\"}}");
    let m = wait_for_metrics(mp, Duration::from_secs(20), |m| {
        m.contains(&exported) && metric_value(m, &exported) > first as u64
    });
    assert!(
        metric_value(
            m.as_str(),
            &format!("flamebpf_export_retries_total{{backend=\"{grpc}\"}}")
        ) > 0,
        "{m}"
    );
    assert!(
        metric_value(
            m.as_str(),
            &format!("flamebpf_export_retries_total{{backend=\"{push}\"}}")
        ) > 0
    );
    assert!(m.contains("flamebpf_export_last_error_timestamp_seconds{backend="));
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("second daemon: {stderr}");
    assert!(out.status.success());
    let stored = stored(&store);
    assert!(stored.len() >= first + 5, "windows: {}", stored.len());
    check_otlp("gRPC", &grpc_log.accepted("grpc"), &stored, "split");
    check_push(&http_log.accepted(PUSH_PATH), &stored, "split");
}

#[test]
fn max_disk_bounds_the_backlog_and_every_window_is_exported_or_counted_as_dropped() {
    require_bpf!();
    let split = workload("split");
    let dir = tempfile::tempdir().unwrap();
    let _lock = capture_lock();
    // how large this workload's windows are, so the store holds two or three
    let probe = dir.path().join("probe");
    assert!(run(flamebpf()
        .args(["continuous", "-F", "99", "--window", "1", "--dir"])
        .arg(&probe)
        .arg("--")
        .arg(&split)
        .arg("3"))
    .status
    .success());
    // the middle window: the first holds the start's stacks, the last is short
    let mut sizes: Vec<usize> = stored(&probe).iter().map(|w| w.1.len()).collect();
    sizes.sort_unstable();
    let size = sizes[sizes.len() / 2];
    eprintln!("window sizes: {sizes:?}");
    let store = dir.path().join("store");
    let gp = free_port();
    let grpc = format!("grpc://127.0.0.1:{gp}");
    let child = flamebpf()
        .args(["continuous", "-F", "99", "--window", "1", "--dir"])
        .arg(&store)
        .args([
            "--max-disk",
            &(size * 5 / 2).to_string(),
            "--export",
            &grpc,
            "--",
        ])
        .arg(&split)
        .arg("8")
        .env(FAST_RETRY.0, FAST_RETRY.1)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // down for five windows
    std::thread::sleep(Duration::from_millis(5500));
    let log = Log::default();
    let _g = Receiver::grpc(gp, Policy::default(), log.clone());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("daemon: {stderr}");
    assert!(out.status.success());
    let written: u64 = stderr
        .split(" windows written to ")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    let (exported, waiting) = summary(&stderr, &grpc);
    let dropped: u64 = stderr
        .rsplit(" dropped)")
        .nth(1)
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("windows dropped: {stderr}"));
    assert!(dropped > 0, "the backlog was bounded");
    assert_eq!(waiting, 0);
    assert_eq!(
        exported + dropped,
        written,
        "every window exported or counted as dropped"
    );
    assert!(stderr.contains("deleted before they were sent (--max-disk or --retain)"));
    let got: Vec<_> = log
        .accepted("grpc")
        .iter()
        .map(|g| match g {
            Got::Otlp(r) => otlp_window(r),
            Got::Push(_) => unreachable!(),
        })
        .collect();
    assert_eq!(got.len() as u64, exported);
    assert!(
        got.windows(2).all(|w| w[0].start_ms < w[1].start_ms),
        "in order, each once"
    );
    // the windows still in the store arrived as they are there
    for (start, bytes) in stored(&store) {
        let w = got
            .iter()
            .find(|w| w.start_ms == start)
            .expect("a stored window arrived");
        assert_eq!(w.stacks, pprof_stacks(&bytes));
    }
}

#[test]
fn tls_with_a_private_ca_and_a_token_a_wrong_token_is_refused_and_retried_later() {
    require_bpf!();
    let split = workload("split");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let id = Identity::self_signed();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &id.cert_pem).unwrap();
    let wrong = dir.path().join("wrong-token");
    std::fs::write(&wrong, "not-it\n").unwrap();
    let policy = Policy {
        authorization: Some("Bearer right-token".into()),
        tls: Some(id),
    };
    let (grpc_log, http_log) = (Log::default(), Log::default());
    let g = Receiver::grpc(0, policy.clone(), grpc_log.clone());
    let h = Receiver::http(0, policy, http_log.clone());
    let grpcs = format!("grpcs://localhost:{}", g.port);
    let https = format!("https://localhost:{}{PUSH_PATH}", h.port);
    let daemon = |secs: &str, more: &[&str]| {
        let mut c = flamebpf();
        c.args(["continuous", "-F", "99", "--window", "1", "--dir"])
            .arg(&store)
            .args(["--export", &grpcs, "--export", &https, "--export-ca"])
            .arg(&ca)
            .args(more)
            .arg("--")
            .arg(&split)
            .arg(secs)
            .env(FAST_RETRY.0, FAST_RETRY.1);
        c
    };
    let _lock = capture_lock();
    let mp = free_port();
    let listen = format!("127.0.0.1:{mp}");
    let child = daemon(
        "3",
        &[
            "--export-token-file",
            wrong.to_str().unwrap(),
            "--listen",
            &listen,
        ],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_for_port(mp);
    let errors = |b: &str| format!("flamebpf_export_errors_total{{backend=\"{b}\"}}");
    let m = wait_for_metrics(mp, Duration::from_secs(10), |m| {
        m.contains(&errors(&https))
            && metric_value(m, &errors(&grpcs)) > 0
            && metric_value(m, &errors(&https)) > 0
    });
    assert!(metric_value(&m, &errors(&grpcs)) > 0, "{m}");
    assert!(metric_value(&m, &errors(&https)) > 0, "{m}");
    assert!(m.contains("error=\"HTTP 401:"), "{m}");
    assert!(
        m.contains("error=\"gRPC Unauthenticated: bad token\""),
        "{m}"
    );
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("first daemon: {stderr}");
    assert!(out.status.success(), "{stderr}");
    // the handshakes worked (the receivers answered): only the token was wrong
    assert!(
        stderr.contains(&format!(
            "export to {grpcs}: gRPC Unauthenticated: bad token; retrying"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("export to {https}: HTTP 401:")),
        "{stderr}"
    );
    assert!(grpc_log.refused() > 0 && http_log.refused() > 0);
    assert!(grpc_log.accepted("grpc").is_empty() && http_log.accepted(PUSH_PATH).is_empty());

    // the right token, from the environment: the first daemon's windows go too
    let out = run(daemon("2", &[]).env("FLAMEBPF_EXPORT_TOKEN", "right-token"));
    assert!(out.status.success());
    let stored = stored(&store);
    assert!(stored.len() >= 4);
    check_otlp(
        "gRPC over TLS",
        &grpc_log.accepted("grpc"),
        &stored,
        "split",
    );
    check_push(&http_log.accepted(PUSH_PATH), &stored, "split");
}

#[test]
fn a_stalled_backend_stalls_neither_the_windows_nor_the_endpoint() {
    require_bpf!();
    let split = workload("split");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // accepts connections and never answers
    let stall = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sp = stall.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in stall.incoming().flatten() {
            held.push(s);
        }
    });
    let mp = free_port();
    let _lock = capture_lock();
    let started = Instant::now();
    let child = flamebpf()
        .args(["continuous", "-F", "99", "--window", "1", "--dir"])
        .arg(&store)
        .args(["--export", &format!("http://127.0.0.1:{sp}{OTLP_PATH}")])
        .args([
            "--export-timeout",
            "3s",
            "--listen",
            &format!("127.0.0.1:{mp}"),
            "--",
        ])
        .arg(&split)
        .arg("4")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_port(mp);
    let mut slowest = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(3) {
        let t = Instant::now();
        assert_eq!(get(mp, "/healthz").0, 200);
        slowest = slowest.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("daemon: {stderr}");
    assert!(out.status.success());
    assert!(
        slowest < Duration::from_secs(1),
        "the endpoint took {slowest:?}"
    );
    assert!(windows(&store).len() >= 4, "a window a second all along");
    // 4 s of work, then at most one attempt's timeout before it gives up
    assert!(
        took < Duration::from_secs(12),
        "the daemon took {took:?} to stop"
    );
    assert!(stderr.contains("retrying with backoff"), "{stderr}");
}

#[test]
fn bad_export_flags_are_one_line_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let missing = dir.path().join("no-ca.pem");
    let cases: [(&[&str], &str); 7] = [
        (
            &[
                "--export",
                "grpc://127.0.0.1:4317",
                "--export-token",
                "s3cret",
            ],
            "a token on the command line is visible to every user",
        ),
        (
            &["--export-basic-auth", "a:b"],
            "credentials on the command line are visible",
        ),
        (&["--export", "ftp://127.0.0.1/x"], "unknown scheme \"ftp\""),
        (
            &["--export", "http://127.0.0.1:4318/"],
            "cannot tell the protocol",
        ),
        (
            &[
                "--export",
                "http://192.0.2.1:4040/push.v1.PusherService/Push",
            ],
            "not loopback",
        ),
        (
            &[
                "--export",
                "grpcs://localhost:4317",
                "--export-ca",
                missing.to_str().unwrap(),
            ],
            "--export-ca",
        ),
        (
            &[
                "--export",
                "grpc://127.0.0.1:4317",
                "--export-token-file",
                missing.to_str().unwrap(),
            ],
            "--export-token-file",
        ),
    ];
    for (args, says) in cases {
        let out = flamebpf()
            .arg("continuous")
            .args(["--dir", store.to_str().unwrap()])
            .args(args)
            .args(["--", "true"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("s3cret"), "the token is not echoed");
        assert!(!store.exists(), "{args:?}: nothing started");
    }
}
