//! The main job on a built-in default: run a bundled scenario — its servers,
//! its load, the tracer on the server — and show the chain, the diagnosis
//! and the flame graphs.

use anyhow::{Result, bail};
use scenarios::{catalog, workspace_root};

/// The scenario `cargo xtask demo` runs: the seed's first case.
pub const DEFAULT: &str = "downstream-no-timeout";

pub fn run(name: &str) -> Result<()> {
    if !crate::sh::is_root() {
        bail!("tracing loads eBPF programs: run as root");
    }
    let out = workspace_root().join("target/scenario-runs").join(name);
    let expected = catalog::expected(name)?;
    eprintln!("xtask: scenario {name}: {}", expected.summary);
    let outcome = catalog::run(name, &out)?;
    println!("{}", outcome.output.stdout);
    println!(
        "\nexpected: {} dominates {}",
        expected.stage, expected.route
    );
    print!("{}", outcome.render_checks());
    let files = ["chains.svg", "oncpu.svg", "offcpu.svg"]
        .map(|f| outcome.output.out.join(f).display().to_string());
    println!(
        "\nflame graphs (open in a browser):\n  {}",
        files.join("\n  ")
    );
    if !outcome.passed() {
        bail!("scenario {name}: the diagnosis does not match the expected one");
    }
    println!("\nscenario {name}: diagnosis matches the expected one");
    Ok(())
}
