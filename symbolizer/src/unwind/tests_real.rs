//! Tables of real objects checked against facts known about them (libc, a C
//! program compiled here, this test binary), and real stacks of this process
//! unwound, one of them through a signal frame.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use object::{Object, ObjectSection, ObjectSymbol};

use super::*;

/// The libc this process runs with, as /proc/self/maps names it.
pub(super) fn our_libc() -> PathBuf {
    let maps = crate::procmaps::read(std::process::id()).unwrap();
    let m = maps
        .iter()
        .find(|m| m.path.ends_with("/libc.so.6"))
        .expect("libc mapped");
    PathBuf::from(&m.path)
}

/// The ELF vaddr of a runtime address of this process, through our mappings.
fn vaddr_of(table: &UnwindTable, addr: u64) -> u64 {
    let maps = crate::procmaps::read(std::process::id()).unwrap();
    let m = maps
        .iter()
        .find(|m| m.start <= addr && addr < m.end)
        .unwrap();
    table.vaddr(addr - m.start + m.offset).unwrap()
}

/// Address of a symbol (dynamic ones included) of an ELF file, with its size.
fn symbol(path: &Path, name: &str) -> Option<(u64, u64)> {
    let data = std::fs::read(path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    file.symbols()
        .chain(file.dynamic_symbols())
        .find(|s| s.name() == Ok(name))
        .map(|s| (s.address(), s.size()))
}

fn section(path: &Path, name: &str) -> (u64, u64) {
    let data = std::fs::read(path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let s = file.section_by_name(name).unwrap();
    (s.address(), s.size())
}

fn cfa_at(t: &UnwindTable, vaddr: u64) -> CfaRule {
    t.lookup(vaddr).unwrap().cfa
}

/// glibc's `__restore_rt` in this process: the restorer its `sigaction` gives
/// the kernel. Setting SIGUSR2's action to what it already is, twice, reads it
/// back without changing how the signal is handled.
fn restore_rt() -> u64 {
    // SAFETY: plain sigaction calls with valid pointers, restoring the action read.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(
            libc::sigaction(libc::SIGUSR2, std::ptr::null(), &mut old),
            0
        );
        let mut again: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(libc::SIGUSR2, &old, &mut again), 0);
        assert_eq!(libc::sigaction(libc::SIGUSR2, &old, &mut again), 0);
        again.sa_restorer.map_or(0, |f| f as usize as u64)
    }
}

#[test]
fn libc_has_signal_plt_end_of_stack_and_plain_rows() {
    let path = our_libc();
    let t = UnwindTable::load(&path).unwrap();
    assert!(t.len() > 1000, "{} rows", t.len());
    assert!(t.len() < t.raw_rows(), "merging saves rows");

    let restorer = restore_rt();
    assert_ne!(restorer, 0);
    let v = vaddr_of(&t, restorer);
    assert_eq!(cfa_at(&t, v), CfaRule::Signal, "__restore_rt at {v:#x}");
    // the caller's pc - 1 of a handler lands on it too (the FDE starts a byte early)
    assert_eq!(cfa_at(&t, v - 1), CfaRule::Signal);

    // a new thread's first frame, inside clone
    let (clone, size) = symbol(&path, "clone").unwrap();
    let ends = (clone..clone + size).filter(|&a| cfa_at(&t, a) == CfaRule::EndOfStack);
    assert!(ends.count() > 0, "no EndOfStack row in clone");

    let (plt, plt_size) = section(&path, ".plt");
    for entry in (plt + 16..plt + plt_size).step_by(16) {
        assert_eq!(cfa_at(&t, entry), CfaRule::Plt { threshold: 11 });
    }

    let (getpid, _) = symbol(&path, "getpid").unwrap();
    let first = t.lookup(getpid).unwrap();
    assert_eq!(
        (
            first.cfa,
            first.rbp,
            t.base() + u64::from(first.start) <= getpid
        ),
        (CfaRule::Rsp(8), RbpRule::Same, true)
    );
}

const C_PROGRAM: &str = r#"
#include <stdio.h>
#include <string.h>

__attribute__((noinline)) int work(int n) {
    volatile int a[100];
    int s = 0;
    for (int i = 0; i < n; i++) {
        a[i % 100] = i;
        s += a[(i * 7) % 100];
    }
    return s;
}

int main(int argc, char **argv) {
    printf("%d\n", work(argc * 1000));
    puts(strerror(argc));
    return 0;
}
"#;

