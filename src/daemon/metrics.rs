//! Counters of the continuous daemon, shared with the HTTP thread and rendered in
//! Prometheus' text format for /metrics.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::capture::unwind::TableStats;
use crate::capture::{Stat, Stats};

/// Everything /metrics reports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// The BPF program's counters over the daemon's life.
    pub stats: Mutex<Stats>,
    /// CFI mode: the unwind tables in the kernel now.
    pub tables: Mutex<TableStats>,
    /// Processes whose CPython is read, and those that run one that cannot be.
    pub python_processes: Mutex<(u64, u64)>,
    /// Address-space records the kernel dropped.
    pub lost_records: AtomicU64,
    /// Program runs the kernel skipped (recursion_misses).
    pub missed_runs: AtomicU64,
    /// Windows written to the store.
    pub windows_written: AtomicU64,
    /// Windows that could not be written.
    pub window_failures: AtomicU64,
    /// Windows ended and handed to the symbolization thread, not yet written.
    pub windows_pending: AtomicU64,
    /// Windows made longer because that many were pending already.
    pub windows_extended: AtomicU64,
    /// Bytes in the store after the last retention pass.
    pub store_bytes: AtomicU64,
    /// Objects whose symbols could not be read.
    pub symbolization_failures: AtomicU64,
    /// Objects whose names are kept between windows, after the last window.
    pub cached_objects: AtomicU64,
    /// Offsets named and kept over those objects, after the last window.
    pub cached_offsets: AtomicU64,
    /// Window files a read of the store skipped (corrupt, unreadable, deleted).
    pub windows_skipped: AtomicU64,
    /// The skipped windows already warned about, so each is warned about once.
    warned: Mutex<HashSet<PathBuf>>,
    /// The backends of `--export`, set once when their threads start.
    pub export: std::sync::OnceLock<Vec<std::sync::Arc<crate::export::stats::BackendStats>>>,
}

impl Metrics {
    /// Adds the counters' growth since the last reading.
    pub fn add_stats(&self, growth: Stats) {
        if let Ok(mut s) = self.stats.lock() {
            *s += growth;
        }
    }

