//! `tracer`: where did each request's time go? An eBPF latency tracer for
//! live HTTP servers, without changing or restarting them.

mod daemon;
mod golang;
mod kernel;
mod output;
mod session;
mod symbols;
mod system;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};
use tracer_core::check::{Budget, diff::Threshold};

#[derive(Parser)]
#[command(
    name = "tracer",
    version,
    about = "Per-request blocking chains and flame graphs of live HTTP servers, from eBPF"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Trace running processes.
    Record {
        /// Process to trace (repeat for several, e.g. nginx workers).
        #[arg(long = "pid", short = 'p', required = true)]
        pids: Vec<u32>,
        /// Do not trace the descendants of the given processes.
        #[arg(long)]
        no_children: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Resolve kernel struct offsets from BTF (run by the tracer itself in a child process).
    #[command(name = "__kernel-offsets", hide = true)]
    KernelOffsets,
    /// Print a Go binary's runtime layout from its DWARF (for `cargo xtask go-layouts`).
    #[command(name = "__go-layout", hide = true)]
    GoLayout { binary: PathBuf },
    /// Start a command and trace it (and the processes it forks).
    Exec {
        #[command(flatten)]
        common: Common,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Judge a saved report (report.json, or the folder holding it) against
    /// latency budgets: exit 0 if all hold, 3 if one is broken.
    Check {
        /// report.json, or an output folder.
        report: PathBuf,
        #[command(flatten)]
        verdicts: Verdicts,
    },
    /// Compare two runs (output folders or report.json files): each route's
    /// p50 and p99 by stage before and after, and differential flame graphs.
    Diff {
        before: PathBuf,
        after: PathBuf,
        /// Folder for the differential flame graphs (default: a new
        /// ./tracer-diff-YYYYMMDD-HHMMSS).
        #[arg(long, short = 'o')]
        out: Option<PathBuf>,
        /// Exit 3 when a route's figure grew beyond this: `p99 +20%`,
        /// `handler p99 +50%` (repeat for several).
        #[arg(long = "fail-if", value_name = "CHANGE")]
        fail_if: Vec<String>,
    },
    /// Trace until stopped, serving Prometheus metrics and, on demand,
    /// pprof profiles, reports and flame graphs over HTTP.
    Serve {
        /// Address of the HTTP endpoints; one reachable from other hosts
        /// needs --allow-remote.
        #[arg(long, default_value = "127.0.0.1:9464")]
        listen: SocketAddr,
        /// Serve on a non-loopback --listen (paths and stacks become
        /// visible to whoever can connect).
        #[arg(long)]
        allow_remote: bool,
        /// Process to trace (repeat for several).
        #[arg(long = "pid", short = 'p')]
        pids: Vec<u32>,
        /// Trace the processes of this executable, now and whenever one
        /// starts: its file name or full path (repeat for several).
        #[arg(long = "exe")]
        exes: Vec<String>,
        /// Trace the processes listening on this TCP port, now and whenever
        /// one starts (repeat for several).
        #[arg(long = "port")]
        ports: Vec<u16>,
        /// Do not trace the descendants of the processes found.
        #[arg(long)]
        no_children: bool,
        #[command(flatten)]
        verdicts: Verdicts,
        /// Seconds of each window the budgets are judged on.
        #[arg(long, default_value_t = 60, value_name = "SECONDS")]
        budget_every: u64,
        #[command(flatten)]
        tracing: Tracing,
    },
}

/// Latency budgets, and where their verdicts go.
#[derive(Args)]
struct Verdicts {
    /// A latency budget, judged at the end (repeat for several): `p99 <
    /// 50ms`, `GET /api p99 < 50ms`, `accept_queue p99 < 5ms`, `GET /api
    /// handler p50 < 20ms`, `dropped_events == 0`, `overflows == 0`. A broken
    /// one makes the exit status 3.
    #[arg(long = "budget", value_name = "EXPR")]
    budgets: Vec<String>,
    /// Also write the verdicts as JUnit XML to this file.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
}

#[derive(Args)]
struct Common {
    /// Stop after this many seconds (default: until Ctrl-C or the processes exit).
    #[arg(long, short = 'd')]
    duration: Option<f64>,
    /// Directory for the outputs (default: a new ./tracer-YYYYMMDD-HHMMSS).
    #[arg(long, short = 'o')]
    out: Option<PathBuf>,
    /// Write into --out even if it already holds a report.
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    verdicts: Verdicts,
    #[command(flatten)]
    tracing: Tracing,
}

/// What is traced, and how much it may cost.
#[derive(Args)]
struct Tracing {
    /// On-CPU sampling frequency in Hz (0 turns sampling off).
    #[arg(long, default_value_t = 99)]
    freq: u64,
    /// Shortest off-CPU block reported, in milliseconds.
    #[arg(long, default_value_t = 1.0)]
    min_block: f64,
    /// Do not trace off-CPU time (context switches of the traced threads).
    #[arg(long)]
    no_off_cpu: bool,
    /// Do not sample the goroutines of Go programs (waits inside the
    /// process, on a lock, a channel, a sleep, are then not seen).
    #[arg(long)]
    no_goroutines: bool,
    /// Most the tracer may cost, in percent of the traced processes' CPU:
    /// above it, only a hash-chosen share of the connections is traced,
    /// each request whole; the rest are counted. 0 traces everything.
    #[arg(long, default_value_t = 3.0, value_name = "PCT")]
    max_overhead: f64,
}

impl Common {
    fn settings(self, children: bool, budgets: Vec<Budget>) -> anyhow::Result<session::Settings> {
        let duration = match self.duration {
            Some(d) if !(d > 0.0 && d.is_finite()) => {
                anyhow::bail!("--duration must be a positive number of seconds")
            }
            Some(d) => Some(Duration::try_from_secs_f64(d).map_err(|_| {
                anyhow::anyhow!("--duration {d} is too long: at most {} seconds", u64::MAX)
            })?),
            None => None,
        };
        Ok(session::Settings {
            duration,
            out: self.out,
            overwrite: self.overwrite,
            budgets,
            junit: self.verdicts.junit,
            ..self.tracing.settings(children)?
        })
    }
}

impl Tracing {
    fn settings(self, children: bool) -> anyhow::Result<session::Settings> {
        if !(self.min_block >= 0.0 && self.min_block.is_finite()) {
            anyhow::bail!("--min-block must be a number of milliseconds, 0 or more");
        }
        // Blocks are timed in u64 nanoseconds in the kernel.
        let min_block = Duration::try_from_secs_f64(self.min_block / 1000.0)
            .ok()
            .filter(|d| d.as_nanos() <= u128::from(u64::MAX))
            .ok_or_else(|| anyhow::anyhow!("--min-block {} ms is too long", self.min_block))?;
        if !(self.max_overhead >= 0.0 && self.max_overhead <= 100.0) {
            anyhow::bail!("--max-overhead must be a percentage from 0 to 100");
        }
        if self.freq > 10_000 {
            anyhow::bail!("--freq above 10000 Hz would slow the traced process down");
        }
        Ok(session::Settings {
            duration: None,
            out: None,
            overwrite: false,
            children,
            freq: self.freq,
            off_cpu: !self.no_off_cpu,
            goroutines: !self.no_goroutines,
            min_block,
            max_overhead_pct: self.max_overhead,
            budgets: Vec::new(),
            junit: None,
        })
    }
}

/// The exit status when a budget is broken (0: all hold, 1: an error, 2:
/// a usage error).
const BUDGET_BROKEN: u8 = 3;
const USAGE_ERROR: u8 = 2;

impl Verdicts {
    /// The budgets, parsed; a malformed one is a usage error of one line.
    fn parse(&self) -> Result<Vec<Budget>, tracer_core::check::BudgetError> {
        self.budgets.iter().map(|b| b.parse()).collect()
    }
}

/// `tracer check`: the budgets judged on a saved report.
fn check(
    report: &std::path::Path,
    budgets: &[Budget],
    junit: Option<&std::path::Path>,
) -> anyhow::Result<bool> {
    use anyhow::Context;
    let path = if report.is_dir() {
        report.join("report.json")
    } else {
        report.to_path_buf()
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a tracer report", path.display()))?;
    if value["tool"] != "tracer" {
        anyhow::bail!("{} is not a tracer report", path.display());
    }
    if budgets.is_empty() {
        anyhow::bail!("nothing to check: give at least one --budget");
    }
    let (v, _) = output::ci::judge(&value, budgets, junit, &[])?;
    Ok(output::ci::broken(&v))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let budgets = match &cli.command {
        Cmd::Record { common, .. } | Cmd::Exec { common, .. } => common.verdicts.parse(),
        Cmd::Check { verdicts, .. } | Cmd::Serve { verdicts, .. } => verdicts.parse(),
        _ => Ok(Vec::new()),
    };
    let thresholds: Result<Vec<Threshold>, _> = match &cli.command {
        Cmd::Diff { fail_if, .. } => fail_if.iter().map(|t| t.parse()).collect(),
        _ => Ok(Vec::new()),
    };
    let thresholds = match thresholds {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tracer: {e}");
            return ExitCode::from(USAGE_ERROR);
        }
    };
    let budgets = match budgets {
        Ok(b) => b,
        Err(e) => {
            eprintln!("tracer: {e}");
            return ExitCode::from(USAGE_ERROR);
        }
    };
    let result: anyhow::Result<bool> = match cli.command {
        Cmd::Record {
            pids,
            no_children,
            common,
        } => session::reject_self(&pids)
            .and_then(|()| common.settings(!no_children, budgets))
            .and_then(|s| session::run(session::Target::Pids(pids), &s)),
        Cmd::KernelOffsets => kernel::btf::print_offsets().map(|()| false),
        Cmd::GoLayout { binary } => golang::print_layout(&binary).map(|()| false),
        Cmd::Check { report, verdicts } => check(&report, &budgets, verdicts.junit.as_deref()),
        Cmd::Diff {
            before, after, out, ..
        } => output::diff::run(&before, &after, out, &thresholds),
        Cmd::Exec { common, command } => common
            .settings(true, budgets)
            .and_then(|s| session::run(session::Target::Command(command), &s)),
        Cmd::Serve {
            listen,
            allow_remote,
            pids,
            exes,
            ports,
            no_children,
            budget_every,
            tracing,
            ..
        } => session::reject_self(&pids)
            .and_then(|()| tracing.settings(!no_children))
            .and_then(|s| {
                let wanted = daemon::Wanted::new(pids, exes, ports);
                let settings = session::Settings { budgets, ..s };
                let every = Duration::from_secs(budget_every.max(1));
                daemon::run(listen, allow_remote, wanted, &settings, every).map(|()| false)
            }),
    };
    match result {
        Ok(false) => ExitCode::SUCCESS,
        Ok(true) => ExitCode::from(BUDGET_BROKEN),
        Err(e) => {
            eprintln!("tracer: {e:#}");
            ExitCode::FAILURE
        }
    }
}
