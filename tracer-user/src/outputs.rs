//! Writing a session's outputs: report.json and the three flame graphs
//! (request chains, on-CPU, off-CPU), each as folded stacks and SVG.

use std::{path::Path, rc::Rc};

use anyhow::{Context, Result};
use aya::maps::{MapData, PerCpuHashMap};
use rustc_hash::FxHashMap;
use tracer_common::StackKey;

use crate::{
    collector::Collector, flame::Folded, probes::Tables, report::Report, session::Traced,
    stacks::Stacks, stats::Leaf, symbolize::Frame,
};

/// Writes everything into `dir`; returns the names of the files written.
pub fn write(
    dir: &Path,
    report: &Report,
    collector: &Collector,
    stacks: &mut Stacks,
    traced: &[Traced],
    oncpu: &PerCpuHashMap<MapData, StackKey, u64>,
    offcpu_us: &PerCpuHashMap<MapData, StackKey, u64>,
) -> Result<Vec<&'static str>> {
    let json = serde_json::to_string_pretty(report)?;
    let path = dir.join("report.json");
    std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
    let mut written = vec!["report.json"];

    let procs: Vec<&str> = {
        let mut v: Vec<&str> = traced.iter().map(|t| t.comm.as_str()).collect();
        v.dedup();
        v
    };
    let run = format!("{}, {:.1}s", procs.join(", "), report.duration_s);
    let comm_of = |tgid: u32| -> Frame {
        traced
            .iter()
            .find(|t| t.pid == tgid)
            .map_or_else(|| Rc::from(tgid.to_string()), |t| Rc::from(t.comm.as_str()))
    };

    chains(collector, stacks).write(
        dir,
        "chains",
        &format!("request time by stage: {run}"),
        "us",
    )?;
    written.extend(["chains.folded", "chains.svg"]);

    let s = &report.sampling;
    if s.freq_hz > 0 {
        let folded = by_stack(&Tables::totals(oncpu), stacks, &comm_of);
        folded.write(
            dir,
            "oncpu",
            &format!("on-CPU samples at {} Hz: {run}", s.freq_hz),
            "samples",
        )?;
        written.extend(["oncpu.folded", "oncpu.svg"]);
    }
    if s.off_cpu {
        let folded = by_stack(&Tables::totals(offcpu_us), stacks, &comm_of);
        let title = format!(
            "off-CPU time, blocks of {} µs or more: {run}",
            s.min_block_us
        );
        folded.write(dir, "offcpu", &title, "us")?;
        written.extend(["offcpu.folded", "offcpu.svg"]);
    }
    Ok(written)
}

/// `process;METHOD /path;stage[;on-cpu|off-cpu;frames...] microseconds`.
fn chains(collector: &Collector, stacks: &mut Stacks) -> Folded {
    let mut folded = Folded::default();
    let mut labels: FxHashMap<u32, String> = FxHashMap::default();
    for (key, us) in &collector.stats.folded {
        let label = labels.entry(key.route).or_insert_with(|| {
            collector
                .stats
                .route_key(key.route)
                .map(|r| r.label())
                .unwrap_or_default()
        });
        let mut frames: Vec<Frame> = vec![
            key.comm.clone(),
            Rc::from(label.as_str()),
            Rc::from(key.stage.name()),
        ];
        match key.leaf {
            Leaf::Stage => {}
            Leaf::OffCpu(stack) => {
                frames.push(Rc::from("off-cpu"));
                frames.extend(stacks.frames(stack));
            }
            Leaf::OnCpu(stack) => {
                frames.push(Rc::from("on-cpu"));
                frames.extend(stacks.frames(stack));
            }
            Leaf::Waiting(target, wait) => {
                frames.push(Rc::from("waiting"));
                let target = crate::causes::target_name(target);
                frames.push(Rc::from(match wait {
                    crate::exchanges::Wait::Response => format!("response from {target}"),
                    crate::exchanges::Wait::Connect => format!("connect to {target}"),
                }));
            }
        }
        folded.add(&frames.iter().map(|f| &**f).collect::<Vec<&str>>(), *us);
    }
    folded
}

/// `process;frames... count` from an in-kernel stack table.
fn by_stack(
    totals: &[(StackKey, u64)],
    stacks: &mut Stacks,
    comm_of: &dyn Fn(u32) -> Frame,
) -> Folded {
    let mut folded = Folded::default();
    for &(key, n) in totals {
        let mut frames = vec![comm_of(key.tgid)];
        frames.extend(stacks.frames(key));
        folded.add(&frames.iter().map(|f| &**f).collect::<Vec<&str>>(), n);
    }
    folded
}
