//! Reading the store back: the windows a filter selects, merged into one profile.
//! `flamebpf query` and the endpoint's /flamegraph.svg both read through here.
//!
//! A window that cannot be read (corrupt, truncated, deleted meanwhile, larger
//! than a window can be) is skipped and reported, so one bad file does not take
//! every answer down until it ages out. Each file is opened without following
//! links and without blocking, and read only if the opened file is regular.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use flamegraphs::{Meta, Profile};

use super::store;

/// The largest window file read (compressed). The daemon's windows are far
/// smaller: 60 s at 19 Hz on 64 CPUs is a few MiB.
pub const MAX_WINDOW_FILE: u64 = 64 << 20;

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

/// A window left out of an answer, and why.
#[derive(Debug, Clone)]
pub struct Skipped {
    /// The window's file.
    pub path: PathBuf,
    /// Why it was left out.
    pub reason: String,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "skipped {}: {}", self.path.display(), self.reason)
    }
}

/// Reads one window file, refusing what is not a regular file or is too large.
pub fn read_window(path: &Path) -> Result<Profile> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .context("cannot open it")?;
    let meta = file.metadata().context("cannot stat it")?;
    if !meta.is_file() {
        bail!("not a regular file");
    }
    if meta.len() > MAX_WINDOW_FILE {
        bail!("larger than {} MiB", MAX_WINDOW_FILE >> 20);
    }
    let mut bytes = Vec::new();
    file.take(MAX_WINDOW_FILE)
        .read_to_end(&mut bytes)
        .context("cannot read it")?;
    flamegraphs::pprof::read(&bytes).context("not a profile")
}

/// Merges the windows of `dir` that `filter` selects, with the windows that had to
/// be skipped. Fails only when the store itself cannot be listed.
pub fn load(dir: &Path, filter: &Filter) -> Result<(Profile, Vec<Skipped>)> {
    let windows =
        store::list(dir).with_context(|| format!("reading the store {}", dir.display()))?;
    let windows = store::select(windows, filter.from, filter.to);
    let mut merged: Option<Profile> = None;
    let mut skipped = Vec::new();
    for w in &windows {
        let mut p = match read_window(&w.path) {
            Ok(p) => p,
            Err(e) => {
                skipped.push(Skipped {
                    path: w.path.clone(),
                    reason: format!("{e:#}"),
                });
                continue;
            }
        };
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
    let mut what = vec![format!(
        "{} windows of {}",
        windows.len() - skipped.len(),
        dir.display()
    )];
    if let Some(pid) = filter.pid {
        what.push(format!("pid {pid}"));
    }
    if let Some(comm) = &filter.comm {
        what.push(format!("comm {comm}"));
    }
    profile.meta.target = what.join(", ");
    // samples of different windows are merged per stack by every writer
    Ok((profile, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn window(dir: &Path, start: u64, comm: &str) {
        let mut p = Profile::new(Meta::default());
        let f = p.frame_location(flamegraphs::Frame::named(
            "main",
            flamegraphs::FrameKind::User,
        ));
        p.samples.push(flamegraphs::Sample {
            pid: 1,
            tid: 1,
            comm: comm.into(),
            stack: vec![f],
            count: 1,
            weight: 10,
        });
        let mut bytes = Vec::new();
        flamegraphs::pprof::write(&p, &mut bytes).unwrap();
        store::write(dir, at(start), at(start + 60), &bytes).unwrap();
    }

    #[test]
    fn corrupt_fifo_and_vanished_windows_are_skipped_and_the_rest_served() {
        let dir = tempfile::tempdir().unwrap();
        window(dir.path(), 0, "a");
        window(dir.path(), 120, "b");
        std::fs::write(
            dir.path().join(store::file_name(at(60), at(120))),
            b"\x1f\x8bjunk",
        )
        .unwrap();
        let fifo = std::ffi::CString::new(
            dir.path()
                .join(store::file_name(at(180), at(240)))
                .into_os_string()
                .into_encoded_bytes(),
        )
        .unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let t = std::time::Instant::now();
        let (p, skipped) = load(dir.path(), &Filter::default()).unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "a FIFO must not block"
        );
        assert_eq!(p.total_samples(), 2);
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert!(
            skipped[0].reason.contains("not a profile"),
            "{}",
            skipped[0]
        );
        // a window deleted between the listing and the read
        assert!(read_window(&dir.path().join("window-1-2.pb.gz")).is_err());
    }
}
