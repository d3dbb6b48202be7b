//! `cargo xtask bench`: what tracing costs the traced server, measured side
//! by side in one run. A Go net/http server is saturated with wrk; each
//! round runs every configuration once, in rotated order, so that drifts of
//! the machine hit all of them alike. Figures are medians over the rounds,
//! as ratios to the untraced runs of the same invocation.

use std::{
    fmt::Write as _,
    fs,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use scenarios::{
    Server, TracerRun, free_port, go_binary,
    load::{WrkResult, wrk_latency},
    workspace_root,
};
use serde_json::{Value, json};

use crate::{cpu_account, soak};

/// wrk: 2 threads and 50 keep-alive connections saturate the 2 cores.
pub const WRK_THREADS: u32 = 2;
pub const WRK_CONNECTIONS: u32 = 50;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Config {
    Untraced,
    /// The tracer as a user runs it: everything on, within the default
    /// overhead budget (3%).
    TracerDefaults,
    /// The tracer with everything on and traced: chain, 99 Hz sampling,
    /// off-CPU, `--max-overhead 0`.
    Tracer,
    /// The chain alone.
    TracerChainOnly,
    /// bpftrace on the same syscall tracepoints, per-connection timestamps in maps.
    Bpftrace,
    /// `perf record -g` at the tracer's sampling rate.
    Perf,
}

impl Config {
    const ALL: [Config; 6] = [
        Config::Untraced,
        Config::TracerDefaults,
        Config::Tracer,
        Config::TracerChainOnly,
        Config::Bpftrace,
        Config::Perf,
    ];

    fn name(self) -> &'static str {
        match self {
            Config::Untraced => "untraced",
            Config::TracerDefaults => "tracer record (defaults: 3% budget)",
            Config::Tracer => "tracer record --max-overhead 0",
            Config::TracerChainOnly => "tracer record --max-overhead 0 --freq 0 --no-off-cpu",
            Config::Bpftrace => "bpftrace, syscall tracepoints",
            Config::Perf => "perf record -g -F 99",
        }
    }
}

/// One measured run of one configuration.
#[derive(Debug, Clone, Default)]
struct Run {
    wrk: WrkResult,
    /// CPU of the tracing tool during the load, in % of one core.
    tool_cpu_pct: Option<f64>,
    tool_rss_mb: Option<f64>,
    events_per_s: Option<f64>,
    drops: Option<u64>,
}

#[derive(Clone, Copy)]
pub struct Plan {
    pub rounds: usize,
    pub seconds: u32,
    /// The scale run: connections held open, and opened and closed.
    pub held: u64,
    pub churn: u64,
    /// Whether the scale run is made (else its old section is kept).
    pub scale: bool,
    /// Minutes of the daemon soak run (0: its old section is kept).
    pub soak_minutes: u32,
}

