//! What each traced thread (or, in Go, goroutine) did over time, off and on
//! the CPU, kept just long enough to attribute it to the request it was
//! serving.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use super::{Attribution, GoWait, OffCpu, Sample, Worker};

/// Entries kept per thread, bounded so that a thread outliving every
/// request cannot grow: at 99 Hz, ten seconds of samples of a thread that
/// never stops running, and that many blocks of at least the minimum.
const KEEP_PER_THREAD: usize = 1024;
/// Entries older than this (relative to the newest) are forgotten: a
/// handler that runs longer loses the attribution of its first minutes.
const HORIZON_NS: u64 = 5 * 60 * 1_000_000_000;

#[derive(Default)]
struct ThreadLog {
    off: VecDeque<OffCpu>,
    samples: VecDeque<Sample>,
    go_waits: VecDeque<GoWait>,
}

#[derive(Default)]
pub struct Timeline {
    threads: FxHashMap<Worker, ThreadLog>,
}

fn trim<T>(q: &mut VecDeque<T>, newest: u64, ts: impl Fn(&T) -> u64) {
    while q.len() > KEEP_PER_THREAD
        || q.front()
            .is_some_and(|e| newest.saturating_sub(ts(e)) > HORIZON_NS)
    {
        q.pop_front();
    }
}

impl Timeline {
    pub fn push_off_cpu(&mut self, worker: Worker, off: OffCpu) {
        let log = self.threads.entry(worker).or_default();
        log.off.push_back(off);
        trim(&mut log.off, off.end, |o| o.end);
    }

    pub fn push_sample(&mut self, worker: Worker, s: Sample) {
        let log = self.threads.entry(worker).or_default();
        log.samples.push_back(s);
        trim(&mut log.samples, s.ts, |s| s.ts);
    }

    /// A goroutine wait; one that goes on where the last one of the same
    /// worker left off (same stack, same reason) extends it.
    pub fn push_go_wait(&mut self, worker: Worker, w: GoWait) {
        let log = self.threads.entry(worker).or_default();
        if let Some(last) = log.go_waits.back_mut()
            && last.stack == w.stack
            && last.reason == w.reason
            && last.tgid == w.tgid
            && w.start <= last.end
        {
            last.end = last.end.max(w.end);
            return;
        }
        log.go_waits.push_back(w);
        trim(&mut log.go_waits, w.end, |w| w.end);
    }

    /// Forgets threads with nothing since `needed_from` (no request in
    /// progress began before it) or within the horizon before `now`, and
    /// gives back the room of emptied logs. Dead goroutines (one per
    /// connection, under connection churn) go as soon as no request can
    /// need them.
    pub fn sweep(&mut self, now: u64, needed_from: u64) {
        let from = needed_from.max(now.saturating_sub(HORIZON_NS));
        let recent = |ts: Option<u64>| ts.is_some_and(|t| t >= from);
        self.threads.retain(|_, log| {
            recent(log.off.back().map(|o| o.end))
                || recent(log.samples.back().map(|s| s.ts))
                || recent(log.go_waits.back().map(|w| w.end))
        });
        for log in self.threads.values_mut() {
            trim(&mut log.off, now, |o| o.end);
            trim(&mut log.samples, now, |s| s.ts);
            trim(&mut log.go_waits, now, |w| w.end);
            log.off.shrink_to(KEEP_PER_THREAD / 4);
            log.samples.shrink_to(KEEP_PER_THREAD / 4);
            log.go_waits.shrink_to(KEEP_PER_THREAD / 4);
        }
        if self.threads.capacity() > 1024 && self.threads.len() * 4 < self.threads.capacity() {
            self.threads.shrink_to_fit();
        }
    }

