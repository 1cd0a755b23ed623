//! Whole stacks for code built without frame pointers and through glibc, in the
//! default mode (`cfi`, unwound in the kernel) and in `--call-graph dwarf`
//! (unwound in userspace), against truth and against `perf record --call-graph
//! dwarf`; frame pointers cannot; time order in speedscope; samples named in the
//! mappings live at their time.

use crate::common::{
    capture_lock, heavy_share, perf_samples, record, require_bpf, workload, Folded, MS,
};
use crate::upgrade::library;

/// perf's own DWARF unwinding, the reference.
const DWARF: [&str; 4] = ["--call-graph", "dwarf", "-F", "999"];

const CHAIN: [&str; 4] = ["main", "level1", "level2", "level3"];

/// Samples whose stack holds `main → level1 → level2 → level3 → leaf`, in order.
fn whole_chain(f: &Folded, leaf: &str) -> u64 {
    f.count(|s| {
        let mut want = CHAIN.iter().copied().chain(std::iter::once(leaf));
        let mut next = want.next();
        for fr in s {
            if Some(fr.as_str()) == next {
                next = want.next();
            }
        }
        next.is_none()
    })
}

#[test]
fn the_default_mode_gives_whole_stacks_without_frame_pointers() {
    require_bpf!();
    whole_stacks_without_frame_pointers(&["-F", "999"]);
}

#[test]
fn dwarf_mode_gives_whole_stacks_without_frame_pointers_and_fp_mode_does_not() {
    require_bpf!();
    whole_stacks_without_frame_pointers(&["-F", "999", "--call-graph", "dwarf"]);
    let omitfp = workload("omitfp");
    let fp = record(
        &["-F", "999", "--call-graph", "fp"],
        &[omitfp.to_str().unwrap(), "1"],
    )
    .folded;
    let fp_whole = whole_chain(&fp, "leaf_heavy") + whole_chain(&fp, "leaf_light");
    assert!(
        (fp_whole as f64) < 0.1 * fp.total() as f64,
        "frame pointers cannot walk code built without them: {fp_whole} whole of {}",
        fp.total()
    );
}

/// The 3-deep chain over a 3:1 split of testdata/omitfp.c, recorded with
/// `flags`: whole in at least 90% of samples, the split within 3 points of the
/// truth and of perf's.
fn whole_stacks_without_frame_pointers(flags: &[&str]) {
    let omitfp = workload("omitfp");
    let c = record(flags, &[omitfp.to_str().unwrap(), "3"]);
    let f = &c.folded;
    let (heavy, light) = (f.with_frame("leaf_heavy"), f.with_frame("leaf_light"));
    let whole = whole_chain(f, "leaf_heavy") + whole_chain(f, "leaf_light");
    eprintln!("dwarf: heavy {heavy} light {light} whole {whole}");
    assert!(
        whole as f64 >= 0.9 * (heavy + light) as f64,
        "whole chains: {whole} of {}",
        heavy + light
    );
    let share = heavy_share(heavy, light);
    assert!((share - 0.75).abs() <= 0.03, "leaf_heavy share {share:.3}");
    assert!(
        c.stderr().contains("user stacks unwound whole"),
        "{}",
        c.stderr()
    );

    // perf, unwinding the same way, agrees on the split
    let dir = tempfile::tempdir().unwrap();
    let _lock = capture_lock();
    if let Some(samples) = perf_samples(&DWARF, &[omitfp.as_os_str(), "3".as_ref()], dir.path()) {
        let h = samples
            .iter()
            .filter(|s| s.first().is_some_and(|l| l == "leaf_heavy"))
            .count() as u64;
        let l = samples
            .iter()
            .filter(|s| s.first().is_some_and(|l| l == "leaf_light"))
            .count() as u64;
        let perf = heavy_share(h, l);
        assert!(
            (share - perf).abs() <= 0.03,
            "flamebpf {share:.3} vs perf {perf:.3}"
        );
    }
}

#[test]
fn a_comparator_called_by_glibc_qsort_keeps_its_callers() {
    require_bpf!();
    comparator_keeps_its_callers(&["-F", "999"]);
}

#[test]
fn a_comparator_called_by_glibc_qsort_keeps_its_callers_in_dwarf_mode() {
    require_bpf!();
    comparator_keeps_its_callers(&["-F", "999", "--call-graph", "dwarf"]);
}

