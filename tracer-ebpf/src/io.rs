//! Socket reads and writes of traced processes, and the connections they accept.
//!
//! `sock_recv_length` and `sock_send_length` fire inside every socket
//! read and write, with the socket and the result; the syscall's number and
//! arguments (fd, user buffer) come from the task's saved registers. So only
//! socket I/O costs anything: no hook runs on other syscalls. Calls that
//! would block (EAGAIN) are not emitted: they carry no chain information.
//! Accepts come from the `accept`/`accept4` exit trace events.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_probe_read_user, generated},
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use tracer_common::{
    AcceptEvent, BLOCKED_WRITE_SLOTS, CloseEvent, IoEvent, IoPayloadEvent, PAYLOAD_MAX,
    STATUS_CAPTURE, SockState, counter, dir, errno, kind, program, syscall,
};

use crate::{
    listen,
    maps::{BLOCKED_WRITE, EVENTS, SOCKS},
    net, sock,
    util::{
        arg_u64, count, current_g, current_syscall, emit, header, now, run, submit_flags,
        traced_current,
    },
};

#[btf_tracepoint(function = "sock_recv_length")]
pub fn sock_recv_length(ctx: BtfTracePointContext) -> i32 {
    let _run = run(program::SOCK_RECV_LENGTH);
    on_sock_io(&ctx, dir::READ);
    0
}

#[btf_tracepoint(function = "sock_send_length")]
pub fn sock_send_length(ctx: BtfTracePointContext) -> i32 {
    let _run = run(program::SOCK_SEND_LENGTH);
    on_sock_io(&ctx, dir::WRITE);
    0
}

/// Kernels before 6.3 have no `sock_{recv,send}_length`: the raw syscall
/// exit stands in. It runs on every syscall of every process, so it is
/// attached only where those tracepoints are missing; for a traced
/// process's socket reads and writes it finds the socket behind the fd.
#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit_sock_io(ctx: BtfTracePointContext) -> i32 {
    let _run = run(program::SYS_EXIT_SOCK_IO);
    let Some((tgid, tid)) = traced_current() else {
        return 0;
    };
    let (nr, fd, _) = current_syscall();
    let direction = match nr {
        syscall::READ | syscall::READV | syscall::RECVFROM | syscall::RECVMSG => dir::READ,
        // sendfile's first argument is the socket written to.
        syscall::WRITE
        | syscall::WRITEV
        | syscall::SENDTO
        | syscall::SENDMSG
        | syscall::SENDFILE => dir::WRITE,
        _ => return 0,
    };
    // `sys_exit(struct pt_regs *regs, long ret)`.
    let ret = arg_u64(&ctx, 1) as i64;
    if let Some(sk) = listen::current_fd_socket(fd) {
        sock_io(tgid, tid, sk, ret, direction);
    }
    0
}

/// `sock_{recv,send}_length(struct sock *sk, int ret, int flags)`.
#[inline(always)]
fn on_sock_io(ctx: &BtfTracePointContext, direction: u8) {
    let Some((tgid, tid)) = traced_current() else {
        return;
    };
    let sk = arg_u64(ctx, 0);
    let ret = i64::from(ctx.arg::<i32>(1));
    sock_io(tgid, tid, sk, ret, direction);
}

