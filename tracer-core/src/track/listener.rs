//! A listening port of the traced processes: its accept queue's depth and
//! limit as seen at every handshake and accept, and the handshakes it dropped.

use std::collections::BTreeMap;

/// A listening port of a traced process.
#[derive(Debug, Default)]
pub struct Listener {
    pub pids: Vec<u32>,
    pub accepted: u64,
    /// `listen()` backlog as the kernel applies it (`sk_max_ack_backlog`).
    pub backlog_limit: Option<u32>,
    /// Accept-queue depth seen at each enqueue (handshake done) and dequeue (accept).
    pub queue: QueueDepth,
    /// The listener's cumulative drop counter, first and last seen.
    pub drops_seen: Option<(u32, u32)>,
}

impl Listener {
    /// Handshakes the listener dropped while traced.
    pub fn drops(&self) -> Option<u64> {
        self.drops_seen
            .map(|(first, last)| u64::from(last.wrapping_sub(first)))
    }
}

/// Accept-queue depth samples: exact counts per depth, bounded by the limit.
#[derive(Debug, Default)]
pub struct QueueDepth {
    counts: BTreeMap<u32, u64>,
}

impl QueueDepth {
    pub fn record(&mut self, depth: u32) {
        *self.counts.entry(depth).or_default() += 1;
    }

    pub fn peak(&self) -> Option<u32> {
        self.counts.keys().next_back().copied()
    }

    pub fn quantile(&self, q: f64) -> Option<u32> {
        let n: u64 = self.counts.values().sum();
        let rank = (q * n as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        self.counts.iter().find_map(|(&depth, &c)| {
            seen += c;
            (seen >= rank).then_some(depth)
        })
    }
}
