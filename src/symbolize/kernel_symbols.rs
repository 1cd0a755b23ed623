//! Kernel addresses named by the kernel itself: a syscall BPF program
//! (bpf/ksyms.bpf.c) formats each with %pS, a lookup in the kernel's own symbol
//! table (vmlinux, modules, BPF programs, as they are at that moment). Reading
//! /proc/kallsyms instead has the kernel format over 100,000 lines, and flamebpf
//! parse them back, for the few hundred addresses a capture samples: 70-100 ms of
//! CPU, a third of a short capture's. Where the program cannot run (no BPF, a
//! kernel before 5.14) /proc/kallsyms is read as before.

use std::cell::{OnceCell, RefCell};

use anyhow::{Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use symbolizer::kallsyms::Kallsyms;
use symbolizer::KernelNames;

#[allow(clippy::all, clippy::pedantic, missing_docs, non_camel_case_types)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/ksyms.skel.rs"));
}

/// The kernel's namer: the BPF program where it runs, else /proc/kallsyms.
pub fn namer() -> Box<dyn KernelNames> {
    match ByProgram::load() {
        Ok(p) => Box::new(p),
        Err(_) => Box::new(Kallsyms::load().unwrap_or_default()),
    }
}

/// [`namer`], made on first use: a capture that sampled no kernel code (`-p`
/// of a process busy in user space) never loads the program, 2 ms of CPU.
#[derive(Default)]
pub struct OnFirstUse(OnceCell<Box<dyn KernelNames>>);

impl KernelNames for OnFirstUse {
    fn names(&self, addrs: &[u64]) -> Vec<Option<String>> {
        self.0.get_or_init(namer).names(addrs)
    }

    fn is_empty(&self) -> bool {
        self.0.get_or_init(namer).is_empty()
    }
}

/// The loaded program; its .bss holds the questions and the answers, written
/// through `&mut` while [`KernelNames`] hands out `&self`.
struct ByProgram {
    skel: RefCell<skel::KsymsSkel<'static>>,
    /// /proc/kallsyms, read only if a run of the program fails, so that a
    /// failure names frames the old way rather than leaving them unnamed.
    fallback: OnceCell<Kallsyms>,
}

impl ByProgram {
    fn load() -> Result<ByProgram> {
        // The skeleton borrows its object's storage for its whole life; one
        // namer lives as long as its symbolizer, which is about the process's
        // life, so the few bytes are leaked rather than tied in a
        // self-referential struct.
        let object = Box::leak(Box::new(std::mem::MaybeUninit::uninit()));
        let open = skel::KsymsSkelBuilder::default()
            .open(object)
            .context("opening the kernel namer")?;
        let skel = open.load().context("loading the kernel namer")?;
        Ok(ByProgram {
            skel: RefCell::new(skel),
            fallback: OnceCell::new(),
        })
    }

    fn run(&self, addrs: &[u64], out: &mut Vec<Option<String>>) -> Result<()> {
        let mut skel = self.skel.borrow_mut();
        let skel = &mut *skel;
        let bss = skel
            .maps
            .bss_data
            .as_deref_mut()
            .context("the namer's .bss is not mapped")?;
        let batch = bss.addrs.len();
        for chunk in addrs.chunks(batch) {
            bss.addrs[..chunk.len()].copy_from_slice(chunk);
            bss.len = chunk.len() as u32;
            skel.progs
                .name_addrs
                .test_run(libbpf_rs::ProgramInput::default())
                .context("running the kernel namer")?;
            out.extend(bss.names[..chunk.len()].iter().map(|n| {
                let end = n.iter().position(|&c| c == 0).unwrap_or(n.len());
                let text: Vec<u8> = n[..end].iter().map(|&c| c as u8).collect();
                parse(&String::from_utf8_lossy(&text))
            }));
        }
        Ok(())
    }
}

impl KernelNames for ByProgram {
    fn names(&self, addrs: &[u64]) -> Vec<Option<String>> {
        let mut out = Vec::with_capacity(addrs.len());
        if self.run(addrs, &mut out).is_ok() {
            return out;
        }
        self.fallback
            .get_or_init(|| Kallsyms::load().unwrap_or_default())
            .names(addrs)
    }

    fn is_empty(&self) -> bool {
        false
    }
}

