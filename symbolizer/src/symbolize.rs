//! Names addresses with blazesym: (object, file offset) pairs through the object's
//! ELF symbols and DWARF, kernel addresses through kallsyms.
//!
//! blazesym keeps one parsed copy per object path for the life of the
//! [`Symbolizer`], so every process that maps a library shares its cache.

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{self, Input, Symbolized};

use crate::kallsyms::{Kallsyms, KernelNames};
use crate::vdso::Vdso;

/// One frame a symbolized address expands to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol {
    /// The demangled function name.
    pub name: String,
    /// Set for functions inlined into the frame before them.
    pub inlined: bool,
    /// Source file, with its directory when DWARF gives one.
    pub file: Option<String>,
    /// Source line.
    pub line: Option<u32>,
}

/// What the symbolizer resolves beyond function names.
#[derive(Debug, Clone)]
pub struct Options {
    /// Report inlined functions as frames of their own.
    pub inlined: bool,
    /// Read DWARF (line tables, inlining); without it only ELF symbols are used.
    pub debug_info: bool,
    /// Directories searched for separate debug files (`.gnu_debuglink` targets and
    /// `.build-id/xx/yyyy.debug`) besides /usr/lib/debug and /lib/debug.
    pub debug_dirs: Vec<PathBuf>,
    /// Keep C++ parameter lists and return types and Rust hashes in names
    /// (see [`crate::names`] for the short form).
    pub full_names: bool,
    /// Where debug files of objects without symbols are fetched from by build
    /// id ([`Symbolizer::object_by_id`]).
    pub debuginfod: Option<std::sync::Arc<crate::debuginfod::Debuginfod>>,
    /// Where separate debug files with compressed DWARF are kept inflated
    /// ([`crate::inflate`]); None reads them as they are, every time.
    pub inflate_cache: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            inlined: true,
            debug_info: true,
            debug_dirs: Vec::new(),
            full_names: false,
            debuginfod: None,
            inflate_cache: None,
        }
    }
}

/// Where debug files are looked for: the user's directories first, then the
/// system's.
fn debug_dirs(extra: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs = extra.to_vec();
    for d in ["/usr/lib/debug", "/lib/debug"] {
        if !dirs.iter().any(|x| x == Path::new(d)) {
            dirs.push(PathBuf::from(d));
        }
    }
    dirs
}

/// Frames of one address, outermost first: the function, then what was inlined into
/// it at that address. Empty when nothing covers the address. Shared, so answering
/// from the cache copies a pointer, not the names.
pub type Frames = Rc<[Symbol]>;

/// The names found in one object: the file they were read from, and each
/// offset's frames.
type ObjectNames = (Option<FileStamp>, HashMap<u64, Frames>);

/// The file an object was read from, and the inflated copy of its debug file.
type InflatedCopy = (Option<FileStamp>, Option<PathBuf>);

/// Which file a path names: device, inode, size and modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }
}

/// The names of at most this many offsets are kept per object between rounds
/// (about 200 bytes each).
pub const MAX_OFFSETS_PER_OBJECT: usize = 20_000;

/// A blazesym symbolizer with flamebpf's settings, kallsyms, the vDSO, and a cache
/// of what each object's offsets were named.
pub struct Symbolizer {
    inner: symbolize::Symbolizer,
    options: Options,
    kallsyms: OnceCell<Box<dyn KernelNames>>,
    vdso: OnceCell<Option<Vdso>>,
    /// Per object (by the path it is read from, and the identity of the file
    /// found there), the frames of each offset named so far: a later capture of
    /// the same objects (continuous mode) names its addresses from here. The
    /// identity matters: a path (a `/proc/self/fd/N` whose number was reused, a
    /// library replaced by an upgrade) may come to name another file.
    cache: RefCell<HashMap<PathBuf, ObjectNames>>,
    /// When each object was last used, in calls to [`Symbolizer::next_round`].
    last_used: RefCell<HashMap<PathBuf, u64>>,
    round: u64,
    /// Per object (and the identity of its file), the inflated copy of its
    /// separate debug file, if it has one worth inflating.
    copies: RefCell<HashMap<PathBuf, InflatedCopy>>,
    inflate_cache: Option<crate::debuginfod::Cache>,
}

