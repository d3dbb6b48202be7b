//! `report.json`: the machine-readable summary whose shape DESIGN.md fixes
//! (routes, slowest, listeners, connections, requests, dropped_events); the
//! summary text printed from it; folded stacks for the flame graphs.

pub mod folded;
pub mod markdown;
pub mod summary;

use std::{collections::BTreeMap, time::SystemTime};

use serde::Serialize;

use crate::{
    aggregate::{Aggregates, RouteKey, RouteStats, SlowRequest, outcome_name},
    analysis::{causes, diagnose::Diagnosis},
    budget::Span,
    chain::Stage,
    counters::Counters,
    process::{CommandOutcome, Process},
    stack::StackNames,
    track::{Listener, OpenConnections},
    units::{rfc3339, us},
};

#[derive(Serialize)]
pub struct Report {
    pub tool: &'static str,
    /// The worst route and what dominates its latency, in one line.
    pub diagnosis: Option<Diagnosis>,
    pub version: &'static str,
    pub started_at: String,
    pub duration_s: f64,
    pub processes: Vec<Process>,
    /// The command of `tracer exec`, and how it ended.
    pub command: Option<CommandOutcome>,
    pub connections: u64,
    pub requests: u64,
    /// Records lost in the kernel (ring buffer full) or syscalls that could
    /// not be followed (in-flight table full). Never silently zero.
    pub dropped_events: u64,
    pub drops: Drops,
    pub events: u64,
    pub events_per_s: f64,
    /// Requests of connections the overhead budget left out, counted in
    /// the kernel (each request's first read): `requests` plus these is
    /// every request served.
    pub requests_left_out: u64,
    pub sampling: SamplingReport,
    /// The goroutine sampler: Go programs whose waits it reads, and its work.
    pub goroutines: GoroutineSampling,
    pub routes: Vec<RouteReport>,
    pub slowest: Vec<SlowReport>,
    pub listeners: Vec<ListenerReport>,
    pub netstat: Netstat,
    /// Most inbound connections open at once.
    pub connections_open_peak: usize,
    /// Inbound connections still open when tracing ended.
    pub connections_open: u64,
    /// The same, by where each stood.
    pub connections_by_state: OpenConnections,
    /// What tracing cost: the kernel programs and the tracer itself.
    pub tracer_cost: TracerCost,
    /// What each kernel program cost (the kernel's BPF run-time accounting).
    pub program_costs: Vec<ProgramCost>,
    pub warnings: Vec<String>,
}

/// The tracer's own cost over the window: CPU time in its kernel programs
/// (wherever they ran, for traced processes or not) and in the tracer.
#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
pub struct TracerCost {
    pub kernel_cpu_s: f64,
    pub userspace_cpu_s: f64,
    /// Both, per request served (traced or left out by the overhead
    /// budget); `null` without requests.
    pub per_request_us: Option<f64>,
    /// CPU the traced processes used meanwhile (the kernel programs that
    /// ran on their behalf included).
    pub traced_cpu_s: f64,
    /// The tracer's cost as a share of that; `null` when they used none.
    pub pct_of_traced_cpu: Option<f64>,
}

/// CPU times measured over a window, in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuCost {
    /// In the kernel programs (their run time as the kernel counts it).
    pub kernel_ns: u64,
    /// In the tracer process.
    pub userspace_ns: u64,
    /// In the traced processes.
    pub traced_ns: u64,
}

impl TracerCost {
    pub fn new(cpu: CpuCost, requests: u64) -> TracerCost {
        let own = cpu.kernel_ns + cpu.userspace_ns;
        TracerCost {
            kernel_cpu_s: cpu.kernel_ns as f64 / 1e9,
            userspace_cpu_s: cpu.userspace_ns as f64 / 1e9,
            per_request_us: (requests > 0).then(|| own as f64 / 1e3 / requests as f64),
            traced_cpu_s: cpu.traced_ns as f64 / 1e9,
            pct_of_traced_cpu: (cpu.traced_ns > 0)
                .then(|| own as f64 * 100.0 / cpu.traced_ns as f64),
        }
    }
}

#[derive(Serialize)]
pub struct ProgramCost {
    pub program: String,
    pub runs_per_s: f64,
    /// The mean over the runs the kernel timed (`timed_runs`); `null`
    /// when none was.
    pub ns_per_run: Option<f64>,
    pub timed_runs: u64,
    /// CPU time in the program, in % of one core.
    pub cpu_pct: f64,
}

#[derive(Serialize)]
pub struct Drops {
    pub ringbuf_full: u64,
    pub blocked_write_table_full: u64,
    pub socket_table_full: u64,
    pub payload_unreadable: u64,
    /// Samples or blocks kept without their stack (stack map full or collision).
    pub stacks_lost: u64,
    pub stack_table_full: u64,
}

