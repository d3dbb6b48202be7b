//! The connection table: routes decoded events to the chain of their
//! connection, joins what the kernel reports separately (a socket's handshake
//! in softirq, its fd in the server's syscalls), and hands finished requests
//! to the statistics.

use std::{collections::BTreeMap, net::SocketAddr};

use rustc_hash::FxHashMap;
use tracer_common::{IoEvent, SockEvent, dir};

use crate::{
    chain::{Connection, Io, Request},
    events::{Event, SockEventExt, socket_addr},
    stats::{Origin, Stats},
};

/// Handshakes not claimed by an fd after this long are forgotten: their
/// connections were accepted by some other process or never accepted.
const HANDSHAKE_TTL_NS: u64 = 120 * 1_000_000_000;
/// Above this many unclaimed handshakes, stale ones are swept.
const HANDSHAKE_SWEEP_AT: usize = 20_000;

/// What a socket fd found without an accept or connect turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketKind {
    /// A connection accepted before tracing began.
    Inbound { peer: SocketAddr },
    /// Anything else: outbound connections, UDP, unix sockets.
    Other,
}

/// Answers what an fd is when the event stream does not say (connections
/// opened before tracing began). Implemented over /proc in production.
pub trait SocketOracle {
    fn classify(&mut self, tgid: u32, fd: i32) -> SocketKind;
    /// The port of a listening socket's fd.
    fn listen_port(&mut self, tgid: u32, fd: i32) -> Option<u16>;
}

/// A listening port of a traced process.
#[derive(Clone, Debug, Default)]
pub struct Listener {
    pub pids: Vec<u32>,
    pub accepted: u64,
}

struct Conn {
    chain: Connection,
    sk: u64,
    peer: Option<SocketAddr>,
}

/// An outbound connection of a traced process.
#[derive(Clone, Copy, Debug)]
pub struct Outbound {
    pub peer: SocketAddr,
}

struct Handshake {
    ts: u64,
    peer: SocketAddr,
}

pub struct Collector {
    conns: FxHashMap<(u32, i32), Conn>,
    /// fds known not to be inbound connections.
    others: FxHashMap<(u32, i32), ()>,
    outbound: FxHashMap<(u32, i32), Outbound>,
    handshakes: FxHashMap<u64, Handshake>,
    comms: FxHashMap<u32, String>,
    pub listeners: BTreeMap<u16, Listener>,
    /// fd of each listening socket, to name the port of an accept.
    listen_fds: FxHashMap<(u32, i32), u16>,
    pub stats: Stats,
    pub connections: u64,
    pub events: u64,
    /// Processes that forked from traced ones, to be checked and traced.
    pub forks: Vec<u32>,
}

impl Collector {
    pub fn new() -> Self {
        Collector {
            conns: FxHashMap::default(),
            others: FxHashMap::default(),
            outbound: FxHashMap::default(),
            handshakes: FxHashMap::default(),
            comms: FxHashMap::default(),
            listeners: BTreeMap::new(),
            listen_fds: FxHashMap::default(),
            stats: Stats::default(),
            connections: 0,
            events: 0,
            forks: Vec::new(),
        }
    }

    pub fn add_process(&mut self, pid: u32, comm: String) {
        self.comms.insert(pid, comm);
    }

    pub fn add_listener(&mut self, pid: u32, port: u16, fd: Option<i32>) {
        let l = self.listeners.entry(port).or_default();
        if !l.pids.contains(&pid) {
            l.pids.push(pid);
        }
        if let Some(fd) = fd {
            self.listen_fds.insert((pid, fd), port);
        }
    }

    /// A connection open before tracing began, found in /proc.
    pub fn add_open_connection(&mut self, pid: u32, fd: i32, peer: SocketAddr) {
        self.conns.insert((pid, fd), Conn { chain: Connection::already_open(), sk: 0, peer: Some(peer) });
        self.connections += 1;
    }

