//! What tracing costs, read from the clocks the kernel and `/proc` keep, and
//! the overhead budget applied: the share of new connections traced.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use anyhow::Result;
use tracer_core::{
    budget::{Budget, PeriodCost},
    report::{BudgetReport, CpuCost, ProgramClock},
    track::Tracker,
};

use super::attached::Session;
use crate::{
    kernel::{probes::Probes, programs::PER_CONNECTION},
    system::procfs,
};

/// How often the budget looks at the cost.
const STEER_EVERY: Duration = Duration::from_secs(1);

/// Cumulative CPU clocks: the kernel programs', the tracer's, the traced
/// processes'.
pub struct CpuClocks {
    kernel_ns: u64,
    /// Of which, the programs that follow connections.
    per_connection_ns: u64,
    own: Duration,
    traced: HashMap<u32, Duration>,
}

impl CpuClocks {
    pub fn read(session: &Session) -> CpuClocks {
        let costs = session.probes.program_costs();
        CpuClocks {
            kernel_ns: costs.iter().map(ProgramClock::ns).sum(),
            per_connection_ns: costs
                .iter()
                .filter(|c| PER_CONNECTION.contains(&c.name.as_str()))
                .map(ProgramClock::ns)
                .sum(),
            own: procfs::own_cpu_time(),
            traced: session
                .targets
                .processes()
                .iter()
                .filter(|p| !p.exited)
                .filter_map(|p| Some((p.pid, procfs::cpu_time(p.pid)?)))
                .collect(),
        }
    }

    fn traced_since(&self, before: &CpuClocks) -> Duration {
        self.traced
            .iter()
            .map(|(pid, t)| t.saturating_sub(before.traced.get(pid).copied().unwrap_or_default()))
            .sum()
    }

    /// What was used since `before`; a process new since then counts whole,
    /// one gone since then is missing (its last clock was not read).
    pub fn since(&self, before: &CpuClocks) -> CpuCost {
        CpuCost {
            kernel_ns: self.kernel_ns.saturating_sub(before.kernel_ns),
            userspace_ns: self.own.saturating_sub(before.own).as_nanos() as u64,
            traced_ns: self.traced_since(before).as_nanos() as u64,
        }
    }

    /// The cost leaving connections out can reduce, since `before`.
    fn load_since(&self, before: &CpuClocks) -> PeriodCost {
        PeriodCost {
            kernel_ns: self
                .per_connection_ns
                .saturating_sub(before.per_connection_ns),
            userspace_ns: self.own.saturating_sub(before.own).as_nanos() as u64,
            traced_ns: self.traced_since(before).as_nanos() as u64,
            requests: 0,
        }
    }
}

/// The budget, with the clocks and counts it last looked at.
pub struct Steering {
    budget: Budget,
    started: Instant,
    last: Option<Look>,
}

struct Look {
    at: Instant,
    clocks: CpuClocks,
    /// Requests traced (finished) and left out (started), so far.
    traced: u64,
    left_out: u64,
}

impl Steering {
    pub fn new(max_pct: f64) -> Steering {
        Steering {
            budget: Budget::new(max_pct),
            started: Instant::now(),
            last: None,
        }
    }

    /// Whether a control period has passed: the clocks are read only then
    /// (each read opens a file per program and per traced process), and
    /// never without a budget.
    pub fn due(&self) -> bool {
        self.budget.max_pct() > 0.0
            && self
                .last
                .as_ref()
                .is_none_or(|l| l.at.elapsed() >= STEER_EVERY)
    }

    /// Looks at the cost of the last period, and changes the share of
    /// connections traced if the budget says so. What a traced request
    /// stands for follows the requests left out beside it meanwhile.
    pub fn steer(
        &mut self,
        clocks: CpuClocks,
        probes: &mut Probes,
        tracker: &mut Tracker,
    ) -> Result<()> {
        let now = Instant::now();
        let look = Look {
            at: now,
            clocks,
            traced: tracker.finished_count(),
            left_out: probes.counters()?.left_out_requests,
        };
        let Some(before) = &self.last else {
            self.last = Some(look);
            return Ok(());
        };
        let period = now.duration_since(before.at);
        let (traced, left_out) = (
            look.traced.saturating_sub(before.traced),
            look.left_out.saturating_sub(before.left_out),
        );
        if traced > 0 {
            tracker.set_weight((traced + left_out) as f64 / traced as f64);
        }
        let cost = PeriodCost {
            requests: traced + left_out,
            ..look.clocks.load_since(&before.clocks)
        };
        let at_s = now.duration_since(self.started).as_secs_f64();
        if let Some(kept) = self.budget.update(at_s, period.as_secs_f64(), cost) {
            probes.leave_out(1000 - kept)?;
        }
        self.last = Some(look);
        Ok(())
    }

    /// Where the budget stands, for a report.
    pub fn report(&self) -> BudgetReport {
        BudgetReport {
            max_overhead_pct: self.budget.max_pct(),
            spans: self.budget.spans().to_vec(),
            out_of_reach_pct: self.budget.floor_pct(),
        }
    }
}
