//! The overhead budget: the share of new connections traced, steered so
//! that what tracing costs stays within a share of the traced processes'
//! CPU.
//!
//! Only the cost that leaving connections out can reduce counts: the
//! socket programs' run time and the tracer's own CPU beyond its fixed
//! costs (drains, timers: about 1.3% of a core when idle). A quiet server
//! is never sampled: under [`QUIET_REQUESTS_PER_S`], or under
//! [`QUIET_NS_PER_S`] of such cost, nothing is left out, whatever its
//! share of a small CPU (naming new stacks, the goroutine sampler's looks
//! at a few slow requests).

use serde::Serialize;

/// The tracer's own CPU that does not follow load, per second of time.
const FIXED_USERSPACE_NS_PER_S: f64 = 20e6;
/// Below this much load-following cost per second (1% of a core), the
/// tracer's cost is not worth leaving connections out for.
const QUIET_NS_PER_S: f64 = 10e6;
/// Below this many requests a second (traced or left out), a server is quiet.
const QUIET_REQUESTS_PER_S: f64 = 1000.0;
/// Never fewer than one connection in a hundred.
const MIN_KEPT: u16 = 10;

/// The costs of one control period, in nanoseconds of CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeriodCost {
    /// The socket programs' run time.
    pub kernel_ns: u64,
    /// The tracer process.
    pub userspace_ns: u64,
    /// The traced processes.
    pub traced_ns: u64,
    /// Requests served, traced or left out.
    pub requests: u64,
}

/// A stretch of time during which only a share of new connections was traced.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Span {
    /// Seconds from the start of tracing.
    pub from_s: f64,
    pub to_s: f64,
    /// Share of new connections traced.
    pub traced_share: f64,
}

pub struct Budget {
    /// Percent of the traced processes' CPU; 0 traces everything.
    max_pct: f64,
    /// Per mille of new connections traced now.
    kept: u16,
    spans: Vec<Span>,
    /// The cost measured while tracing the fewest connections and still
    /// over budget: the part of the cost leaving connections out cannot cut.
    floor_pct: Option<f64>,
}

impl Budget {
    pub fn new(max_pct: f64) -> Budget {
        Budget {
            max_pct,
            kept: 1000,
            spans: Vec::new(),
            floor_pct: None,
        }
    }

    pub fn max_pct(&self) -> f64 {
        self.max_pct
    }

    /// Per mille of new connections traced now.
    pub fn kept_permille(&self) -> u16 {
        self.kept
    }

    /// When the budget could not be kept even at the smallest share: the
    /// cost then, in percent of the traced processes' CPU.
    pub fn floor_pct(&self) -> Option<f64> {
        self.floor_pct
    }

    /// The stretches with fewer than all connections traced.
    pub fn spans(&self) -> &[Span] {
        &self.spans
    }

    /// The cost share that counts against the budget, in percent of the
    /// traced processes' CPU; `None` when there is nothing to steer by.
    pub fn load_cost_pct(cost: PeriodCost, period_s: f64) -> Option<f64> {
        let userspace = (cost.userspace_ns as f64 - FIXED_USERSPACE_NS_PER_S * period_s).max(0.0);
        let load = cost.kernel_ns as f64 + userspace;
        if load < QUIET_NS_PER_S * period_s
            || (cost.requests as f64) < QUIET_REQUESTS_PER_S * period_s
        {
            return Some(0.0);
        }
        (cost.traced_ns > 0).then(|| load * 100.0 / cost.traced_ns as f64)
    }

    /// One control period ending `at_s` seconds into tracing, `period_s`
    /// long. Returns the new share (per mille) when it changes.
    pub fn update(&mut self, at_s: f64, period_s: f64, cost: PeriodCost) -> Option<u16> {
        self.note_span(at_s - period_s, at_s);
        if self.max_pct <= 0.0 {
            return None;
        }
        let pct = Budget::load_cost_pct(cost, period_s)?;
        if self.kept == MIN_KEPT && pct > self.max_pct {
            self.floor_pct = Some(self.floor_pct.map_or(pct, |f| f.max(pct)));
        }
        let kept = f64::from(self.kept);
        let next = if pct > self.max_pct {
            // The cost follows the share traced: aim a little under.
            kept * self.max_pct / pct * 0.9
        } else if pct < self.max_pct * 0.6 && self.kept < 1000 {
            kept * (self.max_pct * 0.9 / pct.max(1e-9)).min(2.0)
        } else {
            kept
        };
        let next = (next.round() as u16).clamp(MIN_KEPT, 1000);
        (next != self.kept).then(|| {
            self.kept = next;
            next
        })
    }

