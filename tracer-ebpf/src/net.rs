//! Socket-state and process programs: passive opens on traced listening
//! ports, new listeners, outbound connects, closes, data arrival, forks.
//!
//! Passive opens and data arrival run in softirq context, on behalf of
//! whichever task happened to be on the CPU, so they filter by listening port
//! or by tracked socket, never by the current task. Listen, connect and close
//! run in the caller's context, so they filter by traced process.

use aya_ebpf::{
    helpers::bpf_probe_read_user,
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use tracer_common::{CloseEvent, ForkEvent, SockEvent, SockState, counter, kind, program, syscall};

use crate::{
    listen,
    maps::{LAYOUT, LEAVE_OUT, LISTEN_PORTS, LISTENERS, OFFSETS, SOCKS, TRACED, setting},
    sock,
    util::{
        arg_u64, count, current_syscall, emit, header, is_listen_port, load_field, now, read_field,
        run, traced_current, traced_kind,
    },
};

const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;
const TCP_FIN_WAIT1: i32 = 4;
const TCP_CLOSE: i32 = 7;
const TCP_LAST_ACK: i32 = 9;
const TCP_LISTEN: i32 = 10;
const TCP_CLOSE_WAIT: i32 = 8;

/// Layout of `sock/inet_sock_set_state`.
#[repr(C)]
#[derive(Clone, Copy)]
struct InetSockSetState {
    common: u64,
    skaddr: u64,
    oldstate: i32,
    newstate: i32,
    sport: u16,
    dport: u16,
    family: u16,
    protocol: u16,
    saddr: [u8; 4],
    daddr: [u8; 4],
    saddr_v6: [u8; 16],
    daddr_v6: [u8; 16],
}

const AF_INET: u16 = 2;

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let _run = run(program::INET_SOCK_SET_STATE);
    // SAFETY: the struct mirrors the tracepoint's format.
    let Ok(ev) = (unsafe { ctx.read_at::<InetSockSetState>(0) }) else {
        return 0;
    };
    match (ev.oldstate, ev.newstate) {
        (TCP_SYN_RECV, TCP_ESTABLISHED) => passive_open(&ev),
        (_, TCP_LISTEN) => listen(&ev),
        (_, TCP_SYN_SENT) => connect(&ev),
        // The transitions a process makes by closing or shutting down its
        // end. The peer's FIN and RST arrive in softirq, on behalf of
        // whatever task is current, and make other transitions; only a RST
        // received while established (ESTABLISHED -> CLOSE) looks the same,
        // and then the connection is over either way.
        (TCP_ESTABLISHED | TCP_SYN_RECV, TCP_FIN_WAIT1) | (TCP_CLOSE_WAIT, TCP_LAST_ACK) => {
            closed_by_process(&ev)
        }
        (TCP_ESTABLISHED | TCP_CLOSE_WAIT, TCP_CLOSE) => {
            closed_by_process(&ev);
            let _ = SOCKS.remove(&ev.skaddr);
        }
        (_, TCP_CLOSE) => {
            let _ = SOCKS.remove(&ev.skaddr);
        }
        _ => {}
    }
    0
}

fn sock_event(kind: u8, tgid: u32, tid: u32, ev: &InetSockSetState) -> SockEvent {
    let (mut saddr, mut daddr) = ([0u8; 16], [0u8; 16]);
    if ev.family == AF_INET {
        saddr[..4].copy_from_slice(&ev.saddr);
        daddr[..4].copy_from_slice(&ev.daddr);
    } else {
        saddr = ev.saddr_v6;
        daddr = ev.daddr_v6;
    }
    SockEvent {
        hdr: header(kind, tgid, tid, now()),
        sk: ev.skaddr,
        family: ev.family,
        sport: ev.sport,
        dport: ev.dport,
        _pad: 0,
        saddr,
        daddr,
        backlog: u32::MAX,
        backlog_max: u32::MAX,
        listener_drops: u32::MAX,
        _pad2: 0,
    }
}

/// A child socket of a traced listening port finished its handshake: it now
/// waits in the accept queue.
#[inline(always)]
fn passive_open(ev: &InetSockSetState) {
    if !is_listen_port(ev.sport) {
        return;
    }
    let state = SockState {
        announced: if left_out(ev.skaddr) {
            SockState::LEFT_OUT
        } else {
            0
        },
        inbound: 1,
        ..SockState::default()
    };
    if SOCKS.insert(&ev.skaddr, &state, 0).is_err() {
        count(counter::SOCKS_FULL);
    }
    let mut event = sock_event(kind::ESTABLISHED, 0, 0, ev);
    // The child is in the accept queue already: this is the depth it found.
    // SAFETY: plain value copied out.
    if let Some(&listener) = unsafe { LISTENERS.get(&ev.sport) } {
        (event.backlog, event.backlog_max, event.listener_drops) = listen::backlog(listener);
    }
    emit(&event);
}

