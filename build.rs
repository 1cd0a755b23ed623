//! Compiles the BPF programs in bpf/ into skeletons in OUT_DIR with libbpf-cargo.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const PROGRAMS: &[&str] = &["profile", "ksyms"];

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // The programs read x86-64 registers (rip, rsp, rbp, cs) and unwind x86-64
    // frames: refuse other targets with one sentence rather than a BPF that
    // compiles and reads the wrong fields.
    match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => {}
        Ok(other) => {
            eprintln!("flamebpf builds for x86-64 only: its BPF programs read x86-64 registers and unwind x86-64 frames ({other} is not supported yet)");
            std::process::exit(1);
        }
        Err(_) => panic!("cargo sets CARGO_CFG_TARGET_ARCH"),
    }
    let arch = "x86";
    let multiarch = "/usr/include/x86_64-linux-gnu";
    for name in PROGRAMS {
        let src = format!("bpf/{name}.bpf.c");
        SkeletonBuilder::new()
            .source(&src)
            // UAPI headers include <asm/types.h>, which Debian keeps under the multiarch dir.
            .clang_args([
                format!("-I{multiarch}"),
                "-Ibpf".to_string(),
                format!("-D__TARGET_ARCH_{arch}"),
                "-Wall".to_string(),
            ])
            .build_and_generate(out.join(format!("{name}.skel.rs")))
            .unwrap_or_else(|e| panic!("building {src}: {e:#}"));
        // names what is cached for this object (src/capture/core_btf.rs)
        let skel =
            std::fs::read(out.join(format!("{name}.skel.rs"))).expect("the skeleton was written");
        let hash = skel.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        println!(
            "cargo:rustc-env=FLAMEBPF_{}_BPF_HASH={hash:016x}",
            name.to_uppercase()
        );
        println!("cargo:rerun-if-changed={src}");
    }
    // Every header the programs include.
    for entry in std::fs::read_dir("bpf").expect("bpf/ is readable") {
        let path = entry.expect("bpf/ is readable").path();
        if path.extension().is_some_and(|e| e == "h") {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
