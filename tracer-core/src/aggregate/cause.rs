//! Causes: one thing a request's handler waited on, the key under which
//! blocked time is summed per route and per slow request.

use tracer_common::syscall;

use crate::attribution::{GoWait, Target, Wait};

/// One thing a request's handler waited on: named at report time, once the
/// stacks are symbolized. `syscall` is the one the serving thread blocked in,
/// or one of the `WAIT_*` values for waits seen on the server's own
/// outbound connections and for goroutine waits (then `user_stack` is the
/// goroutine's stack and `reason` its wait reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cause {
    pub tgid: u32,
    pub syscall: i64,
    pub target: Target,
    pub user_stack: i32,
    pub reason: u8,
}

impl Cause {
    /// Waiting for an answer on an outbound connection.
    pub const WAIT_RESPONSE: i64 = -2;
    /// Waiting for an outbound connection to be established.
    pub const WAIT_CONNECT: i64 = -3;
    /// A goroutine parked by the Go runtime (a lock, a channel, a sleep).
    pub const WAIT_GOROUTINE: i64 = -5;
    /// Causes beyond what a route keeps apart.
    pub const OTHER: Cause = Cause {
        tgid: 0,
        syscall: -4,
        target: Target::None,
        user_stack: -1,
        reason: 0,
    };

    /// An event loop's wait ([`crate::attribution::OffCpu::is_loop_wait`]).
    pub fn is_loop_wait(&self) -> bool {
        self.target == Target::None && syscall::is_loop_wait(self.syscall)
    }

    pub fn wait(tgid: u32, target: Target, wait: Wait) -> Cause {
        let syscall = match wait {
            Wait::Response => Cause::WAIT_RESPONSE,
            Wait::Connect => Cause::WAIT_CONNECT,
        };
        Cause {
            tgid,
            syscall,
            target,
            user_stack: -1,
            reason: 0,
        }
    }

    pub fn goroutine(wait: &GoWait) -> Cause {
        Cause {
            tgid: wait.tgid,
            syscall: Cause::WAIT_GOROUTINE,
            target: Target::None,
            user_stack: wait.stack as i32,
            reason: wait.reason,
        }
    }
}
