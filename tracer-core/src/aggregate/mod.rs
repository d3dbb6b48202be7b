//! Aggregation of finished requests: per-route latency and stage histograms,
//! the slowest requests with what they waited on, and the chain flame
//! graph's folded counts. Memory stays bounded whatever the run length:
//! histograms, a capped route table, a fixed-size list of slow requests.

mod cause;
mod hist;
pub mod window;

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap},
    rc::Rc,
};

use rustc_hash::FxHashMap;
use tracer_common::StackKey;

pub use self::{cause::Cause, hist::Hist};
use crate::{
    attribution::{Attribution, Target, Wait},
    chain::{Outcome, Request, Stage, http::split_label},
    track::{Finished, Origin},
    units::us,
};

/// Routes beyond this many distinct `METHOD path` pairs are folded into one
/// `(other)` route per method, so a path with ids in it cannot exhaust memory.
pub const MAX_ROUTES: usize = 256;
/// Slowest requests kept for the report.
pub const SLOWEST_KEPT: usize = 20;
/// Causes kept per slow request.
const CAUSES_KEPT: usize = 5;
/// Distinct causes summed per route; beyond, time goes to [`Cause::OTHER`].
const ROUTE_CAUSES: usize = 128;
pub const OTHER_PATH: &str = "(other)";

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteKey {
    pub method: String,
    pub path: String,
}

impl RouteKey {
    fn from_label(label: &str) -> Self {
        let (method, path) = split_label(label);
        RouteKey {
            method: method.to_string(),
            path: path.to_string(),
        }
    }

    pub fn label(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// The route of requests whose first bytes are not HTTP/1.x.
const UNKNOWN_ROUTE: &str = "- -";

pub struct StageStats {
    pub hist: Hist,
    pub total_us: u64,
}

pub struct RouteStats {
    /// Requests seen, those with lost events included.
    pub count: u64,
    /// Of those, requests whose connection lost records meanwhile: in
    /// `count` and `outcomes`, in no other figure.
    pub lost: u64,
    pub latency: Hist,
    pub stages: [StageStats; 6],
    pub statuses: BTreeMap<u16, u64>,
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Handler time covered by the serving threads' samples and blocks.
    pub handler_explained_us: u64,
    /// Blocked time in the handler by cause, over all the route's requests.
    pub causes: FxHashMap<Cause, u64>,
}

impl RouteStats {
    fn new() -> Self {
        RouteStats {
            count: 0,
            lost: 0,
            latency: Hist::new(),
            stages: std::array::from_fn(|_| StageStats {
                hist: Hist::new(),
                total_us: 0,
            }),
            statuses: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            handler_explained_us: 0,
            causes: FxHashMap::default(),
        }
    }

    /// The route's causes, largest first.
    pub fn top_causes(&self, n: usize) -> Vec<(Cause, u64)> {
        let mut v: Vec<(Cause, u64)> = self.causes.iter().map(|(c, us)| (*c, *us)).collect();
        v.sort_by_key(|&(_, us)| Reverse(us));
        v.truncate(n);
        v
    }

    /// Requests the route's figures are made of: those without lost events.
    pub fn measured(&self) -> u64 {
        self.count - self.lost
    }

    pub fn stage(&self, stage: Stage) -> &StageStats {
        &self.stages[stage as usize]
    }

    /// Share of handler time the stacks explain, in percent.
    pub fn explained_pct(&self) -> f64 {
        let handler = self.stage(Stage::Handler).total_us;
        if handler == 0 {
            0.0
        } else {
            (self.handler_explained_us as f64 * 100.0 / handler as f64).min(100.0)
        }
    }
}

/// A request kept among the slowest.
#[derive(Clone, Debug)]
pub struct SlowRequest {
    pub route: RouteKey,
    pub origin: Origin,
    pub request: Request,
    /// Blocked time inside the handler by cause, largest first (µs).
    pub causes: Vec<(Cause, u64)>,
}

pub fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Complete => "complete",
        Outcome::ClientClosed => "client_closed",
        Outcome::ServerClosed => "server_closed",
        Outcome::Unanswered => "unanswered",
        Outcome::EventsLost => "events_lost",
    }
}

