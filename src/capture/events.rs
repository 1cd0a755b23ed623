//! The events flamebpf can sample, named as perf names them: generic hardware
//! events, hardware cache events, software events and raw PMU codes (`rNNNN`).

use perf_event_open_sys::bindings as b;

/// Which family an event belongs to.
/// An event name flamebpf does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event {0:?}: `flamebpf list` shows the events")]
pub struct UnknownEvent(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A generic hardware event (a PMU counter).
    Hardware,
    /// A hardware cache event (cache, operation, result).
    HardwareCache,
    /// A kernel software event.
    Software,
    /// A raw PMU event code.
    Raw,
}

impl Kind {
    /// How `flamebpf list` names the family.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Hardware => "hardware",
            Kind::HardwareCache => "hardware cache",
            Kind::Software => "software",
            Kind::Raw => "raw",
        }
    }
}

/// A named perf event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The canonical name (`cycles`, `L1-dcache-load-misses`, `r01c2`).
    pub name: String,
    /// `PERF_TYPE_*`.
    pub type_: u32,
    /// The event within its type.
    pub config: u64,
    /// Its family.
    pub kind: Kind,
}

/// How often an event interrupts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    /// This many samples a second per CPU; the kernel adapts the period.
    Frequency(u64),
    /// One sample every this many events.
    Period(u64),
}

/// perf's default frequency for events other than the timers (`perf record -F`).
pub const DEFAULT_EVENT_FREQUENCY: u64 = 4000;
/// flamebpf's default frequency for the timers: low enough to leave running.
pub const DEFAULT_TIMER_FREQUENCY: u64 = 99;

const HARDWARE: &[(&str, &[&str], u32)] = &[
    ("cycles", &["cpu-cycles"], b::PERF_COUNT_HW_CPU_CYCLES),
    ("instructions", &[], b::PERF_COUNT_HW_INSTRUCTIONS),
    ("cache-references", &[], b::PERF_COUNT_HW_CACHE_REFERENCES),
    ("cache-misses", &[], b::PERF_COUNT_HW_CACHE_MISSES),
    (
        "branch-instructions",
        &["branches"],
        b::PERF_COUNT_HW_BRANCH_INSTRUCTIONS,
    ),
    ("branch-misses", &[], b::PERF_COUNT_HW_BRANCH_MISSES),
    ("bus-cycles", &[], b::PERF_COUNT_HW_BUS_CYCLES),
    (
        "stalled-cycles-frontend",
        &["idle-cycles-frontend"],
        b::PERF_COUNT_HW_STALLED_CYCLES_FRONTEND,
    ),
    (
        "stalled-cycles-backend",
        &["idle-cycles-backend"],
        b::PERF_COUNT_HW_STALLED_CYCLES_BACKEND,
    ),
    ("ref-cycles", &[], b::PERF_COUNT_HW_REF_CPU_CYCLES),
];

const SOFTWARE: &[(&str, &[&str], u32)] = &[
    ("cpu-clock", &[], b::PERF_COUNT_SW_CPU_CLOCK),
    ("task-clock", &[], b::PERF_COUNT_SW_TASK_CLOCK),
    ("page-faults", &["faults"], b::PERF_COUNT_SW_PAGE_FAULTS),
    ("minor-faults", &[], b::PERF_COUNT_SW_PAGE_FAULTS_MIN),
    ("major-faults", &[], b::PERF_COUNT_SW_PAGE_FAULTS_MAJ),
    (
        "context-switches",
        &["cs"],
        b::PERF_COUNT_SW_CONTEXT_SWITCHES,
    ),
    (
        "cpu-migrations",
        &["migrations"],
        b::PERF_COUNT_SW_CPU_MIGRATIONS,
    ),
    ("alignment-faults", &[], b::PERF_COUNT_SW_ALIGNMENT_FAULTS),
    ("emulation-faults", &[], b::PERF_COUNT_SW_EMULATION_FAULTS),
];

const CACHES: &[(&str, u32)] = &[
    ("L1-dcache", b::PERF_COUNT_HW_CACHE_L1D),
    ("L1-icache", b::PERF_COUNT_HW_CACHE_L1I),
    ("LLC", b::PERF_COUNT_HW_CACHE_LL),
    ("dTLB", b::PERF_COUNT_HW_CACHE_DTLB),
    ("iTLB", b::PERF_COUNT_HW_CACHE_ITLB),
    ("branch", b::PERF_COUNT_HW_CACHE_BPU),
    ("node", b::PERF_COUNT_HW_CACHE_NODE),
];

const CACHE_OPS: &[(&str, &str, u32)] = &[
    ("loads", "load-misses", b::PERF_COUNT_HW_CACHE_OP_READ),
    ("stores", "store-misses", b::PERF_COUNT_HW_CACHE_OP_WRITE),
    (
        "prefetches",
        "prefetch-misses",
        b::PERF_COUNT_HW_CACHE_OP_PREFETCH,
    ),
];

impl Event {
    fn new(name: &str, type_: u32, config: u64, kind: Kind) -> Event {
        Event {
            name: name.to_string(),
            type_,
            config,
            kind,
        }
    }

    /// The CPU clock, flamebpf's default event.
    #[cfg(test)]
    pub fn cpu_clock() -> Event {
        Event::new(
            "cpu-clock",
            b::PERF_TYPE_SOFTWARE,
            u64::from(b::PERF_COUNT_SW_CPU_CLOCK),
            Kind::Software,
        )
    }

