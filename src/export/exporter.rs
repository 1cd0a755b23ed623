//! One backend's thread: sends the windows waiting in the store, oldest first,
//! one at a time; a window not acknowledged is retried, with exponential backoff,
//! before any later one, so the backend gets them in order and each once.
//!
//! The thread notices new windows by watching the writer's count of windows
//! written (no hook in the writer: the store is the only thing they share), and
//! never holds anything the sampling loop, the writer or the endpoint waits on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cursor::key;
use super::endpoint::{Endpoint, Protocol};
use super::queue::Queue;
use super::stats::BackendStats;
use super::transport::{Outcome, Payload, Sender};
use super::{otlp, pyroscope};
use crate::daemon::metrics::Metrics;
use crate::daemon::store::WindowFile;

/// The first wait after a failure; doubled after each one.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// For tests only: caps the backoff at this many milliseconds, so an outage test
/// sees the backend come back within a window or two.
pub const TEST_MAX_BACKOFF_VAR: &str = "FLAMEBPF_TEST_EXPORT_MAX_BACKOFF_MS";
/// With nothing waiting, the store is listed again at least this often.
const IDLE_RELIST: Duration = Duration::from_secs(2);
/// Windows deleted unsent are warned about at most this often.
const DROP_WARNING_EVERY: Duration = Duration::from_secs(60);
/// How often waits look at the stop flag and the count of windows written.
const POLL: Duration = Duration::from_millis(50);

/// A backend's thread state.
pub struct Exporter {
    /// The backend.
    pub endpoint: Endpoint,
    /// Its connection.
    pub sender: Sender,
    /// The windows it has not acknowledged.
    pub queue: Queue,
    /// Its counters.
    pub stats: Arc<BackendStats>,
    /// The daemon's counters: windows written tell that one more is waiting.
    pub metrics: Arc<Metrics>,
    /// Set when the daemon has written its last window.
    pub stop: Arc<AtomicBool>,
    /// Once stopping, how long it may go on sending what is left.
    pub grace: Duration,
    /// The service the windows are exported under.
    pub service_name: String,
    /// One attempt's limit.
    pub timeout: Duration,
    /// The backoff's cap.
    pub max_backoff: Duration,
    /// Windows deleted unsent since the last warning about it.
    pub unwarned_drops: u64,
    /// When that warning was given.
    pub last_drop_warning: Option<Instant>,
}

impl Exporter {
    /// Runs until stopped; once stopped, sends what is left while the backend
    /// answers and the grace lasts (the rest goes after the next start).
    pub fn run(mut self) {
        let mut backoff: Option<Duration> = None;
        let mut finish_by: Option<Instant> = None;
        loop {
            if finish_by.is_none() && self.stop.load(Ordering::Acquire) {
                finish_by = Some(Instant::now() + self.grace);
            }
            let pending = match self.look() {
                Ok(p) => p,
                Err(e) => {
                    self.stats.error(&format!("listing the store: {e:#}"));
                    if finish_by.is_some() || !self.pause(IDLE_RELIST) {
                        break;
                    }
                    continue;
                }
            };
            let Some(window) = pending.into_iter().next() else {
                if finish_by.is_some() {
                    break;
                }
                self.wait_for_window();
                continue;
            };
            let remaining = finish_by.map(|t| t.saturating_duration_since(Instant::now()));
            if remaining.is_some_and(|r| r.is_zero() || backoff.is_some()) {
                // down at the end: what is left waits in the store for the next start
                break;
            }
            let payload = match std::fs::read(&window.path) {
                Ok(bytes) => self.payload(bytes, &window),
                // deleted by retention meanwhile: the next listing counts it
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => Err(format!("reading {}: {e}", window.path.display())),
            };
            let payload = match payload {
                Ok(p) => p,
                Err(why) => {
                    self.give_up(&window, &why);
                    continue;
                }
            };
            let bytes = payload.len() as u64;
            let deadline = remaining.map_or(self.timeout, |r| r.min(self.timeout));
            match self.sender.send(payload, deadline) {
                Outcome::Acked(note) => {
                    self.done(&window);
                    self.stats.windows.fetch_add(1, Ordering::Relaxed);
                    self.stats.bytes.fetch_add(bytes, Ordering::Relaxed);
                    if let Some(note) = note {
                        self.stats.error(&note);
                        self.warn(&note);
                    }
                    if backoff.take().is_some() {
                        self.warn("the backend answers again");
                    }
                }
                Outcome::Rejected(why) => self.give_up(&window, &why),
                Outcome::Retry(why) => {
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    self.stats.error(&why);
                    if backoff.is_none() {
                        // once per outage, not once per attempt
                        self.warn(&format!("{why}; retrying with backoff"));
                    }
                    let next = backoff.map_or(FIRST_BACKOFF, |b| (b * 2).min(self.max_backoff));
                    backoff = Some(next.min(self.max_backoff));
                    if finish_by.is_some() || !self.pause(jitter(next.min(self.max_backoff))) {
                        break;
                    }
                }
            }
        }
        // what is left for the next start, counted after the last window was written
        let _ = self.look();
    }

