//! The processes a session traces: those named, their children, what they
//! fork while traced, and the command `tracer exec` started.

use std::{
    os::unix::process::{CommandExt, ExitStatusExt},
    path::Path,
    process::{Child, Command, ExitStatus},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use tracer_core::{
    process::{CommandOutcome, Process},
    track::Tracker,
};

use super::settings::Target;
use crate::{
    golang::{layout::Layout, sampler::Sampler},
    kernel::probes::Probes,
    symbols::stacks::Stacks,
    system::{procfs, runtime},
};

/// What learns of a process when it is traced: the kernel programs, the
/// symbolizer, the tracker and the goroutine sampler; and where warnings go.
pub struct Observers<'a> {
    pub probes: &'a mut Probes,
    pub stacks: &'a mut Stacks,
    pub tracker: &'a mut Tracker,
    pub sampler: &'a mut Sampler,
    pub warnings: &'a mut Vec<String>,
}

#[derive(Default)]
pub struct Targets {
    processes: Vec<Process>,
    /// The command of `tracer exec`, started in a process group of its own.
    command: Option<Child>,
    command_line: Vec<String>,
    /// How it ended, if it did by itself while traced.
    ended: Option<ExitStatus>,
}

impl Targets {
    pub fn processes(&self) -> &[Process] {
        &self.processes
    }

    /// `comm (pid)` of each.
    pub fn names(&self) -> Vec<String> {
        self.processes
            .iter()
            .map(|t| format!("{} ({})", t.comm, t.pid))
            .collect()
    }

    pub fn all_exited(&self) -> bool {
        self.processes.iter().all(|t| t.exited)
    }

