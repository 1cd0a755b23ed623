//! Names addresses with blazesym: (object, file offset) pairs through the object's
//! ELF symbols and DWARF, kernel addresses through kallsyms.
//!
//! blazesym keeps one parsed copy per object path for the life of the
//! [`Symbolizer`], so every process that maps a library shares its cache.

use std::path::Path;

use blazesym::symbolize::source::{Elf, Kernel, Source};
use blazesym::symbolize::{self, Input, Symbolized};
use blazesym::MaybeDefault;

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
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Report inlined functions as frames of their own.
    pub inlined: bool,
    /// Read DWARF (line tables, inlining); without it only ELF symbols are used.
    pub debug_info: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            inlined: true,
            debug_info: true,
        }
    }
}

/// Frames of one address, outermost first: the function, then what was inlined into
/// it at that address. Empty when nothing covers the address.
pub type Frames = Vec<Symbol>;

/// A blazesym symbolizer with flamebpf's settings.
pub struct Symbolizer {
    inner: symbolize::Symbolizer,
    options: Options,
}

impl std::fmt::Debug for Symbolizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Symbolizer")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Why a whole batch could not be symbolized.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

impl Symbolizer {
    /// A symbolizer with the given options; names are always demangled.
    pub fn new(options: Options) -> Symbolizer {
        let inner = symbolize::Symbolizer::builder()
            .enable_demangling(true)
            .enable_inlined_fns(options.inlined && options.debug_info)
            .enable_code_info(options.debug_info)
            .build();
        Symbolizer { inner, options }
    }

    /// Names file offsets of the ELF object at `path`.
    pub fn object(&self, path: &Path, offsets: &[u64]) -> Result<Vec<Frames>, Error> {
        let mut elf = Elf::new(path);
        elf.debug_syms = self.options.debug_info;
        let src = Source::Elf(elf);
        let syms = self
            .inner
            .symbolize(&src, Input::FileOffset(offsets))
            .map_err(|e| Error(format!("{}: {e}", path.display())))?;
        Ok(syms.into_iter().map(frames).collect())
    }

    /// Reads and indexes /proc/kallsyms now, so that [`Symbolizer::kernel`] at the
    /// end of a capture does not wait for it (reading kallsyms alone takes tens of
    /// milliseconds). blazesym's caches are not `Send`: warm the symbolizer on the
    /// thread that will use it.
    pub fn warm_kernel(&self) {
        let _ = self.kernel(&[]);
    }

    /// Names kernel addresses through /proc/kallsyms (modules and BPF programs
    /// included). No vmlinux image is looked for: kallsyms addresses already carry
    /// the KASLR offset, so nothing needs /proc/kcore.
    pub fn kernel(&self, addrs: &[u64]) -> Result<Vec<Frames>, Error> {
        let src = Source::Kernel(Kernel {
            kallsyms: MaybeDefault::Default,
            vmlinux: MaybeDefault::None,
            kaslr_offset: Some(0),
            debug_syms: false,
            ..Kernel::default()
        });
        let syms = self
            .inner
            .symbolize(&src, Input::AbsAddr(addrs))
            .map_err(|e| Error(format!("kernel: {e}")))?;
        Ok(syms.into_iter().map(frames).collect())
    }
}

fn code_location(info: Option<&symbolize::CodeInfo<'_>>) -> (Option<String>, Option<u32>) {
    match info {
        Some(ci) => (Some(ci.to_path().to_string_lossy().into_owned()), ci.line),
        None => (None, None),
    }
}

fn frames(sym: Symbolized<'_>) -> Frames {
    let Symbolized::Sym(sym) = sym else {
        return Vec::new();
    };
    // blazesym gives the outer function and the chain inlined into it at this
    // address. Each inlined entry's code info is its call site in the frame before
    // it; the address's own location belongs to the innermost frame.
    let n = sym.inlined.len();
    let mut out = Vec::with_capacity(1 + n);
    let own = code_location(sym.code_info.as_deref());
    let first_call_site = sym
        .inlined
        .first()
        .map(|f| code_location(f.code_info.as_ref()));
    let (file, line) = if n == 0 {
        own.clone()
    } else {
        first_call_site.unwrap_or((None, None))
    };
    out.push(Symbol {
        name: sym.name.into_owned(),
        inlined: false,
        file,
        line,
    });
    for (i, f) in sym.inlined.iter().enumerate() {
        let (file, line) = if i + 1 == n {
            own.clone()
        } else {
            code_location(sym.inlined[i + 1].code_info.as_ref())
        };
        out.push(Symbol {
            name: f.name.to_string(),
            inlined: true,
            file,
            line,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn marker_function_for_symbolizer_test() -> usize {
        std::hint::black_box(42)
    }

    #[test]
    fn names_a_function_of_this_test_binary_by_file_offset() {
        // Find our own function's file offset through our own mappings.
        let addr = marker_function_for_symbolizer_test as *const () as usize as u64;
        let exe = std::env::current_exe().unwrap();
        let maps = crate::procmaps::read(std::process::id()).unwrap();
        let m = maps
            .iter()
            .find(|m| m.start <= addr && addr < m.end)
            .expect("our code is mapped");
        let offset = addr - m.start + m.offset;
        let s = Symbolizer::new(Options::default());
        let frames = s.object(&exe, &[offset, u64::MAX / 2]).unwrap();
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
    fn a_file_that_is_not_elf_is_an_error_not_a_panic() {
        let s = Symbolizer::new(Options::default());
        assert!(s.object(Path::new("/proc/self/status"), &[0]).is_err());
    }
}
