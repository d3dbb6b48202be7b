//! Naming what a blocked handler waited on: the syscall, what it waited on
//! when that was a socket (outbound connection, DNS), and the function that
//! made the call.

use crate::{stats::Cause, syscalls, timeline::Target};

/// `recvfrom on outbound 127.0.0.1:9001 (sock_recv)`, `clock_nanosleep (time_sleep)`.
pub fn describe(cause: &Cause, leaf_frame: Option<&str>) -> String {
    let syscall = syscalls::name(cause.syscall).map(str::to_string).unwrap_or_else(|| {
        if cause.syscall < 0 { "no syscall (page fault or preemption in kernel)".to_string() } else { format!("syscall {}", cause.syscall) }
    });
    let mut what = match cause.target {
        Target::Outbound(peer) => format!("{syscall} on outbound {peer}"),
        Target::Dns(peer) => format!("{syscall} on DNS {peer}"),
        Target::Inbound => format!("{syscall} on the client connection"),
        Target::None => syscall,
    };
    if let Some(frame) = leaf_frame.filter(|f| !f.is_empty() && *f != "[unknown]") {
        what.push_str(&format!(" ({frame})"));
    }
    what
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cause(syscall: i64, target: Target) -> Cause {
        Cause { tgid: 1, syscall, target, user_stack: 1 }
    }

    #[test]
    fn names_outbound_dns_and_plain_waits() {
        let peer = "127.0.0.1:9001".parse().expect("addr");
        assert_eq!(describe(&cause(45, Target::Outbound(peer)), Some("__libc_recv")), "recvfrom on outbound 127.0.0.1:9001 (__libc_recv)");
        let dns = "127.0.0.1:53".parse().expect("addr");
        assert_eq!(describe(&cause(7, Target::Dns(dns)), None), "poll on DNS 127.0.0.1:53");
        assert_eq!(describe(&cause(230, Target::None), Some("[unknown]")), "clock_nanosleep");
        assert_eq!(describe(&cause(999, Target::None), None), "syscall 999");
    }
}
