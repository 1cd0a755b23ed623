//! Each backend's counters, shared with /metrics: windows and bytes exported,
//! attempts retried, windows dropped, and the last error.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// One backend's counters.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// The URL as given.
    pub backend: String,
    /// Windows acknowledged.
    pub windows: AtomicU64,
    /// Bytes of the requests acknowledged (encoded, before transport compression).
    pub bytes: AtomicU64,
    /// Attempts that failed and will be made again.
    pub retries: AtomicU64,
    /// Windows deleted by retention (`--max-disk`, `--retain`) before they were sent.
    pub dropped_unsent: AtomicU64,
    /// Windows the backend refused for good, or that could not be read.
    pub dropped_rejected: AtomicU64,
    /// Windows waiting.
    pub pending: AtomicU64,
    /// Errors of any kind.
    pub errors: AtomicU64,
    /// The last error, and when (s since the epoch).
    pub last_error: Mutex<Option<(String, u64)>>,
}

impl BackendStats {
    /// Counts an error and keeps it as the last one.
    pub fn error(&self, why: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some((why.to_string(), now));
        }
    }
}

/// A label value in Prometheus' text format.
fn escape(s: &str) -> String {
    s.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// Appends the export metrics to a /metrics text.
pub fn render(backends: &[std::sync::Arc<BackendStats>], out: &mut String) {
    if backends.is_empty() {
        return;
    }
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    type Read = fn(&BackendStats) -> &AtomicU64;
    let counters: [(&str, &str, &str, Option<&str>, Read); 7] = [
        ("flamebpf_export_windows_total", "counter", "Windows the backend acknowledged.", None, |b| &b.windows),
        ("flamebpf_export_bytes_total", "counter", "Bytes of the acknowledged requests (encoded protobuf, before transport compression).", None, |b| &b.bytes),
        ("flamebpf_export_retries_total", "counter", "Attempts that failed and were retried (backend down, overloaded, unauthorized, timed out).", None, |b| &b.retries),
        ("flamebpf_export_windows_dropped_total", "counter", "Windows not exported: deleted unsent by --max-disk or --retain (reason=\"unsent\"), refused by the backend or unreadable (reason=\"rejected\").", Some("unsent"), |b| &b.dropped_unsent),
        ("flamebpf_export_windows_dropped_total", "counter", "", Some("rejected"), |b| &b.dropped_rejected),
        ("flamebpf_export_windows_pending", "gauge", "Windows in the store waiting to be exported.", None, |b| &b.pending),
        ("flamebpf_export_errors_total", "counter", "Errors of any kind.", None, |b| &b.errors),
    ];
    for (name, kind, help, reason, read) in counters {
        if !help.is_empty() {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        }
        for b in backends {
            let reason = reason.map_or(String::new(), |r| format!(",reason=\"{r}\""));
            let _ = writeln!(
                out,
                "{name}{{backend=\"{}\"{reason}}} {}",
                escape(&b.backend),
                g(read(b))
            );
        }
    }
    let _ = writeln!(out, "# HELP flamebpf_export_last_error_timestamp_seconds When the last error happened; its message is the error label.\n# TYPE flamebpf_export_last_error_timestamp_seconds gauge");
    for b in backends {
        if let Ok(Some((why, at))) = b.last_error.lock().as_deref() {
            let _ = writeln!(
                out,
                "flamebpf_export_last_error_timestamp_seconds{{backend=\"{}\",error=\"{}\"}} {at}",
                escape(&b.backend),
                escape(why)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn every_backend_has_its_lines() {
        let b = Arc::new(BackendStats {
            backend: "grpc://127.0.0.1:4317".into(),
            ..BackendStats::default()
        });
        b.windows.store(3, Ordering::Relaxed);
        b.dropped_unsent.store(2, Ordering::Relaxed);
        b.error("HTTP 401: \"no\"");
        let mut out = String::new();
        render(&[b], &mut out);
        assert!(
            out.contains("flamebpf_export_windows_total{backend=\"grpc://127.0.0.1:4317\"} 3\n")
        );
        assert!(out.contains(
            "flamebpf_export_windows_dropped_total{backend=\"grpc://127.0.0.1:4317\",reason=\"unsent\"} 2\n"
        ));
        assert!(out.contains("flamebpf_export_errors_total{backend=\"grpc://127.0.0.1:4317\"} 1\n"));
        assert!(out.contains("error=\"HTTP 401: \\\"no\\\"\"}"));
        assert_eq!(
            out.matches("# TYPE flamebpf_export_windows_dropped_total")
                .count(),
            1
        );
    }
}