/// How stacks were gathered.
#[derive(Clone, Copy, Serialize)]
pub struct Sampling {
    /// On-CPU sampling frequency, 0 when off.
    pub freq_hz: u64,
    pub off_cpu: bool,
    /// Shortest block reported off-CPU.
    pub min_block_us: u64,
}

/// How stacks were gathered, and which connections were traced.
#[derive(Serialize)]
pub struct SamplingReport {
    #[serde(flatten)]
    pub stacks: Sampling,
    pub connections: BudgetReport,
}

/// The overhead budget and what it left out.
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
pub struct BudgetReport {
    /// `--max-overhead`, percent of the traced processes' CPU (0: none).
    pub max_overhead_pct: f64,
    /// When fewer than all connections were traced, and what share.
    pub spans: Vec<Span>,
    /// Set when the budget was out of reach: the cost, in percent of the
    /// traced processes' CPU, with the fewest connections traced.
    pub out_of_reach_pct: Option<f64>,
}

/// What the goroutine sampler did.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct GoroutineSampling {
    pub enabled: bool,
    /// Go programs whose goroutines it could read.
    pub processes: u32,
    /// Looks at goroutines serving requests, and those that could not be
    /// read (the goroutine or the process gone meanwhile).
    pub looks: u64,
    pub unreadable: u64,
}

#[derive(Serialize)]
pub struct StageReport {
    pub p50_us: u64,
    pub p99_us: u64,
    pub total_us: u64,
}

#[derive(Serialize)]
pub struct RouteReport {
    pub method: String,
    pub path: String,
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub stages: BTreeMap<&'static str, StageReport>,
    pub statuses: BTreeMap<String, u64>,
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Share of handler time that the serving threads' on-CPU samples and
    /// off-CPU blocks, and the waits on outbound connections, explain.
    pub explained_pct: Option<f64>,
    /// What the handlers waited on, largest first, in µs per request.
    pub blocked_on: Vec<Blocked>,
}

#[derive(Serialize)]
pub struct Blocked {
    pub what: String,
    pub us: u64,
}

#[derive(Serialize)]
pub struct SlowReport {
    pub method: String,
    pub path: String,
    pub status: Option<u16>,
    pub peer: Option<String>,
    pub pid: u32,
    pub process: String,
    pub started_at: String,
    pub total_us: u64,
    pub outcome: &'static str,
    pub stages: BTreeMap<&'static str, u64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub blocked_on: Vec<Blocked>,
}

#[derive(Serialize)]
pub struct ListenerReport {
    pub port: u16,
    pub pids: Vec<u32>,
    pub accepted: u64,
    /// The backlog the kernel applies (`listen()`'s argument capped by somaxconn).
    pub backlog_limit: Option<u32>,
    /// Accept-queue depth seen at handshakes and accepts: highest, and p99.
    pub queue_peak: Option<u32>,
    pub queue_p99: Option<u32>,
    /// Handshakes this listener dropped while traced, mostly because its
    /// accept queue was full (its `sk_drops`: SYNs and final ACKs alike).
    /// Clients retry a dropped SYN after 1 s, then 3 s, 7 s...: time the
    /// chains cannot see, since it passes before the handshake completes.
    pub overflows: Option<u64>,
    /// Of those, final ACKs dropped (`kfree_skb` reason `TCP_LISTEN_OVERFLOW`):
    /// clients that believe they are connected.
    pub overflowed_final_acks: Option<u64>,
    pub synack_retransmits: Option<u64>,
}

/// System-wide `TcpExt` counters over the run, to cross-check `overflows`
/// (they count every listener of the network namespace, and SYNs dropped
/// at a full queue, which the per-port count does not see).
#[derive(Serialize, Default)]
pub struct Netstat {
    pub listen_overflows: u64,
    pub listen_drops: u64,
}

/// What the session knows besides the aggregates.
pub struct Meta {
    pub started: SystemTime,
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC, to date kernel timestamps.
    pub realtime_offset_ns: i128,
    pub duration_s: f64,
    pub processes: Vec<Process>,
    pub command: Option<CommandOutcome>,
    /// Inbound connections seen, and the most open at once.
    pub connections: u64,
    pub open_peak: usize,
    /// Inbound connections open at the end.
    pub open: OpenConnections,
    pub counters: Counters,
    pub sampling: Sampling,
    pub goroutines: GoroutineSampling,
    /// Per port: (overflows, SYN-ACK retransmits), from the kernel's counters.
    pub listen_counters: Vec<(u16, tracer_common::ListenCounters)>,
    pub netstat: Netstat,
    pub diagnosis: Option<Diagnosis>,
    /// Each kernel program's runs and timed runs over the trace.
    pub program_costs: Vec<ProgramClock>,
    /// CPU the tracer and the traced processes used over the window.
    pub cpu: CpuCost,
    pub budget: BudgetReport,
    pub warnings: Vec<String>,
}

