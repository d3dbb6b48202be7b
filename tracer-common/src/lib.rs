//! Types shared by the kernel programs and the userspace tracer.
//!
//! Every record on the ring buffer starts with an [`EventHeader`]; its `kind`
//! says which struct follows. All structs are `#[repr(C)]` with explicit
//! padding so both sides agree on the layout byte for byte.
#![no_std]

pub mod errno;

/// Slots of the kernel's stack map. A stack whose slot (a hash of its
/// addresses) holds another one goes to the spill map, whose ids are
/// given offset by this.
pub const STACKS_MAX: u32 = 16384;
/// Slots of the spill stack map.
pub const STACKS_SPILL_MAX: u32 = 1024;
pub mod syscall;

/// Bytes of payload captured from the first reads of a request: enough
/// for an HTTP/1.x request line and the headers that frame a body, never
/// a body. A power of two: the kernel side bounds copies with a mask of it.
pub const PAYLOAD_MAX: usize = 256;
const _: () = assert!(PAYLOAD_MAX.is_power_of_two());

/// Bytes captured from the first writes of a response: its status code
/// (`HTTP/1.1 200`) and no more, since nothing else of a write is read.
/// Writes are half of all records: each byte not copied is saved twice.
pub const STATUS_CAPTURE: usize = 16;
const _: () = assert!(STATUS_CAPTURE.is_power_of_two() && STATUS_CAPTURE <= PAYLOAD_MAX);

/// Ring-buffer record kinds.
pub mod kind {
    /// A connection returned by `accept`/`accept4` ([`super::AcceptEvent`]).
    pub const ACCEPT: u8 = 1;
    /// A traced process used a socket for the first time ([`super::SocketEvent`]).
    pub const SOCKET: u8 = 11;
    /// A read or write on a socket ([`super::IoEvent`]).
    pub const IO: u8 = 2;
    /// A read or write with the first bytes of its payload ([`super::IoPayloadEvent`]).
    pub const IO_PAYLOAD: u8 = 3;
    /// A traced process started an outbound TCP connection ([`super::SocketEvent`]).
    pub const CONNECT: u8 = 4;
    /// A traced process closed (or shut down) its end of a TCP connection ([`super::CloseEvent`]).
    pub const CLOSE: u8 = 5;
    /// A passive connection completed its handshake ([`super::SockEvent`]).
    pub const ESTABLISHED: u8 = 6;
    /// A traced process started listening ([`super::SockEvent`]).
    pub const LISTEN: u8 = 7;
    /// A traced process forked ([`super::ForkEvent`]).
    pub const FORK: u8 = 8;
    /// A CPU sample of a traced thread ([`super::SampleEvent`]).
    pub const SAMPLE: u8 = 9;
    /// A traced thread was blocked at least the minimum block time ([`super::OffCpuEvent`]).
    pub const OFF_CPU: u8 = 10;
    /// The overhead budget stopped tracing a connection at a request's
    /// start ([`super::CloseEvent`]): the chain so far is whole.
    pub const LEFT_OUT: u8 = 12;
}

/// Values of the traced-process table.
pub mod traced {
    pub const NO: u8 = 0;
    pub const YES: u8 = 1;
    /// A Go program: its scheduler parks idle threads in futex, epoll and
    /// nanosleep, blocks that say nothing about requests and are skipped.
    pub const GO: u8 = 2;

