//! What a request's time inside its handler went to, as far as the
//! kernel shows it: the serving threads' blocks and samples
//! ([`timeline`]), and waits on the server's own outbound connections
//! ([`exchanges`]). The types both use live here.

pub mod exchanges;
pub mod timeline;

use std::net::SocketAddr;

use tracer_common::syscall;

/// Who does a request's work: a thread, or in Go a goroutine, which moves
/// between threads (the kernel reads it at each socket call, sample and
/// block of a Go program).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Worker {
    Thread(u32),
    /// The goroutine's `g` address.
    Goroutine(u64),
}

impl Worker {
    /// The goroutine `g` if the kernel read one (Go programs), else the thread.
    pub fn of(tid: u32, g: u64) -> Worker {
        if g == 0 {
            Worker::Thread(tid)
        } else {
            Worker::Goroutine(g)
        }
    }
}

impl Default for Worker {
    fn default() -> Self {
        Worker::Thread(0)
    }
}

/// What a blocked thread was waiting on, as far as the kernel showed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// No socket: a sleep, a lock, a pipe, a disk.
    None,
    /// A connection this process opened.
    Outbound(SocketAddr),
    /// A datagram socket talking to port 53.
    Dns(SocketAddr),
    /// One of the server's own client connections.
    Inbound,
}

/// An interval a thread spent blocked.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OffCpu {
    pub start: u64,
    pub end: u64,
    pub tgid: u32,
    pub user_stack: i32,
    pub kernel_stack: i32,
    pub syscall: i64,
    pub target: Target,
    pub waker_tgid: u32,
}

impl OffCpu {
    /// An event loop's wait (epoll): the loop waiting for any of its
    /// sockets and timers, on behalf of all the requests it serves, so not
    /// the cause of any one of them.
    pub fn is_loop_wait(&self) -> bool {
        syscall::is_loop_wait(self.syscall)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub ts: u64,
    pub tgid: u32,
    pub user_stack: i32,
    pub kernel_stack: i32,
}

/// A goroutine the sampler saw waiting, read from the process's memory:
/// it stands for the time since the sampler's previous look at it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoWait {
    pub start: u64,
    pub end: u64,
    pub tgid: u32,
    /// The goroutine's wait reason (`runtime.waitReason`, a per-version value).
    pub reason: u8,
    /// Its stack, interned by whoever read it.
    pub stack: u32,
}

/// What was awaited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Wait {
    /// The connection being established.
    Connect,
    /// An answer to what was sent.
    Response,
}

/// A thread's activity inside a window.
#[derive(Debug, Default)]
pub struct Attribution {
    /// Off-CPU intervals, clipped to the window: (interval, ns inside).
    pub off: Vec<(OffCpu, u64)>,
    pub samples: Vec<Sample>,
    /// Waits on the server's own outbound connections inside the window (ns).
    pub waits: Vec<(Target, Wait, u64)>,
    /// Goroutine waits, clipped to the window and to what the outbound
    /// waits leave (a call's wait is named by its peer): (wait, ns inside).
    pub go_waits: Vec<(GoWait, u64)>,
}
