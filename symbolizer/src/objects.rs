//! The objects (executables, libraries, pseudo mappings) that mappings name.
//!
//! A file is opened when its first mapping is seen, while the process that maps it
//! still lives: through `/proc/PID/map_files` (the exact file, even if deleted or in
//! another mount namespace), else `/proc/PID/root/PATH`, else PATH. The open file is
//! kept, so symbolization at the end of the capture reads the right bytes even after
//! the process exited and its binary was removed or replaced.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::records::FileId;

/// Index of an object in the [`ObjectStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub u32);

/// What kind of thing a mapping maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// A file (ELF executable or shared object).
    File,
    /// The kernel-provided vDSO.
    Vdso,
    /// Anonymous memory, the heap or the stack: nothing names code there
    /// (JIT code needs a perf map).
    Anonymous,
}

/// An object that some mapping named. A clone shares the open file: whoever holds
/// one (a window waiting to be named on another thread) can still read the file
/// after the store closed its own handle.
#[derive(Debug, Clone)]
pub struct Object {
    /// The path as the process saw it (or a pseudo name such as `[vdso]`).
    pub path: String,
    /// What it is.
    pub kind: ObjectKind,
    /// The GNU build id: read from the file (or, from a kernel that was asked
    /// for them, reported with the mapping).
    pub build_id: Option<Vec<u8>>,
    file: Option<Arc<File>>,
    identity: Option<(u64, u64)>,
}

impl Object {
    /// The last path component: `libc.so.6` for `/usr/lib/x86_64-linux-gnu/libc.so.6`.
    pub fn short_name(&self) -> &str {
        match self.kind {
            ObjectKind::File => self.path.rsplit('/').next().unwrap_or(&self.path),
            _ => &self.path,
        }
    }

    /// The opened file's (st_dev, st_ino): which file this is, whatever path
    /// names it. `None` when it could not be opened.
    pub fn identity(&self) -> Option<(u64, u64)> {
        self.identity
    }

