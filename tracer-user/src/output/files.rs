//! The files of a session: report.json and the three flame graphs
//! (request chains, on-CPU, off-CPU), each as folded stacks and SVG, and
//! the on-CPU and off-CPU stacks as pprof profiles.

use std::{
    io::ErrorKind,
    path::{Path, PathBuf},
    time::SystemTime,
};

use anyhow::{Context, Result, bail};
use tracer_core::report::folded::Folded;
use tracer_core::units::rfc3339;

use super::{Results, Sink, flame, pprof};

/// Writes a session's results into a directory.
pub struct Files {
    dir: PathBuf,
    written: Vec<&'static str>,
}

impl Files {
    /// The output folder, made ready before tracing starts, so that a bad
    /// `--out` fails at once rather than after the trace: `out` if given
    /// (created if missing; refused if it already holds a report, unless
    /// `overwrite`), else a new `./tracer-YYYYMMDD-HHMMSS[-N]` that no
    /// other run uses.
    pub fn prepare(out: Option<PathBuf>, overwrite: bool, now: SystemTime) -> Result<Files> {
        let dir = match out {
            Some(dir) => {
                std::fs::create_dir_all(&dir).with_context(|| {
                    format!("cannot create the output folder {}", dir.display())
                })?;
                if !overwrite && dir.join("report.json").exists() {
                    bail!(
                        "{} already holds a report: choose another --out, or pass --overwrite",
                        dir.display()
                    );
                }
                dir
            }
            None => new_dir(Path::new("."), now)?,
        };
        // Written and removed: a read-only or special file system says so now.
        let probe = dir.join(".tracer-write-test");
        std::fs::write(&probe, b"")
            .with_context(|| format!("cannot write into the output folder {}", dir.display()))?;
        let _ = std::fs::remove_file(&probe);
        Ok(Files {
            dir,
            written: Vec::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes the folder if nothing was written into it (the run failed
    /// before its end): no empty folder is left behind.
    pub fn discard_if_empty(&self) {
        let _ = std::fs::remove_dir(&self.dir);
    }

    /// The names of the files written.
    pub fn written(&self) -> &[&'static str] {
        &self.written
    }

    /// The Markdown summary, beside the other files.
    pub fn write_summary(&mut self, md: &str) -> Result<()> {
        self.write("summary.md", md.as_bytes())
    }

    /// Writes `name` whole or not at all: into a temporary name, then renamed.
    fn write(&mut self, name: &'static str, bytes: &[u8]) -> Result<()> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let result = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &path));
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.with_context(|| format!("writing {}", path.display()))?;
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
        let (start, duration) = window_ns(results);
        if let Some(oncpu) = &results.oncpu {
            let title = format!("on-CPU samples at {} Hz: {run}", s.stacks.freq_hz);
            self.graph(["oncpu.folded", "oncpu.svg"], oncpu, &title, "samples")?;
            let kind = pprof::Kind::Cpu {
                hz: s.stacks.freq_hz,
            };
            self.write(
                "profile.pb.gz",
                &pprof::encode(oncpu, kind, start, duration)?,
            )?;
        }
        if let Some(offcpu) = &results.offcpu {
            let title = format!(
                "off-CPU time, blocks of {} µs or more: {run}",
                s.stacks.min_block_us
            );
            self.graph(["offcpu.folded", "offcpu.svg"], offcpu, &title, "us")?;
            self.write(
                "offcpu.pb.gz",
                &pprof::encode(offcpu, pprof::Kind::OffCpu, start, duration)?,
            )?;
        }
        Ok(())
    }
}

/// When the results' window opened (Unix ns) and how long it was.
pub fn window_ns(results: &Results) -> (i64, i64) {
    let start = results
        .started
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    (start, (results.report.duration_s * 1e9) as i64)
}

/// `./tracer-YYYYMMDD-HHMMSS`, or with `-2`, `-3`... when a run in the same
/// second took it: created here, so two runs never share one.
fn new_dir(base: &Path, now: SystemTime) -> Result<PathBuf> {
    new_dir_named(base, "tracer", now)
}

/// `<prefix>-YYYYMMDD-HHMMSS[-N]` under `base`, created here.
pub fn new_dir_named(base: &Path, prefix: &str, now: SystemTime) -> Result<PathBuf> {
    // 2026-11-28T12:03:28.123Z -> tracer-20261128-120328
    let stamp: String = rfc3339(now)
        .chars()
        .take(19)
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect::<String>()
        .replace('T', "-");
    for n in 1..1000 {
        let name = if n == 1 {
            format!("{prefix}-{stamp}")
        } else {
            format!("{prefix}-{stamp}-{n}")
        };
        let dir = base.join(&name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot create the output folder {name}"));
            }
        }
    }
    bail!("cannot find a free output folder name {prefix}-{stamp}-N here")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_in_the_same_second_get_their_own_folders() {
        let cwd = std::env::temp_dir().join(format!("tracer-dirs-{}", std::process::id()));
        std::fs::create_dir_all(&cwd).expect("dir");
        let now = SystemTime::now();
        let (a, b) = (
            new_dir(&cwd, now).expect("first"),
            new_dir(&cwd, now).expect("second"),
        );
        assert_ne!(a, b);
        assert!(b.to_string_lossy().ends_with("-2"), "{}", b.display());
        std::fs::remove_dir_all(&cwd).expect("cleanup");
    }

    #[test]
    fn a_folder_with_a_report_is_kept_unless_told() {
        let dir = std::env::temp_dir().join(format!("tracer-out-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("report.json"), "{}").expect("report");
        let now = SystemTime::now();
        let err = Files::prepare(Some(dir.clone()), false, now)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("already holds a report"), "{err}");
        assert!(Files::prepare(Some(dir.clone()), true, now).is_ok());
        let err = Files::prepare(Some(dir.join("report.json")), false, now)
            .err()
            .expect("a file");
        assert!(
            err.to_string().contains("cannot create the output folder"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
