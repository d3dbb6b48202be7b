//! The tracer's answers to bad input: one clear line and a non-zero exit.

// Integration tests: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use scenarios::tracer_bin;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(tracer_bin())
        .args(args)
        .output()
        .expect("run tracer");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
#[ignore = "needs root: cargo xtask test"]
fn missing_pid_is_one_clear_line() {
    let (code, stderr) = run(&["record", "--pid", "4000000", "--duration", "1"]);
    assert_eq!(code, 1);
    assert_eq!(stderr.trim(), "tracer: no such process: 4000000");
}

#[test]
#[ignore = "needs root: cargo xtask test"]
fn unprivileged_user_is_told_to_use_root() {
    // Drop to nobody, with no capabilities, as a user without sudo would be.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(tracer_bin())
        .args(["record", "--pid", "1", "--duration", "1"])
        .output()
        .expect("setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("needs root (CAP_BPF and CAP_PERFMON)"),
        "stderr: {stderr}"
    );
}

#[test]
fn usage_errors_exit_non_zero() {
    let (code, _) = run(&["record"]);
    assert_ne!(code, 0);
    let (code, stderr) = run(&["record", "--pid", "1", "--duration", "-3"]);
    assert_ne!(code, 0);
    assert!(!stderr.is_empty());
}

#[test]
#[ignore = "needs root: cargo xtask test"]
fn huge_values_are_refused_in_one_line() {
    for args in [
        &["record", "--pid", "1", "--duration", "1e20"][..],
        &["record", "--pid", "1", "--min-block", "1e30"][..],
    ] {
        let (code, stderr) = run(args);
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains("too long"), "{args:?}: {stderr}");
    }
}

#[test]
#[ignore = "needs root: cargo xtask test"]
fn kernel_threads_are_refused() {
    let (code, stderr) = run(&["record", "--pid", "2", "--duration", "1"]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        stderr.trim(),
        "tracer: 2 (kthreadd) is a kernel thread: it has no sockets of its own to trace"
    );
}
