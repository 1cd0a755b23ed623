//! The default map sizes keep more than 16k distinct stacks without a loss.

use crate::common::{record, require_bpf, summary_count, workload};

#[test]
fn more_than_16k_unique_stacks_are_kept_with_default_map_sizes() {
    require_bpf!();
    let many = workload("manystacks");
    let c = record(&["-F", "4999"], &[many.to_str().unwrap(), "6.5"]);
    let stderr = c.stderr();
    let stacks = summary_count(&stderr, "unique stacks");
    let samples = c.samples();
    assert!(
        stacks > 16384,
        "{stacks} unique stacks: the workload must make more than 16k"
    );
    assert!(stderr.contains("nothing lost"), "{stderr}");
    let f = &c.folded;
    // cpu-clock at 4999 Hz: every sample weighs 1e9 / 4999 ns
    assert_eq!(
        f.total(),
        samples * 200_040,
        "every sample is in the output"
    );
    assert_eq!(f.with_frame("[lost stack]"), 0);
}

#[test]
fn stacks_deeper_than_the_limit_are_marked_truncated_and_counted_in_every_mode() {
    require_bpf!();
    let deep = workload("deep");
    for mode in ["cfi", "fp", "dwarf"] {
        let c = record(
            &["-F", "499", "--call-graph", mode],
            &[deep.to_str().unwrap(), "1.5", "300"],
        );
        let f = &c.folded;
        // comm, then the missing outermost frames' marker
        let marked = f.count(|s| s.get(1).is_some_and(|x| x == "[truncated]"));
        let in_descend = f.with_frame("descend");
        assert!(
            marked as f64 > 0.9 * in_descend as f64,
            "{mode}: {marked} of {in_descend} ns in the 300-deep recursion marked [truncated]"
        );
        assert!(
            f.count(
                |s| s.get(1).is_some_and(|x| x == "[truncated]") && s.iter().any(|x| x == "main")
            ) == 0,
            "{mode}: a marked stack has lost its outermost frames"
        );
        let stderr = c.stderr();
        assert!(stderr.contains("(marked [truncated])"), "{mode}: {stderr}");
        assert!(
            !stderr.contains("cut at 127 frames 0 (marked"),
            "{mode}: counted: {stderr}"
        );
    }
}
