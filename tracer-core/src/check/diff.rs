//! Two reports compared: per route and stage, p50 and p99 before and
//! after, the routes that appeared or vanished, and a regression threshold
//! (`--fail-if 'p99 +20%'`, or `'handler p99 +20%'`).

use std::{collections::BTreeSet, fmt::Write as _};

use serde_json::Value;

use super::{BudgetError, Stat};
use crate::{chain::Stage, units::duration};

/// A change one route's figure may not exceed.
#[derive(Clone, Debug, PartialEq)]
pub struct Threshold {
    pub text: String,
    pub stage: Option<Stage>,
    pub stat: Stat,
    /// Percent of increase allowed.
    pub pct: f64,
}

impl std::str::FromStr for Threshold {
    type Err = BudgetError;

    fn from_str(text: &str) -> Result<Threshold, BudgetError> {
        let fail = |problem: String| BudgetError {
            text: text.to_string(),
            problem,
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        let (stage, stat, change) = match words.as_slice() {
            [stat, change] => (None, *stat, *change),
            [stage, stat, change] => {
                let s = Stage::ALL
                    .into_iter()
                    .find(|s| s.name() == *stage)
                    .ok_or_else(|| fail(format!("{stage:?} is not a stage")))?;
                (Some(s), *stat, *change)
            }
            _ => return Err(fail("write [stage] p50|p99 +N% (e.g. \"p99 +20%\")".into())),
        };
        let stat = match stat {
            "p50" => Stat::P50,
            "p99" => Stat::P99,
            other => return Err(fail(format!("{other:?} is not p50 or p99"))),
        };
        let pct = change
            .strip_prefix('+')
            .and_then(|c| c.strip_suffix('%'))
            .and_then(|c| c.parse::<f64>().ok())
            .filter(|p| p.is_finite() && *p >= 0.0)
            .ok_or_else(|| fail(format!("{change:?} is not an increase such as +20%")))?;
        Ok(Threshold {
            text: text.to_string(),
            stage,
            stat,
            pct,
        })
    }
}

/// One figure of one route, before and after.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub route: String,
    /// `None` for whole requests.
    pub stage: Option<Stage>,
    pub stat: Stat,
    pub before_us: u64,
    pub after_us: u64,
}

impl Change {
    /// Percent change; `None` from zero.
    pub fn pct(&self) -> Option<f64> {
        (self.before_us > 0).then(|| (self.after_us as f64 / self.before_us as f64 - 1.0) * 100.0)
    }
}

/// The comparison of two reports.
#[derive(Clone, Debug, Default)]
pub struct Diff {
    pub changes: Vec<Change>,
    pub appeared: Vec<String>,
    pub vanished: Vec<String>,
}

fn routes(report: &Value) -> Vec<(String, &Value)> {
    report["routes"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|r| {
            (
                format!(
                    "{} {}",
                    r["method"].as_str().unwrap_or("?"),
                    r["path"].as_str().unwrap_or("?")
                ),
                r,
            )
        })
        .collect()
}

fn figure(route: &Value, stage: Option<Stage>, stat: Stat) -> u64 {
    match stage {
        Some(s) => route["stages"][s.name()][stat.key()].as_u64().unwrap_or(0),
        None => route[stat.key()].as_u64().unwrap_or(0),
    }
}

pub fn compare(before: &Value, after: &Value) -> Diff {
    let (b, a) = (routes(before), routes(after));
    let names = |v: &[(String, &Value)]| v.iter().map(|(n, _)| n.clone()).collect::<BTreeSet<_>>();
    let (bn, an) = (names(&b), names(&a));
    let mut diff = Diff {
        appeared: an.difference(&bn).cloned().collect(),
        vanished: bn.difference(&an).cloned().collect(),
        ..Diff::default()
    };
    for (name, br) in &b {
        let Some((_, ar)) = a.iter().find(|(n, _)| n == name) else {
            continue;
        };
        let stages = std::iter::once(None).chain(Stage::ALL.into_iter().map(Some));
        for stage in stages {
            for stat in [Stat::P50, Stat::P99] {
                diff.changes.push(Change {
                    route: name.clone(),
                    stage,
                    stat,
                    before_us: figure(br, stage, stat),
                    after_us: figure(ar, stage, stat),
                });
            }
        }
    }
    diff
}

impl Diff {
    /// The changes beyond `t`: an increase of more than its percent (a
    /// figure that was 0 and is no longer counts as beyond any).
    pub fn beyond<'a>(&'a self, t: &'a Threshold) -> impl Iterator<Item = &'a Change> + 'a {
        self.changes.iter().filter(move |c| {
            c.stage == t.stage
                && c.stat == t.stat
                && c.after_us > c.before_us
                && c.pct().is_none_or(|p| p > t.pct)
        })
    }

    /// The table: each route's whole requests and stages, p50 and p99.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "ROUTE                          WHAT                      BEFORE      AFTER    CHANGE\n",
        );
        for c in &self.changes {
            if c.before_us == 0 && c.after_us == 0 {
                continue;
            }
            let what = format!(
                "{} {}",
                c.stage.map_or("total", Stage::name),
                match c.stat {
                    Stat::P50 => "p50",
                    Stat::P99 => "p99",
                    Stat::Max => "max",
                }
            );
            let change = c
                .pct()
                .map_or_else(|| "new".to_string(), |p| format!("{p:+.0}%"));
            let _ = writeln!(
                out,
                "{:<30} {:<20} {:>11} {:>10} {:>9}",
                c.route,
                what,
                duration(c.before_us),
                duration(c.after_us),
                change
            );
        }
        for r in &self.appeared {
            let _ = writeln!(out, "{r:<30} appeared");
        }
        for r in &self.vanished {
            let _ = writeln!(out, "{r:<30} vanished");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn report(p99: u64, extra: &str) -> Value {
        json!({"routes": [
            {"method": "GET", "path": "/api", "p50_us": 5_000, "p99_us": p99,
             "stages": {"handler": {"p50_us": 4_000, "p99_us": p99 - 1_000}}},
            {"method": "GET", "path": extra, "p50_us": 10, "p99_us": 20, "stages": {}}
        ]})
    }

    #[test]
    fn a_p99_regression_beyond_the_threshold_is_named() {
        let d = compare(&report(10_000, "/old"), &report(30_000, "/new"));
        let t: Threshold = "p99 +20%".parse().expect("threshold");
        let beyond: Vec<&Change> = d.beyond(&t).collect();
        assert_eq!(beyond.len(), 1);
        assert_eq!(beyond[0].route, "GET /api");
        assert!((beyond[0].pct().expect("pct") - 200.0).abs() < 1e-9);
        assert_eq!(d.appeared, vec!["GET /new"]);
        assert_eq!(d.vanished, vec!["GET /old"]);
        let table = d.render();
        assert!(
            table.contains("GET /api") && table.contains("+200%"),
            "{table}"
        );
        let lenient: Threshold = "p99 +300%".parse().expect("threshold");
        assert_eq!(d.beyond(&lenient).count(), 0);
        let stage: Threshold = "handler p99 +100%".parse().expect("threshold");
        assert_eq!(d.beyond(&stage).count(), 1);
    }

    #[test]
    fn malformed_thresholds_say_what_is_wrong() {
        let err = |s: &str| s.parse::<Threshold>().expect_err("malformed").problem;
        assert!(err("p99 20%").contains("not an increase"));
        assert!(err("p95 +20%").contains("not p50 or p99"));
        assert!(err("handlr p99 +20%").contains("not a stage"));
    }
}