    pub fn handle(&mut self, event: Event, oracle: &mut dyn SocketOracle) {
        self.events += 1;
        match event {
            Event::Accept(a) => {
                let key = (a.hdr.tgid, a.fd);
                self.close(key, a.hdr.ts);
                self.others.remove(&key);
                let lkey = (a.hdr.tgid, a.listen_fd);
                let port = match self.listen_fds.get(&lkey) {
                    Some(&port) => Some(port),
                    None => oracle.listen_port(lkey.0, lkey.1).inspect(|&port| {
                        self.add_listener(lkey.0, port, Some(lkey.1));
                    }),
                };
                if let Some(l) = port.and_then(|p| self.listeners.get_mut(&p)) {
                    l.accepted += 1;
                }
                self.conns.insert(key, Conn { chain: Connection::accepted(a.hdr.ts), sk: 0, peer: None });
                self.connections += 1;
            }
            Event::Io(io, payload) => self.on_io(&io, payload, oracle),
            Event::Connect(c) => {
                let key = (c.hdr.tgid, c.fd);
                self.close(key, c.hdr.ts);
                self.others.insert(key, ());
                self.outbound.insert(key, Outbound { peer: socket_addr(c.family, &c.addr, c.port) });
            }
            Event::Close(c) => {
                let key = (c.hdr.tgid, c.fd);
                self.close(key, c.hdr.ts);
                self.others.remove(&key);
                self.outbound.remove(&key);
            }
            Event::Established(s) => self.on_handshake(&s),
            Event::Listen(s) => self.add_listener(s.hdr.tgid, s.sport, None),
            Event::Fork(f) => self.forks.push(f.child_pid),
        }
    }

    fn on_handshake(&mut self, s: &SockEvent) {
        if self.handshakes.len() >= HANDSHAKE_SWEEP_AT {
            let now = s.hdr.ts;
            self.handshakes.retain(|_, h| now.saturating_sub(h.ts) < HANDSHAKE_TTL_NS);
        }
        self.handshakes.insert(s.sk, Handshake { ts: s.hdr.ts, peer: s.remote() });
    }

    fn on_io(&mut self, ev: &IoEvent, payload: &[u8], oracle: &mut dyn SocketOracle) {
        let key = (ev.hdr.tgid, ev.fd);
        if self.others.contains_key(&key) {
            return;
        }
        let conn = match self.conns.get_mut(&key) {
            Some(c) => c,
            None => match oracle.classify(ev.hdr.tgid, ev.fd) {
                SocketKind::Inbound { peer } => {
                    self.connections += 1;
                    self.conns.entry(key).or_insert(Conn { chain: Connection::already_open(), sk: 0, peer: Some(peer) })
                }
                SocketKind::Other => {
                    self.others.insert(key, ());
                    return;
                }
            },
        };
        if conn.sk == 0 {
            conn.sk = ev.sk;
            if let Some(h) = self.handshakes.remove(&ev.sk) {
                conn.chain.set_established(h.ts);
                conn.peer = Some(h.peer);
            }
        }
        let io = Io { tid: ev.hdr.tid, enter_ns: ev.enter_ts, exit_ns: ev.hdr.ts, ret: ev.ret, ready_ns: ev.ready_ts, payload };
        let done = if ev.dir == dir::READ { conn.chain.on_read(&io) } else { conn.chain.on_write(&io) };
        if let Some(req) = done {
            let peer = conn.peer;
            self.finish(ev.hdr.tgid, peer, req);
        }
    }

    fn close(&mut self, key: (u32, i32), ts: u64) {
        if let Some(mut conn) = self.conns.remove(&key) {
            if let Some(req) = conn.chain.on_close(ts) {
                self.finish(key.0, conn.peer, req);
            }
        }
    }

    fn finish(&mut self, pid: u32, peer: Option<SocketAddr>, req: Request) {
        let comm = self.comms.get(&pid).cloned().unwrap_or_else(|| pid.to_string());
        self.stats.record(req, Origin { pid, comm, peer });
    }

    /// Tracing stopped at `ts`: settle every connection's request in progress.
    pub fn finish_all(&mut self, ts: u64) {
        let conns: Vec<_> = self.conns.drain().collect();
        for ((pid, _), mut conn) in conns {
            if let Some(req) = conn.chain.on_trace_end(ts) {
                self.finish(pid, conn.peer, req);
            }
        }
    }

