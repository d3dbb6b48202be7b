//! Latency budgets a CI job states, and their verdicts on a report.
//!
//! ```text
//! p99 < 50ms                      every route, whole requests
//! GET /api p99 < 50ms             one route
//! accept_queue p99 < 5ms          one stage, every route
//! GET /api handler p50 < 20ms     one stage of one route
//! dropped_events == 0             records lost
//! overflows == 0                  accept-queue overflows, all listeners
//! ```
//!
//! Judged on report.json as a JSON value, so a saved report (`tracer
//! check`) and a live one are judged by the same code.

pub mod diff;
pub mod junit;

use std::fmt;

use serde_json::Value;

use crate::{chain::Stage, units::duration as fmt_us};

/// A statistic kept in report.json.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    P50,
    P99,
    /// Whole requests only.
    Max,
}

impl Stat {
    fn key(self) -> &'static str {
        match self {
            Stat::P50 => "p50_us",
            Stat::P99 => "p99_us",
            Stat::Max => "max_us",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Stat::P50 => "p50",
            Stat::P99 => "p99",
            Stat::Max => "max",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Eq,
}

impl Op {
    fn holds(self, measured: u64, limit: u64) -> bool {
        match self {
            Op::Lt => measured < limit,
            Op::Le => measured <= limit,
            Op::Eq => measured == limit,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// A latency statistic: of one route or every route, of whole requests
    /// or of one stage. Limits in microseconds.
    Latency {
        route: Option<(String, String)>,
        stage: Option<Stage>,
        stat: Stat,
    },
    DroppedEvents,
    Overflows,
}

/// One budget, as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    pub text: String,
    pub subject: Subject,
    pub op: Op,
    /// Microseconds for latencies, a count for counters.
    pub limit: u64,
}

/// What is wrong with a budget expression, pointing at the part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("budget {text:?}: {problem}")]
pub struct BudgetError {
    pub text: String,
    pub problem: String,
}

const STAGES: [Stage; 6] = Stage::ALL;

impl std::str::FromStr for Budget {
    type Err = BudgetError;

    fn from_str(text: &str) -> Result<Budget, BudgetError> {
        let fail = |problem: String| BudgetError {
            text: text.to_string(),
            problem,
        };
        let (left, op, right) = split_op(text).ok_or_else(|| {
            fail("no comparison: write one of <, <= or == (e.g. \"p99 < 50ms\")".into())
        })?;
        let words: Vec<&str> = left.split_whitespace().collect();
        let right = right.trim();
        match words.as_slice() {
            ["dropped_events" | "overflows"] => {
                let limit = right.parse::<u64>().map_err(|_| {
                    fail(format!(
                        "{right:?} is not a count (e.g. \"{} == 0\")",
                        words[0]
                    ))
                })?;
                let subject = if words[0] == "dropped_events" {
                    Subject::DroppedEvents
                } else {
                    Subject::Overflows
                };
                Ok(Budget {
                    text: text.to_string(),
                    subject,
                    op,
                    limit,
                })
            }
            [] => Err(fail(
                "nothing before the comparison: name a statistic (p50, p99, max)".into(),
            )),
            [rest @ .., stat] => {
                let stat = match *stat {
                    "p50" => Stat::P50,
                    "p99" => Stat::P99,
                    "max" => Stat::Max,
                    other => {
                        return Err(fail(format!(
                            "{other:?} is not a statistic: p50, p99 or max (or dropped_events, overflows)"
                        )));
                    }
                };
                let (route, rest) = match rest {
                    [method, path, rest @ ..] if path.starts_with('/') => {
                        if !method.chars().all(|c| c.is_ascii_uppercase()) {
                            return Err(fail(format!(
                                "{method:?} is not an HTTP method (GET, POST...)"
                            )));
                        }
                        (Some(((*method).to_string(), (*path).to_string())), rest)
                    }
                    rest => (None, rest),
                };
                let stage = match rest {
                    [] => None,
                    [name] => Some(STAGES.into_iter().find(|s| s.name() == *name).ok_or_else(
                        || {
                            fail(format!(
                                "{name:?} is not a stage: {}",
                                STAGES.map(Stage::name).join(", ")
                            ))
                        },
                    )?),
                    more => {
                        return Err(fail(format!(
                            "cannot read {:?}: write [METHOD /path] [stage] p50|p99|max",
                            more.join(" ")
                        )));
                    }
                };
                if stage.is_some() && stat == Stat::Max {
                    return Err(fail(
                        "max is kept for whole requests only: use p50 or p99 for a stage".into(),
                    ));
                }
                Ok(Budget {
                    text: text.to_string(),
                    subject: Subject::Latency { route, stage, stat },
                    op,
                    limit: parse_duration_us(right).map_err(fail)?,
                })
            }
        }
    }
}

/// `left OP right`, the first operator found.
fn split_op(text: &str) -> Option<(&str, Op, &str)> {
    for (symbol, op) in [("<=", Op::Le), ("==", Op::Eq), ("<", Op::Lt)] {
        if let Some((l, r)) = text.split_once(symbol) {
            return Some((l, op, r));
        }
    }
    None
}

/// `50ms`, `2.5s`, `800us` or `800µs`, in microseconds.
fn parse_duration_us(s: &str) -> Result<u64, String> {
    let units = [
        ("ms", 1_000.0),
        ("us", 1.0),
        ("µs", 1.0),
        ("s", 1_000_000.0),
    ];
    for (unit, scale) in units {
        if let Some(n) = s.strip_suffix(unit) {
            return n
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .map(|v| (v * scale).round() as u64)
                .ok_or_else(|| format!("{s:?} is not a duration (e.g. 50ms, 2s, 800us)"));
        }
    }
    Err(format!("{s:?} has no unit: write ms, s or us (e.g. 50ms)"))
}

/// A budget judged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub budget: String,
    pub held: bool,
    /// What was measured, in words: `GET /api p99 62.1ms`, `dropped_events 3`.
    pub measured: String,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = if self.held { "✓" } else { "✗" };
        write!(f, "{mark} {} (measured: {})", self.budget, self.measured)
    }
}

