//! The continuous daemon's HTTP endpoint (tiny_http: a small, synchronous server
//! is all four routes need). Routes follow the conventions fleet profilers scrape:
//! - `GET /debug/pprof/profile?seconds=N`: Go's net/http/pprof, a gzipped pprof of
//!   the next N seconds, so `go tool pprof`, Parca and Pyroscope work unchanged;
//! - `GET /flamegraph.svg?since=15m&comm=NAME&pid=PID`: from the store;
//! - `GET /metrics`: Prometheus text; `GET /healthz`.
//!
//! Nothing in a request names a file: the store is the one given at startup.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Result};
use tiny_http::{Header, Method, Response, Server};

use super::merge::{self, Filter};
use super::metrics::Metrics;

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
    let server = Server::http(addr).map_err(|e| anyhow!("cannot listen on {addr}: {e}"))?;
    let bound = server.server_addr().to_ip().unwrap_or(addr);
    std::thread::Builder::new()
        .name("flamebpf-http".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                handle(request, &metrics, &store, &asks);
            }
        })?;
    Ok(bound)
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("a valid header")
}

fn text(status: u16, body: impl Into<String>) -> Response<std::io::Cursor<Vec<u8>>> {
    Response::from_string(body.into())
        .with_status_code(status)
        .with_header(header("Content-Type", "text/plain; charset=utf-8"))
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
            Ok(s) if (1..=3600).contains(&s) => Ok(s),
            _ => Err(format!(
                "seconds={v:?}: give a whole number of seconds from 1 to 3600"
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

fn handle(
    request: tiny_http::Request,
    metrics: &Arc<Metrics>,
    store: &std::path::Path,
    asks: &mpsc::Sender<Ask>,
) {
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let params = match parse_query(query) {
        Ok(p) => p,
        Err(e) => return drop(request.respond(text(400, e + "\n"))),
    };
    if *request.method() != Method::Get {
        return drop(request.respond(text(405, "only GET\n")));
    }
    match path {
        "/healthz" => drop(request.respond(text(200, "ok\n"))),
        "/metrics" => {
            let r = Response::from_string(metrics.render()).with_header(header(
                "Content-Type",
                "text/plain; version=0.0.4; charset=utf-8",
            ));
            drop(request.respond(r));
        }
        "/flamegraph.svg" => {
            let filter = match flamegraph_filter(&params, SystemTime::now()) {
                Ok(f) => f,
                Err(e) => return drop(request.respond(text(400, e + "\n"))),
            };
            let svg = merge::load(store, &filter).and_then(|p| {
                let mut out = Vec::new();
                flamegraphs::svg::write(&p, &Default::default(), false, &mut out)?;
                Ok(out)
            });
            let r = match svg {
                Ok(bytes) => {
                    Response::from_data(bytes).with_header(header("Content-Type", "image/svg+xml"))
                }
                Err(e) => {
                    Response::from_data(format!("{e:#}\n").into_bytes()).with_status_code(500)
                }
            };
            drop(request.respond(r));
        }
        "/debug/pprof/profile" => {
            let seconds = match profile_seconds(&params) {
                Ok(s) => s,
                Err(e) => return drop(request.respond(text(400, e + "\n"))),
            };
            let (reply, answer) = mpsc::channel();
            if asks.send(Ask::Profile { seconds, reply }).is_err() {
                return drop(request.respond(text(503, "the profiler is stopping\n")));
            }
            // The answer takes `seconds`: wait on a thread of its own so /metrics
            // and /healthz stay responsive meanwhile.
            std::thread::spawn(move || {
                let r = match answer.recv_timeout(Duration::from_secs(seconds + 60)) {
                    Ok(Ok(bytes)) => Response::from_data(bytes)
                        .with_header(header("Content-Type", "application/octet-stream"))
                        .with_header(header(
                            "Content-Disposition",
                            "attachment; filename=\"profile\"",
                        )),
                    Ok(Err(e)) => {
                        Response::from_data(format!("{e}\n").into_bytes()).with_status_code(500)
                    }
                    Err(_) => Response::from_data(b"the profiler is stopping\n".to_vec())
                        .with_status_code(503),
                };
                drop(request.respond(r));
            });
        }
        _ => drop(request.respond(text(
            404,
            "routes: /debug/pprof/profile, /flamegraph.svg, /metrics, /healthz\n",
        ))),
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
}
