//! `tracer serve` against real servers: its metrics count what was sent,
//! `go tool pprof` reads its profiles, a restarted service keeps its series,
//! and bad requests are refused with a reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use scenarios::{
    Server, TracerRun, free_port, go_binary, harness::scratch_dir, http_get, load::hey,
};

fn basic_server_from(bin: &Path) -> Server {
    let port = free_port().expect("port");
    let mut cmd = Command::new(bin);
    cmd.args(["-addr", &format!("127.0.0.1:{port}")]);
    Server::start(cmd, port).expect("basic server")
}

/// `tracer serve` with `args`, on a free port; returns it and its base URL.
fn serve(name: &str, args: &[&str]) -> (TracerRun, String) {
    let port = free_port().expect("port");
    let mut all: Vec<String> = vec![
        "serve".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--max-overhead".into(),
        "0".into(),
    ];
    all.extend(args.iter().map(ToString::to_string));
    let run = TracerRun::start(&all, &scratch_dir(name)).expect("tracer serve");
    (run, format!("http://127.0.0.1:{port}"))
}

fn get(url: &str) -> (u16, String) {
    let (status, body) = http_get(url, Duration::from_mins(1)).expect("GET");
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The value of the first sample line of `metric` with all of `labels`.
fn sample(metrics: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with('{'))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Polls /metrics until `metric` with `labels` reaches `want` (the
/// session drains and the gauges follow within a second or so).
fn wait_for(base: &str, metric: &str, labels: &[&str], want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, text) = get(&format!("{base}/metrics"));
        assert_eq!(status, 200, "{text}");
        if sample(&text, metric, labels).is_some_and(|v| v >= want) || Instant::now() > deadline {
            return text;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[ignore = "needs root and Go: cargo xtask test"]
fn metrics_count_the_requests_sent() {
    let server = basic_server_from(&go_binary("basic").expect("build scenarios/basic"));
    let pid = server.pid().to_string();
    let (tracer, base) = serve("serve-metrics", &["--pid", &pid]);
    // A stalled client of the endpoints: half a request, never finished.
    let mut stalled =
        std::net::TcpStream::connect(base.trim_start_matches("http://")).expect("connect");
    std::io::Write::write_all(&mut stalled, b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    let load = hey(&server.url("/fast"), 3000, 20).expect("hey");
    let labels = ["process=\"basic\"", "route=\"GET /fast\""];
    let text = wait_for(
        &base,
        "tracer_request_duration_seconds_count",
        &labels,
        load.responses() as f64,
    );
    assert_eq!(
        sample(&text, "tracer_request_duration_seconds_count", &labels),
        Some(load.responses() as f64),
        "{text}"
    );
    // Each stage has as many observations; the outcome counter agrees.
    let stage = ["stage=\"handler\"", "route=\"GET /fast\""];
    assert_eq!(
        sample(&text, "tracer_stage_duration_seconds_count", &stage),
        Some(load.responses() as f64),
        "{text}"
    );
    let complete = [
        "route=\"GET /fast\"",
        "status=\"200\"",
        "outcome=\"complete\"",
    ];
    assert_eq!(
        sample(&text, "tracer_requests_total", &complete),
        Some(load.responses() as f64),
        "{text}"
    );
    let traced = format!("pid=\"{pid}\"");
    assert_eq!(
        sample(&text, "tracer_traced_process", &[&traced]),
        Some(1.0),
        "{text}"
    );
    assert!(
        text.contains("tracer_cpu_seconds_total{side=\"kernel\"}"),
        "{text}"
    );
    drop(stalled);
    // SIGTERM: clean shutdown, everything detached.
    let out = tracer.terminate().expect("serve stops");
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stderr.contains("everything detached"), "{}", out.stderr);
}

#[test]
#[ignore = "needs root and Go: cargo xtask test"]
fn go_tool_pprof_reads_the_cpu_profile_of_a_server_without_pprof() {
    let server = basic_server_from(&go_binary("basic").expect("build scenarios/basic"));
    let pid = server.pid().to_string();
    let (tracer, base) = serve("serve-pprof", &["--pid", &pid]);
    let url = server.url("/cpu/5");
    let load = thread::spawn(move || hey(&url, 600, 4));
    let out = Command::new("go")
        .args(["tool", "pprof", "-top"])
        .arg(format!("{base}/debug/pprof/profile?seconds=3"))
        .output()
        .expect("go tool pprof");
    let top = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{top}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The CPU-bound handler's function, by name, near the top.
    assert!(top.contains("main.burnCPU"), "{top}");
    let _ = load.join();
    // Several clients at once, each with a window of its own.
    let asks: Vec<_> = (0..3)
        .map(|_| {
            let url = format!("{base}/debug/tracer/report?seconds=1");
            thread::spawn(move || get(&url).0)
        })
        .collect();
    for ask in asks {
        assert_eq!(ask.join().expect("client"), 200);
    }
    // Off-CPU time as pprof too, and the report of a window.
    let (status, _) = get(&format!("{base}/debug/pprof/offcpu?seconds=1"));
    assert_eq!(status, 200);
    let (status, report) = get(&format!("{base}/debug/tracer/report?seconds=1"));
    assert_eq!(status, 200);
    assert!(report.contains("\"routes\""), "{report}");
    let (status, svg) = get(&format!("{base}/debug/tracer/flame?seconds=1&kind=oncpu"));
    assert_eq!(status, 200);
    assert!(svg.contains("<svg"), "{svg}");
    tracer.terminate().expect("serve stops");
}

#[test]
#[ignore = "needs root and Go: cargo xtask test"]
fn a_restarted_service_keeps_its_series() {
    // A copy of its own, so no other test's server matches --exe.
    let dir = scratch_dir("serve-restart");
    std::fs::create_dir_all(&dir).expect("dir");
    let name = format!("restart-{}", std::process::id());
    let bin: PathBuf = dir.join(&name);
    std::fs::copy(go_binary("basic").expect("build scenarios/basic"), &bin).expect("copy");
    let (tracer, base) = serve("serve-restart-run", &["--exe", &name]);
    let labels = [
        "route=\"GET /fast\"".to_string(),
        format!("process=\"{}\"", &name[..name.len().min(15)]),
    ];
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    let metric = "tracer_request_duration_seconds_count";

    let first = basic_server_from(&bin);
    // Found within a look or two.
    thread::sleep(Duration::from_secs(3));
    let n1 = hey(&first.url("/fast"), 500, 5).expect("hey").responses();
    wait_for(&base, metric, &labels, n1 as f64);
    drop(first);

    let second = basic_server_from(&bin);
    thread::sleep(Duration::from_secs(3));
    let n2 = hey(&second.url("/fast"), 700, 5).expect("hey").responses();
    let text = wait_for(&base, metric, &labels, (n1 + n2) as f64);
    assert_eq!(
        sample(&text, metric, &labels),
        Some((n1 + n2) as f64),
        "{text}"
    );
    let out = tracer.terminate().expect("serve stops");
    assert!(
        out.stderr.contains(&format!("({})", second.pid())),
        "{}",
        out.stderr
    );
}

#[test]
#[ignore = "needs root: cargo xtask test"]
fn bad_requests_are_refused_with_a_reason_and_a_missing_executable_is_waited_for() {
    let (tracer, base) = serve("serve-bad", &["--exe", "no-such-server-anywhere"]);
    for (path, says) in [
        ("/debug/pprof/profile?seconds=abc", "seconds must be"),
        ("/debug/pprof/profile?seconds=0", "seconds must be"),
        ("/debug/tracer/flame?seconds=1&kind=heap", "kind must be"),
        ("/debug/tracer/flame?seconds=1&format=png", "format must be"),
    ] {
        let (status, body) = get(&format!("{base}{path}"));
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body.contains(says) && body.lines().count() == 1,
            "{path}: {body}"
        );
    }
    let (status, _) = get(&format!("{base}/metrics"));
    assert_eq!(status, 200);
    let out = tracer.terminate().expect("serve stops");
    assert!(out.stderr.contains("waiting for it"), "{}", out.stderr);
}

#[test]
#[ignore = "needs root: cargo xtask test"]
fn serve_refuses_a_remote_address_unless_allowed() {
    let out = Command::new(scenarios::tracer_bin())
        .args(["serve", "--listen", "0.0.0.0:9", "--exe", "x"])
        .output()
        .expect("tracer");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--allow-remote") && err.lines().count() == 1,
        "{err}"
    );
    let out = Command::new(scenarios::tracer_bin())
        .args(["serve"])
        .output()
        .expect("tracer");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--pid, --exe or --port"), "{err}");
}

/// The capabilities `deploy/tracer.service` grants, read from it.
fn deployed_capabilities() -> Vec<String> {
    let unit = std::fs::read_to_string(scenarios::workspace_root().join("deploy/tracer.service"))
        .expect("deploy/tracer.service");
    unit.lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("CapabilityBoundingSet")
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_lowercase())
        .collect()
}