impl Budget {
    /// Judges the budget on report.json.
    pub fn judge(&self, report: &Value) -> Verdict {
        let verdict = |held: bool, measured: String| Verdict {
            budget: self.text.clone(),
            held,
            measured,
        };
        match &self.subject {
            Subject::DroppedEvents => {
                let n = report["dropped_events"].as_u64().unwrap_or(0);
                verdict(self.op.holds(n, self.limit), format!("dropped_events {n}"))
            }
            Subject::Overflows => {
                let listeners = report["listeners"]
                    .as_array()
                    .map_or(&[][..], Vec::as_slice);
                if listeners.iter().any(|l| l["overflows"].is_null()) {
                    return verdict(
                        false,
                        "overflows not measured on this kernel (a listener's drop counter could not be read)".into(),
                    );
                }
                let n: u64 = listeners
                    .iter()
                    .filter_map(|l| l["overflows"].as_u64())
                    .sum();
                verdict(self.op.holds(n, self.limit), format!("overflows {n}"))
            }
            Subject::Latency { route, stage, stat } => {
                let routes = report["routes"].as_array().map_or(&[][..], Vec::as_slice);
                let chosen: Vec<&Value> = routes
                    .iter()
                    .filter(|r| {
                        route
                            .as_ref()
                            .is_none_or(|(m, p)| r["method"] == *m && r["path"] == *p)
                    })
                    .collect();
                if chosen.is_empty() {
                    let what = route
                        .as_ref()
                        .map_or_else(|| "any route".to_string(), |(m, p)| format!("{m} {p}"));
                    return verdict(false, format!("no request to {what} was traced"));
                }
                // Every route must hold; the worst one is what was measured.
                let value = |r: &Value| match stage {
                    Some(s) => r["stages"][s.name()][stat.key()].as_u64().unwrap_or(0),
                    None => r[stat.key()].as_u64().unwrap_or(0),
                };
                let worst = chosen
                    .iter()
                    .copied()
                    .max_by_key(|r| value(r))
                    .unwrap_or(chosen[0]);
                let v = value(worst);
                let stage_name = stage.map_or(String::new(), |s| format!(" {}", s.name()));
                let what = format!(
                    "{} {}{stage_name} {} {}",
                    worst["method"].as_str().unwrap_or("?"),
                    worst["path"].as_str().unwrap_or("?"),
                    stat.name(),
                    fmt_us(v)
                );
                let held = chosen.iter().all(|r| self.op.holds(value(r), self.limit));
                verdict(held, what)
            }
        }
    }