    pub fn outbound(&self, tgid: u32, fd: i32) -> Option<&Outbound> {
        self.outbound.get(&(tgid, fd))
    }

    /// Connections currently tracked (for bounded-memory checks).
    pub fn open_connections(&self) -> usize {
        self.conns.len()
    }
}

impl Default for Collector {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::{AcceptEvent, CloseEvent, EventHeader, kind};

    struct NoProc;
    impl SocketOracle for NoProc {
        fn classify(&mut self, _: u32, _: i32) -> SocketKind {
            SocketKind::Other
        }
        fn listen_port(&mut self, _: u32, _: i32) -> Option<u16> {
            None
        }
    }

    fn hdr(kind: u8, ts_ms: u64) -> EventHeader {
        EventHeader { kind, tgid: 10, tid: 11, ts: ts_ms * 1_000_000, ..Default::default() }
    }

    fn io(fd: i32, d: u8, ts_ms: u64, ret: i64) -> IoEvent {
        IoEvent {
            hdr: hdr(kind::IO, ts_ms),
            enter_ts: ts_ms * 1_000_000 - 1000,
            sk: 0xffff_0000 + fd as u64,
            ret,
            fd,
            dir: d,
            ..Default::default()
        }
    }

    #[test]
    fn joins_handshake_accept_and_io_of_one_connection() {
        let mut c = Collector::new();
        c.add_process(10, "srv".into());
        let mut est = SockEvent { hdr: hdr(kind::ESTABLISHED, 5), sk: 0xffff_0000 + 7, family: 2, sport: 80, dport: 4000, ..Default::default() };
        est.hdr.tgid = 0;
        est.daddr[..4].copy_from_slice(&[10, 0, 0, 9]);
        c.handle(Event::Established(est), &mut NoProc);
        c.handle(Event::Accept(AcceptEvent { hdr: hdr(kind::ACCEPT, 8), enter_ts: 0, listen_fd: 3, fd: 7 }), &mut NoProc);
        c.handle(Event::Io(io(7, dir::READ, 9, 40), b"GET /x HTTP/1.1\r\n"), &mut NoProc);
        c.handle(Event::Io(io(7, dir::WRITE, 29, 40), b"HTTP/1.1 200 OK\r\n"), &mut NoProc);
        c.handle(Event::Close(CloseEvent { hdr: hdr(kind::CLOSE, 30), sk: 0, fd: 7, _pad: 0 }), &mut NoProc);
        assert_eq!(c.stats.requests, 1);
        let slow = c.stats.slowest();
        let r = &slow[0];
        assert_eq!(r.origin.peer, Some("10.0.0.9:4000".parse().expect("addr")));
        assert_eq!(r.request.stages.get(crate::chain::Stage::AcceptQueue), 3_000_000);
        assert_eq!(r.route.label(), "GET /x");
        assert_eq!(c.open_connections(), 0);
    }

    #[test]
    fn outbound_and_unknown_sockets_are_not_chains() {
        let mut c = Collector::new();
        c.handle(Event::Io(io(5, dir::READ, 1, 10), b"GET / HTTP/1.1\r\n"), &mut NoProc);
        c.handle(Event::Io(io(5, dir::WRITE, 2, 10), b"HTTP/1.1 200 OK\r\n"), &mut NoProc);
        c.finish_all(10_000_000);
        assert_eq!(c.stats.requests, 0);
    }

    #[test]
    fn fd_reuse_closes_the_previous_connection() {
        let mut c = Collector::new();
        let accept = |ts| Event::Accept(AcceptEvent { hdr: hdr(kind::ACCEPT, ts), enter_ts: 0, listen_fd: 3, fd: 7 });
        c.handle(accept(1), &mut NoProc);
        c.handle(Event::Io(io(7, dir::READ, 2, 10), b"GET / HTTP/1.1\r\n"), &mut NoProc);
        c.handle(Event::Io(io(7, dir::WRITE, 3, 10), b"HTTP/1.1 200 OK\r\n"), &mut NoProc);
        c.handle(accept(4), &mut NoProc);
        assert_eq!(c.stats.requests, 1);
        assert_eq!(c.connections, 2);
    }
}