    /// Counts the windows a read of the store skipped and warns once about each.
    pub fn note_corrupt_windows(&self, skipped: &[super::merge::Skipped]) {
        self.windows_skipped
            .fetch_add(skipped.len() as u64, Ordering::Relaxed);
        let Ok(mut warned) = self.warned.lock() else {
            return;
        };
        for s in skipped {
            if warned.insert(s.path.clone()) {
                eprintln!("flamebpf: warning: {s}");
            }
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let stats = self.stats.lock().map(|s| *s).unwrap_or_default();
        let st = |stat: Stat| stats[stat];
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in lines {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        metric(
            "flamebpf_samples_total",
            "counter",
            "Samples taken of the targets.",
            &[("", st(Stat::STAT_SAMPLES))],
        );
        metric(
            "flamebpf_samples_without_stack_total",
            "counter",
            "Samples with one of their stacks absent by nature.",
            &[
                (
                    r#"{stack="kernel",reason="user_mode"}"#,
                    st(Stat::STAT_KERNEL_STACK_ABSENT),
                ),
                (
                    r#"{stack="user",reason="kernel_thread"}"#,
                    st(Stat::STAT_USER_STACK_KTHREAD),
                ),
                (
                    r#"{stack="user",reason="exec"}"#,
                    st(Stat::STAT_USER_STACK_EXEC),
                ),
            ],
        );
        metric(
            "flamebpf_lost_total",
            "counter",
            "What was lost, by class: stacks (raise --stack-map-size), samples (raise --counts-map-size), children not followed, address-space records.",
            &[
                (r#"{class="stack_map"}"#, st(Stat::STAT_STACK_LOST)),
                (r#"{class="counts_map"}"#, st(Stat::STAT_COUNTS_FULL)),
                (
                    r#"{class="no_memory"}"#,
                    st(Stat::STAT_STACK_NOMEM) + st(Stat::STAT_COUNTS_NOMEM),
                ),
                (
                    r#"{class="map_busy"}"#,
                    st(Stat::STAT_STACK_BUSY) + st(Stat::STAT_COUNTS_BUSY),
                ),
                (r#"{class="target_set"}"#, st(Stat::STAT_TARGETS_FULL)),
                (r#"{class="tracking_records"}"#, g(&self.lost_records)),
                (r#"{class="program_skipped"}"#, g(&self.missed_runs)),
            ],
        );
        metric(
            "flamebpf_user_stacks_total",
            "counter",
            "User stacks unwound in the kernel (--call-graph cfi), by how the walk ended.",
            &[
                (r#"{end="complete"}"#, st(Stat::STAT_CFI_COMPLETE)),
                (r#"{end="depth_limit"}"#, st(Stat::STAT_CFI_TRUNCATED)),
                (r#"{end="table_not_loaded"}"#, st(Stat::STAT_CFI_NOT_LOADED)),
                (
                    r#"{end="unsupported_rule"}"#,
                    st(Stat::STAT_CFI_UNSUPPORTED),
                ),
                (r#"{end="stopped"}"#, st(Stat::STAT_CFI_STOPPED)),
            ],
        );
        metric(
            "flamebpf_python_stacks_total",
            "counter",
            "Python frames read in the kernel (default mode), by how the read ended: whole, cut at the depth limit, stopped at an unreadable frame, no thread state for the thread (a native thread of a Python process); not_sent: new stacks not sent to be named (ring full).",
            &[
                (r#"{end="whole"}"#, st(Stat::STAT_PY_WALKED)),
                (r#"{end="depth_limit"}"#, st(Stat::STAT_PY_TRUNCATED)),
                (r#"{end="stopped"}"#, st(Stat::STAT_PY_STOPPED)),
                (r#"{end="no_thread_state"}"#, st(Stat::STAT_PY_NO_THREAD)),
                (r#"{end="not_sent"}"#, st(Stat::STAT_PY_RING_FULL)),
            ],
        );
        let (py_read, py_refused) = self.python_processes.lock().map(|p| *p).unwrap_or_default();
        metric(
            "flamebpf_python_processes",
            "gauge",
            "Processes whose CPython frames are read now, and processes seen running a CPython that cannot be read (profiled natively; the daemon's last lines name them).",
            &[
                (r#"{state="read"}"#, py_read),
                (r#"{state="refused"}"#, py_refused),
            ],
        );
        metric(
            "flamebpf_off_cpu_waits_total",
            "counter",
            "--off-cpu: waits of target threads, by how they ended (begun: all of them).",
            &[
                (r#"{end="begun"}"#, st(Stat::STAT_OFFCPU_WAITS)),
                (r#"{end="counted"}"#, st(Stat::STAT_OFFCPU_COUNTED)),
                (r#"{end="below_minimum"}"#, st(Stat::STAT_OFFCPU_SHORT)),
                (r#"{end="not_followed"}"#, st(Stat::STAT_OFFCPU_LOST)),
                (
                    r#"{end="counts_map_full"}"#,
                    st(Stat::STAT_OFFCPU_COUNTS_FULL),
                ),
                (r#"{end="stack_lost"}"#, st(Stat::STAT_OFFCPU_STACK_LOST)),
            ],
        );
        let t = self.tables.lock().map(|t| *t).unwrap_or_default();
        metric(
            "flamebpf_unwind_tables",
            "gauge",
            "CFI mode: unwind tables in the kernel now: objects, rows (8 bytes each), processes.",
            &[
                (r#"{what="objects"}"#, t.objects),
                (r#"{what="rows"}"#, t.rows),
                (r#"{what="processes"}"#, t.processes),
            ],
        );
        metric(
            "flamebpf_unwind_tables_left_out_total",
            "counter",
            "CFI mode: objects walked with frame pointers for want of a table, by reason (no_room: raise --unwind-rows).",
            &[
                (r#"{reason="no_cfi"}"#, t.without_cfi),
                (r#"{reason="unreadable"}"#, t.unreadable),
                (r#"{reason="no_room"}"#, t.no_room),
            ],
        );
        metric(
            "flamebpf_windows_written_total",
            "counter",
            "Windows written to the store.",
            &[("", g(&self.windows_written))],
        );
        metric(
            "flamebpf_window_write_failures_total",
            "counter",
            "Windows that could not be written.",
            &[("", g(&self.window_failures))],
        );
        metric(
            "flamebpf_windows_pending",
            "gauge",
            "Windows ended but not yet named and written (symbolization runs behind sampling).",
            &[("", g(&self.windows_pending))],
        );
        metric(
            "flamebpf_windows_extended_total",
            "counter",
            "Windows made longer, rather than queued, because symbolization was several windows behind.",
            &[("", g(&self.windows_extended))],
        );
        metric(
            "flamebpf_store_bytes",
            "gauge",
            "Bytes in the store.",
            &[("", g(&self.store_bytes))],
        );
        metric(
            "flamebpf_symbolization_failures_total",
            "counter",
            "Objects whose symbols could not be read.",
            &[("", g(&self.symbolization_failures))],
        );
        metric(
            "flamebpf_symbol_cache",
            "gauge",
            "Names kept between windows: objects, and offsets over all of them.",
            &[
                (r#"{what="objects"}"#, g(&self.cached_objects)),
                (r#"{what="offsets"}"#, g(&self.cached_offsets)),
            ],
        );
        metric(
            "flamebpf_store_windows_skipped_total",
            "counter",
            "Window files a read of the store skipped: corrupt, unreadable or deleted.",
            &[("", g(&self.windows_skipped))],
        );
        if let Some(backends) = self.export.get() {
            crate::export::stats::render(backends, &mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.add_stats(
            Stats::default()
                .with(Stat::STAT_SAMPLES, 5)
                .with(Stat::STAT_COUNTS_FULL, 2),
        );
        m.window_failures.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut t) = m.tables.lock() {
            t.rows = 1234;
        }
        let text = m.render();
        assert!(text.contains("flamebpf_unwind_tables{what=\"rows\"} 1234\n"));
        assert!(text.contains("# TYPE flamebpf_samples_total counter\nflamebpf_samples_total 5\n"));
        assert!(text.contains("flamebpf_lost_total{class=\"counts_map\"} 2\n"));
        assert!(text.contains("flamebpf_off_cpu_waits_total{end=\"counted\"} 0\n"));
        assert!(text.contains("flamebpf_window_write_failures_total 1\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(
                name.starts_with("flamebpf_") && value.parse::<u64>().is_ok(),
                "{line}"
            );
        }
    }
}
