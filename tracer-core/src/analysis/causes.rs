//! Naming what a blocked handler waited on: the syscall, what it waited on
//! when that was a socket (outbound connection, DNS), and the function that
//! made the call.

use super::diagnose::Waited;
use super::syscall_names;
use crate::{
    aggregate::Cause,
    attribution::{Target, Wait},
    stack::{Frame, StackNames},
};

/// An event loop's wait that this request's own calls do not cover.
pub const EVENT_LOOP: &str = "waiting in the event loop (timer or another task)";

/// `recvfrom on outbound 127.0.0.1:9001 (sock_recv)`, `clock_nanosleep (time_sleep)`,
/// `response from outbound 127.0.0.1:9001`.
pub fn describe(cause: &Cause, leaf_frame: Option<&str>) -> String {
    match cause.syscall {
        Cause::WAIT_RESPONSE => return wait_name(cause.target, Wait::Response),
        Cause::WAIT_CONNECT => return wait_name(cause.target, Wait::Connect),
        _ if *cause == Cause::OTHER => return "other causes".to_string(),
        _ if cause.is_loop_wait() => return EVENT_LOOP.to_string(),
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
    if cause.syscall == Cause::WAIT_GOROUTINE {
        let stack = u32::try_from(cause.user_stack).unwrap_or(u32::MAX);
        let frames = names.goroutine_frames(cause.tgid, stack);
        let reason = names
            .wait_reason(cause.tgid, cause.reason)
            .unwrap_or_else(|| format!("wait reason {}", cause.reason));
        let mut what = goroutine_wait(&reason, &frames);
        if let Some(line) =
            waiter(&frames).and_then(|i| names.goroutine_call_site(cause.tgid, stack, i))
        {
            what.push_str(&format!(" at {line}"));
        }
        return what;
    }
    let leaf = names.user_leaf(cause.tgid, cause.user_stack);
    describe(cause, leaf.as_deref())
}

/// Causes named, identical names merged (two stacks can wait on the same
/// thing), largest first.
pub fn named(causes: &[(Cause, u64)], names: &mut dyn StackNames) -> Vec<Waited> {
    let mut out: Vec<Waited> = Vec::new();
    for (cause, us) in causes {
        let what = name(cause, names);
        match out.iter_mut().find(|w| w.what == what) {
            Some(w) => w.us += us,
            None => out.push(Waited {
                what,
                us: *us,
                goroutine: cause.syscall == Cause::WAIT_GOROUTINE,
            }),
        }
    }
    out.sort_by_key(|w| std::cmp::Reverse(w.us));
    out
}

/// Packages whose frames are the waiting, not the waiter.
const WAIT_PLUMBING: &[&str] = &["runtime.", "internal/", "sync.", "time.", "context."];

/// A goroutine wait for a person: what it waited on (from its wait reason,
/// and its stack where the reason is generic) and in which function of the
/// program: `sync.Mutex.Lock in main.(*Store).Get`, `chan receive in
/// main.handler`, `time.Sleep in main.slow`. `frames` are root first.
pub fn goroutine_wait(reason: &str, frames: &[Frame]) -> String {
    let has = |f: &str| frames.iter().any(|x| x.starts_with(f));
    let what = match reason {
        "semacquire" | "sync.Mutex.Lock" if has("sync.(*Mutex).") => "sync.Mutex.Lock",
        "semacquire" | "sync.RWMutex.RLock" if has("sync.(*RWMutex).RLock") => "sync.RWMutex.RLock",
        "semacquire" | "sync.RWMutex.Lock" if has("sync.(*RWMutex).Lock") => "sync.RWMutex.Lock",
        "semacquire" | "sync.WaitGroup.Wait" if has("sync.(*WaitGroup).Wait") => {
            "sync.WaitGroup.Wait"
        }
        "sleep" => "time.Sleep",
        "GC assist wait" | "GC assist marking" => "GC assist",
        "IO wait" => "network I/O",
        "" => "goroutine wait",
        other => other,
    };
    match waiter(frames) {
        Some(i) => format!("{what} in {}", frames[i]),
        None => what.to_string(),
    }
}

/// The frame (root-first index) of the program's own function that waits:
/// the innermost one outside the runtime's and the standard library's
/// waiting plumbing.
fn waiter(frames: &[Frame]) -> Option<usize> {
    frames
        .iter()
        .rposition(|f| !WAIT_PLUMBING.iter().any(|p| f.starts_with(p)) && !f.is_empty())
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
            reason: 0,
        }
    }

    fn frames(names: &[&str]) -> Vec<Frame> {
        names.iter().map(|n| Frame::from(*n)).collect()
    }

    #[test]
    fn goroutine_waits_read_for_a_person() {
        let serve = [
            "runtime.goexit",
            "net/http.(*conn).serve",
            "net/http.HandlerFunc.ServeHTTP",
        ];
        let mutex = [
            &serve[..],
            &[
                "main.(*Store).Get",
                "sync.(*Mutex).Lock",
                "sync.(*Mutex).lockSlow",
                "sync.runtime_SemacquireMutex",
                "runtime.semacquire1",
                "runtime.gopark",
            ],
        ]
        .concat();
        // Go 1.19 says semacquire; later versions sync.Mutex.Lock.
        for reason in ["semacquire", "sync.Mutex.Lock"] {
            assert_eq!(
                goroutine_wait(reason, &frames(&mutex)),
                "sync.Mutex.Lock in main.(*Store).Get"
            );
        }
        let chan = [
            &serve[..],
            &[
                "main.handler",
                "runtime.chanrecv1",
                "runtime.chanrecv",
                "runtime.gopark",
            ],
        ]
        .concat();
        assert_eq!(
            goroutine_wait("chan receive", &frames(&chan)),
            "chan receive in main.handler"
        );
        let sleep = [
            &serve[..],
            &["main.main.func2", "time.Sleep", "runtime.gopark"],
        ]
        .concat();
        assert_eq!(
            goroutine_wait("sleep", &frames(&sleep)),
            "time.Sleep in main.main.func2"
        );
        let wg = [
            &serve[..],
            &[
                "main.fanOut",
                "sync.(*WaitGroup).Wait",
                "sync.runtime_Semacquire",
                "runtime.semacquire1",
            ],
        ]
        .concat();
        assert_eq!(
            goroutine_wait("semacquire", &frames(&wg)),
            "sync.WaitGroup.Wait in main.fanOut"
        );
        assert_eq!(goroutine_wait("select", &[]), "select");
    }

    #[test]
    fn causes_that_read_the_same_are_merged() {
        struct Leaves;
        impl StackNames for Leaves {
            fn frames(&mut self, _: tracer_common::StackKey) -> Vec<Frame> {
                Vec::new()
            }
            fn user_leaf(&mut self, _: u32, _: i32) -> Option<Frame> {
                Some(Frame::from("__GI___clock_nanosleep"))
            }
            fn goroutine_frames(&mut self, _: u32, _: u32) -> Vec<Frame> {
                Vec::new()
            }
            fn wait_reason(&mut self, _: u32, _: u8) -> Option<String> {
                None
            }
            fn goroutine_call_site(&mut self, _: u32, _: u32, _: usize) -> Option<String> {
                None
            }
        }
        let a = cause(230, Target::None);
        let b = Cause { user_stack: 2, ..a };
        let c = cause(45, Target::None);
        let got = named(&[(a, 360), (c, 500), (b, 325)], &mut Leaves);
        let got: Vec<(&str, u64)> = got.iter().map(|w| (w.what.as_str(), w.us)).collect();
        assert_eq!(
            got,
            vec![
                ("clock_nanosleep (__GI___clock_nanosleep)", 685),
                ("recvfrom (__GI___clock_nanosleep)", 500)
            ]
        );
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
            describe(&cause(232, Target::None), Some("epoll_wait")),
            EVENT_LOOP
        );
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