/// What sits under a stage in the chain flame graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Leaf {
    /// Time of the stage nothing more is known about.
    Stage,
    OffCpu(StackKey),
    OnCpu(StackKey),
    /// Waiting on one of the server's outbound connections.
    Waiting(Target, Wait),
    /// A goroutine parked by the Go runtime, with its stack (tgid, stack).
    GoWait(u32, u32),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChainKey {
    pub comm: Rc<str>,
    pub route: u32,
    pub stage: Stage,
    pub leaf: Leaf,
}

/// The aggregates of the requests finished over a span of time: a whole
/// run, or a window a sink asked for.
#[derive(Default)]
pub struct Aggregates {
    /// Route ids by label (`METHOD path`): looked up without allocating.
    route_ids: FxHashMap<Box<str>, u32>,
    routes: Vec<(RouteKey, RouteStats)>,
    requests: u64,
    /// Requests whose connection lost records while they were in progress.
    lost: u64,
    /// Requests that arrived pipelined behind another, merged into its chain.
    pipelined: u64,
    /// Min-heap on total time: the root is the fastest of the slow ones.
    slowest: BinaryHeap<Reverse<(u64, u64)>>,
    slow_requests: FxHashMap<u64, SlowRequest>,
    next_id: u64,
    /// Chain flame graph: microseconds per (process, route, stage, leaf).
    folded: FxHashMap<ChainKey, u64>,
    /// Microseconds one CPU sample stands for (0: sampling off).
    sample_us: u64,
}

impl Aggregates {
    /// `sample_us`: microseconds one on-CPU sample stands for (0 if sampling is off).
    pub fn new(sample_us: u64) -> Self {
        Aggregates {
            sample_us,
            ..Aggregates::default()
        }
    }

    /// Routes in the order they were first seen; a route's id is its index.
    pub fn routes(&self) -> &[(RouteKey, RouteStats)] {
        &self.routes
    }

    /// Requests recorded.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Of those, requests with lost events, kept out of every figure.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Requests that arrived pipelined behind another (not in `requests`:
    /// each is merged into the chain of the one before it).
    pub fn pipelined(&self) -> u64 {
        self.pipelined
    }

    /// The chain flame graph: microseconds per (process, route, stage, leaf).
    pub fn folded(&self) -> &FxHashMap<ChainKey, u64> {
        &self.folded
    }

    pub fn record(&mut self, finished: &Finished) {
        let Finished {
            request,
            origin,
            attribution,
        } = finished;
        self.requests += 1;
        self.pipelined += u64::from(request.pipelined);
        let route_id = self.route_id(request.route.as_deref().unwrap_or(UNKNOWN_ROUTE));
        let route = &mut self.routes[route_id as usize].1;
        route.count += 1;
        // Percentiles stand for every request: a traced one counts for
        // those the overhead budget left out beside it.
        let n = origin.weight.round().max(1.0) as u64;
        *route
            .outcomes
            .entry(outcome_name(request.outcome))
            .or_default() += 1;
        if request.outcome == Outcome::EventsLost {
            // Counted, and kept out of every figure it would distort.
            route.lost += 1;
            self.lost += 1;
            return;
        }
        route.latency.record_n(us(request.total_ns()), n);
        for stage in Stage::ALL {
            let t = us(request.stages.get(stage));
            let s = &mut route.stages[stage as usize];
            s.hist.record_n(t, n);
            s.total_us += t;
        }
        if let Some(status) = request.status {
            *route.statuses.entry(status).or_default() += 1;
        }

        let explained = self.fold(&origin.comm, route_id, request, attribution);
        let causes = causes(origin.pid, attribution);
        let route = &mut self.routes[route_id as usize].1;
        route.handler_explained_us += explained;
        for &(cause, us) in &causes {
            let key = if route.causes.len() < ROUTE_CAUSES || route.causes.contains_key(&cause) {
                cause
            } else {
                Cause::OTHER
            };
            *route.causes.entry(key).or_default() += us;
        }
        if self.would_keep(request.total_ns()) {
            let route = self.routes[route_id as usize].0.clone();
            self.keep_slow(SlowRequest {
                route,
                origin: origin.clone(),
                request: request.clone(),
                causes,
            });
        }
    }

