//! What a session is asked to do: what to trace, for how long, with which
//! hooks, and where the outputs go.

use std::{path::PathBuf, time::Duration};

use tracer_core::check::Budget;

// The command line's switches, one bool each.
#[allow(clippy::struct_excessive_bools)]
#[derive(Clone)]
pub struct Settings {
    pub duration: Option<Duration>,
    pub out: Option<PathBuf>,
    /// Write into `out` even if it holds a report already.
    pub overwrite: bool,
    /// Also trace the descendants of the given processes (nginx workers...).
    pub children: bool,
    /// On-CPU sampling frequency in Hz, 0 for none.
    pub freq: u64,
    pub off_cpu: bool,
    /// Sample the goroutines serving Go requests.
    pub goroutines: bool,
    pub min_block: Duration,
    /// The overhead budget, percent of the traced processes' CPU (0: none).
    pub max_overhead_pct: f64,
    /// Latency budgets judged at the end (`--budget`), and where their
    /// JUnit report goes.
    pub budgets: Vec<Budget>,
    pub junit: Option<PathBuf>,
}

impl Settings {
    /// Microseconds one on-CPU sample stands for (0 if sampling is off).
    pub fn sample_us(&self) -> u64 {
        1_000_000u64.checked_div(self.freq).unwrap_or(0)
    }
}

/// What to trace: running processes, or a command to start.
pub enum Target {
    Pids(Vec<u32>),
    Command(Vec<String>),
}