#[test]
fn a_c_program_compiled_here_has_the_rows_expected() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("prog.c");
    let exe = dir.path().join("prog");
    std::fs::write(&src, C_PROGRAM).unwrap();
    let gcc = std::process::Command::new("gcc")
        .args(["-O2", "-fomit-frame-pointer", "-Wl,-z,lazy", "-o"])
        .arg(&exe)
        .arg(&src)
        .status();
    let Ok(status) = gcc else {
        eprintln!("no gcc: the compiled-program checks are skipped");
        return;
    };
    assert!(status.success());
    let t = UnwindTable::load(&exe).unwrap();

    let (start, _) = symbol(&exe, "_start").unwrap();
    assert_eq!(cfa_at(&t, start), CfaRule::EndOfStack);

    let (plt, plt_size) = section(&exe, ".plt");
    assert!(plt_size >= 48, "printf, puts and strerror have PLT entries");
    assert_eq!(cfa_at(&t, plt), CfaRule::Rsp(16), "PLT0 after its push");
    for entry in (plt + 16..plt + plt_size).step_by(16) {
        for at in [entry, entry + 10, entry + 11, entry + 15] {
            assert_eq!(cfa_at(&t, at), CfaRule::Plt { threshold: 11 }, "{at:#x}");
        }
    }

    // without frame pointers: CFA = rsp + 8 at entry, rsp + 8 + frame inside
    for name in ["work", "main"] {
        let (f, size) = symbol(&exe, name).unwrap();
        assert_eq!(
            t.lookup(f).map(|r| (r.cfa, r.rbp)),
            Some((CfaRule::Rsp(8), RbpRule::Same))
        );
        let inside: Vec<CfaRule> = (f..f + size).map(|a| cfa_at(&t, a)).collect();
        assert!(
            inside.iter().all(|c| matches!(c, CfaRule::Rsp(_))),
            "{name}: {inside:?}"
        );
    }
    let (work, size) = symbol(&exe, "work").unwrap();
    assert!(
        (work..work + size).any(|a| matches!(cfa_at(&t, a), CfaRule::Rsp(o) if o > 256)),
        "work's 400-byte array is on its frame (less the 128-byte red zone)"
    );
}

#[test]
fn objects_that_are_not_x86_64_elf_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text");
    std::fs::write(&text, b"#!/bin/sh\necho not elf\n").unwrap();
    assert!(matches!(
        UnwindTable::load(&text),
        Err(TableError::NotElf(_))
    ));
    assert!(matches!(
        UnwindTable::load(&dir.path().join("missing")),
        Err(TableError::Io(_))
    ));
    // an x86-64 ELF header turned into an aarch64 one
    let mut elf = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    elf[18..20].copy_from_slice(&183u16.to_le_bytes());
    assert!(matches!(
        UnwindTable::parse(&elf),
        Err(TableError::UnsupportedArch { machine: 183 })
    ));
    elf[4] = 1; // ELFCLASS32
    assert!(matches!(
        UnwindTable::parse(&elf),
        Err(TableError::UnsupportedArch { .. })
    ));
}

#[test]
fn a_cfi_section_past_the_end_of_the_file_is_refused_either_way() {
    let exe = std::env::current_exe().unwrap();
    let mut elf = std::fs::read(&exe).unwrap();
    let index = {
        let file = object::File::parse(&*elf).unwrap();
        file.section_by_name(".eh_frame").unwrap().index().0
    };
    // e_shoff, e_shentsize; sh_offset is 24 bytes into a section header
    let shoff = u64::from_le_bytes(elf[0x28..0x30].try_into().unwrap()) as usize;
    let shentsize = usize::from(u16::from_le_bytes(elf[0x3a..0x3c].try_into().unwrap()));
    let at = shoff + index * shentsize + 24;
    let past = (elf.len() as u64 - 16).to_le_bytes();
    elf[at..at + 8].copy_from_slice(&past);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut");
    std::fs::write(&path, &elf).unwrap();
    assert!(matches!(
        UnwindTable::parse(&elf),
        Err(TableError::NotElf(_))
    ));
    assert!(matches!(
        UnwindTable::load(&path),
        Err(TableError::NotElf(_))
    ));
}

#[test]
fn our_own_binary_has_cfi_for_this_function() {
    let exe = std::env::current_exe().unwrap();
    let cfi = ObjectCfi::load(&exe).unwrap();
    assert!(cfi.len() > 1000, "{} rows", cfi.len());
    let addr = our_own_binary_has_cfi_for_this_function as *const () as usize as u64;
    let v = vaddr_of(&cfi, addr);
    assert_eq!(cfi.lookup(v).map(|r| r.cfa), Some(CfaRule::Rsp(8)));
}

