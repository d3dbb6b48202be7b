//! Every kernel program, declared once: how it attaches, which setting turns
//! it on, what the kernel must offer for it, and whether the tracer can do
//! without it (and what is lost then).

/// How a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// A BTF tracepoint (`tp_btf/FUNCTION`): no record is built before the
    /// program runs, which makes them several times cheaper per event than
    /// trace events; the hot paths use them. No tracefs needed.
    BtfTracepoint(&'static str),
    /// A trace event, `GROUP/EVENT` in tracefs: rare events whose record
    /// fields are worth having decoded.
    TraceEvent(&'static str, &'static str),
    /// The `cpu-clock` software perf event, one per CPU, at `--freq` Hz.
    CpuClock,
}

/// The setting that turns a program on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enabled {
    Always,
    /// Off-CPU tracing (`--no-off-cpu` turns it off).
    OffCpu,
    /// On-CPU sampling (`--freq 0` turns it off).
    Sampling,
    /// Following the processes the traced ones fork (`--no-children` turns it off).
    Children,
    /// Only in place of a program whose hook this kernel lacks.
    StandIn,
}

/// What the kernel must offer beyond the hook itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    Hook,
    /// `kfree_skb` must name the drop reason `TCP_LISTEN_OVERFLOW` (BTF) and
    /// carry `rx_sk` (its tracefs format).
    ListenOverflowReason,
}

#[derive(Clone, Copy, Debug)]
pub struct Program {
    /// The program's name in the eBPF object.
    pub name: &'static str,
    pub attach: Attach,
    pub enabled: Enabled,
    pub needs: Needs,
    /// `Some(what is lost)` when the tracer runs without it; `None` when it
    /// cannot trace at all without it.
    pub optional: Option<&'static str>,
    /// The program that does this one's work on kernels without its hook,
    /// and what that costs.
    pub stand_in: Option<(&'static str, &'static str)>,
}

impl Program {
    /// The hook, as a user would look it up: `sock_recv_length`, `sock/inet_sock_set_state`.
    pub fn hook(&self) -> String {
        match self.attach {
            Attach::BtfTracepoint(function) => function.to_string(),
            Attach::TraceEvent(group, event) => format!("{group}/{event}"),
            Attach::CpuClock => "perf cpu-clock".to_string(),
        }
    }
}

const fn btf(name: &'static str, enabled: Enabled, optional: Option<&'static str>) -> Program {
    Program {
        name,
        attach: Attach::BtfTracepoint(name),
        enabled,
        needs: Needs::Hook,
        optional,
        stand_in: None,
    }
}

const fn event(
    name: &'static str,
    group: &'static str,
    event: &'static str,
    optional: Option<&'static str>,
) -> Program {
    Program {
        name,
        attach: Attach::TraceEvent(group, event),
        enabled: Enabled::Always,
        needs: Needs::Hook,
        optional,
        stand_in: None,
    }
}

/// Socket reads and writes, from syscall exits: on kernels before 6.3.
const SYS_EXIT_SOCK_IO: (&str, &str) = (
    "sys_exit_sock_io",
    "socket reads and writes are taken from syscall exits instead, which runs a short filter on every syscall of every process",
);

/// The programs whose work follows traced connections' reads and writes:
/// what leaving connections out saves (the overhead budget steers by them).
pub const PER_CONNECTION: &[&str] = &[
    "sock_recv_length",
    "sock_send_length",
    "sk_data_ready",
    "sys_exit_sock_io",
];

/// In attach order: the hot paths first.
pub const PROGRAMS: &[Program] = &[
    Program {
        stand_in: Some(SYS_EXIT_SOCK_IO),
        ..btf("sock_recv_length", Enabled::Always, None)
    },
    Program {
        stand_in: Some(SYS_EXIT_SOCK_IO),
        ..btf("sock_send_length", Enabled::Always, None)
    },
    btf(
        "sk_data_ready",
        Enabled::Always,
        Some("read_wait will be 0: this kernel does not report when request bytes arrive"),
    ),
    btf("sched_switch", Enabled::OffCpu, None),
    btf("sched_wakeup", Enabled::OffCpu, None),
    event("inet_sock_set_state", "sock", "inet_sock_set_state", None),
    Program {
        enabled: Enabled::Children,
        ..event(
            "sched_process_fork",
            "sched",
            "sched_process_fork",
            Some("children forked while tracing will not be traced"),
        )
    },
    event("sys_exit_accept", "syscalls", "sys_exit_accept", None),
    event("sys_exit_accept", "syscalls", "sys_exit_accept4", None),
    Program {
        needs: Needs::ListenOverflowReason,
        ..event(
            "kfree_skb",
            "skb",
            "kfree_skb",
            Some("final ACKs dropped at a full accept queue will not be counted"),
        )
    },
    event(
        "tcp_retransmit_synack",
        "tcp",
        "tcp_retransmit_synack",
        Some("SYN-ACK retransmits will not be counted"),
    ),
    Program {
        name: "on_cpu",
        attach: Attach::CpuClock,
        enabled: Enabled::Sampling,
        needs: Needs::Hook,
        optional: None,
        stand_in: None,
    },
    Program {
        attach: Attach::BtfTracepoint("sys_exit"),
        ..btf(SYS_EXIT_SOCK_IO.0, Enabled::StandIn, None)
    },
];

/// Hooks to treat as missing, from `TRACER_HOOKS_OFF` (comma-separated, as
/// [`Program::hook`] names them): how a kernel without them is tried on
/// one that has them.
pub fn hooks_off() -> Vec<String> {
    std::env::var("TRACER_HOOKS_OFF")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_program_counts_its_runs_under_its_own_index() {
        let mut declared: Vec<&str> = PROGRAMS.iter().map(|p| p.name).collect();
        let mut counted = tracer_common::program::NAMES.to_vec();
        // One program attaches to both accept exits.
        declared.sort_unstable();
        declared.dedup();
        counted.sort_unstable();
        assert_eq!(declared, counted);
    }

    #[test]
    fn only_rare_or_auxiliary_hooks_are_optional() {
        let optional = |hook: &str| {
            PROGRAMS
                .iter()
                .find(|p| p.hook() == hook)
                .and_then(|p| p.optional)
        };
        assert!(optional("sk_data_ready").is_some());
        assert!(optional("skb/kfree_skb").is_some());
        assert!(optional("sock_recv_length").is_none());
        assert!(optional("sock/inet_sock_set_state").is_none());
        assert!(optional("syscalls/sys_exit_accept4").is_none());
    }

    #[test]
    fn every_stand_in_is_declared_and_attached_only_as_one() {
        for p in PROGRAMS {
            if let Some((name, _)) = p.stand_in {
                let s = PROGRAMS.iter().find(|q| q.name == name);
                assert!(s.is_some_and(|s| s.enabled == Enabled::StandIn), "{name}");
            }
        }
    }

    #[test]
    fn every_hook_is_declared_once() {
        for (i, p) in PROGRAMS.iter().enumerate() {
            assert!(
                PROGRAMS[i + 1..].iter().all(|q| q.hook() != p.hook()),
                "{} declared twice",
                p.hook()
            );
        }
    }
}
