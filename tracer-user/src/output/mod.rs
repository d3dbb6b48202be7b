//! Where results go. A session cuts a window (the whole run, at the end)
//! into [`Results`] and hands them to its sinks; today one sink writes the
//! files of [`files`], with SVGs from [`flame`] and pprof profiles from
//! [`pprof`].

pub mod ci;
pub mod diff;
pub mod files;
pub mod flame;
pub mod pprof;

use std::time::SystemTime;

use anyhow::Result;
use tracer_core::report::{Report, folded::Folded};

/// What a window of a session produced, ready to be shown.
pub struct Results {
    /// When the window opened.
    pub started: SystemTime,
    pub report: Report,
    /// The chain flame graph, in microseconds.
    pub chains: Folded,
    /// On-CPU samples by stack; `None` when sampling was off.
    pub oncpu: Option<Folded>,
    /// Off-CPU microseconds by stack; `None` when off-CPU tracing was off.
    pub offcpu: Option<Folded>,
}

/// A consumer of a session's results.
pub trait Sink {
    /// The session ended: `results` cover the whole run.
    fn finish(&mut self, results: &Results) -> Result<()>;
}
