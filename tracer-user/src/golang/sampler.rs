//! The goroutine sampler: looks, from outside and without stopping
//! anything, at the goroutines serving requests of Go programs, and notes
//! those the runtime has parked (a lock, a channel, a sleep) with their
//! wait reason and stack.
//!
//! A look reads the goroutine's `runtime.g` (status, wait reason, saved
//! `sp`/`pc`/`bp`), then, if it is parked somewhere new, the top of its
//! stack, walked by frame pointers (Go keeps them). The `runtime.g` of all
//! a tick's goroutines of one process come in one `process_vm_readv`: under
//! load most looks find a goroutine busy, and the call is most of a look. Nothing is written and no
//! uprobe is hit: the traced program pays nothing. The work is capped per
//! tick; with more goroutines in handlers than the cap, they are looked at
//! in turn, and each look stands for the time since the previous one.

use std::io::IoSliceMut;

use rustc_hash::FxHashMap;
use tracer_core::{attribution::GoWait, report::GoroutineSampling};

use super::layout::Layout;
use crate::symbols::stacks::Stacks;

/// Goroutines looked at per tick, at most.
pub const LOOKS_PER_TICK: usize = 16;
/// Looks further apart than this are not joined (a goroutine not looked at
/// for longer is not assumed to have waited the same way all along); a
/// first look stands for a tick around it.
const MAX_SPAN_NS: u64 = 50_000_000;
const FIRST_SPAN_NS: u64 = 2_000_000;
/// Stack bytes read from the saved stack pointer, a chunk at a time while
/// the frame chain goes on: deep enough for a handler's frames under
/// `net/http.(*conn).serve`.
const STACK_CHUNK: usize = 4 * 1024;
const STACK_BYTES: usize = 16 * 1024;
const MAX_FRAMES: usize = 64;
/// `_Gwaiting`, and the bit the garbage collector sets while scanning.
const G_WAITING: u32 = 4;
const G_SCAN: u32 = 0x1000;
/// `runtime.g` bytes read: every field the sampler needs lies below.
const G_BYTES: usize = 256;

#[derive(Default)]
pub struct Sampler {
    /// Off (`--no-goroutines`): processes are not taken.
    off: bool,
    layouts: FxHashMap<u32, Layout>,
    /// When each goroutine was last looked at, and if it was parked, where
    /// (saved pc and sp) with the stack read there: a goroutine still
    /// parked at the same place has the same stack, which is not read again.
    last_look: FxHashMap<u64, LastLook>,
    /// Where the round-robin over open goroutines resumes.
    cursor: usize,
    /// Looks made, and reads that failed (a goroutine gone meanwhile).
    pub looks: u64,
    pub failed: u64,
}

impl Sampler {
    pub fn new(on: bool) -> Self {
        Sampler {
            off: !on,
            ..Sampler::default()
        }
    }

    pub fn add_process(&mut self, tgid: u32, layout: Layout) {
        if !self.off {
            self.layouts.insert(tgid, layout);
        }
    }

    pub fn remove_process(&mut self, tgid: u32) {
        self.layouts.remove(&tgid);
    }

    pub fn is_empty(&self) -> bool {
        self.layouts.is_empty()
    }

    /// What the sampler did, for the report.
    pub fn summary(&self) -> GoroutineSampling {
        GoroutineSampling {
            enabled: !self.off,
            processes: self.layouts.len() as u32,
            looks: self.looks,
            unreadable: self.failed,
        }
    }

    /// No goroutine serves a request: the next look at any starts afresh.
    pub fn rest(&mut self) {
        if !self.last_look.is_empty() {
            self.last_look.clear();
        }
    }

    /// Looks at up to [`LOOKS_PER_TICK`] of `open` — (tgid, g) of goroutines
    /// serving requests — at monotonic time `now`, and returns the waits seen.
    pub fn tick(
        &mut self,
        open: &[(u32, u64)],
        now: u64,
        stacks: &mut Stacks,
    ) -> Vec<(u64, GoWait)> {
        let mut out = Vec::new();
        if open.is_empty() {
            self.rest();
            return out;
        }
        let n = open.len().min(LOOKS_PER_TICK);
        let picked: Vec<(u32, u64)> = (0..n)
            .map(|k| open[(self.cursor + k) % open.len()])
            .collect();
        let mut gbufs = vec![[0u8; G_BYTES]; n];
        let readable = read_gs(&picked, &mut gbufs);
        for (k, &(tgid, g)) in picked.iter().enumerate() {
            let Some(layout) = self.layouts.get(&tgid) else {
                continue;
            };
            let last = self.last_look.get(&g).copied();
            let (start, end) = stands_for(last, now);
            let before = last.and_then(|l| l.parked);
            self.looks += 1;
            let seen = if readable[k] {
                look(tgid, &gbufs[k], layout, before, stacks)
            } else {
                Look::Unreadable
            };
            let parked = match seen {
                Look::Waiting(p) => Some(p),
                _ => None,
            };
            self.last_look.insert(
                g,
                LastLook {
                    at: now,
                    until: end,
                    parked,
                },
            );
            match seen {
                Look::Waiting(Parked { reason, stack, .. }) if end > start => {
                    out.push((
                        g,
                        GoWait {
                            start,
                            end,
                            tgid,
                            reason,
                            stack,
                        },
                    ));
                }
                Look::Waiting(_) | Look::Busy => {}
                Look::Unreadable => self.failed += 1,
            }
        }
        self.cursor = (self.cursor + n) % open.len();
        if self.last_look.len() > open.len() * 2 + 64 {
            let live: rustc_hash::FxHashSet<u64> = open.iter().map(|&(_, g)| g).collect();
            self.last_look.retain(|g, _| live.contains(g));
        }
        out
    }
}

