//! The continuous store: one compressed pprof file per window, named for the
//! window's start and end (`window-<start_ms>-<end_ms>.pb.gz`), so listing the
//! directory is the index. Retention deletes the oldest windows first.
//!
//! Windows hold raw kernel addresses and command lines: they are written 0600 and
//! a store the daemon creates is 0700, so only root reads them (and KASLR holds).
//! Anything in the directory that is not a regular file is ignored.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One window file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowFile {
    /// Where it is.
    pub path: PathBuf,
    /// When the window started.
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
    /// Its size in bytes.
    pub bytes: u64,
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The file name of a window.
pub fn file_name(start: SystemTime, end: SystemTime) -> String {
    format!("window-{}-{}.pb.gz", ms(start), ms(end))
}

fn parse_name(name: &str) -> Option<(SystemTime, SystemTime)> {
    let rest = name.strip_prefix("window-")?.strip_suffix(".pb.gz")?;
    let (a, b) = rest.split_once('-')?;
    let t = |v: &str| {
        v.parse::<u64>()
            .ok()
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
    };
    Some((t(a)?, t(b)?))
}

/// The windows in `dir`, oldest first; other files, and anything that is not a
/// regular file (a FIFO would block its reader), are left alone.
pub fn list(dir: &Path) -> io::Result<Vec<WindowFile>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let name = entry.file_name();
        let Some((start, end)) = name.to_str().and_then(parse_name) else {
            continue;
        };
        let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
        out.push(WindowFile {
            path: entry.path(),
            start,
            end,
            bytes,
        });
    }
    out.sort_by_key(|w| (w.start, w.end));
    Ok(out)
}

/// The windows that overlap [from, to].
pub fn select(
    windows: Vec<WindowFile>,
    from: Option<SystemTime>,
    to: Option<SystemTime>,
) -> Vec<WindowFile> {
    windows
        .into_iter()
        .filter(|w| from.is_none_or(|f| w.end >= f) && to.is_none_or(|t| w.start <= t))
        .collect()
}

/// Creates the store readable by root only, or checks the one there: a
/// directory, and whether others can list it (a warning, as the directory may be
/// shared and is not ours to change).
pub fn prepare(dir: &Path) -> anyhow::Result<Option<String>> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {
            let mode = m.permissions().mode() & 0o777;
            Ok((mode & 0o077 != 0).then(|| {
                format!(
                    "the store {} is open to other users (mode {mode:04o}): windows are 0600, but their names show when the machine was busy; chmod 700 it",
                    dir.display()
                )
            }))
        }
        Ok(_) => anyhow::bail!("--dir {}: not a directory", dir.display()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| anyhow::anyhow!("cannot create the store {}: {e}", dir.display()))?;
            Ok(None)
        }
        Err(e) => anyhow::bail!("--dir {}: {e}", dir.display()),
    }
}

/// Writes a window atomically (temporary file, then rename), readable by root only.
pub fn write(
    dir: &Path,
    start: SystemTime,
    end: SystemTime,
    bytes: &[u8],
) -> anyhow::Result<PathBuf> {
    let path = dir.join(file_name(start, end));
    crate::output::files::write_private(&path, |w| Ok(std::io::Write::write_all(w, bytes)?))?;
    Ok(path)
}

/// Deletes windows that ended before `now - retain`, then the oldest ones until
/// the store is under `max_bytes`. Returns the store's size afterwards.
pub fn enforce(dir: &Path, now: SystemTime, retain: Duration, max_bytes: u64) -> io::Result<u64> {
    let windows = list(dir)?;
    let cutoff = now.checked_sub(retain).unwrap_or(UNIX_EPOCH);
    let mut total: u64 = windows.iter().map(|w| w.bytes).sum();
    for w in windows {
        if (w.end < cutoff || total > max_bytes) && std::fs::remove_file(&w.path).is_ok() {
            total -= w.bytes;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn names_round_trip_and_strangers_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), at(100), at(160), b"abc").unwrap();
        write(dir.path(), at(40), at(100), b"abcdef").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "keep me").unwrap();
        let w = list(dir.path()).unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!((w[0].start, w[0].end, w[0].bytes), (at(40), at(100), 6));
        assert_eq!(w[1].path.file_name().unwrap(), "window-100000-160000.pb.gz");
        assert_eq!(select(w.clone(), Some(at(120)), None).len(), 1);
        assert_eq!(select(w.clone(), None, Some(at(90))).len(), 1);
        assert_eq!(select(w, Some(at(90)), Some(at(110))).len(), 2);
    }

    #[test]
    fn windows_are_private_and_non_regular_files_are_ignored() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        assert_eq!(prepare(&store).unwrap(), None);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&store), 0o700);
        let w = write(&store, at(0), at(60), b"x").unwrap();
        assert_eq!(mode(&w), 0o600);
        std::fs::create_dir(store.join(file_name(at(60), at(120)))).unwrap();
        assert_eq!(list(&store).unwrap().len(), 1);
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(prepare(&file)
            .unwrap_err()
            .to_string()
            .contains("not a directory"));
        std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(prepare(&store).unwrap().unwrap().contains("0755"));
    }

    #[test]
    fn retention_deletes_the_oldest_first_by_age_then_by_size() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..10u64 {
            write(dir.path(), at(i * 60), at(i * 60 + 60), &[0u8; 100]).unwrap();
        }
        // by age: windows that ended more than 5 minutes before t=600 go
        let left = enforce(dir.path(), at(600), Duration::from_secs(300), u64::MAX).unwrap();
        let w = list(dir.path()).unwrap();
        assert_eq!(w.len(), 6);
        assert_eq!(w[0].start, at(240));
        assert_eq!(left, 600);
        // by size: the oldest go until 350 bytes remain at most
        let left = enforce(dir.path(), at(600), Duration::from_secs(3600), 350).unwrap();
        let w = list(dir.path()).unwrap();
        assert_eq!(left, 300);
        assert_eq!(
            w.iter().map(|w| w.start).collect::<Vec<_>>(),
            [at(420), at(480), at(540)]
        );
    }
}