    /// The comparison, for messages.
    pub fn op_symbol(&self) -> &'static str {
        self.op.symbol()
    }
}

/// Judges every budget; the verdicts in the order given.
pub fn judge_all(budgets: &[Budget], report: &Value) -> Vec<Verdict> {
    budgets.iter().map(|b| b.judge(report)).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn budget(s: &str) -> Budget {
        s.parse().expect("a budget")
    }

    fn report() -> Value {
        json!({
            "dropped_events": 0,
            "listeners": [{"port": 8080, "overflows": 2}],
            "routes": [
                {"method": "GET", "path": "/api", "p50_us": 12_000, "p99_us": 62_100, "max_us": 80_000,
                 "stages": {"handler": {"p50_us": 11_000, "p99_us": 60_000}, "accept_queue": {"p50_us": 0, "p99_us": 900}}},
                {"method": "GET", "path": "/health", "p50_us": 100, "p99_us": 300, "max_us": 900,
                 "stages": {"handler": {"p50_us": 50, "p99_us": 100}, "accept_queue": {"p50_us": 0, "p99_us": 7_000}}}
            ]
        })
    }

    #[test]
    fn the_forms_of_the_issue_parse() {
        assert_eq!(
            budget("p99 < 50ms").subject,
            Subject::Latency {
                route: None,
                stage: None,
                stat: Stat::P99
            }
        );
        assert_eq!(budget("p99 < 50ms").limit, 50_000);
        assert_eq!(
            budget("GET /api handler p50 < 20ms").subject,
            Subject::Latency {
                route: Some(("GET".into(), "/api".into())),
                stage: Some(Stage::Handler),
                stat: Stat::P50
            }
        );
        assert_eq!(budget("accept_queue p99<=5ms").op, Op::Le);
        assert_eq!(
            budget("dropped_events == 0").subject,
            Subject::DroppedEvents
        );
        assert_eq!(budget("overflows==0").subject, Subject::Overflows);
        assert_eq!(budget("max < 1.5s").limit, 1_500_000);
        assert_eq!(budget("p50 < 800us").limit, 800);
    }

    #[test]
    fn malformed_budgets_say_what_is_wrong() {
        let err = |s: &str| s.parse::<Budget>().expect_err("malformed").problem;
        assert!(err("p99 50ms").contains("no comparison"));
        assert!(err("p98 < 50ms").contains("\"p98\" is not a statistic"));
        assert!(err("p99 < 50").contains("no unit"));
        assert!(err("p99 < fast ms").contains("not a duration"));
        assert!(err("GET /api handlr p99 < 5ms").contains("\"handlr\" is not a stage"));
        assert!(err("get /api p99 < 5ms").contains("not an HTTP method"));
        assert!(err("handler max < 5ms").contains("max is kept for whole requests"));
        assert!(err("dropped_events == none").contains("not a count"));
    }

    #[test]
    fn every_route_must_hold_and_the_worst_is_shown() {
        let r = report();
        let v = budget("p99 < 50ms").judge(&r);
        assert!(!v.held);
        assert_eq!(v.measured, "GET /api p99 62.1ms");
        assert!(budget("p99 < 100ms").judge(&r).held);
        assert!(budget("GET /health p99 < 1ms").judge(&r).held);
        let q = budget("accept_queue p99 < 5ms").judge(&r);
        assert!(!q.held, "{q}");
        assert!(
            q.measured.starts_with("GET /health accept_queue p99"),
            "{q}"
        );
        assert!(budget("GET /api handler p50 < 20ms").judge(&r).held);
        assert!(budget("dropped_events == 0").judge(&r).held);
        let o = budget("overflows == 0").judge(&r);
        assert_eq!((o.held, o.measured.as_str()), (false, "overflows 2"));
    }

    #[test]
    fn a_route_never_traced_breaks_its_budget() {
        let v = budget("POST /upload p99 < 1s").judge(&report());
        assert!(!v.held);
        assert!(v.measured.contains("no request to POST /upload"), "{v}");
    }
}
