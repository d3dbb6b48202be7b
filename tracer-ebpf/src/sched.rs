//! Where traced threads spend time: on-CPU samples (perf `cpu-clock`) and
//! off-CPU intervals (`sched_switch`/`sched_wakeup`), with their stacks.
//!
//! Both are summed per stack in the kernel for the flame graphs, and streamed
//! (with thread and time) so userspace can put them inside request chains.

use aya_ebpf::{
    bindings::BPF_F_USER_STACK,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{btf_tracepoint, perf_event},
    programs::{BtfTracePointContext, PerfEventContext, tracing::StackIdContext},
};
use tracer_common::{
    BLOCKED_WRITE_SLOTS, BlockedWrite, OffCpuEvent, OffCpuStart, STACKS_MAX, SampleEvent, StackKey,
    counter, errno, kind, program, syscall, traced,
};

use crate::{
    maps::{
        BLOCKED_WRITE, MIN_BLOCK_NS, OFF_CPU_ENABLED, OFFCPU_START, OFFCPU_US, OFFSETS,
        ONCPU_COUNTS, STACKS, STACKS_SPILL, setting,
    },
    util::{
        add, count, current_g, current_syscall, emit, header, is_traced, load_field, now, run,
        traced_current, traced_kind,
    },
};

/// Syscalls whose first argument is the fd waited on.
const FD_SYSCALLS: [i64; 14] = [
    syscall::READ,
    syscall::WRITE,
    syscall::PREAD64,
    syscall::PWRITE64,
    syscall::READV,
    syscall::WRITEV,
    syscall::SENDFILE,
    syscall::CONNECT,
    syscall::ACCEPT,
    syscall::SENDTO,
    syscall::RECVFROM,
    syscall::SENDMSG,
    syscall::RECVMSG,
    syscall::ACCEPT4,
];
/// Socket writes whose start time matters when they block.
const WRITE_SYSCALLS: [i64; 5] = [
    syscall::WRITE,
    syscall::WRITEV,
    syscall::SENDFILE,
    syscall::SENDTO,
    syscall::SENDMSG,
];
/// A blocked-write slot older than this is taken over.
const STALE_BLOCKED_WRITE_NS: u64 = 10_000_000_000;

#[inline(always)]
fn stack_id<C: StackIdContext>(ctx: &C, flags: u64) -> i32 {
    let got = match ctx.get_stackid(&STACKS, flags) {
        // Its slot holds another stack: the spill map takes it.
        Err(e) if i64::from(e) == -errno::EEXIST => ctx
            .get_stackid(&STACKS_SPILL, flags)
            .map(|id| id + i64::from(STACKS_MAX)),
        got => got,
    };
    match got {
        Ok(id) => id as i32,
        Err(e) => {
            // -EFAULT: nothing to record (a kernel stack of a thread
            // sampled in user mode); anything else is a stack lost.
            if i64::from(e) != -errno::EFAULT {
                count(counter::STACK_LOST);
            }
            e
        }
    }
}

#[perf_event]
pub fn on_cpu(ctx: PerfEventContext) -> u32 {
    let _run = run(program::ON_CPU);
    let Some((tgid, tid)) = traced_current() else {
        return 0;
    };
    let user = stack_id(&ctx, u64::from(BPF_F_USER_STACK));
    let kernel = stack_id(&ctx, 0);
    add(
        &ONCPU_COUNTS,
        &StackKey {
            tgid,
            user_stack: user,
            kernel_stack: kernel,
            _pad: 0,
        },
        1,
    );
    emit(&SampleEvent {
        hdr: header(kind::SAMPLE, tgid, tid, now()),
        user_stack: user,
        kernel_stack: kernel,
        g: current_g(tgid),
    });
    0
}

/// `sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next, unsigned int prev_state)`.
/// It fires while `prev` is still current.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    let _run = run(program::SCHED_SWITCH);
    if setting(&OFF_CPU_ENABLED) == 0 {
        return 0;
    }
    // The clock is read only once a traced thread is involved: this runs
    // at every context switch of the machine, and a clock read costs more
    // than the checks.
    let mut ts = 0;
    let prev_state: u64 = ctx.arg(3);
    // A preempted thread is still runnable: waiting for a CPU, not blocked.
    if prev_state & 0xff != 0 {
        if let Some((tgid, tid)) = traced_current() {
            ts = now();
            block(&ctx, tgid, tid, ts);
        }
    }
    let next: *const u8 = ctx.arg(2);
    let offsets = setting(&OFFSETS);
    // SAFETY: a `struct task_struct *` argument; pid and tgid are its pid_t fields.
    unsafe {
        if is_traced(load_field::<u32>(next, offsets.task_tgid)) {
            if ts == 0 {
                ts = now();
            }
            resume(load_field::<u32>(next, offsets.task_pid), ts);
        }
    }
    0
}

