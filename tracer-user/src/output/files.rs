//! The files of a session: report.json and the three flame graphs
//! (request chains, on-CPU, off-CPU), each as folded stacks and SVG.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tracer_core::report::folded::Folded;

use super::{Results, Sink, flame};

/// Writes a session's results into a directory.
pub struct Files {
    dir: PathBuf,
    written: Vec<&'static str>,
}

impl Files {
    pub fn new(dir: PathBuf) -> Self {
        Files {
            dir,
            written: Vec::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The names of the files written.
    pub fn written(&self) -> &[&'static str] {
        &self.written
    }

    fn write(&mut self, name: &'static str, bytes: &[u8]) -> Result<()> {
        let path = self.dir.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        self.written.push(name);
        Ok(())
    }

    /// `<stem>.folded` and `<stem>.svg`.
    fn graph(
        &mut self,
        names: [&'static str; 2],
        folded: &Folded,
        title: &str,
        count_name: &str,
    ) -> Result<()> {
        self.write(names[0], folded.render().as_bytes())?;
        self.write(names[1], &flame::svg(folded, title, count_name)?)
    }
}

impl Sink for Files {
    fn finish(&mut self, results: &Results) -> Result<()> {
        let report = &results.report;
        self.write(
            "report.json",
            serde_json::to_string_pretty(report)?.as_bytes(),
        )?;
        let mut procs: Vec<&str> = report.processes.iter().map(|p| p.comm.as_str()).collect();
        procs.dedup();
        let run = format!("{}, {:.1}s", procs.join(", "), report.duration_s);
        self.graph(
            ["chains.folded", "chains.svg"],
            &results.chains,
            &format!("request time by stage: {run}"),
            "us",
        )?;
        let s = &report.sampling;
        if let Some(oncpu) = &results.oncpu {
            let title = format!("on-CPU samples at {} Hz: {run}", s.freq_hz);
            self.graph(["oncpu.folded", "oncpu.svg"], oncpu, &title, "samples")?;
        }
        if let Some(offcpu) = &results.offcpu {
            let title = format!(
                "off-CPU time, blocks of {} µs or more: {run}",
                s.min_block_us
            );
            self.graph(["offcpu.folded", "offcpu.svg"], offcpu, &title, "us")?;
        }
        Ok(())
    }
}
