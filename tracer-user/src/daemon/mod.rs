//! `tracer serve`: the daemon. One session traces until SIGTERM or Ctrl-C;
//! the processes to trace are looked for again every few seconds
//! ([`discover`]); every finished request feeds the Prometheus metrics
//! ([`metrics`]); the HTTP endpoints ([`http`]) serve the metrics, and cut
//! windows that open when asked for into pprof profiles, reports and flame
//! graphs, without detaching anything or disturbing the metrics.

mod discover;
mod http;
mod metrics;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use tokio::sync::{mpsc, oneshot};
use tracer_core::{check::Budget, track::Finished};

pub use self::discover::Wanted;
use self::{http::Ask, metrics::Metrics};
use crate::{
    session::{Driver, OpenWindow, Session, Settings, overhead::CpuClocks},
    system::{memory, preflight, procfs},
};

/// Windows open at once, at most: each aggregates every request.
const MAX_WINDOWS: usize = 8;
/// How often the gauges are brought up to date.
const GAUGES_EVERY: Duration = Duration::from_secs(1);
/// How often the stack tables are emptied (when no window is open): they
/// are fixed in size, and a daemon meets new stacks for months.
const STACKS_RESET_EVERY: Duration = Duration::from_mins(10);

/// `budget_every`: the windows the latency budgets (if any) are judged on.
pub fn run(
    listen: SocketAddr,
    allow_remote: bool,
    wanted: Wanted,
    settings: &Settings,
    budget_every: Duration,
) -> Result<()> {
    if !listen.ip().is_loopback() {
        if !allow_remote {
            bail!(
                "--listen {listen} is reachable from other hosts, and the endpoints show paths and stacks: pass --allow-remote to serve there"
            );
        }
        eprintln!(
            "tracer: warning: serving on {listen}, reachable from other hosts: request paths and stacks are visible to anyone who can connect"
        );
    }
    if wanted.pids.is_empty() && wanted.exes.is_empty() && wanted.ports.is_empty() {
        bail!("say what to trace: --pid, --exe or --port (each may be repeated)");
    }
    preflight::require_privileges()?;
    preflight::resolve_pids(&wanted.pids)?;
    let listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("cannot listen on {listen}"))?;
    listener
        .set_nonblocking(true)
        .context("making the listening socket non-blocking")?;

    let mut session = Session::attach(settings)?;
    let metrics = Metrics::new();
    let (asks_tx, asks_rx) = mpsc::channel(MAX_WINDOWS);
    let (stop_tx, stop_rx) = oneshot::channel();
    let registry = metrics.registry();
    let server = std::thread::Builder::new()
        .name("tracer-http".into())
        .spawn(move || http::serve(listener, registry, asks_tx, stop_rx))
        .context("starting the HTTP thread")?;
    let mut daemon = Daemon {
        wanted,
        settings: settings.clone(),
        metrics,
        asks: asks_rx,
        pending: Vec::new(),
        start: CpuClocks::read(&session),
        gauges_at: None,
        stacks_reset_at: Instant::now(),
        budgets: settings.budgets.clone(),
        budget_every,
    };
    daemon.find_processes(&mut session);
    eprintln!(
        "tracer: serving http://{listen}/metrics and /debug/pprof/profile; tracing {}",
        daemon.wanted.describe()
    );
    if session.targets.processes().is_empty() {
        eprintln!("tracer: none of it runs yet: waiting for it");
    }
    let mut windows = Vec::new();
    let followed = session.follow(&mut windows, None, &mut daemon);
    // Clients still waiting for a window are answered (503) as their
    // replies drop; then the endpoints stop.
    drop(daemon);
    let _ = stop_tx.send(());
    session.detach();
    match server.join() {
        Ok(Err(e)) => eprintln!("tracer: the HTTP endpoints failed: {e:#}"),
        Err(_) => eprintln!("tracer: the HTTP endpoints failed"),
        Ok(Ok(())) => {}
    }
    followed?;
    eprintln!("tracer: stopped; everything detached");
    Ok(())
}

/// A window open until `due`, and who it is for.
struct Pending {
    due: Instant,
    reply: Reply,
}

enum Reply {
    /// A client of the endpoints.
    Client(oneshot::Sender<Box<crate::output::Results>>),
    /// The budgets, judged on each window in turn.
    Budgets,
}

struct Daemon {
    wanted: Wanted,
    settings: Settings,
    metrics: Metrics,
    asks: mpsc::Receiver<Ask>,
    /// Parallel to the session's windows: the windows are all clients'.
    pending: Vec<Pending>,
    /// The clocks when tracing started, for the tracer's own CPU.
    start: CpuClocks,
    gauges_at: Option<Instant>,
    stacks_reset_at: Instant,
    /// Latency budgets, judged on consecutive windows of `budget_every`.
    budgets: Vec<Budget>,
    budget_every: Duration,
}

