//! Maps and load-time settings shared by all programs.
//!
//! Settings are plain statics that the loader overrides, read through
//! [`setting`] so the compiler cannot fold their initial values. (aya's
//! `Global<T>` would put a `MaybeUninit<T>` union in the object's BTF, a
//! name the kernel's BTF loader rejects.)

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf, StackTrace},
};
use tracer_common::{
    BLOCKED_WRITE_SLOTS, BlockedWrite, KernelOffsets, ListenCounters, OffCpuStart, ProgramRuns,
    STACKS_MAX, STACKS_SPILL_MAX, SockState, StackKey, TraceLayout, counter, program,
};

/// Ring-buffer bytes pending before a record forces a wake-up of the reader;
/// below it the reader drains on its own timer (batched wake-ups).
#[unsafe(no_mangle)]
pub static WAKEUP_BYTES: u64 = 256 * 1024;

/// Field offsets of trace-event records that moved between kernel
/// versions; userspace reads them from the events' formats.
#[unsafe(no_mangle)]
pub static LAYOUT: TraceLayout = TraceLayout::DEFAULT;

/// Kernel struct field offsets, from the running kernel's BTF.
#[unsafe(no_mangle)]
pub static OFFSETS: KernelOffsets = KernelOffsets::DEFAULT;

/// Shorter blocks are not reported: they are the bulk of context switches
/// and explain little.
#[unsafe(no_mangle)]
pub static MIN_BLOCK_NS: u64 = 1_000_000;

/// Whether off-CPU tracing is on (stacks at every block cost a little).
#[unsafe(no_mangle)]
pub static OFF_CPU_ENABLED: u8 = 1;

/// Traced processes: one byte per pid, non-zero when traced. An array
/// lookup is inlined by the verifier, so the check that every event of
/// every process pays is a load, not a hash. Sized to pid_max at load.
#[map]
pub static TRACED: Array<u8> = Array::with_max_entries(32768, 0);

/// Listening ports of traced processes: one byte per port.
#[map]
pub static LISTEN_PORTS: Array<u8> = Array::with_max_entries(65536, 0);

/// The listening socket of each watched port, learnt at `listen()`, at
/// `accept()`, or from the kernel's drops and retransmits.
#[map]
pub static LISTENERS: HashMap<u16, u64> = HashMap::with_max_entries(1024, 0);

/// Overflows and SYN-ACK retransmits per watched port.
#[map]
pub static LISTEN_COUNTERS: PerCpuHashMap<u16, ListenCounters> =
    PerCpuHashMap::with_max_entries(1024, 0);

/// Traced threads blocked inside a socket write, at `tid % slots`: an array
/// rather than a hash, since every traced write looks here.
#[map]
pub static BLOCKED_WRITE: Array<BlockedWrite> = Array::with_max_entries(BLOCKED_WRITE_SLOTS, 0);

/// Per mille of new inbound connections the overhead budget leaves out
/// (0: trace all), chosen by a hash of the socket. Userspace sets it.
#[map]
pub static LEAVE_OUT: Array<u32> = Array::with_max_entries(1, 0);

/// Sockets of traced processes, by `struct sock` address.
#[map]
pub static SOCKS: LruHashMap<u64, SockState> = LruHashMap::with_max_entries(65536, 0);

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// Drop and event counters, indexed by `tracer_common::counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::LEN, 0);

/// Runs of each program, and the timed ones, indexed by
/// `tracer_common::program`.
#[map]
pub static RUNS: PerCpuArray<ProgramRuns> = PerCpuArray::with_max_entries(program::LEN, 0);

/// User and kernel stacks of samples and blocks.
#[map]
pub static STACKS: StackTrace = StackTrace::with_max_entries(STACKS_MAX, 0);

/// Stacks whose slot in `STACKS` another stack holds (ids offset by
/// `STACKS_MAX`): two stacks rarely share a slot in both.
#[map]
pub static STACKS_SPILL: StackTrace = StackTrace::with_max_entries(STACKS_SPILL_MAX, 0);

/// On-CPU samples per stack (per CPU: no atomics needed; userspace sums).
#[map]
pub static ONCPU_COUNTS: PerCpuHashMap<StackKey, u64> = PerCpuHashMap::with_max_entries(16384, 0);

/// Blocked microseconds per stack (blocks of at least MIN_BLOCK_NS), per CPU.
#[map]
pub static OFFCPU_US: PerCpuHashMap<StackKey, u64> = PerCpuHashMap::with_max_entries(16384, 0);

/// Traced threads currently blocked, by thread id.
#[map]
pub static OFFCPU_START: LruHashMap<u32, OffCpuStart> = LruHashMap::with_max_entries(16384, 0);

/// Reads a load-time setting.
#[inline(always)]
pub fn setting<T: Copy>(value: &'static T) -> T {
    // SAFETY: a valid reference; volatile so the loader's value is seen.
    unsafe { core::ptr::read_volatile(value) }
}