pub fn run(plan: &Plan) -> Result<()> {
    let Plan {
        rounds, seconds, ..
    } = *plan;
    let bin = go_binary("basic")?;
    let port = free_port()?;
    let mut cmd = Command::new(bin);
    cmd.args(["-addr", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::null());
    let server = Server::start(cmd, port)?;
    let url = server.url("/fast");
    let out_dir = workspace_root().join("target/bench");
    fs::create_dir_all(&out_dir)?;

    let results = compare(server.pid(), &url, rounds, seconds, &out_dir)?;
    // The handler most users have: real work, ~130 µs of CPU a request.
    let json_results = compare(
        server.pid(),
        &server.url("/json"),
        rounds,
        seconds,
        &out_dir,
    )?;
    let extra = if rounds > 0 {
        vec![
            (
                "per_event_cost",
                event_costs(server.pid(), &url, seconds, &out_dir)?,
            ),
            (
                "cpu_account",
                cpu_account::run(
                    server.pid(),
                    "basic",
                    &url,
                    seconds,
                    rounds.min(3),
                    &out_dir,
                )?,
            ),
            (
                "goroutine_sampler",
                goroutine_cost(&server, rounds, seconds, &out_dir)?,
            ),
        ]
    } else {
        Vec::new()
    };
    drop(server);
    let dir = workspace_root().join("bench");
    fs::create_dir_all(&dir)?;
    let (mut json, mut md, kept) = if rounds > 0 {
        let (mut json, mut md) = summarize(&results, "/fast", rounds, seconds);
        let (j, m) = summarize(&json_results, "/json", rounds, seconds);
        let _ = write!(
            md,
            "\n### A handler doing real work\n\n`/json` encodes a 2 KB catalogue with `encoding/json`: about 130 µs of server CPU a request, as most handlers spend, against `/fast`'s 70.\n\n{m}"
        );
        json["json_route"] = j;
        // Sections this run does not make are kept from the last one.
        (json, md, earlier(&dir).2)
    } else {
        earlier(&dir)
    };
    for (key, (section_md, section_json)) in extra {
        md.push_str(&section_md);
        json[key] = section_json;
    }
    later_sections(plan, &kept, &out_dir, &mut md, &mut json)?;
    fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    fs::write(dir.join("results.md"), &md)?;
    println!("{md}");
    println!("written: bench/results.json, bench/results.md");
    Ok(())
}

/// The results of the last full run, up to its scale section, and the
/// sections after, for a run that makes only some.
fn earlier(dir: &Path) -> (Value, String, Kept) {
    let json = fs::read_to_string(dir.join("results.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_else(|| json!({}));
    let md = fs::read_to_string(dir.join("results.md")).unwrap_or_default();
    let kept = Kept {
        scale: section(&md, SCALE, SOAK),
        soak: section(&md, SOAK, "\n### none"),
    };
    let prefix = md.split(SCALE).next().unwrap_or("").trim_end().to_string() + "\n";
    (json, prefix, kept)
}

/// Sections of an earlier run, kept when this one does not make them.
#[derive(Default)]
struct Kept {
    scale: String,
    soak: String,
}

/// The scale run and the daemon soak, each made afresh or kept.
fn later_sections(
    plan: &Plan,
    old: &Kept,
    out_dir: &Path,
    md: &mut String,
    json: &mut Value,
) -> Result<()> {
    if plan.scale {
        scale_section(plan.held, plan.churn, out_dir, md, json)?;
    } else {
        md.push_str(&old.scale);
    }
    if plan.soak_minutes > 0 {
        let minutes = plan.soak_minutes;
        eprintln!("bench: daemon soak, {minutes} minutes");
        let (soak_md, soak_json) = soak::run(minutes, out_dir)?;
        md.push_str(&soak_md);
        json["daemon_soak"] = soak_json;
    } else {
        md.push_str(&old.soak);
    }
    Ok(())
}

const SCALE: &str = "\n### Scale";
const SOAK: &str = "\n### Daemon soak";

/// The part of `md` from the heading `from` up to `to` (or its end).
fn section(md: &str, from: &str, to: &str) -> String {
    md.split_once(from)
        .map(|(_, rest)| format!("{from}{}", rest.split(to).next().unwrap_or("")))
        .unwrap_or_default()
}

/// The scale run: connections held and churned, counts and the tracer's memory.
fn scale_section(
    held: u64,
    churn: u64,
    out_dir: &Path,
    md: &mut String,
    json: &mut Value,
) -> Result<()> {
    eprintln!("bench: scale run, {held} connections held open, {churn} opened and closed");
    let scale = scenarios::scale::run(held, churn, &out_dir.join("scale"))?;
    let _ = writeln!(md, "\n### Scale\n");
    let _ = writeln!(
        md,
        "| held open | opened and closed | requests sent | counted | connections counted | open at once | drops | tracer RSS after round 1 | after round 2 | growth |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        md,
        "| {} | {} | {} | {} | {} | {} | {} | {:.1} MB | {:.1} MB | {:+.1}% |",
        scale.held,
        scale.churned,
        scale.requests_sent,
        scale.requests_counted,
        scale.connections_counted,
        scale.connections_open_peak,
        scale.dropped_events,
        scale.rss_warm_kb as f64 / 1024.0,
        scale.rss_end_kb as f64 / 1024.0,
        scale.rss_growth_pct()
    );
    json["scale"] = serde_json::to_value(&scale)?;
    Ok(())
}

fn measure(config: Config, pid: u32, url: &str, seconds: u32, out_dir: &Path) -> Result<Run> {
    let load = || wrk_latency(url, WRK_THREADS, WRK_CONNECTIONS, seconds);
    match config {
        Config::Untraced => Ok(Run {
            wrk: load()?,
            ..Run::default()
        }),
        Config::TracerDefaults | Config::Tracer | Config::TracerChainOnly => {
            let extra: &[&str] = match config {
                Config::TracerDefaults => &["--max-overhead", "3"],
                Config::Tracer => &["--max-overhead", "0"],
                _ => &["--max-overhead", "0", "--freq", "0", "--no-off-cpu"],
            };
            let out = out_dir.join("tracer");
            let tracer = TracerRun::record(&[pid], &out, extra)?;
            let tool = tracer.pid();
            let (wrk, cpu) = with_cpu(tool, load)?;
            let rss = peak_rss_mb(tool);
            let done = tracer.stop()?;
            if !done.status.success() {
                bail!("tracer failed: {}", done.stderr);
            }
            let report = done.report;
            Ok(Run {
                wrk,
                tool_cpu_pct: Some(cpu),
                tool_rss_mb: rss,
                events_per_s: report["events_per_s"].as_f64(),
                drops: report["dropped_events"].as_u64(),
            })
        }
        Config::Bpftrace => {
            let script = bpftrace_script(pid);
            let mut child = Command::new("bpftrace")
                .args(["-e", &script])
                .env("BPFTRACE_MAX_MAP_KEYS", "65536")
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .context("starting bpftrace (cargo xtask setup installs it)")?;
            wait_attached(&mut child, "Attaching")?;
            measure_tool(child, load)
        }
        Config::Perf => {
            let data = out_dir.join("perf.data");
            let child = Command::new("perf")
                .args(["record", "-g", "-F", "99", "-p", &pid.to_string(), "-o"])
                .arg(&data)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting perf (cargo xtask setup installs it)")?;
            thread::sleep(Duration::from_millis(800));
            measure_tool(child, load)
        }
    }
}

/// Handlers that park (`/sleep/5`: 50 connections, so about 50 goroutines
/// parked at any time, more than the sampler looks at per tick): the
/// server's req/s and the tracer's CPU with the goroutine sampler and
/// without (`--no-goroutines`), in rotated rounds.
fn goroutine_cost(
    server: &Server,
    rounds: usize,
    seconds: u32,
    out_dir: &Path,
) -> Result<(String, Value)> {
    let url = server.url("/sleep/5");
    let configs: [(&str, &[&str]); 3] = [
        ("untraced", &[]),
        ("tracer record (goroutine sampler on)", &[]),
        ("tracer record --no-goroutines", &["--no-goroutines"]),
    ];
    let mut runs: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); configs.len()];
    for round in 0..rounds {
        for i in 0..configs.len() {
            let k = (i + round) % configs.len();
            let (name, extra) = configs[k];
            let load = || wrk_latency(&url, WRK_THREADS, WRK_CONNECTIONS, seconds);
            let run = if k == 0 {
                (load()?.req_per_s, 0.0, 0.0)
            } else {
                let tracer =
                    TracerRun::record(&[server.pid()], &out_dir.join("goroutines"), extra)?;
                let (wrk, cpu) = with_cpu(tracer.pid(), load)?;
                let done = tracer.stop()?;
                if !done.status.success() {
                    bail!("tracer failed: {}", done.stderr);
                }
                let looks = done.report["goroutines"]["looks"].as_f64().unwrap_or(0.0)
                    / done.report["duration_s"].as_f64().unwrap_or(1.0).max(1e-9);
                (wrk.req_per_s, cpu, looks)
            };
            eprintln!(
                "bench: goroutines round {} {name:<40} {:>9.0} req/s",
                round + 1,
                run.0
            );
            runs[k].push(run);
        }
    }
    let med = |k: usize, f: fn(&(f64, f64, f64)) -> f64| median(runs[k].iter().map(f).collect());
    let base = med(0, |r| r.0).max(1e-9);
    let mut md = String::from(
        "\n### Goroutine sampler\n\nHandlers that park (`/sleep/5`, 50 connections), with the goroutine sampler and without:\n\n| configuration | req/s | vs untraced | tracer CPU (% of a core) | goroutine looks/s |\n|---|---:|---:|---:|---:|\n",
    );
    let mut rows = Vec::new();
    for (k, (name, _)) in configs.iter().enumerate() {
        let (rps, cpu, looks) = (med(k, |r| r.0), med(k, |r| r.1), med(k, |r| r.2));
        let _ = writeln!(
            md,
            "| {name} | {rps:.0} | {:.1}% | {} | {} |",
            rps * 100.0 / base,
            if k == 0 {
                "-".to_string()
            } else {
                format!("{cpu:.1}%")
            },
            if k == 0 {
                "-".to_string()
            } else {
                format!("{looks:.0}")
            },
        );
        rows.push(json!({"config": name, "req_per_s": rps, "vs_untraced": rps / base, "tracer_cpu_pct": cpu, "looks_per_s": looks}));
    }
    Ok((md, Value::Array(rows)))
}

/// One more tracer run, read for what each program cost: each counts its
/// runs and times one in 17. What each request costs, where.
fn event_costs(pid: u32, url: &str, seconds: u32, out_dir: &Path) -> Result<(String, Value)> {
    let tracer = TracerRun::record(&[pid], &out_dir.join("costs"), &[])?;
    let (wrk, cpu) = with_cpu(tracer.pid(), || {
        wrk_latency(url, WRK_THREADS, WRK_CONNECTIONS, seconds)
    })?;
    let report = tracer.stop()?.report;
    let requests = wrk.requests.max(1) as f64;
    let duration = report["duration_s"].as_f64().unwrap_or(1.0);
    let mut md = String::from(
        "\n### Per-event cost\n\nOne more traced run: each program counts its runs and times one in 17 (from its first instruction to its last; the dispatch to it is in the next section):\n\n",
    );
    md.push_str(
        "| where | runs per request | ns per run | µs per request |\n|---|---:|---:|---:|\n",
    );
    let mut total_us = 0.0;
    let mut rows = Vec::new();
    for p in report["program_costs"].as_array().into_iter().flatten() {
        let runs = p["runs_per_s"].as_f64().unwrap_or(0.0) * duration;
        let ns = p["ns_per_run"].as_f64().unwrap_or(0.0);
        let per_request = runs / requests;
        if per_request < 0.01 {
            continue;
        }
        let us = per_request * ns / 1000.0;
        total_us += us;
        let _ = writeln!(
            md,
            "| {} (kernel) | {per_request:.2} | {ns:.0} | {us:.2} |",
            p["program"].as_str().unwrap_or("?")
        );
        rows.push(json!({"program": p["program"], "runs_per_request": per_request, "ns_per_run": ns, "us_per_request": us}));
    }
    let user_us = cpu / 100.0 * f64::from(seconds) * 1e6 / requests;
    total_us += user_us;
    let _ = writeln!(md, "| tracer userspace | | | {user_us:.2} |");
    let _ = writeln!(md, "| **total** | | | **{total_us:.2}** |");
    let per_request_budget = 2e6 / wrk.req_per_s;
    let _ = writeln!(
        md,
        "\nAt {:.0} req/s on 2 cores a request costs {:.0} µs of CPU in all; tracing adds {:.2} µs ({:.1}%).",
        wrk.req_per_s,
        per_request_budget,
        total_us,
        total_us / per_request_budget * 100.0
    );
    let json = json!({"req_per_s": wrk.req_per_s, "programs": rows, "userspace_us_per_request": user_us, "total_us_per_request": total_us});
    Ok((md, json))
}

/// Runs the load while `child` traces, then stops `child` as Ctrl-C would.
fn measure_tool(mut child: Child, load: impl FnOnce() -> Result<WrkResult>) -> Result<Run> {
    let tool = child.id();
    let (wrk, cpu) = with_cpu(tool, load)?;
    let rss = peak_rss_mb(tool);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(tool as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = child.wait();
    Ok(Run {
        wrk,
        tool_cpu_pct: Some(cpu),
        tool_rss_mb: rss,
        ..Run::default()
    })
}

/// Waits for `marker` on the child's stdout (bpftrace's "Attaching N probes").
fn wait_attached(child: &mut Child, marker: &str) -> Result<()> {
    use std::io::{BufRead, BufReader};
    let stderr = child.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100))
            && line.contains(marker)
        {
            // Attaching is announced before the probes are live.
            thread::sleep(Duration::from_millis(1500));
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("exited with {status} before attaching");
        }
    }
    bail!("did not attach within 30s")
}

