//! A tracing session: attach, follow the traced processes until the duration
//! ends, Ctrl-C, or they all exit, then write the outputs.

use std::{
    path::PathBuf,
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
    events, facts, outputs, preflight,
    probes::{self, Probes},
    procfs, report,
    report::{Meta, ProcessInfo, Sampling},
    stacks::Stacks,
    summary, tracefs,
};

/// How often the ring buffer is drained when no wake-up came.
const DRAIN_EVERY: Duration = Duration::from_millis(10);
/// How often traced processes are checked for exit and new children, and
/// new stacks symbolized.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// Ring-buffer bytes that force an early wake-up of the reader.
const WAKEUP_BYTES: u64 = 512 * 1024;

pub struct Settings {
    pub duration: Option<Duration>,
    pub out: Option<PathBuf>,
    /// Also trace the descendants of the given processes (nginx workers...).
    pub children: bool,
    /// On-CPU sampling frequency in Hz, 0 for none.
    pub freq: u64,
    pub off_cpu: bool,
    pub min_block: Duration,
}

/// What to trace: running processes, or a command to start.
pub enum Target {
    Pids(Vec<u32>),
    Command(Vec<String>),
}

pub struct Traced {
    pub pid: u32,
    pub comm: String,
    pub exited: bool,
}

/// Everything the session follows while it runs.
struct Run {
    probes: Probes,
    collector: Collector,
    stacks: Stacks,
    traced: Vec<Traced>,
    child: Option<Child>,
}

pub fn run(target: Target, settings: Settings) -> Result<()> {
    preflight::require_privileges()?;
    let pids = match &target {
        Target::Pids(p) => preflight::resolve_pids(p)?,
        Target::Command(_) => Vec::new(),
    };
    if tracefs::ensure_mounted()? {
        eprintln!("tracer: mounted tracefs on {}", tracefs::ROOT);
    }
    bump_memlock_limit();
    let config = probes::Config {
        wakeup_bytes: WAKEUP_BYTES,
        freq: settings.freq,
        off_cpu: settings.off_cpu,
        min_block_ns: settings.min_block.as_nanos() as u64,
    };
    let (mut probes, warnings) = Probes::load(config)?;
    // Loading parsed the kernel's BTF: hand that memory back before tracing.
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
    for w in &warnings {
        eprintln!("tracer: warning: {w}");
    }
    let tables = probes.take_tables().context("stack tables already taken")?;
    let probes::Tables {
        stacks,
        listen_counters,
        oncpu,
        offcpu_us,
    } = tables;
    let sample_us = 1_000_000u64.checked_div(settings.freq).unwrap_or(0);
    let mut run = Run {
        probes,
        collector: Collector::new(sample_us),
        stacks: Stacks::new(stacks),
        traced: Vec::new(),
        child: None,
    };

    match target {
        Target::Pids(_) => {
            let mut all = pids.clone();
            if settings.children {
                for &pid in &pids {
                    for child in procfs::descendants(pid) {
                        if !all.contains(&child) {
                            all.push(child);
                        }
                    }
                }
            }
            for pid in all {
                run.start_tracing(pid)?;
            }
        }
        Target::Command(cmd) => {
            let (program, args) = cmd.split_first().context("exec needs a command")?;
            let c = Command::new(program)
                .args(args)
                .spawn()
                .with_context(|| format!("starting {program}"))?;
            run.start_tracing(c.id())?;
            run.child = Some(c);
        }
    }
    let names: Vec<String> = run
        .traced
        .iter()
        .map(|t| format!("{} ({})", t.comm, t.pid))
        .collect();
    eprintln!(
        "tracer: tracing {}{}; Ctrl-C to stop",
        names.join(", "),
        settings
            .duration
            .map_or(String::new(), |d| format!(" for {:.1}s", d.as_secs_f64()))
    );

    let netstat_pid = run.traced.first().map_or(std::process::id(), |t| t.pid);
    let netstat_before = procfs::tcp_ext(netstat_pid);
    let started = SystemTime::now();
    let realtime_offset_ns = realtime_minus_monotonic_ns();
    let t0 = Instant::now();
    let ring = run
        .probes
        .take_ring()
        .context("ring buffer already taken")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stop = rt.block_on(run.follow(ring, settings.duration))?;
    let duration_s = t0.elapsed().as_secs_f64();
    run.collector.finish_all(monotonic_ns());
    let counters = run.probes.counters()?;
    let program_costs = run.probes.program_costs();
    let netstat_after = procfs::tcp_ext(netstat_pid);
    let delta = |name: &str| {
        netstat_after
            .get(name)
            .unwrap_or(&0)
            .saturating_sub(*netstat_before.get(name).unwrap_or(&0))
    };
    let netstat = report::Netstat {
        listen_overflows: delta("ListenOverflows"),
        listen_drops: delta("ListenDrops"),
    };
    let listen_counters = probes::Tables::listen_counters_of(&listen_counters);
    let Run {
        probes,
        mut collector,
        mut stacks,
        traced,
        mut child,
    } = run;
    // Detach before the slower work of symbolizing and writing outputs.
    probes.detach();
    if let Some(c) = child.as_mut() {
        stop_child(c);
    }
    if let StopReason::AllExited = stop {
        eprintln!("tracer: traced processes exited; writing what was seen");
    }
    stacks.note_all(collector.new_stacks.drain(..));
    stacks.resolve_pending();

    let sampling = Sampling {
        freq_hz: settings.freq,
        off_cpu: settings.off_cpu,
        min_block_us: settings.min_block.as_micros() as u64,
    };
    let meta = Meta {
        started,
        realtime_offset_ns,
        duration_s,
        processes: traced
            .iter()
            .map(|t| ProcessInfo {
                pid: t.pid,
                comm: t.comm.clone(),
                exited: t.exited,
            })
            .collect(),
        counters,
        sampling,
        listen_counters,
        netstat,
        diagnosis: facts::diagnosis(&collector, &mut stacks),
        program_costs,
        warnings,
    };
    let report = report::build(&collector, meta, &mut |cause| {
        facts::Names::cause(&mut stacks, cause)
    });
    let dir = output_dir(settings.out, started)?;
    let written = outputs::write(
        &dir,
        &report,
        &collector,
        &mut stacks,
        &traced,
        &oncpu,
        &offcpu_us,
    )?;
    print!("{}", summary::render(&report));
    println!("\noutputs in {}: {}", dir.display(), written.join(", "));
    Ok(())
}

