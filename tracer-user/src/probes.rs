//! Loads the embedded kernel programs, attaches them, and gives typed access
//! to the maps userspace writes and reads.

use anyhow::{Context, Result, anyhow};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, PerCpuHashMap, RingBuf, StackTraceMap},
    programs::{
        BtfTracePoint, PerfEvent, TracePoint,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    },
    util::online_cpus,
};
use tracer_common::{ListenCounters, StackKey, TraceLayout, counter};

use crate::{kernel_btf, tracefs};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

/// BTF tracepoints: the hot paths. No record is built before the program
/// runs, which makes them several times cheaper per event than trace
/// events, and they fire only for socket I/O, not for every syscall.
const BTF_PROGRAMS: &[(&str, &str)] = &[
    ("sock_recv_length", "sock_recv_length"),
    ("sock_send_length", "sock_send_length"),
    ("sk_data_ready", "sk_data_ready"),
];

/// BTF tracepoints of off-CPU tracing.
const OFF_CPU_PROGRAMS: &[(&str, &str)] = &[
    ("sched_switch", "sched_switch"),
    ("sched_wakeup", "sched_wakeup"),
];

/// Trace events: rare events whose record fields are worth having decoded.
const TRACE_EVENTS: &[(&str, &str)] = &[
    ("inet_sock_set_state", "sock/inet_sock_set_state"),
    ("sched_process_fork", "sched/sched_process_fork"),
    ("sys_exit_accept", "syscalls/sys_exit_accept"),
    ("sys_exit_accept", "syscalls/sys_exit_accept4"),
    ("kfree_skb", "skb/kfree_skb"),
    ("tcp_retransmit_synack", "tcp/tcp_retransmit_synack"),
];

/// Hooks the tracer can do without, and what is lost without them.
const OPTIONAL: &[(&str, &str)] = &[
    (
        "sk_data_ready",
        "read_wait will be 0: this kernel does not report when request bytes arrive",
    ),
    (
        "sched/sched_process_fork",
        "children forked while tracing will not be traced",
    ),
    (
        "skb/kfree_skb",
        "accept-queue overflows will not be counted",
    ),
    (
        "tcp/tcp_retransmit_synack",
        "SYN-ACK retransmits will not be counted",
    ),
];

/// What the caller asks of the kernel side.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Ring-buffer bytes that force an early wake-up of the reader.
    pub wakeup_bytes: u64,
    /// On-CPU sampling frequency (Hz); 0 turns sampling off.
    pub freq: u64,
    /// Off-CPU tracing, and the shortest block it reports.
    pub off_cpu: bool,
    pub min_block_ns: u64,
}

/// Maps that outlive the programs: read after detaching.
pub struct Tables {
    pub stacks: StackTraceMap<MapData>,
    pub listen_counters: PerCpuHashMap<MapData, u16, ListenCounters>,
    pub oncpu: PerCpuHashMap<MapData, StackKey, u64>,
    pub offcpu_us: PerCpuHashMap<MapData, StackKey, u64>,
}

impl Tables {
    /// Sums of a per-CPU stack table.
    pub fn totals(map: &PerCpuHashMap<MapData, StackKey, u64>) -> Vec<(StackKey, u64)> {
        map.iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k, v.iter().sum()))
            .collect()
    }

    /// Overflows and SYN-ACK retransmits per port, summed over CPUs.
    pub fn listen_counters_of(
        map: &PerCpuHashMap<MapData, u16, ListenCounters>,
    ) -> Vec<(u16, ListenCounters)> {
        map.iter()
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

pub struct Probes {
    // Keeps the programs loaded.
    ebpf: Ebpf,
    /// Owned apart from the programs so that [`Probes::detach`] can drop them
    /// concurrently: a trace event's detach waits for an RCU grace period.
    links: Vec<Box<dyn Send>>,
    traced: Array<MapData, u8>,
    listen_ports: Array<MapData, u8>,
    counters: PerCpuArray<MapData, u64>,
    ring: Option<RingBuf<MapData>>,
    tables: Option<Tables>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub events: u64,
    pub ringbuf_full: u64,
    pub blocked_write_full: u64,
    pub socks_full: u64,
    pub payload_fault: u64,
    pub stack_lost: u64,
    pub stack_table_full: u64,
}

impl Counters {
    /// Records lost: the drops the report must show.
    pub fn dropped(&self) -> u64 {
        self.ringbuf_full
    }
}

fn optional_loss(name: &str) -> Option<&'static str> {
    OPTIONAL
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, loss)| *loss)
}