/// The sampler's last look at a goroutine: when, up to when its time
/// counted, and where it was parked if it was.
#[derive(Clone, Copy)]
struct LastLook {
    at: u64,
    until: u64,
    parked: Option<Parked>,
}

/// A parked goroutine: where it parked, why, and its stack's id.
#[derive(Clone, Copy)]
struct Parked {
    pc: u64,
    sp: u64,
    reason: u8,
    stack: u32,
}

/// The time a look at `now` stands for: from where the previous look's
/// time ended to half-way to the next look, taken to be as far off as the
/// previous one. Looks tile time, however irregular the ticks: no gaps,
/// and no time counted twice (a look that comes before the previous one's
/// time ended stands for nothing).
fn stands_for(last: Option<LastLook>, now: u64) -> (u64, u64) {
    match last {
        Some(l) if now.saturating_sub(l.at) <= MAX_SPAN_NS => {
            (l.until, l.until.max(now + (now - l.at) / 2))
        }
        _ => (
            now.saturating_sub(FIRST_SPAN_NS / 2),
            now + FIRST_SPAN_NS / 2,
        ),
    }
}

enum Look {
    /// Parked by the runtime.
    Waiting(Parked),
    /// Running, runnable, or in a system call: the kernel's samples and
    /// blocks cover it.
    Busy,
    Unreadable,
}