    /// Adds the request's stages to the chain flame graph, the handler opened
    /// into the stacks that explain it. Returns the handler µs explained.
    fn fold(
        &mut self,
        comm: &Rc<str>,
        route: u32,
        request: &Request,
        attribution: &Attribution,
    ) -> u64 {
        let mut add = |stage, leaf, v: u64| {
            if v > 0 {
                *self
                    .folded
                    .entry(ChainKey {
                        comm: comm.clone(),
                        route,
                        stage,
                        leaf,
                    })
                    .or_default() += v;
            }
        };
        let mut explained = 0;
        for (off, ns) in &attribution.off {
            let key = StackKey {
                tgid: off.tgid,
                user_stack: off.user_stack,
                kernel_stack: off.kernel_stack,
                _pad: 0,
            };
            add(Stage::Handler, Leaf::OffCpu(key), us(*ns));
            // The loop waited on a timer or another task: it does not say
            // what this request waited for.
            if !off.is_loop_wait() {
                explained += us(*ns);
            }
        }
        for s in &attribution.samples {
            let key = StackKey {
                tgid: s.tgid,
                user_stack: s.user_stack,
                kernel_stack: s.kernel_stack,
                _pad: 0,
            };
            add(Stage::Handler, Leaf::OnCpu(key), self.sample_us);
            explained += self.sample_us;
        }
        for (target, wait, ns) in waits_not_blocked_on(attribution) {
            add(Stage::Handler, Leaf::Waiting(target, wait), us(ns));
            explained += us(ns);
        }
        for (w, ns) in &attribution.go_waits {
            add(Stage::Handler, Leaf::GoWait(w.tgid, w.stack), us(*ns));
            explained += us(*ns);
        }
        let handler = us(request.stages.get(Stage::Handler));
        for stage in Stage::LATENCY {
            let t = us(request.stages.get(stage));
            let rest = if stage == Stage::Handler {
                t.saturating_sub(explained)
            } else {
                t
            };
            add(stage, Leaf::Stage, rest);
        }
        explained.min(handler)
    }

    fn route_id(&mut self, label: &str) -> u32 {
        if let Some(&id) = self.route_ids.get(label) {
            return id;
        }
        if self.routes.len() >= MAX_ROUTES {
            let other = format!("{} {OTHER_PATH}", split_label(label).0);
            if let Some(&id) = self.route_ids.get(other.as_str()) {
                return id;
            }
            return self.add_route(&other);
        }
        self.add_route(label)
    }

    fn add_route(&mut self, label: &str) -> u32 {
        let id = self.routes.len() as u32;
        self.route_ids.insert(Box::from(label), id);
        self.routes
            .push((RouteKey::from_label(label), RouteStats::new()));
        id
    }

    pub fn route_key(&self, id: u32) -> Option<&RouteKey> {
        self.routes.get(id as usize).map(|(k, _)| k)
    }

    fn would_keep(&self, total_ns: u64) -> bool {
        self.slowest.len() < SLOWEST_KEPT
            || self
                .slowest
                .peek()
                .is_some_and(|Reverse((fastest, _))| *fastest < total_ns)
    }

    fn keep_slow(&mut self, slow: SlowRequest) {
        if self.slowest.len() >= SLOWEST_KEPT
            && let Some(Reverse((_, id))) = self.slowest.pop()
        {
            self.slow_requests.remove(&id);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.slowest.push(Reverse((slow.request.total_ns(), id)));
        self.slow_requests.insert(id, slow);
    }

    /// The slowest requests, slowest first.
    pub fn slowest(&self) -> Vec<&SlowRequest> {
        let mut v: Vec<&SlowRequest> = self.slow_requests.values().collect();
        v.sort_by_key(|s| Reverse(s.request.total_ns()));
        v
    }
}

/// Waits on outbound connections that the serving threads' blocks do not
/// already account for (a thread-per-connection server blocks its thread on
/// the call: that is the same time, seen twice).
fn waits_not_blocked_on(
    attribution: &Attribution,
) -> impl Iterator<Item = (Target, Wait, u64)> + '_ {
    attribution.waits.iter().copied().filter(|(target, _, ns)| {
        let blocked: u64 = attribution
            .off
            .iter()
            .filter(|(o, _)| o.target == *target)
            .map(|(_, ns)| ns)
            .sum();
        blocked * 2 < *ns
    })
}

