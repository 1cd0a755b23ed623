//! Built tables, shared by object identity: every process that maps the same
//! binary (each `cc1` of a build) gets the table built for the first one, and
//! the BPF side and the userspace walker hold the same `Arc`.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use super::error::TableError;
use super::table::UnwindTable;

/// What identifies an object's contents.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ObjectKey {
    /// The GNU build id.
    BuildId(Vec<u8>),
    /// A file without a known build id: same device, inode, size and
    /// modification time is taken as same contents.
    File {
        /// `st_dev`.
        dev: u64,
        /// `st_ino`.
        ino: u64,
        /// `st_size`.
        size: u64,
        /// `st_mtime` in nanoseconds since the epoch.
        mtime_ns: i128,
    },
}

impl ObjectKey {
    /// The key of the file at `path`, from its metadata (links followed, so a
    /// `/proc/PID/map_files` or `/proc/self/fd` path gives the file's own key).
    pub fn of_file(path: &Path) -> io::Result<ObjectKey> {
        let m = std::fs::metadata(path)?;
        Ok(ObjectKey::File {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }
}

/// An attempt that failed in a way that will not change for the same contents
/// (every kind but I/O), remembered so it is not made again.
fn lasting(e: &TableError) -> Option<TableError> {
    match e {
        TableError::Io(_) => None,
        TableError::NotElf(e) => Some(TableError::NotElf(*e)),
        TableError::UnsupportedArch { machine } => {
            Some(TableError::UnsupportedArch { machine: *machine })
        }
        TableError::NoCfi => Some(TableError::NoCfi),
        TableError::TooLarge { span } => Some(TableError::TooLarge { span: *span }),
    }
}

/// Tables by object identity.
#[derive(Debug, Default)]
pub struct TableCache {
    entries: HashMap<ObjectKey, Result<Arc<UnwindTable>, TableError>>,
}

impl TableCache {
    /// An empty cache.
    pub fn new() -> TableCache {
        TableCache::default()
    }

    /// The table of `key`, built with `build` unless already built. A failure
    /// other than I/O is remembered and returned again without building.
    pub fn get_or_build(
        &mut self,
        key: &ObjectKey,
        build: impl FnOnce() -> Result<UnwindTable, TableError>,
    ) -> Result<Arc<UnwindTable>, TableError> {
        if let Some(entry) = self.entries.get(key) {
            return match entry {
                Ok(t) => Ok(Arc::clone(t)),
                Err(e) => Err(lasting(e).unwrap_or(TableError::NoCfi)),
            };
        }
        match build() {
            Ok(t) => {
                let t = Arc::new(t);
                self.entries.insert(key.clone(), Ok(Arc::clone(&t)));
                Ok(t)
            }
            Err(e) => {
                if let Some(kept) = lasting(&e) {
                    self.entries.insert(key.clone(), Err(kept));
                }
                Err(e)
            }
        }
    }

    /// The table of `key`, if built.
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<UnwindTable>> {
        self.entries.get(key)?.as_ref().ok().cloned()
    }

    /// Drops the tables nothing outside the cache holds any more, and the
    /// failures remembered; returns how many entries went.
    pub fn evict_unused(&mut self) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|_, e| e.as_ref().is_ok_and(|t| Arc::strong_count(t) > 1));
        before - self.entries.len()
    }

    /// Number of entries, failures included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Rows held, over all tables.
    pub fn rows(&self) -> usize {
        self.tables().map(|t| t.len()).sum()
    }

    /// Heap bytes the tables hold.
    pub fn bytes(&self) -> usize {
        self.tables().map(|t| t.bytes()).sum()
    }

    fn tables(&self) -> impl Iterator<Item = &Arc<UnwindTable>> {
        self.entries.values().filter_map(|e| e.as_ref().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::super::table::{CfaRule, RbpRule};
    use super::*;

    fn small() -> UnwindTable {
        UnwindTable::from_rows(
            [
                (0x1000, CfaRule::Rsp(8), RbpRule::Same),
                (0x1010, CfaRule::NoInfo, RbpRule::Same),
            ],
            vec![],
        )
        .unwrap()
    }

    #[test]
    fn a_second_request_shares_the_table_and_eviction_waits_for_users() {
        let mut c = TableCache::new();
        let key = ObjectKey::BuildId(vec![1, 2, 3]);
        let a = c.get_or_build(&key, || Ok(small())).unwrap();
        let b = c.get_or_build(&key, || panic!("built twice")).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!((c.len(), c.rows()), (1, 2));
        assert!(c.bytes() >= 2 * std::mem::size_of::<super::super::table::UnwindRow>());
        assert_eq!(c.evict_unused(), 0);
        drop((a, b));
        assert_eq!(c.evict_unused(), 1);
        assert!(c.is_empty() && c.get(&key).is_none());
    }

    #[test]
    fn lasting_failures_are_remembered_and_io_failures_retried() {
        let mut c = TableCache::new();
        let key = ObjectKey::BuildId(vec![9]);
        let r = c.get_or_build(&key, || Err(TableError::NoCfi));
        assert!(matches!(r, Err(TableError::NoCfi)));
        let r = c.get_or_build(&key, || panic!("tried twice"));
        assert!(matches!(r, Err(TableError::NoCfi)));

        let key = ObjectKey::BuildId(vec![10]);
        let gone = || Err(io::Error::from(io::ErrorKind::NotFound).into());
        assert!(matches!(c.get_or_build(&key, gone), Err(TableError::Io(_))));
        let t = c.get_or_build(&key, || Ok(small())).unwrap();
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn a_file_key_follows_links_and_changes_with_the_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("obj");
        std::fs::write(&path, b"one").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let k = ObjectKey::of_file(&path).unwrap();
        assert_eq!(ObjectKey::of_file(&link).unwrap(), k);
        std::fs::write(&path, b"three").unwrap();
        assert_ne!(ObjectKey::of_file(&path).unwrap(), k);
    }
}