/// The current thread blocks: remember when, where, and in which syscall.
#[inline(always)]
fn block(ctx: &BtfTracePointContext, tgid: u32, tid: u32, ts: u64) {
    let (syscall, fd) = blocking_syscall();
    // Most of a Go program's blocks, and none that a request waits in: not
    // worth their stacks.
    if contains(&traced::GO_PARKING, syscall) && traced_kind(tgid) == traced::GO {
        return;
    }
    if fd >= 0 && contains(&WRITE_SYSCALLS, syscall) {
        note_blocked_write(tid, fd, ts);
    }
    let start = OffCpuStart {
        ts,
        syscall,
        fd,
        tgid,
        user_stack: stack_id(ctx, u64::from(BPF_F_USER_STACK)),
        kernel_stack: stack_id(ctx, 0),
        waker_tid: 0,
        waker_tgid: 0,
        _pad: 0,
        waker_comm: [0; 16],
        g: current_g(tgid),
    };
    let _ = OFFCPU_START.insert(&tid, &start, 0);
}

#[inline(always)]
fn contains<const N: usize>(set: &[i64; N], nr: i64) -> bool {
    let mut i = 0;
    let mut found = false;
    while i < N {
        found |= set[i] == nr;
        i += 1;
    }
    found
}

/// The first block inside a socket write marks when the write started.
#[inline(always)]
fn note_blocked_write(tid: u32, fd: i64, ts: u64) {
    let Some(slot) = BLOCKED_WRITE.get_ptr_mut(tid % BLOCKED_WRITE_SLOTS) else {
        return;
    };
    // SAFETY: array slot, valid for this program's run.
    unsafe {
        if (*slot).ts != 0 && (*slot).tid == tid && i64::from((*slot).fd) == fd {
            return;
        }
        // Another writer holds the slot: its start time wins, unless it is
        // stale (a write that blocked on something other than a socket).
        if (*slot).ts != 0
            && (*slot).tid != tid
            && ts.saturating_sub((*slot).ts) < STALE_BLOCKED_WRITE_NS
        {
            count(counter::BLOCKED_WRITE_FULL);
            return;
        }
        *slot = BlockedWrite {
            ts,
            fd: fd as i32,
            tid,
        };
    }
}

/// The syscall the current thread is in, and the fd it waits on if it names one.
#[inline(always)]
fn blocking_syscall() -> (i64, i64) {
    let (nr, arg0, _) = current_syscall();
    if nr < 0 {
        return (-1, -1);
    }
    let mut fd = if contains(&FD_SYSCALLS, nr) {
        arg0 as i32 as i64
    } else {
        -1
    };
    if nr == syscall::POLL || nr == syscall::PPOLL {
        // `struct pollfd` starts with the fd; the first one is what a
        // single-socket wait (Python's socket timeouts) is about.
        // SAFETY: user memory of the current task, through the checked helper.
        fd = unsafe { bpf_probe_read_user(arg0 as *const i32) }.map_or(-1, i64::from);
    }
    (nr, fd)
}

/// `next` runs again: if it was a traced thread that blocked long enough, report it.
#[inline(always)]
fn resume(tid: u32, ts: u64) {
    // SAFETY: plain value copied out before removal.
    let Some(start) = (unsafe { OFFCPU_START.get(&tid) }).copied() else {
        return;
    };
    let _ = OFFCPU_START.remove(&tid);
    let blocked = ts.saturating_sub(start.ts);
    if blocked < setting(&MIN_BLOCK_NS) {
        return;
    }
    let key = StackKey {
        tgid: start.tgid,
        user_stack: start.user_stack,
        kernel_stack: start.kernel_stack,
        _pad: 0,
    };
    add(&OFFCPU_US, &key, blocked / 1000);
    emit(&OffCpuEvent {
        hdr: header(kind::OFF_CPU, start.tgid, tid, ts),
        start_ts: start.ts,
        user_stack: start.user_stack,
        kernel_stack: start.kernel_stack,
        syscall: start.syscall,
        fd: start.fd,
        waker_tid: start.waker_tid,
        waker_tgid: start.waker_tgid,
        waker_comm: start.waker_comm,
        g: start.g,
    });
}

/// `sched_wakeup(struct task_struct *p)`: note who woke a blocked traced thread.
#[btf_tracepoint(function = "sched_wakeup")]
pub fn sched_wakeup(ctx: BtfTracePointContext) -> i32 {
    let _run = run(program::SCHED_WAKEUP);
    if setting(&OFF_CPU_ENABLED) == 0 {
        return 0;
    }
    let task: *const u8 = ctx.arg(0);
    let offsets = setting(&OFFSETS);
    // SAFETY: a `struct task_struct *` argument; pid and tgid are its pid_t fields.
    let (tgid, tid) = unsafe {
        (
            load_field::<u32>(task, offsets.task_tgid),
            load_field::<u32>(task, offsets.task_pid),
        )
    };
    if !is_traced(tgid) {
        return 0;
    }
    let Some(start) = OFFCPU_START.get_ptr_mut(&tid) else {
        return 0;
    };
    let id = bpf_get_current_pid_tgid();
    // SAFETY: map value pointer valid for this program's run.
    unsafe {
        (*start).waker_tid = id as u32;
        (*start).waker_tgid = (id >> 32) as u32;
        (*start).waker_comm = bpf_get_current_comm().unwrap_or([0; 16]);
    }
    0
}
