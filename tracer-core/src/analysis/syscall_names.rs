//! x86_64 syscall names, for saying what a blocked thread was waiting in.

use tracer_common::syscall as sys;

/// The name of syscall `nr`, for the syscalls a server blocks in.
pub fn name(nr: i64) -> Option<&'static str> {
    Some(match nr {
        sys::READ => "read",
        sys::WRITE => "write",
        sys::POLL => "poll",
        sys::PREAD64 => "pread64",
        sys::PWRITE64 => "pwrite64",
        sys::READV => "readv",
        sys::WRITEV => "writev",
        sys::SELECT => "select",
        sys::SCHED_YIELD => "sched_yield",
        sys::PAUSE => "pause",
        sys::NANOSLEEP => "nanosleep",
        sys::SENDFILE => "sendfile",
        sys::CONNECT => "connect",
        sys::ACCEPT => "accept",
        sys::SENDTO => "sendto",
        sys::RECVFROM => "recvfrom",
        sys::SENDMSG => "sendmsg",
        sys::RECVMSG => "recvmsg",
        sys::SHUTDOWN => "shutdown",
        sys::WAIT4 => "wait4",
        sys::FCNTL => "fcntl",
        sys::FLOCK => "flock",
        sys::FSYNC => "fsync",
        sys::FDATASYNC => "fdatasync",
        sys::FUTEX => "futex",
        sys::CLOCK_NANOSLEEP => "clock_nanosleep",
        sys::EPOLL_WAIT => "epoll_wait",
        sys::WAITID => "waitid",
        sys::OPENAT => "openat",
        sys::PSELECT6 => "pselect6",
        sys::PPOLL => "ppoll",
        sys::EPOLL_PWAIT => "epoll_pwait",
        sys::ACCEPT4 => "accept4",
        sys::RECVMMSG => "recvmmsg",
        sys::SENDMMSG => "sendmmsg",
        sys::CLOSE => "close",
        sys::KILL => "kill",
        sys::RT_SIGTIMEDWAIT => "rt_sigtimedwait",
        sys::RT_SIGSUSPEND => "rt_sigsuspend",
        sys::EPOLL_PWAIT2 => "epoll_pwait2",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_usual_blockers() {
        assert_eq!(name(230), Some("clock_nanosleep"));
        assert_eq!(name(202), Some("futex"));
        assert_eq!(name(45), Some("recvfrom"));
        assert_eq!(name(-1), None);
    }
}
