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
    }
}

/// The programs whose work follows traced connections' reads and writes:
/// what leaving connections out saves (the overhead budget steers by them).
pub const PER_CONNECTION: &[&str] = &["sock_recv_length", "sock_send_length", "sk_data_ready"];

/// In attach order: the hot paths first.
pub const PROGRAMS: &[Program] = &[
    btf("sock_recv_length", Enabled::Always, None),
    btf("sock_send_length", Enabled::Always, None),
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
    },
];

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
