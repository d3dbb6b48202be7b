//! Scale: many connections held open, many more opened and closed, while
//! traced, in two identical rounds. The tracer's state must stay bounded
//! (its RSS after the second round close to its RSS after the first) and
//! every connection and request be counted.

use std::{path::Path, process::Command, time::Instant};

use anyhow::{Context, Result, bail};

use crate::{Server, TracerRun, drivers, free_port, go_binary};

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ScaleResult {
    pub held: u64,
    pub churned: u64,
    /// Requests sent over both rounds: one per held connection, and the churn's.
    pub requests_sent: u64,
    pub requests_counted: u64,
    pub connections_counted: u64,
    pub connections_open_peak: u64,
    /// Records the ring buffer could not take.
    pub dropped_events: u64,
    /// The tracer's resident memory after the first round and after the
    /// second, in KiB.
    pub rss_warm_kb: u64,
    pub rss_end_kb: u64,
    /// Of those, anonymous memory (heap, stacks: the tracer's own state);
    /// the rest is mapped (the binary, and the kernel's ring buffer, whose
    /// pages count once the ring's position has passed them).
    pub anon_warm_kb: u64,
    pub anon_end_kb: u64,
    pub seconds: f64,
}

impl ScaleResult {
    pub fn rss_growth_pct(&self) -> f64 {
        if self.rss_warm_kb == 0 {
            0.0
        } else {
            (self.rss_end_kb as f64 / self.rss_warm_kb as f64 - 1.0) * 100.0
        }
    }
}

/// A `/proc/PID/status` figure in KiB (`VmRSS`, `RssAnon`), 0 if unreadable.
pub fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// hey with keep-alive off: `n` requests, each on a new connection.
fn churn(url: &str, n: u64, concurrency: u64) -> Result<u64> {
    let out = Command::new("hey")
        .args([
            "-n",
            &n.to_string(),
            "-c",
            &concurrency.to_string(),
            "-disable-keepalive",
            url,
        ])
        .output()
        .context("running hey")?;
    if !out.status.success() {
        bail!("hey failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let got = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("[200]"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Ok(got)
}

/// Holds `held` keep-alive connections open, then opens and closes `churned`
/// more, all traced, twice: the first round brings the tracer's tables,
/// caches and allocator to their working size (a smaller warm-up does not,
/// and made the growth figure depend on it); the second shows whether
/// memory keeps growing with time.
pub fn run(held: u64, churned: u64, out: &Path) -> Result<ScaleResult> {
    let bin = go_binary("basic")?;
    let port = free_port()?;
    let mut cmd = Command::new(bin);
    cmd.args(["-addr", &format!("127.0.0.1:{port}")])
        .stderr(std::process::Stdio::null());
    let server = Server::start(cmd, port)?;
    let url = server.url("/fast");
    let t0 = Instant::now();
    let tracer = TracerRun::record(&[server.pid()], out, &[])?;
    let tracer_pid = tracer.pid();

    let mut sent = 0;
    let mut churned_ok = 0;
    let mut rss = [(0, 0); 2];
    for round in &mut rss {
        let held_conns = drivers::hold_connections(port, "/fast", held as usize)?;
        churned_ok = churn(&url, churned, 50)?;
        drop(held_conns);
        sent += held + churned_ok;
        // Let the closes reach the tracer, and its periodic check run.
        std::thread::sleep(std::time::Duration::from_millis(1500));
        *round = (
            status_kb(tracer_pid, "VmRSS"),
            status_kb(tracer_pid, "RssAnon"),
        );
    }
    let [(rss_warm_kb, anon_warm_kb), (rss_end_kb, anon_end_kb)] = rss;
    let output = tracer.stop()?;
    if !output.status.success() {
        bail!("tracer failed: {}", output.stderr);
    }
    let r = &output.report;
    Ok(ScaleResult {
        held,
        churned: churned_ok,
        requests_sent: sent,
        requests_counted: r["requests"].as_u64().unwrap_or(0),
        connections_counted: r["connections"].as_u64().unwrap_or(0),
        connections_open_peak: r["connections_open_peak"].as_u64().unwrap_or(0),
        dropped_events: r["drops"]["ringbuf_full"].as_u64().unwrap_or(u64::MAX),
        rss_warm_kb,
        rss_end_kb,
        anon_warm_kb,
        anon_end_kb,
        seconds: t0.elapsed().as_secs_f64(),
    })
}
