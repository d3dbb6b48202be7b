//! The main job on a built-in default: start a bundled server, put load on
//! it, trace it, and show the chain and the flame graphs.

use std::process::Command;

use anyhow::{Context, Result};
use scenarios::{Server, TracerRun, free_port, go_binary, load::hey, workspace_root};

pub fn run() -> Result<()> {
    let bin = go_binary("basic")?;
    let port = free_port()?;
    let mut cmd = Command::new(bin);
    cmd.args(["-addr", &format!("127.0.0.1:{port}")]);
    let server = Server::start(cmd, port)?;
    let out = workspace_root().join("target/demo");
    eprintln!("xtask: tracing scenarios/basic (pid {}) while hey puts load on it", server.pid());
    let tracer = TracerRun::record(&[server.pid()], &out, &[])?;
    for (path, n, c) in [("/sleep/20", 100, 5), ("/sleep/200", 20, 5), ("/stream", 10, 2), ("/fast", 2000, 10)] {
        hey(&server.url(path), n, c).with_context(|| format!("load on {path}"))?;
    }
    let done = tracer.stop()?;
    if !done.status.success() {
        anyhow::bail!("tracer failed: {}", done.stderr);
    }
    println!("{}", done.stdout);
    println!("open {} in a browser for the chain flame graph", done.out.join("chains.svg").display());
    Ok(())
}
