//! Aggregation of finished requests: per-route latency and stage histograms,
//! the slowest requests, and the chain flame graph's folded counts. Memory
//! stays bounded whatever the run length: histograms, a capped route table,
//! and a fixed-size list of slow requests.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap},
    net::SocketAddr,
};

use hdrhistogram::Histogram;
use rustc_hash::FxHashMap;

use crate::chain::{Outcome, Request, Stage};

/// Routes beyond this many distinct `METHOD path` pairs are folded into one
/// `(other)` route per method, so a path with ids in it cannot exhaust memory.
pub const MAX_ROUTES: usize = 256;
/// Slowest requests kept for the report.
pub const SLOWEST_KEPT: usize = 20;
pub const OTHER_PATH: &str = "(other)";
/// Method and path of requests whose first bytes are not HTTP/1.x.
pub const UNKNOWN: &str = "-";

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteKey {
    pub method: String,
    pub path: String,
}

impl RouteKey {
    pub fn of(req: &Request) -> Self {
        RouteKey {
            method: req.method.clone().unwrap_or_else(|| UNKNOWN.to_string()),
            path: req.path.clone().unwrap_or_else(|| UNKNOWN.to_string()),
        }
    }

    pub fn label(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// Latency histogram in microseconds, 2 significant digits (1% resolution).
pub struct Hist(Histogram<u32>);

impl Hist {
    fn new() -> Self {
        // Auto-resizing from a small range: memory follows the largest value seen.
        Hist(Histogram::new(2).unwrap_or_else(|_| unreachable!("2 significant figures is valid")))
    }

    fn record(&mut self, us: u64) {
        // Saturates at the counter's limit rather than failing.
        let _ = self.0.record(us);
    }

    pub fn quantile(&self, q: f64) -> u64 {
        self.0.value_at_quantile(q)
    }

    pub fn max(&self) -> u64 {
        self.0.max()
    }
}

pub struct StageStats {
    pub hist: Hist,
    pub total_us: u64,
}

pub struct RouteStats {
    pub count: u64,
    pub latency: Hist,
    pub stages: [StageStats; 6],
    pub statuses: BTreeMap<u16, u64>,
    pub outcomes: BTreeMap<&'static str, u64>,
}

impl RouteStats {
    fn new() -> Self {
        RouteStats {
            count: 0,
            latency: Hist::new(),
            stages: std::array::from_fn(|_| StageStats { hist: Hist::new(), total_us: 0 }),
            statuses: BTreeMap::new(),
            outcomes: BTreeMap::new(),
        }
    }

    pub fn stage(&self, stage: Stage) -> &StageStats {
        &self.stages[stage as usize]
    }
}

/// Who sent a request, and to which process.
#[derive(Clone, Debug)]
pub struct Origin {
    pub pid: u32,
    pub comm: String,
    pub peer: Option<SocketAddr>,
}

/// A request kept among the slowest.
#[derive(Clone, Debug)]
pub struct SlowRequest {
    pub route: RouteKey,
    pub origin: Origin,
    pub request: Request,
}

pub fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Complete => "complete",
        Outcome::ClientClosed => "client_closed",
        Outcome::ServerClosed => "server_closed",
        Outcome::Unanswered => "unanswered",
    }
}

#[derive(Default)]
pub struct Stats {
    pub routes: FxHashMap<RouteKey, RouteStats>,
    pub requests: u64,
    /// Min-heap on total time: the root is the fastest of the slow ones.
    slowest: BinaryHeap<Reverse<(u64, u64)>>,
    slow_requests: FxHashMap<u64, SlowRequest>,
    next_id: u64,
    /// Chain flame graph: `comm;METHOD path;stage` -> microseconds.
    pub folded: FxHashMap<(String, RouteKey, Stage), u64>,
}

pub fn us(ns: u64) -> u64 {
    ns / 1000
}

impl Stats {
    pub fn record(&mut self, request: Request, origin: Origin) {
        self.requests += 1;
        let key = self.route_key(&request);
        let route = self.routes.entry(key.clone()).or_insert_with(RouteStats::new);
        route.count += 1;
        route.latency.record(us(request.total_ns()));
        for stage in Stage::ALL {
            let t = us(request.stages.get(stage));
            let s = &mut route.stages[stage as usize];
            s.hist.record(t);
            s.total_us += t;
        }
        if let Some(status) = request.status {
            *route.statuses.entry(status).or_default() += 1;
        }
        *route.outcomes.entry(outcome_name(request.outcome)).or_default() += 1;

        for stage in Stage::LATENCY {
            let t = us(request.stages.get(stage));
            if t > 0 {
                *self.folded.entry((origin.comm.clone(), key.clone(), stage)).or_default() += t;
            }
        }
        self.keep_if_slow(request, key, origin);
    }