    /// Syscalls in which Go's scheduler parks idle threads (futex,
    /// epoll_wait, epoll_pwait, epoll_pwait2, nanosleep, sched_yield): a
    /// goroutine never blocks a thread there, so such blocks say nothing
    /// about a request.
    pub const GO_PARKING: [i64; 6] = {
        use super::syscall as nr;
        [
            nr::FUTEX,
            nr::EPOLL_WAIT,
            nr::EPOLL_PWAIT,
            nr::EPOLL_PWAIT2,
            nr::NANOSLEEP,
            nr::SCHED_YIELD,
        ]
    };
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
    /// The blocked-write table was full: a write's start time is approximate.
    pub const BLOCKED_WRITE_FULL: u32 = 1;
    /// The socket table was full: a socket's state was not kept.
    pub const SOCKS_FULL: u32 = 2;
    /// A payload could not be read from user memory (the event was kept).
    pub const PAYLOAD_FAULT: u32 = 3;
    /// Records submitted.
    pub const EVENTS: u32 = 4;
    /// A stack could not be recorded (stack map full or collision): the
    /// sample or block is kept without that stack.
    pub const STACK_LOST: u32 = 5;
    /// The off-CPU or on-CPU aggregation table was full.
    pub const STACK_TABLE_FULL: u32 = 6;
    /// Requests of connections the overhead budget left out (not a loss:
    /// counted, not traced).
    pub const LEFT_OUT_REQUESTS: u32 = 7;
    pub const LEN: u32 = 8;
}

/// The kernel programs, as indexes into the per-CPU `RUNS` table
/// ([`ProgramRuns`]): each counts its runs and times one in
/// [`program::TIME_EVERY`]. The kernel's own accounting (`BPF_ENABLE_STATS`)
/// would need CAP_SYS_ADMIN and cost every BPF program of the host two
/// clock reads a run.
pub mod program {
    /// One run in this many is timed: a prime, so the timed runs do not
    /// fall into step with a pattern of the runs (a server's write, then
    /// its client's, on one CPU).
    pub const TIME_EVERY: u64 = 17;

    pub const SOCK_RECV_LENGTH: u32 = 0;
    pub const SOCK_SEND_LENGTH: u32 = 1;
    pub const SK_DATA_READY: u32 = 2;
    pub const SCHED_SWITCH: u32 = 3;
    pub const SCHED_WAKEUP: u32 = 4;
    pub const ON_CPU: u32 = 5;
    pub const SYS_EXIT_ACCEPT: u32 = 6;
    pub const INET_SOCK_SET_STATE: u32 = 7;
    pub const SCHED_PROCESS_FORK: u32 = 8;
    pub const KFREE_SKB: u32 = 9;
    pub const TCP_RETRANSMIT_SYNACK: u32 = 10;
    /// Stands in for `sock_recv_length` and `sock_send_length` on kernels
    /// without them (before 6.3).
    pub const SYS_EXIT_SOCK_IO: u32 = 11;
    /// Program names (as in the object), by index.
    pub const NAMES: [&str; 12] = [
        "sock_recv_length",
        "sock_send_length",
        "sk_data_ready",
        "sched_switch",
        "sched_wakeup",
        "on_cpu",
        "sys_exit_accept",
        "inet_sock_set_state",
        "sched_process_fork",
        "kfree_skb",
        "tcp_retransmit_synack",
        "sys_exit_sock_io",
    ];
    pub const LEN: u32 = NAMES.len() as u32;
}

/// A program's runs on one CPU, and those it timed with their time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProgramRuns {
    pub runs: u64,
    pub timed_runs: u64,
    pub timed_ns: u64,
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
    /// The new connection's fd.
    pub fd: i32,
    /// The listening port, 0 if the listener could not be read.
    pub port: u16,
    /// 1 when the overhead budget left this connection out: counted, not traced.
    pub left_out: u8,
    pub _pad: u8,
    /// The listener's accept queue after this accept, and its limit.
    pub backlog: u32,
    pub backlog_max: u32,
    /// The listener's drop counter (`sk_drops`: handshakes dropped, mostly
    /// because the queue was full), cumulative since it was created.
    pub listener_drops: u32,
    pub _pad2: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IoEvent {
    /// `ts` is when the socket call returned.
    pub hdr: EventHeader,
    /// When the syscall started, where known (writes that blocked); else `hdr.ts`.
    pub enter_ts: u64,
    /// Kernel address of the `struct sock`.
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
    /// This socket's count of reads (or writes) the kernel reported,
    /// this one included, wrapping: a gap means records were lost.
    pub seq: u16,
    pub _pad: u16,
    /// In a Go program, the goroutine (`g` address) that made the call;
    /// else 0, and 0 for a write that goes on with a response (its first
    /// write names whose it is).
    pub g: u64,
}

