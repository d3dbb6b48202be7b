//! Loads the embedded kernel programs, attaches them to their tracepoints,
//! and gives typed access to the maps userspace writes and reads.

use anyhow::{Context, Result, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{TracePoint, trace_point::TracePointLink},
};
use tracer_common::counter;

use crate::tracefs;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

/// Each program and the tracepoints it serves, `group/event`.
const ATTACH: &[(&str, &[&str])] = &[
    ("sys_enter_accept", &["syscalls/sys_enter_accept", "syscalls/sys_enter_accept4"]),
    ("sys_exit_accept", &["syscalls/sys_exit_accept", "syscalls/sys_exit_accept4"]),
    (
        "sys_enter_read",
        &["syscalls/sys_enter_read", "syscalls/sys_enter_readv", "syscalls/sys_enter_recvfrom", "syscalls/sys_enter_recvmsg"],
    ),
    (
        "sys_enter_write",
        &[
            "syscalls/sys_enter_write",
            "syscalls/sys_enter_writev",
            "syscalls/sys_enter_sendto",
            "syscalls/sys_enter_sendmsg",
            "syscalls/sys_enter_sendfile64",
        ],
    ),
    (
        "sys_exit_io",
        &[
            "syscalls/sys_exit_read",
            "syscalls/sys_exit_readv",
            "syscalls/sys_exit_recvfrom",
            "syscalls/sys_exit_recvmsg",
            "syscalls/sys_exit_write",
            "syscalls/sys_exit_writev",
            "syscalls/sys_exit_sendto",
            "syscalls/sys_exit_sendmsg",
            "syscalls/sys_exit_sendfile64",
        ],
    ),
    ("sock_recv_length", &["sock/sock_recv_length"]),
    ("sock_send_length", &["sock/sock_send_length"]),
    ("sys_enter_connect", &["syscalls/sys_enter_connect"]),
    ("sys_exit_connect", &["syscalls/sys_exit_connect"]),
    ("sys_enter_close", &["syscalls/sys_enter_close"]),
    ("inet_sock_set_state", &["sock/inet_sock_set_state"]),
    ("sk_data_ready", &["sock/sk_data_ready"]),
    ("sched_process_fork", &["sched/sched_process_fork"]),
];

/// Tracepoints the tracer can do without, and what is lost without them.
const OPTIONAL: &[(&str, &str)] = &[
    ("sock/sk_data_ready", "read_wait will be 0: this kernel does not report when request bytes arrive"),
    ("sched/sched_process_fork", "children forked while tracing will not be traced"),
];

/// What the loader tells the user about this kernel.
pub struct LoadReport {
    pub warnings: Vec<String>,
}

pub struct Probes {
    // Keeps the programs loaded.
    _ebpf: Ebpf,
    /// Owned apart from the programs so that [`Probes::detach`] can drop them
    /// concurrently: each detach waits for an RCU grace period (~80 ms here).
    links: Vec<TracePointLink>,
    traced: HashMap<MapData, u32, u8>,
    listen_ports: HashMap<MapData, u16, u8>,
    counters: PerCpuArray<MapData, u64>,
    ring: Option<RingBuf<MapData>>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub events: u64,
    pub ringbuf_full: u64,
    pub inflight_full: u64,
    pub socks_full: u64,
    pub payload_fault: u64,
}

impl Counters {
    /// Records lost or syscalls unseen: the drops the report must show.
    pub fn dropped(&self) -> u64 {
        self.ringbuf_full + self.inflight_full
    }
}

impl Probes {
    pub fn load(wakeup_bytes: u64) -> Result<(Self, LoadReport)> {
        let mut warnings = Vec::new();
        let fork_child_off = tracefs::field_offset("sched", "sched_process_fork", "child_pid").unwrap_or(20);
        let mut ebpf = EbpfLoader::new()
            .override_global("WAKEUP_BYTES", &wakeup_bytes, true)
            .override_global("FORK_CHILD_PID_OFFSET", &fork_child_off, true)
            .load(OBJECT)
            .context("loading the eBPF object into the kernel")?;

        let mut links = Vec::new();
        for (prog_name, tracepoints) in ATTACH {
            let program: &mut TracePoint = ebpf
                .program_mut(prog_name)
                .ok_or_else(|| anyhow!("eBPF object lacks program {prog_name}"))?
                .try_into()?;
            program.load().with_context(|| format!("kernel verifier rejected program {prog_name}"))?;
            for tp in *tracepoints {
                let (group, event) = tp.split_once('/').ok_or_else(|| anyhow!("bad tracepoint {tp}"))?;
                if !tracefs::has_tracepoint(group, event) {
                    match OPTIONAL.iter().find(|(name, _)| name == tp) {
                        Some((_, loss)) => {
                            warnings.push(format!("kernel lacks tracepoint {tp}: {loss}"));
                            continue;
                        }
                        None => return Err(tracefs::TracefsError::MissingTracepoint(tp.to_string()).into()),
                    }
                }
                let id = program.attach(group, event).with_context(|| format!("attaching to tracepoint {tp}"))?;
                links.push(program.take_link(id)?);
            }
        }

        let traced = HashMap::try_from(take(&mut ebpf, "TRACED")?)?;
        let listen_ports = HashMap::try_from(take(&mut ebpf, "LISTEN_PORTS")?)?;
        let counters = PerCpuArray::try_from(take(&mut ebpf, "COUNTERS")?)?;
        let ring = Some(RingBuf::try_from(take(&mut ebpf, "EVENTS")?)?);
        Ok((Probes { _ebpf: ebpf, links, traced, listen_ports, counters, ring }, LoadReport { warnings }))
    }

    /// Detaches every program, the grace periods of all links overlapping.
    pub fn detach(self) {
        let Probes { _ebpf, links, .. } = self;
        std::thread::scope(|scope| {
            for link in links {
                scope.spawn(move || drop(link));
            }
        });
    }

    pub fn trace(&mut self, tgid: u32) -> Result<()> {
        self.traced.insert(tgid, 1, 0).with_context(|| format!("adding pid {tgid} to the traced set"))
    }

    pub fn untrace(&mut self, tgid: u32) {
        // Absent already is fine: the kernel may never have had it.
        let _ = self.traced.remove(&tgid);
    }

    pub fn watch_port(&mut self, port: u16) -> Result<()> {
        self.listen_ports.insert(port, 1, 0).with_context(|| format!("watching listening port {port}"))
    }

    /// The ring buffer, handed over once to the reader.
    pub fn take_ring(&mut self) -> Option<RingBuf<MapData>> {
        self.ring.take()
    }

    pub fn counters(&self) -> Result<Counters> {
        let sum = |index: u32| -> Result<u64> {
            Ok(self.counters.get(&index, 0)?.iter().sum())
        };
        Ok(Counters {
            events: sum(counter::EVENTS)?,
            ringbuf_full: sum(counter::RINGBUF_FULL)?,
            inflight_full: sum(counter::INFLIGHT_FULL)?,
            socks_full: sum(counter::SOCKS_FULL)?,
            payload_fault: sum(counter::PAYLOAD_FAULT)?,
        })
    }
}

fn take(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    ebpf.take_map(name).ok_or_else(|| anyhow!("eBPF object lacks map {name}"))
}
