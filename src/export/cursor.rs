//! A backend's place in the store: the last window it acknowledged, kept in a
//! small file in the store directory (written atomically), so a restarted daemon
//! sends what it had not sent yet and nothing twice.
//!
//! The file is named for a hash of the backend's URL: each backend keeps its own
//! place, and a store's listing ignores it (it is not named like a window).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::daemon::store::WindowFile;

/// A window's place in time order: (start, end) in ms since the epoch, as its
/// file name has them.
pub type Key = (u64, u64);

/// The key of a stored window.
pub fn key(w: &WindowFile) -> Key {
    (ms(w.start), ms(w.end))
}

/// Milliseconds since the epoch.
pub fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A backend's cursor and its file.
#[derive(Debug)]
pub struct Cursor {
    path: PathBuf,
    url: String,
    /// Windows up to this key are done (acknowledged, or given up on).
    pub done: Key,
}

/// The cursor file's name for a backend: FNV-1a of the URL, stable across
/// versions (std's hasher is not).
pub fn file_name(url: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in url.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!(".export-{h:016x}.cursor")
}

impl Cursor {
    /// The backend's cursor in `dir`; a backend new to this store starts at `now`,
    /// so it is not sent the windows of the days before it was configured. That
    /// start is written at once: a restart before the first acknowledgement must
    /// still send the windows from `now` on.
    pub fn open(dir: &Path, url: &str, now: SystemTime) -> Result<Cursor> {
        let path = dir.join(file_name(url));
        let done = match std::fs::read_to_string(&path) {
            Ok(text) => parse(&text).with_context(|| {
                format!("{}: not a cursor (delete it to start over)", path.display())
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let t = ms(now);
                (t, t)
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mut c = Cursor {
            path,
            url: url.to_string(),
            done,
        };
        c.advance(done)?;
        Ok(c)
    }

    /// Marks every window up to `key` done. Done in memory even when the file
    /// cannot be written (a full disk): the window is not sent again by this
    /// daemon, only, perhaps, once more after a restart.
    pub fn advance(&mut self, key: Key) -> Result<()> {
        self.done = key;
        let text = format!("{} {}\n{}\n", key.0, key.1, self.url);
        crate::output::files::write_private(&self.path, |w| Ok(w.write_all(text.as_bytes())?))
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

fn parse(text: &str) -> Option<Key> {
    let line = text.lines().next()?;
    let (a, b) = line.split_once(' ')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_cursor_survives_a_restart_and_backends_keep_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let now = UNIX_EPOCH + Duration::from_millis(5000);
        let mut a = Cursor::open(dir.path(), "grpc://a:1", now).unwrap();
        assert_eq!(a.done, (5000, 5000));
        a.advance((5000, 6000)).unwrap();
        let later = now + Duration::from_secs(60);
        let a = Cursor::open(dir.path(), "grpc://a:1", later).unwrap();
        assert_eq!(a.done, (5000, 6000), "resumed, not restarted at now");
        let b = Cursor::open(dir.path(), "grpc://b:1", later).unwrap();
        assert_eq!(b.done, (65000, 65000));
        assert_ne!(file_name("grpc://a:1"), file_name("grpc://b:1"));
        assert!(crate::daemon::store::list(dir.path()).unwrap().is_empty());
        std::fs::write(dir.path().join(file_name("x")), "junk").unwrap();
        assert!(Cursor::open(dir.path(), "x", now).is_err());
    }
}
