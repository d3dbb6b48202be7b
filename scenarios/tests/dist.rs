//! `cargo xtask dist`: one static binary that installs by copying one file
//! and traces from a clean directory with no toolchain on PATH.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use scenarios::{Server, free_port, go_binary, harness::scratch_dir, load::hey, workspace_root};

#[test]
#[ignore = "needs root, Go and the musl target: cargo xtask test"]
fn the_static_binary_traces_from_a_clean_directory_without_a_toolchain() {
    let status = Command::new("cargo")
        .args(["run", "--release", "-q", "-p", "xtask", "--", "dist"])
        .current_dir(workspace_root())
        .status()
        .expect("cargo xtask dist");
    assert!(status.success());
    let dist = workspace_root().join("dist");
    let name = "tracer-x86_64-linux-musl";
    // The checksum file checks.
    let check = Command::new("sha256sum")
        .args(["--check", &format!("{name}.sha256")])
        .current_dir(&dist)
        .output()
        .expect("sha256sum");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    // Static: no interpreter, no libraries.
    let file = Command::new("file")
        .arg(dist.join(name))
        .output()
        .expect("file");
    let what = String::from_utf8_lossy(&file.stdout);
    assert!(what.contains("static"), "{what}");

    // Copied alone into an empty directory, run with an empty environment.
    let clean = scratch_dir("dist-clean");
    let _ = std::fs::remove_dir_all(&clean);
    std::fs::create_dir_all(&clean).expect("dir");
    let bin = clean.join("tracer");
    std::fs::copy(dist.join(name), &bin).expect("copy");
    let port = free_port().expect("port");
    let mut cmd = Command::new(go_binary("basic").expect("build scenarios/basic"));
    cmd.args(["-addr", &format!("127.0.0.1:{port}")]);
    let server = Server::start(cmd, port).expect("basic server");
    let mut tracer = Command::new(&bin)
        .args([
            "record",
            "--pid",
            &server.pid().to_string(),
            "--duration",
            "4",
        ])
        .args(["--max-overhead", "0", "--out", "out"])
        .current_dir(&clean)
        .env_clear()
        .env("PATH", "/nonexistent")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the static tracer starts");
    // Attached once it says what it traces.
    let mut stderr = std::io::BufReader::new(tracer.stderr.take().expect("stderr"));
    let mut line = String::new();
    while !line.contains("tracing ") {
        line.clear();
        let n = std::io::BufRead::read_line(&mut stderr, &mut line).expect("stderr");
        assert!(n > 0, "the tracer ended before attaching");
    }
    let load = hey(&server.url("/fast"), 300, 5).expect("hey");
    let status = tracer.wait().expect("tracer ends");
    assert!(status.success());
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(clean.join("out/report.json")).expect("report.json"),
    )
    .expect("JSON");
    assert_eq!(report["requests"].as_u64(), Some(load.responses()));
}