    fn route_key(&self, request: &Request) -> RouteKey {
        let key = RouteKey::of(request);
        if self.routes.len() < MAX_ROUTES || self.routes.contains_key(&key) {
            key
        } else {
            RouteKey { method: key.method, path: OTHER_PATH.to_string() }
        }
    }

    fn keep_if_slow(&mut self, request: Request, route: RouteKey, origin: Origin) {
        let total = request.total_ns();
        if self.slowest.len() >= SLOWEST_KEPT {
            match self.slowest.peek() {
                Some(Reverse((fastest, _))) if *fastest < total => {}
                _ => return,
            }
            if let Some(Reverse((_, id))) = self.slowest.pop() {
                self.slow_requests.remove(&id);
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.slowest.push(Reverse((total, id)));
        self.slow_requests.insert(id, SlowRequest { route, origin, request });
    }

    /// The slowest requests, slowest first.
    pub fn slowest(&self) -> Vec<&SlowRequest> {
        let mut v: Vec<&SlowRequest> = self.slow_requests.values().collect();
        v.sort_by_key(|s| Reverse(s.request.total_ns()));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::StageTimes;

    fn req(path: &str, handler_ms: u64) -> Request {
        let mut stages = StageTimes::default();
        stages.set(Stage::Handler, handler_ms * 1_000_000);
        stages.set(Stage::ReadWait, 1_000);
        Request {
            method: Some("GET".into()),
            path: Some(path.into()),
            status: Some(200),
            stages,
            start_ns: 0,
            end_ns: 0,
            outcome: Outcome::Complete,
            handler_ns: (0, 0),
            read_tid: 1,
            write_tid: 1,
            bytes_in: 0,
            bytes_out: 0,
            seq: 0,
        }
    }

    fn origin() -> Origin {
        Origin { pid: 1, comm: "srv".into(), peer: None }
    }

    #[test]
    fn percentiles_per_route_and_stage() {
        let mut s = Stats::default();
        for i in 1..=100 {
            s.record(req("/a", i), origin());
        }
        s.record(req("/b", 7), origin());
        let a = &s.routes[&RouteKey { method: "GET".into(), path: "/a".into() }];
        assert_eq!(a.count, 100);
        let p50 = a.stage(Stage::Handler).hist.quantile(0.5);
        assert!((49_000..=51_000).contains(&p50), "p50 {p50}");
        let p99 = a.latency.quantile(0.99);
        assert!((98_000..=101_000).contains(&p99), "p99 {p99}");
        assert_eq!(a.stage(Stage::Handler).total_us, 5050 * 1000);
        assert_eq!(s.requests, 101);
    }

    #[test]
    fn keeps_only_the_slowest() {
        let mut s = Stats::default();
        for i in 0..100 {
            s.record(req("/a", (i * 37) % 100), origin());
        }
        let slow = s.slowest();
        assert_eq!(slow.len(), SLOWEST_KEPT);
        assert_eq!(slow[0].request.stages.get(Stage::Handler), 99 * 1_000_000);
        assert_eq!(slow[SLOWEST_KEPT - 1].request.stages.get(Stage::Handler), 80 * 1_000_000);
    }

    #[test]
    fn route_table_is_capped() {
        let mut s = Stats::default();
        for i in 0..MAX_ROUTES + 50 {
            s.record(req(&format!("/item/{i}"), 1), origin());
        }
        assert_eq!(s.routes.len(), MAX_ROUTES + 1);
        let other = &s.routes[&RouteKey { method: "GET".into(), path: OTHER_PATH.into() }];
        assert_eq!(other.count, 50);
    }

    #[test]
    fn folded_sums_stage_time() {
        let mut s = Stats::default();
        s.record(req("/a", 3), origin());
        s.record(req("/a", 4), origin());
        let key = ("srv".to_string(), RouteKey { method: "GET".into(), path: "/a".into() }, Stage::Handler);
        assert_eq!(s.folded[&key], 7000);
    }
}
