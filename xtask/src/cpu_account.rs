//! Where a traced request's CPU goes. A system-wide profile (`perf record
//! -a`, cpu-clock) is taken under the same load untraced and traced, in
//! alternating rounds; each is split per request into the server's own
//! work, the load generator's, the BPF programs with their dispatch
//! (wherever they ran: in the server, in wrk, in softirq), the tracer
//! process, and idle. The programs' own clocks see only their runs; this
//! shows the rest: what tracing makes everything else cost.

use std::{
    fmt::Write as _,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use scenarios::{TracerRun, load::wrk_latency};
use serde_json::{Value, json};

/// Sampling frequency of the profile: enough samples, little perturbation.
const PROFILE_HZ: &str = "999";

/// Microseconds of CPU per request, by where they were spent.
#[derive(Clone, Copy, Debug, Default)]
struct Account {
    server: f64,
    client: f64,
    programs: f64,
    tracer: f64,
    idle: f64,
    total: f64,
}

/// A row of the table: its name, and its figure in an account.
type Row = (&'static str, fn(&Account) -> f64);

impl Account {
    const ROWS: [Row; 6] = [
        ("the server's own work (programs excluded)", |a| a.server),
        ("wrk's own work (programs excluded)", |a| a.client),
        ("BPF programs with their dispatch", |a| a.programs),
        ("the tracer process", |a| a.tracer),
        ("idle", |a| a.idle),
        ("**total**", |a| a.total),
    ];
}

/// Alternating untraced and traced (`--max-overhead 0`) profiled runs of
/// `url`; medians per row. Returns the README section and its JSON.
pub fn run(
    pid: u32,
    server_comm: &str,
    url: &str,
    seconds: u32,
    rounds: usize,
    out_dir: &Path,
) -> Result<(String, Value)> {
    let (mut untraced, mut traced) = (Vec::new(), Vec::new());
    for _ in 0..rounds.max(1) {
        untraced.push(profiled(false, server_comm, url, seconds, out_dir)?);
        let tracer = TracerRun::record(&[pid], &out_dir.join("account"), &["--max-overhead", "0"])?;
        let account = profiled(true, server_comm, url, seconds, out_dir);
        tracer.stop()?;
        traced.push(account?);
    }
    let mut md = String::from(
        "\n### Where the CPU goes\n\nA system-wide profile (`perf record -a`, cpu-clock) under the same load, untraced and traced (`--max-overhead 0`) in alternating rounds, split per request (µs of CPU, medians):\n\n| where | untraced | traced | added |\n|---|---:|---:|---:|\n",
    );
    let mut rows = Vec::new();
    for (name, get) in Account::ROWS {
        // `+ 0.0` turns a -0.0 into 0.0.
        let u = median(untraced.iter().map(get).collect()) + 0.0;
        let t = median(traced.iter().map(get).collect()) + 0.0;
        let _ = writeln!(md, "| {name} | {u:.1} | {t:.1} | {:+.1} |", t - u);
        rows.push(json!({"where": name, "untraced_us": u, "traced_us": t}));
    }
    let _ = writeln!(
        md,
        "\n`/fast` under `wrk -t{} -c{}`, {rounds} rounds of {seconds} s each way.",
        crate::bench::WRK_THREADS,
        crate::bench::WRK_CONNECTIONS
    );
    Ok((md, json!({"rounds": rounds, "rows": rows})))
}

/// One profiled load run, `traced` or not.
fn profiled(
    traced: bool,
    server_comm: &str,
    url: &str,
    seconds: u32,
    out_dir: &Path,
) -> Result<Account> {
    let data = out_dir.join(if traced {
        "account-traced.data"
    } else {
        "account-untraced.data"
    });
    let mut perf = Command::new("perf")
        .args(["record", "-a", "-g", "-F", PROFILE_HZ, "-o"])
        .arg(&data)
        .args(["--", "sleep", &seconds.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting perf (cargo xtask setup installs it)")?;
    thread::sleep(Duration::from_millis(300));
    let wrk = wrk_latency(
        url,
        crate::bench::WRK_THREADS,
        crate::bench::WRK_CONNECTIONS,
        seconds,
    )?;
    if !perf.wait()?.success() {
        bail!("perf record failed");
    }
    let total_ns = event_count(&data)?;
    let requests = wrk.req_per_s * f64::from(seconds);
    if requests <= 0.0 || total_ns <= 0.0 {
        bail!("no requests or no samples in the profile");
    }
    let us = |pct: f64| pct / 100.0 * total_ns / 1000.0 / requests;
    let by_comm = comm_shares(&data)?;
    let share = |comm: &str| {
        by_comm
            .iter()
            .find(|(c, _)| c == comm)
            .map_or(0.0, |(_, p)| *p)
    };
    let programs_in = |comm: Option<&str>| program_share(&data, comm);
    let (in_server, in_client) = (programs_in(Some(server_comm))?, programs_in(Some("wrk"))?);
    Ok(Account {
        server: us(share(server_comm) - in_server),
        client: us(share("wrk") - in_client),
        programs: us(programs_in(None)?),
        tracer: us(share("tracer")),
        idle: us(share("swapper")),
        total: us(100.0),
    })
}

fn report(data: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("perf")
        .arg("report")
        .arg("-i")
        .arg(data)
        .args(["--stdio", "-g", "none"])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .context("perf report")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The profile's cpu-clock event count: nanoseconds of CPU sampled.
fn event_count(data: &Path) -> Result<f64> {
    report(data, &["--sort", "comm"])?
        .lines()
        .find_map(|l| l.split("Event count (approx.):").nth(1))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .context("no event count in the profile")
}

/// Percent of samples per command name.
fn comm_shares(data: &Path) -> Result<Vec<(String, f64)>> {
    Ok(report(data, &["--no-children", "--sort", "comm"])?
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (pct, comm) = l.trim().split_once('%')?;
            Some((comm.trim().to_string(), pct.trim().parse().ok()?))
        })
        .collect())
}

/// Percent of samples inside BPF program dispatch (the programs, their
/// helpers, the run-time clocks), in one command or all.
fn program_share(data: &Path, comm: Option<&str>) -> Result<f64> {
    let mut args = vec!["--children", "--sort", "sym"];
    if let Some(c) = comm {
        args.extend(["--comm", c]);
    }
    Ok(report(data, &args)?
        .lines()
        .filter(|l| {
            let sym = l.rsplit("] ").next().unwrap_or("").trim();
            sym.starts_with("bpf_trace_run")
                || sym == "trace_call_bpf"
                || sym == "bpf_overflow_handler"
        })
        .filter_map(|l| l.trim().split('%').next()?.trim().parse::<f64>().ok())
        .sum())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}
