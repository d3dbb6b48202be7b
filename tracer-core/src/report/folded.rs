//! Folded stacks (the format of FlameGraph, inferno and speedscope): the
//! chain flame graph from the aggregates, and the on-CPU and off-CPU graphs
//! from the kernel's stack tables.

use std::{collections::BTreeMap, rc::Rc};

use rustc_hash::FxHashMap;
use tracer_common::StackKey;

use crate::{
    aggregate::{Aggregates, Leaf},
    analysis::causes::wait_name,
    stack::{Frame, StackNames},
};

/// A set of folded stacks: frames root first, and a count per stack.
#[derive(Default)]
pub struct Folded {
    lines: Vec<(String, u64)>,
}

impl Folded {
    pub fn add(&mut self, frames: &[&str], count: u64) {
        if count == 0 || frames.is_empty() {
            return;
        }
        let stack: Vec<String> = frames.iter().map(|f| sanitize(f)).collect();
        self.lines.push((stack.join(";"), count));
    }

    /// Each distinct stack (frames joined by `;`) with its count, sorted.
    pub fn stacks(&self) -> BTreeMap<&str, u64> {
        let mut merged: BTreeMap<&str, u64> = BTreeMap::new();
        for (stack, count) in &self.lines {
            *merged.entry(stack).or_default() += count;
        }
        merged
    }

    /// Lines sorted by stack, identical stacks merged.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (stack, count) in self.stacks() {
            out.push_str(stack);
            out.push(' ');
            out.push_str(&count.to_string());
            out.push('\n');
        }
        out
    }
}

/// Frames may not contain the separators of the folded format.
fn sanitize(frame: &str) -> String {
    frame
        .chars()
        .map(|c| match c {
            ';' => ':',
            '\n' | '\r' => ' ',
            c => c,
        })
        .collect()
}

/// The chain flame graph, in microseconds:
/// `process;METHOD /path;stage[;on-cpu|off-cpu;frames...|;waiting;what]`.
pub fn chains(agg: &Aggregates, names: &mut dyn StackNames) -> Folded {
    let mut folded = Folded::default();
    let mut labels: FxHashMap<u32, String> = FxHashMap::default();
    for (key, us) in agg.folded() {
        let label = labels.entry(key.route).or_insert_with(|| {
            agg.route_key(key.route)
                .map(crate::aggregate::RouteKey::label)
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
                frames.extend(names.frames(stack));
            }
            Leaf::OnCpu(stack) => {
                frames.push(Rc::from("on-cpu"));
                frames.extend(names.frames(stack));
            }
            Leaf::Waiting(target, wait) => {
                frames.push(Rc::from("waiting"));
                frames.push(Rc::from(wait_name(target, wait)));
            }
            Leaf::GoWait(tgid, stack) => {
                frames.push(Rc::from("goroutine-wait"));
                frames.extend(names.goroutine_frames(tgid, stack));
            }
        }
        folded.add(&frames.iter().map(|f| &**f).collect::<Vec<&str>>(), *us);
    }
    folded
}

/// `process;frames... count` from an in-kernel stack table's totals.
pub fn by_stack(
    totals: &[(StackKey, u64)],
    names: &mut dyn StackNames,
    comm_of: &dyn Fn(u32) -> Frame,
) -> Folded {
    let mut folded = Folded::default();
    for &(key, n) in totals {
        let mut frames = vec![comm_of(key.tgid)];
        frames.extend(names.frames(key));
        folded.add(&frames.iter().map(|f| &**f).collect::<Vec<&str>>(), n);
    }
    folded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_sanitizes() {
        let mut f = Folded::default();
        f.add(&["srv", "GET /a;b", "handler"], 5);
        f.add(&["srv", "GET /a;b", "handler"], 7);
        f.add(&["srv", "GET /c", "read_wait"], 1);
        f.add(&["srv"], 0);
        assert_eq!(
            f.render(),
            "srv;GET /a:b;handler 12\nsrv;GET /c;read_wait 1\n"
        );
    }
}
