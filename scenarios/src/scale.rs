//! Scale: many connections held open, many more opened and closed, while
//! traced. The tracer's state must stay bounded (its RSS at the end close to
//! its RSS after warm-up) and every connection and request be counted.

use std::{path::Path, process::Command, time::Instant};

use anyhow::{Context, Result, bail};

use crate::{Server, TracerRun, drivers, free_port, go_binary};

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ScaleResult {
    pub held: u64,
    pub churned: u64,
    /// Requests sent: one per held connection, the churn's, and the warm-up's.
    pub requests_sent: u64,
    pub requests_counted: u64,
    pub connections_counted: u64,
    pub connections_open_peak: u64,
    pub dropped_events: u64,
    /// The tracer's resident memory after the warm-up and at the end, in KiB.
    pub rss_warm_kb: u64,
    pub rss_end_kb: u64,
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

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
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
/// more, all traced; a tenth of the held ones and `warmup` churned first,
/// before the RSS baseline.
pub fn run(held: u64, churned: u64, warmup: u64, out: &Path) -> Result<ScaleResult> {
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

    // The warm-up walks the same paths as the run, a tenth of its size:
    // what the tracer learns once (symbols, tables at their working size)
    // is in the baseline; only growth with time is not.
    let warm_held = drivers::hold_connections(port, "/fast", (held / 10) as usize)?;
    let warm = churn(&url, warmup, 50)? + held / 10;
    drop(warm_held);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let rss_warm_kb = rss_kb(tracer_pid);
    let held_conns = drivers::hold_connections(port, "/fast", held as usize)?;
    let churned_ok = churn(&url, churned, 50)?;
    drop(held_conns);
    // Let the closes reach the tracer, and its periodic check run.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let rss_end_kb = rss_kb(tracer_pid);
    let output = tracer.stop()?;
    if !output.status.success() {
        bail!("tracer failed: {}", output.stderr);
    }
    let r = &output.report;
    Ok(ScaleResult {
        held,
        churned: churned_ok,
        requests_sent: held + churned_ok + warm,
        requests_counted: r["requests"].as_u64().unwrap_or(0),
        connections_counted: r["connections"].as_u64().unwrap_or(0),
        connections_open_peak: r["connections_open_peak"].as_u64().unwrap_or(0),
        dropped_events: r["dropped_events"].as_u64().unwrap_or(0),
        rss_warm_kb,
        rss_end_kb,
        seconds: t0.elapsed().as_secs_f64(),
    })
}