/// Blocked time by cause, largest first.
fn causes(pid: u32, attribution: &Attribution) -> Vec<(Cause, u64)> {
    let mut by: FxHashMap<Cause, u64> = FxHashMap::default();
    for (off, ns) in &attribution.off {
        let cause = Cause {
            tgid: off.tgid,
            syscall: off.syscall,
            target: off.target,
            user_stack: off.user_stack,
            reason: 0,
        };
        *by.entry(cause).or_default() += us(*ns);
    }
    for (w, ns) in &attribution.go_waits {
        *by.entry(Cause::goroutine(w)).or_default() += us(*ns);
    }
    for (target, wait, ns) in waits_not_blocked_on(attribution) {
        *by.entry(Cause::wait(pid, target, wait)).or_default() += us(ns);
    }
    let mut v: Vec<(Cause, u64)> = by.into_iter().collect();
    v.sort_by_key(|&(_, us)| Reverse(us));
    v.truncate(CAUSES_KEPT);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        attribution::{OffCpu, Sample},
        chain::StageTimes,
    };

    /// Records a request as the tracker would hand it over.
    fn record(s: &mut Aggregates, request: Request, origin: Origin, attribution: Attribution) {
        s.record(&Finished {
            request,
            origin,
            attribution,
        });
    }

    fn req(path: &str, handler_ms: u64) -> Request {
        let mut stages = StageTimes::default();
        stages.set(Stage::Handler, handler_ms * 1_000_000);
        stages.set(Stage::ReadWait, 1_000);
        Request::test_get(path, stages)
    }

    fn origin() -> Origin {
        Origin {
            pid: 1,
            comm: Rc::from("srv"),
            peer: None,
            weight: 1.0,
        }
    }

    fn route<'a>(s: &'a Aggregates, path: &str) -> &'a RouteStats {
        &s.routes
            .iter()
            .find(|(k, _)| k.path == path)
            .expect("route")
            .1
    }

    fn none() -> Attribution {
        Attribution::default()
    }

    #[test]
    fn percentiles_per_route_and_stage() {
        let mut s = Aggregates::new(0);
        for i in 1..=100 {
            record(&mut s, req("/a", i), origin(), none());
        }
        record(&mut s, req("/b", 7), origin(), none());
        let a = route(&s, "/a");
        assert_eq!(a.count, 100);
        let p50 = a.stage(Stage::Handler).hist.quantile(0.5);
        assert!((49_000..=51_000).contains(&p50), "p50 {p50}");
        let p99 = a.latency.quantile(0.99);
        assert!((98_000..=101_000).contains(&p99), "p99 {p99}");
        assert_eq!(a.stage(Stage::Handler).total_us, 5050 * 1000);
        assert_eq!(s.requests(), 101);
    }

    #[test]
    fn zeros_are_counted_in_quantiles() {
        let mut h = Hist::new();
        for _ in 0..60 {
            h.record(0);
        }
        for v in 1..=40 {
            h.record(v * 100);
        }
        assert_eq!(h.quantile(0.5), 0);
        assert_eq!(h.quantile(0.6), 0);
        let p80 = h.quantile(0.8);
        assert!((1900..=2100).contains(&p80), "p80 {p80}");
        let p99 = h.quantile(0.99);
        assert!((3800..=4000).contains(&p99), "p99 {p99}");
        assert!((4000..=4040).contains(&h.max()), "max {}", h.max());
        assert_eq!(Hist::new().quantile(0.99), 0);
    }

    #[test]
    fn keeps_only_the_slowest() {
        let mut s = Aggregates::new(0);
        for i in 0..100 {
            record(&mut s, req("/a", (i * 37) % 100), origin(), none());
        }
        let slow = s.slowest();
        assert_eq!(slow.len(), SLOWEST_KEPT);
        assert_eq!(slow[0].request.stages.get(Stage::Handler), 99 * 1_000_000);
        assert_eq!(
            slow[SLOWEST_KEPT - 1].request.stages.get(Stage::Handler),
            80 * 1_000_000
        );
    }

    #[test]
    fn route_table_is_capped() {
        let mut s = Aggregates::new(0);
        for i in 0..MAX_ROUTES + 50 {
            record(&mut s, req(&format!("/item/{i}"), 1), origin(), none());
        }
        assert_eq!(s.routes().len(), MAX_ROUTES + 1);
        assert_eq!(route(&s, OTHER_PATH).count, 50);
    }

    #[test]
    fn handler_opens_into_the_stacks_that_explain_it() {
        let mut s = Aggregates::new(10_000);
        let off = OffCpu {
            start: 0,
            end: 0,
            tgid: 1,
            user_stack: 4,
            kernel_stack: 5,
            syscall: 230,
            target: Target::None,
            waker_tgid: 0,
        };
        let sample = Sample {
            ts: 0,
            tgid: 1,
            user_stack: 6,
            kernel_stack: -1,
        };
        let attribution = Attribution {
            off: vec![(off, 60_000_000)],
            samples: vec![sample, sample],
            waits: Vec::new(),
            go_waits: Vec::new(),
        };
        record(&mut s, req("/a", 100), origin(), attribution);
        let key = |leaf| ChainKey {
            comm: Rc::from("srv"),
            route: 0,
            stage: Stage::Handler,
            leaf,
        };
        let off_key = StackKey {
            tgid: 1,
            user_stack: 4,
            kernel_stack: 5,
            _pad: 0,
        };
        let on_key = StackKey {
            tgid: 1,
            user_stack: 6,
            kernel_stack: -1,
            _pad: 0,
        };
        assert_eq!(s.folded()[&key(Leaf::OffCpu(off_key))], 60_000);
        assert_eq!(s.folded()[&key(Leaf::OnCpu(on_key))], 20_000);
        assert_eq!(
            s.folded()[&key(Leaf::Stage)],
            20_000,
            "the unexplained rest"
        );
        assert!((route(&s, "/a").explained_pct() - 80.0).abs() < 0.01);
        let slow = s.slowest();
        assert_eq!(
            slow[0].causes,
            vec![(
                Cause {
                    tgid: 1,
                    syscall: 230,
                    target: Target::None,
                    user_stack: 4,
                    reason: 0,
                },
                60_000
            )]
        );
        assert_eq!(route(&s, "/a").top_causes(1), slow[0].causes);
    }

    #[test]
    fn outbound_waits_explain_what_thread_blocks_do_not() {
        let mut s = Aggregates::new(0);
        let down: Target = Target::Outbound("127.0.0.1:9001".parse().expect("addr"));
        let dns: Target = Target::Dns("127.0.0.77:53".parse().expect("addr"));
        let off = OffCpu {
            start: 0,
            end: 0,
            tgid: 1,
            user_stack: 4,
            kernel_stack: 5,
            syscall: 45,
            target: down,
            waker_tgid: 0,
        };
        // The serving thread blocked on the downstream (counted once), and a
        // DNS wait came from elsewhere (another thread, a goroutine).
        let attribution = Attribution {
            off: vec![(off, 50_000_000)],
            samples: Vec::new(),
            go_waits: Vec::new(),
            waits: vec![
                (down, Wait::Response, 50_000_000),
                (dns, Wait::Response, 30_000_000),
            ],
        };
        record(&mut s, req("/api", 100), origin(), attribution);
        let causes = &s.slowest()[0].causes;
        assert_eq!(causes.len(), 2, "{causes:?}");
        assert_eq!(
            causes[0],
            (
                Cause {
                    tgid: 1,
                    syscall: 45,
                    target: down,
                    user_stack: 4,
                    reason: 0,
                },
                50_000
            )
        );
        assert_eq!(
            causes[1],
            (
                Cause {
                    tgid: 1,
                    syscall: Cause::WAIT_RESPONSE,
                    target: dns,
                    user_stack: -1,
                    reason: 0,
                },
                30_000
            )
        );
        assert!((route(&s, "/api").explained_pct() - 80.0).abs() < 0.01);
        let key = ChainKey {
            comm: Rc::from("srv"),
            route: 0,
            stage: Stage::Handler,
            leaf: Leaf::Waiting(dns, Wait::Response),
        };
        assert_eq!(s.folded()[&key], 30_000);
    }

    /// An event loop's wait is shown (flame graph, causes) and explains
    /// nothing: the loop waited on a timer or another task.
    #[test]
    fn an_event_loops_wait_explains_nothing() {
        let mut s = Aggregates::new(0);
        let off = OffCpu {
            start: 0,
            end: 0,
            tgid: 1,
            user_stack: 4,
            kernel_stack: 5,
            syscall: tracer_common::syscall::EPOLL_WAIT,
            target: Target::None,
            waker_tgid: 0,
        };
        let attribution = Attribution {
            off: vec![(off, 50_000_000)],
            ..Attribution::default()
        };
        record(&mut s, req("/timer", 60), origin(), attribution);
        let causes = &s.slowest()[0].causes;
        assert!(causes[0].0.is_loop_wait(), "{causes:?}");
        assert_eq!(causes[0].1, 50_000);
        assert!(route(&s, "/timer").explained_pct() < 0.01);
    }
}
