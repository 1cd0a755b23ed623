//! The one line printed at the end of a capture: what was sampled, and where every
//! sample that is not in the profile went, with the flag that helps.

use crate::capture::{Stat, Stats};
use crate::output::stack_ends::StackEnds;

/// Where every sample went: what `record`'s summary line and the daemon's last
/// line both report.
#[derive(Debug, Default, Clone, Copy)]
pub struct Accounting {
    /// The BPF program's counters.
    pub stats: Stats,
    /// Tracking records the kernel dropped (address-space changes not seen).
    pub lost_records: u64,
    /// DWARF mode: how unwinding went.
    pub unwound: Option<symbolizer::unwind::UnwindStats>,
    /// Frame-pointer mode: how many user stacks reach their thread's start.
    pub stack_ends: Option<StackEnds>,
    /// Frame-pointer mode: samples whose user stack reached the depth limit
    /// (marked [truncated]).
    pub truncated: Option<u64>,
    /// Runs of the programs the kernel skipped (another BPF program was
    /// running on that CPU): samples and switches never counted.
    pub missed: u64,
}

/// `record`'s summary: the accounting, and the size of the profile.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    /// Where the samples went.
    pub accounting: Accounting,
    /// Distinct processes in the profile.
    pub processes: usize,
    /// Distinct stacks read from the maps.
    pub stacks: usize,
}

impl Summary {
    /// The line, without a trailing newline.
    pub fn line(&self) -> String {
        let plural =
            |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        format!(
            "flamebpf: {}, {}, {}; {}",
            plural(
                self.accounting.stats[Stat::STAT_SAMPLES],
                "sample",
                "samples"
            ),
            plural(self.processes as u64, "process", "processes"),
            plural(self.stacks as u64, "unique stack", "unique stacks"),
            self.accounting.classes_and_losses()
        )
    }
}

impl Accounting {
    /// Whether anything was lost.
    pub fn has_losses(&self) -> bool {
        let s = &self.stats;
        s[Stat::STAT_STACK_LOST]
            + s[Stat::STAT_COUNTS_FULL]
            + s[Stat::STAT_STACK_NOMEM]
            + s[Stat::STAT_STACK_BUSY]
            + s[Stat::STAT_COUNTS_NOMEM]
            + s[Stat::STAT_COUNTS_BUSY]
            + self.missed
            + s[Stat::STAT_TARGETS_FULL]
            + s[Stat::STAT_RINGBUF_FULL]
            + s[Stat::STAT_STACK_COPY_FAILED]
            + s[Stat::STAT_OFFCPU_LOST]
            + s[Stat::STAT_OFFCPU_COUNTS_FULL]
            + s[Stat::STAT_OFFCPU_STACK_LOST]
            + self.lost_records
            > 0
    }

