//! What the symbolization thread does for the daemon: names a window, encodes it
//! as pprof, writes it to the store atomically and applies retention; names and
//! encodes the answer to a /debug/pprof/profile request.
//!
//! These run as jobs on [`crate::symbolize::Worker`]'s thread, in the order the
//! sampling thread queued them (so windows are written in order). The sampling
//! thread only locates each window's addresses ([`Located`], milliseconds) before
//! it queues the job, and goes back to draining the maps and reading the tracking
//! rings however long the naming takes.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime};

use flamegraphs::{Meta, Profile};
use symbolizer::Symbolizer;

use super::metrics::Metrics;
use super::{store, StoreConfig};
use crate::symbolize::{self, Located};

/// Objects whose symbols stay cached between windows.
const MAX_CACHED_OBJECTS: usize = 64;

/// For tests only: milliseconds the symbolization thread sleeps before it names
/// each window, standing for a slow symbolization (a cold, large binary), so a
/// test can show that the sampling thread goes on meanwhile. Read once, at start;
/// at most 60 s.
pub const TEST_DELAY_VAR: &str = "FLAMEBPF_TEST_SYMBOLIZE_DELAY_MS";

/// A window, located, waiting to be named and written.
pub struct Window {
    /// Its samples, their addresses located.
    pub located: Located,
    /// When it began.
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
    /// Paths of the objects the tracker let go of right after this window was
    /// located: their cached names are dropped once it is named.
    pub released: Vec<PathBuf>,
}

/// Where a request's answer goes.
pub type Reply = mpsc::Sender<Result<Vec<u8>, String>>;

/// The daemon's settings the jobs need, shared by all of them.
pub struct Writer {
    metrics: Arc<Metrics>,
    meta: Meta,
    store: StoreConfig,
    verbose: bool,
    /// See [`TEST_DELAY_VAR`]; zero outside tests.
    delay: Duration,
}

impl Writer {
    /// The writer of a daemon; reads [`TEST_DELAY_VAR`].
    pub fn new(metrics: Arc<Metrics>, meta: Meta, store: StoreConfig, verbose: bool) -> Writer {
        let delay = std::env::var(TEST_DELAY_VAR)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            // a careless value must not park the daemon's writes for good
            .map_or(Duration::ZERO, |ms| Duration::from_millis(ms.min(60_000)));
        Writer {
            metrics,
            meta,
            store,
            verbose,
            delay,
        }
    }

    fn profile(
        &self,
        symbolizer: &Symbolizer,
        located: &Located,
        start: SystemTime,
        end: SystemTime,
    ) -> Profile {
        let meta = Meta {
            start,
            duration: end.duration_since(start).unwrap_or(Duration::ZERO),
            ..self.meta.clone()
        };
        let (profile, stats) = symbolize::name(located, symbolizer, meta);
        self.metrics
            .symbolization_failures
            .fetch_add(stats.object_failures.len() as u64, Ordering::Relaxed);
        profile
    }

    /// Names and writes a window, then applies retention and trims the caches.
    pub fn window(&self, symbolizer: &mut Symbolizer, w: Window) {
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        let profile = self.profile(symbolizer, &w.located, w.start, w.end);
        let mut bytes = Vec::new();
        let written = flamegraphs::pprof::write(&profile, &mut bytes)
            .map_err(anyhow::Error::from)
            .and_then(|()| {
                // recreated 0700 if it went away meanwhile
                store::prepare(&self.store.dir)?;
                store::write(&self.store.dir, w.start, w.end, &bytes)
            });
        match written {
            Ok(path) => {
                self.metrics.windows_written.fetch_add(1, Ordering::Relaxed);
                if self.verbose {
                    eprintln!(
                        "flamebpf: wrote {} ({} samples, {} bytes)",
                        path.display(),
                        profile.total_samples(),
                        bytes.len()
                    );
                }
            }
            Err(e) => {
                // once per window, as the store may come back (disk freed, remounted)
                self.metrics.window_failures.fetch_add(1, Ordering::Relaxed);
                eprintln!("flamebpf: window not written: {e:#}");
            }
        }
        if let Ok(bytes) = store::enforce(
            &self.store.dir,
            w.end,
            self.store.retain,
            self.store.max_disk,
        ) {
            self.metrics.store_bytes.store(bytes, Ordering::Relaxed);
        }
        for path in &w.released {
            symbolizer.evict(path);
        }
        // the window's clones of its objects close their files here
        drop(w);
        symbolizer.next_round(MAX_CACHED_OBJECTS);
        self.metrics
            .cached_objects
            .store(symbolizer.cached_objects() as u64, Ordering::Relaxed);
        self.metrics
            .cached_offsets
            .store(symbolizer.cached_offsets() as u64, Ordering::Relaxed);
        symbolizer.release_parsed();
        crate::memory::give_back();
        self.metrics.windows_pending.fetch_sub(1, Ordering::Relaxed);
    }

