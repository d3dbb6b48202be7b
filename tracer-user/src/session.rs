//! A tracing session: attach, follow the traced processes until the duration
//! ends, Ctrl-C, or they all exit, then write the outputs.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result, bail};
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    time::{MissedTickBehavior, interval, sleep},
};

use crate::{
    collector::Collector,
    events,
    flame::Folded,
    oracle::ProcOracle,
    preflight,
    probes::Probes,
    procfs, report,
    report::{Meta, ProcessInfo},
    summary, tracefs,
};

/// How often the ring buffer is drained when no wake-up came.
const DRAIN_EVERY: Duration = Duration::from_millis(10);
/// How often traced processes are checked for exit and new children.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// Ring-buffer bytes that force an early wake-up of the reader.
const WAKEUP_BYTES: u64 = 512 * 1024;

pub struct Settings {
    pub duration: Option<Duration>,
    pub out: Option<PathBuf>,
    /// Also trace the descendants of the given processes (nginx workers...).
    pub children: bool,
}

/// What to trace: running processes, or a command to start.
pub enum Target {
    Pids(Vec<u32>),
    Command(Vec<String>),
}

struct Traced {
    pid: u32,
    comm: String,
    exited: bool,
}

pub fn run(target: Target, settings: Settings) -> Result<()> {
    preflight::require_privileges()?;
    let pids = match &target {
        Target::Pids(p) => preflight::resolve_pids(p)?,
        Target::Command(_) => Vec::new(),
    };
    let mut warnings = Vec::new();
    if tracefs::ensure_mounted()? {
        eprintln!("tracer: mounted tracefs on {}", tracefs::ROOT);
    }
    bump_memlock_limit();
    let (mut probes, load) = Probes::load(WAKEUP_BYTES)?;
    for w in &load.warnings {
        eprintln!("tracer: warning: {w}");
    }
    warnings.extend(load.warnings);

    let mut collector = Collector::new();
    let mut traced: Vec<Traced> = Vec::new();
    let mut child: Option<Child> = None;
    match target {
        Target::Pids(_) => {
            let mut all = pids.clone();
            if settings.children {
                for &pid in &pids {
                    all.extend(procfs::descendants(pid).into_iter().filter(|p| !all.contains(p)).collect::<Vec<_>>());
                }
            }
            for pid in all {
                start_tracing(pid, &mut probes, &mut collector, &mut traced)?;
            }
        }
        Target::Command(cmd) => {
            let (program, args) = cmd.split_first().context("exec needs a command")?;
            let c = Command::new(program).args(args).spawn().with_context(|| format!("starting {program}"))?;
            start_tracing(c.id(), &mut probes, &mut collector, &mut traced)?;
            child = Some(c);
        }
    }
    let names: Vec<String> = traced.iter().map(|t| format!("{} ({})", t.comm, t.pid)).collect();
    eprintln!(
        "tracer: tracing {}{}; Ctrl-C to stop",
        names.join(", "),
        settings.duration.map_or(String::new(), |d| format!(" for {:.1}s", d.as_secs_f64()))
    );

    let started = SystemTime::now();
    let realtime_offset_ns = realtime_minus_monotonic_ns();
    let t0 = Instant::now();
    let ring = probes.take_ring().context("ring buffer already taken")?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let stop = rt.block_on(follow(ring, &mut probes, &mut collector, &mut traced, &mut child, settings.duration))?;
    let duration_s = t0.elapsed().as_secs_f64();
    collector.finish_all(monotonic_ns());
    let counters = probes.counters()?;
    // Detach before the slower work of writing outputs.
    probes.detach();
    if let Some(c) = child.as_mut() {
        stop_child(c);
    }
    if let StopReason::AllExited = stop {
        eprintln!("tracer: traced processes exited; writing what was seen");
    }

    let meta = Meta {
        started,
        realtime_offset_ns,
        duration_s,
        processes: traced.iter().map(|t| ProcessInfo { pid: t.pid, comm: t.comm.clone(), exited: t.exited }).collect(),
        counters,
        warnings,
    };
    let report = report::build(&collector, meta);
    let dir = output_dir(settings.out, started)?;
    write_outputs(&dir, &collector, &report)?;
    print!("{}", summary::render(&report));
    println!("\noutputs in {}: report.json, chains.folded, chains.svg", dir.display());
    Ok(())
}

fn start_tracing(pid: u32, probes: &mut Probes, collector: &mut Collector, traced: &mut Vec<Traced>) -> Result<()> {
    if traced.iter().any(|t| t.pid == pid) {
        return Ok(());
    }
    // Traced first, then scanned: nothing that happens in between is missed.
    probes.trace(pid)?;
    let comm = procfs::comm(pid).unwrap_or_else(|_| pid.to_string());
    collector.add_process(pid, comm.clone());
    for (port, fd) in procfs::listeners(pid) {
        probes.watch_port(port)?;
        collector.add_listener(pid, port, Some(fd));
    }
    let sockets = procfs::tcp_sockets(pid);
    let ports: Vec<u16> = collector.listeners.keys().copied().collect();
    for (inode, fd) in procfs::socket_fds(pid) {
        if let Some(s) = sockets.get(&inode) {
            if s.state == procfs::TCP_ESTABLISHED && ports.contains(&s.local.port()) {
                collector.add_open_connection(pid, fd, s.remote);
            }
        }
    }
    traced.push(Traced { pid, comm, exited: false });
    Ok(())
}

