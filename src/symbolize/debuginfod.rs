//! `--debuginfod URL` and `DEBUGINFOD_URLS`: the client a command's symbolizer
//! fetches missing debug files with (see [`symbolizer::debuginfod`]), with the
//! cache directory and the time the command may wait for fetches in all.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use symbolizer::debuginfod::{self, Debuginfod};

use crate::cli::DebuginfodArgs;

/// What `record` may wait for debug files, in all, before it writes: a fetch
/// still running then leaves its object's frames `object+0x…`.
pub const RECORD_WAIT: Duration = Duration::from_secs(5);
/// What `query` may wait.
pub const QUERY_WAIT: Duration = Duration::from_secs(10);

/// The cache directory `name` when none is given: $XDG_CACHE_HOME/flamebpf/NAME,
/// else /var/cache/flamebpf/NAME for root, else ~/.cache/flamebpf/NAME.
pub fn default_cache(name: &str) -> PathBuf {
    let under = |base: PathBuf| base.join("flamebpf").join(name);
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return under(PathBuf::from(x));
    }
    let system = PathBuf::from("/var/cache/flamebpf").join(name);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return system;
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => under(PathBuf::from(home).join(".cache")),
        None => system,
    }
}

/// The client the flags (else `DEBUGINFOD_URLS`) ask for, `None` without
/// servers; a bad URL is refused in one line before anything starts.
pub fn start(args: &DebuginfodArgs, wait: Duration) -> Result<Option<Arc<Debuginfod>>> {
    let urls = if args.urls.is_empty() {
        debuginfod::urls_from_env()
    } else {
        args.urls.clone()
    };
    if urls.is_empty() {
        return Ok(None);
    }
    for url in &urls {
        if let Err(e) = debuginfod::check_url(url) {
            bail!("--debuginfod {e}");
        }
    }
    let mut config = debuginfod::Config::new(
        urls,
        args.cache
            .clone()
            .unwrap_or_else(|| default_cache("debuginfod")),
    );
    config.wait_budget = wait;
    match Debuginfod::start(config) {
        Ok(d) => Ok(Some(Arc::new(d))),
        Err(e) => bail!("--debuginfod: cannot start the fetch thread: {e}"),
    }
}
