//! `flamebpf continuous`: checks the options, starts the endpoint and the capture,
//! and hands them to the [`crate::daemon`] until SIGINT/SIGTERM or the command's
//! exit.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::capture::setup::{Filters, CONTINUOUS};
use crate::capture::skel::limits::COMM_LEN;
use crate::capture::target::Target;
use crate::capture::{sampling, session, Plan, Session};
use crate::cli::ContinuousArgs;
use crate::daemon::http::{self, Ask};
use crate::daemon::metrics::Metrics;
use crate::daemon::{store, Daemon, StoreConfig};
use crate::export;
use crate::output::summary::Accounting;
use crate::symbolize::Worker;

/// Runs the daemon; returns the command's exit status (0 without one).
pub fn run(args: ContinuousArgs) -> Result<i32> {
    crate::cli::check_continuous(&args).map_err(anyhow::Error::msg)?;
    crate::labels::configure(
        crate::labels::from_args(&args.sampling.label, &args.sampling.label_rule)
            .map_err(anyhow::Error::msg)?,
    );
    let service_name = export::service::service_name(
        crate::labels::config().service_name.as_deref(),
        &args.command,
        &args.pid,
    );
    let export =
        export::Settings::from_args(&args.export, service_name).map_err(anyhow::Error::msg)?;
    let plan = Plan::check(&args.sampling, CONTINUOUS)?;
    let all = args.pid.is_empty() && args.command.is_empty();
    let target = Target::from_args(&args.pid, all, &args.command)?;
    let filters = check_filters(&args)?;
    if let Some(warning) = store::prepare(&args.dir)? {
        eprintln!("flamebpf: warning: {warning}");
    }
    let (setup, note) = plan.clone().setup(target.clone(), filters, args.verbose)?;
    if let Some(note) = note {
        eprintln!("flamebpf: {note}");
    }
    session::raise_fd_limit();

    let metrics = Arc::new(Metrics::default());
    let asks = listen(&args, &metrics)?;
    let exporters = export
        .map(|settings| export::start(settings, &args.dir, &metrics))
        .transpose()?;
    // reads kallsyms on its own thread while the capture starts
    let mut symbolize_options = plan.symbolize_options();
    symbolize_options.debuginfod =
        crate::symbolize::debuginfod::start(&args.sampling.debuginfod, std::time::Duration::ZERO)?;
    let worker = Worker::start(symbolize_options);
    let stop = session::stop_flag()?;
    let session = Session::start(&setup)?;
    let store = StoreConfig {
        dir: args.dir.clone(),
        retain: args.retain,
        max_disk: args.max_disk,
        window: Duration::from_secs_f64(args.window),
    };
    let meta = sampling::meta(&setup.sampling, &target, setup.off_cpu_min_ns.is_some());
    let mut daemon = Daemon::start(session, worker, metrics, meta, store, args.verbose)?;
    let child_status = daemon.run(&stop, &asks)?;
    let done = daemon.finish(child_status.is_some())?;
    let exported = exporters.map(export::Exporters::finish).unwrap_or_default();

    let accounting = Accounting {
        stats: done.stats,
        lost_records: done.lost_records,
        missed: done.missed,
        ..Accounting::default()
    };
    let failures = match done.window_failures {
        0 => String::new(),
        n => format!(" ({n} could not be written)"),
    };
    eprintln!(
        "flamebpf: {} samples in {} windows written to {}{failures}; {}",
        done.stats[crate::capture::Stat::STAT_SAMPLES],
        done.windows_written,
        args.dir.display(),
        accounting.classes_and_losses()
    );
    for line in exported {
        eprintln!("flamebpf: {line}");
    }
    Ok(child_status.filter(|&c| c != 0).unwrap_or(0))
}

/// The filters only the daemon has, checked before anything starts.
fn check_filters(args: &ContinuousArgs) -> Result<Filters> {
    if let Some(comm) = &args.comm {
        if comm.is_empty() || comm.len() > COMM_LEN - 1 {
            bail!(
                "--comm {comm:?}: command names are 1 to {} bytes long",
                COMM_LEN - 1
            );
        }
    }
    if let Some(cg) = &args.cgroup {
        if !cg.is_dir() {
            bail!("--cgroup {}: no such directory (give a cgroup v2 directory, e.g. under /sys/fs/cgroup)", cg.display());
        }
    }
    Ok(Filters {
        comm: args.comm.clone(),
        cgroup: args.cgroup.clone(),
    })
}

/// Starts the endpoint when --listen asks for it; the receiver gets its profile
/// requests (and never any without it).
fn listen(args: &ContinuousArgs, metrics: &Arc<Metrics>) -> Result<mpsc::Receiver<Ask>> {
    let (asks_tx, asks) = mpsc::channel::<Ask>();
    if let Some(addr) = args.listen {
        let bound = http::serve(addr, Arc::clone(metrics), args.dir.clone(), asks_tx)?;
        if !bound.ip().is_loopback() {
            eprintln!("flamebpf: warning: {bound} is not a loopback address: whoever reaches it can read every profile");
        }
        if args.verbose {
            eprintln!("flamebpf: serving on http://{bound}");
        }
    }
    Ok(asks)
}