/// `listen()` runs in the caller's context: a traced process gains a port.
#[inline(always)]
fn listen(ev: &InetSockSetState) {
    let Some((tgid, tid)) = traced_current() else {
        return;
    };
    let _ = LISTEN_PORTS.set(u32::from(ev.sport), &1, 0);
    listen::remember(ev.sport, ev.skaddr);
    emit(&sock_event(kind::LISTEN, tgid, tid, ev));
}

/// `connect()` of a traced process: an outbound connection, with its fd.
#[inline(always)]
fn connect(ev: &InetSockSetState) {
    let Some((tgid, tid)) = traced_current() else {
        return;
    };
    let (nr, fd, _) = current_syscall();
    let fd = if nr == tracer_common::syscall::CONNECT {
        fd as i32
    } else {
        -1
    };
    emit(&sock::describe(kind::CONNECT, tgid, tid, ev.skaddr, fd));
}

/// A traced process closed or shut down its end (state changes in the
/// caller's context; the peer's FIN or RST arrive in softirq and are not
/// reported here).
#[inline(always)]
fn closed_by_process(ev: &InetSockSetState) {
    let Some((tgid, tid)) = traced_current() else {
        return;
    };
    emit(&CloseEvent {
        hdr: header(kind::CLOSE, tgid, tid, now()),
        sk: ev.skaddr,
    });
}

/// Request bytes reached a socket's receive queue (softirq, or the sender's
/// context on loopback): remember when, for the read that will take them.
/// Only connections on traced listening ports are looked up.
#[btf_tracepoint(function = "sk_data_ready")]
pub fn sk_data_ready(ctx: BtfTracePointContext) -> i32 {
    let _run = run(program::SK_DATA_READY);
    let sk_ptr: *const u8 = ctx.arg(0);
    // SAFETY: a `struct sock *` argument; skc_num is a u16 of sock_common.
    let port: u16 = unsafe { load_field(sk_ptr, setting(&OFFSETS).skc_num) };
    if !is_listen_port(port) {
        return 0;
    }
    let sk = arg_u64(&ctx, 0);
    if let Some(state) = SOCKS.get_ptr_mut(&sk) {
        // SAFETY: map value pointer valid for this program's run.
        unsafe {
            if (*state).ready_ts == 0 {
                (*state).ready_ts = now();
            }
        }
    }
    0
}

/// Child processes of traced processes are traced from their first
/// instruction. New threads need nothing: they are traced by their process.
#[tracepoint]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    let _run = run(program::SCHED_PROCESS_FORK);
    let Some((tgid, tid)) = traced_current() else {
        return 0;
    };
    if creates_thread() {
        return 0;
    }
    // SAFETY: the offset comes from this kernel's tracepoint format.
    let Ok(child) = (unsafe { ctx.read_at::<i32>(setting(&LAYOUT).fork_child_pid as usize) })
    else {
        return 0;
    };
    let child = child as u32;
    if child == tid || child == tgid {
        return 0;
    }
    let _ = TRACED.set(child, &traced_kind(tgid), 0);
    emit(&ForkEvent {
        hdr: header(kind::FORK, tgid, tid, now()),
        child_pid: child,
        _pad: 0,
    });
    0
}

/// Whether the `clone` or `clone3` being made (the caller's syscall) asks
/// for a thread. `fork` and `vfork` never do; an unreadable `clone3`
/// argument counts as a process, which userspace then checks.
#[inline(always)]
fn creates_thread() -> bool {
    let (nr, arg0, _) = current_syscall();
    let flags = match nr {
        syscall::CLONE => arg0,
        // `struct clone_args` begins with the flags.
        // SAFETY: user memory read through the checked helper.
        syscall::CLONE3 => unsafe { bpf_probe_read_user(arg0 as *const u64) }.unwrap_or(0),
        _ => 0,
    };
    flags & syscall::CLONE_THREAD != 0
}

/// Whether the overhead budget leaves this connection out: a hash of the
/// socket's address and its peer's port against the share userspace set,
/// the same for the connection's whole life. (The address alone would not
/// do: the kernel hands a freed socket's memory to the next connection,
/// so a few addresses serve thousands of short connections in turn.)
#[inline(always)]
pub fn left_out(sk: u64) -> bool {
    let share = LEAVE_OUT.get(0).copied().unwrap_or(0);
    if share == 0 {
        return false;
    }
    let peer_port = read_field::<u16>(sk, setting(&OFFSETS).skc_dport).unwrap_or(0);
    let key = (sk >> 6) ^ (u64::from(peer_port) << 40);
    let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    (h % 1000) < u64::from(share)
}