/// A traced process's completed read or write of socket `sk`.
#[inline(always)]
fn sock_io(tgid: u32, tid: u32, sk: u64, ret: i64, direction: u8) {
    if ret == -errno::EAGAIN {
        return;
    }
    let known = SOCKS.get_ptr_mut(&sk);
    if let Some(state) = known {
        // SAFETY: map value pointer valid for this program's run.
        if unsafe { left_out_now(state, sk, direction, ret, tgid, tid) } {
            return;
        }
    }
    let ts = now();
    let (nr, fd, arg1) = current_syscall();
    let fd = fd as i32;

    let Some(state) = socket_state(known, tgid, tid, sk, fd, ret > 0) else {
        return;
    };
    let enter_ts = if direction == dir::WRITE {
        write_start(tid, fd, ts)
    } else {
        ts
    };
    let (ready_ts, capture, starts_run) = track(state, direction, ret);
    // Whose a response is, is known from its first write: the goroutine
    // of the others is not read (a read of the thread's memory costs
    // more than the rest of the program).
    let g = if direction == dir::READ || starts_run {
        current_g(tgid)
    } else {
        0
    };
    let seq = next_seq(state, direction);
    let io = IoEvent {
        hdr: header(kind::IO, tgid, tid, ts),
        enter_ts,
        sk,
        ready_ts,
        ret,
        fd,
        nr: nr as u32,
        dir: direction,
        protocol: 0,
        payload_len: 0,
        seq,
        _pad: 0,
        g,
    };
    if capture > 0 {
        if let Some(src) = payload_source(nr, arg1) {
            emit_with_payload(io, src, capture);
            return;
        }
    }
    emit(&io);
}

/// The overhead budget's choice for an inbound connection, made afresh at
/// each request's first read: a request is traced whole or not at all, and
/// the connections traced are those the current share picks (by a hash of
/// the socket), new or not. Returns whether this call is left out.
///
/// # Safety
/// `state` must be a map value pointer valid for this program's run.
#[inline(always)]
unsafe fn left_out_now(
    state: *mut SockState,
    sk: u64,
    direction: u8,
    ret: i64,
    tgid: u32,
    tid: u32,
) -> bool {
    // SAFETY: the caller's guarantee.
    unsafe {
        if (*state).inbound == 0 {
            return false;
        }
        let was_out = (*state).announced == SockState::LEFT_OUT;
        if direction == dir::READ && ret > 0 && (*state).last_dir != dir::READ {
            let out = net::left_out(sk);
            if out {
                count(counter::LEFT_OUT_REQUESTS);
            }
            if out && !was_out {
                (*state).announced = SockState::LEFT_OUT;
                emit(&CloseEvent {
                    hdr: header(kind::LEFT_OUT, tgid, tid, now()),
                    sk,
                });
            } else if !out && was_out {
                // Traced again from this request: announced below, as one
                // userspace knew if it did.
                (*state).announced = if (*state).inbound == SockState::INBOUND_ANNOUNCED {
                    SockState::TAKEN_UP_AGAIN
                } else {
                    0
                };
                return false;
            }
        }
        if (*state).announced != SockState::LEFT_OUT {
            return false;
        }
        if ret > 0 {
            (*state).last_dir = direction;
        }
        true
    }
}

/// The socket's kernel-side state; the first use by a traced process
/// creates it (or marks it) and tells userspace the socket's addresses.
/// Only a use that moved bytes (or an accept) creates it: an EOF or an
/// error on a socket never seen is the tail of a connection whose state
/// went with its close, and would otherwise read as a new connection.
#[inline(always)]
fn socket_state(
    known: Option<*mut SockState>,
    tgid: u32,
    tid: u32,
    sk: u64,
    fd: i32,
    create: bool,
) -> Option<*mut SockState> {
    if let Some(state) = known {
        // SAFETY: map value pointer valid for this program's run.
        unsafe {
            let announced = (*state).announced;
            if announced == 0 || announced == SockState::TAKEN_UP_AGAIN {
                (*state).announced = 1;
                if (*state).inbound != 0 {
                    (*state).inbound = SockState::INBOUND_ANNOUNCED;
                }
                let mut event = sock::describe(kind::SOCKET, tgid, tid, sk, fd);
                event.again = u8::from(announced == SockState::TAKEN_UP_AGAIN);
                emit(&event);
            }
        }
        return Some(state);
    }
    if !create {
        return None;
    }
    let fresh = SockState {
        announced: 1,
        ..SockState::default()
    };
    if SOCKS.insert(&sk, &fresh, 0).is_err() {
        count(counter::SOCKS_FULL);
        return None;
    }
    emit(&sock::describe(kind::SOCKET, tgid, tid, sk, fd));
    SOCKS.get_ptr_mut(&sk)
}