/// The load, and the CPU `pid` used meanwhile (% of one core).
fn with_cpu(pid: u32, load: impl FnOnce() -> Result<WrkResult>) -> Result<(WrkResult, f64)> {
    let t0 = Instant::now();
    let c0 = cpu_ticks(pid);
    let wrk = load()?;
    let c1 = cpu_ticks(pid);
    let ticks_per_s = 100.0;
    Ok((
        wrk,
        (c1.saturating_sub(c0)) as f64 / ticks_per_s / t0.elapsed().as_secs_f64() * 100.0,
    ))
}

fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// What people write instead: per-connection timestamps on the syscall
/// tracepoints, a handler-time histogram.
fn bpftrace_script(pid: u32) -> String {
    format!(
        r"
tracepoint:syscalls:sys_exit_accept4,tracepoint:syscalls:sys_exit_accept /pid == {pid} && args->ret >= 0/ {{ @accepted[args->ret] = nsecs; }}
tracepoint:syscalls:sys_enter_read,tracepoint:syscalls:sys_enter_recvfrom /pid == {pid}/ {{ @rfd[tid] = args->fd; }}
tracepoint:syscalls:sys_exit_read,tracepoint:syscalls:sys_exit_recvfrom /pid == {pid} && args->ret > 0/ {{ @last_read[@rfd[tid]] = nsecs; }}
tracepoint:syscalls:sys_enter_write,tracepoint:syscalls:sys_enter_writev,tracepoint:syscalls:sys_enter_sendto /pid == {pid} && @last_read[args->fd]/ {{
  @handler_us = hist((nsecs - @last_read[args->fd]) / 1000); delete(@last_read[args->fd]);
}}
tracepoint:syscalls:sys_enter_close /pid == {pid}/ {{ delete(@accepted[args->fd]); delete(@last_read[args->fd]); }}
"
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    }
}

