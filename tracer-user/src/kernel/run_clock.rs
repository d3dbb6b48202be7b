//! The kernel's run-time clocks for BPF programs (`BPF_ENABLE_STATS`),
//! switched on for a share of the runs rather than held on.
//!
//! While on, every BPF program of the host, ours or not, pays two
//! `sched_clock()` reads a run: under a hypervisor those are paravirtual
//! clock reads, about a seventh of what our programs cost in all. The
//! programs count their own runs at all times (an inlined per-CPU
//! increment), so a tenth of the runs timed gives each program's mean time
//! a run, and the count gives how many runs it stands for. The share is of
//! runs, not of time, so the timed runs follow the load.

use std::{
    os::fd::OwnedFd,
    time::{Duration, Instant},
};

use tracer_core::report::ProgramClock;

/// The share of all runs to time.
const TIMED_SHARE: f64 = 0.1;
/// How often the share is looked at (each look reads a file per program).
const LOOK_EVERY: Duration = Duration::from_secs(1);

pub struct RunClock {
    /// The kernel counts while this is held.
    on: Option<OwnedFd>,
    /// Whether the kernel allows it at all.
    available: bool,
    last_look: Instant,
}

impl RunClock {
    /// Starts with the clocks on. `None` when this kernel will not count
    /// run time.
    pub fn start() -> Option<RunClock> {
        let on = aya::sys::enable_stats(aya::sys::Stats::RunTime).ok()?;
        Some(RunClock {
            on: Some(on),
            available: true,
            last_look: Instant::now(),
        })
    }

    /// Whether it is time to look at the share of runs timed.
    pub fn due(&self) -> bool {
        self.available && self.last_look.elapsed() >= LOOK_EVERY
    }

    /// Switches the clocks on while less than a tenth of all runs so far
    /// were timed, off once as many were. A program's share of the timed
    /// runs is then its share of the runs: one that ran only while the
    /// clocks were off (a rare one) goes without a mean.
    pub fn pace(&mut self, programs: &[ProgramClock]) {
        self.last_look = Instant::now();
        if !self.available {
            return;
        }
        let runs: u64 = programs.iter().map(|p| p.runs).sum();
        let timed: u64 = programs.iter().map(|p| p.timed_runs).sum();
        let wanted = (timed as f64) < runs as f64 * TIMED_SHARE;
        match (&self.on, wanted) {
            (Some(_), false) => self.on = None,
            (None, true) => match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
                Ok(fd) => self.on = Some(fd),
                // Not allowed any more: the means so far stand.
                Err(_) => self.available = false,
            },
            _ => {}
        }
    }
}