    /// Extends the spans with `from..to` at the current share.
    fn note_span(&mut self, from_s: f64, to_s: f64) {
        if self.kept >= 1000 {
            return;
        }
        let share = f64::from(self.kept) / 1000.0;
        match self.spans.last_mut() {
            Some(last)
                if (last.traced_share - share).abs() < 1e-9
                    && (last.to_s - from_s).abs() < 1e-6 =>
            {
                last.to_s = to_s;
            }
            _ => self.spans.push(Span {
                from_s,
                to_s,
                traced_share: share,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(kernel_ms: u64, userspace_ms: u64, traced_ms: u64) -> PeriodCost {
        PeriodCost {
            kernel_ns: kernel_ms * 1_000_000,
            userspace_ns: userspace_ms * 1_000_000,
            traced_ns: traced_ms * 1_000_000,
            requests: 20_000,
        }
    }

    #[test]
    fn over_budget_leaves_connections_out_and_comes_back_when_load_falls() {
        let mut b = Budget::new(3.0);
        // 120 ms of socket programs and 120 + 20 ms in the tracer over a
        // second in which the server used 1.6 s: 15%, five times the budget.
        let kept = b.update(1.0, 1.0, cost(120, 140, 1600)).expect("lowered");
        assert_eq!(kept, 180);
        // At 18% traced, the cost follows: 2.7% now, within the budget.
        assert_eq!(b.update(2.0, 1.0, cost(22, 42, 1600)), None);
        // The load falls to a trickle: back to everything, doubling.
        assert_eq!(b.update(3.0, 1.0, cost(1, 21, 100)), Some(360));
        assert_eq!(b.update(4.0, 1.0, cost(1, 21, 100)), Some(720));
        assert_eq!(b.update(5.0, 1.0, cost(1, 21, 100)), Some(1000));
        assert_eq!(b.update(6.0, 1.0, cost(1, 21, 100)), None);
        let spans = b.spans();
        assert_eq!(spans.len(), 3, "{spans:?}");
        assert_eq!(
            (spans[0].from_s, spans[0].to_s, spans[0].traced_share),
            (1.0, 3.0, 0.18)
        );
    }

    #[test]
    fn a_quiet_server_is_never_sampled() {
        let mut b = Budget::new(3.0);
        // 300 requests a second at 8 µs of tracing each, on a server using
        // 20 ms a second: 12% of its CPU, but 2.4 ms of cost.
        for t in 1..10 {
            assert_eq!(b.update(f64::from(t), 1.0, cost(1, 21, 20)), None);
        }
        // 400 requests a second whose tracing costs 60 ms a second (new
        // stacks named, slow requests looked at): still quiet.
        let slow = PeriodCost {
            requests: 400,
            ..cost(20, 60, 80)
        };
        assert_eq!(b.update(10.0, 1.0, slow), None);
        assert!(b.spans().is_empty());
        assert_eq!(b.floor_pct(), None);
    }

    /// A cost that does not follow the share (context switches, sampling)
    /// cannot be cut by leaving connections out: said, not hidden.
    #[test]
    fn a_budget_out_of_reach_is_said() {
        let mut b = Budget::new(3.0);
        for t in 1..20 {
            let _ = b.update(f64::from(t), 1.0, cost(80, 100, 1600));
        }
        assert_eq!(b.kept_permille(), MIN_KEPT);
        assert!(
            b.floor_pct().is_some_and(|f| f > 9.0),
            "{:?}",
            b.floor_pct()
        );
    }

    #[test]
    fn no_budget_traces_everything() {
        let mut b = Budget::new(0.0);
        assert_eq!(b.update(1.0, 1.0, cost(500, 500, 1000)), None);
        assert_eq!(b.kept_permille(), 1000);
    }
}