    /// Names and encodes the samples of a request and sends them to whoever asked.
    pub fn answer(
        &self,
        symbolizer: &mut Symbolizer,
        located: Located,
        start: SystemTime,
        end: SystemTime,
        reply: Reply,
    ) {
        let profile = self.profile(symbolizer, &located, start, end);
        let mut bytes = Vec::new();
        let result = flamegraphs::pprof::write(&profile, &mut bytes)
            .map(|()| bytes)
            .map_err(|e| e.to_string());
        // the asker may have given up (its connection timed out)
        let _ = reply.send(result);
        // as after a window: a scraper pulling every 15 s would otherwise keep
        // every object it made us parse until the next window's end (a soak
        // with 60 s windows swung between 80 and 220 MiB)
        symbolizer.release_parsed();
        crate::memory::give_back();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::RawProfile;
    use symbolizer::symbolize::Options;
    use symbolizer::Tracker;

    fn writer(dir: &std::path::Path) -> (Writer, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
        let store = StoreConfig {
            dir: dir.to_path_buf(),
            retain: Duration::from_secs(3600),
            max_disk: 1 << 30,
            window: Duration::from_secs(1),
        };
        let w = Writer::new(Arc::clone(&metrics), Meta::default(), store, false);
        (w, metrics)
    }

    fn window(start: SystemTime) -> Window {
        Window {
            located: Located::new(RawProfile::default(), &Tracker::new()),
            start,
            end: start + Duration::from_secs(1),
            released: vec![PathBuf::from("/no/such/object")],
        }
    }

    #[test]
    fn a_window_is_written_counted_and_no_longer_pending() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let (w, metrics) = writer(&store);
        let mut symbolizer = Symbolizer::new(Options::default());
        let start = SystemTime::now();
        metrics.windows_pending.store(1, Ordering::Relaxed);
        w.window(&mut symbolizer, window(start));
        let written = store::list(&store).unwrap();
        assert_eq!(written.len(), 1);
        assert_eq!(metrics.windows_written.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.windows_pending.load(Ordering::Relaxed), 0);
        assert_eq!(
            metrics.store_bytes.load(Ordering::Relaxed),
            written[0].bytes
        );
    }

    #[test]
    fn a_window_that_cannot_be_written_is_counted_as_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        std::fs::write(&store, "in the way").unwrap();
        let (w, metrics) = writer(&store);
        let mut symbolizer = Symbolizer::new(Options::default());
        metrics.windows_pending.store(1, Ordering::Relaxed);
        w.window(&mut symbolizer, window(SystemTime::now()));
        assert_eq!(metrics.window_failures.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.windows_written.load(Ordering::Relaxed), 0);
        assert_eq!(metrics.windows_pending.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn an_answer_is_a_gzipped_pprof_sent_to_the_asker() {
        let dir = tempfile::tempdir().unwrap();
        let (w, _) = writer(dir.path());
        let mut symbolizer = Symbolizer::new(Options::default());
        let (tx, rx) = mpsc::channel();
        let start = SystemTime::now();
        let located = Located::new(RawProfile::default(), &Tracker::new());
        w.answer(
            &mut symbolizer,
            located,
            start,
            start + Duration::from_secs(2),
            tx,
        );
        let bytes = rx.recv().unwrap().unwrap();
        assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip");
    }
}
