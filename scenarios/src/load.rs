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
}

impl LoadResult {
    pub fn responses(&self) -> u64 {
        self.statuses.values().sum()
    }
}

/// `hey -n requests -c concurrency url`: every request is sent and answered,
/// so the count is exact. Keep-alive is on.
pub fn hey(url: &str, requests: u64, concurrency: u64) -> Result<LoadResult> {
    let out = Command::new("hey")
        .args(["-n", &requests.to_string(), "-c", &concurrency.to_string(), url])
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
        // "[200]	40 responses", or under errors "[3]	Get ...: EOF" (a count).
        let Some((head, tail)) = t.strip_prefix('[').and_then(|rest| rest.split_once(']')) else { continue };
        let Ok(head) = head.parse::<u64>() else { continue };
        if in_errors {
            r.errors += head;
        } else if let (Ok(code), Some(n)) =
            (u16::try_from(head), tail.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()))
        {
            *r.statuses.entry(code).or_default() += n;
        }
    }
    r
}

/// `wrk` for `seconds` with `connections` keep-alive connections; returns the
/// number of completed requests it reports.
pub fn wrk(url: &str, threads: u32, connections: u32, seconds: u32) -> Result<u64> {
    let out = Command::new("wrk")
        .args(["-t", &threads.to_string(), "-c", &connections.to_string(), "-d", &format!("{seconds}s"), url])
        .output()
        .context("running wrk (cargo xtask setup installs it)")?;
    if !out.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    parse_wrk(&String::from_utf8_lossy(&out.stdout)).context("wrk printed no request count")
}

fn parse_wrk(text: &str) -> Option<u64> {
    // "  82008 requests in 3.00s, 9.31MB read"
    text.lines().find(|l| l.contains(" requests in ")).and_then(|l| l.split_whitespace().next()?.parse().ok())
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
    }

    #[test]
    fn parses_wrk_count() {
        let text = "Running 3s test @ http://x\n  2 threads and 20 connections\n  82008 requests in 3.00s, 9.31MB read\nRequests/sec:  27317.23\n";
        assert_eq!(parse_wrk(text), Some(82008));
    }
}
