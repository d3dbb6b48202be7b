//! The one-line diagnosis: which route suffers most, which link of its chain
//! dominates, and what that link waited on, in plain words with figures.
//!
//! `GET /api p99 1.21s: 93% handler, blocked on response from outbound 127.0.0.1:9001 (1.10s)`

use serde::Serialize;

use crate::{chain::Stage, units::duration};

/// What is known of one route, named and summed, for diagnosis.
#[derive(Debug, Clone, Default)]
pub struct RouteFacts {
    pub label: String,
    pub count: u64,
    pub p99_us: u64,
    /// Total µs per latency stage, over the route's requests.
    pub stage_totals: Vec<(Stage, u64)>,
    /// What handlers waited on, named, largest first, in µs per request.
    pub causes: Vec<Waited>,
    /// The handler's on-CPU hot spot: (function, share of the handler's
    /// on-CPU time in %, share of handler time in %), and whether it is the
    /// Go allocator or collector.
    pub hot: Option<HotSpot>,
}

/// One thing handlers waited on, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waited {
    pub what: String,
    pub us: u64,
    /// A goroutine parked by the Go runtime, rather than a blocked thread
    /// or an outbound call.
    pub goroutine: bool,
}

impl Waited {
    /// `blocked on recvfrom (...)`, `goroutine waiting on sync.Mutex.Lock in ...`.
    fn phrase(&self) -> String {
        let verb = if self.goroutine {
            "goroutine waiting on "
        } else if self.what == super::causes::EVENT_LOOP {
            ""
        } else {
            "blocked on "
        };
        format!("{verb}{} ({})", self.what, duration(self.us))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HotSpot {
    pub function: String,
    pub share_of_cpu_pct: f64,
    pub share_of_handler_pct: f64,
    pub allocator_and_gc: bool,
}

/// What is known of one listener.
#[derive(Debug, Clone, Default)]
pub struct ListenerFacts {
    pub port: u16,
    pub backlog_limit: Option<u32>,
    pub queue_peak: Option<u32>,
    pub overflows: Option<u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Diagnosis {
    pub route: String,
    pub p99_us: u64,
    /// The dominant stage and its share of the route's latency.
    pub stage: &'static str,
    pub share_pct: f64,
    /// What that stage waited on, when known.
    pub cause: Option<String>,
    pub text: String,
}

/// Diagnoses the route with the worst p99.
pub fn diagnose(
    routes: &[RouteFacts],
    listeners: &[ListenerFacts],
    open_peak: usize,
) -> Option<Diagnosis> {
    let route = routes
        .iter()
        .filter(|r| r.count > 0)
        .max_by_key(|r| (r.p99_us, r.count))?;
    let total: u64 = route.stage_totals.iter().map(|(_, us)| us).sum();
    let &(stage, stage_us) = route.stage_totals.iter().max_by_key(|(_, us)| *us)?;
    let share_pct = if total == 0 {
        0.0
    } else {
        stage_us as f64 * 100.0 / total as f64
    };
    let cause = match stage {
        Stage::Handler => handler_cause(route),
        Stage::AcceptQueue => Some(accept_queue_cause(listeners)),
        Stage::ReadWait => Some(
            "requests waited to be read: every worker busy, or the event loop blocked".to_string(),
        ),
        Stage::RequestRead => Some(format!(
            "clients sent their requests slowly (a slow or slowloris client: no read timeout?), {open_peak} connections open at once"
        )),
        Stage::ResponseWrite => Some(
            "writing the response waited on the client: a slow reader kept the send buffer full"
                .to_string(),
        ),
        Stage::Idle => None,
    };
    let mut text = format!(
        "{} p99 {}: {:.0}% {}",
        route.label,
        duration(route.p99_us),
        share_pct,
        stage.name()
    );
    if let Some(c) = &cause {
        text.push_str(if stage == Stage::Handler { ", " } else { ": " });
        text.push_str(c);
    }
    Some(Diagnosis {
        route: route.label.clone(),
        p99_us: route.p99_us,
        stage: stage.name(),
        share_pct,
        cause,
        text,
    })
}

/// Below this share of handler time, a cause or a hot spot does not explain it.
pub(crate) const EXPLAINS_PCT: f64 = 20.0;

fn handler_cause(route: &RouteFacts) -> Option<String> {
    let handler_per_request = route
        .stage_totals
        .iter()
        .find(|(s, _)| *s == Stage::Handler)
        .map_or(0, |(_, us)| us / route.count.max(1));
    let explains = |w: &&Waited| w.us as f64 * 100.0 >= EXPLAINS_PCT * handler_per_request as f64;
    let waited = route.causes.first().filter(explains);
    let hot = route
        .hot
        .as_ref()
        .filter(|h| h.share_of_handler_pct >= EXPLAINS_PCT);
    match (waited, hot) {
        (Some(w), Some(h))
            if h.share_of_handler_pct * handler_per_request as f64 / 100.0 > w.us as f64 =>
        {
            Some(on_cpu(h))
        }
        (Some(w), _) => {
            let mut s = w.phrase();
            if let Some(next) = route.causes.get(1).filter(explains) {
                s.push_str(" and ");
                if next.goroutine == w.goroutine {
                    s.push_str(&format!("{} ({})", next.what, duration(next.us)));
                } else {
                    s.push_str(&next.phrase());
                }
            }
            Some(s)
        }
        (None, Some(h)) => Some(on_cpu(h)),
        (None, None) => None,
    }
}

fn on_cpu(h: &HotSpot) -> String {
    let what = if h.allocator_and_gc {
        format!("{} (Go allocator and garbage collector)", h.function)
    } else {
        h.function.clone()
    };
    format!(
        "on CPU in {what}, {:.0}% of handler time",
        h.share_of_handler_pct
    )
}

fn accept_queue_cause(listeners: &[ListenerFacts]) -> String {
    let worst = listeners
        .iter()
        .max_by_key(|l| (l.overflows.unwrap_or(0), l.queue_peak.unwrap_or(0)));
    let Some(l) = worst else {
        return "connections waited to be accepted: the accept loop falls behind".to_string();
    };
    let mut s = format!("connections waited in the accept queue of :{}", l.port);
    match (l.backlog_limit, l.queue_peak) {
        (Some(limit), Some(peak)) if peak >= limit => {
            s.push_str(&format!(", full (backlog {limit}, peak {peak})"));
        }
        (Some(limit), Some(peak)) => s.push_str(&format!(" (backlog {limit}, peak {peak})")),
        _ => {}
    }
    if let Some(o) = l.overflows.filter(|&o| o > 0) {
        s.push_str(&format!(
            ", {o} handshakes dropped (clients retry after 1 s, 3 s...)"
        ));
    }
    s.push_str(": the accept loop falls behind");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(label: &str, p99_ms: u64, stages: &[(Stage, u64)]) -> RouteFacts {
        RouteFacts {
            label: label.to_string(),
            count: 10,
            p99_us: p99_ms * 1000,
            stage_totals: stages.iter().map(|&(s, ms)| (s, ms * 1000 * 10)).collect(),
            ..RouteFacts::default()
        }
    }

    #[test]
    fn names_the_downstream_a_slow_handler_waits_on() {
        let mut slow = route(
            "GET /api",
            1210,
            &[
                (Stage::ReadWait, 10),
                (Stage::Handler, 1120),
                (Stage::ResponseWrite, 1),
            ],
        );
        slow.causes = vec![
            Waited {
                what: "response from outbound 127.0.0.1:9001".into(),
                us: 1_100_000,
                goroutine: false,
            },
            Waited {
                what: "futex".into(),
                us: 1000,
                goroutine: false,
            },
        ];
        let fast = route("GET /health", 5, &[(Stage::Handler, 1)]);
        let d = diagnose(&[fast, slow], &[], 4).expect("diagnosis");
        assert_eq!(d.route, "GET /api");
        assert_eq!(d.stage, "handler");
        assert!(d.share_pct > 98.0);
        assert_eq!(
            d.text,
            "GET /api p99 1.21s: 99% handler, blocked on response from outbound 127.0.0.1:9001 (1.10s)"
        );
    }

    #[test]
    fn two_waits_of_one_handler_are_both_named() {
        let mut r = route("GET /api", 300, &[(Stage::Handler, 290)]);
        r.causes = vec![
            Waited {
                what: "response from outbound 127.0.0.1:9443".into(),
                us: 160_000,
                goroutine: false,
            },
            Waited {
                what: "response from DNS 127.0.0.77:53".into(),
                us: 101_000,
                goroutine: false,
            },
        ];
        let d = diagnose(&[r], &[], 1).expect("diagnosis");
        assert_eq!(
            d.cause.as_deref(),
            Some(
                "blocked on response from outbound 127.0.0.1:9443 (160.0ms) and response from DNS 127.0.0.77:53 (101.0ms)"
            )
        );
    }

    #[test]
    fn a_full_accept_queue() {
        let r = route(
            "GET /",
            134,
            &[(Stage::AcceptQueue, 128), (Stage::Handler, 1)],
        );
        let l = ListenerFacts {
            port: 8080,
            backlog_limit: Some(4),
            queue_peak: Some(5),
            overflows: Some(297),
        };
        let d = diagnose(&[r], &[l], 1).expect("diagnosis");
        assert_eq!(d.stage, "accept_queue");
        assert_eq!(
            d.text,
            "GET / p99 134.0ms: 99% accept_queue: connections waited in the accept queue of :8080, full (backlog 4, peak 5), \
             297 handshakes dropped (clients retry after 1 s, 3 s...): the accept loop falls behind"
        );
    }

    #[test]
    fn cpu_bound_handler_names_its_hot_spot() {
        let mut r = route("GET /alloc", 45, &[(Stage::Handler, 40)]);
        r.causes = vec![Waited {
            what: "futex".into(),
            us: 2000,
            goroutine: false,
        }];
        r.hot = Some(HotSpot {
            function: "runtime.mallocgc".into(),
            share_of_cpu_pct: 70.0,
            share_of_handler_pct: 65.0,
            allocator_and_gc: true,
        });
        let d = diagnose(&[r], &[], 1).expect("diagnosis");
        assert_eq!(
            d.cause.as_deref(),
            Some(
                "on CPU in runtime.mallocgc (Go allocator and garbage collector), 65% of handler time"
            )
        );
    }

    #[test]
    fn slow_clients_and_slow_readers() {
        let r = route(
            "GET /",
            900,
            &[(Stage::RequestRead, 880), (Stage::Handler, 1)],
        );
        let d = diagnose(&[r], &[], 20).expect("diagnosis");
        assert_eq!(d.stage, "request_read");
        assert!(d.text.contains("20 connections open at once"), "{}", d.text);
        let r = route(
            "GET /big",
            2100,
            &[(Stage::ResponseWrite, 2000), (Stage::Handler, 5)],
        );
        let d = diagnose(&[r], &[], 2).expect("diagnosis");
        assert!(d.text.contains("slow reader"), "{}", d.text);
    }

    #[test]
    fn nothing_to_diagnose_without_requests() {
        assert_eq!(diagnose(&[], &[], 0), None);
    }

    #[test]
    fn goroutine_waits_are_named_as_such() {
        let mut r = route("GET /mutex", 168, &[(Stage::Handler, 160)]);
        r.causes = vec![Waited {
            what: "sync.Mutex.Lock in main.main.func1".into(),
            us: 120_000,
            goroutine: true,
        }];
        let d = diagnose(&[r], &[], 0).expect("diagnosis");
        assert!(
            d.text.ends_with(
                "100% handler, goroutine waiting on sync.Mutex.Lock in main.main.func1 (120.0ms)"
            ),
            "{}",
            d.text
        );
    }
}
