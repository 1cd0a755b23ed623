//! The one line printed at the end of a capture: what was sampled, and where every
//! sample that is not in the profile went, with the flag that helps.

use crate::bpf::Stats;

/// Everything the summary line reports.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    /// The BPF program's counters.
    pub stats: Stats,
    /// Distinct processes in the profile.
    pub processes: usize,
    /// Distinct stacks read from the maps.
    pub stacks: usize,
    /// Tracking records the kernel dropped (address-space changes not seen).
    pub lost_records: u64,
    /// DWARF mode: how unwinding went.
    pub unwound: Option<symbolizer::unwind::UnwindStats>,
}

impl Summary {
    /// Whether anything was lost.
    pub fn has_losses(&self) -> bool {
        let s = &self.stats;
        s.stack_lost
            + s.counts_full
            + s.targets_full
            + s.ringbuf_full
            + s.stack_copy_failed
            + self.lost_records
            > 0
    }

    /// The line, without a trailing newline.
    pub fn line(&self) -> String {
        let s = &self.stats;
        let plural =
            |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        format!(
            "flamebpf: {}, {}, {}; {}",
            plural(s.samples, "sample", "samples"),
            plural(self.processes as u64, "process", "processes"),
            plural(self.stacks as u64, "unique stack", "unique stacks"),
            self.classes_and_losses()
        )
    }

    /// What follows the totals: samples without a stack by nature, then every
    /// loss with its remedy.
    pub fn classes_and_losses(&self) -> String {
        let s = &self.stats;
        let mut line = format!(
            "{} in user mode, {} of kernel threads, {} with an unreadable user stack",
            s.kernel_stack_absent, s.user_stack_kthread, s.user_stack_fault
        );
        if let Some(u) = &self.unwound {
            line.push_str(&format!(
                "; user stacks unwound whole {}, cut short by the copy size {} (raise STACK_BYTES: --call-graph dwarf,BYTES), \
                 not unwound past code without usable CFI {}",
                u.complete + u.too_deep,
                u.cut_short,
                u.failed
            ));
        }
        let mut losses = Vec::new();
        if s.ringbuf_full > 0 {
            losses.push(format!(
                "{} samples to a full ring buffer (raise --ringbuf-size)",
                s.ringbuf_full
            ));
        }
        if s.stack_copy_failed > 0 {
            losses.push(format!(
                "{} user stacks that could not be copied",
                s.stack_copy_failed
            ));
        }
        if s.stack_lost > 0 {
            losses.push(format!("{} stacks (raise --stack-map-size)", s.stack_lost));
        }
        if s.counts_full > 0 {
            losses.push(format!(
                "{} samples to a full counts map (raise --counts-map-size)",
                s.counts_full
            ));
        }
        if s.targets_full > 0 {
            losses.push(format!(
                "{} child processes not followed (target set full)",
                s.targets_full
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
            stats: Stats {
                samples: 1,
                kernel_stack_absent: 1,
                ..Stats::default()
            },
            processes: 1,
            stacks: 1,
            lost_records: 0,
            unwound: None,
        };
        assert!(!s.has_losses());
        assert_eq!(
            s.line(),
            "flamebpf: 1 sample, 1 process, 1 unique stack; 1 in user mode, 0 of kernel threads, \
             0 with an unreadable user stack; nothing lost"
        );
    }

    #[test]
    fn every_loss_class_names_its_remedy() {
        let s = Summary {
            stats: Stats {
                samples: 100,
                stack_lost: 2,
                counts_full: 3,
                targets_full: 4,
                ..Stats::default()
            },
            processes: 2,
            stacks: 10,
            lost_records: 5,
            unwound: None,
        };
        assert!(s.has_losses());
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
