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

#[test]
#[ignore = "needs root: cargo xtask test"]
fn a_bad_out_fails_before_tracing() {
    let file = std::env::temp_dir().join(format!("tracer-out-file-{}", std::process::id()));
    std::fs::write(&file, "not a folder").expect("file");
    for out in ["/proc/tracer-out", file.to_str().expect("utf-8")] {
        let (code, stderr) = run(&["record", "--pid", "1", "--duration", "1", "--out", out]);
        assert_eq!(code, 1, "{out}: {stderr}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "{out}: one line, before tracing: {stderr}"
        );
        assert!(stderr.contains("output folder"), "{out}: {stderr}");
    }
    std::fs::remove_file(&file).expect("cleanup");
}

/// A full disk at the end: the summary and report.json still reach the
/// user (stdout), the error says where they could not go, and no file is
/// left half-written.
#[test]
#[ignore = "needs root: cargo xtask test"]
fn a_full_disk_loses_no_report() {
    let mnt = std::env::temp_dir().join(format!("tracer-small-{}", std::process::id()));
    std::fs::create_dir_all(&mnt).expect("mount point");
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16k", "tmpfs"])
        .arg(&mnt)
        .status()
        .expect("mount");
    assert!(ok.success(), "mounting a small tmpfs");
    // Leave room for the folder and its write test, not for the outputs.
    let _ = std::fs::write(mnt.join("filler"), vec![0u8; 12 * 1024]);
    let out = mnt.join("run");
    let mut sleeper = Command::new("sleep").arg("30").spawn().expect("sleep");
    let result = Command::new(tracer_bin())
        .args([
            "record",
            "--duration",
            "1",
            "--pid",
            &sleeper.id().to_string(),
            "--out",
        ])
        .arg(&out)
        .output()
        .expect("tracer");
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let stdout = String::from_utf8_lossy(&result.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&result.stderr).into_owned();
    let leftovers: Vec<String> = std::fs::read_dir(&out)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let _ = Command::new("umount").arg(&mnt).status();
    let _ = std::fs::remove_dir(&mnt);
    assert_eq!(result.status.code(), Some(1), "{stderr}");
    assert!(stdout.contains("traced sleep"), "the summary: {stdout}");
    assert!(
        stdout.contains("\"requests\": 0"),
        "report.json on stdout: {stdout}"
    );
    assert!(stderr.contains("could not all be written"), "{stderr}");
    assert!(
        leftovers.iter().all(|f| std::path::Path::new(f)
            .extension()
            .is_none_or(|e| e != "tmp")),
        "no half-written file: {leftovers:?}"
    );
}

#[test]
#[ignore = "needs root: cargo xtask test"]
fn a_process_gone_before_tracing_starts_is_said() {
    // Alive when the tracer checks its pid, gone by the time it has attached.
    let mut short = Command::new("sleep").arg("0.1").spawn().expect("sleep");
    let pid = short.id().to_string();
    let (code, stderr) = run(&["record", "--pid", &pid, "--duration", "2"]);
    let _ = short.wait();
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        stderr.trim(),
        format!("tracer: {pid} exited while tracing started: nothing to trace")
    );
}
