//! Reading the store back: the windows a filter selects, merged into one profile.
//! `flamebpf query` and the endpoint's /flamegraph.svg both read through here.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use flamegraphs::{Meta, Profile};

use super::store;

/// Which samples of the store to merge.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Windows ending at or after this.
    pub from: Option<SystemTime>,
    /// Windows starting at or before this.
    pub to: Option<SystemTime>,
    /// Only this process.
    pub pid: Option<u32>,
    /// Only threads with this command name.
    pub comm: Option<String>,
}

/// Merges the windows of `dir` that `filter` selects. Fails when the store cannot
/// be read or a window is not a profile.
pub fn load(dir: &Path, filter: &Filter) -> Result<Profile> {
    let windows =
        store::list(dir).with_context(|| format!("reading the store {}", dir.display()))?;
    let windows = store::select(windows, filter.from, filter.to);
    let mut merged: Option<Profile> = None;
    for w in &windows {
        let bytes =
            std::fs::read(&w.path).with_context(|| format!("reading {}", w.path.display()))?;
        let mut p = flamegraphs::pprof::read(&bytes)
            .with_context(|| format!("{} is not a profile", w.path.display()))?;
        p.samples.retain(|s| {
            filter.pid.is_none_or(|pid| s.pid == pid)
                && filter.comm.as_deref().is_none_or(|c| s.comm == c)
        });
        match merged.as_mut() {
            None => merged = Some(p),
            Some(m) => m.merge(&p),
        }
    }
    let mut profile = merged.unwrap_or_else(|| Profile::new(Meta::default()));
    if let (Some(first), Some(last)) = (windows.first(), windows.last()) {
        profile.meta.start = first.start;
        profile.meta.duration = last
            .end
            .duration_since(first.start)
            .unwrap_or(Duration::ZERO);
    }
    let mut what = vec![format!("{} windows of {}", windows.len(), dir.display())];
    if let Some(pid) = filter.pid {
        what.push(format!("pid {pid}"));
    }
    if let Some(comm) = &filter.comm {
        what.push(format!("comm {comm}"));
    }
    profile.meta.target = what.join(", ");
    // samples of different windows are merged per stack by every writer
    Ok(profile)
}
