//! What a CI job reads: each budget's verdict on the terminal, summary.md
//! (also appended to `$GITHUB_STEP_SUMMARY` when set), and JUnit XML.

use std::{io::Write as _, path::Path};

use anyhow::{Context, Result};
use serde_json::Value;
use tracer_core::{
    check::{Budget, Verdict, judge_all, junit},
    report::markdown,
};

/// Judges the budgets, prints the verdicts, and writes the JUnit file if
/// asked and the Markdown summary where CI shows it. Returns the verdicts
/// and the Markdown.
pub fn judge(
    report: &Value,
    budgets: &[Budget],
    junit_path: Option<&Path>,
    files: &[String],
) -> Result<(Vec<Verdict>, String)> {
    let verdicts = judge_all(budgets, report);
    if !verdicts.is_empty() {
        println!("\nbudgets");
        for v in &verdicts {
            println!("  {v}");
        }
    }
    if let Some(path) = junit_path {
        std::fs::write(path, junit::render(&verdicts))
            .with_context(|| format!("writing the JUnit report {}", path.display()))?;
    }
    let md = markdown::render(report, &verdicts, files);
    if let Some(summary) = std::env::var_os("GITHUB_STEP_SUMMARY") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&summary)
            .with_context(|| format!("opening $GITHUB_STEP_SUMMARY ({})", summary.display()))?;
        f.write_all(md.as_bytes())
            .context("appending to $GITHUB_STEP_SUMMARY")?;
    }
    Ok((verdicts, md))
}

/// Whether any budget broke.
pub fn broken(verdicts: &[Verdict]) -> bool {
    verdicts.iter().any(|v| !v.held)
}
