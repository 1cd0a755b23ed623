//! The 3:1 CPU split of testdata/split.c, as flamebpf and as perf see it.

use crate::common::{
    capture_lock, heavy_share, perf_samples, record, require_bpf, share_containing, workload,
};

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
    if let Some(perf) = perf_samples(
        &["-g", "-F", "999"],
        &[split.as_os_str(), "3".as_ref()],
        c.dir.path(),
    )
    .map(|s| share_containing(&s, "heavy", "light"))
    {
        assert!(
            (share - perf).abs() <= 0.03,
            "flamebpf {share:.3} vs perf {perf:.3}: more than 3 points apart"
        );
    }
}
