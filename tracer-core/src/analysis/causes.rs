//! Naming what a blocked handler waited on: the syscall, what it waited on
//! when that was a socket (outbound connection, DNS), and the function that
//! made the call.

use super::syscall_names;
use crate::{
    aggregate::Cause,
    attribution::{Target, Wait},
    stack::StackNames,
};

/// `recvfrom on outbound 127.0.0.1:9001 (sock_recv)`, `clock_nanosleep (time_sleep)`,
/// `response from outbound 127.0.0.1:9001`.
pub fn describe(cause: &Cause, leaf_frame: Option<&str>) -> String {
    match cause.syscall {
        Cause::WAIT_RESPONSE => return wait_name(cause.target, Wait::Response),
        Cause::WAIT_CONNECT => return wait_name(cause.target, Wait::Connect),
        _ if *cause == Cause::OTHER => return "other causes".to_string(),
        _ => {}
    }
    let syscall = syscall_names::name(cause.syscall).map_or_else(
        || {
            if cause.syscall < 0 {
                "no syscall (page fault or preemption in kernel)".to_string()
            } else {
                format!("syscall {}", cause.syscall)
            }
        },
        str::to_string,
    );
    let mut what = match cause.target {
        Target::None => syscall,
        target => format!("{syscall} on {}", target_name(target)),
    };
    if let Some(frame) = leaf_frame.filter(|f| !f.is_empty() && *f != "[unknown]") {
        what.push_str(&format!(" ({frame})"));
    }
    what
}

/// A cause in words, with the function that made the call from its stack.
pub fn name(cause: &Cause, names: &mut dyn StackNames) -> String {
    let leaf = names.user_leaf(cause.tgid, cause.user_stack);
    describe(cause, leaf.as_deref())
}

/// `response from outbound 127.0.0.1:9001`, `connect to DNS 127.0.0.53:53`.
pub fn wait_name(target: Target, wait: Wait) -> String {
    let target = target_name(target);
    match wait {
        Wait::Response => format!("response from {target}"),
        Wait::Connect => format!("connect to {target}"),
    }
}

/// `outbound 127.0.0.1:9001`, `DNS 127.0.0.53:53`, `the client connection`.
pub fn target_name(target: Target) -> String {
    match target {
        Target::Outbound(peer) => format!("outbound {peer}"),
        Target::Dns(peer) => format!("DNS {peer}"),
        Target::Inbound => "the client connection".to_string(),
        Target::None => "nothing in particular".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cause(syscall: i64, target: Target) -> Cause {
        Cause {
            tgid: 1,
            syscall,
            target,
            user_stack: 1,
        }
    }

    #[test]
    fn names_outbound_dns_and_plain_waits() {
        let peer = "127.0.0.1:9001".parse().expect("addr");
        assert_eq!(
            describe(&cause(45, Target::Outbound(peer)), Some("__libc_recv")),
            "recvfrom on outbound 127.0.0.1:9001 (__libc_recv)"
        );
        let dns = "127.0.0.1:53".parse().expect("addr");
        assert_eq!(
            describe(&cause(7, Target::Dns(dns)), None),
            "poll on DNS 127.0.0.1:53"
        );
        assert_eq!(
            describe(&cause(230, Target::None), Some("[unknown]")),
            "clock_nanosleep"
        );
        assert_eq!(describe(&cause(999, Target::None), None), "syscall 999");
        assert_eq!(
            describe(&cause(Cause::WAIT_RESPONSE, Target::Outbound(peer)), None),
            "response from outbound 127.0.0.1:9001"
        );
        assert_eq!(
            describe(&cause(Cause::WAIT_CONNECT, Target::Dns(dns)), Some("x")),
            "connect to DNS 127.0.0.1:53"
        );
    }
}
