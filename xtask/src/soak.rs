//! The daemon's soak run: `tracer serve --exe` follows a service that is
//! restarted every round (a new pid each time), whose clients open a new
//! connection per request and keep asking for routes never seen before,
//! while a client asks for a report window each round. Every minute: what
//! was sent, what the metrics counted, the route series, the daemon's RSS.

use std::{
    fmt::Write as _,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use scenarios::{Server, TracerRun, free_port, go_binary, http_get, load::hey_without_keepalive};
use serde_json::{Value, json};

/// The service's executable name, as `--exe` finds it.
const SERVICE: &str = "soak-service";
/// Per round: connections, one request each, and routes never seen before.
const CONNECTIONS: u64 = 3000;
const NEW_ROUTES: usize = 150;

/// What the daemon had counted, and weighed, at the end of a minute.
struct Row {
    minute: u32,
    restarts: u32,
    sent: u64,
    counted: u64,
    route_series: usize,
    rss_kb: u64,
}

pub fn run(minutes: u32, out_dir: &Path) -> Result<(String, Value)> {
    let dir = out_dir.join("soak");
    std::fs::create_dir_all(&dir)?;
    let bin = dir.join(SERVICE);
    std::fs::copy(go_binary("basic")?, &bin).context("copying the soak service")?;
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let args: Vec<String> = [
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--exe",
        SERVICE,
        "--max-overhead",
        "0",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let tracer = TracerRun::start(&args, &dir.join("out"))?;
    let started = Instant::now();
    let (mut sent, mut restarts, mut rows) = (0u64, 0u32, Vec::new());
    let mut next_minute = 1;
    while started.elapsed() < Duration::from_secs(u64::from(minutes) * 60) {
        sent += round(&bin, restarts, &base)?;
        restarts += 1;
        if started.elapsed() >= Duration::from_secs(u64::from(next_minute) * 60) {
            let metrics = metrics(&base)?;
            let rss_kb = scenarios::scale::status_kb(tracer.pid(), "VmRSS");
            rows.push(Row {
                minute: next_minute,
                restarts,
                sent,
                counted: count(&metrics),
                route_series: route_series(&metrics),
                rss_kb,
            });
            eprintln!(
                "bench: soak minute {next_minute}: {restarts} restarts, {sent} requests, RSS {rss_kb} kB"
            );
            next_minute += 1;
        }
    }
    let out = tracer.terminate()?;
    if !out.status.success() {
        bail!("tracer serve failed: {}", out.stderr);
    }
    Ok(render(minutes, &rows))
}

/// One round: the service started anew, its clients, a report window.
/// Returns the requests sent to the counted route.
fn round(bin: &Path, n: u32, base: &str) -> Result<u64> {
    let port = free_port()?;
    let mut cmd = Command::new(bin);
    cmd.args(["-addr", &format!("127.0.0.1:{port}")]);
    let server = Server::start(cmd, port)?;
    // The daemon looks for new processes every 2 s.
    thread::sleep(Duration::from_millis(2500));
    let sent = hey_without_keepalive(&server.url("/fast"), CONNECTIONS, 10)?.responses();
    for i in 0..NEW_ROUTES {
        // Any path under /sleep/ that is not a number: answered at once (400).
        let _ = http_get(
            &server.url(&format!("/sleep/r{n}-{i}")),
            Duration::from_secs(5),
        )?;
    }
    let (status, _) = http_get(
        &format!("{base}/debug/tracer/report?seconds=1"),
        Duration::from_mins(1),
    )?;
    if status != 200 {
        bail!("a report window failed: HTTP {status}");
    }
    Ok(sent)
}

fn metrics(base: &str) -> Result<String> {
    // Let the last round's records reach the metrics.
    thread::sleep(Duration::from_millis(1500));
    let (_, body) = http_get(&format!("{base}/metrics"), Duration::from_secs(30))?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

fn count(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("tracer_request_duration_seconds_count{"))
        .filter(|l| l.contains("route=\"GET /fast\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn route_series(metrics: &str) -> usize {
    metrics
        .lines()
        .filter(|l| l.starts_with("tracer_request_duration_seconds_count{"))
        .count()
}

fn render(minutes: u32, rows: &[Row]) -> (String, Value) {
    let mut md = format!(
        "\n### Daemon soak\n\n`tracer serve --exe {SERVICE}` for {minutes} minutes (`cargo xtask bench --soak-only`): each round restarts the service (a new pid), opens {CONNECTIONS} connections of one request each, asks for {NEW_ROUTES} routes never seen before (beyond the cap of 256 they fold into one series), and opens a 1 s report window.\n\n| minute | restarts | requests sent | counted | route series | daemon RSS |\n|---:|---:|---:|---:|---:|---:|\n"
    );
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {:.1} MB |",
            r.minute,
            r.restarts,
            r.sent,
            r.counted,
            r.route_series,
            r.rss_kb as f64 / 1024.0
        );
    }
    let json = json!(
        rows.iter()
            .map(|r| json!({"minute": r.minute, "restarts": r.restarts, "sent": r.sent, "counted": r.counted, "route_series": r.route_series, "rss_kb": r.rss_kb}))
            .collect::<Vec<_>>()
    );
    (md, json)
}
