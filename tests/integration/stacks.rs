//! The default map sizes keep more than 16k distinct stacks without a loss.

use crate::common::{record, require_bpf, workload};

#[test]
fn more_than_16k_unique_stacks_are_kept_with_default_map_sizes() {
    require_bpf!();
    let many = workload("manystacks");
    let c = record(&["-F", "4999"], &[many.to_str().unwrap(), "4.5"]);
    let stderr = c.stderr();
    let stacks: u64 = stderr
        .split(" unique stacks")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the summary counts unique stacks");
    let samples: u64 = stderr
        .split(" samples")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the summary counts samples");
    assert!(
        stacks > 16384,
        "{stacks} unique stacks: the workload must make more than 16k"
    );
    assert!(stderr.contains("nothing lost"), "{stderr}");
    let f = &c.folded;
    assert_eq!(f.total(), samples, "every sample is in the output");
    assert_eq!(f.with_frame("[lost stack]"), 0);
}