impl Probes {
    pub fn load(config: Config) -> Result<(Self, Vec<String>)> {
        let mut warnings = Vec::new();
        if !std::path::Path::new(kernel_btf::VMLINUX).exists() {
            kernel_btf::load()?;
        }
        let facts = kernel_btf::facts_via_child()?;
        let btf = Btf::from_sys_fs().context("reading kernel BTF for the BTF tracepoints")?;
        let mut layout = TraceLayout::DEFAULT;
        let field = |group, event, name, default| {
            tracefs::field_offset(group, event, name).unwrap_or(default)
        };
        layout.fork_child_pid = field(
            "sched",
            "sched_process_fork",
            "child_pid",
            layout.fork_child_pid,
        );
        layout.kfree_skb_reason = field("skb", "kfree_skb", "reason", layout.kfree_skb_reason);
        layout.kfree_skb_rx_sk = field("skb", "kfree_skb", "rx_sk", u32::MAX);
        layout.listen_overflow_reason = facts.listen_overflow_reason;
        let off_cpu_enabled = u8::from(config.off_cpu);
        let pid_max = pid_max();
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .map_max_entries("TRACED", pid_max)
            .override_global("WAKEUP_BYTES", &config.wakeup_bytes, true)
            .override_global("LAYOUT", &layout, true)
            .override_global("OFFSETS", &facts.offsets, true)
            .override_global("MIN_BLOCK_NS", &config.min_block_ns, true)
            .override_global("OFF_CPU_ENABLED", &off_cpu_enabled, true)
            .load(OBJECT)
            .context("loading the eBPF object into the kernel")?;

        let mut links: Vec<Box<dyn Send>> = Vec::new();
        let off_cpu: &[(&str, &str)] = if config.off_cpu {
            OFF_CPU_PROGRAMS
        } else {
            &[]
        };
        for (prog_name, function) in BTF_PROGRAMS.iter().chain(off_cpu) {
            let program: &mut BtfTracePoint = program_mut(&mut ebpf, prog_name)?;
            if let Err(e) = program.load(function, &btf) {
                if let Some(loss) = optional_loss(prog_name) {
                    warnings.push(format!("kernel lacks tracepoint {function}: {loss}"));
                    continue;
                }
                return Err(anyhow!(e).context(format!(
                    "loading BTF tracepoint program {prog_name} (needs tracepoint {function})"
                )));
            }
            let id = program
                .attach()
                .with_context(|| format!("attaching to BTF tracepoint {function}"))?;
            links.push(Box::new(program.take_link(id)?));
        }

        for (prog_name, tp) in TRACE_EVENTS {
            let (group, event) = tp
                .split_once('/')
                .ok_or_else(|| anyhow!("bad tracepoint {tp}"))?;
            if *prog_name == "kfree_skb"
                && (layout.listen_overflow_reason == u32::MAX || layout.kfree_skb_rx_sk == u32::MAX)
            {
                warnings.push("this kernel does not name accept-queue overflow drops: overflows are not counted".to_string());
                continue;
            }
            if !tracefs::has_tracepoint(group, event) {
                match optional_loss(tp) {
                    Some(loss) => {
                        warnings.push(format!("kernel lacks tracepoint {tp}: {loss}"));
                        continue;
                    }
                    None => {
                        return Err(tracefs::TracefsError::MissingTracepoint(tp.to_string()).into());
                    }
                }
            }
            let program: &mut TracePoint = program_mut(&mut ebpf, prog_name)?;
            if program.fd().is_err() {
                program
                    .load()
                    .with_context(|| format!("kernel verifier rejected program {prog_name}"))?;
            }
            let id = program
                .attach(group, event)
                .with_context(|| format!("attaching to tracepoint {tp}"))?;
            links.push(Box::new(program.take_link(id)?));
        }

        if config.freq > 0 {
            let program: &mut PerfEvent = program_mut(&mut ebpf, "on_cpu")?;
            program
                .load()
                .context("kernel verifier rejected program on_cpu")?;
            let cpus = online_cpus().map_err(|(path, e)| anyhow!("reading {path}: {e}"))?;
            for cpu in cpus {
                let id = program
                    .attach(
                        PerfEventConfig::Software(SoftwareEvent::CpuClock),
                        PerfEventScope::AllProcessesOneCpu { cpu },
                        SamplePolicy::Frequency(config.freq),
                        false,
                    )
                    .with_context(|| format!("opening the cpu-clock perf event on CPU {cpu}"))?;
                links.push(Box::new(program.take_link(id)?));
            }
        }

        let traced = Array::try_from(take(&mut ebpf, "TRACED")?)?;
        let listen_ports = Array::try_from(take(&mut ebpf, "LISTEN_PORTS")?)?;
        let counters = PerCpuArray::try_from(take(&mut ebpf, "COUNTERS")?)?;
        let ring = Some(RingBuf::try_from(take(&mut ebpf, "EVENTS")?)?);
        let tables = Some(Tables {
            stacks: StackTraceMap::try_from(take(&mut ebpf, "STACKS")?)?,
            listen_counters: PerCpuHashMap::try_from(take(&mut ebpf, "LISTEN_COUNTERS")?)?,
            oncpu: PerCpuHashMap::try_from(take(&mut ebpf, "ONCPU_COUNTS")?)?,
            offcpu_us: PerCpuHashMap::try_from(take(&mut ebpf, "OFFCPU_US")?)?,
        });
        Ok((
            Probes {
                ebpf,
                links,
                traced,
                listen_ports,
                counters,
                ring,
                tables,
            },
            warnings,
        ))
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

    /// What each program cost so far, when the kernel keeps count
    /// (`sysctl kernel.bpf_stats_enabled=1`): (name, runs, ns in total).
    pub fn program_costs(&self) -> Vec<(String, u64, u64)> {
        use std::os::fd::{AsFd, AsRawFd};
        let enabled = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
            .is_ok_and(|s| s.trim() == "1");
        if !enabled {
            return Vec::new();
        }
        self.ebpf
            .programs()
            .filter_map(|(name, p)| {
                let fd = p.fd().ok()?.as_fd().as_raw_fd();
                let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
                let field = |k: &str| {
                    info.lines()
                        .find_map(|l| l.strip_prefix(k))
                        .and_then(|v| v.trim().parse::<u64>().ok())
                };
                Some((name.to_string(), field("run_cnt:")?, field("run_time_ns:")?))
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
        })
    }
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
    use super::*;

    #[test]
    fn only_listed_hooks_are_optional() {
        assert!(optional_loss("sk_data_ready").is_some());
        assert!(optional_loss("sock_recv_length").is_none());
        assert!(optional_loss("sock/inet_sock_set_state").is_none());
        // Every optional hook names one the tracer attaches.
        for (name, _) in OPTIONAL {
            let known = BTF_PROGRAMS.iter().any(|(p, _)| p == name)
                || TRACE_EVENTS.iter().any(|(_, tp)| tp == name);
            assert!(known, "{name} is not attached anywhere");
        }
    }
}