/// An [`IoEvent`] followed by its payload. The kernel sends the smallest
/// of a few sizes (`N` a power of two up to [`PAYLOAD_MAX`]) that holds
/// `payload_len` bytes: a record's cache lines are most of its cost.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct IoPayloadEvent<const N: usize = PAYLOAD_MAX> {
    pub io: IoEvent,
    pub payload: [u8; N],
}

/// A socket of a traced process with its addresses, read from the kernel's
/// `struct sock_common`: sent at first use ([`kind::SOCKET`]) and at
/// connect ([`kind::CONNECT`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SocketEvent {
    pub hdr: EventHeader,
    pub sk: u64,
    pub fd: i32,
    /// `AF_INET` (2), `AF_INET6` (10), or another family with no addresses.
    pub family: u16,
    /// IP protocol: 6 TCP, 17 UDP, 0 unknown.
    pub protocol: u16,
    /// Local and remote ports, host byte order.
    pub sport: u16,
    pub dport: u16,
    /// 1 when the overhead budget takes up again a connection it left out:
    /// announced before, not a new connection.
    pub again: u8,
    pub _pad: [u8; 3],
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CloseEvent {
    pub hdr: EventHeader,
    pub sk: u64,
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
    /// For a passive open: the listener's accept queue with this connection
    /// in it, its limit, and its drop counter; `u32::MAX` when the listener
    /// is not known yet.
    pub backlog: u32,
    pub backlog_max: u32,
    pub listener_drops: u32,
    pub _pad2: u32,
}

/// Per listening port, counted in the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ListenCounters {
    /// Final ACKs of handshakes dropped because the accept queue was full
    /// (`kfree_skb` with reason `TCP_LISTEN_OVERFLOW`): clients that believe
    /// they are connected.
    pub overflows: u64,
    pub synack_retransmits: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ForkEvent {
    pub hdr: EventHeader,
    pub child_pid: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SampleEvent {
    pub hdr: EventHeader,
    /// Stack ids in the `STACKS` map, negative when not recorded.
    pub user_stack: i32,
    pub kernel_stack: i32,
    /// In a Go program, the goroutine that was running; else 0.
    pub g: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OffCpuEvent {
    /// `ts` is when the thread ran again.
    pub hdr: EventHeader,
    /// When it blocked.
    pub start_ts: u64,
    pub user_stack: i32,
    pub kernel_stack: i32,
    /// Syscall the thread was in when it blocked, -1 if none.
    pub syscall: i64,
    /// The fd it waited on, where the syscall names one (read, recvfrom,
    /// connect, poll...), else -1.
    pub fd: i64,
    /// The task that woke it, 0 if unknown.
    pub waker_tid: u32,
    pub waker_tgid: u32,
    pub waker_comm: [u8; 16],
    /// In a Go program, the goroutine running when the thread blocked; else 0.
    pub g: u64,
}

/// Key of the in-kernel stack aggregations (on-CPU samples, off-CPU time).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StackKey {
    pub tgid: u32,
    pub user_stack: i32,
    pub kernel_stack: i32,
    pub _pad: u32,
}

/// A traced thread that blocked, until it runs again.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OffCpuStart {
    pub ts: u64,
    pub syscall: i64,
    pub fd: i64,
    pub tgid: u32,
    pub user_stack: i32,
    pub kernel_stack: i32,
    pub waker_tid: u32,
    pub waker_tgid: u32,
    pub _pad: u32,
    pub waker_comm: [u8; 16],
    pub g: u64,
}

/// Where the fields read from trace-event records sit on this kernel, from
/// the events' tracefs formats, and the drop reason that means "accept queue
/// full" (from BTF); `u32::MAX` when unknown.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TraceLayout {
    pub fork_child_pid: u32,
    pub kfree_skb_reason: u32,
    pub kfree_skb_rx_sk: u32,
    pub listen_overflow_reason: u32,
}

