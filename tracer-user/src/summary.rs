//! The summary printed at the end of a trace: routes with count and p50/p99
//! per stage, then the slowest requests with their chains.

use std::fmt::Write as _;

use crate::{chain::Stage, report::Report};

/// Microseconds as a short human duration: `850µs`, `20.1ms`, `1.21s`.
pub fn duration(us: u64) -> String {
    match us {
        0..=999 => format!("{us}µs"),
        1_000..=9_999 => format!("{:.2}ms", us as f64 / 1e3),
        10_000..=999_999 => format!("{:.1}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

const SLOWEST_SHOWN: usize = 5;

pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let procs: Vec<String> = report
        .processes
        .iter()
        .map(|p| format!("{} ({})", p.comm, p.pid))
        .collect();
    let _ = writeln!(
        out,
        "traced {} for {:.1}s: {} connections, {} requests, {} events ({:.0}/s), {} dropped",
        procs.join(", "),
        report.duration_s,
        report.connections,
        report.requests,
        report.events,
        report.events_per_s,
        report.dropped_events
    );
    for w in &report.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    if let Some(d) = &report.diagnosis {
        let _ = writeln!(out, "\ndiagnosis: {}", d.text);
    }
    if report.routes.is_empty() {
        let _ = writeln!(out, "\nno requests seen");
        return out;
    }

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
            let _ = write!(out, " {:>4.0}%", pct);
        }
        out.push('\n');
    }

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
            let _ = writeln!(out, "   blocked on {} ({})", b.what, duration(b.us));
        }
    }
    out
}

fn pair(p50: u64, p99: u64) -> String {
    format!("{} / {}", duration(p50), duration(p99))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_short_and_readable() {
        assert_eq!(duration(850), "850µs");
        assert_eq!(duration(1_500), "1.50ms");
        assert_eq!(duration(20_140), "20.1ms");
        assert_eq!(duration(1_210_000), "1.21s");
    }
}