    /// What `workers` did between `from` and `to`.
    pub fn within(&self, workers: &[Worker], from: u64, to: u64) -> Attribution {
        let mut out = Attribution::default();
        if to <= from {
            return out;
        }
        for (i, worker) in workers.iter().enumerate() {
            if workers[..i].contains(worker) {
                continue;
            }
            let Some(log) = self.threads.get(worker) else {
                continue;
            };
            // Entries are in time order: skip from the back, newest first.
            for off in log.off.iter().rev().take_while(|o| o.end > from) {
                let inside = off.end.min(to).saturating_sub(off.start.max(from));
                if inside > 0 {
                    out.off.push((*off, inside));
                }
            }
            out.samples.extend(
                log.samples
                    .iter()
                    .rev()
                    .take_while(|s| s.ts >= from)
                    .filter(|s| s.ts <= to),
            );
            for w in log.go_waits.iter().rev().take_while(|w| w.end > from) {
                let inside = w.end.min(to).saturating_sub(w.start.max(from));
                if inside > 0 {
                    out.go_waits.push((*w, inside));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::{GoWait, Target, Worker};

    fn off(start: u64, end: u64) -> OffCpu {
        OffCpu {
            start,
            end,
            tgid: 1,
            user_stack: 1,
            kernel_stack: 2,
            syscall: 230,
            target: Target::None,
            waker_tgid: 0,
        }
    }

    fn sample(ts: u64) -> Sample {
        Sample {
            ts,
            tgid: 1,
            user_stack: 3,
            kernel_stack: -1,
        }
    }

    #[test]
    fn clips_blocks_to_the_window() {
        let mut t = Timeline::default();
        t.push_off_cpu(Worker::Thread(7), off(0, 100));
        t.push_off_cpu(Worker::Thread(7), off(150, 250));
        t.push_off_cpu(Worker::Thread(7), off(300, 400));
        t.push_off_cpu(Worker::Thread(8), off(160, 240));
        let a = t.within(&[Worker::Thread(7)], 50, 310);
        let mut got: Vec<u64> = a.off.iter().map(|(_, ns)| *ns).collect();
        got.sort_unstable();
        assert_eq!(got, vec![10, 50, 100]);
    }

    #[test]
    fn samples_inside_only_and_threads_once() {
        let mut t = Timeline::default();
        for ts in [5, 10, 20, 30, 40] {
            t.push_sample(Worker::Thread(7), sample(ts));
        }
        assert_eq!(
            t.within(&[Worker::Thread(7), Worker::Thread(7)], 10, 30)
                .samples
                .len(),
            3
        );
        assert!(t.within(&[Worker::Thread(9)], 0, 100).samples.is_empty());
        assert!(t.within(&[Worker::Thread(7)], 30, 30).samples.is_empty());
    }

    #[test]
    fn idle_threads_are_forgotten() {
        let mut t = Timeline::default();
        t.push_sample(Worker::Thread(1), sample(10));
        t.push_sample(Worker::Thread(2), sample(HORIZON_NS + 100));
        t.sweep(HORIZON_NS + 200, 0);
        assert!(
            t.within(&[Worker::Thread(1)], 0, u64::MAX)
                .samples
                .is_empty()
        );
        assert_eq!(t.within(&[Worker::Thread(2)], 0, u64::MAX).samples.len(), 1);
    }

    #[test]
    fn threads_no_request_in_progress_can_need_are_forgotten() {
        let mut t = Timeline::default();
        t.push_sample(Worker::Goroutine(1), sample(10));
        t.push_sample(Worker::Goroutine(2), sample(50));
        // The oldest request in progress began at 40: the first goroutine
        // did nothing since.
        t.sweep(100, 40);
        assert!(t.within(&[Worker::Goroutine(1)], 0, 100).samples.is_empty());
        assert_eq!(t.within(&[Worker::Goroutine(2)], 0, 100).samples.len(), 1);
    }

    #[test]
    fn memory_per_thread_is_bounded() {
        let mut t = Timeline::default();
        for i in 0..(KEEP_PER_THREAD as u64 + 100) {
            t.push_sample(Worker::Thread(1), sample(i));
        }
        assert_eq!(
            t.within(&[Worker::Thread(1)], 0, u64::MAX).samples.len(),
            KEEP_PER_THREAD
        );
        t.push_off_cpu(Worker::Thread(2), off(0, 1));
        t.push_off_cpu(Worker::Thread(2), off(HORIZON_NS + 10, HORIZON_NS + 20));
        assert_eq!(
            t.within(&[Worker::Thread(2)], 0, u64::MAX).off.len(),
            1,
            "older than the horizon is gone"
        );
    }

    #[test]
    fn a_wait_seen_again_extends_the_last_one() {
        let mut t = Timeline::default();
        let g = Worker::Goroutine(0xc000);
        let w = |start, end, stack| GoWait {
            start,
            end,
            tgid: 1,
            reason: 19,
            stack,
        };
        t.push_go_wait(g, w(0, 10, 1));
        t.push_go_wait(g, w(8, 20, 1));
        t.push_go_wait(g, w(20, 30, 2));
        t.push_go_wait(g, w(40, 50, 2));
        let a = t.within(&[g], 0, 100);
        let mut got: Vec<(u64, u64, u32)> = a
            .go_waits
            .iter()
            .map(|(w, _)| (w.start, w.end, w.stack))
            .collect();
        got.sort_unstable();
        assert_eq!(got, vec![(0, 20, 1), (20, 30, 2), (40, 50, 2)]);
    }
}
