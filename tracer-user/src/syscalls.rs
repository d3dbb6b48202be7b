//! x86_64 syscall names, for saying what a blocked thread was waiting in.

/// The name of syscall `nr`, for the syscalls a server blocks in.
pub fn name(nr: i64) -> Option<&'static str> {
    Some(match nr {
        0 => "read",
        1 => "write",
        7 => "poll",
        17 => "pread64",
        18 => "pwrite64",
        19 => "readv",
        20 => "writev",
        23 => "select",
        24 => "sched_yield",
        34 => "pause",
        35 => "nanosleep",
        40 => "sendfile",
        42 => "connect",
        43 => "accept",
        44 => "sendto",
        45 => "recvfrom",
        46 => "sendmsg",
        47 => "recvmsg",
        48 => "shutdown",
        61 => "wait4",
        72 => "fcntl",
        73 => "flock",
        74 => "fsync",
        75 => "fdatasync",
        202 => "futex",
        230 => "clock_nanosleep",
        232 => "epoll_wait",
        247 => "waitid",
        257 => "openat",
        270 => "pselect6",
        271 => "ppoll",
        281 => "epoll_pwait",
        288 => "accept4",
        299 => "recvmmsg",
        307 => "sendmmsg",
        3 => "close",
        62 => "kill",
        128 => "rt_sigtimedwait",
        130 => "rt_sigsuspend",
        441 => "epoll_pwait2",
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
