//! `cargo xtask dist`: the tracer as one static binary (x86_64, musl, the
//! eBPF object embedded) and its SHA-256, in `dist/`. A CI job installs it
//! by copying one file: no toolchain, no libc of a given version.

use std::{fs, path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};
use scenarios::workspace_root;

use crate::{setup, sh};

const TARGET: &str = "x86_64-unknown-linux-musl";
const NAME: &str = "tracer-x86_64-linux-musl";

/// Builds the static binary; returns its path.
pub fn run() -> Result<PathBuf> {
    setup::run()?;
    let installed = sh::output("rustup", &["target", "list", "--installed"]).unwrap_or_default();
    if !installed.lines().any(|l| l.trim() == TARGET) {
        sh::run(Command::new("rustup").args(["target", "add", TARGET]))?;
    }
    sh::cargo(&[
        "build",
        "--release",
        "-p",
        "tracer-user",
        "--target",
        TARGET,
    ])?;
    let built = workspace_root().join(format!("target/{TARGET}/release/tracer"));
    let dir = workspace_root().join("dist");
    fs::create_dir_all(&dir)?;
    let out = dir.join(NAME);
    fs::copy(&built, &out).with_context(|| format!("copying {}", built.display()))?;
    // Symbols stay out of a binary meant to be copied around.
    sh::run(Command::new("strip").arg(&out))?;
    let sum = Command::new("sha256sum")
        .arg(NAME)
        .current_dir(&dir)
        .output()
        .context("running sha256sum")?;
    if !sum.status.success() {
        bail!("sha256sum failed");
    }
    fs::write(dir.join(format!("{NAME}.sha256")), &sum.stdout)?;
    println!(
        "dist/{NAME} ({:.1} MB), dist/{NAME}.sha256: {}",
        fs::metadata(&out)?.len() as f64 / 1e6,
        String::from_utf8_lossy(&sum.stdout).trim()
    );
    Ok(out)
}
