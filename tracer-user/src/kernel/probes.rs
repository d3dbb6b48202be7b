//! Loads the embedded kernel programs, attaches them, and gives typed access
//! to the maps userspace writes and reads.

use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, PerCpuHashMap, RingBuf, StackTraceMap},
    programs::{
        BtfTracePoint, PerfEvent, TracePoint,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    },
    util::online_cpus,
};
use tracer_common::{
    KernelOffsets, ListenCounters, ProgramRuns, StackKey, TraceLayout, counter, program,
};
use tracer_core::{counters::Counters, report::ProgramClock};

use super::{
    btf as kernel_btf,
    programs::{Attach, Enabled, Needs, PROGRAMS, Program, hooks_off},
    tracefs,
};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

/// What the caller asks of the kernel side.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Ring-buffer bytes that force an early wake-up of the reader.
    pub wakeup_bytes: u64,
    /// On-CPU sampling frequency (Hz); 0 turns sampling off.
    pub freq: u64,
    /// Off-CPU tracing, and the shortest block it reports.
    pub off_cpu: bool,
    /// Follow the processes the traced ones fork.
    pub children: bool,
    pub min_block_ns: u64,
}

/// Maps that outlive the programs: read after detaching, or while tracing
/// goes on (totals are cumulative).
pub struct Tables {
    pub stacks: StackMaps,
    listen_counters: PerCpuHashMap<MapData, u16, ListenCounters>,
    oncpu: PerCpuHashMap<MapData, StackKey, u64>,
    offcpu_us: PerCpuHashMap<MapData, StackKey, u64>,
}

/// The kernel's stack maps: ids below `STACKS_MAX` are the main map's,
/// the rest the spill map's, offset by it.
pub struct StackMaps {
    pub main: StackTraceMap<MapData>,
    pub spill: StackTraceMap<MapData>,
}

/// The stack tables without the stack map, which the symbolizer takes.
pub struct Totals {
    listen_counters: PerCpuHashMap<MapData, u16, ListenCounters>,
    oncpu: PerCpuHashMap<MapData, StackKey, u64>,
    offcpu_us: PerCpuHashMap<MapData, StackKey, u64>,
}

impl Tables {
    /// The stack map, and the rest.
    pub fn split(self) -> (StackMaps, Totals) {
        let Tables {
            stacks,
            listen_counters,
            oncpu,
            offcpu_us,
        } = self;
        (
            stacks,
            Totals {
                listen_counters,
                oncpu,
                offcpu_us,
            },
        )
    }
}

impl Totals {
    /// On-CPU samples per stack so far.
    pub fn oncpu(&self) -> Vec<(StackKey, u64)> {
        sum_per_cpu(&self.oncpu)
    }

    /// Off-CPU microseconds per stack so far.
    pub fn offcpu_us(&self) -> Vec<(StackKey, u64)> {
        sum_per_cpu(&self.offcpu_us)
    }

    /// Empties the on-CPU and off-CPU tables (a daemon's, between windows).
    pub fn clear_stacks(&mut self) {
        for map in [&mut self.oncpu, &mut self.offcpu_us] {
            let keys: Vec<StackKey> = map.keys().filter_map(Result::ok).collect();
            for key in keys {
                let _ = map.remove(&key);
            }
        }
    }

    /// Overflows and SYN-ACK retransmits per port, summed over CPUs.
    pub fn listen_counters(&self) -> Vec<(u16, ListenCounters)> {
        self.listen_counters
            .iter()
            .filter_map(Result::ok)
            .map(|(port, per_cpu)| {
                let sum = per_cpu
                    .iter()
                    .fold(ListenCounters::default(), |a, c| ListenCounters {
                        overflows: a.overflows + c.overflows,
                        synack_retransmits: a.synack_retransmits + c.synack_retransmits,
                    });
                (port, sum)
            })
            .collect()
    }
}

fn sum_per_cpu(map: &PerCpuHashMap<MapData, StackKey, u64>) -> Vec<(StackKey, u64)> {
    map.iter()
        .filter_map(Result::ok)
        .map(|(k, v)| (k, v.iter().sum()))
        .collect()
}

