//! `flamebpf query`: windows of a continuous store merged into one profile,
//! filtered by time, process and command, written in any format.

use std::time::SystemTime;

use anyhow::{bail, Result};

use crate::cli::QueryArgs;
use crate::daemon::merge::{load, Filter};
use crate::output;

/// `flamebpf query`.
pub fn run(args: QueryArgs) -> Result<i32> {
    let outputs = output::plan(&args.out.output, args.out.format.map(Into::into))?;
    output::preflight(&outputs)?;
    if !args.dir.is_dir() {
        bail!("no store at {}: not a directory", args.dir.display());
    }
    let now = SystemTime::now();
    let filter = Filter {
        from: args
            .since
            .map(|d| now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH))
            .or(args.from),
        to: args.to,
        pid: args.pid,
        comm: args.comm.clone(),
    };
    if let (Some(f), Some(t)) = (filter.from, filter.to) {
        if t < f {
            bail!("--to is before --from");
        }
    }
    let (mut profile, skipped) = load(&args.dir, &filter)?;
    for s in &skipped {
        eprintln!("flamebpf: warning: {s}");
    }
    let wait = crate::symbolize::debuginfod::QUERY_WAIT;
    if let Some(d) = crate::symbolize::debuginfod::start(&args.debuginfod, wait)? {
        let symbolizer = symbolizer::Symbolizer::new(symbolizer::symbolize::Options::default());
        (profile, _) = crate::symbolize::stored::rename(profile, &d, &symbolizer);
    }
    output::write_all(&outputs, &profile, &output::write_options(&args.out))?;
    Ok(0)
}
