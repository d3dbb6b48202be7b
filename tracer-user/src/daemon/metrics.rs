//! The daemon's Prometheus metrics: every finished request observed into
//! histograms by route, stage and process, and the session's counters
//! copied into gauges and counters at each look. Labels name the process by
//! its command name, not its pid, so a restarted service keeps its series.
//! Routes are capped per process as in report.json: beyond the cap they
//! fold into `METHOD (other)`.

use std::sync::{Arc, atomic::AtomicU64};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use rustc_hash::{FxHashMap, FxHashSet};
use tracer_core::{
    aggregate::{MAX_ROUTES, OTHER_PATH, outcome_name},
    chain::{Outcome, Stage, http::split_label},
    counters::Counters,
    report::CpuCost,
    track::Finished,
};

/// Seconds: 100 µs to 30 s, about three buckets a decade.
const BUCKETS: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 20.0, 30.0,
];
/// Methods of RFC 9110 and PATCH.
const STANDARD_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];
/// A request without a request line the tracer could read.
const UNKNOWN_ROUTE: &str = "- -";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    process: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    process: String,
    route: String,
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    process: String,
    route: String,
    status: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessLabels {
    process: String,
    pid: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabels {
    port: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabels {
    budget: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SideLabels {
    side: &'static str,
}

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The metric families, shared with the HTTP side, which encodes them.
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<RouteLabels, Histogram, fn() -> Histogram>,
    stages: Family<StageLabels, Histogram, fn() -> Histogram>,
    outcomes: Family<OutcomeLabels, Counter>,
    traced: Family<ProcessLabels, Gauge>,
    queue_depth: Family<PortLabels, Gauge>,
    queue_limit: Family<PortLabels, Gauge>,
    overflows: Family<PortLabels, Counter>,
    drops: Family<ReasonLabels, Counter>,
    cpu: Family<SideLabels, Counter<f64, AtomicU64>>,
    events: Counter,
    budget_broken: Family<BudgetLabels, Gauge>,
    routes: RouteCap,
    /// The cumulative figures last copied into counters, which only take
    /// increments.
    last: FxHashMap<String, f64>,
    /// Ports with listener series.
    ports: FxHashSet<u16>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tracer");
        let requests = Family::new_with_constructor(histogram as fn() -> Histogram);
        let stages = Family::new_with_constructor(histogram as fn() -> Histogram);
        let outcomes = Family::default();
        let traced = Family::default();
        let queue_depth = Family::default();
        let queue_limit = Family::default();
        let overflows = Family::default();
        let drops = Family::default();
        let cpu = Family::default();
        let events = Counter::default();
        let budget_broken = Family::default();
        registry.register(
            "budget_broken",
            "1 when the latency budget was broken over the last --budget-every window, 0 when it held",
            budget_broken.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Requests from their first byte's arrival (or accept) to the end of the response",
            requests.clone(),
        );
        registry.register(
            "stage_duration_seconds",
            "Time of each stage of a request: accept_queue, read_wait, request_read, handler, response_write, keepalive_idle",
            stages.clone(),
        );
        registry.register(
            "requests",
            "Requests by route, status and outcome (complete, client_closed, server_closed, unanswered, events_lost)",
            outcomes.clone(),
        );
        registry.register(
            "traced_process",
            "Processes traced now (1), by command name and pid",
            traced.clone(),
        );
        registry.register(
            "listen_queue_peak",
            "The deepest a listener's accept queue was seen, since tracing started",
            queue_depth.clone(),
        );
        registry.register(
            "listen_queue_limit",
            "A listener's accept queue limit (the listen backlog)",
            queue_limit.clone(),
        );
        registry.register(
            "listen_overflows",
            "Connections a full accept queue dropped",
            overflows.clone(),
        );
        registry.register(
            "dropped_events",
            "Records the tracer lost, by reason",
            drops.clone(),
        );
        registry.register(
            "cpu_seconds",
            "CPU the tracer used: its kernel programs and its own process",
            cpu.clone(),
        );
        registry.register("events", "Records the kernel programs sent", events.clone());
        Metrics {
            registry: Arc::new(registry),
            requests,
            stages,
            outcomes,
            traced,
            queue_depth,
            queue_limit,
            overflows,
            drops,
            cpu,
            events,
            budget_broken,
            routes: RouteCap::default(),
            last: FxHashMap::default(),
            ports: FxHashSet::default(),
        }
    }

    /// The budgets' verdicts on the last window.
    pub fn set_verdicts(&self, verdicts: &[tracer_core::check::Verdict]) {
        for v in verdicts {
            self.budget_broken
                .get_or_create(&BudgetLabels {
                    budget: v.budget.clone(),
                })
                .set(i64::from(!v.held));
        }
    }

    /// Drops the series of listeners no traced process has any more.
    pub fn keep_listeners(&mut self, ports: &[u16]) {
        let gone: Vec<u16> = self
            .ports
            .iter()
            .copied()
            .filter(|p| !ports.contains(p))
            .collect();
        for port in gone {
            let labels = PortLabels {
                port: port.to_string(),
            };
            self.queue_depth.remove(&labels);
            self.queue_limit.remove(&labels);
            self.overflows.remove(&labels);
            self.last.remove(&format!("overflows {port}"));
            self.ports.remove(&port);
        }
    }

    /// How much `key` grew since it was last seen at `now`.
    fn growth(&mut self, key: String, now: f64) -> f64 {
        let before = self.last.insert(key, now).unwrap_or(0.0);
        (now - before).max(0.0)
    }

    /// The registry, for the HTTP side to encode.
    pub fn registry(&self) -> Arc<Registry> {
        Arc::clone(&self.registry)
    }

    /// Observes a finished request, as many times as it stands for (the
    /// overhead budget may have left requests out beside it).
    pub fn observe(&mut self, finished: &Finished) {
        let Finished {
            request, origin, ..
        } = finished;
        let process = origin.comm.to_string();
        let route = self
            .routes
            .label(&process, request.route.as_deref().unwrap_or(UNKNOWN_ROUTE));
        let n = origin.weight.round().max(1.0) as u64;
        let status = request.status.map_or_else(String::new, |s| s.to_string());
        self.outcomes
            .get_or_create(&OutcomeLabels {
                process: process.clone(),
                route: route.clone(),
                status,
                outcome: outcome_name(request.outcome),
            })
            .inc_by(n);
        if request.outcome == Outcome::EventsLost {
            // Counted, and kept out of the durations it would distort.
            return;
        }
        let total = request.total_ns() as f64 / 1e9;
        let labels = RouteLabels {
            process: process.clone(),
            route: route.clone(),
        };
        let h = self.requests.get_or_create(&labels);
        for _ in 0..n {
            h.observe(total);
        }
        for stage in Stage::ALL {
            let h = self.stages.get_or_create(&StageLabels {
                process: process.clone(),
                route: route.clone(),
                stage: stage.name(),
            });
            let t = request.stages.get(stage) as f64 / 1e9;
            for _ in 0..n {
                h.observe(t);
            }
        }
    }

    /// The processes traced now.
    pub fn set_processes<'a>(&self, alive: impl Iterator<Item = (u32, &'a str)>) {
        self.traced.clear();
        for (pid, comm) in alive {
            self.traced
                .get_or_create(&ProcessLabels {
                    process: comm.to_string(),
                    pid: pid.to_string(),
                })
                .set(1);
        }
    }

    /// A listener's deepest queue, its limit, and its overflows so far.
    pub fn set_listener(&mut self, port: u16, depth: u32, limit: u32, overflows: u64) {
        if self.ports.insert(port) {
            // A series begins when its listener is first seen: the kernel's
            // count for the port may hold an earlier listener's.
            self.last
                .insert(format!("overflows {port}"), overflows as f64);
        }
        let labels = PortLabels {
            port: port.to_string(),
        };
        self.queue_depth
            .get_or_create(&labels)
            .set(i64::from(depth));
        self.queue_limit
            .get_or_create(&labels)
            .set(i64::from(limit));
        let grew = self.growth(format!("overflows {port}"), overflows as f64);
        self.overflows.get_or_create(&labels).inc_by(grew as u64);
    }

    /// The session's counters and the tracer's CPU so far.
    pub fn set_counters(&mut self, c: &Counters, cpu: &CpuCost) {
        let drops = [
            ("ringbuf_full", c.ringbuf_full),
            ("blocked_write_table_full", c.blocked_write_full),
            ("socket_table_full", c.socks_full),
            ("payload_unreadable", c.payload_fault),
            ("stack_lost", c.stack_lost),
            ("stack_table_full", c.stack_table_full),
        ];
        for (reason, n) in drops {
            let grew = self.growth(format!("drops {reason}"), n as f64);
            self.drops
                .get_or_create(&ReasonLabels { reason })
                .inc_by(grew as u64);
        }
        let grew = self.growth("events".into(), c.events as f64);
        self.events.inc_by(grew as u64);
        for (side, ns) in [("kernel", cpu.kernel_ns), ("userspace", cpu.userspace_ns)] {
            let grew = self.growth(format!("cpu {side}"), ns as f64 / 1e9);
            self.cpu.get_or_create(&SideLabels { side }).inc_by(grew);
        }
    }
}