/// What goroutine `gbuf` (its `runtime.g`, of process `tgid`) is doing;
/// its stack is read only if it parked somewhere else than `before`.
fn look(
    tgid: u32,
    gbuf: &[u8; G_BYTES],
    l: &Layout,
    before: Option<Parked>,
    stacks: &mut Stacks,
) -> Look {
    let u32_at = |o: u32| {
        let o = o as usize;
        gbuf.get(o..o + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: u32| {
        let o = o as usize;
        gbuf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes)
    };
    if u32_at(l.atomicstatus) & !G_SCAN != G_WAITING {
        return Look::Busy;
    }
    let reason = gbuf.get(l.waitreason as usize).copied().unwrap_or(0);
    let (pc, sp, bp) = (
        u64_at(l.sched + l.gobuf_pc),
        u64_at(l.sched + l.gobuf_sp),
        u64_at(l.sched + l.gobuf_bp),
    );
    if let Some(p) = before.filter(|p| p.pc == pc && p.sp == sp && p.reason == reason) {
        return Look::Waiting(p);
    }
    // `runtime.g` starts with its stack bounds.
    let hi = u64_at(8);
    let pcs = read_stack(tgid, pc, sp, bp, hi);
    Look::Waiting(Parked {
        pc,
        sp,
        reason,
        stack: stacks.intern_goroutine(tgid, &pcs),
    })
}

/// The frames of a parked goroutine, leaf first: its saved pc, then the
/// return addresses up the frame-pointer chain, read a chunk at a time.
fn read_stack(tgid: u32, pc: u64, sp: u64, bp: u64, hi: u64) -> Vec<u64> {
    let mut pcs = vec![pc];
    if sp == 0 || sp >= hi {
        return pcs;
    }
    let limit = usize::try_from(hi - sp)
        .unwrap_or(STACK_BYTES)
        .min(STACK_BYTES);
    let mut stack = Vec::new();
    while stack.len() < limit {
        let from = stack.len();
        stack.resize((from + STACK_CHUNK).min(limit), 0);
        let got = read(tgid, sp + from as u64, &mut stack[from..]);
        stack.truncate(from + got);
        pcs.truncate(1);
        let end = walk(&stack, sp, bp, &mut pcs);
        if got == 0 || end != Walk::OutOfBuffer {
            break;
        }
    }
    pcs
}

#[derive(Debug, PartialEq, Eq)]
enum Walk {
    /// The chain ended (or turned into garbage).
    Done,
    /// The next frame lies beyond what was read.
    OutOfBuffer,
}

/// Follows the frame-pointer chain from `bp` inside `stack` (read from
/// address `base`): each frame holds the caller's `bp`, then the return address.
fn walk(stack: &[u8], base: u64, mut bp: u64, pcs: &mut Vec<u64>) -> Walk {
    let word = |addr: u64| -> Option<u64> {
        let off = usize::try_from(addr.checked_sub(base)?).ok()?;
        Some(u64::from_le_bytes(
            stack.get(off..off + 8)?.try_into().ok()?,
        ))
    };
    while pcs.len() < MAX_FRAMES {
        let (Some(next), Some(ret)) = (word(bp), word(bp + 8)) else {
            return if bp >= base {
                Walk::OutOfBuffer
            } else {
                Walk::Done
            };
        };
        if ret == 0 {
            break;
        }
        pcs.push(ret);
        // Frames go up the stack; anything else is the end (or garbage).
        if next <= bp {
            break;
        }
        bp = next;
    }
    Walk::Done
}

/// Reads the `runtime.g` of each (tgid, g) into `bufs`, a system call per
/// run of one process; returns which were read whole. The kernel stops at
/// the first region it cannot read: those after it are read again alone.
fn read_gs(gs: &[(u32, u64)], bufs: &mut [[u8; G_BYTES]]) -> Vec<bool> {
    let mut whole = vec![false; gs.len()];
    let mut from = 0;
    while from < gs.len() {
        let tgid = gs[from].0;
        let to = from + gs[from..].iter().take_while(|&&(t, _)| t == tgid).count();
        let local: Vec<IoSliceMut> = bufs[from..to]
            .iter_mut()
            .map(|b| IoSliceMut::new(b))
            .collect();
        let remote: Vec<libc::iovec> = gs[from..to]
            .iter()
            .map(|&(_, g)| libc::iovec {
                iov_base: g as *mut libc::c_void,
                iov_len: G_BYTES,
            })
            .collect();
        // SAFETY: the local iovecs cover `bufs`, which outlive the call; the
        // remote ones are only read, by the kernel, in the other process.
        let n = unsafe {
            libc::process_vm_readv(
                tgid as libc::pid_t,
                local.as_ptr().cast::<libc::iovec>(),
                local.len() as libc::c_ulong,
                remote.as_ptr(),
                remote.len() as libc::c_ulong,
                0,
            )
        };
        drop(local);
        let done = usize::try_from(n).unwrap_or(0) / G_BYTES;
        for k in from..to {
            whole[k] = k < from + done
                || (k > from + done && read(tgid, gs[k].1, &mut bufs[k]) == G_BYTES);
        }
        from = to;
    }
    whole
}

/// Reads `buf.len()` bytes at `addr` of process `tgid`; returns how many were read.
fn read(tgid: u32, addr: u64, buf: &mut [u8]) -> usize {
    let len = buf.len();
    let local = [IoSliceMut::new(buf)];
    let remote = [libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    }];
    // SAFETY: the local iovec covers `buf`, which outlives the call; the
    // remote one is only read, by the kernel, in the other process.
    let n = unsafe {
        libc::process_vm_readv(
            tgid as libc::pid_t,
            local.as_ptr().cast::<libc::iovec>(),
            1,
            remote.as_ptr(),
            1,
            0,
        )
    };
    usize::try_from(n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_frame_pointers_upward_only() {
        // Frames at 0x1010 -> 0x1030 -> 0x1050 (whose saved bp points down: the end).
        let base = 0x1000u64;
        let mut stack = vec![0u8; 0x80];
        let mut put = |addr: u64, v: u64| {
            let o = (addr - base) as usize;
            stack[o..o + 8].copy_from_slice(&v.to_le_bytes());
        };
        put(0x1010, 0x1030);
        put(0x1018, 0xaaa);
        put(0x1030, 0x1050);
        put(0x1038, 0xbbb);
        put(0x1050, 0x1008);
        put(0x1058, 0xccc);
        let mut pcs = vec![0x999];
        assert_eq!(walk(&stack, base, 0x1010, &mut pcs), Walk::Done);
        assert_eq!(pcs, vec![0x999, 0xaaa, 0xbbb, 0xccc]);
        let mut beyond = vec![1];
        assert_eq!(walk(&stack, base, 0x9000, &mut beyond), Walk::OutOfBuffer);
        assert_eq!(beyond, vec![1], "a bp beyond the stack read asks for more");
        assert_eq!(
            walk(&stack, base, 0x10, &mut beyond),
            Walk::Done,
            "below it: garbage"
        );
    }

    #[test]
    fn looks_tile_time_however_irregular_the_ticks() {
        const MS: u64 = 1_000_000;
        let mut last = None;
        let mut spans = Vec::new();
        for at in [100 * MS, 102 * MS, 110 * MS, 111 * MS, 200 * MS] {
            let (start, until) = stands_for(last, at);
            spans.push((start / MS, until / MS));
            last = Some(LastLook {
                at,
                until,
                parked: None,
            });
        }
        // 99-101, then each from where the last ended; the last look comes
        // after more than MAX_SPAN, so it starts afresh.
        assert_eq!(
            spans,
            vec![(99, 101), (101, 103), (103, 114), (114, 114), (199, 201)]
        );
    }

    #[test]
    fn reading_another_process_memory_and_failing_cleanly() {
        let value: u64 = 0x1234_5678_9abc_def0;
        let mut buf = [0u8; 8];
        let n = read(
            std::process::id(),
            std::ptr::addr_of!(value) as u64,
            &mut buf,
        );
        assert_eq!(n, 8);
        assert_eq!(u64::from_le_bytes(buf), value);
        assert_eq!(read(std::process::id(), 8, &mut buf), 0, "unmapped");
    }
}
