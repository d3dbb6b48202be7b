//! The listener link: the accept queue's depth and limit, read from the
//! listening socket (offsets from BTF), handshakes dropped because the queue
//! was full, and SYN-ACK retransmits.

use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_probe_read_kernel},
    macros::tracepoint,
    programs::TracePointContext,
};
use tracer_common::{KernelOffsets, ListenCounters, counter, program};

use crate::{
    maps::{LAYOUT, LISTEN_COUNTERS, LISTENERS, OFFSETS, setting},
    sock,
    util::{count, is_listen_port, read_field, run},
};

/// The listener's accept queue length, limit and drop counter
/// (`sk_ack_backlog`, `sk_max_ack_backlog`, `sk_drops`); `u32::MAX` for
/// what is unreadable.
#[inline(always)]
pub fn backlog(listener: u64) -> (u32, u32, u32) {
    let o = setting(&OFFSETS);
    let field = |off| read_field::<u32>(listener, off).unwrap_or(u32::MAX);
    (
        field(o.sock_ack_backlog),
        field(o.sock_max_ack_backlog),
        field(o.sock_drops),
    )
}

/// The socket behind fd `fd` of the current task:
/// task->files->fdt->fd[fd]->private_data (a `struct socket`)->sk.
#[inline(always)]
pub fn current_fd_socket(fd: u64) -> Option<u64> {
    let o = setting(&OFFSETS);
    // SAFETY: no preconditions; the walk below reads through the checked helper.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = read_field(task, o.task_files)?;
    let fdt: u64 = read_field(files, o.files_fdt)?;
    let max: u32 = read_field(fdt, o.fdtable_max_fds)?;
    if fd >= u64::from(max) || o.fdtable_fd == KernelOffsets::UNKNOWN {
        return None;
    }
    let fds: u64 = read_field(fdt, o.fdtable_fd)?;
    // SAFETY: bounded by max_fds above; a checked read.
    let file: u64 = unsafe { bpf_probe_read_kernel((fds + fd * 8) as *const u64) }.ok()?;
    // Only a socket's private_data is a `struct socket`.
    let inode: u64 = read_field(file, o.file_inode)?;
    let mode: u16 = read_field(inode, o.inode_mode)?;
    if mode & S_IFMT != S_IFSOCK {
        return None;
    }
    let socket: u64 = read_field(file, o.file_private_data)?;
    let sk: u64 = read_field(socket, o.socket_sk)?;
    (sk != 0).then_some(sk)
}

const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;

const IPPROTO_MPTCP: u16 = 262;

/// The TCP socket that holds a listener's accept queue: the socket itself,
/// or for an MPTCP listener (Go's default since 1.24) its first subflow.
#[inline(always)]
pub fn tcp_listener(sk: u64) -> u64 {
    let o = setting(&OFFSETS);
    if o.mptcp_first == KernelOffsets::UNKNOWN
        || read_field::<u16>(sk, o.sock_protocol) != Some(IPPROTO_MPTCP)
    {
        return sk;
    }
    match read_field::<u64>(sk, o.mptcp_first) {
        Some(first) if first != 0 => first,
        _ => sk,
    }
}

/// Remembers the listener of a watched port.
#[inline(always)]
pub fn remember(port: u16, listener: u64) {
    // SAFETY: read-only lookup.
    if unsafe { LISTENERS.get(&port) } != Some(&listener) {
        let _ = LISTENERS.insert(&port, &listener, 0);
    }
}

#[inline(always)]
fn bump(port: u16, overflow: u64, synack: u64) {
    if let Some(c) = LISTEN_COUNTERS.get_ptr_mut(&port) {
        // SAFETY: per-CPU value, no concurrent writer on this CPU.
        unsafe {
            (*c).overflows += overflow;
            (*c).synack_retransmits += synack;
        }
    } else if LISTEN_COUNTERS
        .insert(
            &port,
            &ListenCounters {
                overflows: overflow,
                synack_retransmits: synack,
            },
            0,
        )
        .is_err()
    {
        count(counter::SOCKS_FULL);
    }
}

/// `skb/kfree_skb`: a handshake dropped because a watched listener's accept
/// queue was full (drop reason `TCP_LISTEN_OVERFLOW`, on the listener).
#[tracepoint]
pub fn kfree_skb(ctx: TracePointContext) -> u32 {
    let _run = run(program::KFREE_SKB);
    let layout = setting(&LAYOUT);
    // SAFETY: offsets from this kernel's tracepoint format.
    let Ok(reason) = (unsafe { ctx.read_at::<u32>(layout.kfree_skb_reason as usize) }) else {
        return 0;
    };
    if reason != layout.listen_overflow_reason {
        return 0;
    }
    // SAFETY: as above.
    let Ok(listener) = (unsafe { ctx.read_at::<u64>(layout.kfree_skb_rx_sk as usize) }) else {
        return 0;
    };
    let port = sock::local_port(listener);
    if listener != 0 && is_listen_port(port) {
        remember(port, listener);
        bump(port, 1, 0);
    }
    0
}

/// `tcp/tcp_retransmit_synack(skaddr = listener, sport at 24)`.
#[tracepoint]
pub fn tcp_retransmit_synack(ctx: TracePointContext) -> u32 {
    let _run = run(program::TCP_RETRANSMIT_SYNACK);
    // SAFETY: offsets of the stable tcp_retransmit_synack format.
    let (Ok(listener), Ok(port)) = (unsafe { ctx.read_at::<u64>(8) }, unsafe {
        ctx.read_at::<u16>(24)
    }) else {
        return 0;
    };
    if is_listen_port(port) {
        remember(port, listener);
        bump(port, 0, 1);
    }
    0
}
