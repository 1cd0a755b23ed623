//! Shipping windows to the fleet's backends (`continuous --export URL`): OTLP
//! profiles over gRPC or HTTP, and Pyroscope's Push API.
//!
//! The local store is the queue. The writer writes a window to the store as
//! before; each backend's thread ([`exporter`]) then reads it from there, turns it
//! into the backend's request ([`otlp`], [`pyroscope`]) and sends it
//! ([`transport`]); only an acknowledgement moves the backend's [`cursor`], a
//! file in the store, so a backend that is down gets every window, in order, when
//! it is back, and a restarted daemon sends what it had not. Retention bounds the
//! backlog: windows deleted unsent are counted ([`queue`], [`stats`]).
//!
//! Nothing here runs on the sampling thread, the symbolization thread or the
//! endpoint's: a stalled backend costs its own thread waiting, bounded by
//! `--export-timeout` per attempt.
//!
//! Settings are checked in full ([`Settings::from_args`]: URLs, TLS files,
//! credentials) before any sampling starts, so a typo is one line and exit 2,
//! not a daemon that runs and sends nothing.

pub mod auth;
pub mod cursor;
pub mod endpoint;
pub mod exporter;
pub mod otlp;
pub mod pyroscope;
pub mod queue;
pub mod service;
pub mod stats;
pub mod tls;
pub mod transport;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Result};

use crate::cli::ExportArgs;
use crate::daemon::metrics::Metrics;
use endpoint::Endpoint;
use stats::BackendStats;

/// How long a stopping daemon goes on sending what is left (to a backend that
/// answers; one that does not is left at once).
const FINISH_GRACE: Duration = Duration::from_secs(5);

/// Everything the exporters need, checked.
#[derive(Debug)]
pub struct Settings {
    /// The backends.
    pub endpoints: Vec<Endpoint>,
    /// Credentials sent to every backend.
    pub auth: auth::Source,
    /// X-Scope-OrgID.
    pub tenant: Option<String>,
    /// A CA trusted besides the system's.
    pub ca: Option<tls::ExtraCa>,
    /// One attempt's limit.
    pub timeout: Duration,
    /// What the windows are exported under.
    pub service_name: String,
}

impl Settings {
    /// Checks the flags (and reads the files they name); `None` without
    /// `--export`. A credential on the command line is refused even then.
    pub fn from_args(args: &ExportArgs, service_name: String) -> Result<Option<Settings>, String> {
        let auth = auth::load(
            args.export_token_file.as_deref(),
            args.export_basic_auth_file.as_deref(),
            args.export_token.is_some(),
            args.export_basic_auth.is_some(),
            |v| std::env::var(v).ok(),
        )?;
        if args.urls.is_empty() {
            return Ok(None);
        }
        let endpoints = args
            .urls
            .iter()
            .map(|u| endpoint::parse(u, args.export_insecure))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, e) in endpoints.iter().enumerate() {
            if endpoints[..i].iter().any(|o| o.shown == e.shown) {
                return Err(format!("--export {}: given twice", e.shown));
            }
        }
        let ca = args.export_ca.as_deref().map(tls::read_ca).transpose()?;
        if let Some(t) = &args.export_tenant {
            if t.is_empty() || t.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
                return Err(format!(
                    "--export-tenant {t:?}: visible ASCII characters only"
                ));
            }
        }
        if args.export_timeout.is_zero() {
            return Err("--export-timeout: must be more than 0".into());
        }
        Ok(Some(Settings {
            endpoints,
            auth,
            tenant: args.export_tenant.clone(),
            ca,
            timeout: args.export_timeout,
            service_name,
        }))
    }
}

/// The running exporters.
pub struct Exporters {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    stats: Vec<Arc<BackendStats>>,
}

/// Starts a thread per backend over the store `dir`. Backends new to this store
/// start with the windows written from now on.
pub fn start(settings: Settings, dir: &Path, metrics: &Arc<Metrics>) -> Result<Exporters> {
    tls::install_provider();
    let stop = Arc::new(AtomicBool::new(false));
    let now = SystemTime::now();
    let max_backoff = exporter::max_backoff();
    let mut prepared = Vec::new();
    for endpoint in &settings.endpoints {
        let sender = transport::Sender::new(endpoint, &settings).map_err(|e| anyhow!(e))?;
        let cursor = cursor::Cursor::open(dir, &endpoint.shown, now)?;
        let stats = Arc::new(BackendStats {
            backend: endpoint.shown.clone(),
            ..BackendStats::default()
        });
        prepared.push((endpoint.clone(), sender, cursor, stats));
    }
    let all: Vec<_> = prepared.iter().map(|p| Arc::clone(&p.3)).collect();
    // set once: /metrics shows the backends from the first window on
    let _ = metrics.export.set(all.clone());
    let mut threads = Vec::new();
    for (i, (endpoint, sender, cursor, stats)) in prepared.into_iter().enumerate() {
        let e = exporter::Exporter {
            endpoint,
            sender,
            queue: queue::Queue::new(dir.to_path_buf(), cursor),
            stats,
            metrics: Arc::clone(metrics),
            stop: Arc::clone(&stop),
            grace: FINISH_GRACE,
            service_name: settings.service_name.clone(),
            timeout: settings.timeout,
            max_backoff,
            unwarned_drops: 0,
            last_drop_warning: None,
        };
        threads.push(
            std::thread::Builder::new()
                .name(format!("flamebpf-export-{i}"))
                .spawn(move || e.run())?,
        );
    }
    Ok(Exporters {
        stop,
        threads,
        stats: all,
    })
}

impl Exporters {
    /// Once the last window is written: lets each backend send what it can within
    /// the grace, then stops; returns a line on each backend for the summary.
    pub fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Release);
        for t in self.threads {
            let _ = t.join();
        }
        self.stats
            .iter()
            .map(|s| {
                let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
                let dropped = g(&s.dropped_unsent) + g(&s.dropped_rejected);
                format!(
                    "{} windows ({} KiB) exported to {} ({} waiting for the next start{})",
                    g(&s.windows),
                    g(&s.bytes).div_ceil(1024),
                    s.backend,
                    g(&s.pending),
                    match dropped {
                        0 => String::new(),
                        n => format!(", {n} dropped"),
                    }
                )
            })
            .collect()
    }
}
