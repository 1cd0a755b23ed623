//! The on-disk cache of debug files fetched from debuginfod servers, by build id:
//! `DIR/<hex>/debuginfo` (the layout of elfutils' client), plus `DIR/<hex>/missing`
//! for a negative entry (the servers answered 404 or failed), honoured for
//! [`NEGATIVE_TTL`]. Files are written to a temporary name and renamed into place
//! once their build id checked out, so a reader never sees half a file; the cache
//! is kept under its size cap by deleting the least recently stored files.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How long a failed fetch is remembered (elfutils' client waits 10 minutes too).
pub const NEGATIVE_TTL: Duration = Duration::from_secs(600);

/// A debug file cache in one directory.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    max_bytes: u64,
}

/// Build ids as paths: lowercase hex.
pub fn hex(build_id: &[u8]) -> String {
    build_id.iter().map(|b| format!("{b:02x}")).collect()
}

impl Cache {
    /// A cache in `dir` (created 0700 when first written) kept under `max_bytes`.
    pub fn new(dir: PathBuf, max_bytes: u64) -> Cache {
        Cache { dir, max_bytes }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry(&self, build_id: &[u8]) -> PathBuf {
        self.dir.join(hex(build_id))
    }

    /// The cached debug file of `build_id`, if there is one.
    pub fn get(&self, build_id: &[u8]) -> Option<PathBuf> {
        let path = self.entry(build_id).join("debuginfo");
        path.is_file().then_some(path)
    }

    /// Whether a fetch of `build_id` failed less than [`NEGATIVE_TTL`] ago.
    pub fn is_missing(&self, build_id: &[u8]) -> bool {
        std::fs::metadata(self.entry(build_id).join("missing"))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < NEGATIVE_TTL)
    }

    /// Remembers that `build_id` could not be fetched.
    pub fn set_missing(&self, build_id: &[u8]) -> io::Result<()> {
        let entry = self.entry(build_id);
        create_private_dir(&entry)?;
        File::create(entry.join("missing")).map(drop)
    }

    /// A new temporary file in the cache for a download.
    pub fn temp(&self) -> io::Result<tempfile::NamedTempFile> {
        create_private_dir(&self.dir)?;
        tempfile::Builder::new()
            .prefix(".fetch-")
            .tempfile_in(&self.dir)
    }

    /// Moves a downloaded file into place as `build_id`'s debug file, then keeps
    /// the cache under its cap.
    pub fn store(&self, build_id: &[u8], file: tempfile::NamedTempFile) -> io::Result<PathBuf> {
        let entry = self.entry(build_id);
        create_private_dir(&entry)?;
        let path = entry.join("debuginfo");
        file.persist(&path).map_err(|e| e.error)?;
        let _ = std::fs::remove_file(entry.join("missing"));
        self.evict(Some(&path));
        Ok(path)
    }

    /// Deletes the oldest debug files until the cache is under its cap (never
    /// `keep`, the file just stored, so one file larger than the cap still works
    /// until the next one comes).
    pub fn evict(&self, keep: Option<&Path>) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(SystemTime, u64, PathBuf)> = dir
            .flatten()
            .map(|e| e.path().join("debuginfo"))
            .filter_map(|p| {
                let m = std::fs::symlink_metadata(&p).ok()?;
                Some((m.modified().ok()?, m.len(), p))
            })
            .collect();
        let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
        files.sort();
        for (_, len, path) in files {
            if total <= self.max_bytes {
                break;
            }
            if Some(path.as_path()) == keep {
                continue;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
                if let Some(entry) = path.parent() {
                    let _ = std::fs::remove_dir(entry);
                }
            }
        }
    }
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn put(cache: &Cache, id: u8, bytes: usize) -> PathBuf {
        let mut t = cache.temp().unwrap();
        t.write_all(&vec![0u8; bytes]).unwrap();
        let p = cache.store(&[id; 20], t).unwrap();
        // distinct modification times, oldest first
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + u64::from(id));
        File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(when)
            .unwrap();
        p
    }

    #[test]
    fn the_oldest_files_go_first_past_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("c"), 250);
        let a = put(&cache, 1, 100);
        let b = put(&cache, 2, 100);
        assert_eq!(cache.get(&[1; 20]), Some(a.clone()));
        let c = put(&cache, 3, 100);
        assert!(!a.exists(), "the oldest went");
        assert!(b.exists() && c.exists());
        assert_eq!(cache.get(&[1; 20]), None);
    }

    #[test]
    fn negative_entries_are_remembered_and_cleared_by_a_fetch() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().to_path_buf(), 1 << 20);
        assert!(!cache.is_missing(&[7; 20]));
        cache.set_missing(&[7; 20]).unwrap();
        assert!(cache.is_missing(&[7; 20]));
        put(&cache, 7, 10);
        assert!(!cache.is_missing(&[7; 20]));
    }
}
