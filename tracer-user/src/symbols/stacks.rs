//! Stack ids from the kernel's stack map, turned into frame names once and
//! cached: resolved while the run goes on, so processes that exit before the
//! end still have their stacks named.

use std::rc::Rc;

use crate::kernel::probes::StackMaps;
use rustc_hash::{FxHashMap, FxHashSet};
use tracer_common::{STACKS_MAX, StackKey};

use tracer_core::stack::{Frame, StackNames};

use super::symbolize::Symbolizer;

pub struct Stacks {
    maps: StackMaps,
    sym: Symbolizer,
    /// Goroutine stacks the sampler read, named at once (root first), and
    /// their addresses (leaf first), by id.
    goroutines: FxHashMap<u32, (Rc<[Frame]>, Vec<u64>)>,
    goroutine_ids: FxHashMap<(u32, Vec<u64>), u32>,
    next_goroutine_id: u32,
    /// Wait reasons' names per Go program.
    wait_reasons: FxHashMap<u32, Vec<String>>,
    user: FxHashMap<(u32, i32), Rc<[Frame]>>,
    kernel: FxHashMap<i32, Rc<[Frame]>>,
    seen: FxHashSet<StackKey>,
    pending: Vec<StackKey>,
}

impl Stacks {
    pub fn new(maps: StackMaps) -> Self {
        Stacks {
            maps,
            sym: Symbolizer::new(),
            goroutines: FxHashMap::default(),
            goroutine_ids: FxHashMap::default(),
            next_goroutine_id: 0,
            wait_reasons: FxHashMap::default(),
            user: FxHashMap::default(),
            kernel: FxHashMap::default(),
            seen: FxHashSet::default(),
            pending: Vec::new(),
        }
    }

    /// Snapshot a traced process's mappings while it lives.
    pub fn watch(&mut self, pid: u32) {
        self.sym.watch(pid);
    }

    /// Forgets a process that exited: its mappings, wait reasons and the
    /// names of its stacks. Only while no window holds its stacks.
    pub fn forget(&mut self, pid: u32) {
        self.sym.forget(pid);
        self.wait_reasons.remove(&pid);
        self.user.retain(|(p, _), _| *p != pid);
        self.seen.retain(|k| k.tgid != pid);
        let goroutines = &mut self.goroutines;
        self.goroutine_ids.retain(|(p, _), id| {
            if *p == pid {
                goroutines.remove(id);
            }
            *p != pid
        });
    }

    /// Empties the kernel's stack table and the names kept by stack id:
    /// a daemon meets new stacks for months, and the table is fixed in
    /// size. Only while no window holds stack ids.
    pub fn reset(&mut self) {
        for map in [&mut self.maps.main, &mut self.maps.spill] {
            let ids: Vec<u32> = map.stack_ids().filter_map(Result::ok).collect();
            for id in ids {
                let _ = map.remove(&id);
            }
        }
        self.user.clear();
        self.kernel.clear();
        self.seen.clear();
        self.pending.clear();
    }

    /// The names of the wait reasons of Go program `pid`.
    pub fn set_wait_reasons(&mut self, pid: u32, names: Vec<String>) {
        self.wait_reasons.insert(pid, names);
    }

    /// An id for a goroutine stack of `pid` (pcs leaf first), named now,
    /// while the process lives.
    pub fn intern_goroutine(&mut self, pid: u32, pcs: &[u64]) -> u32 {
        if let Some(&id) = self.goroutine_ids.get(&(pid, pcs.to_vec())) {
            return id;
        }
        let mut frames = self.sym.user(pid, pcs);
        frames.reverse();
        let id = self.next_goroutine_id;
        self.next_goroutine_id = self.next_goroutine_id.wrapping_add(1);
        self.goroutines.insert(id, (frames.into(), pcs.to_vec()));
        self.goroutine_ids.insert((pid, pcs.to_vec()), id);
        id
    }

    /// Remember a stack to resolve at the next [`Stacks::resolve_pending`].
    pub fn note(&mut self, key: StackKey) {
        if self.seen.insert(key) {
            self.pending.push(key);
        }
    }

    pub fn note_all(&mut self, keys: impl IntoIterator<Item = StackKey>) {
        for key in keys {
            self.note(key);
        }
    }

    /// Names the stacks noted since the last call.
    pub fn resolve_pending(&mut self) {
        for key in std::mem::take(&mut self.pending) {
            self.user_frames(key.tgid, key.user_stack);
            self.kernel_frames(key.kernel_stack);
        }
    }