impl Daemon {
    /// Traces the processes that match and are not traced yet.
    fn find_processes(&mut self, session: &mut Session) {
        let traced: Vec<u32> = session
            .targets
            .processes()
            .iter()
            .filter(|p| !p.exited)
            .map(|p| p.pid)
            .collect();
        for pid in self.wanted.look(&traced) {
            match session.trace_more(pid, self.settings.children) {
                Ok(()) => eprintln!(
                    "tracer: tracing {} ({pid})",
                    procfs::comm(pid).unwrap_or_default()
                ),
                Err(e) => eprintln!("tracer: warning: cannot trace {pid}: {e:#}"),
            }
        }
    }

    /// Opens a window for each client that asked.
    fn open_windows(&mut self, session: &Session, windows: &mut Vec<OpenWindow>) -> Result<()> {
        while windows.len() < MAX_WINDOWS {
            let Ok(ask) = self.asks.try_recv() else {
                break;
            };
            windows.push(OpenWindow::open(session, &self.settings)?);
            self.pending.push(Pending {
                due: Instant::now() + Duration::from_secs(ask.seconds),
                reply: Reply::Client(ask.reply),
            });
        }
        if !self.budgets.is_empty()
            && !self
                .pending
                .iter()
                .any(|p| matches!(p.reply, Reply::Budgets))
        {
            windows.push(OpenWindow::open(session, &self.settings)?);
            self.pending.push(Pending {
                due: Instant::now() + self.budget_every,
                reply: Reply::Budgets,
            });
        }
        Ok(())
    }

    /// Whether a client's window is open (it holds stacks and processes).
    fn clients_waiting(&self) -> bool {
        self.pending
            .iter()
            .any(|p| matches!(p.reply, Reply::Client(_)))
    }

    /// Judges the budgets on a window: the verdicts as metrics, and a line
    /// for each broken one.
    fn judge(&mut self, results: &crate::output::Results) -> Result<()> {
        let report = serde_json::to_value(&results.report)?;
        let verdicts = tracer_core::check::judge_all(&self.budgets, &report);
        for v in verdicts.iter().filter(|v| !v.held) {
            eprintln!(
                "tracer: budget broken over the last {:?}: {v}",
                self.budget_every
            );
        }
        self.metrics.set_verdicts(&verdicts);
        Ok(())
    }

    /// Cuts the windows whose time is up and sends them to their clients.
    fn cut_due(&mut self, session: &mut Session, windows: &mut Vec<OpenWindow>) -> Result<()> {
        let now = Instant::now();
        for i in (0..self.pending.len()).rev() {
            if self.pending[i].due > now {
                continue;
            }
            let pending = self.pending.swap_remove(i);
            let window = windows.swap_remove(i);
            let end = window.end(session)?;
            let results = window.cut(
                end,
                &mut session.tracker,
                &session.totals,
                &mut session.stacks,
                session.targets.processes(),
            );
            match pending.reply {
                // A client that went away does not want it.
                Reply::Client(reply) => {
                    let _ = reply.send(Box::new(results));
                }
                Reply::Budgets => self.judge(&results)?,
            }
            // The window's tables are freed with it.
            memory::give_back_freed();
        }
        Ok(())
    }

    fn update_gauges(&mut self, session: &Session) -> Result<()> {
        if self.gauges_at.is_some_and(|at| at.elapsed() < GAUGES_EVERY) {
            return Ok(());
        }
        self.gauges_at = Some(Instant::now());
        self.metrics.set_processes(
            session
                .targets
                .processes()
                .iter()
                .filter(|p| !p.exited)
                .map(|p| (p.pid, p.comm.as_str())),
        );
        let cpu = CpuClocks::read(session).since(&self.start);
        self.metrics.set_counters(&session.probes.counters()?, &cpu);
        let overflows = session.totals.listen_counters();
        let ports: Vec<u16> = session.tracker.listeners().keys().copied().collect();
        self.metrics.keep_listeners(&ports);
        for (port, l) in session.tracker.listeners() {
            let overflowed = overflows
                .iter()
                .find(|(p, _)| p == port)
                .map_or(0, |(_, c)| c.overflows);
            self.metrics.set_listener(
                *port,
                l.queue.peak().unwrap_or(0),
                l.backlog_limit.unwrap_or(0),
                overflowed,
            );
        }
        Ok(())
    }
}

impl Driver for Daemon {
    fn finished(&mut self, finished: &Finished) {
        self.metrics.observe(finished);
    }

    fn check(&mut self, session: &mut Session, windows: &mut Vec<OpenWindow>) -> Result<()> {
        self.find_processes(session);
        if !self.clients_waiting() {
            // Reports name the processes and stacks of their window:
            // forgotten only when no client's window is open (the budgets'
            // look at routes only).
            session.forget_exited();
            if self.stacks_reset_at.elapsed() >= STACKS_RESET_EVERY {
                session.reset_stacks();
                self.stacks_reset_at = Instant::now();
            }
        }
        self.open_windows(session, windows)?;
        self.cut_due(session, windows)?;
        self.update_gauges(session)
    }

    fn outlives_processes(&self) -> bool {
        true
    }
}