/// When the write that just completed started: if the thread blocked inside
/// it (a full send buffer), the moment it first blocked; else now.
#[inline(always)]
fn write_start(tid: u32, fd: i32, ts: u64) -> u64 {
    let Some(slot) = BLOCKED_WRITE.get_ptr_mut(tid % BLOCKED_WRITE_SLOTS) else {
        return ts;
    };
    // SAFETY: array slot, valid for this program's run.
    unsafe {
        if (*slot).tid != tid || (*slot).ts == 0 {
            return ts;
        }
        let start = (*slot).ts;
        (*slot).ts = 0;
        if (*slot).fd == fd && start < ts {
            start
        } else {
            ts
        }
    }
}

/// Counts a read or write of the socket, reported or lost alike: userspace
/// sees a gap in a direction's sequence when records were lost.
#[inline(always)]
fn next_seq(sock: *mut SockState, direction: u8) -> u16 {
    // SAFETY: map value pointer valid for this program's run.
    unsafe {
        let seq = if direction == dir::READ {
            &mut (*sock).read_seq
        } else {
            &mut (*sock).write_seq
        };
        *seq = seq.wrapping_add(1);
        *seq
    }
}

/// Updates the socket's state for a completed read or write. Returns when
/// bytes last became readable (reads only), how many payload bytes of
/// this call to capture (the first bytes of each run of reads, a request's
/// head, or of writes, a response's status), and whether it starts a run.
#[inline(always)]
fn track(sock: *mut SockState, direction: u8, ret: i64) -> (u64, u64, bool) {
    if ret <= 0 {
        return (0, 0, false);
    }
    // SAFETY: map value pointer valid for this program's run; races with
    // sk_data_ready only blur a timestamp, never memory safety.
    unsafe {
        let mut ready_ts = 0;
        let mut limit = STATUS_CAPTURE as u64;
        if direction == dir::READ {
            ready_ts = (*sock).ready_ts;
            (*sock).ready_ts = 0;
            limit = PAYLOAD_MAX as u64;
        }
        let starts_run = (*sock).last_dir != direction;
        if starts_run {
            (*sock).last_dir = direction;
            (*sock).captured = 0;
        }
        let len = capture_len(u64::from((*sock).captured), ret, limit);
        (*sock).captured += len as u16;
        (ready_ts, len, starts_run)
    }
}

/// Bytes still to capture in a run that has `captured` of its `limit`, from a call that moved `ret`.
#[inline(always)]
fn capture_len(captured: u64, ret: i64, limit: u64) -> u64 {
    if captured >= limit {
        return 0;
    }
    let room = limit - captured;
    if (ret as u64) < room {
        ret as u64
    } else {
        room
    }
}

/// Where the syscall's first user buffer starts, and how long it is.
#[inline(always)]
fn payload_source(nr: i64, arg1: u64) -> Option<(u64, u64)> {
    match nr {
        syscall::READ | syscall::WRITE | syscall::RECVFROM | syscall::SENDTO => {
            Some((arg1, u64::MAX))
        }
        syscall::READV | syscall::WRITEV => first_iovec(arg1),
        syscall::RECVMSG | syscall::SENDMSG => {
            // `struct msghdr`: msg_iov is at offset 16 on 64-bit.
            // SAFETY: user memory read through the checked helper.
            let iov = unsafe { bpf_probe_read_user((arg1 + 16) as *const u64) }.ok()?;
            first_iovec(iov)
        }
        _ => None,
    }
}

#[inline(always)]
fn first_iovec(iov: u64) -> Option<(u64, u64)> {
    // SAFETY: user memory read through the checked helper; `struct iovec` is {base, len}.
    let v = unsafe { bpf_probe_read_user(iov as *const [u64; 2]) }.ok()?;
    Some((v[0], v[1]))
}