impl Run {
    fn start_tracing(&mut self, pid: u32) -> Result<()> {
        if self.traced.iter().any(|t| t.pid == pid) {
            return Ok(());
        }
        // Traced first, then scanned: nothing that happens in between is missed.
        let go = std::fs::read_link(format!("/proc/{pid}/exe"))
            .is_ok_and(|exe| crate::runtime::is_go(&exe));
        self.probes.trace(pid, go)?;
        self.stacks.watch(pid);
        let comm = procfs::comm(pid).unwrap_or_else(|_| pid.to_string());
        self.collector.add_process(pid, &comm, go);
        // Connections already open are recognised by their local port at first use.
        for port in procfs::listeners(pid) {
            self.probes.watch_port(port)?;
            self.collector.add_listener(pid, port);
        }
        self.traced.push(Traced {
            pid,
            comm,
            exited: false,
        });
        Ok(())
    }

    async fn follow(
        &mut self,
        ring: RingBuf<MapData>,
        duration: Option<Duration>,
    ) -> Result<StopReason> {
        // SAFETY: the ring buffer owns its fd, which outlives the registration
        // (both end with `ring` at the end of this function).
        let mut ring = unsafe { AsyncFd::register(ring) }
            .map_err(|e| anyhow::anyhow!("polling the ring buffer: {e}"))?;
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
                    drain(guard.get_inner_mut(), &mut self.collector);
                    guard.clear_ready();
                }
                _ = drain_tick.tick() => drain(ring.get_mut(), &mut self.collector),
                _ = check_tick.tick() => {
                    drain(ring.get_mut(), &mut self.collector);
                    if self.check()? {
                        break StopReason::AllExited;
                    }
                }
                _ = sigint.recv() => break StopReason::Signal,
                _ = sigterm.recv() => break StopReason::Signal,
                _ = &mut deadline => break StopReason::Duration,
            }
        };
        drain(ring.get_mut(), &mut self.collector);
        Ok(reason)
    }

    /// Periodic work off the event path: adopt forked children, notice
    /// exits, name new stacks while their processes live. Returns whether
    /// every traced process is gone.
    fn check(&mut self) -> Result<bool> {
        self.adopt_forks()?;
        self.collector.sweep(monotonic_ns());
        if self.collector.compact() {
            // SAFETY: malloc_trim has no preconditions.
            unsafe { libc::malloc_trim(0) };
        }
        self.stacks.note_all(self.collector.new_stacks.drain(..));
        self.stacks.resolve_pending();
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(_)) = c.try_wait()
        {
            let pid = c.id();
            self.traced
                .iter_mut()
                .filter(|t| t.pid == pid)
                .for_each(|t| t.exited = true);
        }
        for t in self.traced.iter_mut().filter(|t| !t.exited) {
            if !procfs::is_alive(t.pid) {
                t.exited = true;
                self.probes.untrace(t.pid);
            }
        }
        Ok(self.traced.iter().all(|t| t.exited))
    }

    /// Forked children of traced processes: keep the processes, drop the
    /// threads (the kernel adds both, since it cannot tell them apart cheaply).
    fn adopt_forks(&mut self) -> Result<()> {
        for pid in std::mem::take(&mut self.collector.forks) {
            match procfs::tgid(pid) {
                Some(tgid) if tgid == pid => self.start_tracing(pid)?,
                _ => self.probes.untrace(pid),
            }
        }
        Ok(())
    }
}

enum StopReason {
    Duration,
    Signal,
    AllExited,
}

fn drain(ring: &mut RingBuf<MapData>, collector: &mut Collector) {
    while let Some(item) = ring.next() {
        if let Some(event) = events::decode(&item) {
            collector.handle(event);
        }
    }
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
        let stamp: String = report::rfc3339(started)
            .chars()
            .take(19)
            .filter(|c| c.is_ascii_digit() || *c == 'T')
            .collect();
        PathBuf::from(format!("tracer-{}", stamp.replace('T', "-")))
    });
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating output directory {}", dir.display()))?;
    Ok(dir)
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
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
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
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