fn wall(meta: &Meta, mono_ns: u64) -> String {
    let ns = i128::from(mono_ns) + meta.realtime_offset_ns;
    let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(ns.max(0) as u64);
    rfc3339(t)
}

/// Causes listed per route.
const ROUTE_CAUSES_SHOWN: usize = 5;
/// Causes looked at per route before those that read the same are merged.
const ROUTE_CAUSES_LOOKED_AT: usize = 16;

fn route_report(
    key: &RouteKey,
    r: &RouteStats,
    sampling: Sampling,
    names: &mut dyn StackNames,
) -> RouteReport {
    let stages = Stage::ALL
        .iter()
        .map(|&s| {
            let st = r.stage(s);
            (
                s.name(),
                StageReport {
                    p50_us: st.hist.quantile(0.5),
                    p99_us: st.hist.quantile(0.99),
                    total_us: st.total_us,
                },
            )
        })
        .collect();
    RouteReport {
        method: key.method.clone(),
        path: key.path.clone(),
        count: r.count,
        p50_us: r.latency.quantile(0.5),
        p99_us: r.latency.quantile(0.99),
        max_us: r.latency.max(),
        stages,
        statuses: r
            .statuses
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        outcomes: r.outcomes.clone(),
        explained_pct: (sampling.freq_hz > 0 || sampling.off_cpu)
            .then(|| (r.explained_pct() * 10.0).round() / 10.0),
        blocked_on: causes::named(&r.top_causes(ROUTE_CAUSES_LOOKED_AT), names)
            .into_iter()
            .take(ROUTE_CAUSES_SHOWN)
            .map(|w| Blocked {
                what: w.what,
                us: w.us / r.measured().max(1),
            })
            .collect(),
    }
}

fn slow_report(meta: &Meta, s: &SlowRequest, names: &mut dyn StackNames) -> SlowReport {
    let r = &s.request;
    SlowReport {
        method: s.route.method.clone(),
        path: s.route.path.clone(),
        status: r.status,
        peer: s.origin.peer.map(|p| p.to_string()),
        pid: s.origin.pid,
        process: s.origin.comm.to_string(),
        started_at: wall(meta, r.start_ns),
        total_us: us(r.total_ns()),
        outcome: outcome_name(r.outcome),
        stages: Stage::LATENCY
            .iter()
            .map(|&st| (st.name(), us(r.stages.get(st))))
            .collect(),
        bytes_in: r.bytes_in,
        bytes_out: r.bytes_out,
        blocked_on: causes::named(&s.causes, names)
            .into_iter()
            .map(|w| Blocked {
                what: w.what,
                us: w.us,
            })
            .collect(),
    }
}

/// The report of the requests in `agg`; `names` names the stacks behind
/// each cause.
pub fn build(
    agg: &Aggregates,
    listeners: &BTreeMap<u16, Listener>,
    mut meta: Meta,
    names: &mut dyn StackNames,
) -> Report {
    let mut routes: Vec<RouteReport> = agg
        .routes()
        .iter()
        .map(|(k, r)| route_report(k, r, meta.sampling, names))
        .collect();
    routes.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| (&a.method, &a.path).cmp(&(&b.method, &b.path)))
    });
    let slowest = agg
        .slowest()
        .into_iter()
        .map(|s| slow_report(&meta, s, names))
        .collect();
    let listeners = listeners
        .iter()
        .map(|(&port, l)| listener_report(port, l, &meta))
        .collect();
    let c = meta.counters;
    let program_costs = program_costs(&meta);
    let warnings = budget_warnings(
        &meta.budget,
        c.left_out_requests,
        loss_warnings(agg, &c, std::mem::take(&mut meta.warnings)),
    );
    Report {
        tool: "tracer",
        diagnosis: meta.diagnosis,
        version: env!("CARGO_PKG_VERSION"),
        started_at: rfc3339(meta.started),
        duration_s: meta.duration_s,
        processes: meta.processes,
        command: meta.command,
        connections: meta.connections,
        requests: agg.requests(),
        dropped_events: c.dropped(),
        drops: Drops {
            ringbuf_full: c.ringbuf_full,
            blocked_write_table_full: c.blocked_write_full,
            socket_table_full: c.socks_full,
            payload_unreadable: c.payload_fault,
            stacks_lost: c.stack_lost,
            stack_table_full: c.stack_table_full,
        },
        requests_left_out: c.left_out_requests,
        sampling: SamplingReport {
            stacks: meta.sampling,
            connections: meta.budget,
        },
        goroutines: meta.goroutines,
        events: c.events,
        events_per_s: if meta.duration_s > 0.0 {
            c.events as f64 / meta.duration_s
        } else {
            0.0
        },
        routes,
        slowest,
        listeners,
        netstat: meta.netstat,
        connections_open_peak: meta.open_peak,
        connections_open: meta.open.total(),
        connections_by_state: meta.open,
        tracer_cost: TracerCost::new(meta.cpu, agg.requests() + c.left_out_requests),
        program_costs,
        warnings,
    }
}

