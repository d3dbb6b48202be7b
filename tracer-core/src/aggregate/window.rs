//! A window: the aggregates of the requests finished since it opened, and
//! what the cumulative counters and stack tables held then, so that the
//! window's share of them can be told apart. A whole run is one window; a
//! sink can open more (the last N seconds) while tracing goes on.

use rustc_hash::FxHashMap;
use tracer_common::StackKey;

use super::Aggregates;
use crate::{counters::Counters, track::Finished};

/// Cumulative figures when a window opened.
#[derive(Clone, Debug, Default)]
pub struct Baseline {
    pub counters: Counters,
    pub connections: u64,
    pub oncpu: Vec<(StackKey, u64)>,
    pub offcpu: Vec<(StackKey, u64)>,
}

pub struct Window {
    /// When it opened (monotonic ns).
    pub opened_ns: u64,
    pub aggregates: Aggregates,
    baseline: Baseline,
}

impl Window {
    /// `sample_us`: microseconds one on-CPU sample stands for.
    pub fn open(opened_ns: u64, sample_us: u64, baseline: Baseline) -> Self {
        Window {
            opened_ns,
            aggregates: Aggregates::new(sample_us),
            baseline,
        }
    }

    pub fn record(&mut self, finished: &Finished) {
        self.aggregates.record(finished);
    }

    /// Kernel counters since the window opened.
    pub fn counters(&self, now: &Counters) -> Counters {
        now.since(&self.baseline.counters)
    }

    /// Connections seen since the window opened.
    pub fn connections(&self, now: u64) -> u64 {
        now.saturating_sub(self.baseline.connections)
    }

    /// On-CPU stack counts since the window opened.
    pub fn oncpu(&self, now: &[(StackKey, u64)]) -> Vec<(StackKey, u64)> {
        since(&self.baseline.oncpu, now)
    }

    /// Off-CPU time per stack since the window opened.
    pub fn offcpu(&self, now: &[(StackKey, u64)]) -> Vec<(StackKey, u64)> {
        since(&self.baseline.offcpu, now)
    }
}

/// The growth of cumulative per-stack totals; stacks that did not grow are left out.
fn since(base: &[(StackKey, u64)], now: &[(StackKey, u64)]) -> Vec<(StackKey, u64)> {
    let base: FxHashMap<StackKey, u64> = base.iter().copied().collect();
    now.iter()
        .map(|&(k, n)| (k, n.saturating_sub(base.get(&k).copied().unwrap_or(0))))
        .filter(|&(_, n)| n > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        attribution::Attribution,
        chain::{Request, StageTimes},
        track::Origin,
    };

    fn finished(path: &str) -> Finished {
        Finished {
            request: Request::test_get(path, StageTimes::default()),
            origin: Origin {
                pid: 1,
                comm: "srv".into(),
                peer: None,
                weight: 1.0,
            },
            attribution: Attribution::default(),
        }
    }

    fn key(user_stack: i32) -> StackKey {
        StackKey {
            tgid: 1,
            user_stack,
            kernel_stack: -1,
            _pad: 0,
        }
    }

    #[test]
    fn a_window_sees_only_what_came_after_it_opened() {
        let mut run = Window::open(0, 0, Baseline::default());
        run.record(&finished("/early"));
        let baseline = Baseline {
            counters: Counters {
                events: 100,
                ringbuf_full: 2,
                ..Counters::default()
            },
            connections: 5,
            oncpu: vec![(key(1), 10)],
            offcpu: Vec::new(),
        };
        let mut window = Window::open(1_000, 0, baseline);
        for w in [&mut run, &mut window] {
            w.record(&finished("/late"));
        }
        assert_eq!(run.aggregates.requests(), 2);
        assert_eq!(window.aggregates.requests(), 1);
        assert_eq!(window.aggregates.routes()[0].0.path, "/late");
        let now = Counters {
            events: 150,
            ringbuf_full: 3,
            ..Counters::default()
        };
        let c = window.counters(&now);
        assert_eq!((c.events, c.ringbuf_full, c.dropped()), (50, 1, 1));
        assert_eq!(window.connections(8), 3);
        assert_eq!(
            window.oncpu(&[(key(1), 12), (key(2), 4)]),
            vec![(key(1), 2), (key(2), 4)]
        );
        assert_eq!(window.oncpu(&[(key(1), 10)]), vec![]);
    }
}
