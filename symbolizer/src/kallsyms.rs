//! Kernel symbols from /proc/kallsyms, module and BPF program symbols included.
//!
//! Parsed here rather than through blazesym, whose kallsyms reader drops the
//! `[module]` column: a frame in a module reads `name [module]`, one in a BPF
//! program `bpf_prog_<tag>_<name> [bpf]`. kallsyms addresses already carry the
//! KASLR offset, so nothing needs /proc/kcore or a vmlinux image.

use std::io;

/// One symbol: 16 bytes, its name in the shared string (a kernel has over 100,000
/// text symbols, and one allocation per name would double the table's memory).
#[derive(Debug, Clone, Copy)]
struct Ksym {
    addr: u64,
    name_start: u32,
    name_len: u16,
    /// Index into `modules`; 0 is vmlinux.
    module: u16,
}

/// Whatever names kernel addresses: the table here, or (in flamebpf) the kernel
/// itself through a BPF program, which the BPF-free symbolizer cannot load.
pub trait KernelNames {
    /// `name` or `name [module]` of each address; None where no symbol holds it.
    fn names(&self, addrs: &[u64]) -> Vec<Option<String>>;
    /// Whether no address can be named (kallsyms hidden from this process).
    fn is_empty(&self) -> bool;
}

impl KernelNames for Kallsyms {
    fn names(&self, addrs: &[u64]) -> Vec<Option<String>> {
        addrs.iter().map(|&a| self.resolve(a)).collect()
    }

    fn is_empty(&self) -> bool {
        self.syms.is_empty()
    }
}

/// A sorted symbol table of the running kernel.
#[derive(Debug, Default)]
pub struct Kallsyms {
    syms: Vec<Ksym>,
    names: String,
    modules: Vec<String>,
}

impl Kallsyms {
    /// Reads /proc/kallsyms. Without privileges every address reads as zero and
    /// the table is empty.
    pub fn load() -> io::Result<Kallsyms> {
        Ok(Kallsyms::parse(&std::fs::read_to_string("/proc/kallsyms")?))
    }

    /// Parses kallsyms text: `ADDRESS TYPE NAME [MODULE]` lines.
    pub fn parse(text: &str) -> Kallsyms {
        let mut k = Kallsyms::default();
        for line in text.lines() {
            let mut t = line.split_ascii_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (t.next(), t.next(), t.next()) else {
                continue;
            };
            // data symbols (d, b, r, ...) never hold a sampled instruction
            if !matches!(kind, "t" | "T" | "w" | "W") {
                continue;
            }
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            let module = t
                .next()
                .map(|m| m.trim_start_matches('[').trim_end_matches(']'));
            if !k.push(addr, name, module) {
                break;
            }
        }
        k.finish()
    }

    /// Adds one text symbol (`module` None or empty for vmlinux); false once the
    /// table is full (4 GiB of names), when the rest must be dropped. Symbols may
    /// come in any order: [`Kallsyms::finish`] sorts them.
    fn push(&mut self, addr: u64, name: &str, module: Option<&str>) -> bool {
        if self.modules.is_empty() {
            self.modules.push(String::new());
        }
        if addr == 0 || name.is_empty() || name.len() > usize::from(u16::MAX) {
            return true;
        }
        let module = match module.filter(|m| !m.is_empty()) {
            None => 0,
            Some(m) => match self.modules.iter().position(|x| x == m) {
                Some(i) => i,
                None => {
                    self.modules.push(m.to_string());
                    self.modules.len() - 1
                }
            },
        };
        let Ok(name_start) = u32::try_from(self.names.len()) else {
            return false;
        };
        self.names.push_str(name);
        self.syms.push(Ksym {
            addr,
            name_start,
            name_len: name.len() as u16,
            module: u16::try_from(module).unwrap_or(0),
        });
        true
    }

    /// Sorts the symbols pushed, ready for [`Kallsyms::resolve`].
    fn finish(mut self) -> Kallsyms {
        self.syms.sort_by_key(|s| s.addr);
        self.syms.shrink_to_fit();
        self.names.shrink_to_fit();
        self
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.syms.len()
    }

    /// Whether the table is empty (unprivileged, or kallsyms unreadable).
    pub fn is_empty(&self) -> bool {
        self.syms.is_empty()
    }

    /// The address of the first symbol named `name` (a linear search: for tests
    /// and checks, not for naming samples).
    pub fn address_of(&self, name: &str) -> Option<u64> {
        self.syms
            .iter()
            .find(|s| {
                let start = s.name_start as usize;
                &self.names[start..start + usize::from(s.name_len)] == name
            })
            .map(|s| s.addr)
    }

    /// The symbol an address falls in, as `name` or `name [module]`.
    pub fn resolve(&self, addr: u64) -> Option<String> {
        let i = self
            .syms
            .partition_point(|s| s.addr <= addr)
            .checked_sub(1)?;
        let s = self.syms[i];
        let start = s.name_start as usize;
        let name = &self.names[start..start + usize::from(s.name_len)];
        Some(match s.module {
            0 => name.to_string(),
            m => format!("{name} [{}]", self.modules[usize::from(m)]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
ffffffff81000000 T _stext
ffffffff81000100 T do_syscall_64
ffffffff81000200 t helper_local
ffffffff82000000 D some_data
ffffffffc0001000 t ext4_readdir\t[ext4]
ffffffffc0100000 t bpf_prog_6deef7357e7b4530_on_fork\t[bpf]
0000000000000000 T hidden_when_unprivileged
";

    #[test]
    fn names_addresses_with_their_module() {
        let k = Kallsyms::parse(TEXT);
        assert_eq!(k.len(), 5, "data and zero addresses are left out");
        assert_eq!(
            k.resolve(0xffffffff81000150).as_deref(),
            Some("do_syscall_64")
        );
        assert_eq!(
            k.resolve(0xffffffff81000100).as_deref(),
            Some("do_syscall_64")
        );
        assert_eq!(
            k.resolve(0xffffffff810002ff).as_deref(),
            Some("helper_local")
        );
        assert_eq!(
            k.resolve(0xffffffffc0001234).as_deref(),
            Some("ext4_readdir [ext4]")
        );
        assert_eq!(
            k.resolve(0xffffffffc0100010).as_deref(),
            Some("bpf_prog_6deef7357e7b4530_on_fork [bpf]")
        );
        assert_eq!(k.resolve(0x1000), None);
    }

    #[test]
    fn the_running_kernel_has_symbols_or_none_at_all() {
        let k = Kallsyms::load().unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert!(k.len() > 1000, "root reads every address: {}", k.len());
            assert!(k.resolve_name_of_a_known_function());
        } else {
            // hidden addresses read as zero and are left out: all or nothing
            assert!(
                k.is_empty() || k.len() > 1000,
                "a partial table: {}",
                k.len()
            );
        }
    }

    impl Kallsyms {
        /// Whether the address kallsyms gives `schedule` resolves back to it.
        fn resolve_name_of_a_known_function(&self) -> bool {
            let text = std::fs::read_to_string("/proc/kallsyms").unwrap();
            let addr = text
                .lines()
                .find_map(|l| {
                    let mut f = l.split_whitespace();
                    let (a, t, n) = (f.next()?, f.next()?, f.next()?);
                    (n == "schedule" && t.eq_ignore_ascii_case("t"))
                        .then(|| u64::from_str_radix(a, 16).ok())?
                })
                .expect("kallsyms lists schedule");
            self.resolve(addr).as_deref() == Some("schedule")
        }
    }
}
