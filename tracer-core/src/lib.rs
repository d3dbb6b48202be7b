//! The tracer's logic, from decoded kernel records to the report, with no
//! eBPF, no syscalls and no file system: it takes values and returns values,
//! so it builds and tests anywhere.
//!
//! The modules follow the data:
//! [`event`] (decoded records) → [`track`] (one [`chain`] per connection,
//! [`attribution`] of threads' time and outbound waits to requests) →
//! [`aggregate`] (routes, stages, slowest requests, chain flame graph) →
//! [`analysis`] (causes named, hot spots, diagnosis) → [`report`]
//! (report.json, the summary text, folded stacks).

pub mod aggregate;
pub mod analysis;
pub mod attribution;
pub mod budget;
pub mod chain;
pub mod check;
pub mod counters;
pub mod event;
pub mod process;
pub mod report;
pub mod stack;
pub mod track;
pub mod units;
