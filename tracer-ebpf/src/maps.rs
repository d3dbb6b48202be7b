//! Maps and load-time settings shared by all programs.

use aya_ebpf::{
    Global,
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use tracer_common::{InFlight, SockState, counter};

/// Ring-buffer bytes pending before a record forces a wake-up of the reader;
/// below it the reader drains on its own timer (batched wake-ups).
#[unsafe(no_mangle)]
pub static WAKEUP_BYTES: Global<u64> = Global::new(256 * 1024);

/// Offset of `child_pid` in `sched/sched_process_fork`, which moved between
/// kernel versions; userspace reads it from the tracepoint's format.
#[unsafe(no_mangle)]
pub static FORK_CHILD_PID_OFFSET: Global<u32> = Global::new(20);

/// Traced processes (thread group ids).
#[map]
pub static TRACED: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);

/// Listening ports of traced processes, host byte order.
#[map]
pub static LISTEN_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(1024, 0);

/// Syscalls between enter and exit, by thread id.
#[map]
pub static INFLIGHT: LruHashMap<u32, InFlight> = LruHashMap::with_max_entries(16384, 0);

/// Sockets of traced processes, by `struct sock` address.
#[map]
pub static SOCKS: LruHashMap<u64, SockState> = LruHashMap::with_max_entries(65536, 0);

/// Socket fds of traced processes, by `tgid << 32 | fd`, so that `close`
/// reports sockets only.
#[map]
pub static FD_SOCK: LruHashMap<u64, u64> = LruHashMap::with_max_entries(65536, 0);

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// Drop and event counters, indexed by `tracer_common::counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::LEN, 0);
