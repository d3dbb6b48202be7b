//! Where a handler's CPU time goes: the hot spot of its on-CPU stacks.

use rustc_hash::FxHashMap;

use super::diagnose::{EXPLAINS_PCT, HotSpot};
use crate::stack::Frame;

/// Frames of Go's allocator and garbage collector.
const GO_ALLOC_AND_GC: &[&str] = &[
    "runtime.mallocgc",
    "runtime.newobject",
    "runtime.makeslice",
    "runtime.growslice",
    "runtime.gcAssistAlloc",
    "runtime.gcBgMarkWorker",
    "runtime.gcDrain",
    "runtime.gcDrainN",
    "runtime.scanobject",
    "runtime.markroot",
    "runtime.bgsweep",
    "runtime.sweepone",
];

#[derive(Default)]
struct Node {
    total: u64,
    children: FxHashMap<Frame, Node>,
}

/// The hot spot of on-CPU stacks (root-first frames, µs each): walking from
/// the root, follow the child that holds at least half of its parent's time;
/// where no child does, the time spreads out, and that frame is the hot spot.
/// Past the first frame the walk also stops above a frame that alone would
/// no longer explain the handler (`EXPLAINS_PCT` of its time): the deepest
/// frame that does is named, not one a step below it that falls short.
pub fn hot_spot(stacks: &[(Vec<Frame>, u64)], handler_total_us: u64) -> Option<HotSpot> {
    let mut root = Node::default();
    for (frames, us) in stacks {
        let mut node = &mut root;
        node.total += us;
        for f in frames {
            node = node.children.entry(f.clone()).or_default();
            node.total += us;
        }
    }
    if root.total == 0 {
        return None;
    }
    let mut node = &root;
    let mut name: Option<&Frame> = None;
    let explains = |us: u64| us as f64 * 100.0 >= EXPLAINS_PCT * handler_total_us as f64;
    while let Some((frame, child)) = node.children.iter().max_by_key(|(_, c)| c.total) {
        if child.total * 2 < node.total
            || (name.is_some() && explains(node.total) && !explains(child.total))
        {
            break;
        }
        name = Some(frame);
        node = child;
    }
    let gc: u64 = stacks
        .iter()
        .filter(|(frames, _)| frames.iter().any(|f| GO_ALLOC_AND_GC.contains(&&**f)))
        .map(|(_, us)| us)
        .sum();
    Some(HotSpot {
        function: name?.to_string(),
        share_of_cpu_pct: node.total as f64 * 100.0 / root.total as f64,
        share_of_handler_pct: if handler_total_us == 0 {
            0.0
        } else {
            (node.total as f64 * 100.0 / handler_total_us as f64).min(100.0)
        },
        allocator_and_gc: gc * 2 >= root.total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    fn stack(frames: &str, us: u64) -> (Vec<Frame>, u64) {
        (frames.split(';').map(Rc::from).collect(), us)
    }

    #[test]
    fn follows_the_dominant_path_to_where_time_spreads() {
        let stacks = vec![
            stack(
                "runtime.goexit;net/http.(*conn).serve;main.handler;main.burnCPU",
                900,
            ),
            stack(
                "runtime.goexit;net/http.(*conn).serve;main.handler;main.burnCPU;time.Now",
                50,
            ),
            stack(
                "runtime.goexit;net/http.(*conn).serve;net/http.(*conn).readRequest",
                50,
            ),
        ];
        let h = hot_spot(&stacks, 2000).expect("hot spot");
        assert_eq!(h.function, "main.burnCPU");
        assert!((h.share_of_cpu_pct - 95.0).abs() < 0.01);
        assert!((h.share_of_handler_pct - 47.5).abs() < 0.01);
        assert!(!h.allocator_and_gc);
    }

    #[test]
    fn allocation_heavy_handlers_are_recognised() {
        let stacks = vec![
            stack(
                "runtime.goexit;main.handler;main.build;runtime.newobject;runtime.mallocgc;runtime.memclrNoHeapPointers",
                300,
            ),
            stack(
                "runtime.goexit;main.handler;main.build;runtime.newobject;runtime.mallocgc;runtime.gcAssistAlloc",
                300,
            ),
            stack(
                "runtime.goexit;main.handler;main.build;runtime.newobject;runtime.mallocgc;runtime.nextFreeFast",
                100,
            ),
            stack("runtime.goexit;main.handler;main.build", 100),
        ];
        let h = hot_spot(&stacks, 1000).expect("hot spot");
        assert_eq!(h.function, "runtime.mallocgc");
        assert!(h.allocator_and_gc);
    }

    /// The allocator's own frame holds 18% of the handler, the frame above
    /// it 26%: that one is named, since it alone explains the handler.
    #[test]
    fn the_deepest_frame_that_explains_the_handler_is_named() {
        let stacks = vec![
            stack(
                "runtime.goexit;main.handler;main.build;runtime.newobject;runtime.mallocgc",
                180,
            ),
            stack(
                "runtime.goexit;main.handler;main.build;runtime.newobject;runtime.memclrNoHeapPointers",
                40,
            ),
            stack(
                "runtime.goexit;main.handler;main.build;runtime.newobject",
                40,
            ),
            stack("runtime.goexit;main.handler", 40),
        ];
        let h = hot_spot(&stacks, 1000).expect("hot spot");
        assert_eq!(h.function, "runtime.newobject");
        assert!((h.share_of_handler_pct - 26.0).abs() < 0.01);
        // With a handler the allocator alone explains, it is named itself.
        let h = hot_spot(&stacks, 800).expect("hot spot");
        assert_eq!(h.function, "runtime.mallocgc");
    }

    #[test]
    fn no_samples_no_hot_spot() {
        assert_eq!(hot_spot(&[], 100), None);
    }
}