/// Root, but with only the capabilities the deployment files grant (the
/// bounding set, as systemd and Kubernetes apply it): the daemon traces,
/// counts and profiles.
#[test]
#[ignore = "needs root and Go: cargo xtask test"]
fn serve_works_with_only_the_capabilities_the_deployment_grants() {
    let server = basic_server_from(&go_binary("basic").expect("build scenarios/basic"));
    let port = free_port().expect("port");
    let caps: Vec<String> = deployed_capabilities()
        .iter()
        .map(|c| format!("+{c}"))
        .collect();
    let args: Vec<String> = [
        format!("--bounding-set=-all,{}", caps.join(",")),
        "--".into(),
        scenarios::tracer_bin().display().to_string(),
        "serve".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--max-overhead".into(),
        "0".into(),
        "--pid".into(),
        server.pid().to_string(),
    ]
    .into();
    let mut child = Command::new("setpriv")
        .args(&args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("setpriv (util-linux)");
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(&format!("{base}/metrics"), Duration::from_secs(5)).is_err() {
        assert!(Instant::now() < deadline, "serve did not start");
        assert!(child.try_wait().expect("wait").is_none(), "serve exited");
        thread::sleep(Duration::from_millis(200));
    }
    let load = hey(&server.url("/fast"), 500, 5).expect("hey");
    let labels = ["route=\"GET /fast\""];
    let text = wait_for(
        &base,
        "tracer_request_duration_seconds_count",
        &labels,
        load.responses() as f64,
    );
    assert_eq!(
        sample(&text, "tracer_request_duration_seconds_count", &labels),
        Some(load.responses() as f64),
        "{text}"
    );
    // The tracer's own kernel cost is measured without CAP_SYS_ADMIN.
    assert!(
        sample(&text, "tracer_cpu_seconds_total", &["side=\"kernel\""]).is_some_and(|s| s > 0.0),
        "{text}"
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().expect("serve ends");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("warning"), "{err}");
}

/// Rounds of churn: each starts the service anew (a new pid, the same
/// executable), sends requests on fresh connections, to routes never seen
/// (beyond the cap), and asks for a window. The daemon's memory after the
/// last round is that after the third, and every request is counted.
#[test]
#[ignore = "needs root and Go: cargo xtask test"]
fn memory_stays_flat_under_route_connection_and_pid_churn() {
    const ROUNDS: usize = 10;
    let dir = scratch_dir("serve-soak");
    std::fs::create_dir_all(&dir).expect("dir");
    let name = format!("soak-{}", std::process::id());
    let bin = dir.join(&name);
    std::fs::copy(go_binary("basic").expect("build scenarios/basic"), &bin).expect("copy");
    let (tracer, base) = serve("serve-soak-run", &["--exe", &name]);
    let mut sent = 0;
    let mut rss = Vec::new();
    for round in 0..ROUNDS {
        let server = basic_server_from(&bin);
        thread::sleep(Duration::from_millis(2500));
        sent += scenarios::load::hey_without_keepalive(&server.url("/fast"), 1500, 10)
            .expect("hey")
            .responses();
        for i in 0..150 {
            let url = server.url(&format!("/sleep/r{round}-{i}"));
            assert_eq!(http_get(&url, Duration::from_secs(5)).expect("GET").0, 400);
        }
        let (status, _) = get(&format!("{base}/debug/tracer/report?seconds=1"));
        assert_eq!(status, 200);
        drop(server);
        thread::sleep(Duration::from_millis(500));
        rss.push(scenarios::scale::status_kb(tracer.pid(), "VmRSS"));
    }
    let labels = ["route=\"GET /fast\""];
    let text = wait_for(
        &base,
        "tracer_request_duration_seconds_count",
        &labels,
        sent as f64,
    );
    assert_eq!(
        sample(&text, "tracer_request_duration_seconds_count", &labels),
        Some(sent as f64),
        "{text}"
    );
    // Routes beyond the cap fold into one series.
    assert!(text.contains("route=\"GET (other)\""), "{text}");
    let series = text
        .lines()
        .filter(|l| l.starts_with("tracer_request_duration_seconds_count"))
        .count();
    assert!(series <= 258, "{series} route series");
    let (warm, last) = (rss[2], rss[ROUNDS - 1]);
    eprintln!("daemon RSS by round (kB): {rss:?}");
    assert!(
        last <= warm + warm / 20,
        "the daemon grew from {warm} kB to {last} kB over {} rounds: {rss:?}",
        ROUNDS - 3
    );
    tracer.terminate().expect("serve stops");
}

/// Budgets on the daemon: judged on consecutive windows, each verdict a
/// metric, a broken one said on stderr.
#[test]
#[ignore = "needs root and Go: cargo xtask test"]
fn serve_judges_budgets_on_each_window() {
    let server = basic_server_from(&go_binary("basic").expect("build scenarios/basic"));
    let pid = server.pid().to_string();
    let (tracer, base) = serve(
        "serve-budgets",
        &[
            "--pid",
            &pid,
            "--budget",
            "GET /sleep/20 handler p50 < 5ms",
            "--budget",
            "GET /sleep/20 p99 < 1s",
            "--budget-every",
            "2",
        ],
    );
    let url = server.url("/sleep/20");
    let load = thread::spawn(move || hey(&url, 400, 4));
    let broken = ["budget=\"GET /sleep/20 handler p50 < 5ms\""];
    let text = wait_for(&base, "tracer_budget_broken", &broken, 1.0);
    assert_eq!(
        sample(&text, "tracer_budget_broken", &broken),
        Some(1.0),
        "{text}"
    );
    let held = ["budget=\"GET /sleep/20 p99 < 1s\""];
    assert_eq!(
        sample(&text, "tracer_budget_broken", &held),
        Some(0.0),
        "{text}"
    );
    let _ = load.join();
    let out = tracer.terminate().expect("serve stops");
    assert!(
        out.stderr
            .contains("budget broken over the last 2s: ✗ GET /sleep/20 handler p50 < 5ms"),
        "{}",
        out.stderr
    );
}