impl std::fmt::Debug for Symbolizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Symbolizer")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Why a whole batch could not be symbolized; callers match on the kind (an
/// object that cannot be read is worth a warning, an absent vDSO is not).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// blazesym could not read or parse the object.
    #[error("{}: {source}", path.display())]
    ObjectUnreadable {
        /// The object.
        path: PathBuf,
        /// blazesym's reason.
        source: blazesym::Error,
    },
    /// This process has no vDSO mapped, so there is no image to read.
    #[error("this process has no vDSO to read")]
    NoVdso,
    /// /proc/kallsyms lists no addresses: they are hidden from this process.
    #[error("kernel: /proc/kallsyms lists no addresses (no privileges?)")]
    NoKernelSymbols,
}

impl Symbolizer {
    /// A symbolizer with the given options; names are always demangled, short
    /// unless `full_names`.
    pub fn new(options: Options) -> Symbolizer {
        // blazesym demangles only in full: it hands over the mangled names and
        // `names::demangle` shortens them.
        let inner = symbolize::Symbolizer::builder()
            .enable_demangling(false)
            .enable_inlined_fns(options.inlined && options.debug_info)
            .enable_code_info(options.debug_info)
            .set_debug_dirs(Some(debug_dirs(&options.debug_dirs)))
            .build();
        let inflate_cache = options
            .inflate_cache
            .clone()
            .map(|dir| crate::debuginfod::Cache::new(dir, crate::inflate::CACHE_BYTES));
        Symbolizer {
            inner,
            options,
            kallsyms: OnceCell::new(),
            vdso: OnceCell::new(),
            cache: RefCell::new(HashMap::new()),
            last_used: RefCell::new(HashMap::new()),
            round: 0,
            copies: RefCell::new(HashMap::new()),
            inflate_cache,
        }
    }

    /// Drops everything cached about the object read from `path`.
    pub fn evict(&mut self, path: &Path) {
        self.cache.borrow_mut().remove(path);
        self.last_used.borrow_mut().remove(path);
        if let Some((_, Some(copy))) = self.copies.borrow_mut().remove(path) {
            let _ = self.inner.evict(&blazesym::symbolize::evict::Evict::Elf(
                blazesym::symbolize::evict::Elf::new(&copy),
            ));
        }
        let _ = self.inner.evict(&blazesym::symbolize::evict::Evict::Elf(
            blazesym::symbolize::evict::Elf::new(path),
        ));
    }

    /// Lets go of what blazesym parsed (symbol tables, DWARF, the file mappings)
    /// while keeping the names already found: a long-running capture names the
    /// offsets it saw before from its own cache and parses an object again only for
    /// offsets it never saw. Keeps a daemon's memory near what it needs between
    /// windows instead of near the sum of every object it ever parsed.
    pub fn release_parsed(&mut self) {
        let paths: Vec<PathBuf> = self.last_used.borrow().keys().cloned().collect();
        for path in paths {
            let _ = self.inner.evict(&blazesym::symbolize::evict::Evict::Elf(
                blazesym::symbolize::evict::Elf::new(&path),
            ));
        }
        // Return the freed heap to the system: glibc keeps it otherwise.
        // SAFETY: malloc_trim has no preconditions.
        unsafe { libc::malloc_trim(0) };
    }

    /// Ends a round of symbolization (a window) and keeps the caches of at most
    /// `max_objects` objects, evicting the least recently used, and of at most
    /// [`MAX_OFFSETS_PER_OBJECT`] offsets each.
    pub fn next_round(&mut self, max_objects: usize) {
        self.round += 1;
        // An object in use all the time (the C library, a shell) is never
        // evicted, and every new leaf address sampled in it adds an entry: its
        // names start over once they are that many, at the cost of one parse.
        for (_, known) in self.cache.borrow_mut().values_mut() {
            if known.len() > MAX_OFFSETS_PER_OBJECT {
                *known = HashMap::new();
            }
        }
        let mut used: Vec<(u64, PathBuf)> = self
            .last_used
            .borrow()
            .iter()
            .map(|(p, r)| (*r, p.clone()))
            .collect();
        if used.len() <= max_objects {
            return;
        }
        used.sort();
        let excess = used.len() - max_objects;
        for (_, path) in used.into_iter().take(excess) {
            self.evict(&path);
        }
    }

    /// Objects with cached symbols.
    pub fn cached_objects(&self) -> usize {
        self.cache.borrow().len()
    }

    /// Offsets whose names are cached, over all objects.
    pub fn cached_offsets(&self) -> usize {
        self.cache
            .borrow()
            .values()
            .map(|(_, known)| known.len())
            .sum()
    }

    /// Names file offsets of the ELF object at `path`. Offsets named before are
    /// answered from the cache; the rest go to blazesym in one batch.
    pub fn object(&self, path: &Path, offsets: &[u64]) -> Result<Vec<Frames>, Error> {
        self.names(path, offsets, false)
    }

