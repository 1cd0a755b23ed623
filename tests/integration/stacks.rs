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
