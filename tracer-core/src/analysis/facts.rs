//! Gathers what the diagnosis needs from a window's aggregates: routes with
//! their stage totals, named causes and on-CPU hot spots, and listeners.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use super::{
    causes,
    diagnose::{self, Diagnosis, ListenerFacts, RouteFacts, Waited},
    hotspot,
};
use crate::{
    aggregate::{Aggregates, Leaf},
    chain::Stage,
    stack::{Frame, StackNames},
    track::Listener,
};

/// Causes named per route.
const CAUSES_NAMED: usize = 3;
/// Causes looked at per route before those that read the same are merged.
const ROUTE_CAUSES_NAMED: usize = 16;

/// The diagnosis of the requests in `agg`, with the listeners as the
/// tracker saw them and the most connections open at once.
pub fn diagnosis(
    agg: &Aggregates,
    listeners: &BTreeMap<u16, Listener>,
    open_peak: usize,
    names: &mut dyn StackNames,
) -> Option<Diagnosis> {
    // On-CPU handler stacks per route, from the chain flame graph's leaves.
    let mut on_cpu: FxHashMap<u32, Vec<(Vec<Frame>, u64)>> = FxHashMap::default();
    for (key, us) in agg.folded() {
        if let Leaf::OnCpu(stack) = key.leaf {
            on_cpu
                .entry(key.route)
                .or_default()
                .push((names.frames(stack), *us));
        }
    }
    let routes: Vec<RouteFacts> = agg
        .routes()
        .iter()
        .enumerate()
        .map(|(id, (key, r))| {
            let handler_total = r.stage(Stage::Handler).total_us;
            RouteFacts {
                label: key.label(),
                count: r.measured(),
                p99_us: r.latency.quantile(0.99),
                stage_totals: Stage::LATENCY
                    .iter()
                    .map(|&s| (s, r.stage(s).total_us))
                    .collect(),
                causes: causes::named(&r.top_causes(ROUTE_CAUSES_NAMED), names)
                    .into_iter()
                    .take(CAUSES_NAMED)
                    .map(|w| Waited {
                        us: w.us / r.measured().max(1),
                        ..w
                    })
                    .collect(),
                hot: on_cpu
                    .get(&(id as u32))
                    .and_then(|s| hotspot::hot_spot(s, handler_total)),
            }
        })
        .collect();
    let listeners: Vec<ListenerFacts> = listeners
        .iter()
        .map(|(&port, l)| ListenerFacts {
            port,
            backlog_limit: l.backlog_limit,
            queue_peak: l.queue.peak(),
            overflows: l.drops(),
        })
        .collect();
    diagnose::diagnose(&routes, &listeners, open_peak)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{event::Event, track::Tracker};
    use tracer_common::{AcceptEvent, EventHeader, IoEvent, SocketEvent, StackKey, dir, kind};

    const MS: u64 = 1_000_000;

    fn hdr(kind: u8, ts: u64, tid: u32) -> EventHeader {
        EventHeader {
            kind,
            tgid: 10,
            tid,
            ts,
            ..Default::default()
        }
    }

    fn socket(kind: u8, sk: u64, fd: i32, sport: u16, dport: u16, ts: u64) -> SocketEvent {
        let mut s = SocketEvent {
            hdr: hdr(kind, ts, 1),
            sk,
            fd,
            family: 2,
            protocol: 6,
            sport,
            dport,
            ..Default::default()
        };
        s.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        s.daddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        s
    }

    fn io(sk: u64, fd: i32, d: u8, ts: u64, tid: u32) -> IoEvent {
        IoEvent {
            hdr: hdr(kind::IO, ts, tid),
            enter_ts: ts,
            sk,
            ret: 100,
            fd,
            dir: d,
            ..Default::default()
        }
    }

    /// A recorded Go-style chain: each request's handler calls a downstream
    /// on a connection of its own while the serving threads move on.
    #[test]
    fn a_recorded_downstream_chain_is_diagnosed() {
        let mut c = Tracker::new();
        c.add_process(10, "api", true);
        c.add_listener(10, 8080);
        for r in 0..10u64 {
            let t = r * 400 * MS;
            let (conn, down) = (0x100 + r, 0x200 + r);
            c.handle(Event::Accept(AcceptEvent {
                hdr: hdr(kind::ACCEPT, t, 1),
                fd: 7,
                port: 8080,
                left_out: 0,
                backlog: 0,
                backlog_max: 128,
                listener_drops: 0,
                _pad: 0,
                _pad2: 0,
            }));
            c.handle(Event::Socket(socket(kind::SOCKET, conn, 7, 8080, 40000, t)));
            c.handle(Event::Io(
                io(conn, 7, dir::READ, t + MS, 1),
                b"GET /api HTTP/1.1\r\n",
            ));
            c.handle(Event::Connect(socket(
                kind::CONNECT,
                down,
                9,
                41000,
                9001,
                t + 2 * MS,
            )));
            c.handle(Event::Io(
                io(down, 9, dir::WRITE, t + 3 * MS, 2),
                b"GET /slow HTTP/1.1\r\n",
            ));
            c.handle(Event::Io(
                io(down, 9, dir::READ, t + 303 * MS, 3),
                b"HTTP/1.1 200 OK\r\n",
            ));
            c.handle(Event::Io(
                io(conn, 7, dir::WRITE, t + 304 * MS, 4),
                b"HTTP/1.1 200 OK\r\n",
            ));
        }
        c.finish_all(5_000 * MS);
        let mut agg = Aggregates::new(0);
        for f in c.take_finished() {
            agg.record(&f);
        }
        struct Plain;
        impl StackNames for Plain {
            fn frames(&mut self, _: StackKey) -> Vec<Frame> {
                Vec::new()
            }
            fn user_leaf(&mut self, _: u32, _: i32) -> Option<Frame> {
                None
            }
            fn goroutine_frames(&mut self, _: u32, _: u32) -> Vec<Frame> {
                Vec::new()
            }
            fn wait_reason(&mut self, _: u32, _: u8) -> Option<String> {
                None
            }
            fn goroutine_call_site(&mut self, _: u32, _: u32, _: usize) -> Option<String> {
                None
            }
        }
        let d = diagnosis(&agg, c.listeners(), c.open_peak(), &mut Plain).expect("diagnosis");
        assert_eq!(d.stage, "handler");
        // p99 comes from a histogram of 1% resolution.
        assert!(d.text.starts_with("GET /api p99 303"), "{}", d.text);
        assert!(
            d.text.ends_with(
                "100% handler, blocked on response from outbound 127.0.0.1:9001 (300.0ms)"
            ),
            "{}",
            d.text
        );
    }
}