    fn ips(&self, id: i32) -> Vec<u64> {
        let Ok(id) = u32::try_from(id) else {
            return Vec::new();
        };
        let (map, id) = match id.checked_sub(STACKS_MAX) {
            Some(spilled) => (&self.maps.spill, spilled),
            None => (&self.maps.main, id),
        };
        map.get(&id, 0)
            .map(|st| st.frames().iter().map(|f| f.ip).collect())
            .unwrap_or_default()
    }

    /// User frames, leaf first.
    fn user_frames(&mut self, tgid: u32, id: i32) -> Rc<[Frame]> {
        if let Some(f) = self.user.get(&(tgid, id)) {
            return f.clone();
        }
        let ips = self.ips(id);
        let frames: Rc<[Frame]> = self.sym.user(tgid, &ips).into();
        self.user.insert((tgid, id), frames.clone());
        frames
    }

    /// Kernel frames, leaf first, without the tracer's own frames (a stack
    /// taken in `sched_switch` starts inside the BPF program that took it).
    fn kernel_frames(&mut self, id: i32) -> Rc<[Frame]> {
        if let Some(f) = self.kernel.get(&id) {
            return f.clone();
        }
        let ips = self.ips(id);
        let named = self.sym.kernel(&ips);
        let own = named.iter().take_while(|f| is_tracing_frame(f)).count();
        let frames: Rc<[Frame]> = named[own..].into();
        self.kernel.insert(id, frames.clone());
        frames
    }
}

impl StackNames for Stacks {
    /// The whole stack, root first: user frames, then the kernel's. Runs of
    /// unnamed frames (code without frame pointers unwinds into garbage) are
    /// shown once.
    fn frames(&mut self, key: StackKey) -> Vec<Frame> {
        let user = self.user_frames(key.tgid, key.user_stack);
        let kernel = self.kernel_frames(key.kernel_stack);
        let mut out: Vec<Frame> = Vec::with_capacity(user.len() + kernel.len() + 2);
        // The kernel could not record this part (counted in `stacks_lost`).
        if is_lost(key.user_stack) {
            out.push(Rc::from("[user stack lost]"));
        }
        for f in user.iter().rev().chain(kernel.iter().rev()) {
            if !(is_unknown(f) && out.last().is_some_and(|l| is_unknown(l))) {
                out.push(f.clone());
            }
        }
        if is_lost(key.kernel_stack) {
            out.push(Rc::from("[kernel stack lost]"));
        }
        out
    }

    /// The innermost user frame: the function that made the blocking call.
    fn user_leaf(&mut self, tgid: u32, id: i32) -> Option<Frame> {
        self.user_frames(tgid, id).first().cloned()
    }

    fn goroutine_frames(&mut self, _tgid: u32, stack: u32) -> Vec<Frame> {
        self.goroutines
            .get(&stack)
            .map(|(f, _)| f.to_vec())
            .unwrap_or_default()
    }

    fn goroutine_call_site(&mut self, tgid: u32, stack: u32, frame: usize) -> Option<String> {
        let (_, pcs) = self.goroutines.get(&stack)?;
        // Root-first index to leaf-first; all but the leaf are return addresses.
        let i = pcs.len().checked_sub(1)?.checked_sub(frame)?;
        let addr = pcs[i];
        let ret = if i == 0 { addr + 1 } else { addr };
        self.sym.go_call_site(tgid, ret)
    }

    fn wait_reason(&mut self, tgid: u32, reason: u8) -> Option<String> {
        self.wait_reasons
            .get(&tgid)?
            .get(usize::from(reason))
            .cloned()
    }
}

/// A stack id the kernel could not record, as opposed to an empty stack
/// (`-EFAULT`: a kernel stack taken in user mode).
fn is_lost(id: i32) -> bool {
    id < 0 && i64::from(id) != -tracer_common::errno::EFAULT
}

fn is_unknown(frame: &str) -> bool {
    frame == "[unknown]"
}

/// Frames of the tracing machinery itself: BPF programs and their trampolines.
fn is_tracing_frame(frame: &str) -> bool {
    [
        "bpf_prog_",
        "bpf_trace_run",
        "__bpf_trace_",
        "__traceiter_",
        "bpf_get_stack",
    ]
    .iter()
    .any(|p| frame.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_stacks_are_not_lost_ones() {
        assert!(!is_lost(3));
        assert!(!is_lost(-14), "-EFAULT: nothing to record");
        assert!(is_lost(-17), "-EEXIST: a collision");
        assert!(is_lost(-12), "-ENOMEM: the map is full");
    }

    #[test]
    fn tracing_frames_are_recognised() {
        assert!(is_tracing_frame(
            "bpf_prog_f4cf79ca015d37c0_sched_switch_[k]"
        ));
        assert!(is_tracing_frame("bpf_trace_run4_[k]"));
        assert!(!is_tracing_frame("__schedule_[k]"));
        assert!(!is_tracing_frame("schedule_[k]"));
    }
}
