//! Socket-state and process programs: passive opens on traced listening
//! ports, new listeners, data arrival, socket teardown, forks.
//!
//! Passive opens and data arrival run in softirq context, on behalf of
//! whichever task happened to be on the CPU, so they filter by listening port
//! or by tracked socket, never by the current task.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{ForkEvent, SockEvent, SockState, counter, kind};

use crate::{
    maps::{FORK_CHILD_PID_OFFSET, LISTEN_PORTS, SOCKS, TRACED},
    util::{count, emit, header, now, traced_current},
};

const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_RECV: i32 = 3;
const TCP_CLOSE: i32 = 7;
const TCP_LISTEN: i32 = 10;

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
    // SAFETY: the struct mirrors the tracepoint's format.
    let Ok(ev) = (unsafe { ctx.read_at::<InetSockSetState>(0) }) else { return 0 };
    match (ev.oldstate, ev.newstate) {
        (TCP_SYN_RECV, TCP_ESTABLISHED) => passive_open(&ev),
        (_, TCP_LISTEN) => listen(&ev),
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
    }
}

/// A child socket of a traced listening port finished its handshake: it now
/// waits in the accept queue.
#[inline(always)]
fn passive_open(ev: &InetSockSetState) {
    // SAFETY: read-only lookup.
    if unsafe { LISTEN_PORTS.get(&ev.sport) }.is_none() {
        return;
    }
    let state = SockState::default();
    if SOCKS.insert(&ev.skaddr, &state, 0).is_err() {
        count(counter::SOCKS_FULL);
    }
    emit(&sock_event(kind::ESTABLISHED, 0, 0, ev));
}

/// `listen()` runs in the caller's context: a traced process gains a port.
#[inline(always)]
fn listen(ev: &InetSockSetState) {
    let Some((tgid, tid)) = traced_current() else { return };
    let _ = LISTEN_PORTS.insert(&ev.sport, &1, 0);
    emit(&sock_event(kind::LISTEN, tgid, tid, ev));
}

#[tracepoint]
pub fn sk_data_ready(ctx: TracePointContext) -> u32 {
    // SAFETY: `skaddr` at offset 8 of sock/sk_data_ready.
    let Ok(sk) = (unsafe { ctx.read_at::<u64>(8) }) else { return 0 };
    if let Some(sock) = SOCKS.get_ptr_mut(&sk) {
        // SAFETY: map value pointer valid for this program's run.
        unsafe {
            if (*sock).ready_ts == 0 {
                (*sock).ready_ts = now();
            }
        }
    }
    0
}

/// Children of traced processes are traced from their first instruction;
/// userspace removes the entries that turn out to be threads.
#[tracepoint]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    let Some((tgid, tid)) = traced_current() else { return 0 };
    // SAFETY: the offset comes from this kernel's tracepoint format.
    let Ok(child) = (unsafe { ctx.read_at::<i32>(FORK_CHILD_PID_OFFSET.load() as usize) }) else {
        return 0;
    };
    let child = child as u32;
    if child == tid || child == tgid {
        return 0;
    }
    let _ = TRACED.insert(&child, &1, 0);
    emit(&ForkEvent { hdr: header(kind::FORK, tgid, tid, now()), child_pid: child, _pad: 0 });
    0
}