impl TraceLayout {
    pub const DEFAULT: TraceLayout = TraceLayout {
        fork_child_pid: 20,
        kfree_skb_reason: 36,
        kfree_skb_rx_sk: 24,
        listen_overflow_reason: u32::MAX,
    };
}

/// Offsets of the kernel struct fields the programs read, resolved from the
/// running kernel's BTF by userspace. `u32::MAX` marks a field this kernel
/// does not have in a readable form.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KernelOffsets {
    pub pt_regs_di: u32,
    pub pt_regs_si: u32,
    pub pt_regs_orig_ax: u32,
    pub task_pid: u32,
    pub task_tgid: u32,
    pub sock_protocol: u32,
    pub sock_ack_backlog: u32,
    pub sock_max_ack_backlog: u32,
    pub sock_drops: u32,
    pub skc_family: u32,
    pub skc_num: u32,
    pub skc_dport: u32,
    pub skc_rcv_saddr: u32,
    pub skc_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
    pub skc_v6_daddr: u32,
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdtable_fd: u32,
    pub fdtable_max_fds: u32,
    pub file_private_data: u32,
    /// `file.f_inode` and `inode.i_mode`: whether an fd is a socket.
    pub file_inode: u32,
    pub inode_mode: u32,
    pub socket_sk: u32,
    /// `task_struct.thread.fsbase`: a thread's TLS base, where Go keeps `g`.
    pub task_fsbase: u32,
    /// `mptcp_sock.first`: an MPTCP listener's TCP subflow, which holds
    /// the accept queue.
    pub mptcp_first: u32,
}

impl KernelOffsets {
    pub const UNKNOWN: u32 = u32::MAX;
    /// x86_64 `struct pt_regs` and placeholders, replaced at load time.
    pub const DEFAULT: KernelOffsets = KernelOffsets {
        pt_regs_di: 112,
        pt_regs_si: 104,
        pt_regs_orig_ax: 120,
        task_pid: Self::UNKNOWN,
        task_tgid: Self::UNKNOWN,
        sock_protocol: Self::UNKNOWN,
        sock_ack_backlog: Self::UNKNOWN,
        sock_max_ack_backlog: Self::UNKNOWN,
        sock_drops: Self::UNKNOWN,
        skc_family: Self::UNKNOWN,
        skc_num: Self::UNKNOWN,
        skc_dport: Self::UNKNOWN,
        skc_rcv_saddr: Self::UNKNOWN,
        skc_daddr: Self::UNKNOWN,
        skc_v6_rcv_saddr: Self::UNKNOWN,
        skc_v6_daddr: Self::UNKNOWN,
        task_files: Self::UNKNOWN,
        files_fdt: Self::UNKNOWN,
        fdtable_fd: Self::UNKNOWN,
        fdtable_max_fds: Self::UNKNOWN,
        file_private_data: Self::UNKNOWN,
        file_inode: Self::UNKNOWN,
        inode_mode: Self::UNKNOWN,
        socket_sk: Self::UNKNOWN,
        task_fsbase: Self::UNKNOWN,
        mptcp_first: Self::UNKNOWN,
    };
}

/// A traced thread that blocked inside a socket write, by thread id: the
/// write's completion then knows when it started.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlockedWrite {
    pub ts: u64,
    pub fd: i32,
    /// The slot's owner: slots are indexed by thread id modulo their number.
    pub tid: u32,
}

/// Slots of the blocked-write table.
pub const BLOCKED_WRITE_SLOTS: u32 = 4096;

