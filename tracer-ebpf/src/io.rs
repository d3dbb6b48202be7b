//! Syscall programs: accept, socket reads and writes, connect, close.
//!
//! Enter programs remember the arguments per thread; `sock_recv_length` and
//! `sock_send_length`, which fire inside the syscall, name the socket; exit
//! programs emit a record only for syscalls that touched a socket. Reads that
//! would block (EAGAIN) are not emitted: they carry no chain information.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_probe_read_user, generated},
    macros::tracepoint,
    programs::TracePointContext,
};
use tracer_common::{
    AcceptEvent, CloseEvent, ConnectEvent, InFlight, IoEvent, IoPayloadEvent, PAYLOAD_MAX,
    SockState, counter, dir, kind,
};

use crate::{
    maps::{EVENTS, FD_SOCK, INFLIGHT, SOCKS},
    util::{count, emit, header, now, submit_flags, traced_current},
};

const EAGAIN: i64 = 11;
const EINPROGRESS: i32 = 115;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

// x86_64 syscall numbers whose buffer arguments are decoded for payload.
const NR_READ: u32 = 0;
const NR_WRITE: u32 = 1;
const NR_READV: u32 = 19;
const NR_WRITEV: u32 = 20;
const NR_SENDTO: u32 = 44;
const NR_RECVFROM: u32 = 45;
const NR_SENDMSG: u32 = 46;
const NR_RECVMSG: u32 = 47;

// Offsets in the `syscalls/sys_enter_*` and `sys_exit_*` tracepoint records.
const OFF_NR: usize = 8;
const OFF_ARG0: usize = 16;
const OFF_ARG1: usize = 24;
const OFF_RET: usize = 16;

/// Records the syscall's fd and second argument for its exit program.
#[inline(always)]
fn enter(ctx: &TracePointContext, direction: u8) {
    let Some((_, tid)) = traced_current() else { return };
    // SAFETY: offsets of the syscall tracepoint format, stable across kernels.
    let (nr, fd, arg1) = unsafe {
        (
            ctx.read_at::<i32>(OFF_NR).unwrap_or(-1),
            ctx.read_at::<u64>(OFF_ARG0).unwrap_or(u64::MAX),
            ctx.read_at::<u64>(OFF_ARG1).unwrap_or(0),
        )
    };
    let state = InFlight {
        enter_ts: now(),
        arg1,
        sk: 0,
        fd: fd as i32,
        nr: nr as u32,
        dir: direction,
        protocol: 0,
        _pad: [0; 6],
    };
    if INFLIGHT.insert(&tid, &state, 0).is_err() {
        count(counter::INFLIGHT_FULL);
    }
}

/// Removes and returns the thread's in-flight syscall with the syscall's return value.
#[inline(always)]
fn exit(ctx: &TracePointContext) -> Option<(u32, u32, InFlight, i64)> {
    let (tgid, tid) = traced_current()?;
    // SAFETY: plain value copied out before removal.
    let state = unsafe { *INFLIGHT.get(&tid)? };
    let _ = INFLIGHT.remove(&tid);
    // SAFETY: offset of `ret` in every sys_exit record.
    let ret = unsafe { ctx.read_at::<i64>(OFF_RET) }.ok()?;
    Some((tgid, tid, state, ret))
}

#[tracepoint]
pub fn sys_enter_accept(ctx: TracePointContext) -> u32 {
    enter(&ctx, 0);
    0
}

#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    let Some((tgid, tid, state, ret)) = exit(&ctx) else { return 0 };
    if ret < 0 {
        return 0;
    }
    emit(&AcceptEvent {
        hdr: header(kind::ACCEPT, tgid, tid, now()),
        enter_ts: state.enter_ts,
        listen_fd: state.fd,
        fd: ret as i32,
    });
    0
}

#[tracepoint]
pub fn sys_enter_read(ctx: TracePointContext) -> u32 {
    enter(&ctx, dir::READ);
    0
}

#[tracepoint]
pub fn sys_enter_write(ctx: TracePointContext) -> u32 {
    enter(&ctx, dir::WRITE);
    0
}

/// Names the socket of the thread's in-flight read or write.
#[inline(always)]
fn note_socket(ctx: &TracePointContext) {
    let Some((_, tid)) = traced_current() else { return };
    let Some(state) = INFLIGHT.get_ptr_mut(&tid) else { return };
    // SAFETY: offsets of the sock/sock_{recv,send}_length format; the map
    // value belongs to this thread, which is inside the syscall.
    unsafe {
        let sk = ctx.read_at::<u64>(8).unwrap_or(0);
        let protocol = ctx.read_at::<u16>(18).unwrap_or(0);
        (*state).sk = sk;
        (*state).protocol = protocol as u8;
    }
}

#[tracepoint]
pub fn sock_recv_length(ctx: TracePointContext) -> u32 {
    note_socket(&ctx);
    0
}

