//! The 3:1 CPU split of testdata/split.c, as flamebpf and as perf see it.

use std::process::Command;

use crate::common::{capture_lock, heavy_share, record, require_bpf, workload};

/// The heavy share of samples in `perf record -g` of the same workload, or `None`
/// (with the reason printed) where perf cannot record.
fn perf_heavy_share(split: &std::path::Path, dir: &std::path::Path) -> Option<f64> {
    let data = dir.join("perf.data");
    let rec = Command::new("perf")
        .args(["record", "-q", "-g", "-F", "999", "-o"])
        .arg(&data)
        .arg("--")
        .arg(split)
        .arg("3")
        .output();
    match rec {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            eprintln!(
                "skipped the perf comparison: perf record failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            return None;
        }
        Err(e) => {
            eprintln!("skipped the perf comparison: perf is not installed ({e})");
            return None;
        }
    }
    let script = Command::new("perf")
        .args(["script", "-F", "comm,ip,sym", "-i"])
        .arg(&data)
        .output()
        .expect("perf script runs");
    let text = String::from_utf8_lossy(&script.stdout);
    let (mut heavy, mut light) = (0, 0);
    for sample in text.split("\n\n") {
        let frames: Vec<&str> = sample
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(1))
            .collect();
        if frames.contains(&"heavy") {
            heavy += 1;
        } else if frames.contains(&"light") {
            light += 1;
        }
    }
    eprintln!("perf: heavy {heavy}, light {light}");
    Some(heavy_share(heavy, light))
}

#[test]
fn split_3_to_1_is_measured_within_3_points_and_agrees_with_perf() {
    require_bpf!();
    let split = workload("split");
    let c = record(
        &["-F", "999", "-o", "{dir}/split.svg"],
        &[split.to_str().unwrap(), "3"],
    );
    let f = &c.folded;
    // the whole frame-pointer chain is there, named
    let chained = f.count(|s| {
        s.windows(2)
            .any(|w| w[0] == "main" && (w[1] == "heavy" || w[1] == "light"))
    });
    let (heavy, light) = (f.with_frame("heavy"), f.with_frame("light"));
    eprintln!(
        "flamebpf: heavy {heavy}, light {light}, total {}",
        f.total()
    );
    assert!(
        chained as f64 >= 0.95 * (heavy + light) as f64,
        "main → heavy/light chains: {chained}"
    );
    assert!(
        c.samples() > 2500,
        "about 3 s at 999 Hz, got {}",
        c.samples()
    );
    let share = heavy_share(heavy, light);
    assert!(
        (share - 0.75).abs() <= 0.03,
        "heavy share {share:.3}, want 0.75 ± 0.03"
    );

    let svg_text = std::fs::read_to_string(c.dir.path().join("split.svg")).unwrap();
    assert!(svg_text.contains("heavy") && svg_text.contains("cpu-clock at 999 Hz"));

    let _lock = capture_lock();
    if let Some(perf) = perf_heavy_share(&split, c.dir.path()) {
        assert!(
            (share - perf).abs() <= 0.03,
            "flamebpf {share:.3} vs perf {perf:.3}: more than 3 points apart"
        );
    }
}