pub struct Probes {
    // Keeps the programs loaded.
    ebpf: Ebpf,
    /// Owned apart from the programs so that [`Probes::detach`] can drop them
    /// concurrently: a trace event's detach waits for an RCU grace period.
    links: Vec<Box<dyn Send>>,
    /// The programs attached: the ones whose costs are reported.
    attached: Vec<&'static str>,
    traced: Array<MapData, u8>,
    listen_ports: Array<MapData, u8>,
    leave_out: Array<MapData, u32>,
    counters: PerCpuArray<MapData, u64>,
    ring: Option<RingBuf<MapData>>,
    tables: Option<Tables>,
    /// Runs of each program, and the timed ones, counted by the programs
    /// themselves: what the tracer's own kernel cost is read from.
    runs: PerCpuArray<MapData, ProgramRuns>,
}

impl Probes {
    /// Loads the object with this kernel's offsets and layouts, attaches
    /// every enabled program, and returns what was lost to hooks this
    /// kernel lacks.
    pub fn load(config: Config) -> Result<(Self, Vec<String>)> {
        if !std::path::Path::new(kernel_btf::VMLINUX).exists() {
            kernel_btf::load()?;
        }
        let facts = kernel_btf::facts_via_child()?;
        let btf = Btf::from_sys_fs().context("reading kernel BTF for the BTF tracepoints")?;
        let layout = trace_layout(facts.listen_overflow_reason);
        let mut ebpf = load_object(&config, &btf, &layout, &facts.offsets)?;
        // Each link with its program's name, until the stand-ins are settled.
        let mut links: Vec<(&'static str, Box<dyn Send>)> = Vec::new();
        let mut warnings = Vec::new();
        let off = hooks_off();
        let mut replaced: Vec<(&Program, Vec<String>)> = Vec::new();
        for program in PROGRAMS.iter().filter(|p| enabled(p, &config)) {
            let attached = if off.contains(&program.hook()) {
                Attached::Missing(format!(
                    "{} is turned off (TRACER_HOOKS_OFF)",
                    program.hook()
                ))
            } else {
                attach(&mut ebpf, program, &btf, &layout, config.freq)?
            };
            match (attached, program.optional, program.stand_in) {
                (Attached::Links(new), ..) => {
                    links.extend(new.into_iter().map(|l| (program.name, l)));
                }
                (Attached::Missing(why), _, Some((name, _))) => {
                    match replaced.iter_mut().find(|(p, _)| p.name == name) {
                        Some((_, whys)) => whys.push(why),
                        None => replaced.push((stand_in(name)?, vec![why])),
                    }
                }
                (Attached::Missing(why), Some(loss), None) => {
                    warnings.push(format!("{why}: {loss}"));
                }
                (Attached::Missing(why), None, None) => {
                    bail!("{why}: the tracer cannot work without it")
                }
            }
        }
        for (program, whys) in replaced {
            // The stand-in does the work of every program it stands in for,
            // so those whose hooks this kernel has are detached.
            let replaced_names: Vec<&str> = PROGRAMS
                .iter()
                .filter(|p| p.stand_in.is_some_and(|(name, _)| name == program.name))
                .map(|p| p.name)
                .collect();
            links.retain(|(name, _)| !replaced_names.contains(name));
            let why = whys.join(", ");
            match attach(&mut ebpf, program, &btf, &layout, config.freq)? {
                Attached::Links(new) => links.extend(new.into_iter().map(|l| (program.name, l))),
                Attached::Missing(also) => {
                    bail!("{why}, and {also}: the tracer cannot work without them")
                }
            }
            let how = PROGRAMS
                .iter()
                .find_map(|p| p.stand_in.filter(|(name, _)| *name == program.name))
                .map_or("", |(_, how)| how);
            warnings.push(format!("{why}: {how}"));
        }
        let tables = Some(Tables {
            stacks: StackMaps {
                main: StackTraceMap::try_from(take(&mut ebpf, "STACKS")?)?,
                spill: StackTraceMap::try_from(take(&mut ebpf, "STACKS_SPILL")?)?,
            },
            listen_counters: PerCpuHashMap::try_from(take(&mut ebpf, "LISTEN_COUNTERS")?)?,
            oncpu: PerCpuHashMap::try_from(take(&mut ebpf, "ONCPU_COUNTS")?)?,
            offcpu_us: PerCpuHashMap::try_from(take(&mut ebpf, "OFFCPU_US")?)?,
        });
        let probes = Probes {
            runs: PerCpuArray::try_from(take(&mut ebpf, "RUNS")?)?,
            traced: Array::try_from(take(&mut ebpf, "TRACED")?)?,
            listen_ports: Array::try_from(take(&mut ebpf, "LISTEN_PORTS")?)?,
            leave_out: Array::try_from(take(&mut ebpf, "LEAVE_OUT")?)?,
            counters: PerCpuArray::try_from(take(&mut ebpf, "COUNTERS")?)?,
            ring: Some(RingBuf::try_from(take(&mut ebpf, "EVENTS")?)?),
            tables,
            ebpf,
            attached: links.iter().map(|(name, _)| *name).collect(),
            links: links.into_iter().map(|(_, link)| link).collect(),
        };
        Ok((probes, warnings))
    }

    /// Detaches every program, the grace periods of all links overlapping.
    pub fn detach(self) {
        let Probes { ebpf, links, .. } = self;
        std::thread::scope(|scope| {
            for link in links {
                scope.spawn(move || drop(link));
            }
        });
        drop(ebpf);
    }

    /// Traces `tgid`; `go` for Go programs, whose idle thread parking is skipped.
    pub fn trace(&mut self, tgid: u32, go: bool) -> Result<()> {
        let kind = if go {
            tracer_common::traced::GO
        } else {
            tracer_common::traced::YES
        };
        self.traced
            .set(tgid, kind, 0)
            .with_context(|| format!("adding pid {tgid} to the traced set"))
    }

    pub fn untrace(&mut self, tgid: u32) {
        // Out of range is fine: such a pid was never traced.
        let _ = self.traced.set(tgid, 0, 0);
    }

    /// Leaves `per_mille` of new inbound connections out (0: trace all).
    pub fn leave_out(&mut self, per_mille: u16) -> Result<()> {
        self.leave_out
            .set(0, u32::from(per_mille.min(1000)), 0)
            .context("setting the share of connections left out")
    }

    pub fn watch_port(&mut self, port: u16) -> Result<()> {
        self.listen_ports
            .set(u32::from(port), 1, 0)
            .with_context(|| format!("watching listening port {port}"))
    }

    /// The ring buffer, handed over once to the reader.
    pub fn take_ring(&mut self) -> Option<RingBuf<MapData>> {
        self.ring.take()
    }

    /// The stack tables, handed over once: they stay readable after detaching.
    pub fn take_tables(&mut self) -> Option<Tables> {
        self.tables.take()
    }

    /// Each program's runs since it was loaded, and the runs it timed
    /// with their time.
    pub fn program_costs(&self) -> Vec<ProgramClock> {
        program::NAMES
            .iter()
            .enumerate()
            .filter(|(_, name)| self.attached.contains(name))
            .filter_map(|(index, name)| {
                let per_cpu = self.runs.get(&(index as u32), 0).ok()?;
                let sum = per_cpu
                    .iter()
                    .fold(ProgramRuns::default(), |a, r| ProgramRuns {
                        runs: a.runs + r.runs,
                        timed_runs: a.timed_runs + r.timed_runs,
                        timed_ns: a.timed_ns + r.timed_ns,
                    });
                Some(ProgramClock {
                    name: (*name).to_string(),
                    runs: sum.runs,
                    timed_runs: sum.timed_runs,
                    timed_ns: sum.timed_ns,
                })
            })
            .collect()
    }

    pub fn counters(&self) -> Result<Counters> {
        let sum = |index: u32| -> Result<u64> { Ok(self.counters.get(&index, 0)?.iter().sum()) };
        Ok(Counters {
            events: sum(counter::EVENTS)?,
            ringbuf_full: sum(counter::RINGBUF_FULL)?,
            blocked_write_full: sum(counter::BLOCKED_WRITE_FULL)?,
            socks_full: sum(counter::SOCKS_FULL)?,
            payload_fault: sum(counter::PAYLOAD_FAULT)?,
            stack_lost: sum(counter::STACK_LOST)?,
            stack_table_full: sum(counter::STACK_TABLE_FULL)?,
            left_out_requests: sum(counter::LEFT_OUT_REQUESTS)?,
        })
    }
}

/// Where trace-event fields sit on this kernel (from tracefs formats), and
/// the drop reason of a full accept queue (from BTF).
fn trace_layout(listen_overflow_reason: u32) -> TraceLayout {
    let mut layout = TraceLayout::DEFAULT;
    let field =
        |group, event, name, default| tracefs::field_offset(group, event, name).unwrap_or(default);
    layout.fork_child_pid = field(
        "sched",
        "sched_process_fork",
        "child_pid",
        layout.fork_child_pid,
    );
    layout.kfree_skb_reason = field("skb", "kfree_skb", "reason", layout.kfree_skb_reason);
    layout.kfree_skb_rx_sk = field("skb", "kfree_skb", "rx_sk", u32::MAX);
    layout.listen_overflow_reason = listen_overflow_reason;
    layout
}

fn load_object(
    config: &Config,
    btf: &Btf,
    layout: &TraceLayout,
    offsets: &KernelOffsets,
) -> Result<Ebpf> {
    let off_cpu_enabled = u8::from(config.off_cpu);
    EbpfLoader::new()
        .btf(Some(btf))
        .map_max_entries("TRACED", pid_max())
        .override_global("WAKEUP_BYTES", &config.wakeup_bytes, true)
        .override_global("LAYOUT", layout, true)
        .override_global("OFFSETS", offsets, true)
        .override_global("MIN_BLOCK_NS", &config.min_block_ns, true)
        .override_global("OFF_CPU_ENABLED", &off_cpu_enabled, true)
        .load(OBJECT)
        .context("loading the eBPF object into the kernel")
}

/// One line for a program the verifier refused: its verdict (the log's
/// last line before the statistics), the whole log only on request.
fn rejected(name: &str, log: &str) -> String {
    if std::env::var_os("TRACER_VERIFIER_LOG").is_some() {
        return format!("kernel verifier rejected program {name}:\n{log}");
    }
    let lines = || log.lines().map(str::trim).filter(|l| !l.is_empty());
    // Kernels before 5.15 lack bpf_task_pt_regs; distributions backport
    // helpers, so the helper is what is checked, not the version.
    if let Some(helper) = lines()
        .find_map(|l| l.strip_prefix("unknown func "))
        .and_then(|f| f.split('#').next())
    {
        return format!(
            "this kernel lacks the BPF helper {helper} that program {name} uses: tracer needs Linux 5.15 or newer, or a kernel with it backported"
        );
    }
    // The verdict closes the log, before its statistics.
    let verdict = lines()
        .take_while(|l| !l.starts_with("verification time") && !l.starts_with("processed "))
        .last()
        .unwrap_or("no verifier log");
    format!(
        "kernel verifier rejected program {name}: {verdict} (TRACER_VERIFIER_LOG=1 prints the whole log)"
    )
}

/// The declared program named `name`.
fn stand_in(name: &str) -> Result<&'static Program> {
    PROGRAMS
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| anyhow!("no program {name} is declared"))
}

