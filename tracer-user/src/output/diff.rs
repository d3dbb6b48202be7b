//! `tracer diff`: two runs compared. The table of each route's p50 and p99
//! (whole requests and stages) before and after, the routes that appeared
//! or vanished, and differential flame graphs (inferno's differential
//! folding: red where the second run spent more, blue less) of the chains,
//! on-CPU and off-CPU stacks both runs have.

use std::{
    io::BufReader,
    path::{Path, PathBuf},
    time::SystemTime,
};

use anyhow::{Context, Result};
use serde_json::Value;
use tracer_core::check::diff::{Threshold, compare};

use super::files::new_dir_named;

/// A run given as its output folder or its report.json: the report, and
/// the folder its folded files are in.
fn open(path: &Path) -> Result<(Value, PathBuf)> {
    let (file, dir) = if path.is_dir() {
        (path.join("report.json"), path.to_path_buf())
    } else {
        (
            path.to_path_buf(),
            path.parent().unwrap_or(Path::new(".")).to_path_buf(),
        )
    };
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let value: Value = serde_json::from_str(&text)
        .ok()
        .filter(|v: &Value| v["tool"] == "tracer")
        .with_context(|| format!("{} is not a tracer report", file.display()))?;
    Ok((value, dir))
}

/// Compares, prints, writes the differential graphs; returns whether a
/// threshold was passed.
pub fn run(
    before: &Path,
    after: &Path,
    out: Option<PathBuf>,
    fail_if: &[Threshold],
) -> Result<bool> {
    let (b, b_dir) = open(before)?;
    let (a, a_dir) = open(after)?;
    let diff = compare(&b, &a);
    print!("{}", diff.render());
    let out = match out {
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create the output folder {}", dir.display()))?;
            dir
        }
        None => new_dir_named(Path::new("."), "tracer-diff", SystemTime::now())?,
    };
    let mut written = Vec::new();
    for (kind, title, unit) in [
        ("chains", "request time by stage", "us"),
        ("oncpu", "on-CPU samples", "samples"),
        ("offcpu", "off-CPU time", "us"),
    ] {
        let (bf, af) = (
            b_dir.join(format!("{kind}.folded")),
            a_dir.join(format!("{kind}.folded")),
        );
        if !(bf.exists() && af.exists()) {
            continue;
        }
        let name = format!("{kind}.diff.svg");
        if differential(&bf, &af, &out.join(&name), title, unit)? {
            written.push(name);
        }
    }
    println!(
        "\ndifferential flame graphs in {}: {}",
        out.display(),
        written.join(", ")
    );
    let mut broken = false;
    for t in fail_if {
        for c in diff.beyond(t) {
            broken = true;
            println!(
                "✗ {}: {} {} went from {} to {} ({})",
                t.text,
                c.route,
                c.stage.map_or("total", tracer_core::chain::Stage::name),
                tracer_core::units::duration(c.before_us),
                tracer_core::units::duration(c.after_us),
                c.pct()
                    .map_or_else(|| "new".into(), |p| format!("{p:+.0}%"))
            );
        }
    }
    if !fail_if.is_empty() && !broken {
        println!(
            "✓ no change beyond {}",
            fail_if
                .iter()
                .map(|t| t.text.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(broken)
}

/// inferno's differential folding of two folded files, rendered; `false`
/// when neither run has a stack of this kind.
fn differential(before: &Path, after: &Path, svg: &Path, title: &str, unit: &str) -> Result<bool> {
    let open = |p: &Path| -> Result<BufReader<std::fs::File>> {
        Ok(BufReader::new(
            std::fs::File::open(p).with_context(|| format!("cannot read {}", p.display()))?,
        ))
    };
    let mut folded = Vec::new();
    inferno::differential::from_readers(
        inferno::differential::Options::default(),
        open(before)?,
        open(after)?,
        &mut folded,
    )
    .context("folding the two runs together")?;
    let text = String::from_utf8_lossy(&folded);
    if text.trim().is_empty() {
        return Ok(false);
    }
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = format!("{title}: differential (red: more after, blue: less)");
    opts.count_name = unit.to_string();
    let mut out = Vec::new();
    inferno::flamegraph::from_lines(&mut opts, text.lines(), &mut out)
        .context("rendering the differential flame graph")?;
    std::fs::write(svg, out).with_context(|| format!("writing {}", svg.display()))?;
    Ok(true)
}
