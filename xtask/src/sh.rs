//! Running commands, with the environment the set-up decided on.

use std::{process::Command, sync::OnceLock};

use anyhow::{Context, Result, bail};

/// Environment for cargo, set once by the set-up (the BPF toolchain choice).
static CARGO_ENV: OnceLock<Vec<(String, String)>> = OnceLock::new();

pub fn set_cargo_env(vars: Vec<(String, String)>) {
    let _ = CARGO_ENV.set(vars);
}

pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: {}", describe(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("running {}", describe(cmd)))?;
    if !status.success() {
        bail!("{} failed: {status}", describe(cmd));
    }
    Ok(())
}

/// Output of a command, or `None` if it cannot run or fails.
pub fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn cargo(args: &[&str]) -> Result<()> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(args).current_dir(scenarios::workspace_root());
    for (k, v) in CARGO_ENV.get().map_or(&[][..], Vec::as_slice) {
        cmd.env(k, v);
    }
    run(&mut cmd)
}

/// A cargo command's standard output (its messages still reach the terminal).
pub fn cargo_output(args: &[&str]) -> Result<String> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(args).current_dir(scenarios::workspace_root());
    for (k, v) in CARGO_ENV.get().map_or(&[][..], Vec::as_slice) {
        cmd.env(k, v);
    }
    eprintln!("xtask: {}", describe(&cmd));
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", describe(&cmd)))?;
    if !out.status.success() {
        bail!("{} failed: {}", describe(&cmd), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}