/// Every configuration on `url`, `rounds` times, rotated so that no
/// configuration always runs first.
fn compare(
    pid: u32,
    url: &str,
    rounds: usize,
    seconds: u32,
    out_dir: &Path,
) -> Result<Vec<(Config, Vec<Run>)>> {
    if rounds > 0 {
        eprintln!("bench: warming up on {url}");
        wrk_latency(url, WRK_THREADS, WRK_CONNECTIONS, 3)?;
    }
    let mut results: Vec<(Config, Vec<Run>)> =
        Config::ALL.iter().map(|&c| (c, Vec::new())).collect();
    for round in 0..rounds {
        for i in 0..Config::ALL.len() {
            let config = Config::ALL[(i + round) % Config::ALL.len()];
            let run = measure(config, pid, url, seconds, out_dir)
                .with_context(|| format!("bench round {} of {}", round + 1, config.name()))?;
            eprintln!(
                "bench: round {} {:<45} {:>9.0} req/s p99 {:>7.0} µs",
                round + 1,
                config.name(),
                run.wrk.req_per_s,
                run.wrk.p99_us
            );
            if let Some((_, runs)) = results.iter_mut().find(|(c, _)| *c == config) {
                runs.push(run);
            }
        }
    }
    Ok(results)
}

fn summarize(
    results: &[(Config, Vec<Run>)],
    path: &str,
    rounds: usize,
    seconds: u32,
) -> (Value, String) {
    let base = results
        .iter()
        .find(|(c, _)| *c == Config::Untraced)
        .map(|(_, r)| r.clone())
        .unwrap_or_default();
    let base_rps = median(base.iter().map(|r| r.wrk.req_per_s).collect());
    let base_p99 = median(base.iter().map(|r| r.wrk.p99_us).collect());
    let machine = machine();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "| configuration | req/s | vs untraced | p50 | p99 | p99 vs untraced | tool CPU (% of a core) | tool peak RSS | events/s | drops |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for (config, runs) in results {
        let rps = median(runs.iter().map(|r| r.wrk.req_per_s).collect());
        let p50 = median(runs.iter().map(|r| r.wrk.p50_us).collect());
        let p99 = median(runs.iter().map(|r| r.wrk.p99_us).collect());
        let opt_median = |f: &dyn Fn(&Run) -> Option<f64>| {
            let v: Vec<f64> = runs.iter().filter_map(f).collect();
            (!v.is_empty()).then(|| median(v))
        };
        let cpu = opt_median(&|r| r.tool_cpu_pct);
        let rss = opt_median(&|r| r.tool_rss_mb);
        let eps = opt_median(&|r| r.events_per_s);
        let drops: Option<u64> = runs.iter().filter_map(|r| r.drops).max();
        let ratio = if base_rps > 0.0 { rps / base_rps } else { 0.0 };
        let p99_ratio = if base_p99 > 0.0 { p99 / base_p99 } else { 0.0 };
        let fmt = |v: Option<f64>, unit: &str, digits: usize| {
            v.map_or("-".to_string(), |v| format!("{v:.digits$}{unit}"))
        };
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.1}% | {:.2} ms | {:.2} ms | {:.2}x | {} | {} | {} | {} |",
            config.name(),
            rps,
            ratio * 100.0,
            p50 / 1000.0,
            p99 / 1000.0,
            p99_ratio,
            fmt(cpu, "%", 1),
            fmt(rss, " MB", 1),
            fmt(eps, "", 0),
            drops.map_or("-".to_string(), |d| d.to_string()),
        );
        rows.push(json!({
            "config": config.name(),
            "req_per_s": rps, "ratio_vs_untraced": ratio,
            "p50_us": p50, "p99_us": p99, "p99_ratio_vs_untraced": p99_ratio,
            "tool_cpu_pct_of_core": cpu, "tool_peak_rss_mb": rss,
            "events_per_s": eps, "drops": drops,
            "runs": runs.iter().map(|r| json!({"req_per_s": r.wrk.req_per_s, "p99_us": r.wrk.p99_us})).collect::<Vec<_>>(),
        }));
    }
    let _ = writeln!(
        md,
        "\nGo net/http `{path}` under `wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS}`, {rounds} rounds of {seconds} s per configuration, medians; {machine}."
    );
    let json = json!({
        "machine": machine, "rounds": rounds, "seconds_per_run": seconds,
        "load": format!("wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} --latency"), "results": rows,
    });
    (json, md)
}

fn machine() -> String {
    let cpus = thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    format!("{cpus} CPUs ({model}), Linux {}", kernel.trim())
}
