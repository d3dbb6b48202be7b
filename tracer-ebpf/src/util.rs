//! Small helpers used by every program.

use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
};
use tracer_common::{EventHeader, counter};

use crate::maps::{COUNTERS, EVENTS, TRACED, WAKEUP_BYTES};

/// `BPF_RB_AVAIL_DATA` for `bpf_ringbuf_query`.
const RB_AVAIL_DATA: u64 = 0;

#[inline(always)]
pub fn count(index: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *c += 1 };
    }
}

/// Current (tgid, tid) if the current process is traced.
#[inline(always)]
pub fn traced_current() -> Option<(u32, u32)> {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    // SAFETY: read-only lookup of a plain value.
    unsafe { TRACED.get(&tgid) }.map(|_| (tgid, id as u32))
}

#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
pub fn header(kind: u8, tgid: u32, tid: u32, ts: u64) -> EventHeader {
    EventHeader { kind, _pad: [0; 3], tgid, tid, _pad2: 0, ts }
}

/// Submit flags: wake the reader only once enough bytes are waiting.
#[inline(always)]
pub fn submit_flags() -> u64 {
    if EVENTS.query(RB_AVAIL_DATA) >= WAKEUP_BYTES.load() {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Copies a small fixed-size record into the ring buffer, counting success or loss.
#[inline(always)]
pub fn emit<T: 'static>(record: &T) {
    match EVENTS.output::<T>(record, submit_flags()) {
        Ok(()) => count(counter::EVENTS),
        Err(_) => count(counter::RINGBUF_FULL),
    }
}
