//! Debug files fetched by build id from debuginfod servers (elfutils' protocol:
//! `GET URL/buildid/<hex>/debuginfo`), for objects whose own file has no symbols.
//!
//! Fetches run on a thread of their own, one at a time, so naming never waits
//! on the network unless its caller gives it a budget: the continuous daemon
//! gives none (a sample named before the file arrives stays `object+0x…`, later
//! windows get the names), `record` and `query` a few seconds in all. Every
//! fetch is bounded: connect and overall timeouts, a body size cap, a validated
//! build id, and a negative cache so a server that answered 404 or failed is not
//! asked again for a while. Files land in a [`Cache`] with a size cap.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

mod cache;

pub use cache::{hex, Cache, NEGATIVE_TTL};

/// The settings of a client.
#[derive(Debug, Clone)]
pub struct Config {
    /// Server base URLs, asked in order.
    pub urls: Vec<String>,
    /// Where files are kept.
    pub cache_dir: PathBuf,
    /// The cache's size cap.
    pub cache_bytes: u64,
    /// The largest debug file fetched.
    pub max_file: u64,
    /// Connecting to a server.
    pub connect_timeout: Duration,
    /// One whole request, body included.
    pub request_timeout: Duration,
    /// How long, in all, [`Debuginfod::debug_file`] may wait for fetches.
    pub wait_budget: Duration,
}

impl Config {
    /// Defaults for `urls` and `cache_dir`: 2 GiB of cache, files up to 1 GiB,
    /// 3 s to connect, 120 s per file, no waiting.
    pub fn new(urls: Vec<String>, cache_dir: PathBuf) -> Config {
        Config {
            urls,
            cache_dir,
            cache_bytes: 2 << 30,
            max_file: 1 << 30,
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(120),
            wait_budget: Duration::ZERO,
        }
    }
}

/// The servers of `DEBUGINFOD_URLS`: space-separated, as elfutils, perf and
/// samply read it.
pub fn urls_from_env() -> Vec<String> {
    std::env::var("DEBUGINFOD_URLS")
        .map(|v| v.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Why a server URL is refused.
pub fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("{url}: not an http:// or https:// URL"))?;
    if rest.is_empty()
        || rest.starts_with('/')
        || url.len() > 2048
        || url.contains(char::is_whitespace)
    {
        return Err(format!("{url}: not a server URL"));
    }
    Ok(())
}

#[derive(Default)]
struct State {
    /// Build ids queued or being fetched.
    pending: HashSet<Vec<u8>>,
    /// Time left to wait, in all.
    budget: Duration,
}

/// A debuginfod client: a fetch thread, its queue and the cache. Cheap to share.
pub struct Debuginfod {
    cache: Cache,
    queue: Mutex<mpsc::Sender<Vec<u8>>>,
    state: Arc<(Mutex<State>, Condvar)>,
}

impl std::fmt::Debug for Debuginfod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Debuginfod")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl Debuginfod {
    /// Starts the fetch thread.
    pub fn start(config: Config) -> std::io::Result<Debuginfod> {
        let cache = Cache::new(config.cache_dir.clone(), config.cache_bytes);
        let state = Arc::new((
            Mutex::new(State {
                budget: config.wait_budget,
                ..State::default()
            }),
            Condvar::new(),
        ));
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let fetcher = Fetcher::new(&config, cache.clone());
        let shared = Arc::clone(&state);
        std::thread::Builder::new()
            .name("debuginfod".into())
            .spawn(move || {
                for id in rx {
                    fetcher.fetch(&id);
                    let (lock, done) = &*shared;
                    if let Ok(mut s) = lock.lock() {
                        s.pending.remove(&id);
                    }
                    done.notify_all();
                }
            })?;
        Ok(Debuginfod {
            cache,
            queue: Mutex::new(tx),
            state,
        })
    }

    /// The cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Queues a fetch of `build_id` unless it is cached, known missing, or
    /// queued already.
    pub fn request(&self, build_id: &[u8]) {
        if build_id.is_empty()
            || self.cache.get(build_id).is_some()
            || self.cache.is_missing(build_id)
        {
            return;
        }
        let (lock, _) = &*self.state;
        let Ok(mut s) = lock.lock() else {
            return;
        };
        if s.pending.insert(build_id.to_vec()) {
            let queued = self
                .queue
                .lock()
                .is_ok_and(|q| q.send(build_id.to_vec()).is_ok());
            if !queued {
                s.pending.remove(build_id);
            }
        }
    }

    /// The debug file of `build_id`: from the cache, else fetched in the
    /// background (`None` now), waiting for it only while the budget lasts.
    pub fn debug_file(&self, build_id: &[u8]) -> Option<PathBuf> {
        if build_id.is_empty() {
            return None;
        }
        if let Some(p) = self.cache.get(build_id) {
            return Some(p);
        }
        self.request(build_id);
        let (lock, done) = &*self.state;
        let mut s = lock.lock().ok()?;
        while s.pending.contains(build_id) && !s.budget.is_zero() {
            let started = Instant::now();
            let budget = s.budget;
            let (next, _) = done.wait_timeout(s, budget).ok()?;
            s = next;
            s.budget = s.budget.saturating_sub(started.elapsed());
        }
        drop(s);
        self.cache.get(build_id)
    }
}

/// What the fetch thread holds.
struct Fetcher {
    agent: ureq::Agent,
    urls: Vec<String>,
    cache: Cache,
    max_file: u64,
}

