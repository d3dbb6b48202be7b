//! The summary printed at the end of a trace: routes with count and p50/p99
//! per stage, then the slowest requests with their chains.

use std::fmt::Write as _;

use super::Report;
use crate::{analysis::causes::EVENT_LOOP, chain::Stage, units::duration};

const SLOWEST_SHOWN: usize = 5;

/// The summary: the run, its warnings and diagnosis, then the routes, the
/// listeners and the slowest requests.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    header(&mut out, report);
    if report.routes.is_empty() {
        let _ = writeln!(out, "\nno requests seen");
        return out;
    }
    routes(&mut out, report);
    listeners(&mut out, report);
    slowest(&mut out, report);
    out
}

/// Processes named in the summary's first line; report.json lists all.
const PROCESSES_NAMED: usize = 6;

fn header(out: &mut String, report: &Report) {
    let _ = writeln!(
        out,
        "traced {} for {:.1}s: {} connections, {} requests, {} events ({:.0}/s), {} dropped{}{}",
        processes(report),
        report.duration_s,
        report.connections,
        report.requests,
        report.events,
        report.events_per_s,
        report.dropped_events,
        drops(report),
        cost(report)
    );
    if let Some(line) = budget(report) {
        let _ = writeln!(out, "{line}");
    }
    if report.connections_open > 0 {
        let _ = writeln!(out, "{}", open_connections(report));
    }
    if let Some(c) = &report.command {
        let _ = writeln!(out, "command `{}` {}", c.command.join(" "), c.describe());
    }
    for w in &report.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    if let Some(d) = &report.diagnosis {
        let _ = writeln!(out, "\ndiagnosis: {}", d.text);
    }
}

/// `nginx (10), nginx (11)`; past a handful (a server forking per
/// connection), the first few and how many more, and how many of all exited.
fn processes(report: &Report) -> String {
    let all = &report.processes;
    let name = |p: &crate::process::Process| format!("{} ({})", p.comm, p.pid);
    if all.len() <= PROCESSES_NAMED {
        return all.iter().map(name).collect::<Vec<_>>().join(", ");
    }
    let shown: Vec<String> = all.iter().take(PROCESSES_NAMED - 2).map(name).collect();
    let exited = all.iter().filter(|p| p.exited).count();
    format!(
        "{} and {} more processes ({exited} exited while traced)",
        shown.join(", "),
        all.len() - shown.len()
    )
}