#[tracepoint]
pub fn sock_send_length(ctx: TracePointContext) -> u32 {
    note_socket(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_io(ctx: TracePointContext) -> u32 {
    let Some((tgid, tid, state, ret)) = exit(&ctx) else { return 0 };
    if state.sk == 0 || ret == -EAGAIN {
        return 0;
    }
    let fd_key = (u64::from(tgid) << 32) | u64::from(state.fd as u32);
    if FD_SOCK.insert(&fd_key, &state.sk, 0).is_err() {
        count(counter::SOCKS_FULL);
    }

    let (ready_ts, capture) = track_socket(state.sk, state.dir, ret);
    let io = IoEvent {
        hdr: header(kind::IO, tgid, tid, now()),
        enter_ts: state.enter_ts,
        sk: state.sk,
        ready_ts,
        ret,
        fd: state.fd,
        nr: state.nr,
        dir: state.dir,
        protocol: state.protocol,
        payload_len: 0,
        _pad: 0,
    };
    if capture > 0 {
        if let Some(src) = payload_source(&state) {
            emit_with_payload(io, src, capture);
            return 0;
        }
    }
    emit(&io);
    0
}

/// Updates the socket's state for a completed read or write. Returns when
/// bytes last became readable (reads only) and how many payload bytes of
/// this call to capture: the first bytes of each run of reads or writes.
#[inline(always)]
fn track_socket(sk: u64, direction: u8, ret: i64) -> (u64, u64) {
    let Some(sock) = SOCKS.get_ptr_mut(&sk) else {
        let mut fresh = SockState::default();
        if ret > 0 {
            fresh.last_dir = direction;
            fresh.captured = capture_len(0, ret) as u16;
        }
        if SOCKS.insert(&sk, &fresh, 0).is_err() {
            count(counter::SOCKS_FULL);
        }
        return (0, u64::from(fresh.captured));
    };
    if ret <= 0 {
        return (0, 0);
    }
    // SAFETY: map value pointer valid for this program's run; races with
    // sk_data_ready only blur a timestamp, never memory safety.
    unsafe {
        let mut ready_ts = 0;
        if direction == dir::READ {
            ready_ts = (*sock).ready_ts;
            (*sock).ready_ts = 0;
        }
        if (*sock).last_dir != direction {
            (*sock).last_dir = direction;
            (*sock).captured = 0;
        }
        let len = capture_len(u64::from((*sock).captured), ret);
        (*sock).captured += len as u16;
        (ready_ts, len)
    }
}

/// Bytes still to capture in a run that has `captured` of them, from a call that moved `ret`.
#[inline(always)]
fn capture_len(captured: u64, ret: i64) -> u64 {
    if captured >= PAYLOAD_MAX as u64 {
        return 0;
    }
    let room = PAYLOAD_MAX as u64 - captured;
    if (ret as u64) < room { ret as u64 } else { room }
}

/// Where the syscall's first user buffer starts, and how long it is.
#[inline(always)]
fn payload_source(state: &InFlight) -> Option<(u64, u64)> {
    match state.nr {
        NR_READ | NR_WRITE | NR_RECVFROM | NR_SENDTO => Some((state.arg1, u64::MAX)),
        NR_READV | NR_WRITEV => first_iovec(state.arg1),
        NR_RECVMSG | NR_SENDMSG => {
            // `struct msghdr`: msg_iov is at offset 16 on 64-bit.
            // SAFETY: user memory read through the checked helper.
            let iov = unsafe { bpf_probe_read_user((state.arg1 + 16) as *const u64) }.ok()?;
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

#[inline(always)]
fn emit_with_payload(io: IoEvent, (src, src_len): (u64, u64), want: u64) {
    let len = if src_len < want { src_len } else { want };
    if len == 0 || len > PAYLOAD_MAX as u64 {
        emit(&io);
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<IoPayloadEvent>(0) else {
        count(counter::RINGBUF_FULL);
        return;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points to reserved ring-buffer memory of the right size;
    // `len` is within 1..=PAYLOAD_MAX, the size of the destination.
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

#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    enter(&ctx, 0);
    0
}

#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    let Some((tgid, tid, state, ret)) = exit(&ctx) else { return 0 };
    let ret = ret as i32;
    if ret != 0 && ret != -EINPROGRESS {
        return 0;
    }
    // SAFETY: user memory read through the checked helper; `struct sockaddr_in`
    // and `sockaddr_in6` both start with family and port.
    let Ok(head) = (unsafe { bpf_probe_read_user(state.arg1 as *const [u16; 2]) }) else {
        return 0;
    };
    let family = head[0];
    let mut addr = [0u8; 16];
    let read = match family {
        // sin_addr at offset 4, sin6_addr at offset 8.
        AF_INET => unsafe { bpf_probe_read_user((state.arg1 + 4) as *const [u8; 4]) }
            .map(|a| addr[..4].copy_from_slice(&a)),
        AF_INET6 => unsafe { bpf_probe_read_user((state.arg1 + 8) as *const [u8; 16]) }
            .map(|a| addr = a),
        _ => return 0,
    };
    if read.is_err() {
        return 0;
    }
    emit(&ConnectEvent {
        hdr: header(kind::CONNECT, tgid, tid, now()),
        enter_ts: state.enter_ts,
        ret,
        fd: state.fd,
        family,
        port: u16::from_be(head[1]),
        _pad: 0,
        addr,
    });
    0
}

#[tracepoint]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    let Some((tgid, tid)) = traced_current() else { return 0 };
    // SAFETY: offset of the fd argument in sys_enter_close.
    let Ok(fd) = (unsafe { ctx.read_at::<u64>(OFF_ARG0) }) else { return 0 };
    let key = (u64::from(tgid) << 32) | (fd & 0xffff_ffff);
    // SAFETY: plain value copied out before removal.
    let Some(sk) = (unsafe { FD_SOCK.get(&key) }).copied() else { return 0 };
    let _ = FD_SOCK.remove(&key);
    emit(&CloseEvent { hdr: header(kind::CLOSE, tgid, tid, now()), sk, fd: fd as i32, _pad: 0 });
    0
}
