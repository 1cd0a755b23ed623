//! Choosing the sampling event: the rate from -F, -c or the event's default, a
//! probe that refuses an event this machine cannot sample (naming those it can)
//! before anything starts, and `--precise`.

use anyhow::{bail, Result};

use crate::capture::events::{Event, Kind, Rate};
use crate::capture::perf::{self, SamplingEvent};

/// What the outputs say about how a capture sampled.
pub fn meta(
    sampling: &SamplingEvent,
    target: &crate::capture::target::Target,
    off_cpu: bool,
) -> flamegraphs::Meta {
    let (frequency, period) = match sampling.rate {
        Rate::Frequency(hz) => (Some(hz), None),
        Rate::Period(n) => (None, Some(n)),
    };
    flamegraphs::Meta {
        target: target.describe(),
        event: sampling.event.name.clone(),
        unit: sampling.event.unit().into(),
        frequency,
        period,
        off_cpu,
        ..flamegraphs::Meta::default()
    }
}

/// The rate the flags ask for, checked against the kernel's limit.
pub fn rate(event: &Event, freq: Option<u64>, period: Option<u64>, max_rate: u64) -> Result<Rate> {
    Ok(match (freq, period) {
        (Some(0), _) => bail!("-F 0: the sampling frequency must be at least 1 Hz"),
        (Some(hz), _) if hz > max_rate => bail!(
            "-F {hz}: above the kernel's limit of {max_rate} Hz (kernel.perf_event_max_sample_rate)"
        ),
        (Some(hz), _) => Rate::Frequency(hz),
        (None, Some(0)) => bail!("-c 0: the period must be at least 1 event"),
        (None, Some(n)) => Rate::Period(n),
        (None, None) => event.default_rate(max_rate),
    })
}

/// The names of the events this machine can sample at `rate`.
pub fn available(rate: Rate, cpu: u32, system_wide: bool) -> Vec<String> {
    Event::all()
        .into_iter()
        .filter(|e| {
            let s = SamplingEvent {
                event: e.clone(),
                rate,
                precise_ip: 0,
            };
            perf::probe(&s, cpu, system_wide).is_ok()
        })
        .map(|e| e.name)
        .collect()
}

/// Checks that `event` can be sampled on `cpu` and settles `--precise`. Returns the
/// event to open and, for `--precise`, a note saying what was granted.
pub fn choose(
    event: Event,
    rate: Rate,
    precise: bool,
    cpu: u32,
) -> Result<(SamplingEvent, Option<String>)> {
    let s = SamplingEvent {
        event,
        rate,
        precise_ip: 0,
    };
    if let Err(e) = perf::probe(&s, cpu, true) {
        let avail = available(rate, cpu, true);
        bail!(
            "cannot sample {} here: {}; events this machine can sample: {}",
            s.event.name,
            perf::refusal_reason(&e),
            if avail.is_empty() {
                "none".to_string()
            } else {
                avail.join(", ")
            }
        );
    }
    if !precise {
        return Ok((s, None));
    }
    if s.event.kind == Kind::Software {
        let note = format!(
            "--precise: {} is a software event, counted where it happens: there is no skid to remove",
            s.event.name
        );
        return Ok((s, Some(note)));
    }
    for level in (1..=3u8).rev() {
        let candidate = SamplingEvent {
            precise_ip: level,
            ..s.clone()
        };
        if perf::probe(&candidate, cpu, true).is_ok() {
            let what = match level {
                3 => "zero skid",
                2 => "requested zero skid",
                _ => "constant skid",
            };
            let note = format!(
                "--precise: sampling {} with precise_ip={level} ({what})",
                candidate.event.name
            );
            return Ok((candidate, Some(note)));
        }
    }
    let note = format!(
        "--precise: this PMU cannot sample {} precisely; sampling it without precise_ip",
        s.event.name
    );
    Ok((s, Some(note)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_from_flags_and_defaults() {
        let clock = Event::cpu_clock();
        assert_eq!(rate(&clock, None, None, 1000).unwrap(), Rate::Frequency(99));
        assert_eq!(
            rate(&clock, Some(999), None, 1000).unwrap(),
            Rate::Frequency(999)
        );
        assert_eq!(rate(&clock, None, Some(5), 1000).unwrap(), Rate::Period(5));
        let e = rate(&clock, Some(0), None, 1000).unwrap_err().to_string();
        assert!(e.contains("-F 0"), "{e}");
        let e = rate(&clock, Some(1001), None, 1000)
            .unwrap_err()
            .to_string();
        assert!(e.contains("limit of 1000 Hz"), "{e}");
        let e = rate(&clock, None, Some(0), 1000).unwrap_err().to_string();
        assert!(e.starts_with("-c 0"), "{e}");
    }
}
