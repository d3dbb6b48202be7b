//! Types shared by the kernel programs and the userspace tracer.
//!
//! Every record on the ring buffer starts with an [`EventHeader`]; its `kind`
//! says which struct follows. All structs are `#[repr(C)]` with explicit
//! padding so both sides agree on the layout byte for byte.
#![no_std]

/// Bytes of payload captured from the first read and the first write of a
/// request: enough for an HTTP/1.x request line or status line, never a body.
pub const PAYLOAD_MAX: usize = 256;

/// Ring-buffer record kinds.
pub mod kind {
    /// A connection returned by `accept`/`accept4` ([`super::AcceptEvent`]).
    pub const ACCEPT: u8 = 1;
    /// A read or write on a socket ([`super::IoEvent`]).
    pub const IO: u8 = 2;
    /// A read or write with the first bytes of its payload ([`super::IoPayloadEvent`]).
    pub const IO_PAYLOAD: u8 = 3;
    /// An outbound `connect` ([`super::ConnectEvent`]).
    pub const CONNECT: u8 = 4;
    /// `close` of a socket fd ([`super::CloseEvent`]).
    pub const CLOSE: u8 = 5;
    /// A passive connection completed its handshake ([`super::SockEvent`]).
    pub const ESTABLISHED: u8 = 6;
    /// A traced process started listening ([`super::SockEvent`]).
    pub const LISTEN: u8 = 7;
    /// A traced process forked ([`super::ForkEvent`]).
    pub const FORK: u8 = 8;
}

/// Direction of an I/O syscall.
pub mod dir {
    pub const READ: u8 = 1;
    pub const WRITE: u8 = 2;
}

/// Indexes into the per-CPU `COUNTERS` array.
pub mod counter {
    /// Ring buffer full: a record was lost.
    pub const RINGBUF_FULL: u32 = 0;
    /// The in-flight syscall table was full: a syscall went unseen.
    pub const INFLIGHT_FULL: u32 = 1;
    /// The socket table was full: a socket's state was not kept.
    pub const SOCKS_FULL: u32 = 2;
    /// A payload could not be read from user memory (the event was kept).
    pub const PAYLOAD_FAULT: u32 = 3;
    /// Records submitted.
    pub const EVENTS: u32 = 4;
    pub const LEN: u32 = 8;
}

/// Common prefix of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EventHeader {
    pub kind: u8,
    pub _pad: [u8; 3],
    /// Process id (thread group id); 0 for events seen in softirq context.
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    pub _pad2: u32,
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) when the event completed.
    pub ts: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AcceptEvent {
    pub hdr: EventHeader,
    pub enter_ts: u64,
    /// The listening fd passed to accept.
    pub listen_fd: i32,
    /// The new connection's fd.
    pub fd: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IoEvent {
    pub hdr: EventHeader,
    pub enter_ts: u64,
    /// Kernel address of the `struct sock`, learnt inside the syscall.
    pub sk: u64,
    /// When bytes last became readable on this socket before this read
    /// (`sk_data_ready`), 0 if unknown. Reads only.
    pub ready_ts: u64,
    /// Syscall return value: bytes moved, 0 for EOF, or -errno.
    pub ret: i64,
    pub fd: i32,
    /// Syscall number (x86_64 numbering).
    pub nr: u32,
    /// [`dir::READ`] or [`dir::WRITE`].
    pub dir: u8,
    /// IP protocol of the socket (6 TCP, 17 UDP) or 0 for other families.
    pub protocol: u8,
    /// Valid bytes in the payload of an [`IoPayloadEvent`], else 0.
    pub payload_len: u16,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct IoPayloadEvent {
    pub io: IoEvent,
    pub payload: [u8; PAYLOAD_MAX],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnectEvent {
    pub hdr: EventHeader,
    pub enter_ts: u64,
    pub ret: i32,
    pub fd: i32,
    /// `AF_INET` (2) or `AF_INET6` (10); other families are not reported.
    pub family: u16,
    /// Remote port, host byte order.
    pub port: u16,
    pub _pad: u32,
    /// Remote address: 4 bytes for IPv4, 16 for IPv6.
    pub addr: [u8; 16],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CloseEvent {
    pub hdr: EventHeader,
    pub sk: u64,
    pub fd: i32,
    pub _pad: u32,
}

/// A socket state change of interest: a passive open completed
/// ([`kind::ESTABLISHED`]) or a traced process started listening ([`kind::LISTEN`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SockEvent {
    pub hdr: EventHeader,
    pub sk: u64,
    pub family: u16,
    /// Local port, host byte order.
    pub sport: u16,
    /// Remote port, host byte order.
    pub dport: u16,
    pub _pad: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ForkEvent {
    pub hdr: EventHeader,
    pub child_pid: u32,
    pub _pad: u32,
}

/// State of a syscall between its enter and exit, keyed by thread id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct InFlight {
    pub enter_ts: u64,
    /// Second syscall argument: buffer, iovec or msghdr pointer, or sockaddr.
    pub arg1: u64,
    /// Socket seen by `sock_recv_length`/`sock_send_length` during the call.
    pub sk: u64,
    pub fd: i32,
    pub nr: u32,
    pub dir: u8,
    pub protocol: u8,
    pub _pad: [u8; 6],
}

/// Per-socket state kept in the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SockState {
    /// First `sk_data_ready` since the last read that returned data.
    pub ready_ts: u64,
    /// Direction of the last read/write that moved bytes. A change of
    /// direction starts a run (a request, or a response).
    pub last_dir: u8,
    pub _pad: u8,
    /// Payload bytes captured in the current run: capture stops at
    /// [`PAYLOAD_MAX`], so a request line split over reads is still seen
    /// and no more than the first bytes of a run ever leave the kernel.
    pub captured: u16,
    pub _pad2: u32,
}

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: all types are plain-old-data `#[repr(C)]` structs without padding holes
    // that matter to the kernel, valid for any bit pattern.
    unsafe impl aya::Pod for InFlight {}
    unsafe impl aya::Pod for SockState {}
}

/// Reads a `T` from the start of a ring-buffer record, if it is long enough.
///
/// # Safety
/// `T` must be valid for any bit pattern (all types of this crate are).
pub unsafe fn read_record<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < core::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: length checked above; read_unaligned tolerates any alignment.
    Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}