impl Fetcher {
    fn new(config: &Config, cache: Cache) -> Fetcher {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(config.connect_timeout))
            .timeout_global(Some(config.request_timeout))
            .http_status_as_error(false)
            .max_redirects(3)
            .user_agent(concat!("flamebpf/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Fetcher {
            agent,
            urls: config.urls.clone(),
            cache,
            max_file: config.max_file,
        }
    }

    /// Tries each server in turn; remembers a miss when none had it.
    fn fetch(&self, build_id: &[u8]) {
        if self.cache.get(build_id).is_some() {
            return;
        }
        for url in &self.urls {
            if self.fetch_from(url, build_id).is_ok() {
                return;
            }
        }
        let _ = self.cache.set_missing(build_id);
    }

    fn fetch_from(&self, base: &str, build_id: &[u8]) -> Result<PathBuf, String> {
        let url = format!(
            "{}/buildid/{}/debuginfo",
            base.trim_end_matches('/'),
            hex(build_id)
        );
        let response = self.agent.get(&url).call().map_err(|e| e.to_string())?;
        if response.status() != 200 {
            return Err(format!("{url}: HTTP {}", response.status()));
        }
        let mut tmp = self.cache.temp().map_err(|e| e.to_string())?;
        let mut body = response.into_body().into_reader().take(self.max_file + 1);
        let copied = std::io::copy(&mut body, &mut tmp).map_err(|e| e.to_string())?;
        if copied > self.max_file {
            return Err(format!("{url}: larger than {} bytes", self.max_file));
        }
        tmp.flush().map_err(|e| e.to_string())?;
        // what a server sends is only kept if it is the file asked for
        let got = crate::buildid::read_any(tmp.as_file());
        if got.as_deref() != Some(build_id) {
            return Err(format!("{url}: the file's build id does not match"));
        }
        self.cache.store(build_id, tmp).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::path::Path;

    /// A server that answers every request with `response` (after `delay`),
    /// counting requests; its URL.
    fn serve(response: Vec<u8>, delay: Duration) -> (String, Arc<Mutex<u32>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let count = Arc::new(Mutex::new(0));
        let seen = Arc::clone(&count);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                *seen.lock().unwrap() += 1;
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                std::thread::sleep(delay);
                let _ = conn.write_all(&response);
            }
        });
        (url, count)
    }

    fn ok(body: &[u8]) -> Vec<u8> {
        let mut r = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    }

    fn client(url: &str, dir: &Path, wait: Duration) -> Debuginfod {
        let mut config = Config::new(vec![url.to_string()], dir.to_path_buf());
        config.wait_budget = wait;
        config.request_timeout = Duration::from_secs(5);
        config.max_file = 1 << 20;
        Debuginfod::start(config).unwrap()
    }

    fn ls() -> (Vec<u8>, Vec<u8>) {
        let bytes = std::fs::read("/bin/ls").unwrap();
        let id = crate::buildid::read(&std::fs::File::open("/bin/ls").unwrap()).unwrap();
        (bytes, id)
    }

    #[test]
    fn a_file_with_the_build_id_asked_for_is_cached() {
        let (bytes, id) = ls();
        let (url, count) = serve(ok(&bytes), Duration::ZERO);
        let dir = tempfile::tempdir().unwrap();
        let d = client(&url, dir.path(), Duration::from_secs(10));
        let path = d.debug_file(&id).expect("fetched within the budget");
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        assert_eq!(d.debug_file(&id), Some(path), "from the cache");
        assert_eq!(*count.lock().unwrap(), 1);
    }

    #[test]
    fn a_404_a_wrong_file_and_an_oversized_body_are_remembered_as_missing() {
        let (bytes, id) = ls();
        let not_found = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        let mut other = id.clone();
        other[0] ^= 0xff;
        let huge = vec![0u8; (1 << 20) + 10];
        for (response, asked) in [
            (not_found.to_vec(), id.clone()),
            (ok(&bytes), other), // the server sends another build
            (ok(&huge), id.clone()),
        ] {
            let (url, count) = serve(response, Duration::ZERO);
            let dir = tempfile::tempdir().unwrap();
            let d = client(&url, dir.path(), Duration::from_secs(10));
            assert_eq!(d.debug_file(&asked), None);
            assert!(d.cache().is_missing(&asked));
            // the negative entry holds: no second request
            assert_eq!(d.debug_file(&asked), None);
            assert_eq!(*count.lock().unwrap(), 1);
            let leftovers = std::fs::read_dir(dir.path())
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(".fetch-"))
                .count();
            assert_eq!(leftovers, 0, "no partial download is left");
        }
    }

    #[test]
    fn a_stalled_server_costs_at_most_the_wait_budget() {
        let (bytes, id) = ls();
        let (url, _) = serve(ok(&bytes), Duration::from_secs(30));
        let dir = tempfile::tempdir().unwrap();
        let d = client(&url, dir.path(), Duration::from_millis(300));
        let started = Instant::now();
        assert_eq!(d.debug_file(&id), None);
        let mut other = id.clone();
        other[0] ^= 1;
        assert_eq!(d.debug_file(&other), None, "the budget is spent");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        // without a budget nothing waits at all
        let d = client(&url, tempfile::tempdir().unwrap().path(), Duration::ZERO);
        let started = Instant::now();
        assert_eq!(d.debug_file(&id), None);
        assert!(started.elapsed() < Duration::from_millis(100));
    }

    #[test]
    fn urls_are_checked() {
        assert!(check_url("http://127.0.0.1:8002").is_ok());
        assert!(check_url("https://debuginfod.debian.net/").is_ok());
        for bad in [
            "ftp://x",
            "127.0.0.1:8002",
            "http://",
            "http:///x",
            "http://a b",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }
}
