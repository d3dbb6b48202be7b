//! The run as Markdown, for what CI systems show (a job's summary page):
//! the diagnosis, the routes by stage, each budget with its verdict, and
//! the files written. Rendered from report.json's value, so a saved report
//! renders the same.

use std::fmt::Write as _;

use serde_json::Value;

use crate::{chain::Stage, check::Verdict, units::duration};

pub fn render(report: &Value, verdicts: &[Verdict], files: &[String]) -> String {
    let mut md = String::from("## tracer\n\n");
    let processes: Vec<String> = report["processes"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .filter_map(|p| Some(format!("{} ({})", p["comm"].as_str()?, p["pid"])))
        .collect();
    let _ = writeln!(
        md,
        "Traced {} for {:.1}s: {} requests, {} dropped events.\n",
        if processes.is_empty() {
            "nothing".to_string()
        } else {
            processes.join(", ")
        },
        report["duration_s"].as_f64().unwrap_or(0.0),
        report["requests"].as_u64().unwrap_or(0),
        report["dropped_events"].as_u64().unwrap_or(0),
    );
    if let Some(text) = report["diagnosis"]["text"].as_str() {
        let _ = writeln!(md, "**Diagnosis:** {text}\n");
    }
    if !verdicts.is_empty() {
        let broken = verdicts.iter().filter(|v| !v.held).count();
        let _ = writeln!(
            md,
            "### Budgets: {}\n",
            if broken == 0 {
                "all hold".to_string()
            } else {
                format!("{broken} of {} broken", verdicts.len())
            }
        );
        md.push_str("| | budget | measured |\n|---|---|---|\n");
        for v in verdicts {
            let mark = if v.held { "✓" } else { "✗" };
            let _ = writeln!(md, "| {mark} | `{}` | {} |", v.budget, v.measured);
        }
        md.push('\n');
    }
    routes(report, &mut md);
    if !files.is_empty() {
        let _ = writeln!(md, "Files: {}", files.join(", "));
    }
    md
}

/// Each route: count, p50 and p99 of whole requests and of each stage.
fn routes(report: &Value, md: &mut String) {
    let routes = report["routes"].as_array().map_or(&[][..], Vec::as_slice);
    if routes.is_empty() {
        return;
    }
    md.push_str("### Routes (p50 / p99)\n\n| route | count | total |");
    for s in Stage::ALL {
        let _ = write!(md, " {} |", s.name());
    }
    md.push_str("\n|---|---:|---:|");
    for _ in Stage::ALL {
        md.push_str("---:|");
    }
    md.push('\n');
    let pair = |v: &Value| {
        format!(
            "{} / {}",
            duration(v["p50_us"].as_u64().unwrap_or(0)),
            duration(v["p99_us"].as_u64().unwrap_or(0))
        )
    };
    for r in routes {
        let _ = write!(
            md,
            "| `{} {}` | {} | {} |",
            r["method"].as_str().unwrap_or("?"),
            r["path"].as_str().unwrap_or("?"),
            r["count"].as_u64().unwrap_or(0),
            pair(r)
        );
        for s in Stage::ALL {
            let _ = write!(md, " {} |", pair(&r["stages"][s.name()]));
        }
        md.push('\n');
    }
    md.push('\n');
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn names_the_route_and_the_broken_budget() {
        let report = json!({
            "processes": [{"comm": "api", "pid": 7}],
            "duration_s": 10.0, "requests": 5, "dropped_events": 0,
            "diagnosis": {"text": "GET /api p99 62ms: 97% handler"},
            "routes": [{"method": "GET", "path": "/api", "count": 5, "p50_us": 12_000, "p99_us": 62_000,
                        "stages": {"handler": {"p50_us": 11_000, "p99_us": 60_000}}}]
        });
        let v = Verdict {
            budget: "p99 < 50ms".into(),
            held: false,
            measured: "GET /api p99 62.0ms".into(),
        };
        let md = render(&report, &[v], &["chains.svg".into()]);
        assert!(md.contains("1 of 1 broken"), "{md}");
        assert!(
            md.contains("| ✗ | `p99 < 50ms` | GET /api p99 62.0ms |"),
            "{md}"
        );
        assert!(md.contains("| `GET /api` | 5 | 12.0ms / 62.0ms |"), "{md}");
        assert!(md.contains("**Diagnosis:** GET /api p99 62ms"), "{md}");
        assert!(md.contains("Files: chains.svg"), "{md}");
    }
}
