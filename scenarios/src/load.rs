//! Load drivers: hey for a fixed number of requests, wrk for a fixed time,
//! and small purpose-built clients for the misbehaving-client scenarios.

use std::{collections::BTreeMap, process::Command};

use anyhow::{Context, Result, bail};

/// What a driver saw.
#[derive(Debug, Default)]
pub struct LoadResult {
    /// Responses per status code.
    pub statuses: BTreeMap<u16, u64>,
    pub errors: u64,
    /// The median latency the client measured (hey's), in ms.
    pub p50_ms: Option<f64>,
}

impl LoadResult {
    pub fn responses(&self) -> u64 {
        self.statuses.values().sum()
    }
}

/// `hey -n requests -c concurrency url`: every request is sent and answered,
/// so the count is exact. Keep-alive is on.
pub fn hey(url: &str, requests: u64, concurrency: u64) -> Result<LoadResult> {
    hey_with(url, requests, concurrency, &[])
}

/// [`hey`] with a new connection for every request.
pub fn hey_without_keepalive(url: &str, requests: u64, concurrency: u64) -> Result<LoadResult> {
    hey_with(url, requests, concurrency, &["-disable-keepalive"])
}

fn hey_with(url: &str, requests: u64, concurrency: u64, flags: &[&str]) -> Result<LoadResult> {
    let out = Command::new("hey")
        .args(["-n", &requests.to_string(), "-c", &concurrency.to_string()])
        .args(flags)
        .arg(url)
        .output()
        .context("running hey (cargo xtask setup installs it)")?;
    if !out.status.success() {
        bail!("hey failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(parse_hey(&String::from_utf8_lossy(&out.stdout)))
}

fn parse_hey(text: &str) -> LoadResult {
    let mut r = LoadResult::default();
    let mut in_errors = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("Error distribution") {
            in_errors = true;
        }
        // "50% in 0.0203 secs"
        if let Some(secs) = t
            .strip_prefix("50% in ")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
        {
            r.p50_ms = Some(secs * 1000.0);
        }
        // "[200]	40 responses", or under errors "[3]	Get ...: EOF" (a count).
        let Some((head, tail)) = t.strip_prefix('[').and_then(|rest| rest.split_once(']')) else {
            continue;
        };
        let Ok(head) = head.parse::<u64>() else {
            continue;
        };
        if in_errors {
            r.errors += head;
        } else if let (Ok(code), Some(n)) = (
            u16::try_from(head),
            tail.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok()),
        ) {
            *r.statuses.entry(code).or_default() += n;
        }
    }
    r
}

/// `wrk` for `seconds` with `connections` keep-alive connections; returns the
/// number of completed requests it reports.
pub fn wrk(url: &str, threads: u32, connections: u32, seconds: u32) -> Result<u64> {
    let text = run_wrk(&[], url, threads, connections, seconds)?;
    parse_wrk(&text).context("wrk printed no request count")
}

/// What `wrk --latency` measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct WrkResult {
    pub requests: u64,
    pub req_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// `wrk --latency` for `seconds`: throughput and latency percentiles.
pub fn wrk_latency(url: &str, threads: u32, connections: u32, seconds: u32) -> Result<WrkResult> {
    let text = run_wrk(&["--latency"], url, threads, connections, seconds)?;
    parse_wrk_latency(&text).context("wrk printed no latency distribution")
}

/// Runs wrk and returns what it printed.
fn run_wrk(
    extra: &[&str],
    url: &str,
    threads: u32,
    connections: u32,
    seconds: u32,
) -> Result<String> {
    let out = Command::new("wrk")
        .args(extra)
        .args([
            "-t",
            &threads.to_string(),
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
            url,
        ])
        .output()
        .context("running wrk (cargo xtask setup installs it)")?;
    if !out.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn parse_wrk_latency(text: &str) -> Option<WrkResult> {
    let field = |prefix: &str| -> Option<&str> {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
    };
    Some(WrkResult {
        requests: parse_wrk(text)?,
        req_per_s: field("Requests/sec:")?.parse().ok()?,
        p50_us: duration_us(field("50%")?)?,
        p99_us: duration_us(field("99%")?)?,
    })
}

/// wrk's durations: `812.00us`, `1.23ms`, `2.01s`.
fn duration_us(s: &str) -> Option<f64> {
    let (num, scale) = if let Some(v) = s.strip_suffix("us") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1e3)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1e6)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * scale)
}

fn parse_wrk(text: &str) -> Option<u64> {
    // "  82008 requests in 3.00s, 9.31MB read"
    text.lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hey_status_and_errors() {
        let text = "Summary:\n  Total:\t1.0 secs\n\nStatus code distribution:\n  [200]\t38 responses\n  [503]\t2 responses\n\nError distribution:\n  [3]\tGet http://x: EOF\n";
        let r = parse_hey(text);
        assert_eq!(r.statuses.get(&200), Some(&38));
        assert_eq!(r.statuses.get(&503), Some(&2));
        assert_eq!(r.errors, 3);
        assert_eq!(r.responses(), 40);
        assert_eq!(r.p50_ms, None);
        let r = parse_hey("Latency distribution:\n  10% in 0.0017 secs\n  50% in 0.0205 secs\n");
        assert!(r.p50_ms.is_some_and(|ms| (ms - 20.5).abs() < 1e-9));
    }

    #[test]
    fn parses_wrk_latency() {
        let text = "Running 5s test @ http://x\n  2 threads and 50 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     1.41ms    1.02ms  22.12ms   88.47%\n  Latency Distribution\n     50%    1.18ms\n     75%    1.62ms\n     90%    2.31ms\n     99%    5.06ms\n  182008 requests in 5.00s, 20.7MB read\nRequests/sec:  36401.23\nTransfer/sec:      4.14MB\n";
        let r = parse_wrk_latency(text).expect("parsed");
        assert_eq!(r.requests, 182008);
        assert!((r.req_per_s - 36401.23).abs() < 0.01);
        assert!((r.p50_us - 1180.0).abs() < 0.01 && (r.p99_us - 5060.0).abs() < 0.01);
        assert_eq!(duration_us("812.00us"), Some(812.0));
        assert!((duration_us("2.01s").expect("seconds") - 2_010_000.0).abs() < 1e-3);
    }

    #[test]
    fn parses_wrk_count() {
        let text = "Running 3s test @ http://x\n  2 threads and 20 connections\n  82008 requests in 3.00s, 9.31MB read\nRequests/sec:  27317.23\n";
        assert_eq!(parse_wrk(text), Some(82008));
    }
}
