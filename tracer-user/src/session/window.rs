//! Windows of a session: one opens with the run; a sink may open more. A
//! window aggregates the requests finished while it is open and remembers
//! the cumulative counters it started from, so cutting it gives the
//! results of its own span without detaching anything.

use std::{
    collections::HashMap,
    rc::Rc,
    time::{Instant, SystemTime},
};

use anyhow::Result;
use tracer_common::ListenCounters;
use tracer_core::{
    aggregate::window::{Baseline, Window},
    analysis::facts,
    counters::Counters,
    process::{CommandOutcome, Process},
    report::{
        self, BudgetReport, CpuCost, GoroutineSampling, Meta, Netstat, ProgramClock, Sampling,
        folded,
    },
    stack::Frame,
    track::{Finished, OpenConnections, Tracker},
};

use super::{attached::Session, clock, overhead::CpuClocks, settings::Settings};
use crate::{kernel::probes::Totals, output::Results, symbols::stacks::Stacks, system::procfs};

pub struct OpenWindow {
    window: Window,
    started: SystemTime,
    t0: Instant,
    realtime_offset_ns: i128,
    sampling: Sampling,
    /// The process whose network namespace's `TcpExt` counters are read.
    netstat_pid: u32,
    netstat_before: HashMap<String, u64>,
    cpu_before: CpuClocks,
}

/// The cumulative figures when a window ends, and what the session adds
/// once its programs are detached.
pub struct End {
    /// How the command of `tracer exec` ended.
    pub command: Option<CommandOutcome>,
    /// The session's warnings (hooks the kernel lacks, Go versions unknown).
    pub warnings: Vec<String>,
    duration_s: f64,
    goroutines: GoroutineSampling,
    counters: Counters,
    program_costs: Vec<ProgramClock>,
    listen_counters: Vec<(u16, ListenCounters)>,
    netstat: Netstat,
    open: OpenConnections,
    cpu: CpuCost,
    budget: BudgetReport,
}

impl OpenWindow {
    pub fn open(session: &Session, settings: &Settings) -> Result<OpenWindow> {
        let netstat_pid = session
            .targets
            .processes()
            .first()
            .map_or(std::process::id(), |t| t.pid);
        let baseline = Baseline {
            counters: session.probes.counters()?,
            connections: session.tracker.connections(),
            oncpu: session.totals.oncpu(),
            offcpu: session.totals.offcpu_us(),
        };
        Ok(OpenWindow {
            window: Window::open(clock::monotonic_ns(), settings.sample_us(), baseline),
            started: SystemTime::now(),
            t0: Instant::now(),
            realtime_offset_ns: clock::realtime_minus_monotonic_ns(),
            sampling: Sampling {
                freq_hz: settings.freq,
                off_cpu: settings.off_cpu,
                min_block_us: settings.min_block.as_micros() as u64,
            },
            netstat_pid,
            netstat_before: procfs::tcp_ext(netstat_pid),
            cpu_before: CpuClocks::read(session),
        })
    }

    pub fn record(&mut self, finished: &Finished) {
        self.window.record(finished);
    }

    /// Reads what the kernel and the goroutine sampler counted, and where
    /// the open connections stand: while the programs are attached and
    /// before the tracker settles the requests in progress.
    pub fn end(&self, session: &Session) -> Result<End> {
        let pids: Vec<u32> = session.targets.processes().iter().map(|p| p.pid).collect();
        let unsent = procfs::peers_with_unsent_bytes(&pids);
        let after = procfs::tcp_ext(self.netstat_pid);
        let delta = |name: &str| {
            after
                .get(name)
                .unwrap_or(&0)
                .saturating_sub(*self.netstat_before.get(name).unwrap_or(&0))
        };
        Ok(End {
            command: None,
            warnings: session.warnings.clone(),
            duration_s: self.t0.elapsed().as_secs_f64(),
            goroutines: session.sampler.summary(),
            counters: session.probes.counters()?,
            // Cumulative since attach: exact for the whole run's window.
            program_costs: session.probes.program_costs(),
            listen_counters: session.totals.listen_counters(),
            netstat: Netstat {
                listen_overflows: delta("ListenOverflows"),
                listen_drops: delta("ListenDrops"),
            },
            open: session
                .tracker
                .open_connections_now(|peer| unsent.contains(&peer)),
            cpu: CpuClocks::read(session).since(&self.cpu_before),
            budget: session.steering.report(),
        })
    }

    /// The window's results: report, chain flame graph, and the on-CPU and
    /// off-CPU graphs of the stacks counted while it was open.
    pub fn cut(
        self,
        end: End,
        tracker: &mut Tracker,
        totals: &Totals,
        stacks: &mut Stacks,
        processes: &[Process],
    ) -> Results {
        stacks.note_all(tracker.take_new_stacks());
        stacks.resolve_pending();
        let w = &self.window;
        let meta = Meta {
            started: self.started,
            realtime_offset_ns: self.realtime_offset_ns,
            duration_s: end.duration_s,
            processes: processes.to_vec(),
            command: end.command,
            connections: w.connections(tracker.connections()),
            open_peak: tracker.open_peak(),
            open: end.open,
            counters: w.counters(&end.counters),
            sampling: self.sampling,
            goroutines: end.goroutines,
            listen_counters: end.listen_counters,
            netstat: end.netstat,
            diagnosis: facts::diagnosis(
                &w.aggregates,
                tracker.listeners(),
                tracker.open_peak(),
                stacks,
            ),
            program_costs: end.program_costs,
            cpu: end.cpu,
            budget: end.budget,
            warnings: end.warnings,
        };
        let comm_of = |tgid: u32| -> Frame {
            processes
                .iter()
                .find(|t| t.pid == tgid)
                .map_or_else(|| Rc::from(tgid.to_string()), |t| Rc::from(t.comm.as_str()))
        };
        let oncpu = (self.sampling.freq_hz > 0)
            .then(|| folded::by_stack(&w.oncpu(&totals.oncpu()), stacks, &comm_of));
        let offcpu = self
            .sampling
            .off_cpu
            .then(|| folded::by_stack(&w.offcpu(&totals.offcpu_us()), stacks, &comm_of));
        Results {
            started: self.started,
            report: report::build(&w.aggregates, tracker.listeners(), meta, stacks),
            chains: folded::chains(&w.aggregates, stacks),
            oncpu,
            offcpu,
        }
    }
}