    /// The command of `tracer exec` is ours, and so is everything it
    /// started (its process group: a wrapper script's server included):
    /// stop them gently, then firmly. Returns how the command ended.
    pub fn stop_command(&mut self) -> Option<CommandOutcome> {
        let child = self.command.as_mut()?;
        if let Ok(Some(status)) = child.try_wait() {
            self.ended.get_or_insert(status);
        }
        let group = child.id() as libc::pid_t;
        // SAFETY: signalling the process group this tracer created.
        unsafe { libc::kill(-group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut status = None;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = child.try_wait() {
                status = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above; whatever of the group is left.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let status = status.or_else(|| child.wait().ok());
        let by_itself = self.ended.is_some();
        let status = self.ended.or(status)?;
        Some(CommandOutcome {
            command: self.command_line.clone(),
            exited_by_itself: by_itself,
            exit_code: status.code(),
            signal: status.signal(),
        })
    }

    /// Starts tracing the target: the given processes (and their
    /// descendants with `children`), or the command, started here.
    pub fn start(
        &mut self,
        target: Target,
        pids: &[u32],
        children: bool,
        o: &mut Observers,
    ) -> Result<()> {
        match target {
            Target::Pids(_) => {
                let mut all = pids.to_vec();
                if children {
                    for &pid in pids {
                        for child in procfs::descendants(pid) {
                            if !all.contains(&child) {
                                all.push(child);
                            }
                        }
                    }
                }
                for pid in all {
                    self.trace_process(pid, o)?;
                }
                // Loading the programs takes a moment: a process may be gone by now.
                let gone: Vec<String> = pids
                    .iter()
                    .filter(|&&pid| !procfs::is_alive(pid))
                    .map(ToString::to_string)
                    .collect();
                if gone.len() == pids.len() {
                    bail!(
                        "{} exited while tracing started: nothing to trace",
                        gone.join(", ")
                    );
                }
                if !gone.is_empty() {
                    let w = format!("{} exited while tracing started", gone.join(", "));
                    eprintln!("tracer: warning: {w}");
                    o.warnings.push(w);
                }
            }
            Target::Command(cmd) => {
                let (program, args) = cmd.split_first().context("exec needs a command")?;
                let c = Command::new(program)
                    .args(args)
                    .process_group(0)
                    .spawn()
                    .with_context(|| format!("starting {program}"))?;
                self.command_line.clone_from(&cmd);
                self.trace_process(c.id(), o)?;
                self.command = Some(c);
            }
        }
        Ok(())
    }

    /// Traces a process found while tracing.
    pub fn add(&mut self, pid: u32, o: &mut Observers) -> Result<()> {
        self.trace_process(pid, o)
    }

    /// Forgets the processes that exited, here and in the observers: a
    /// daemon follows restarts for months, and every list would grow with
    /// each one.
    /// Returns whether any was.
    pub fn forget_exited(&mut self, o: &mut Observers) -> bool {
        let before = self.processes.len();
        for p in self.processes.iter().filter(|p| p.exited) {
            o.tracker.forget_process(p.pid);
            o.sampler.remove_process(p.pid);
            o.stacks.forget(p.pid);
        }
        self.processes.retain(|p| !p.exited);
        self.processes.len() < before
    }

    fn trace_process(&mut self, pid: u32, o: &mut Observers) -> Result<()> {
        self.trace_process_named(pid, o, None)
    }

    /// [`Self::trace_process`]; `inherited` names a forked child that exits
    /// before its name is read (until it execs, a child has its parent's).
    fn trace_process_named(
        &mut self,
        pid: u32,
        o: &mut Observers,
        inherited: Option<String>,
    ) -> Result<()> {
        if self.processes.iter().any(|t| t.pid == pid) {
            return Ok(());
        }
        // Traced first, then scanned: nothing that happens in between is missed.
        // Through /proc, which opens the binary even if it was replaced on disk.
        let exe = format!("/proc/{pid}/exe");
        let go = runtime::is_go(Path::new(&exe));
        o.probes.trace(pid, go)?;
        o.stacks.watch(pid);
        let comm = procfs::comm(pid)
            .ok()
            .or(inherited)
            .unwrap_or_else(|| pid.to_string());
        if go {
            match Layout::of(Path::new(&exe)) {
                Ok(layout) => {
                    o.stacks.set_wait_reasons(pid, layout.wait_reasons.clone());
                    o.sampler.add_process(pid, layout);
                }
                Err(e) => {
                    let w = format!("{comm} ({pid}): {e}");
                    eprintln!("tracer: warning: {w}");
                    o.warnings.push(w);
                }
            }
        }
        o.tracker.add_process(pid, &comm, go);
        // Connections already open are recognised by their local port at first use.
        for port in procfs::listeners(pid) {
            o.probes.watch_port(port)?;
            o.tracker.add_listener(pid, port);
        }
        self.processes.push(Process {
            pid,
            comm,
            exited: false,
        });
        Ok(())
    }

    /// Child processes forked by traced ones (the kernel already traces
    /// them). One that served its connection and exited before this look
    /// is listed as exited, under its parent's name. Returns whether any
    /// was traced (reading a Go child's layout leaves memory to give back).
    pub fn adopt_forks(&mut self, o: &mut Observers) -> Result<bool> {
        let mut traced = false;
        for (parent, pid) in o.tracker.take_forks() {
            let parent_comm = self
                .processes
                .iter()
                .find(|t| t.pid == parent)
                .map(|t| t.comm.clone());
            match procfs::tgid(pid) {
                Some(tgid) if tgid != pid => o.probes.untrace(pid),
                Some(_) if procfs::is_alive(pid) => {
                    self.trace_process_named(pid, o, parent_comm)?;
                    traced = true;
                }
                _ => {
                    o.probes.untrace(pid);
                    if !self.processes.iter().any(|t| t.pid == pid) {
                        let comm = parent_comm.unwrap_or_else(|| pid.to_string());
                        self.processes.push(Process {
                            pid,
                            comm,
                            exited: true,
                        });
                    }
                }
            }
        }
        Ok(traced)
    }

    /// Marks the processes that exited, and stops tracing their pids.
    pub fn note_exits(&mut self, probes: &mut Probes) {
        if let Some(c) = self.command.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            self.ended.get_or_insert(status);
            let pid = c.id();
            self.processes
                .iter_mut()
                .filter(|t| t.pid == pid)
                .for_each(|t| t.exited = true);
        }
        for t in self.processes.iter_mut().filter(|t| !t.exited) {
            if !procfs::is_alive(t.pid) {
                t.exited = true;
                probes.untrace(t.pid);
            }
        }
    }
}