    /// Whether the file could be opened while the process lived.
    pub fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// The path to read the object from now: its own path when that still names
    /// the same file, otherwise the descriptor opened earlier. `None` when the
    /// object is no file or could never be opened.
    pub fn read_path(&self) -> Option<PathBuf> {
        let file = self.file.as_ref()?;
        let same = std::fs::metadata(&self.path)
            .ok()
            .is_some_and(|m| Some((m.dev(), m.ino())) == self.identity);
        Some(if same {
            PathBuf::from(&self.path)
        } else {
            PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    BuildId(Vec<u8>),
    Inode(u32, u32, u64),
    Path(String),
    Opened(u64, u64),
}

/// All objects seen during a capture, each opened once and shared by every process
/// that maps it.
#[derive(Debug, Default)]
pub struct ObjectStore {
    objects: Vec<Object>,
    by_key: HashMap<Key, ObjectId>,
    open_failures: u64,
}

/// Object id of anonymous memory, the same in every store.
pub const ANONYMOUS: ObjectId = ObjectId(0);
/// Object id of the vDSO, the same in every store.
pub const VDSO: ObjectId = ObjectId(1);

impl ObjectStore {
    /// A store that knows only the pseudo objects.
    pub fn new() -> ObjectStore {
        let pseudo = |path: &str, kind| Object {
            path: path.into(),
            kind,
            build_id: None,
            file: None,
            identity: None,
        };
        ObjectStore {
            objects: vec![
                pseudo("[anon]", ObjectKind::Anonymous),
                pseudo("[vdso]", ObjectKind::Vdso),
            ],
            by_key: HashMap::new(),
            open_failures: 0,
        }
    }

    /// The object with id `id`.
    pub fn get(&self, id: ObjectId) -> &Object {
        &self.objects[id.0 as usize]
    }

    /// Number of objects, the pseudo ones included.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether the store holds only the pseudo objects.
    pub fn is_empty(&self) -> bool {
        self.objects.len() <= 2
    }

    /// Lets go of the files of objects outside `in_use` and forgets how they were
    /// found (a later mapping of the same file opens it again); a file closes once
    /// no clone of its object holds it either. Returns the paths they were read
    /// from, so symbol caches can be dropped too. Ids stay valid.
    pub fn prune(&mut self, in_use: &std::collections::HashSet<ObjectId>) -> Vec<PathBuf> {
        let mut released = Vec::new();
        for (i, obj) in self.objects.iter_mut().enumerate() {
            let id = ObjectId(i as u32);
            if obj.kind != ObjectKind::File || in_use.contains(&id) || obj.file.is_none() {
                continue;
            }
            if let Some(p) = obj.read_path() {
                released.push(p);
            }
            obj.file = None;
        }
        self.by_key.retain(|_, id| {
            in_use.contains(id) || self.objects[id.0 as usize].kind != ObjectKind::File
        });
        released
    }

    /// Objects whose file is open now.
    pub fn open_count(&self) -> usize {
        self.objects.iter().filter(|o| o.file.is_some()).count()
    }

    /// How many files could not be opened by any route.
    pub fn open_failures(&self) -> u64 {
        self.open_failures
    }

    /// Returns the object that `pid`'s mapping of `path` at `start..end` names,
    /// opening it the first time it is seen.
    pub fn observe(
        &mut self,
        pid: u32,
        start: u64,
        end: u64,
        path: &str,
        file: &FileId,
    ) -> ObjectId {
        if path == "[vdso]" {
            return VDSO;
        }
        if is_anonymous(path) {
            return ANONYMOUS;
        }
        let key = match file {
            FileId::BuildId(id) if !id.is_empty() => Key::BuildId(id.clone()),
            FileId::Inode {
                major, minor, ino, ..
            } if *ino != 0 => Key::Inode(*major, *minor, *ino),
            _ => Key::Path(path.to_string()),
        };
        if let Some(&id) = self.by_key.get(&key) {
            return id;
        }
        let opened = open(pid, start, end, path);
        let identity = opened
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(|m| (m.dev(), m.ino()));
        // The same file may arrive under another key (build id from tracking, inode
        // from a /proc snapshot): one object per file.
        if let Some((dev, ino)) = identity {
            if let Some(&id) = self.by_key.get(&Key::Opened(dev, ino)) {
                self.by_key.insert(key, id);
                return id;
            }
        }
        if opened.is_none() {
            self.open_failures += 1;
        }
        let id = ObjectId(u32::try_from(self.objects.len()).expect("fewer than 2^32 objects"));
        self.objects.push(Object {
            path: path.strip_suffix(" (deleted)").unwrap_or(path).to_string(),
            kind: ObjectKind::File,
            build_id: match file {
                FileId::BuildId(b) => Some(b.clone()),
                _ => opened.as_ref().and_then(crate::buildid::read),
            },
            file: opened.map(Arc::new),
            identity,
        });
        self.by_key.insert(key, id);
        if let Some((dev, ino)) = identity {
            self.by_key.insert(Key::Opened(dev, ino), id);
        }
        id
    }
}

fn is_anonymous(path: &str) -> bool {
    path.is_empty()
        || path.starts_with("//anon")
        || path.starts_with("[anon")
        || path == "[heap]"
        || path.starts_with("[stack")
        || path == "[vsyscall]"
        || path == "[vvar]"
        || path.starts_with("[uprobes]")
}

fn open(pid: u32, start: u64, end: u64, path: &str) -> Option<File> {
    let candidates = [
        PathBuf::from(format!("/proc/{pid}/map_files/{start:x}-{end:x}")),
        Path::new(&format!("/proc/{pid}/root")).join(path.trim_start_matches('/')),
        PathBuf::from(path.strip_suffix(" (deleted)").unwrap_or(path)),
    ];
    candidates.iter().find_map(|p| File::open(p).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_mappings_have_fixed_ids() {
        let mut s = ObjectStore::new();
        assert_eq!(s.observe(1, 0, 1, "[vdso]", &FileId::Unknown), VDSO);
        assert_eq!(s.observe(1, 0, 1, "//anon", &FileId::Unknown), ANONYMOUS);
        assert_eq!(
            s.observe(1, 0, 1, "[anon:jit]", &FileId::Unknown),
            ANONYMOUS
        );
        assert_eq!(s.observe(1, 0, 1, "", &FileId::Unknown), ANONYMOUS);
        assert!(s.is_empty());
    }

    #[test]
    fn the_same_file_under_two_keys_is_one_object() {
        let exe = std::env::current_exe().unwrap();
        let path = exe.to_str().unwrap();
        let mut s = ObjectStore::new();
        let me = std::process::id();
        let a = s.observe(me, 0, 1, path, &FileId::BuildId(vec![1, 2, 3]));
        let meta = std::fs::metadata(&exe).unwrap();
        let b = s.observe(
            me,
            0,
            1,
            path,
            &FileId::Inode {
                major: 0,
                minor: 0,
                ino: meta.ino(),
                generation: 0,
            },
        );
        assert_eq!(a, b);
        assert_eq!(s.len(), 3);
        let obj = s.get(a);
        assert!(obj.is_open());
        assert_eq!(obj.read_path().as_deref(), Some(exe.as_path()));
        assert_eq!(obj.build_id.as_deref(), Some(&[1u8, 2, 3][..]));
        assert_eq!(obj.short_name(), exe.file_name().unwrap().to_str().unwrap());
    }

    #[test]
    fn a_removed_file_is_read_through_the_descriptor_kept_open() {
        let dir = tempdir();
        let path = dir.join("libgone.so");
        std::fs::write(&path, b"\x7fELF not really").unwrap();
        let mut s = ObjectStore::new();
        let id = s.observe(
            std::process::id(),
            0,
            1,
            path.to_str().unwrap(),
            &FileId::Unknown,
        );
        std::fs::remove_file(&path).unwrap();
        let read = s.get(id).read_path().unwrap();
        assert!(read.starts_with("/proc/self/fd/"), "{read:?}");
        assert_eq!(std::fs::read(&read).unwrap(), b"\x7fELF not really");
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn pruning_closes_unused_files_and_a_new_mapping_reopens_them() {
        let exe = std::env::current_exe().unwrap();
        let path = exe.to_str().unwrap();
        let mut s = ObjectStore::new();
        let me = std::process::id();
        let a = s.observe(me, 0, 1, path, &FileId::BuildId(vec![9; 20]));
        assert_eq!(s.open_count(), 1);
        let released = s.prune(&std::collections::HashSet::new());
        assert_eq!(released, std::slice::from_ref(&exe));
        assert_eq!(s.open_count(), 0);
        let b = s.observe(me, 0, 1, path, &FileId::BuildId(vec![9; 20]));
        assert_ne!(a, b, "a fresh object, opened again");
        assert_eq!(s.open_count(), 1);
    }

    #[test]
    fn a_clone_reads_the_file_after_the_store_let_it_go() {
        // a window queued for naming holds clones of its objects while the
        // tracker forgets the processes that mapped them
        let dir = tempdir();
        let path = dir.join("libqueued.so");
        std::fs::write(&path, b"\x7fELF queued").unwrap();
        let mut s = ObjectStore::new();
        let id = s.observe(
            std::process::id(),
            0,
            1,
            path.to_str().unwrap(),
            &FileId::Unknown,
        );
        let held = s.get(id).clone();
        std::fs::remove_file(&path).unwrap();
        s.prune(&std::collections::HashSet::new());
        assert!(!s.get(id).is_open());
        let read = held.read_path().expect("the clone keeps the file open");
        assert_eq!(std::fs::read(&read).unwrap(), b"\x7fELF queued");
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn a_file_that_cannot_be_opened_is_counted() {
        let mut s = ObjectStore::new();
        let id = s.observe(1 << 30, 0, 1, "/no/such/lib.so", &FileId::Unknown);
        assert!(!s.get(id).is_open());
        assert_eq!(s.get(id).read_path(), None);
        assert_eq!(s.open_failures(), 1);
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "symbolizer-objects-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