/// `name+0xoff/0xsize [module]` → `name [module]`; None for `0x…` (no symbol
/// holds the address) and for anything else %pS could not have printed.
fn parse(s: &str) -> Option<String> {
    if s.starts_with("0x") || s.is_empty() {
        return None;
    }
    let (sym, module) = match s.split_once(' ') {
        Some((sym, rest)) => (sym, Some(rest.trim())),
        None => (s, None),
    };
    let name = sym.rsplit_once('+').map_or(sym, |(name, _)| name);
    if name.is_empty() {
        return None;
    }
    Some(match module {
        Some(m) if m.starts_with('[') && m.ends_with(']') && m.len() > 2 => format!("{name} {m}"),
        // %pS names no module for BPF code, which /proc/kallsyms lists as [bpf]
        _ if is_bpf_code(name) => format!("{name} [bpf]"),
        _ => name.to_string(),
    })
}

/// `bpf_prog_<tag>[_name]` (16 hex digits of tag) and `bpf_trampoline_<key>`:
/// the names the kernel gives BPF code, which the kernel's own functions
/// (`bpf_prog_run`, `bpf_trampoline_link_prog`) do not match.
fn is_bpf_code(name: &str) -> bool {
    if let Some(rest) = name.strip_prefix("bpf_prog_") {
        let tag = rest.get(..16).unwrap_or("");
        return tag.len() == 16
            && tag.bytes().all(|b| b.is_ascii_hexdigit())
            && matches!(rest.as_bytes().get(16), None | Some(b'_'));
    }
    name.strip_prefix("bpf_trampoline_")
        .is_some_and(|key| !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_ps_becomes_name_and_module() {
        assert_eq!(
            parse("do_syscall_64+0x4b/0xd0").as_deref(),
            Some("do_syscall_64")
        );
        assert_eq!(
            parse("ext4_readdir+0x10/0x200 [ext4]").as_deref(),
            Some("ext4_readdir [ext4]")
        );
        assert_eq!(parse("0xffffffffc0123456"), None);
        assert_eq!(parse(""), None);
        assert_eq!(parse("+0x10/0x20"), None);
        assert_eq!(
            parse("bpf_prog_a5a13cf8804a9418_hash_frames+0x1a/0x80").as_deref(),
            Some("bpf_prog_a5a13cf8804a9418_hash_frames [bpf]")
        );
        assert_eq!(
            parse("bpf_trampoline_6442491993+0x4/0x80").as_deref(),
            Some("bpf_trampoline_6442491993 [bpf]")
        );
        assert_eq!(
            parse("bpf_prog_run_pin_on_cpu+0x4/0x80").as_deref(),
            Some("bpf_prog_run_pin_on_cpu")
        );
        assert_eq!(
            parse("bpf_trampoline_link_prog+0x4/0x80").as_deref(),
            Some("bpf_trampoline_link_prog")
        );
    }

    /// The program and /proc/kallsyms name the running kernel's functions alike.
    #[test]
    fn the_kernel_names_what_proc_kallsyms_names() {
        let program = match ByProgram::load() {
            Ok(p) => p,
            Err(e) if std::env::var_os("FLAMEBPF_REQUIRE_BPF").is_none() => {
                eprintln!("skipped: the kernel namer cannot run here: {e:#}");
                return;
            }
            Err(e) => panic!("the kernel namer failed to load: {e:#}"),
        };
        // read after the namer loaded, so that its programs are listed
        let text = Kallsyms::load().unwrap_or_default();
        if KernelNames::is_empty(&text) {
            eprintln!("skipped: /proc/kallsyms shows no addresses to this process");
            return;
        }
        let mut addrs = Vec::new();
        for name in ["do_syscall_64", "schedule", "__x64_sys_read", "vfs_read"] {
            let at = text.address_of(name).expect("a function every kernel has");
            addrs.extend([at, at + 1]);
        }
        // a BPF program's: the namer's own, loaded for as long as the test runs
        let bpf = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
        if let Some(at) = bpf
            .lines()
            .find(|l| l.ends_with("_name_addrs\t[bpf]"))
            .and_then(|l| u64::from_str_radix(l.split(' ').next()?, 16).ok())
        {
            addrs.push(at + 2);
        }
        // more than one batch, the last one partial
        let many: Vec<u64> = addrs.iter().copied().cycle().take(600).collect();
        let got = program.names(&many);
        assert_eq!(got, text.names(&many));
        assert!(got.iter().all(Option::is_some));
        // an address nothing holds
        assert_eq!(program.names(&[1]), vec![None]);
    }
}
