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
        tracing: Tracing,
    },
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
    fn settings(self, children: bool) -> anyhow::Result<session::Settings> {
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
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Record {
            pids,
            no_children,
            common,
        } => session::reject_self(&pids)
            .and_then(|()| common.settings(!no_children))
            .and_then(|s| session::run(session::Target::Pids(pids), &s)),
        Cmd::KernelOffsets => kernel::btf::print_offsets(),
        Cmd::GoLayout { binary } => golang::print_layout(&binary),
        Cmd::Exec { common, command } => common
            .settings(true)
            .and_then(|s| session::run(session::Target::Command(command), &s)),
        Cmd::Serve {
            listen,
            allow_remote,
            pids,
            exes,
            ports,
            no_children,
            tracing,
        } => session::reject_self(&pids)
            .and_then(|()| tracing.settings(!no_children))
            .and_then(|s| {
                let wanted = daemon::Wanted::new(pids, exes, ports);
                daemon::run(listen, allow_remote, wanted, &s)
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tracer: {e:#}");
            ExitCode::FAILURE
        }
    }
}
