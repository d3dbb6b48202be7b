//! Latency budgets for CI: a traced Go server under load, budgets that
//! hold and one that breaks, the exit status, summary.md, JUnit XML, and
//! `tracer check` re-judging the saved report the same way.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use scenarios::{
    Server, TracerRun, free_port, go_binary, harness::scratch_dir, load::hey, tracer_bin,
};

fn basic_server() -> Server {
    let port = free_port().expect("port");
    let mut cmd = Command::new(go_binary("basic").expect("build scenarios/basic"));
    cmd.args(["-addr", &format!("127.0.0.1:{port}")]);
    Server::start(cmd, port).expect("basic server")
}

/// The budget lines the tracer printed, in order.
fn verdict_lines(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .skip_while(|l| *l != "budgets")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.trim().to_string())
        .collect()
}

#[test]
#[ignore = "needs root and Go: cargo xtask test"]
fn a_broken_budget_exits_3_and_is_named_in_the_summary_and_junit() {
    let server = basic_server();
    let out_dir = scratch_dir("budgets");
    let junit = out_dir.with_extension("xml");
    let budgets = [
        // /sleep/20 takes 20 ms: p99 within 200 ms holds.
        "GET /sleep/20 p99 < 200ms",
        // Its handler takes 20 ms: a 5 ms p50 breaks.
        "GET /sleep/20 handler p50 < 5ms",
        "dropped_events == 0",
    ];
    let mut extra: Vec<String> = Vec::new();
    for b in budgets {
        extra.push("--budget".into());
        extra.push(b.into());
    }
    extra.extend(["--junit".into(), junit.display().to_string()]);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let tracer = TracerRun::record(&[server.pid()], &out_dir, &extra).expect("tracer");
    hey(&server.url("/sleep/20"), 100, 5).expect("hey");
    let out = tracer.stop().expect("tracer stops");
    assert_eq!(out.status.code(), Some(3), "{}{}", out.stdout, out.stderr);
    let lines = verdict_lines(&out.stdout);
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(
        lines[0].starts_with("✓ GET /sleep/20 p99 < 200ms"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("✗ GET /sleep/20 handler p50 < 5ms"),
        "{lines:?}"
    );
    assert!(
        lines[1].contains("measured: GET /sleep/20 handler p50 2"),
        "{lines:?}"
    );

    let md = std::fs::read_to_string(out.out.join("summary.md")).expect("summary.md");
    assert!(md.contains("1 of 3 broken"), "{md}");
    assert!(
        md.contains("| ✗ | `GET /sleep/20 handler p50 < 5ms` |"),
        "{md}"
    );
    assert!(md.contains("| `GET /sleep/20` | 100 |"), "{md}");
    assert!(md.contains("chains.svg"), "{md}");

    let xml = std::fs::read_to_string(&junit).expect("junit");
    let doc = roxmltree::Document::parse(&xml).expect("JUnit XML parses");
    let cases: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(cases.len(), 3);
    let failed: Vec<&str> = cases
        .iter()
        .filter(|c| c.children().any(|n| n.has_tag_name("failure")))
        .filter_map(|c| c.attribute("name"))
        .collect();
    assert_eq!(failed, vec!["GET /sleep/20 handler p50 < 5ms"]);

    // `check` judges the saved report the same way.
    let mut check = Command::new(tracer_bin());
    check.arg("check").arg(&out.out);
    for b in budgets {
        check.args(["--budget", b]);
    }
    let checked = check.output().expect("tracer check");
    assert_eq!(checked.status.code(), Some(3));
    assert_eq!(
        verdict_lines(&String::from_utf8_lossy(&checked.stdout)),
        lines
    );
    // Only the budgets that held: 0.
    let held = Command::new(tracer_bin())
        .arg("check")
        .arg(out.out.join("report.json"))
        .args(["--budget", budgets[0], "--budget", budgets[2]])
        .output()
        .expect("tracer check");
    assert_eq!(held.status.code(), Some(0));
}

#[test]
fn a_malformed_budget_is_one_line_and_a_usage_error() {
    for (budget, says) in [
        ("p98 < 5ms", "\"p98\" is not a statistic"),
        ("p99 < 5", "no unit"),
        ("GET /api handlr p99 < 5ms", "\"handlr\" is not a stage"),
        ("p99 5ms", "no comparison"),
    ] {
        let out = Command::new(tracer_bin())
            .args(["check", "/nonexistent", "--budget", budget])
            .output()
            .expect("tracer");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{budget}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(says), "{budget}: {err}");
    }
}

/// One Go route traced twice: alone (one client), then contended (eight
/// clients on two cores). `diff` names the route's p99 regression, writes
/// differential flame graphs, and exits 3 with `--fail-if`.
#[test]
#[ignore = "needs root and Go: cargo xtask test"]
fn diff_names_a_p99_regression_and_fails_with_a_threshold() {
    let server = basic_server();
    let url = server.url("/cpu/5");
    let run = |name: &str, clients: u64| {
        let dir = scratch_dir(name);
        let tracer = TracerRun::record(&[server.pid()], &dir, &[]).expect("tracer");
        hey(&url, 16 * clients, clients).expect("hey");
        let out = tracer.stop().expect("tracer stops");
        assert!(out.status.success(), "{}", out.stderr);
        dir
    };
    let (alone, contended) = (run("diff-alone", 1), run("diff-contended", 8));
    let diff_dir = scratch_dir("diff-out");
    let _ = std::fs::remove_dir_all(&diff_dir);
    let out = Command::new(tracer_bin())
        .arg("diff")
        .arg(&alone)
        .arg(contended.join("report.json"))
        .arg("--out")
        .arg(&diff_dir)
        .args(["--fail-if", "p99 +50%"])
        .output()
        .expect("tracer diff");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("✗ p99 +50%: GET /cpu/5 total")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("GET /cpu/5") && l.contains("total p99")),
        "{text}"
    );
    let svg = std::fs::read_to_string(diff_dir.join("chains.diff.svg")).expect("differential SVG");
    assert!(svg.contains("<svg") && svg.contains("differential"), "SVG");
    assert!(diff_dir.join("oncpu.diff.svg").exists());
    // The same runs the other way round: no regression.
    let back = Command::new(tracer_bin())
        .arg("diff")
        .arg(&contended)
        .arg(&alone)
        .arg("--out")
        .arg(&diff_dir)
        .args(["--fail-if", "p99 +50%"])
        .output()
        .expect("tracer diff");
    assert_eq!(
        back.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&back.stdout)
    );
}