/// The session's warnings, and what the losses did to the figures.
fn loss_warnings(agg: &Aggregates, c: &Counters, mut warnings: Vec<String>) -> Vec<String> {
    if c.ringbuf_full > 0 {
        warnings.push(format!(
            "{} records lost: the ring buffer was full (the tracer fell behind)",
            c.ringbuf_full
        ));
    }
    if agg.pipelined() > 0 {
        warnings.push(format!(
            "{} requests arrived pipelined behind another, read before its response (HTTP/1.1 pipelining): each is merged into the chain of the request before it, and not counted apart",
            agg.pipelined()
        ));
    }
    if agg.lost() > 0 {
        warnings.push(format!(
            "{} requests were in progress when records of their connection were lost: counted as events_lost, left out of percentiles, stage times, slowest requests and the diagnosis",
            agg.lost()
        ));
    }
    warnings
}

/// What the overhead budget did that the figures depend on.
fn budget_warnings(b: &BudgetReport, left_out: u64, mut warnings: Vec<String>) -> Vec<String> {
    if left_out > 0 {
        warnings.push(format!(
            "over the {}% overhead budget, {left_out} requests were left out (whole, with their connections): requests counts the traced ones, requests_left_out the others; percentiles weigh each traced request for those left out beside it",
            b.max_overhead_pct
        ));
    }
    if let Some(pct) = b.out_of_reach_pct {
        warnings.push(format!(
            "the {}% overhead budget was out of reach: tracing the fewest connections still cost {pct:.1}% of the traced processes' CPU (the part leaving connections out cannot cut)",
            b.max_overhead_pct
        ));
    }
    warnings
}

fn listener_report(port: u16, l: &Listener, meta: &Meta) -> ListenerReport {
    let counters = meta
        .listen_counters
        .iter()
        .find(|(p, _)| *p == port)
        .map(|(_, c)| *c)
        .unwrap_or_default();
    ListenerReport {
        port,
        pids: l.pids.clone(),
        accepted: l.accepted,
        backlog_limit: l.backlog_limit,
        queue_peak: l.queue.peak(),
        queue_p99: l.queue.quantile(0.99),
        overflows: l.drops(),
        overflowed_final_acks: Some(counters.overflows),
        synack_retransmits: Some(counters.synack_retransmits),
    }
}

/// A kernel program's runs, all counted, and the time of those it timed
/// (one in `tracer_common::program::TIME_EVERY`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProgramClock {
    pub name: String,
    pub runs: u64,
    pub timed_runs: u64,
    pub timed_ns: u64,
}

impl ProgramClock {
    /// Mean time of a run, from the timed ones.
    pub fn ns_per_run(&self) -> Option<f64> {
        (self.timed_runs > 0).then(|| self.timed_ns as f64 / self.timed_runs as f64)
    }

    /// Time in all the runs: the count times the timed mean.
    pub fn ns(&self) -> u64 {
        self.ns_per_run()
            .map_or(0, |mean| (mean * self.runs as f64) as u64)
    }
}

/// Runs, time per run and CPU share of each program the kernel counted.
fn program_costs(meta: &Meta) -> Vec<ProgramCost> {
    let secs = meta.duration_s.max(1e-9);
    meta.program_costs
        .iter()
        .filter(|p| p.runs > 0)
        .map(|p| ProgramCost {
            program: p.name.clone(),
            runs_per_s: p.runs as f64 / secs,
            ns_per_run: p.ns_per_run(),
            timed_runs: p.timed_runs,
            cpu_pct: p.ns() as f64 / 1e9 / secs * 100.0,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tracers_cost_is_per_request_and_against_the_traced_cpu() {
        let cpu = CpuCost {
            kernel_ns: 300_000_000,
            userspace_ns: 500_000_000,
            traced_ns: 10_000_000_000,
        };
        let c = TracerCost::new(cpu, 100_000);
        assert!((c.per_request_us.expect("requests") - 8.0).abs() < 1e-9);
        assert!((c.pct_of_traced_cpu.expect("cpu") - 8.0).abs() < 1e-9);
        let idle = TracerCost::new(CpuCost::default(), 0);
        assert_eq!((idle.per_request_us, idle.pct_of_traced_cpu), (None, None));
    }
}
