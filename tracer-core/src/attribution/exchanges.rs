//! Exchanges on the connections a server opens itself (downstream calls,
//! DNS): when it connected or sent, and when the answer came back.
//!
//! A thread-per-connection server blocks the serving thread on such a call,
//! and its off-CPU time names the socket. Runtimes that hand a request between
//! threads (Go's goroutines, event loops) do not: the thread moves on while
//! the request waits. For them, the exchanges that fall inside a request's
//! handler window say what it waited on.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use super::{Target, Wait};

/// Exchanges kept per process, bounded.
const KEEP: usize = 65_536;
/// Exchanges older than this (relative to the newest) are forgotten.
const HORIZON_NS: u64 = 15 * 60 * 1_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Exchange {
    pub start: u64,
    pub end: u64,
    pub target: Target,
    pub wait: Wait,
    /// The socket: one HTTP/1.x connection serves one request at a time.
    sk: u64,
    claimed: bool,
}

#[derive(Debug)]
struct Socket {
    pid: u32,
    target: Target,
    /// When the current run of writes ended; `None` while reading.
    sent: Option<u64>,
    /// When `connect` started, until the first write.
    connecting: Option<u64>,
}

#[derive(Default)]
pub struct Exchanges {
    sockets: FxHashMap<u64, Socket>,
    per_pid: FxHashMap<u32, VecDeque<Exchange>>,
}

impl Exchanges {
    /// An outbound socket of `pid`, first seen at `ts`; `connecting` when
    /// seen at its `connect`.
    pub fn open(&mut self, pid: u32, sk: u64, target: Target, ts: u64, connecting: bool) {
        self.sockets.insert(
            sk,
            Socket {
                pid,
                target,
                sent: None,
                connecting: connecting.then_some(ts),
            },
        );
    }

    /// Shrinks the socket table if it emptied since its peak.
    pub fn compact(&mut self) -> bool {
        let big =
            self.sockets.capacity() > 1024 && self.sockets.len() * 4 < self.sockets.capacity();
        if big {
            self.sockets.shrink_to_fit();
        }
        big
    }

    pub fn close(&mut self, sk: u64) {
        self.sockets.remove(&sk);
    }

    pub fn is_outbound(&self, sk: u64) -> bool {
        self.sockets.contains_key(&sk)
    }

    pub fn target(&self, sk: u64) -> Option<Target> {
        self.sockets.get(&sk).map(|s| s.target)
    }

    /// A write (`read == false`) or read that moved bytes on an outbound socket.
    pub fn io(&mut self, sk: u64, read: bool, ts: u64) {
        let Some(s) = self.sockets.get_mut(&sk) else {
            return;
        };
        let done = if read {
            s.sent.take().map(|sent| (sent, Wait::Response))
        } else {
            s.sent = Some(ts);
            s.connecting.take().map(|c| (c, Wait::Connect))
        };
        if let Some((start, wait)) = done {
            let (pid, target) = (s.pid, s.target);
            let q = self.per_pid.entry(pid).or_default();
            q.push_back(Exchange {
                start,
                end: ts,
                target,
                wait,
                sk,
                claimed: false,
            });
            while q.len() > KEEP
                || q.front()
                    .is_some_and(|e| ts.saturating_sub(e.end) > HORIZON_NS)
            {
                q.pop_front();
            }
        }
    }

    /// Claims for a request of `pid` whose handler ran from `from` to `to`
    /// the exchanges it waited on.
    ///
    /// Connections serve one request at a time, and a request's own calls
    /// follow one another while concurrent requests' interleave: from the
    /// handler's start, take the next unclaimed exchange, with every later
    /// one on its socket (connect, TLS handshake, request and answer), and
    /// continue from where they end. DNS lookups are shared (Go's resolver
    /// merges concurrent lookups of a name): their time counts for every
    /// request that was not busy with a call of its own meanwhile.
    /// Returns the time waited per (target, kind), overlaps counted once,
    /// and the spans claimed.
    pub fn claim(&mut self, pid: u32, from: u64, to: u64) -> Claimed {
        let Some(q) = self.per_pid.get_mut(&pid) else {
            return Claimed::default();
        };
        let is_dns = |e: &Exchange| matches!(e.target, Target::Dns(_));
        let mut candidates: Vec<usize> = (0..q.len())
            .filter(|&i| !q[i].claimed && !is_dns(&q[i]) && q[i].start >= from && q[i].end <= to)
            .collect();
        candidates.sort_by_key(|&i| q[i].start);
        let mut claimed: Vec<Exchange> = Vec::new();
        let mut cursor = from;
        while let Some(&step) = candidates
            .iter()
            .find(|&&i| !q[i].claimed && q[i].start >= cursor)
        {
            let sk = q[step].sk;
            let take: Vec<usize> = candidates
                .iter()
                .copied()
                .filter(|&i| !q[i].claimed && (i == step || q[i].sk == sk))
                .collect();
            for i in take {
                q[i].claimed = true;
                cursor = cursor.max(q[i].end);
                claimed.push(q[i]);
            }
        }
        // Lookups, clipped to the window and to the time the request's own
        // calls leave free.
        let mut busy: Vec<(u64, u64)> = claimed.iter().map(|e| (e.start, e.end)).collect();
        busy.sort_unstable();
        for e in q
            .iter()
            .filter(|e| is_dns(e) && e.end > from && e.start < to)
        {
            for (start, end) in free_parts(e.start.max(from), e.end.min(to), &busy) {
                claimed.push(Exchange { start, end, ..*e });
            }
        }
        Claimed {
            waits: union_by_target(&claimed),
            spans: claimed.iter().map(|e| (e.start, e.end)).collect(),
        }
    }
}