/// Sends `io` with `want` bytes from the user buffer `src`, in the
/// smallest record that holds them.
#[inline(always)]
fn emit_with_payload(io: IoEvent, (src, src_len): (u64, u64), want: u64) {
    let len = if src_len < want { src_len } else { want };
    if len == 0 || len > PAYLOAD_MAX as u64 {
        emit(&io);
    } else if len <= STATUS_CAPTURE as u64 {
        emit_sized::<STATUS_CAPTURE>(io, src, len);
    } else if len <= 64 {
        emit_sized::<64>(io, src, len);
    } else {
        emit_sized::<PAYLOAD_MAX>(io, src, len);
    }
}

/// `len` is within 1..=N, N a power of two.
#[inline(always)]
fn emit_sized<const N: usize>(io: IoEvent, src: u64, len: u64) {
    let Some(mut entry) = EVENTS.reserve::<IoPayloadEvent<N>>(0) else {
        count(counter::RINGBUF_FULL);
        return;
    };
    // Older verifiers (6.1's) lose the caller's bound once the compiler
    // has folded it into a min(); a volatile reload stops the folding and
    // the mask restates 1..=N in a form every verifier tracks.
    // SAFETY: reading a local.
    let len = unsafe { core::ptr::read_volatile(&len) };
    let len = ((len - 1) & (N as u64 - 1)) + 1;
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points to reserved ring-buffer memory of the right size;
    // `len` is within 1..=N, the size of the destination.
    unsafe {
        let got = generated::bpf_probe_read_user(
            (*record).payload.as_mut_ptr() as *mut c_void,
            len as u32,
            src as *const c_void,
        );
        let mut io = io;
        io.hdr.kind = kind::IO_PAYLOAD;
        if got == 0 {
            io.payload_len = len as u16;
        } else {
            count(counter::PAYLOAD_FAULT);
        }
        core::ptr::write(&raw mut (*record).io, io);
    }
    entry.submit(submit_flags());
    count(counter::EVENTS);
}

/// `syscalls/sys_exit_accept` and `sys_exit_accept4`: `ret` at offset 16.
/// The listening fd is still in the task's saved registers: its socket gives
/// the port and the accept queue left behind. The new connection is
/// announced at once, so one that never sends a byte is still seen.
#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    let _run = run(program::SYS_EXIT_ACCEPT);
    let Some((tgid, tid)) = traced_current() else {
        return 0;
    };
    // SAFETY: offset of `ret` in every sys_exit record.
    let Ok(ret) = (unsafe { ctx.read_at::<i64>(16) }) else {
        return 0;
    };
    if ret < 0 {
        return 0;
    }
    let (_, listen_fd, _) = current_syscall();
    let sk = listen::current_fd_socket(ret as u64);
    let known = sk.and_then(|sk| SOCKS.get_ptr_mut(&sk));
    // SAFETY: map value pointer valid for this program's run.
    let left_out = known.is_some_and(|s| unsafe { (*s).announced } == SockState::LEFT_OUT);
    let (mut port, mut backlog, mut backlog_max, mut listener_drops) =
        (0, u32::MAX, u32::MAX, u32::MAX);
    if let Some(listener) = listen::current_fd_socket(listen_fd).map(listen::tcp_listener) {
        port = sock::local_port(listener);
        listen::remember(port, listener);
        (backlog, backlog_max, listener_drops) = listen::backlog(listener);
    }
    emit(&AcceptEvent {
        hdr: header(kind::ACCEPT, tgid, tid, now()),
        fd: ret as i32,
        port,
        left_out: u8::from(left_out),
        _pad: 0,
        backlog,
        backlog_max,
        listener_drops,
        _pad2: 0,
    });
    if let (Some(sk), false) = (sk, left_out) {
        let _ = socket_state(known, tgid, tid, sk, ret as i32, true);
    }
    0
}
