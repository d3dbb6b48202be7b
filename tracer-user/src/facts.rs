//! Gathers what the diagnosis needs from a finished session: routes with
//! their stage totals, named causes and on-CPU hot spots, and listeners.

use rustc_hash::FxHashMap;

use crate::{
    causes,
    chain::Stage,
    collector::Collector,
    diagnose::{self, Diagnosis, ListenerFacts, RouteFacts},
    hotspot,
    stacks::Stacks,
    stats::Leaf,
    symbolize::Frame,
};

/// Causes named per route.
const CAUSES_NAMED: usize = 3;

pub fn diagnosis(collector: &Collector, stacks: &mut Stacks) -> Option<Diagnosis> {
    let stats = &collector.stats;
    // On-CPU handler stacks per route, from the chain flame graph's leaves.
    let mut on_cpu: FxHashMap<u32, Vec<(Vec<Frame>, u64)>> = FxHashMap::default();
    for (key, us) in &stats.folded {
        if let Leaf::OnCpu(stack) = key.leaf {
            on_cpu.entry(key.route).or_default().push((stacks.frames(stack), *us));
        }
    }
    let routes: Vec<RouteFacts> = stats
        .routes
        .iter()
        .enumerate()
        .map(|(id, (key, r))| {
            let handler_total = r.stage(Stage::Handler).total_us;
            RouteFacts {
                label: key.label(),
                count: r.count,
                p99_us: r.latency.quantile(0.99),
                stage_totals: Stage::LATENCY.iter().map(|&s| (s, r.stage(s).total_us)).collect(),
                causes: r
                    .top_causes(CAUSES_NAMED)
                    .into_iter()
                    .map(|(c, us)| {
                        let leaf = stacks.user_leaf(c.tgid, c.user_stack);
                        (causes::describe(&c, leaf.as_deref()), us / r.count.max(1))
                    })
                    .collect(),
                hot: on_cpu.get(&(id as u32)).and_then(|s| hotspot::hot_spot(s, handler_total)),
            }
        })
        .collect();
    let listeners: Vec<ListenerFacts> = collector
        .listeners
        .iter()
        .map(|(&port, l)| ListenerFacts { port, backlog_limit: l.backlog_limit, queue_peak: l.queue.peak(), overflows: l.drops() })
        .collect();
    diagnose::diagnose(&routes, &listeners, collector.open_peak)
}
