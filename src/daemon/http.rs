//! The continuous daemon's HTTP endpoint, on the bounded server of [`super::server`]
//! (timeouts, size and connection limits: see there). Routes follow the
//! conventions fleet profilers scrape:
//! - `GET /debug/pprof/profile?seconds=N`: Go's net/http/pprof, a gzipped pprof of
//!   the next N seconds (at most [`MAX_PROFILE_SECONDS`]), so `go tool pprof`,
//!   Parca and Pyroscope work unchanged; at most [`MAX_PROFILES`] at once, 429
//!   with Retry-After beyond;
//! - `GET /flamegraph.svg?since=15m&comm=NAME&pid=PID`: from the store;
//! - `GET /metrics`: Prometheus text; `GET /healthz`.
//!
//! Nothing in a request names a file: the store is the one given at startup.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Result;

use super::merge::{self, Filter};
use super::metrics::Metrics;
use super::server::{self, Limits, Request, Response};

/// Profile requests served at once: each holds a connection and, in the sampling
/// loop, the samples of its seconds and the processes they name.
pub const MAX_PROFILES: usize = 4;
/// The longest profile a request may ask for, which bounds how long it keeps
/// exited processes from being forgotten.
pub const MAX_PROFILE_SECONDS: u64 = 300;

/// What the HTTP thread asks of the sampling loop.
pub enum Ask {
    /// A profile of the next `seconds`, as gzipped pprof bytes.
    Profile {
        /// How long to sample.
        seconds: u64,
        /// Where the answer goes.
        reply: mpsc::Sender<Result<Vec<u8>, String>>,
    },
}

/// Starts serving on `addr`; returns the address actually bound.
pub fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    store: PathBuf,
    asks: mpsc::Sender<Ask>,
) -> Result<SocketAddr> {
    serve_with(addr, Limits::default(), metrics, store, asks)
}

/// [`serve`] with other limits (tests).
pub fn serve_with(
    addr: SocketAddr,
    limits: Limits,
    metrics: Arc<Metrics>,
    store: PathBuf,
    asks: mpsc::Sender<Ask>,
) -> Result<SocketAddr> {
    let profiles = Arc::new(AtomicUsize::new(0));
    server::spawn(addr, limits, move |r: &Request| {
        handle(r, &metrics, &store, &asks, &profiles)
    })
}

fn text(status: u16, body: impl Into<String>) -> Response {
    Response::text(status, body)
}

/// `a=1&b=x%20y` → {a: 1, b: "x y"}.
fn parse_query(q: &str) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(decode(k)?, decode(v)?);
    }
    Ok(out)
}

fn decode(s: &str) -> Result<String, String> {
    let mut bytes = Vec::with_capacity(s.len());
    let mut it = s.bytes();
    while let Some(b) = it.next() {
        match b {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hex: Vec<u8> = it.by_ref().take(2).collect();
                let v = std::str::from_utf8(&hex)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .filter(|_| hex.len() == 2)
                    .ok_or_else(|| format!("bad percent escape in {s:?}"))?;
                bytes.push(v);
            }
            b => bytes.push(b),
        }
    }
    String::from_utf8(bytes).map_err(|_| format!("{s:?} is not UTF-8"))
}

/// Refuses parameters a route does not know, so a typo is an error, not a default.
fn only(params: &HashMap<String, String>, known: &[&str]) -> Result<(), String> {
    match params.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "unknown parameter {k:?}; this route takes {}",
            known.join(", ")
        )),
        None => Ok(()),
    }
}

/// The `seconds` of a profile request: Go's default is 30.
pub fn profile_seconds(params: &HashMap<String, String>) -> Result<u64, String> {
    only(params, &["seconds"])?;
    match params.get("seconds") {
        None => Ok(30),
        Some(v) => match v.parse::<u64>() {
            Ok(s) if (1..=MAX_PROFILE_SECONDS).contains(&s) => Ok(s),
            _ => Err(format!(
                "seconds={v:?}: give a whole number of seconds from 1 to {MAX_PROFILE_SECONDS}"
            )),
        },
    }
}

/// The store filter of a flame graph request.
pub fn flamegraph_filter(
    params: &HashMap<String, String>,
    now: SystemTime,
) -> Result<Filter, String> {
    only(params, &["since", "comm", "pid"])?;
    let since = match params.get("since") {
        None => Duration::from_secs(15 * 60),
        Some(v) => humantime::parse_duration(v)
            .map_err(|e| format!("since={v:?}: {e} (write e.g. 15m, 2h)"))?,
    };
    let pid = match params.get("pid") {
        None => None,
        Some(v) => Some(
            v.parse::<u32>()
                .map_err(|_| format!("pid={v:?} is not a process id"))?,
        ),
    };
    Ok(Filter {
        from: Some(now.checked_sub(since).unwrap_or(SystemTime::UNIX_EPOCH)),
        to: None,
        pid,
        comm: params.get("comm").cloned(),
    })
}

/// A profile request's place among the [`MAX_PROFILES`], freed when it is answered.
struct ProfileSlot(Arc<AtomicUsize>);

impl ProfileSlot {
    fn take(count: &Arc<AtomicUsize>) -> Option<ProfileSlot> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_PROFILES).then_some(n + 1)
            })
            .ok()
            .map(|_| ProfileSlot(Arc::clone(count)))
    }
}

