//! Every refusal: one line on stderr, a non-zero exit, within a second, nothing
//! written, no panic.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::flamebpf;

/// Runs flamebpf with `args` in a fresh directory and checks the refusal.
fn refused(args: &[&str], expect: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    refused_in(
        dir.path(),
        flamebpf().current_dir(dir.path()).args(args),
        expect,
    )
}

fn refused_in(dir: &Path, cmd: &mut Command, expect: &str) -> String {
    let t = Instant::now();
    let out = cmd.output().unwrap();
    let elapsed = t.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    eprintln!("stderr: {stderr}");
    assert!(!out.status.success(), "must fail: {stderr}");
    assert!(
        elapsed < Duration::from_secs(1),
        "refused after {elapsed:?}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.starts_with("flamebpf: "), "{stderr}");
    assert!(stderr.contains(expect), "{stderr:?} should say {expect:?}");
    assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"));
    assert!(out.stdout.is_empty());
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "nothing written, found {left:?}");
    stderr
}

#[test]
fn no_target() {
    refused(&["record", "-o", "x.svg"], "nothing to profile");
}

#[test]
fn bad_flags_and_values() {
    refused(&["record", "--bogus"], "unexpected argument '--bogus'");
    refused(&["record", "-d", "0", "-a"], "more than 0 seconds");
    refused(&["record", "-F", "fast", "-a"], "invalid value 'fast'");
    refused(&["record", "-p", "1", "-a"], "cannot be used with");
    refused(
        &["record", "--stack-map-size", "0", "-a"],
        "--stack-map-size",
    );
    refused(&["frobnicate"], "unrecognized subcommand");
}

#[test]
fn periods_and_events() {
    refused(
        &["record", "-a", "-c", "0"],
        "-c 0: the period must be at least 1 event",
    );
    refused(
        &["record", "-a", "-c", "100", "-F", "99"],
        "cannot be used with",
    );
    refused(
        &["record", "-a", "-e", "cyclez"],
        "unknown event \"cyclez\"",
    );
}

#[test]
fn frequencies_out_of_range() {
    refused(&["record", "-F", "0", "-a"], "at least 1 Hz");
    let max: u64 = std::fs::read_to_string("/proc/sys/kernel/perf_event_max_sample_rate")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let over = (max + 1).to_string();
    let msg = refused(&["record", "-F", &over, "-a"], "above the kernel's limit");
    assert!(msg.contains(&format!("{max} Hz")), "names the limit: {msg}");
}

#[test]
fn missing_output_directory_and_unknown_formats() {
    refused(
        &["record", "-a", "-o", "no/such/dir/x.svg"],
        "directory no/such/dir does not exist",
    );
    refused(
        &["record", "-a", "-o", "x.png"],
        "cannot tell the format of x.png",
    );
    refused(
        &["record", "-a", "-o", "x.svg", "--format", "png"],
        "unknown format \"png\"",
    );
}

#[test]
fn no_such_pid_and_command_not_found() {
    refused(&["record", "-p", "99999999999"], "invalid value"); // beyond u32: clap
    refused(
        &["record", "-p", "999999999", "-o", "x.svg"],
        "no such process: 999999999",
    );
    refused(
        &["record", "-o", "x.svg", "--", "flamebpf-no-such-command"],
        "command not found: flamebpf-no-such-command",
    );
}

#[test]
fn unprivileged_run_says_what_is_needed() {
    let dir = tempfile::tempdir().unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // nobody must be able to write there, or the output check would refuse first
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_flamebpf"))
        .args(["record", "-o", "x.svg", "--", "true"])
        .current_dir(dir.path());
        refused_in(
            dir.path(),
            &mut cmd,
            "needs root, or the CAP_BPF and CAP_PERFMON capabilities",
        );
    } else if crate::common::bpf_unavailable().is_some() {
        let mut cmd = flamebpf();
        cmd.args(["record", "-o", "x.svg", "--", "true"])
            .current_dir(dir.path());
        refused_in(
            dir.path(),
            &mut cmd,
            "needs root, or the CAP_BPF and CAP_PERFMON capabilities",
        );
    } else {
        eprintln!("skipped: running unprivileged needs root to drop privileges, or no privileges to begin with");
    }
}

#[test]
fn a_stack_map_too_large_to_create_is_refused_before_loading() {
    // 4 billion 1 KiB entries used to reach the kernel and fail the load ("Argument
    // list too long"); 20 million took 55 s to allocate. The size is now bounded
    // where it is parsed, with its cost in --help.
    refused(
        &[
            "record",
            "-a",
            "-o",
            "x.svg",
            "--stack-map-size",
            "4000000000",
        ],
        "is not in 1..=262144",
    );
}
