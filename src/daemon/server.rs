//! The HTTP/1.1 server under the daemon's endpoint, made for a root process that
//! any local user (and every scraper) can reach: each limit below is what keeps
//! one client from taking the daemon down or its memory up.
//!
//! - the request head (request line and headers) is read within
//!   [`Limits::head_timeout`] in all, not per read, so a client sending a byte at
//!   a time is cut off too; it is at most [`Limits::max_head_bytes`] (431 beyond);
//! - a body is never read: every route is a GET, so `Content-Length` is ignored
//!   and the connection is closed after the answer;
//! - at most [`Limits::max_connections`] connections are served at once, one
//!   thread each; more are answered 503 and closed at once by the accepting thread;
//! - an answer is written within [`Limits::write_timeout`].
//!
//! httparse (hyper's own parser) reads the head; the connection handling is ours,
//! small enough to hold every limit in view. hyper with tokio would bring the same
//! limits for a few minutes more of compilation on a 2-core builder and a runtime
//! this one-route-at-a-time daemon does not need.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

/// The bounds the server holds to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// The whole request head must arrive within this.
    pub head_timeout: Duration,
    /// The request line and headers together, in bytes.
    pub max_head_bytes: usize,
    /// Writing one answer.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 64,
            head_timeout: Duration::from_secs(5),
            max_head_bytes: 16 << 10,
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// What a route sees of a request.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, …
    pub method: String,
    /// The path, before any `?`.
    pub path: String,
    /// What follows the `?`, undecoded.
    pub query: String,
}

/// What a route answers.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Headers besides Content-Length and Connection.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A plain text answer.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", "text/plain; charset=utf-8".into())],
            body: body.into().into_bytes(),
        }
    }

    /// Adds a header.
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }
}

/// Serves `handler` on `addr` with `limits` from a thread of its own; returns the
/// address bound.
pub fn spawn<H>(addr: SocketAddr, limits: Limits, handler: H) -> Result<SocketAddr>
where
    H: Fn(&Request) -> Response + Send + Sync + 'static,
{
    let listener = TcpListener::bind(addr).map_err(|e| anyhow!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let handler = Arc::new(handler);
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("flamebpf-http".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if active.load(Ordering::Acquire) >= limits.max_connections {
                    // Answered here, briefly: the point is not to spend a thread.
                    let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
                    let _ = respond(
                        &stream,
                        &Response::text(503, "too many connections\n").with("Retry-After", "1"),
                    );
                    continue;
                }
                active.fetch_add(1, Ordering::AcqRel);
                let guard = Slot(Arc::clone(&active));
                let handler = Arc::clone(&handler);
                let spawned = std::thread::Builder::new()
                    .name("flamebpf-http-conn".into())
                    .spawn(move || {
                        let _guard = guard;
                        serve_one(stream, &limits, &*handler);
                    });
                // Out of threads: the connection is dropped and its slot freed.
                drop(spawned);
            }
        })?;
    Ok(bound)
}

/// Frees a connection slot however its thread ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn serve_one(stream: TcpStream, limits: &Limits, handler: &dyn Fn(&Request) -> Response) {
    let _ = stream.set_write_timeout(Some(limits.write_timeout));
    let answer = match read_head(&stream, limits) {
        Ok(request) => handler(&request),
        Err(Refusal::Gone) => return,
        Err(Refusal::Answer(r)) => r,
    };
    let _ = respond(&stream, &answer);
}

enum Refusal {
    /// The client went away or stopped sending: nothing to answer.
    Gone,
    /// A malformed or oversized request.
    Answer(Response),
}

fn read_head(mut stream: &TcpStream, limits: &Limits) -> Result<Request, Refusal> {
    let deadline = Instant::now() + limits.head_timeout;
    let mut buf = vec![0u8; limits.max_head_bytes];
    let mut len = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Refusal::Answer(Response::text(
                408,
                "the request head took too long\n",
            )));
        }
        if stream.set_read_timeout(Some(left)).is_err() {
            return Err(Refusal::Gone);
        }
        let n = match stream.read(&mut buf[len..]) {
            Ok(0) => return Err(Refusal::Gone),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue; // the deadline check answers it
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(Refusal::Gone),
        };
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                let target = req.path.unwrap_or("/");
                let (path, query) = target.split_once('?').unwrap_or((target, ""));
                return Ok(Request {
                    method: req.method.unwrap_or("").to_string(),
                    path: path.to_string(),
                    query: query.to_string(),
                });
            }
            Ok(httparse::Status::Partial) if len == buf.len() => {
                return Err(Refusal::Answer(Response::text(
                    431,
                    format!(
                        "the request line and headers are over {} bytes\n",
                        limits.max_head_bytes
                    ),
                )));
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Refusal::Answer(Response::text(
                    431,
                    "more than 64 headers\n",
                )))
            }
            Err(e) => {
                return Err(Refusal::Answer(Response::text(
                    400,
                    format!("malformed request: {e}\n"),
                )))
            }
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

fn respond(mut stream: &TcpStream, r: &Response) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", r.status, reason(r.status));
    for (name, value) in &r.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        r.body.len()
    ));
    stream.write_all(head.as_bytes())?;
    stream.write_all(&r.body)?;
    stream.flush()?;
    // Unread request bytes (an ignored body) would turn close into a reset that can
    // cut the answer short: say we are done, then let the client close.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(limits: Limits) -> SocketAddr {
        spawn("127.0.0.1:0".parse().unwrap(), limits, |r: &Request| {
            Response::text(200, format!("{} {}?{}\n", r.method, r.path, r.query))
        })
        .unwrap()
    }

    fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(request);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn a_huge_content_length_is_never_read_or_allocated() {
        let addr = start(Limits::default());
        let r = exchange(
            addr,
            b"GET /healthz?a=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999\r\n\r\n",
        );
        assert!(
            r.starts_with("HTTP/1.1 200") && r.ends_with("GET /healthz?a=1\n"),
            "{r}"
        );
        let r = exchange(addr, b"GET /again HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200"), "still serving: {r}");
    }

    #[test]
    fn oversized_heads_are_refused() {
        let addr = start(Limits::default());
        let mut long = b"GET /".to_vec();
        long.extend(std::iter::repeat_n(b'a', 1 << 20));
        long.extend(b" HTTP/1.1\r\n\r\n");
        let r = exchange(addr, &long);
        assert!(r.starts_with("HTTP/1.1 431"), "{}", &r[..r.len().min(200)]);
        let r = exchange(addr, b"NOT HTTP AT ALL\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    }

    #[test]
    fn slow_heads_are_cut_off_and_connections_are_bounded() {
        let limits = Limits {
            max_connections: 4,
            head_timeout: Duration::from_millis(700),
            ..Limits::default()
        };
        let addr = start(limits);
        // Four clients that send half a head and stop, one byte at a time.
        let idle: Vec<TcpStream> = (0..4)
            .map(|_| {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(b"GET / HTTP/1.1\r\nX: ").unwrap();
                s
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        let r = exchange(addr, b"GET / HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 503"), "a fifth is turned away: {r}");
        assert!(t.elapsed() < Duration::from_secs(2));
        // The stalled ones are answered 408 by their deadline and their slots freed.
        for mut s in idle {
            let _ = s.write_all(b"y");
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            assert!(out.starts_with("HTTP/1.1 408"), "{out}");
        }
        std::thread::sleep(Duration::from_millis(100));
        let r = exchange(addr, b"GET /after HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }
}