    /// [`Symbolizer::object`], then, for the offsets nothing named, the debug
    /// file of `build_id` from debuginfod when one is configured and has it now
    /// (or within its wait budget): a stripped object's functions get their
    /// names once the file arrived. The debug file is read by virtual address,
    /// which the object's own segments give: a debug-only file's segments may
    /// have no file contents to map offsets through.
    pub fn object_by_id(
        &self,
        path: &Path,
        build_id: Option<&[u8]>,
        offsets: &[u64],
    ) -> Result<Vec<Frames>, Error> {
        let mut frames = self.object(path, offsets)?;
        let (Some(debuginfod), Some(id)) = (&self.options.debuginfod, build_id) else {
            return Ok(frames);
        };
        let unnamed: Vec<usize> = (0..frames.len())
            .filter(|&i| frames[i].is_empty())
            .collect();
        if unnamed.is_empty() {
            return Ok(frames);
        }
        let Some(debug) = debuginfod.debug_file(id) else {
            return Ok(frames);
        };
        let segments = std::fs::File::open(path)
            .map(|f| crate::buildid::load_segments(&f))
            .unwrap_or_default();
        let found: Vec<(usize, u64)> = unnamed
            .iter()
            .filter_map(|&i| crate::buildid::virtual_address(&segments, offsets[i]).map(|v| (i, v)))
            .collect();
        let virt: Vec<u64> = found.iter().map(|&(_, v)| v).collect();
        // a debug file that cannot be read leaves the names as they were
        if let Ok(named) = self.names(&debug, &virt, true) {
            for ((i, _), f) in found.iter().zip(named) {
                frames[*i] = f;
            }
        }
        Ok(frames)
    }

    /// Names virtual addresses (as the ELF file lays them out) of a debug file.
    pub fn debug_file(&self, path: &Path, addrs: &[u64]) -> Result<Vec<Frames>, Error> {
        self.names(path, addrs, true)
    }

    /// Names `offsets` of the ELF file at `path`: file offsets, or virtual
    /// addresses with `virtual_addrs` (a file is only ever read one way).
    fn names(
        &self,
        path: &Path,
        offsets: &[u64],
        virtual_addrs: bool,
    ) -> Result<Vec<Frames>, Error> {
        self.last_used
            .borrow_mut()
            .insert(path.to_path_buf(), self.round);
        let stamp = FileStamp::of(path);
        let mut cache = self.cache.borrow_mut();
        let (seen, known) = cache.entry(path.to_path_buf()).or_default();
        if *seen != stamp {
            // another file than the one named so far: forget its names
            // (blazesym's own file cache checks the same identity)
            *seen = stamp;
            known.clear();
        }
        let missing: Vec<u64> = offsets
            .iter()
            .copied()
            .filter(|o| !known.contains_key(o))
            .collect();
        if !missing.is_empty() {
            let copy = match virtual_addrs {
                false => self.inflated_copy(path, stamp),
                true => None,
            };
            let unreadable = |source| Error::ObjectUnreadable {
                path: path.to_path_buf(),
                source,
            };
            match copy {
                // the copy is the debug file: read by virtual address
                Some(copy) => {
                    let segments = std::fs::File::open(path)
                        .map(|f| crate::buildid::load_segments(&f))
                        .unwrap_or_default();
                    let virt: Vec<Option<u64>> = missing
                        .iter()
                        .map(|&o| crate::buildid::virtual_address(&segments, o))
                        .collect();
                    let found: Vec<u64> = virt.iter().flatten().copied().collect();
                    let mut elf = Elf::new(&copy);
                    elf.debug_syms = true;
                    let syms = self
                        .inner
                        .symbolize(&Source::Elf(elf), Input::VirtOffset(&found))
                        .map_err(unreadable)?;
                    let mut syms = syms.into_iter();
                    for (o, v) in missing.iter().zip(&virt) {
                        let named = match v {
                            Some(_) => syms.next().map(|s| frames(s, self.options.full_names)),
                            None => None,
                        };
                        known.insert(*o, named.unwrap_or_else(|| Rc::from([])));
                    }
                }
                None => {
                    let mut elf = Elf::new(path);
                    elf.debug_syms = self.options.debug_info;
                    let input = if virtual_addrs {
                        Input::VirtOffset(missing.as_slice())
                    } else {
                        Input::FileOffset(missing.as_slice())
                    };
                    let syms = self
                        .inner
                        .symbolize(&Source::Elf(elf), input)
                        .map_err(unreadable)?;
                    for (o, sym) in missing.iter().zip(syms) {
                        known.insert(*o, frames(sym, self.options.full_names));
                    }
                }
            }
        }
        Ok(offsets.iter().map(|o| Rc::clone(&known[o])).collect())
    }