impl Drop for ProfileSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn handle(
    request: &Request,
    metrics: &Arc<Metrics>,
    store: &std::path::Path,
    asks: &mpsc::Sender<Ask>,
    profiles: &Arc<AtomicUsize>,
) -> Response {
    let params = match parse_query(&request.query) {
        Ok(p) => p,
        Err(e) => return text(400, e + "\n"),
    };
    if request.method != "GET" {
        return text(405, "only GET\n").with("Allow", "GET");
    }
    match request.path.as_str() {
        "/healthz" => text(200, "ok\n"),
        "/metrics" => Response {
            status: 200,
            headers: vec![(
                "Content-Type",
                "text/plain; version=0.0.4; charset=utf-8".into(),
            )],
            body: metrics.render().into_bytes(),
        },
        "/flamegraph.svg" => {
            let filter = match flamegraph_filter(&params, SystemTime::now()) {
                Ok(f) => f,
                Err(e) => return text(400, e + "\n"),
            };
            let svg = merge::load(store, &filter).and_then(|(p, skipped)| {
                metrics.note_corrupt_windows(&skipped);
                let mut out = Vec::new();
                flamegraphs::svg::write(&p, &Default::default(), false, &mut out)?;
                Ok(out)
            });
            match svg {
                Ok(bytes) => Response {
                    status: 200,
                    headers: vec![("Content-Type", "image/svg+xml".into())],
                    body: bytes,
                },
                Err(e) => text(500, format!("{e:#}\n")),
            }
        }
        "/debug/pprof/profile" => {
            let seconds = match profile_seconds(&params) {
                Ok(s) => s,
                Err(e) => return text(400, e + "\n"),
            };
            let Some(_slot) = ProfileSlot::take(profiles) else {
                return text(
                    429,
                    format!("{MAX_PROFILES} profiles are being taken already; retry later\n"),
                )
                .with("Retry-After", seconds.to_string());
            };
            let (reply, answer) = mpsc::channel();
            if asks.send(Ask::Profile { seconds, reply }).is_err() {
                return text(503, "the profiler is stopping\n");
            }
            // This connection's own thread waits; /metrics and /healthz have theirs.
            match answer.recv_timeout(Duration::from_secs(seconds + 60)) {
                Ok(Ok(bytes)) => Response {
                    status: 200,
                    headers: vec![
                        ("Content-Type", "application/octet-stream".into()),
                        (
                            "Content-Disposition",
                            "attachment; filename=\"profile\"".into(),
                        ),
                    ],
                    body: bytes,
                },
                Ok(Err(e)) => text(500, format!("{e}\n")),
                Err(_) => text(503, "the profiler is stopping\n"),
            }
        }
        _ => text(
            404,
            "routes: /debug/pprof/profile, /flamegraph.svg, /metrics, /healthz\n",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> HashMap<String, String> {
        parse_query(s).unwrap()
    }

    #[test]
    fn query_strings_decode() {
        let p = q("comm=my+app&pid=12&x=%2Ftmp");
        assert_eq!(p["comm"], "my app");
        assert_eq!(p["x"], "/tmp");
        assert!(parse_query("a=%zz").is_err());
        assert!(parse_query("a=%4").is_err());
    }

    #[test]
    fn profile_seconds_are_checked() {
        assert_eq!(profile_seconds(&q("")), Ok(30));
        assert_eq!(profile_seconds(&q("seconds=5")), Ok(5));
        for bad in [
            "seconds=abc",
            "seconds=0",
            "seconds=-1",
            "seconds=99999",
            "seconds=301",
            "secs=5",
        ] {
            assert!(profile_seconds(&q(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn flamegraph_filters_are_checked() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100_000);
        let f = flamegraph_filter(&q("since=1h&comm=nginx&pid=7"), now).unwrap();
        assert_eq!(f.from, Some(now - Duration::from_secs(3600)));
        assert_eq!((f.pid, f.comm.as_deref()), (Some(7), Some("nginx")));
        assert!(flamegraph_filter(&q("since=soon"), now).is_err());
        assert!(flamegraph_filter(&q("pid=x"), now).is_err());
        assert!(flamegraph_filter(&q("path=/etc/passwd"), now).is_err());
    }

    #[test]
    fn profiles_beyond_the_limit_get_429_with_retry_after() {
        use std::io::{Read, Write};
        let (tx, asks) = mpsc::channel::<Ask>();
        let dir = tempfile::tempdir().unwrap();
        let addr = serve(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(Metrics::default()),
            dir.path().to_path_buf(),
            tx,
        )
        .unwrap();
        let get = |path: &str| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            s
        };
        // MAX_PROFILES requests that the (idle) sampling loop holds open
        let held: Vec<_> = (0..MAX_PROFILES)
            .map(|_| get("/debug/pprof/profile?seconds=5"))
            .collect();
        let mut taken = Vec::new();
        for _ in 0..MAX_PROFILES {
            taken.push(asks.recv_timeout(Duration::from_secs(5)).unwrap());
        }
        let mut s = get("/debug/pprof/profile?seconds=7");
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 429"), "{out}");
        assert!(out.contains("Retry-After: 7"), "{out}");
        // answering one frees its place
        let Ask::Profile { reply, .. } = taken.remove(0);
        reply.send(Ok(b"pprof".to_vec())).unwrap();
        drop(held);
        std::thread::sleep(Duration::from_millis(200));
        let _again = get("/debug/pprof/profile?seconds=5");
        assert!(asks.recv_timeout(Duration::from_secs(5)).is_ok());
    }
}