fn enabled(program: &Program, config: &Config) -> bool {
    match program.enabled {
        Enabled::StandIn => false,
        Enabled::Always => true,
        Enabled::OffCpu => config.off_cpu,
        Enabled::Sampling => config.freq > 0,
        Enabled::Children => config.children,
    }
}

enum Attached {
    Links(Vec<Box<dyn Send>>),
    /// The kernel lacks what the program needs: why, in words.
    Missing(String),
}

/// Loads (once) and attaches one program.
fn attach(
    ebpf: &mut Ebpf,
    program: &Program,
    btf: &Btf,
    layout: &TraceLayout,
    freq: u64,
) -> Result<Attached> {
    let name = program.name;
    if program.needs == Needs::ListenOverflowReason
        && (layout.listen_overflow_reason == u32::MAX || layout.kfree_skb_rx_sk == u32::MAX)
    {
        return Ok(Attached::Missing(
            "this kernel does not name accept-queue overflow drops".to_string(),
        ));
    }
    let links: Vec<Box<dyn Send>> = match program.attach {
        Attach::BtfTracepoint(function) => {
            let p: &mut BtfTracePoint = program_mut(ebpf, name)?;
            match p.load(function, btf) {
                Ok(()) => {}
                // The verifier's refusal is a defect to report in full,
                // not a missing hook.
                Err(aya::programs::ProgramError::LoadError { verifier_log, .. }) => {
                    bail!("{}", rejected(name, &verifier_log.to_string()));
                }
                Err(_) => {
                    return Ok(Attached::Missing(format!(
                        "kernel lacks BTF tracepoint {}",
                        program.hook()
                    )));
                }
            }
            let id = p
                .attach()
                .with_context(|| format!("attaching to BTF tracepoint {function}"))?;
            vec![Box::new(p.take_link(id)?)]
        }
        Attach::TraceEvent(group, event) => {
            if !tracefs::has_tracepoint(group, event) {
                return Ok(Attached::Missing(format!(
                    "kernel lacks tracepoint {}",
                    program.hook()
                )));
            }
            let p: &mut TracePoint = program_mut(ebpf, name)?;
            if p.fd().is_err() {
                match p.load() {
                    Ok(()) => {}
                    Err(aya::programs::ProgramError::LoadError { verifier_log, .. }) => {
                        bail!("{}", rejected(name, &verifier_log.to_string()));
                    }
                    Err(e) => return Err(e).with_context(|| format!("loading program {name}")),
                }
            }
            let id = p
                .attach(group, event)
                .with_context(|| format!("attaching to tracepoint {group}/{event}"))?;
            vec![Box::new(p.take_link(id)?)]
        }
        Attach::CpuClock => attach_cpu_clock(program_mut(ebpf, name)?, freq)?,
    };
    Ok(Attached::Links(links))
}