/// Per-socket state kept in the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SockState {
    /// First `sk_data_ready` since the last read that returned data.
    pub ready_ts: u64,
    /// Direction of the last read/write that moved bytes. A change of
    /// direction starts a run (a request, or a response).
    pub last_dir: u8,
    /// Set once a traced process has used the socket and userspace was
    /// told; [`SockState::LEFT_OUT`] for a connection not to trace.
    pub announced: u8,
    /// Payload bytes captured in the current run: capture stops at
    /// [`PAYLOAD_MAX`], so a request line split over reads is still seen
    /// and no more than the first bytes of a run ever leave the kernel.
    pub captured: u16,
    /// Reads and writes reported, per direction ([`IoEvent::seq`]): one
    /// counter each, since a read and a write of one socket can race on
    /// two CPUs and reach the ring buffer in either order.
    pub read_seq: u16,
    pub write_seq: u16,
    /// 1 for a connection accepted on a watched port: the overhead budget
    /// may leave it out; [`SockState::INBOUND_ANNOUNCED`] once userspace
    /// knows it.
    pub inbound: u8,
    pub _pad: [u8; 7],
}

impl SockState {
    /// `announced` of a connection the overhead budget left out: the kernel
    /// reports nothing of it but its accept.
    pub const LEFT_OUT: u8 = 2;
    /// `announced` of a connection left out and now traced again: to be
    /// announced anew, as one userspace knew.
    pub const TAKEN_UP_AGAIN: u8 = 3;
    /// `inbound` of a connection userspace was told of.
    pub const INBOUND_ANNOUNCED: u8 = 2;
}

#[cfg(feature = "user")]
mod user {
    use super::{KernelOffsets, ListenCounters, ProgramRuns, SockState, StackKey, TraceLayout};
    // SAFETY: all types are plain-old-data `#[repr(C)]` structs without padding holes
    // that matter to the kernel, valid for any bit pattern.
    unsafe impl aya::Pod for SockState {}
    unsafe impl aya::Pod for StackKey {}
    unsafe impl aya::Pod for KernelOffsets {}
    unsafe impl aya::Pod for ListenCounters {}
    unsafe impl aya::Pod for ProgramRuns {}
    unsafe impl aya::Pod for TraceLayout {}
}

/// A ring-buffer record: plain old data that userspace may copy out of any
/// byte string long enough to hold it.
///
/// # Safety
/// Implementors are `#[repr(C)]` structs of integers and byte arrays, valid
/// for any bit pattern.
pub unsafe trait Record: Copy {
    /// Reads a record from the start of `bytes`, if it is long enough.
    fn read(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < core::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: length checked above; read_unaligned tolerates any
        // alignment; the trait's contract makes every bit pattern valid.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }
}

// SAFETY: each is `#[repr(C)]`, made only of integers and byte arrays.
unsafe impl Record for EventHeader {}
unsafe impl Record for AcceptEvent {}
unsafe impl Record for IoEvent {}
unsafe impl Record for SocketEvent {}
unsafe impl Record for CloseEvent {}
unsafe impl Record for SockEvent {}
unsafe impl Record for ForkEvent {}
unsafe impl Record for SampleEvent {}
unsafe impl Record for OffCpuEvent {}

/// Layouts both sides rely on, checked at compile time: a field added on one
/// side only, or padding the compiler inserts, fails the build.
const _: () = {
    use core::mem::size_of;
    assert!(size_of::<EventHeader>() == 24);
    assert!(size_of::<AcceptEvent>() == 48);
    assert!(size_of::<IoEvent>() == 80);
    assert!(size_of::<IoPayloadEvent>() == 80 + PAYLOAD_MAX);
    assert!(size_of::<SocketEvent>() == 80);
    assert!(size_of::<CloseEvent>() == 32);
    assert!(size_of::<SockEvent>() == 88);
    assert!(size_of::<ListenCounters>() == 16);
    assert!(size_of::<ForkEvent>() == 32);
    assert!(size_of::<SampleEvent>() == 40);
    assert!(size_of::<OffCpuEvent>() == 88);
    assert!(size_of::<StackKey>() == 16);
    assert!(size_of::<OffCpuStart>() == 72);
    assert!(size_of::<TraceLayout>() == 16);
    assert!(size_of::<KernelOffsets>() == 26 * 4);
    assert!(size_of::<BlockedWrite>() == 16);
    assert!(size_of::<SockState>() == 24);
};