/// Names of the frames that are in this test binary, leaf first.
fn names_in_this_binary(tracker: &crate::Tracker, frames: &[u64]) -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    let s = crate::Symbolizer::new(crate::symbolize::Options::default());
    let mut names = Vec::new();
    for (i, &pc) in frames.iter().enumerate() {
        let lookup = if i == 0 { pc } else { pc - 1 };
        if let Some(r) = tracker.resolve(std::process::id(), lookup) {
            if tracker.objects.get(r.object).path == exe.to_str().unwrap() {
                let f = s.object(&exe, &[r.offset]).unwrap();
                names.extend(f[0].iter().map(|f| f.name.clone()));
            }
        }
    }
    names
}

fn position(names: &[String], n: &str) -> usize {
    names
        .iter()
        .position(|x| x.ends_with(n))
        .unwrap_or_else(|| panic!("{n} in {names:?}"))
}

#[inline(never)]
fn caller_of_the_snapshot() -> (Regs, Vec<u8>) {
    let r = snapshot_here(16384);
    std::hint::black_box(r)
}

#[test]
fn unwinds_a_snapshot_of_this_very_stack() {
    let (regs, bytes) = caller_of_the_snapshot();
    let mut tracker = crate::Tracker::new();
    tracker.snapshot(std::process::id()).unwrap();
    let mut u = Unwinder::new();
    let (frames, _end) = u.unwind(
        &tracker,
        std::process::id(),
        u64::MAX,
        regs,
        StackCopy {
            base: regs.sp,
            bytes: &bytes,
        },
    );
    assert!(frames.len() >= 3, "{frames:x?}");
    let names = names_in_this_binary(&tracker, &frames);
    let pos = |n| position(&names, n);
    assert!(pos("snapshot_here") < pos("caller_of_the_snapshot"));
    assert!(pos("caller_of_the_snapshot") < pos("unwinds_a_snapshot_of_this_very_stack"));
    assert_eq!(
        u.stats.complete + u.stats.cut_short + u.stats.failed + u.stats.too_deep,
        1
    );
    assert!(u.cache().rows() > 1000 && !u.cache().is_empty());
}

/// What the SIGUSR1 handler copied.
static IN_HANDLER: Mutex<Option<(Regs, Vec<u8>)>> = Mutex::new(None);

extern "C" fn on_sigusr1(_: libc::c_int) {
    let snapshot = snapshot_here(128 * 1024);
    // raise() runs the handler on this thread, between two of its instructions,
    // nowhere near the lock or the allocator: neither is re-entered, and
    // try_lock cannot meet the lock held by this thread.
    if let Ok(mut slot) = IN_HANDLER.try_lock() {
        *slot = Some(snapshot);
    }
}

#[inline(never)]
fn raise_from_here() {
    // SAFETY: raising a signal whose handler is installed.
    unsafe {
        libc::raise(libc::SIGUSR1);
    }
    std::hint::black_box(());
}

#[test]
fn unwinds_through_a_real_signal_frame() {
    // SAFETY: installs a handler for SIGUSR1, which nothing else in the tests
    // uses, and puts the old action back.
    let old = unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_sigusr1 as extern "C" fn(libc::c_int) as usize;
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(libc::SIGUSR1, &act, &mut old), 0);
        old
    };
    raise_from_here();
    // SAFETY: as above.
    unsafe {
        libc::sigaction(libc::SIGUSR1, &old, std::ptr::null_mut());
    }
    let (regs, bytes) = IN_HANDLER.lock().unwrap().take().expect("handler ran");
    let mut tracker = crate::Tracker::new();
    tracker.snapshot(std::process::id()).unwrap();
    let mut u = Unwinder::new();
    let (frames, end) = u.unwind(
        &tracker,
        std::process::id(),
        u64::MAX,
        regs,
        StackCopy {
            base: regs.sp,
            bytes: &bytes,
        },
    );
    let restorer = restore_rt();
    assert!(
        frames.contains(&restorer),
        "__restore_rt {restorer:#x} in {frames:x?}"
    );
    let names = names_in_this_binary(&tracker, &frames);
    let pos = |n| position(&names, n);
    assert!(pos("snapshot_here") < pos("on_sigusr1"));
    assert!(pos("on_sigusr1") < pos("raise_from_here"), "{names:?}");
    assert!(pos("raise_from_here") < pos("unwinds_through_a_real_signal_frame"));
    assert_eq!(end, End::Complete, "{frames:x?} {names:?}");
}
