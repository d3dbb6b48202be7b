//! x86_64 syscall numbers, for the kernel programs (which syscall a socket
//! call or a block happened in) and userspace (naming it).

pub const READ: i64 = 0;
pub const WRITE: i64 = 1;
pub const CLOSE: i64 = 3;
pub const POLL: i64 = 7;
pub const PREAD64: i64 = 17;
pub const PWRITE64: i64 = 18;
pub const READV: i64 = 19;
pub const WRITEV: i64 = 20;
pub const SELECT: i64 = 23;
pub const SCHED_YIELD: i64 = 24;
pub const PAUSE: i64 = 34;
pub const NANOSLEEP: i64 = 35;
pub const SENDFILE: i64 = 40;
pub const CONNECT: i64 = 42;
pub const ACCEPT: i64 = 43;
pub const SENDTO: i64 = 44;
pub const RECVFROM: i64 = 45;
pub const SENDMSG: i64 = 46;
pub const RECVMSG: i64 = 47;
pub const SHUTDOWN: i64 = 48;
pub const CLONE: i64 = 56;
pub const WAIT4: i64 = 61;
pub const KILL: i64 = 62;
pub const FCNTL: i64 = 72;
pub const FLOCK: i64 = 73;
pub const FSYNC: i64 = 74;
pub const FDATASYNC: i64 = 75;
pub const RT_SIGTIMEDWAIT: i64 = 128;
pub const RT_SIGSUSPEND: i64 = 130;
pub const FUTEX: i64 = 202;
pub const CLOCK_NANOSLEEP: i64 = 230;
pub const EPOLL_WAIT: i64 = 232;
pub const WAITID: i64 = 247;
pub const OPENAT: i64 = 257;
pub const PSELECT6: i64 = 270;
pub const PPOLL: i64 = 271;
pub const EPOLL_PWAIT: i64 = 281;
pub const ACCEPT4: i64 = 288;
pub const RECVMMSG: i64 = 299;
pub const SENDMMSG: i64 = 307;
pub const CLONE3: i64 = 435;
pub const EPOLL_PWAIT2: i64 = 441;

/// `clone` flag: the child is a thread of the caller's process.
pub const CLONE_THREAD: u64 = 0x0001_0000;

/// Whether `nr` is an event loop's wait for any of its sockets and timers.
pub fn is_loop_wait(nr: i64) -> bool {
    matches!(nr, EPOLL_WAIT | EPOLL_PWAIT | EPOLL_PWAIT2)
}
