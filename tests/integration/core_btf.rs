//! The kernel types CO-RE relocates against: cut from the kernel's BTF once,
//! cached, used from the next start on, and made again when the cache is damaged.

use crate::common::*;

/// The one cached subset under `cache`.
fn cached_subset(cache: &std::path::Path) -> std::path::PathBuf {
    let dir = cache.join("flamebpf/core-btf");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "btf"))
        .collect();
    assert_eq!(files.len(), 1, "one subset in {}: {files:?}", dir.display());
    files[0].clone()
}

fn is_small_btf(path: &std::path::Path) -> bool {
    let bytes = std::fs::read(path).unwrap();
    // BTF's magic, 0xeB9F, little-endian
    bytes.starts_with(&[0x9f, 0xeb]) && bytes.len() < 8192
}

#[test]
fn kernel_types_are_cached_then_used_and_made_again_when_damaged() {
    require_bpf!();
    let cache = tempfile::tempdir().unwrap();
    let deep = workload("deep");
    let capture = || {
        let _lock = capture_lock();
        let dir = tempfile::tempdir().unwrap();
        let folded = dir.path().join("out.folded");
        let out = run(flamebpf()
            .env("XDG_CACHE_HOME", cache.path())
            .args(["record", "-v", "-F", "499", "-o"])
            .arg(&folded)
            .arg("--")
            .arg(&deep)
            .args(["1", "17"]));
        assert!(out.status.success(), "flamebpf record failed");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let f = Folded::read(&folded);
        // deep's samples unwound to main, whichever BTF relocated the program
        let to_main =
            f.count(|s| s.iter().any(|fr| fr == "main") && s.iter().any(|fr| fr == "descend"));
        assert!(
            to_main as f64 >= 0.9 * f.total() as f64,
            "{to_main} of {} samples reach main",
            f.total()
        );
        stderr
    };

    let first = capture();
    assert!(
        first.contains("CO-RE: the whole kernel BTF; its types cached in"),
        "the first start caches: {first}"
    );
    let subset = cached_subset(cache.path());
    assert!(is_small_btf(&subset), "{} is a small BTF", subset.display());
    let made = std::fs::metadata(&subset).unwrap().modified().unwrap();

    let second = capture();
    assert!(
        second.contains(&format!(
            "CO-RE: the kernel types cached in {}",
            subset.display()
        )),
        "the next start uses the cache: {second}"
    );
    assert_eq!(
        std::fs::metadata(&subset).unwrap().modified().unwrap(),
        made
    );

    std::fs::write(&subset, b"not BTF at all").unwrap();
    let third = capture();
    assert!(
        third.contains("CO-RE: the whole kernel BTF; its types cached in"),
        "a damaged cache is made again: {third}"
    );
    assert!(is_small_btf(&cached_subset(cache.path())));
}
