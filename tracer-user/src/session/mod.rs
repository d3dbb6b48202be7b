//! A tracing session: sources → tracker → aggregates → sinks.
//!
//! The kernel programs are the source: their records are drained from the
//! ring buffer and decoded ([`follow`]). The tracker rebuilds each
//! connection's chain and hands out finished requests, which every open
//! window aggregates ([`window`]); a window is cut into results for the
//! sinks without stopping anything. The processes traced, and the command
//! of `tracer exec`, are kept in [`targets`]. [`run`] wires it together for
//! `record` and `exec`: one window over the whole run, cut at the end into
//! the output files and the summary. The daemon drives the same loop with
//! windows of its own ([`Driver`]).

mod attached;
mod clock;
mod follow;
pub mod overhead;
mod settings;
mod targets;
mod window;

use std::time::SystemTime;

use anyhow::{Result, bail};
use tracer_core::report::summary;

use self::follow::StopReason;
pub use self::{
    attached::Session,
    follow::Driver,
    settings::{Settings, Target},
    window::OpenWindow,
};
use crate::{
    output::{Results, Sink, ci, files::Files},
    system::preflight,
};

/// `tracer record` and `tracer exec`: trace until the duration ends,
/// Ctrl-C, or every traced process exits; then write the outputs, print
/// the summary and judge the budgets. Returns whether a budget broke.
pub fn run(target: Target, settings: &Settings) -> Result<bool> {
    preflight::require_privileges()?;
    let pids = match &target {
        Target::Pids(p) => preflight::resolve_pids(p)?,
        Target::Command(_) => Vec::new(),
    };
    // The output folder first: a bad --out fails before anything is attached.
    let mut files = Files::prepare(settings.out.clone(), settings.overwrite, SystemTime::now())?;
    let traced = trace(target, &pids, settings);
    let results = match traced {
        Ok(results) => results,
        Err(e) => {
            files.discard_if_empty();
            return Err(e);
        }
    };
    let written = files.finish(&results);
    print!("{}", summary::render(&results.report));
    if let Err(e) = written {
        // The trace is not lost with the files: the report goes to stdout.
        println!(
            "\nreport.json:\n{}",
            serde_json::to_string_pretty(&results.report)?
        );
        return Err(e.context(format!(
            "the outputs could not all be written into {} (the summary and report.json are above)",
            files.dir().display()
        )));
    }
    let report = serde_json::to_value(&results.report)?;
    let written: Vec<String> = files.written().iter().map(ToString::to_string).collect();
    let junit = settings.junit.as_deref();
    let (verdicts, md) = ci::judge(&report, &settings.budgets, junit, &written)?;
    files.write_summary(&md)?;
    println!(
        "\noutputs in {}: {}",
        files.dir().display(),
        files.written().join(", ")
    );
    Ok(ci::broken(&verdicts))
}

/// Attaches, traces until the end, detaches, and cuts the run into results.
fn trace(target: Target, pids: &[u32], settings: &Settings) -> Result<Results> {
    let mut session = Session::attach(settings)?;
    session.start(target, pids, settings.children)?;
    eprintln!(
        "tracer: tracing {}{}; Ctrl-C to stop",
        session.targets.names().join(", "),
        settings
            .duration
            .map_or(String::new(), |d| format!(" for {:.1}s", d.as_secs_f64()))
    );

    let whole = OpenWindow::open(&session, settings)?;
    let mut windows = vec![whole];
    let stop = session.follow(&mut windows, settings.duration, &mut follow::Plain)?;
    let mut end = windows[0].end(&session)?;
    session.tracker.finish_all(clock::monotonic_ns());
    follow::fan_out(&mut session.tracker, &mut windows, &mut follow::Plain);
    let whole = windows.swap_remove(0);
    // Detach before the slower work of symbolizing and writing outputs.
    let Session {
        probes,
        totals,
        mut tracker,
        mut stacks,
        mut targets,
        ..
    } = session;
    probes.detach();
    end.command = targets.stop_command();
    if let StopReason::AllExited = stop {
        eprintln!("tracer: traced processes exited; writing what was seen");
    }
    Ok(whole.cut(end, &mut tracker, &totals, &mut stacks, targets.processes()))
}

/// Refuses to trace ourselves: the tracer's own reads would feed its events.
pub fn reject_self(pids: &[u32]) -> Result<()> {
    if pids.contains(&std::process::id()) {
        bail!("tracer cannot trace itself");
    }
    Ok(())
}