    /// The inflated copy of the separate debug file of the object at `path`
    /// (whose file is `stamp`), when there is a cache and the file is worth it;
    /// decided once per file.
    fn inflated_copy(&self, path: &Path, stamp: Option<FileStamp>) -> Option<PathBuf> {
        let cache = self.inflate_cache.as_ref()?;
        if !self.options.debug_info {
            return None;
        }
        if let Some((seen, copy)) = self.copies.borrow().get(path) {
            if *seen == stamp {
                return copy.clone();
            }
        }
        let dirs = debug_dirs(&self.options.debug_dirs);
        let copy = crate::inflate::debug_file_of(path, &dirs)
            .and_then(|(id, debug)| crate::inflate::inflated(cache, &id, &debug));
        if let Some(copy) = &copy {
            // blazesym keeps the copy parsed: let it go with the rest
            self.last_used.borrow_mut().insert(copy.clone(), self.round);
        }
        self.copies
            .borrow_mut()
            .insert(path.to_path_buf(), (stamp, copy.clone()));
        copy
    }

    /// Names offsets into the vDSO (the same image in every process).
    pub fn vdso(&self, offsets: &[u64]) -> Result<Vec<Frames>, Error> {
        let vdso = self.vdso.get_or_init(|| Vdso::load().ok());
        match vdso {
            Some(v) => self.object(&v.path(), offsets),
            None => Err(Error::NoVdso),
        }
    }

    /// Names kernel addresses with `k` (the kernel itself, say, rather than
    /// /proc/kallsyms) unless a namer is already in use.
    pub fn set_kernel_names(&self, k: Box<dyn KernelNames>) {
        let _ = self.kallsyms.set(k);
    }

    fn kallsyms(&self) -> &dyn KernelNames {
        self.kallsyms
            .get_or_init(|| Box::new(Kallsyms::load().unwrap_or_default()))
            .as_ref()
    }

    /// Names kernel addresses through /proc/kallsyms or the namer set (modules
    /// and BPF programs included, as `name [module]`).
    pub fn kernel(&self, addrs: &[u64]) -> Result<Vec<Frames>, Error> {
        let k = self.kallsyms();
        if k.is_empty() && !addrs.is_empty() {
            return Err(Error::NoKernelSymbols);
        }
        Ok(k.names(addrs)
            .into_iter()
            .map(|name| {
                name.map(|name| {
                    Rc::from([Symbol {
                        name,
                        inlined: false,
                        file: None,
                        line: None,
                    }])
                })
                .unwrap_or_else(|| Rc::from([]))
            })
            .collect())
    }
}

fn code_location(info: Option<&symbolize::CodeInfo<'_>>) -> (Option<String>, Option<u32>) {
    match info {
        Some(ci) => (Some(ci.to_path().to_string_lossy().into_owned()), ci.line),
        None => (None, None),
    }
}