    /// What follows the totals: samples without a stack by nature, then every
    /// loss with its remedy.
    pub fn classes_and_losses(&self) -> String {
        let s = &self.stats;
        let mut line = format!(
            "{} in user mode, {} of kernel threads, {} with an unreadable user stack",
            s[Stat::STAT_KERNEL_STACK_ABSENT],
            s[Stat::STAT_USER_STACK_KTHREAD],
            s[Stat::STAT_USER_STACK_FAULT]
        );
        if s[Stat::STAT_USER_STACK_EXEC] > 0 {
            line.push_str(&format!(
                ", {} inside an exec after the old program was gone",
                s[Stat::STAT_USER_STACK_EXEC]
            ));
        }
        let walked = s[Stat::STAT_CFI_COMPLETE]
            + s[Stat::STAT_CFI_TRUNCATED]
            + s[Stat::STAT_CFI_NOT_LOADED]
            + s[Stat::STAT_CFI_UNSUPPORTED]
            + s[Stat::STAT_CFI_STOPPED];
        if walked > 0 {
            line.push_str(&format!(
                "; user stacks unwound whole {}, cut at {} frames {} (marked [truncated]), through objects whose table was not loaded yet {} \
                 (frame pointers there), stopped at a rule the unwinder does not evaluate {}, stopped early {}",
                s[Stat::STAT_CFI_COMPLETE],
                crate::capture::skel::limits::MAX_DEPTH,
                s[Stat::STAT_CFI_TRUNCATED],
                s[Stat::STAT_CFI_NOT_LOADED],
                s[Stat::STAT_CFI_UNSUPPORTED],
                s[Stat::STAT_CFI_STOPPED],
            ));
        }
        let python = s[Stat::STAT_PY_WALKED]
            + s[Stat::STAT_PY_TRUNCATED]
            + s[Stat::STAT_PY_STOPPED]
            + s[Stat::STAT_PY_NO_THREAD];
        if python > 0 {
            line.push_str(&format!(
                "; Python stacks read whole {}, cut at {} frames {} (marked [truncated]), stopped at an unreadable frame {}, \
                 of threads without a Python thread state {}",
                s[Stat::STAT_PY_WALKED],
                crate::capture::skel::limits::MAX_DEPTH,
                s[Stat::STAT_PY_TRUNCATED],
                s[Stat::STAT_PY_STOPPED],
                s[Stat::STAT_PY_NO_THREAD],
            ));
            if s[Stat::STAT_PY_RING_FULL] > 0 {
                line.push_str(&format!(
                    ", new Python stacks not sent to be named (ring buffer full) {}",
                    s[Stat::STAT_PY_RING_FULL]
                ));
            }
        }
        if let Some(u) = &self.unwound {
            line.push_str(&format!(
                "; user stacks unwound whole {}, cut at {} frames {} (marked [truncated]), cut short by the copy size {} \
                 (raise STACK_BYTES: --call-graph dwarf,BYTES), not unwound past code without usable CFI {}",
                u.complete,
                crate::capture::skel::limits::MAX_DEPTH,
                u.too_deep,
                u.cut_short,
                u.failed
            ));
        }
        if let Some(t) = self.truncated.filter(|&t| t > 0) {
            line.push_str(&format!(
                "; user stacks cut at {} frames {t} (marked [truncated])",
                crate::capture::skel::limits::MAX_DEPTH
            ));
        }
        if let Some(e) = self.stack_ends.filter(|e| e.user > 0) {
            line.push_str(&format!(
                "; user stacks that reach their thread's start (_start, start_thread) {} of {}",
                e.user - e.broken,
                e.user
            ));
            if e.broken > 0 {
                line.push_str(&format!(
                    ", broken {} ({:.0}%): frame pointers end in code built without them \
                     (--call-graph cfi, the default, unwinds it)",
                    e.broken,
                    100.0 * e.broken as f64 / e.user as f64
                ));
            }
        }
        let waits = s[Stat::STAT_OFFCPU_WAITS];
        if waits > 0 {
            let ended = s[Stat::STAT_OFFCPU_COUNTED]
                + s[Stat::STAT_OFFCPU_SHORT]
                + s[Stat::STAT_OFFCPU_LOST]
                + s[Stat::STAT_OFFCPU_COUNTS_FULL];
            line.push_str(&format!(
                "; off-CPU waits {waits}: counted {}, shorter than --off-cpu-min {}",
                s[Stat::STAT_OFFCPU_COUNTED],
                s[Stat::STAT_OFFCPU_SHORT],
            ));
            if waits > ended {
                line.push_str(&format!(", still going (counted so far) {}", waits - ended));
            }
        }
        let mut losses = Vec::new();
        if s[Stat::STAT_OFFCPU_COUNTS_FULL] > 0 {
            losses.push(format!(
                "{} off-CPU waits to a full counts map (raise --counts-map-size)",
                s[Stat::STAT_OFFCPU_COUNTS_FULL]
            ));
        }
        if s[Stat::STAT_OFFCPU_LOST] > 0 {
            losses.push(format!(
                "{} off-CPU waits not followed (no memory for them, or their end was missed)",
                s[Stat::STAT_OFFCPU_LOST]
            ));
        }
        if s[Stat::STAT_OFFCPU_STACK_LOST] > 0 {
            losses.push(format!(
                "{} off-CPU stacks, counted under [lost stack] (raise --stack-map-size)",
                s[Stat::STAT_OFFCPU_STACK_LOST]
            ));
        }
        if s[Stat::STAT_RINGBUF_FULL] > 0 {
            losses.push(format!(
                "{} samples to a full ring buffer (raise --ringbuf-size)",
                s[Stat::STAT_RINGBUF_FULL]
            ));
        }
        if s[Stat::STAT_STACK_COPY_FAILED] > 0 {
            losses.push(format!(
                "{} user stacks that could not be copied",
                s[Stat::STAT_STACK_COPY_FAILED]
            ));
        }
        if s[Stat::STAT_STACK_LOST] > 0 {
            losses.push(format!(
                "{} stacks (raise --stack-map-size)",
                s[Stat::STAT_STACK_LOST]
            ));
        }
        if s[Stat::STAT_COUNTS_FULL] > 0 {
            losses.push(format!(
                "{} samples to a full counts map (raise --counts-map-size)",
                s[Stat::STAT_COUNTS_FULL]
            ));
        }
        if self.missed > 0 {
            losses.push(format!(
                "{} runs the kernel skipped because another BPF program was running on that CPU \
                 (its recursion_misses: samples never counted)",
                self.missed
            ));
        }
        let nomem = s[Stat::STAT_STACK_NOMEM] + s[Stat::STAT_COUNTS_NOMEM];
        if nomem > 0 {
            losses.push(format!(
                "{nomem} samples' stacks or counts for want of kernel memory at hand in the interrupt \
                 (a bigger map does not help; it passes when the machine has memory to spare)"
            ));
        }
        let busy = s[Stat::STAT_STACK_BUSY] + s[Stat::STAT_COUNTS_BUSY];
        if busy > 0 {
            losses.push(format!(
                "{busy} samples' stacks or counts to a busy map (an event in NMI while the same CPU \
                 updated it; a lower -F makes it rarer)"
            ));
        }
        if s[Stat::STAT_TARGETS_FULL] > 0 {
            losses.push(format!(
                "{} child processes not followed (target set full)",
                s[Stat::STAT_TARGETS_FULL]
            ));
        }
        if self.lost_records > 0 {
            losses.push(format!(
                "{} address-space records (some frames may be [unknown])",
                self.lost_records
            ));
        }
        if losses.is_empty() {
            line.push_str("; nothing lost");
        } else {
            line.push_str("; lost: ");
            line.push_str(&losses.join(", "));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_capture() {
        let s = Summary {
            accounting: Accounting {
                stats: Stats::default()
                    .with(Stat::STAT_SAMPLES, 1)
                    .with(Stat::STAT_KERNEL_STACK_ABSENT, 1),
                lost_records: 0,
                unwound: None,
                stack_ends: None,
                truncated: None,
                missed: 0,
            },
            processes: 1,
            stacks: 1,
        };
        assert!(!s.accounting.has_losses());
        assert_eq!(
            s.line(),
            "flamebpf: 1 sample, 1 process, 1 unique stack; 1 in user mode, 0 of kernel threads, \
             0 with an unreadable user stack; nothing lost"
        );
    }

    #[test]
    fn cfi_walks_are_accounted_by_how_they_ended() {
        let a = Accounting {
            stats: Stats::default()
                .with(Stat::STAT_SAMPLES, 10)
                .with(Stat::STAT_CFI_COMPLETE, 6)
                .with(Stat::STAT_CFI_TRUNCATED, 1)
                .with(Stat::STAT_CFI_NOT_LOADED, 1)
                .with(Stat::STAT_CFI_UNSUPPORTED, 1)
                .with(Stat::STAT_CFI_STOPPED, 1),
            ..Accounting::default()
        };
        let line = a.classes_and_losses();
        for part in [
            "unwound whole 6",
            "cut at 127 frames 1",
            "not loaded yet 1",
            "does not evaluate 1",
            "stopped early 1",
        ] {
            assert!(line.contains(part), "{part} missing from {line}");
        }
        assert!(!Accounting::default()
            .classes_and_losses()
            .contains("unwound"));
    }

    #[test]
    fn broken_frame_pointer_stacks_are_counted_with_their_share_and_remedy() {
        let mut a = Accounting {
            stats: Stats::default().with(Stat::STAT_SAMPLES, 200),
            stack_ends: Some(StackEnds {
                user: 200,
                broken: 150,
            }),
            ..Accounting::default()
        };
        let line = a.classes_and_losses();
        assert!(
            line.contains("start (_start, start_thread) 50 of 200"),
            "{line}"
        );
        assert!(line.contains("broken 150 (75%)"), "{line}");
        assert!(line.contains("--call-graph cfi"), "{line}");
        assert!(line.ends_with("; nothing lost"), "{line}");
        a.stack_ends = Some(StackEnds {
            user: 200,
            broken: 0,
        });
        let whole = a.classes_and_losses();
        assert!(
            whole.contains("200 of 200") && !whole.contains("broken"),
            "{whole}"
        );
        a.stack_ends = None;
        assert!(!a.classes_and_losses().contains("thread's start"));
    }

    #[test]
    fn off_cpu_waits_are_accounted_with_their_remedies() {
        let a = Accounting {
            stats: Stats::default()
                .with(Stat::STAT_OFFCPU_WAITS, 20)
                .with(Stat::STAT_OFFCPU_COUNTED, 10)
                .with(Stat::STAT_OFFCPU_SHORT, 4)
                .with(Stat::STAT_OFFCPU_LOST, 1)
                .with(Stat::STAT_OFFCPU_COUNTS_FULL, 2)
                .with(Stat::STAT_OFFCPU_STACK_LOST, 3),
            ..Accounting::default()
        };
        assert!(a.has_losses());
        let line = a.classes_and_losses();
        for part in [
            "off-CPU waits 20: counted 10, shorter than --off-cpu-min 4, still going (counted so far) 3",
            "2 off-CPU waits to a full counts map (raise --counts-map-size)",
            "1 off-CPU waits not followed",
            "3 off-CPU stacks, counted under [lost stack] (raise --stack-map-size)",
        ] {
            assert!(line.contains(part), "{part} missing from {line}");
        }
        assert!(!Accounting::default()
            .classes_and_losses()
            .contains("off-CPU"));
    }

    #[test]
    fn map_failures_other_than_full_give_their_own_advice() {
        let a = Accounting {
            stats: Stats::default()
                .with(Stat::STAT_SAMPLES, 10)
                .with(Stat::STAT_COUNTS_NOMEM, 2)
                .with(Stat::STAT_STACK_BUSY, 1),
            ..Accounting::default()
        };
        assert!(a.has_losses());
        let line = a.classes_and_losses();
        assert!(
            line.contains("2 samples' stacks or counts for want of kernel memory"),
            "{line}"
        );
        assert!(
            line.contains("1 samples' stacks or counts to a busy map"),
            "{line}"
        );
        assert!(!line.contains("raise --counts-map-size"), "{line}");
    }

    #[test]
    fn every_loss_class_names_its_remedy() {
        let s = Summary {
            accounting: Accounting {
                stats: Stats::default()
                    .with(Stat::STAT_SAMPLES, 100)
                    .with(Stat::STAT_STACK_LOST, 2)
                    .with(Stat::STAT_COUNTS_FULL, 3)
                    .with(Stat::STAT_TARGETS_FULL, 4),
                lost_records: 5,
                unwound: None,
                stack_ends: None,
                truncated: None,
                missed: 0,
            },
            processes: 2,
            stacks: 10,
        };
        assert!(s.accounting.has_losses());
        let line = s.line();
        assert!(!line.contains('\n'));
        for part in [
            "100 samples, 2 processes, 10 unique stacks",
            "2 stacks (raise --stack-map-size)",
            "3 samples to a full counts map (raise --counts-map-size)",
            "4 child processes not followed",
            "5 address-space records",
        ] {
            assert!(line.contains(part), "{part} missing from {line}");
        }
    }
}