/// testdata/qsortcmp.c recorded with `flags`: samples in the comparator go
/// through qsort to sort_round and main in at least 80%, as many as perf's.
fn comparator_keeps_its_callers(flags: &[&str]) {
    let q = workload("qsortcmp");
    let f = record(flags, &[q.to_str().unwrap(), "2"]).folded;
    let through = |s: &[String]| {
        let s = &s[1..]; // the comm, qsortcmp, is no frame
        let pos = |n: &str| {
            s.iter()
                .position(|f| f == n || f.starts_with(&format!("{n}_[")))
        };
        let qsort = s.iter().position(|f| f.contains("qsort"));
        matches!((pos("main"), pos("sort_round"), qsort, pos("compare_slow")), (Some(a), Some(b), Some(c), Some(d)) if a < b && b < c && c < d)
    };
    let compare = f.with_frame("compare_slow");
    let whole = f.count(through);
    eprintln!("compare_slow {compare}, through main → sort_round → qsort: {whole}");
    assert!(compare > 0);
    assert!(whole as f64 >= 0.8 * compare as f64, "{whole} of {compare}");
    let share = whole as f64 / compare as f64;

    let dir = tempfile::tempdir().unwrap();
    let _lock = capture_lock();
    if let Some(samples) = perf_samples(&DWARF, &[q.as_os_str(), "2".as_ref()], dir.path()) {
        let in_cmp: Vec<&Vec<String>> = samples
            .iter()
            .filter(|s| s.first().is_some_and(|l| l == "compare_slow"))
            .collect();
        let perf_whole = in_cmp
            .iter()
            .filter(|s| {
                let pos = |n: &str| s.iter().position(|f| f == n);
                let qsort = s.iter().position(|f| f.contains("qsort"));
                // perf lists leaf first
                matches!((pos("compare_slow"), qsort, pos("sort_round"), pos("main")), (Some(a), Some(b), Some(c), Some(d)) if a < b && b < c && c < d)
            })
            .count();
        let perf = perf_whole as f64 / in_cmp.len().max(1) as f64;
        eprintln!("perf: {perf_whole} of {} whole", in_cmp.len());
        assert!(
            (share - perf).abs() <= 0.03,
            "whole chains: flamebpf {share:.3} vs perf {perf:.3}"
        );
    }
}

#[test]
fn speedscope_keeps_dwarf_samples_in_time_order() {
    require_bpf!();
    let phases = workload("phases");
    let c = record(
        &[
            "-F",
            "999",
            "--call-graph",
            "dwarf",
            "-o",
            "{dir}/p.speedscope.json",
        ],
        &[phases.to_str().unwrap(), "1"],
    );
    let text = std::fs::read_to_string(c.dir.path().join("p.speedscope.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let frames: Vec<&str> = doc["shared"]["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    let profile = doc["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str().unwrap().starts_with("phases"))
        .unwrap();
    let samples = profile["samples"].as_array().unwrap();
    let in_phase = |s: &serde_json::Value, name: &str| {
        s.as_array()
            .unwrap()
            .iter()
            .any(|i| frames[i.as_u64().unwrap() as usize] == name)
    };
    let last_one = samples
        .iter()
        .rposition(|s| in_phase(s, "phase_one"))
        .expect("phase_one sampled");
    let first_two = samples
        .iter()
        .position(|s| in_phase(s, "phase_two"))
        .expect("phase_two sampled");
    assert!(
        last_one < first_two,
        "every phase_one sample comes before every phase_two sample"
    );
    assert!(
        samples.len() > 800,
        "one entry per sample, not per stack: {}",
        samples.len()
    );
}

#[test]
fn dwarf_samples_are_named_in_the_library_mapped_at_their_time() {
    require_bpf!();
    // two libraries of one layout, loaded one after the other at one address
    // (dlclose, then dlopen): the first one's samples were once named by the
    // second, the mapping there at the end
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (
        dir.path().join("libfirst.so"),
        dir.path().join("libsecond.so"),
    );
    library(&first, "hot_v1");
    library(&second, "hot_v2");
    let reload = workload("reload");
    let c = record(
        &["-F", "499", "--call-graph", "dwarf"],
        &[
            reload.to_str().unwrap(),
            "1",
            first.to_str().unwrap(),
            second.to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&c.out.stdout);
    let at: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert!(
        at.len() == 2 && at[0] == at[1],
        "the loader put both libraries at one address (else this tests nothing): {stdout}"
    );
    let f = &c.folded;
    let (v1, v2) = (f.with_frame("hot_v1"), f.with_frame("hot_v2"));
    eprintln!("hot_v1 {} ms, hot_v2 {} ms", v1 / MS, v2 / MS);
    assert!(v1 >= 500 * MS && v2 >= 500 * MS, "a second in each");
    let share = v1 as f64 / (v1 + v2) as f64;
    assert!((share - 0.5).abs() <= 0.1, "hot_v1's share {share:.3}");
}