    /// Every named event (raw codes aside), in `flamebpf list` order.
    pub fn all() -> Vec<Event> {
        let mut out: Vec<Event> = HARDWARE
            .iter()
            .map(|(n, _, c)| Event::new(n, b::PERF_TYPE_HARDWARE, u64::from(*c), Kind::Hardware))
            .collect();
        for (cache, id) in CACHES {
            for (access, miss, op) in CACHE_OPS {
                for (suffix, result) in [
                    (access, b::PERF_COUNT_HW_CACHE_RESULT_ACCESS),
                    (miss, b::PERF_COUNT_HW_CACHE_RESULT_MISS),
                ] {
                    let config = u64::from(*id) | u64::from(*op) << 8 | u64::from(result) << 16;
                    out.push(Event::new(
                        &format!("{cache}-{suffix}"),
                        b::PERF_TYPE_HW_CACHE,
                        config,
                        Kind::HardwareCache,
                    ));
                }
            }
        }
        out.extend(
            SOFTWARE.iter().map(|(n, _, c)| {
                Event::new(n, b::PERF_TYPE_SOFTWARE, u64::from(*c), Kind::Software)
            }),
        );
        out
    }

    /// Parses an event name as perf spells it: a name or alias (case does not
    /// matter), or `rNNNN` for a raw code in hex.
    pub fn parse(name: &str) -> Result<Event, UnknownEvent> {
        let lower = name.to_ascii_lowercase();
        if let Some(hex) = lower.strip_prefix('r') {
            if !hex.is_empty() && hex.len() <= 16 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
                // at most 16 hex digits: always fits
                let config = u64::from_str_radix(hex, 16).map_err(|_| UnknownEvent(name.into()))?;
                return Ok(Event::new(&lower, b::PERF_TYPE_RAW, config, Kind::Raw));
            }
        }
        let alias = HARDWARE
            .iter()
            .chain(SOFTWARE)
            .find(|(_, aliases, _)| aliases.iter().any(|a| *a == lower))
            .map(|(n, _, _)| *n);
        let wanted = alias.unwrap_or(&lower);
        Event::all()
            .into_iter()
            .find(|e| e.name.eq_ignore_ascii_case(wanted))
            .ok_or_else(|| UnknownEvent(name.into()))
    }

    /// The CPU and task clocks, which count nanoseconds on a timer.
    pub fn is_timer(&self) -> bool {
        self.type_ == b::PERF_TYPE_SOFTWARE
            && (self.config == u64::from(b::PERF_COUNT_SW_CPU_CLOCK)
                || self.config == u64::from(b::PERF_COUNT_SW_TASK_CLOCK))
    }

    /// What one unit of weight is: nanoseconds for the clocks, events otherwise.
    pub fn unit(&self) -> &'static str {
        if self.is_timer() {
            "ns"
        } else {
            "events"
        }
    }

    /// The rate used when neither -F nor -c is given: 99 Hz for the timers, perf's
    /// 4000 Hz for the rest (lowered to the kernel's limit when that is lower).
    pub fn default_rate(&self, max_rate: u64) -> Rate {
        let hz = if self.is_timer() {
            DEFAULT_TIMER_FREQUENCY
        } else {
            DEFAULT_EVENT_FREQUENCY
        };
        Rate::Frequency(hz.min(max_rate).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_aliases_and_case() {
        assert_eq!(Event::parse("cpu-clock").unwrap(), Event::cpu_clock());
        let c = Event::parse("cpu-cycles").unwrap();
        assert_eq!(
            (c.name.as_str(), c.type_, c.config),
            ("cycles", b::PERF_TYPE_HARDWARE, 0)
        );
        assert_eq!(Event::parse("faults").unwrap().name, "page-faults");
        assert_eq!(Event::parse("CS").unwrap().name, "context-switches");
        assert_eq!(Event::parse("Page-Faults").unwrap().name, "page-faults");
    }

    #[test]
    fn cache_events_encode_cache_op_and_result() {
        let e = Event::parse("L1-dcache-load-misses").unwrap();
        assert_eq!(e.type_, b::PERF_TYPE_HW_CACHE);
        assert_eq!(e.config, 1 << 16); // L1D, read, miss
        let e = Event::parse("llc-store-misses").unwrap();
        assert_eq!(e.name, "LLC-store-misses");
        assert_eq!(e.config, 2 | 1 << 8 | 1 << 16);
        let e = Event::parse("dTLB-loads").unwrap();
        assert_eq!(e.config, 3);
        assert_eq!(
            Event::all()
                .iter()
                .filter(|e| e.kind == Kind::HardwareCache)
                .count(),
            42
        );
    }

    #[test]
    fn raw_codes() {
        let e = Event::parse("r01c2").unwrap();
        assert_eq!(
            (e.type_, e.config, e.kind),
            (b::PERF_TYPE_RAW, 0x1c2, Kind::Raw)
        );
        assert!(Event::parse("r").is_err());
        assert!(Event::parse("rxyz").is_err());
        assert!(Event::parse("r12345678901234567").is_err());
    }

    #[test]
    fn unknown_names_point_at_the_list() {
        let e = Event::parse("cyclez").unwrap_err().to_string();
        assert!(
            e.contains("unknown event \"cyclez\"") && e.contains("flamebpf list"),
            "{e}"
        );
    }

    #[test]
    fn timers_weigh_nanoseconds_and_default_to_99_hz() {
        let clock = Event::cpu_clock();
        assert!(clock.is_timer());
        assert_eq!(clock.unit(), "ns");
        assert_eq!(clock.default_rate(100000), Rate::Frequency(99));
        let pf = Event::parse("page-faults").unwrap();
        assert!(!pf.is_timer());
        assert_eq!(pf.unit(), "events");
        assert_eq!(pf.default_rate(100000), Rate::Frequency(4000));
        assert_eq!(pf.default_rate(1000), Rate::Frequency(1000));
    }
}