/// The routes each process has had a series for: at most [`MAX_ROUTES`],
/// the rest folded into `METHOD (other)`.
#[derive(Default)]
struct RouteCap {
    seen: FxHashMap<String, FxHashSet<String>>,
}

impl RouteCap {
    fn label(&mut self, process: &str, route: &str) -> String {
        let seen = self.seen.entry(process.to_string()).or_default();
        if seen.contains(route) {
            return route.to_string();
        }
        if seen.len() < MAX_ROUTES {
            seen.insert(route.to_string());
            return route.to_string();
        }
        // Methods are the client's to invent: only the standard ones keep
        // a series of their own.
        let method = split_label(route).0;
        let method = if STANDARD_METHODS.contains(&method) {
            method
        } else {
            "OTHER"
        };
        format!("{method} {OTHER_PATH}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_beyond_the_cap_fold_into_other() {
        let mut cap = RouteCap::default();
        for i in 0..MAX_ROUTES {
            assert_eq!(
                cap.label("api", &format!("GET /r{i}")),
                format!("GET /r{i}")
            );
        }
        assert_eq!(cap.label("api", "GET /new"), "GET (other)");
        assert_eq!(cap.label("api", "POST /new"), "POST (other)");
        assert_eq!(cap.label("api", "BREW /pot"), "OTHER (other)");
        // Known routes keep their names; another process has its own cap.
        assert_eq!(cap.label("api", "GET /r3"), "GET /r3");
        assert_eq!(cap.label("web", "GET /new"), "GET /new");
    }
}
