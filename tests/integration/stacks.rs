//! The default map sizes keep more than 16k distinct stacks without a loss.

use crate::common::{record, require_bpf, workload};

#[test]
fn more_than_16k_unique_stacks_are_kept_with_default_map_sizes() {
    require_bpf!();
    let many = workload("manystacks");
    let c = record(&["-F", "4999"], &[many.to_str().unwrap(), "4.5"]);
    let stderr = c.stderr();
    let stacks = summary_count(&stderr, "unique stacks");
    let samples = summary_count(&stderr, "samples");
    assert!(
        stacks > 16384,
        "{stacks} unique stacks: the workload must make more than 16k"
    );
    assert!(stderr.contains("nothing lost"), "{stderr}");
    let f = &c.folded;
    assert_eq!(f.total(), samples, "every sample is in the output");
    assert_eq!(f.with_frame("[lost stack]"), 0);
}

/// The number the summary line puts before `what` ("22290 unique stacks").
fn summary_count(summary: &str, what: &str) -> u64 {
    summary
        .split(&format!(" {what}"))
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the summary counts {what}: {summary}"))
}
