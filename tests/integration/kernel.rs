//! Kernel frames on top of the user function that made the system call.

use crate::common::{record, require_bpf, workload};

#[test]
fn kernel_frames_sit_under_the_user_function_that_entered_the_kernel() {
    require_bpf!();
    let syscalls = workload("syscalls");
    let f = record(&["-F", "999"], &[syscalls.to_str().unwrap(), "2"]).folded;
    let in_kernel = f.count(|s| s.iter().any(|fr| fr.ends_with("_[k]")));
    // The frame right below the outermost kernel frame is the user function.
    let under_read_zero = f.count(|s| {
        let first_k = s.iter().position(|fr| fr.ends_with("_[k]"));
        matches!(first_k, Some(i) if i > 0 && s[i - 1] == "read_zero" && s[..i - 1].contains(&"main".to_string()))
    });
    eprintln!(
        "total {}, in kernel {in_kernel}, under read_zero {under_read_zero}",
        f.total()
    );
    assert!(
        in_kernel as f64 > 0.5 * f.total() as f64,
        "reading /dev/zero is mostly kernel time"
    );
    assert!(under_read_zero as f64 >= 0.95 * in_kernel as f64);
    assert!(
        f.count(|s| s
            .iter()
            .any(|fr| fr == "entry_SYSCALL_64_after_hwframe_[k]" || fr == "do_syscall_64_[k]"))
            > 0
    );
}