    /// Lists the windows waiting, counting those retention deleted unsent.
    fn look(&mut self) -> anyhow::Result<Vec<WindowFile>> {
        let listing = self.queue.list()?;
        if listing.dropped > 0 {
            self.stats
                .dropped_unsent
                .fetch_add(listing.dropped, Ordering::Relaxed);
            self.unwarned_drops += listing.dropped;
            // a long outage against a small --max-disk drops a window per window
            // written: a line a minute says it
            if self
                .last_drop_warning
                .is_none_or(|t| t.elapsed() >= DROP_WARNING_EVERY)
            {
                self.warn(&format!(
                    "{} windows deleted before they were sent (--max-disk or --retain)",
                    self.unwarned_drops
                ));
                self.unwarned_drops = 0;
                self.last_drop_warning = Some(Instant::now());
            }
        }
        self.stats
            .pending
            .store(listing.pending.len() as u64, Ordering::Relaxed);
        Ok(listing.pending)
    }

    /// What is sent for a window.
    fn payload(&self, bytes: Vec<u8>, window: &WindowFile) -> Result<Payload, String> {
        match self.endpoint.protocol {
            Protocol::OtlpGrpc | Protocol::OtlpHttp => {
                let p = otlp::read_pprof(&bytes)
                    .map_err(|e| format!("{}: {e}", window.path.display()))?;
                Ok(Payload::Otlp(otlp::request(&p, &self.service_name)?))
            }
            Protocol::Pyroscope => {
                let id = window
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                Ok(Payload::Push(pyroscope::request(
                    bytes,
                    &self.service_name,
                    id,
                )))
            }
        }
    }

    /// A window that will never be accepted: counted, and passed over so that
    /// the ones after it go.
    fn give_up(&mut self, window: &WindowFile, why: &str) {
        self.stats.dropped_rejected.fetch_add(1, Ordering::Relaxed);
        self.stats.error(why);
        self.warn(&format!(
            "{} not exported: {why}",
            window
                .path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        ));
        self.done(window);
    }

    fn done(&mut self, window: &WindowFile) {
        let _ = self
            .stats
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                Some(p.saturating_sub(1))
            });
        if let Err(e) = self.queue.done(key(window)) {
            self.stats.error(&format!("{e:#}"));
            self.warn(&format!("{e:#}"));
        }
    }

    fn warn(&self, what: &str) {
        eprintln!("flamebpf: export to {}: {what}", self.endpoint.shown);
    }

    /// Sleeps `d`; false when stopped meanwhile.
    /// Meanwhile, each window written is listed at once: one that retention
    /// deletes before the backend is back is then seen, and counted.
    fn pause(&mut self, d: Duration) -> bool {
        let until = Instant::now() + d;
        let mut written = self.metrics.windows_written.load(Ordering::Relaxed);
        while Instant::now() < until {
            if self.stop.load(Ordering::Acquire) {
                return false;
            }
            let now_written = self.metrics.windows_written.load(Ordering::Relaxed);
            if now_written != written {
                written = now_written;
                let _ = self.look();
            }
            std::thread::sleep(POLL.min(until.saturating_duration_since(Instant::now())));
        }
        true
    }

    /// Waits for the writer to write a window (or a stop, or a while).
    fn wait_for_window(&self) {
        let written = || self.metrics.windows_written.load(Ordering::Relaxed);
        let before = written();
        let until = Instant::now() + IDLE_RELIST;
        while Instant::now() < until && written() == before && !self.stop.load(Ordering::Acquire) {
            std::thread::sleep(POLL);
        }
    }
}

/// Up to a fifth more or less, so daemons that lost the same backend together
/// do not all come back in the same instant.
fn jitter(d: Duration) -> Duration {
    let noise = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    let fifth = d / 5;
    let span = fifth.as_nanos().max(1) as u64 * 2;
    (d - fifth) + Duration::from_nanos(u64::from(noise) % span)
}

/// The backoff's cap: [`MAX_BACKOFF`], or the test's.
pub fn max_backoff() -> Duration {
    std::env::var(TEST_MAX_BACKOFF_VAR)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(MAX_BACKOFF, |ms| {
            Duration::from_millis(ms.clamp(10, 30_000))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_a_fifth() {
        for ms in [10u64, 500, 30_000] {
            let d = Duration::from_millis(ms);
            let j = jitter(d);
            assert!(j >= d * 4 / 5 && j <= d * 6 / 5, "{j:?} for {d:?}");
        }
    }
}