/// `; tracing cost 8.1µs a request, 6.2% of the traced CPU`.
fn cost(report: &Report) -> String {
    let c = &report.tracer_cost;
    let mut parts = Vec::new();
    if let Some(us) = c.per_request_us {
        let each = if us < 100.0 {
            format!("{us:.1}µs")
        } else {
            duration(us.round() as u64)
        };
        parts.push(format!("{each} a request"));
    }
    if let Some(pct) = c.pct_of_traced_cpu {
        parts.push(format!("{pct:.1}% of the traced CPU"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("; tracing cost {}", parts.join(", "))
    }
}

/// `overhead budget 3%: 31% of requests traced (12345, 27455 left out),
/// from 2.0s to 9.0s`.
fn budget(report: &Report) -> Option<String> {
    let b = &report.sampling.connections;
    let left_out = report.requests_left_out;
    if left_out == 0 {
        return None;
    }
    let share = report.requests as f64 * 100.0 / (report.requests + left_out) as f64;
    let (from, to) = (
        b.spans.first().map_or(0.0, |s| s.from_s),
        b.spans.last().map_or(0.0, |s| s.to_s),
    );
    Some(format!(
        "overhead budget {}%: {share:.0}% of requests traced ({}, {left_out} left out, whole), from {from:.1}s to {to:.1}s; percentiles weigh each traced request for those left out beside it",
        b.max_overhead_pct, report.requests,
    ))
}

/// `open at the end: 3 connections (2 idle, 1 reading a request)`.
fn open_connections(report: &Report) -> String {
    let o = &report.connections_by_state;
    let parts = counted(
        &[
            ("idle", o.idle),
            ("reading a request", o.reading_request),
            ("in the handler", o.in_handler),
            ("writing a response", o.writing),
        ],
        |what, n| format!("{n} {what}"),
    );
    format!(
        "open at the end: {} connections ({parts})",
        report.connections_open
    )
}

/// The counts that are not zero, each put in words, comma-separated.
fn counted(counts: &[(&str, u64)], say: impl Fn(&str, u64) -> String) -> String {
    counts
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|&(what, n)| say(what, n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// ` (ring buffer full 3, stacks lost 16)`: the losses that are not zero.
fn drops(report: &Report) -> String {
    let d = &report.drops;
    let parts = counted(
        &[
            ("ring buffer full", d.ringbuf_full),
            ("write table full", d.blocked_write_table_full),
            ("socket table full", d.socket_table_full),
            ("payloads unreadable", d.payload_unreadable),
            ("stacks lost", d.stacks_lost),
            ("stack table full", d.stack_table_full),
        ],
        |what, n| format!("{what} {n}"),
    );
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({parts})")
    }
}

/// One line per route: count, then p50 / p99 of the total and each stage.
fn routes(out: &mut String, report: &Report) {
    let explained = report.routes.iter().any(|r| r.explained_pct.is_some());
    let _ = writeln!(
        out,
        "\nroutes (p50 / p99 per stage{})",
        if explained {
            "; EXPL: share of handler time the stacks explain"
        } else {
            ""
        }
    );
    let route_w = report
        .routes
        .iter()
        .map(|r| r.method.len() + r.path.len() + 1)
        .max()
        .unwrap_or(5)
        .clamp(5, 40);
    let _ = write!(out, "{:<route_w$} {:>7} {:>17}", "ROUTE", "COUNT", "TOTAL");
    for s in Stage::ALL {
        let _ = write!(out, " {:>17}", s.name());
    }
    if explained {
        let _ = write!(out, " {:>5}", "EXPL");
    }
    out.push('\n');
    for r in &report.routes {
        let mut label = format!("{} {}", r.method, r.path);
        if label.len() > route_w {
            label.truncate(route_w - 1);
            label.push('…');
        }
        let _ = write!(
            out,
            "{label:<route_w$} {:>7} {:>17}",
            r.count,
            pair(r.p50_us, r.p99_us)
        );
        for s in Stage::ALL {
            let cell = r
                .stages
                .get(s.name())
                .map_or_else(|| "-".to_string(), |st| pair(st.p50_us, st.p99_us));
            let _ = write!(out, " {cell:>17}");
        }
        if let Some(pct) = r.explained_pct {
            let _ = write!(out, " {pct:>4.0}%");
        }
        out.push('\n');
    }
}

fn listeners(out: &mut String, report: &Report) {
    if !report.listeners.is_empty() {
        let _ = writeln!(out, "\nlisteners");
        for l in &report.listeners {
            let _ = write!(out, "  :{} accepted {}", l.port, l.accepted);
            if let Some(limit) = l.backlog_limit {
                let _ = write!(out, ", backlog limit {limit}");
            }
            if let Some(peak) = l.queue_peak {
                let _ = write!(out, ", queue peak {peak}");
            }
            if let Some(p99) = l.queue_p99 {
                let _ = write!(out, " (p99 {p99})");
            }
            if let Some(o) = l.overflows {
                let _ = write!(out, ", overflows {o}");
            }
            if let Some(r) = l.synack_retransmits.filter(|&r| r > 0) {
                let _ = write!(out, ", SYN-ACK retransmits {r}");
            }
            out.push('\n');
        }
    }
}

/// The slowest requests with their chains and what they waited on.
fn slowest(out: &mut String, report: &Report) {
    let _ = writeln!(out, "\nslowest requests");
    for (i, s) in report.slowest.iter().take(SLOWEST_SHOWN).enumerate() {
        let status = s.status.map_or_else(|| "-".to_string(), |c| c.to_string());
        let peer = s.peer.as_deref().unwrap_or("?");
        let _ = writeln!(
            out,
            "{}. {} {} {} {} from {} ({} {}) at {}",
            i + 1,
            duration(s.total_us),
            s.method,
            s.path,
            status,
            peer,
            s.process,
            s.pid,
            s.started_at
        );
        let chain: Vec<String> = Stage::LATENCY
            .iter()
            .filter_map(|st| {
                s.stages
                    .get(st.name())
                    .filter(|&&v| v > 0)
                    .map(|v| format!("{} {}", st.name(), duration(*v)))
            })
            .collect();
        let _ = writeln!(
            out,
            "   {}{}",
            chain.join(" -> "),
            if s.outcome == "complete" {
                String::new()
            } else {
                format!(" [{}]", s.outcome)
            }
        );
        for b in s.blocked_on.iter().take(3) {
            let verb = if b.what == EVENT_LOOP {
                ""
            } else {
                "blocked on "
            };
            let _ = writeln!(out, "   {verb}{} ({})", b.what, duration(b.us));
        }
    }
}

fn pair(p50: u64, p99: u64) -> String {
    format!("{} / {}", duration(p50), duration(p99))
}
