//! The seed's blocking problems, reproduced and diagnosed: each scenario's
//! servers and load run under the tracer, whose diagnosis must name the
//! problem, and whose figures must match what the scenario injects (±20%).
//! Needs root and Go: run with `cargo xtask test`.

// Integration tests: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use scenarios::{catalog, harness::scratch_dir};

fn scenario(name: &str) {
    let outcome =
        catalog::run(name, &scratch_dir(&format!("scenario-{name}"))).expect("scenario runs");
    assert!(
        outcome.passed(),
        "scenario {name}\ndiagnosis: {}\n{}\ntracer output:\n{}",
        outcome.diagnosis(),
        outcome.render_checks(),
        outcome.output.stdout
    );
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
