//! The store as a backend's queue: the windows after its cursor, oldest first.
//! Retention (`--retain`, `--max-disk`) deletes the oldest windows whether sent or
//! not; a window seen waiting and then gone was dropped unsent, and is counted.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::Result;

use super::cursor::{key, Cursor, Key};
use crate::daemon::store::{self, WindowFile};

/// A backend's queue.
#[derive(Debug)]
pub struct Queue {
    dir: PathBuf,
    cursor: Cursor,
    /// Windows seen waiting and not done yet.
    waiting: BTreeSet<Key>,
}

/// A listing of the queue.
pub struct Listing {
    /// The windows waiting, oldest first.
    pub pending: Vec<WindowFile>,
    /// Windows that were waiting and are gone (deleted by retention) since the
    /// last listing.
    pub dropped: u64,
}

impl Queue {
    /// The queue of the store `dir` behind `cursor`.
    pub fn new(dir: PathBuf, cursor: Cursor) -> Queue {
        Queue {
            dir,
            cursor,
            waiting: BTreeSet::new(),
        }
    }

    /// The windows waiting now.
    pub fn list(&mut self) -> Result<Listing> {
        let done = self.cursor.done;
        let pending: Vec<WindowFile> = store::list(&self.dir)?
            .into_iter()
            .filter(|w| key(w) > done)
            .collect();
        let now: BTreeSet<Key> = pending.iter().map(key).collect();
        let dropped = self.waiting.difference(&now).count() as u64;
        self.waiting = now;
        Ok(Listing { pending, dropped })
    }

    /// The window `k` is done with: acknowledged, rejected for good, or gone.
    pub fn done(&mut self, k: Key) -> Result<()> {
        self.waiting.remove(&k);
        self.cursor.advance(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn windows_after_the_cursor_wait_in_order_and_deleted_ones_count_as_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        store::write(dir.path(), at(0), at(60), b"old").unwrap();
        let cursor = Cursor::open(dir.path(), "u", at(60)).unwrap();
        let mut q = Queue::new(dir.path().to_path_buf(), cursor);
        for i in 1..4 {
            store::write(dir.path(), at(i * 60), at(i * 60 + 60), b"w").unwrap();
        }
        let l = q.list().unwrap();
        assert_eq!(
            l.pending.len(),
            3,
            "the window from before the cursor is not sent"
        );
        assert_eq!(l.dropped, 0);
        q.done(key(&l.pending[0])).unwrap();
        // retention deletes the oldest: one sent, one waiting
        std::fs::remove_file(&l.pending[0].path).unwrap();
        std::fs::remove_file(&l.pending[1].path).unwrap();
        let l = q.list().unwrap();
        assert_eq!((l.pending.len(), l.dropped), (1, 1));
        assert_eq!(l.pending[0].start, at(180));
    }
}
