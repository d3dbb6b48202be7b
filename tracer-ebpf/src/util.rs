//! Small helpers used by every program.

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task_btf, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_probe_read_user, generated,
    },
    maps::PerCpuHashMap,
};
use tracer_common::{EventHeader, KernelOffsets, ProgramRuns, counter, program, traced};

use crate::maps::{COUNTERS, EVENTS, LISTEN_PORTS, OFFSETS, RUNS, TRACED, WAKEUP_BYTES, setting};

/// `BPF_RB_AVAIL_DATA` for `bpf_ringbuf_query`.
const RB_AVAIL_DATA: u64 = 0;

#[inline(always)]
pub fn count(index: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *c += 1 };
    }
}

/// A run of a program, counted when it starts; one in
/// `program::TIME_EVERY` is timed, its time added when the run ends (the
/// value drops at every exit of the program).
pub struct Run {
    slot: Option<*mut ProgramRuns>,
    start: u64,
}

/// Counts a run of program `index` (`tracer_common::program`), and starts
/// its clock if it is one to time: keep the value until the program ends.
#[inline(always)]
pub fn run(index: u32) -> Run {
    let slot = RUNS.get_ptr_mut(index);
    let mut start = 0;
    if let Some(s) = slot {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe {
            (*s).runs += 1;
            if (*s).runs % program::TIME_EVERY == 0 {
                start = now();
            }
        }
    }
    Run { slot, start }
}

impl Drop for Run {
    #[inline(always)]
    fn drop(&mut self) {
        if let (Some(s), true) = (self.slot, self.start != 0) {
            let took = now().saturating_sub(self.start);
            // SAFETY: as in `run`, within the same program run.
            unsafe {
                (*s).timed_runs += 1;
                (*s).timed_ns += took;
            }
        }
    }
}

/// Adds `n` to this CPU's `map[key]`, creating it; counts a full table.
#[inline(always)]
pub fn add<K>(map: &PerCpuHashMap<K, u64>, key: &K, n: u64) {
    if let Some(v) = map.get_ptr_mut(key) {
        // SAFETY: per-CPU value, no concurrent writer on this CPU.
        unsafe { *v += n };
    } else if map.insert(key, &n, 0).is_err() {
        count(counter::STACK_TABLE_FULL);
    }
}

#[inline(always)]
pub fn is_traced(tgid: u32) -> bool {
    traced_kind(tgid) != traced::NO
}

/// The traced-process table's value for `tgid` (`tracer_common::traced`).
#[inline(always)]
pub fn traced_kind(tgid: u32) -> u8 {
    TRACED.get(tgid).copied().unwrap_or(traced::NO)
}

#[inline(always)]
pub fn is_listen_port(port: u16) -> bool {
    LISTEN_PORTS.get(u32::from(port)).is_some_and(|v| *v != 0)
}

/// Current (tgid, tid) if the current process is traced.
#[inline(always)]
pub fn traced_current() -> Option<(u32, u32)> {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    is_traced(tgid).then_some((tgid, id as u32))
}

#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
pub fn header(kind: u8, tgid: u32, tid: u32, ts: u64) -> EventHeader {
    EventHeader {
        kind,
        _pad: [0; 3],
        tgid,
        tid,
        _pad2: 0,
        ts,
    }
}

/// Argument `n` of a BTF tracepoint as a plain number. The verifier types
/// pointer arguments (a `struct sock *`, say), and then refuses the byte
/// copies and offset arithmetic done on them; a probe read launders them.
#[inline(always)]
pub fn arg_u64(ctx: &impl EbpfContext, n: usize) -> u64 {
    // SAFETY: BTF tracepoint contexts are arrays of u64 arguments.
    unsafe { bpf_probe_read_kernel((ctx.as_ptr() as *const u64).add(n)) }.unwrap_or(0)
}

/// Loads a `T` at `offset` in a BTF-typed kernel pointer (a tracepoint's
/// `struct sock *`, a `struct task_struct *`) directly, without a helper
/// call: offsets come from read-only data the verifier sees as constants,
/// and it checks each access against the kernel's BTF.
///
/// # Safety
/// `base` must be a pointer argument of a BTF tracepoint (or returned by a
/// BTF helper) and `offset` a field of `T`'s size in the pointed-to struct.
#[inline(always)]
pub unsafe fn load_field<T: Copy>(base: *const u8, offset: u32) -> T {
    // SAFETY: per the caller; the verifier rejects the program otherwise.
    unsafe { core::ptr::read(base.add(offset as usize).cast::<T>()) }
}

/// Reads a `T` at `base + offset` in kernel memory; `None` for an offset
/// this kernel does not have.
#[inline(always)]
pub fn read_field<T>(base: u64, offset: u32) -> Option<T> {
    if offset == KernelOffsets::UNKNOWN || base == 0 {
        return None;
    }
    // SAFETY: checked helper read; faults return an error.
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const T) }.ok()
}

/// (syscall number, first argument, second argument) of the current task,
/// from its user registers saved at syscall entry.
#[inline(always)]
pub fn current_syscall() -> (i64, u64, u64) {
    // SAFETY: the current task is a valid BTF pointer, and so is the
    // `struct pt_regs *` the helper returns for it.
    unsafe {
        let regs = generated::bpf_task_pt_regs(bpf_get_current_task_btf()) as *const u8;
        let o = setting(&OFFSETS);
        (
            load_field::<i64>(regs, o.pt_regs_orig_ax),
            load_field::<u64>(regs, o.pt_regs_di),
            load_field::<u64>(regs, o.pt_regs_si),
        )
    }
}

/// The goroutine the current thread runs, if `tgid` is a Go program: Go
/// keeps `g` in the thread's TLS, the word below the TLS base (`fsbase - 8`
/// on linux/amd64, cgo or not, Go 1.19 to 1.27). 0 otherwise or when
/// unreadable.
#[inline(always)]
pub fn current_g(tgid: u32) -> u64 {
    if traced_kind(tgid) != traced::GO {
        return 0;
    }
    // SAFETY: the current task is a valid BTF pointer and the offset a u64
    // field of it (from BTF); the user read is a checked helper.
    unsafe {
        let task = bpf_get_current_task_btf() as *const u8;
        let fsbase: u64 = load_field(task, setting(&OFFSETS).task_fsbase);
        if fsbase < 8 {
            return 0;
        }
        bpf_probe_read_user((fsbase - 8) as *const u64).unwrap_or(0)
    }
}

/// Submit flags: wake the reader only once enough bytes are waiting.
#[inline(always)]
pub fn submit_flags() -> u64 {
    if EVENTS.query(RB_AVAIL_DATA) >= setting(&WAKEUP_BYTES) {
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
