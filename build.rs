//! Compiles the BPF programs in bpf/ into skeletons in OUT_DIR with libbpf-cargo.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const PROGRAMS: &[&str] = &["profile"];

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86",
        Ok("aarch64") => "arm64",
        Ok(other) => panic!("flamebpf does not build its BPF program for {other} yet"),
        Err(_) => panic!("cargo sets CARGO_CFG_TARGET_ARCH"),
    };
    let multiarch = match arch {
        "x86" => "/usr/include/x86_64-linux-gnu",
        _ => "/usr/include/aarch64-linux-gnu",
    };
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