/// One `cpu-clock` perf event per online CPU, sampling every process.
fn attach_cpu_clock(program: &mut PerfEvent, freq: u64) -> Result<Vec<Box<dyn Send>>> {
    program
        .load()
        .context("kernel verifier rejected program on_cpu")?;
    let cpus = online_cpus().map_err(|(path, e)| anyhow!("reading {path}: {e}"))?;
    let mut links: Vec<Box<dyn Send>> = Vec::new();
    for cpu in cpus {
        let id = program
            .attach(
                PerfEventConfig::Software(SoftwareEvent::CpuClock),
                PerfEventScope::AllProcessesOneCpu { cpu },
                SamplePolicy::Frequency(freq),
                false,
            )
            .with_context(|| format!("opening the cpu-clock perf event on CPU {cpu}"))?;
        links.push(Box::new(program.take_link(id)?));
    }
    Ok(links)
}

/// Highest pid + 1: the size of the traced-process table.
fn pid_max() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4_194_304)
}

fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let program = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("eBPF object lacks program {name}"))?;
    Ok(program.try_into()?)
}

fn take(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    ebpf.take_map(name)
        .ok_or_else(|| anyhow!("eBPF object lacks map {name}"))
}

#[cfg(test)]
mod tests {
    use super::rejected;

    #[test]
    fn a_verifier_refusal_is_one_line_with_its_verdict() {
        let log = "0: R1=ctx() R10=fp0\n1626: (85) call bpf_probe_read_user#112\nR2 min value is negative, either use unsigned or 'var &= const'\nverification time 762157 usec\nstack depth 416+0\n";
        let line = rejected("sys_exit_sock_io", log);
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.contains("sys_exit_sock_io: R2 min value is negative"),
            "{line}"
        );
    }

    #[test]
    fn a_missing_helper_names_the_kernel_needed() {
        let log = "0: R1=ctx()\n37: (85) call unknown#175\nunknown func bpf_task_pt_regs#175\nprocessed 38 insns\n";
        let line = rejected("sock_recv_length", log);
        assert!(
            line.contains("lacks the BPF helper bpf_task_pt_regs") && line.contains("5.15"),
            "{line}"
        );
    }
}