fn frames(sym: Symbolized<'_>, full_names: bool) -> Frames {
    let Symbolized::Sym(sym) = sym else {
        return Rc::from([]);
    };
    // blazesym gives the outer function and the chain inlined into it at this
    // address, each with its own location: the outer function's is the call site of
    // the first inlined function, the innermost one's is the address's own line.
    let mut out = Vec::with_capacity(1 + sym.inlined.len());
    let (file, line) = code_location(sym.code_info.as_deref());
    out.push(Symbol {
        name: crate::names::demangle(&sym.name, full_names).into_owned(),
        inlined: false,
        file,
        line,
    });
    for f in sym.inlined.iter() {
        let (file, line) = code_location(f.code_info.as_ref());
        out.push(Symbol {
            name: crate::names::demangle(&f.name, full_names).into_owned(),
            inlined: true,
            file,
            line,
        });
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn marker_function_for_symbolizer_test() -> usize {
        std::hint::black_box(42)
    }

    /// The marker function's file offset, found through our own mappings.
    fn marker_offset() -> u64 {
        let addr = marker_function_for_symbolizer_test as *const () as usize as u64;
        let maps = crate::procmaps::read(std::process::id()).unwrap();
        let m = maps
            .iter()
            .find(|m| m.start <= addr && addr < m.end)
            .expect("our code is mapped");
        addr - m.start + m.offset
    }

    #[test]
    fn names_a_function_of_this_test_binary_by_file_offset() {
        let exe = std::env::current_exe().unwrap();
        let offset = marker_offset();
        let s = Symbolizer::new(Options::default());
        let frames = s.object(&exe, &[offset, u64::MAX / 2]).unwrap();
        assert_eq!(
            s.object(&exe, &[offset]).unwrap()[0],
            frames[0],
            "the cache answers the same"
        );
        assert!(
            frames[0]
                .iter()
                .any(|f| f.name.contains("marker_function_for_symbolizer_test")),
            "{frames:?}"
        );
        assert!(frames[1].is_empty());
        assert_eq!(marker_function_for_symbolizer_test(), 42);
    }

    #[test]
    fn a_path_that_comes_to_name_another_file_is_named_afresh() {
        // as a library upgrade does: the same path, a new file renamed over it
        let exe = std::env::current_exe().unwrap();
        let offset = marker_offset();
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("libthing.so");
        std::fs::copy(&exe, &lib).unwrap();
        let s = Symbolizer::new(Options::default());
        let named = |s: &Symbolizer| {
            s.object(&lib, &[offset]).unwrap()[0]
                .iter()
                .any(|f| f.name.contains("marker_function_for_symbolizer_test"))
        };
        assert!(named(&s), "the first file's name");
        let new = dir.path().join("libthing.so.new");
        std::fs::copy("/bin/ls", &new).unwrap();
        std::fs::rename(&new, &lib).unwrap();
        assert!(
            !named(&s),
            "the replaced file's names are not the old file's"
        );
        assert_eq!(marker_function_for_symbolizer_test(), 42);
    }

    #[test]
    fn names_survive_releasing_what_was_parsed() {
        let exe = std::env::current_exe().unwrap();
        let mut s = Symbolizer::new(Options::default());
        let before = s.object(&exe, &[0x1000, 0x2000]).unwrap();
        s.release_parsed();
        assert_eq!(s.object(&exe, &[0x1000, 0x2000]).unwrap(), before);
        assert_eq!(
            s.object(&exe, &[0x3000]).unwrap().len(),
            1,
            "and new offsets parse again"
        );
    }

    #[test]
    fn the_least_recently_used_objects_are_evicted() {
        let exe = std::env::current_exe().unwrap();
        let mut s = Symbolizer::new(Options::default());
        s.object(&exe, &[0x1000]).unwrap();
        s.next_round(1);
        assert_eq!(s.cached_objects(), 1);
        s.object(Path::new("/proc/self/exe"), &[0x1000]).unwrap();
        s.next_round(1);
        assert_eq!(s.cached_objects(), 1, "the older object went");
        assert!(s.cache.borrow().contains_key(Path::new("/proc/self/exe")));
    }

    #[test]
    fn an_objects_names_start_over_past_the_bound() {
        let exe = std::env::current_exe().unwrap();
        let mut s = Symbolizer::new(Options::default());
        let few: Vec<u64> = (0..100u64).map(|i| 0x1000 + i * 4).collect();
        s.object(&exe, &few).unwrap();
        s.next_round(64);
        assert_eq!(s.cached_offsets(), 100, "under the bound, names stay");
        let many: Vec<u64> = (0..=MAX_OFFSETS_PER_OBJECT as u64)
            .map(|i| 0x1000 + i)
            .collect();
        s.object(&exe, &many).unwrap();
        assert!(s.cached_offsets() > MAX_OFFSETS_PER_OBJECT);
        s.next_round(64);
        assert_eq!(s.cached_offsets(), 0, "past it, the object starts over");
        assert_eq!(s.object(&exe, &few).unwrap().len(), 100);
    }

    #[test]
    fn vdso_functions_have_names() {
        let v = Vdso::load().unwrap();
        let s = Symbolizer::new(Options::default());
        // the vDSO exports clock_gettime; find its offset through its dynamic symbols
        let image = std::fs::read(v.path()).unwrap();
        assert!(image
            .windows(b"clock_gettime".len())
            .any(|w| w == b"clock_gettime"));
        let named: Vec<Frames> = s
            .vdso(&(0..image.len() as u64).step_by(16).collect::<Vec<_>>())
            .unwrap();
        assert!(
            named
                .iter()
                .flat_map(|f| f.iter())
                .any(|f| f.name.contains("clock_gettime")),
            "some vDSO offset is named clock_gettime"
        );
    }

    #[test]
    fn a_file_that_is_not_elf_is_an_error_not_a_panic() {
        let s = Symbolizer::new(Options::default());
        assert!(s.object(Path::new("/proc/self/status"), &[0]).is_err());
    }
}