enum StopReason {
    Duration,
    Signal,
    AllExited,
}

async fn follow(
    ring: RingBuf<MapData>,
    probes: &mut Probes,
    collector: &mut Collector,
    traced: &mut Vec<Traced>,
    child: &mut Option<Child>,
    duration: Option<Duration>,
) -> Result<StopReason> {
    // SAFETY: the ring buffer owns its fd, which outlives the registration
    // (both end with `ring` at the end of this function).
    let mut ring = unsafe { AsyncFd::register(ring) }.map_err(|e| anyhow::anyhow!("polling the ring buffer: {e}"))?;
    let mut oracle = ProcOracle::default();
    let mut drain_tick = interval(DRAIN_EVERY);
    drain_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut check_tick = interval(CHECK_EVERY);
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let deadline = sleep(duration.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    tokio::pin!(deadline);

    let reason = loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                drain(guard.get_inner_mut(), collector, &mut oracle);
                guard.clear_ready();
            }
            _ = drain_tick.tick() => drain(ring.get_mut(), collector, &mut oracle),
            _ = check_tick.tick() => {
                drain(ring.get_mut(), collector, &mut oracle);
                adopt_forks(probes, collector, traced)?;
                if let Some(c) = child.as_mut() {
                    if let Ok(Some(_)) = c.try_wait() {
                        for t in traced.iter_mut().filter(|t| t.pid == c.id()) {
                            t.exited = true;
                        }
                    }
                }
                for t in traced.iter_mut().filter(|t| !t.exited) {
                    if !procfs::is_alive(t.pid) {
                        t.exited = true;
                        probes.untrace(t.pid);
                    }
                }
                if traced.iter().all(|t| t.exited) {
                    break StopReason::AllExited;
                }
            }
            _ = sigint.recv() => break StopReason::Signal,
            _ = sigterm.recv() => break StopReason::Signal,
            _ = &mut deadline => break StopReason::Duration,
        }
    };
    drain(ring.get_mut(), collector, &mut oracle);
    Ok(reason)
}

fn drain(ring: &mut RingBuf<MapData>, collector: &mut Collector, oracle: &mut ProcOracle) {
    while let Some(item) = ring.next() {
        if let Some(event) = events::decode(&item) {
            collector.handle(event, oracle);
        }
    }
}

/// Forked children of traced processes: keep the processes, drop the threads
/// (the kernel adds both, since it cannot tell them apart cheaply).
fn adopt_forks(probes: &mut Probes, collector: &mut Collector, traced: &mut Vec<Traced>) -> Result<()> {
    for pid in std::mem::take(&mut collector.forks) {
        match procfs::tgid(pid) {
            Some(tgid) if tgid == pid => start_tracing(pid, probes, collector, traced)?,
            _ => probes.untrace(pid),
        }
    }
    Ok(())
}

/// The command of `tracer exec` is ours: stop it gently, then firmly.
fn stop_child(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: signalling a child we own and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn output_dir(out: Option<PathBuf>, started: SystemTime) -> Result<PathBuf> {
    let dir = out.unwrap_or_else(|| {
        // 2026-11-28T12:03:28.123Z -> tracer-20261128-120328
        let stamp: String = report::rfc3339(started).chars().take(19).filter(|c| c.is_ascii_digit() || *c == 'T').collect();
        PathBuf::from(format!("tracer-{}", stamp.replace('T', "-")))
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("creating output directory {}", dir.display()))?;
    Ok(dir)
}

fn write_outputs(dir: &Path, collector: &Collector, report: &report::Report) -> Result<()> {
    let json = serde_json::to_string_pretty(report)?;
    let path = dir.join("report.json");
    std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;

    let mut chains = Folded::default();
    for ((comm, route, stage), us) in &collector.stats.folded {
        chains.add(&[comm, &route.label(), stage.name()], *us);
    }
    let procs: Vec<&str> = report.processes.iter().map(|p| p.comm.as_str()).collect();
    let title = format!("{}: request time by stage, {:.1}s", procs.join(", "), report.duration_s);
    chains.write(dir, "chains", &title, "us")
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// The clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC) as u64
}

fn realtime_minus_monotonic_ns() -> i128 {
    clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC)
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
fn bump_memlock_limit() {
    let rlim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: valid pointer to an rlimit.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
}

/// Refuses to trace ourselves: the tracer's own reads would feed its events.
pub fn reject_self(pids: &[u32]) -> Result<()> {
    if pids.contains(&std::process::id()) {
        bail!("tracer cannot trace itself");
    }
    Ok(())
}
