//! The GitHub Actions recipe, run here: its workflow calls
//! `scripts/ci-latency.sh`, and that script, run as the job would, exits 0
//! when the budgets hold and 3 when one breaks, leaving the outputs a job
//! uploads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use scenarios::{free_port, harness::scratch_dir, tracer_bin, workspace_root};
use yaml_rust2::YamlLoader;

fn run_script(name: &str, budgets: Option<&str>) -> (Option<i32>, std::path::PathBuf, String) {
    let out = scratch_dir(name);
    let mut cmd = Command::new(workspace_root().join("scripts/ci-latency.sh"));
    cmd.env("TRACER", tracer_bin())
        .env("OUT", &out)
        .env("SECONDS_", "4")
        .env("PORT", free_port().expect("port").to_string());
    if let Some(b) = budgets {
        cmd.env("BUDGETS", b);
    }
    let o = cmd.output().expect("scripts/ci-latency.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code(), out, text)
}

#[test]
#[ignore = "needs root and Go: cargo xtask test"]
fn the_recipe_script_passes_held_budgets_and_fails_a_broken_one() {
    let (code, out, text) = run_script("ci-recipe-held", None);
    assert_eq!(code, Some(0), "{text}");
    for file in ["summary.md", "junit.xml", "report.json", "chains.svg"] {
        assert!(out.join(file).exists(), "{file} missing: {text}");
    }
    let md = std::fs::read_to_string(out.join("summary.md")).expect("summary.md");
    assert!(
        md.contains("Budgets: all hold") && md.contains("`GET /sleep/5`"),
        "{md}"
    );

    let (code, out, text) = run_script("ci-recipe-broken", Some("GET /sleep/5 handler p50 < 1ms"));
    assert_eq!(code, Some(3), "{text}");
    let md = std::fs::read_to_string(out.join("summary.md")).expect("summary.md");
    assert!(
        md.contains("| ✗ | `GET /sleep/5 handler p50 < 1ms` |"),
        "{md}"
    );
}

#[test]
fn the_workflow_runs_the_script_and_keeps_the_traces() {
    let text = std::fs::read_to_string(workspace_root().join(".github/workflows/latency.yml"))
        .expect("workflow");
    let doc = &YamlLoader::load_from_str(&text).expect("YAML")[0];
    let steps = doc["jobs"]["latency"]["steps"].as_vec().expect("steps");
    let runs: Vec<&str> = steps.iter().filter_map(|s| s["run"].as_str()).collect();
    assert!(
        runs.iter().any(|r| r.contains("cargo xtask dist")),
        "{runs:?}"
    );
    assert!(
        runs.iter().any(|r| r.contains("scripts/ci-latency.sh")),
        "{runs:?}"
    );
    let upload = steps
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/upload-artifact"))
        })
        .expect("an upload step");
    assert_eq!(upload["with"]["path"].as_str(), Some("latency-trace/"));
    assert_eq!(upload["if"].as_str(), Some("always()"));
}