/// What a request claimed: time per (target, kind), and the spans.
#[derive(Debug, Default)]
pub struct Claimed {
    pub waits: Vec<(Target, Wait, u64)>,
    pub spans: Vec<(u64, u64)>,
}

/// How much of `[start, end)` the `spans` cover, overlaps counted once.
pub fn covered(start: u64, end: u64, spans: &[(u64, u64)]) -> u64 {
    let mut busy: Vec<(u64, u64)> = spans.to_vec();
    busy.sort_unstable();
    let free: u64 = free_parts(start, end, &busy)
        .iter()
        .map(|(s, e)| e - s)
        .sum();
    end.saturating_sub(start).saturating_sub(free)
}

/// The parts of `[start, end)` outside the sorted `busy` intervals.
fn free_parts(start: u64, end: u64, busy: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = start;
    for &(s, e) in busy {
        if e <= at || s >= end {
            continue;
        }
        if s > at {
            out.push((at, s));
        }
        at = at.max(e);
    }
    if at < end {
        out.push((at, end));
    }
    out
}

/// Waited time per (target, kind), with overlapping exchanges counted once.
fn union_by_target(exchanges: &[Exchange]) -> Vec<(Target, Wait, u64)> {
    type Spans = Vec<(u64, u64)>;
    let mut groups: Vec<((Target, Wait), Spans)> = Vec::new();
    for e in exchanges {
        match groups.iter_mut().find(|(k, _)| *k == (e.target, e.wait)) {
            Some((_, v)) => v.push((e.start, e.end)),
            None => groups.push(((e.target, e.wait), vec![(e.start, e.end)])),
        }
    }
    groups
        .into_iter()
        .map(|((target, wait), mut spans)| {
            spans.sort_unstable();
            let (mut total, mut reach) = (0, 0);
            for (s, e) in spans {
                let s = s.max(reach);
                if e > s {
                    total += e - s;
                    reach = e;
                }
            }
            (target, wait, total)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn target(port: u16) -> Target {
        Target::Outbound(format!("127.0.0.1:{port}").parse().expect("addr"))
    }

    #[test]
    fn a_call_is_a_connect_then_a_response() {
        let mut x = Exchanges::default();
        x.open(1, 0xa, target(9001), 10 * MS, true);
        x.io(0xa, false, 11 * MS);
        x.io(0xa, false, 12 * MS);
        x.io(0xa, true, 312 * MS);
        x.io(0xa, true, 313 * MS);
        let got = x.claim(1, 5 * MS, 320 * MS).waits;
        assert_eq!(
            got,
            vec![
                (target(9001), Wait::Connect, MS),
                (target(9001), Wait::Response, 300 * MS)
            ]
        );
        assert!(x.claim(1, 0, 400 * MS).waits.is_empty(), "claimed once");
    }

    #[test]
    fn concurrent_requests_each_get_their_own_call() {
        let mut x = Exchanges::default();
        // Request A: handler 0..310 ms, call 1..301. Request B: handler 5..320, call 6..306.
        for (sk, send) in [(0xa, 1), (0xb, 6)] {
            x.open(1, sk, target(9001), send * MS, false);
            x.io(sk, false, send * MS);
        }
        x.io(0xa, true, 301 * MS);
        x.io(0xb, true, 306 * MS);
        assert_eq!(
            x.claim(1, 0, 310 * MS).waits,
            vec![(target(9001), Wait::Response, 300 * MS)]
        );
        assert_eq!(
            x.claim(1, 5 * MS, 320 * MS).waits,
            vec![(target(9001), Wait::Response, 300 * MS)]
        );
    }

    #[test]
    fn parallel_lookups_count_once_and_chain_into_the_call() {
        let mut x = Exchanges::default();
        let dns = Target::Dns("127.0.0.77:53".parse().expect("addr"));
        // A and AAAA sent together, answered after 100 ms; then a TLS call.
        x.open(1, 0xa, dns, 10 * MS, false);
        x.open(1, 0xb, dns, 10 * MS, false);
        x.io(0xa, false, 10 * MS);
        x.io(0xb, false, 10 * MS + 300_000);
        x.io(0xa, true, 110 * MS);
        x.io(0xb, true, 111 * MS);
        x.open(1, 0xc, target(9443), 112 * MS, true);
        x.io(0xc, false, 113 * MS);
        x.io(0xc, true, 263 * MS);
        let got = x.claim(1, 9 * MS, 270 * MS).waits;
        assert!(got.contains(&(dns, Wait::Response, 101 * MS)), "{got:?}");
        assert!(got.contains(&(target(9443), Wait::Connect, MS)));
        assert!(got.contains(&(target(9443), Wait::Response, 150 * MS)));
    }

    #[test]
    fn simultaneous_calls_of_concurrent_requests_are_not_siblings() {
        let mut x = Exchanges::default();
        for (sk, send) in [(0xa, 1_000_000), (0xb, 1_500_000)] {
            x.open(1, sk, target(9001), send, false);
            x.io(sk, false, send);
        }
        x.io(0xa, true, 301 * MS);
        x.io(0xb, true, 302 * MS);
        // The first request to finish takes one call, not both.
        assert_eq!(
            x.claim(1, 0, 303 * MS).waits,
            vec![(target(9001), Wait::Response, 300 * MS)]
        );
        assert_eq!(x.claim(1, MS, 304 * MS).waits.len(), 1);
    }

    #[test]
    fn concurrent_lookups_and_calls_stay_with_their_requests() {
        let mut x = Exchanges::default();
        let dns = Target::Dns("127.0.0.77:53".parse().expect("addr"));
        // Two requests, 0.3 ms apart: each looks up A and AAAA (100 ms), then
        // connects, shakes hands over TLS and calls (150 ms) on its own socket.
        for (r, base) in [(0u64, 0u64), (1, 300_000)] {
            let (a, aaaa, tls) = (0x10 + r * 3, 0x11 + r * 3, 0x12 + r * 3);
            x.open(1, a, dns, base, false);
            x.open(1, aaaa, dns, base, false);
            x.io(a, false, base + 10_000);
            x.io(aaaa, false, base + 20_000);
            x.io(a, true, base + 100 * MS);
            x.io(aaaa, true, base + 100 * MS + 50_000);
            x.open(1, tls, target(9443), base + 101 * MS, true);
            x.io(tls, false, base + 102 * MS); // ClientHello
            x.io(tls, true, base + 103 * MS); // ServerHello
            x.io(tls, false, base + 104 * MS); // request
            x.io(tls, true, base + 254 * MS); // answer
        }
        for (from, to) in [(0, 256 * MS), (300_000, 257 * MS)] {
            let got = x.claim(1, from, to).waits;
            let of =
                |t: Target, w: Wait| got.iter().find(|g| g.0 == t && g.1 == w).map_or(0, |g| g.2);
            assert!(
                of(dns, Wait::Response) >= 99 * MS && of(dns, Wait::Response) <= 101 * MS,
                "{got:?}"
            );
            assert_eq!(of(target(9443), Wait::Connect), MS);
            assert_eq!(of(target(9443), Wait::Response), 151 * MS);
        }
    }

    #[test]
    fn a_lookup_shared_by_two_requests_counts_for_both() {
        let mut x = Exchanges::default();
        let dns = Target::Dns("127.0.0.77:53".parse().expect("addr"));
        // One lookup (A and AAAA) serves two requests that started together;
        // each then makes its own call.
        x.open(1, 0x1, dns, 0, false);
        x.open(1, 0x2, dns, 0, false);
        x.io(0x1, false, MS);
        x.io(0x2, false, MS);
        x.io(0x1, true, 101 * MS);
        x.io(0x2, true, 101 * MS);
        for (sk, start) in [(0xa, 102), (0xb, 103)] {
            x.open(1, sk, target(9443), start * MS, false);
            x.io(sk, false, start * MS);
            x.io(sk, true, (start + 150) * MS);
        }
        let first = x.claim(1, MS / 2, 255 * MS).waits;
        let second = x.claim(1, MS / 2 + 100_000, 256 * MS).waits;
        for got in [first, second] {
            let of = |t: Target| got.iter().find(|g| g.0 == t).map_or(0, |g| g.2);
            assert!(of(dns) >= 99 * MS, "{got:?}");
            assert_eq!(of(target(9443)), 150 * MS);
        }
    }

    #[test]
    fn free_parts_of_a_window() {
        assert_eq!(
            free_parts(0, 10, &[(2, 4), (6, 7)]),
            vec![(0, 2), (4, 6), (7, 10)]
        );
        assert_eq!(free_parts(3, 5, &[(0, 10)]), vec![]);
        assert_eq!(free_parts(0, 10, &[]), vec![(0, 10)]);
    }

    #[test]
    fn exchanges_outside_the_window_are_left() {
        let mut x = Exchanges::default();
        x.open(1, 0xa, target(9001), 0, false);
        x.io(0xa, false, 50 * MS);
        x.io(0xa, true, 150 * MS);
        assert!(x.claim(1, 100 * MS, 200 * MS).waits.is_empty());
        assert!(
            x.claim(2, 0, 200 * MS).waits.is_empty(),
            "other processes' exchanges are not theirs"
        );
    }

    #[test]
    fn coverage_counts_overlaps_once() {
        assert_eq!(covered(0, 100, &[(10, 30), (20, 40), (90, 200)]), 40);
        assert_eq!(covered(0, 100, &[]), 0);
        assert_eq!(covered(50, 60, &[(0, 100)]), 10);
    }
}
