//! `flamebpf list`: every event flamebpf knows, and whether this machine can
//! sample it (each one probed with perf_event_open).

use std::io::Write;

use anyhow::Result;

use crate::capture::events::{Event, Rate};
use crate::capture::perf::{self, SamplingEvent};

/// Prints the table on stdout; a reader that stops early (`| head`) is no error.
pub fn run() -> Result<()> {
    match print() {
        Err(e)
            if e.downcast_ref::<std::io::Error>().map(std::io::Error::kind)
                == Some(std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        r => r,
    }
}

fn print() -> Result<()> {
    let system_wide = crate::capture::privilege::check().is_ok();
    let cpu = perf::online_cpus()?.first().copied().unwrap_or(0);
    let out = std::io::stdout();
    let mut out = out.lock();
    writeln!(out, "{:<28} {:<15} can sample here", "EVENT", "TYPE")?;
    for event in Event::all() {
        let s = SamplingEvent {
            event: event.clone(),
            rate: Rate::Period(1_000_000),
            precise_ip: 0,
        };
        let verdict = match perf::probe(&s, cpu, system_wide) {
            Ok(()) => "yes".to_string(),
            Err(e) => format!("no: {}", perf::refusal_reason(&e)),
        };
        writeln!(
            out,
            "{:<28} {:<15} {verdict}",
            event.name,
            event.kind.label()
        )?;
    }
    writeln!(
        out,
        "{:<28} {:<15} raw PMU event code in hex, as perf writes it",
        "rNNNN", "raw"
    )?;
    if !system_wide {
        writeln!(
            out,
            "\n(probed for this user's own processes only; as root, or with CAP_BPF and \
             CAP_PERFMON, the answer is for the whole machine)"
        )?;
    }
    Ok(())
}
