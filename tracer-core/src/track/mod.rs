//! The connection table: routes decoded events to the chain of their
//! connection, joins what the kernel reports separately (a socket's handshake
//! in softirq, its accept and first use in the server's threads), and hands
//! out finished requests with what their threads did meanwhile.

mod listener;

use std::{collections::BTreeMap, net::SocketAddr, rc::Rc};

use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;
use tracer_common::{IoEvent, OffCpuEvent, SockEvent, SocketEvent, StackKey, dir, traced};

pub use self::listener::{Listener, QueueDepth};
use crate::{
    attribution::{
        Attribution, GoWait, OffCpu, Sample, Target, Worker,
        exchanges::{Exchanges, covered},
        timeline::Timeline,
    },
    chain::{Connection, Io, Request, Standing},
    event::{Event, handshake_peer, has_addresses, socket_peer},
};

const DNS_PORT: u16 = 53;
const IPPROTO_UDP: u16 = 17;
/// Handshakes not claimed by a traced process after this long are forgotten:
/// their connections were accepted by some other process or never accepted.
const HANDSHAKE_TTL_NS: u64 = 120 * 1_000_000_000;
/// Above this many unclaimed handshakes or accepts, stale ones are swept.
const SWEEP_AT: usize = 20_000;
/// Above this many connections handed on without an fd, stale ones are
/// swept (counted apart: the connection table itself may hold far more).
const ORPHANS_SWEEP_AT: usize = 1024;

struct Conn {
    pid: u32,
    fd: i32,
    chain: Connection,
    peer: Option<SocketAddr>,
    /// The last read and write sequence numbers seen ([`IoEvent::seq`]).
    seqs: [Option<u16>; 2],
    /// When the tracker learnt of it.
    opened: u64,
}

impl Conn {
    /// Handed on by its process and not used by any since ([`Tracker::close_fd`]).
    fn orphaned(&self) -> bool {
        self.fd == -1 && self.seqs == [None; 2]
    }
}

impl Conn {
    /// Whether records of this connection were lost before this one: a
    /// gap in the sequence of its direction.
    fn gap_before(&mut self, ev: &IoEvent) -> bool {
        let last = &mut self.seqs[usize::from(ev.dir == dir::WRITE)];
        let gap = last.is_some_and(|l| {
            let ahead = ev.seq.wrapping_sub(l);
            // Behind (0 or half the range back) is a reordering, not a loss.
            ahead > 1 && ahead < u16::MAX / 2
        });
        if last.is_none_or(|l| ev.seq.wrapping_sub(l) < u16::MAX / 2) {
            *last = Some(ev.seq);
        }
        gap
    }
}

struct Handshake {
    ts: u64,
    peer: SocketAddr,
}

/// Who sent a request, and to which process.
#[derive(Clone, Debug)]
pub struct Origin {
    pub pid: u32,
    pub comm: Rc<str>,
    pub peer: Option<SocketAddr>,
    /// How many requests this one stands for: 1, or more while the
    /// overhead budget left requests out beside it.
    pub weight: f64,
}

/// Inbound connections open at one moment, by where they stand.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OpenConnections {
    /// Accepted and silent, or between requests (keep-alive).
    pub idle: u64,
    /// Sending a request whose headers have not ended (a slow client).
    pub reading_request: u64,
    /// Request read, no response yet.
    pub in_handler: u64,
    /// Response bytes still in the socket's send queue (a slow reader).
    pub writing: u64,
}

impl OpenConnections {
    pub fn total(&self) -> u64 {
        self.idle + self.reading_request + self.in_handler + self.writing
    }
}

/// A request the tracker finished, with what its handler's time went to.
#[derive(Debug)]
pub struct Finished {
    pub request: Request,
    pub origin: Origin,
    pub attribution: Attribution,
}

/// How far before the oldest request in progress the timeline is kept.
const SWEEP_MARGIN_NS: u64 = 1_000_000_000;

pub struct Tracker {
    /// Inbound connections, by socket.
    conns: FxHashMap<u64, Conn>,
    /// The socket each fd of a traced process last named.
    fds: FxHashMap<(u32, i32), u64>,
    /// Accepted fds not used yet, with the accept time.
    accepts: FxHashMap<(u32, i32), u64>,
    /// Outbound sockets (TCP connects, UDP), their peers and exchanges.
    exchanges: Exchanges,
    handshakes: FxHashMap<u64, Handshake>,
    comms: FxHashMap<u32, Rc<str>>,
    /// Go processes: their threads' parking says nothing about requests.
    go: FxHashSet<u32>,
    listeners: BTreeMap<u16, Listener>,
    timeline: Timeline,
    /// Requests finished since they were last taken.
    finished: Vec<Finished>,
    /// Go: (tgid, goroutine) of each connection whose request was read and
    /// not answered yet, by socket: what the goroutine sampler looks at.
    serving: FxHashMap<u64, (u32, u64)>,
    /// Stacks seen since they were last taken, to symbolize.
    new_stacks: Vec<StackKey>,
    connections: u64,
    /// Most inbound connections open at once.
    open_peak: usize,
    events: u64,
    /// Processes forked by traced ones, (parent, child): to be traced.
    forks: Vec<(u32, u32)>,
    /// Connections handed on without an fd since the last sweep, about.
    orphans: usize,
    /// What a request finished now stands for ([`Origin::weight`]).
    weight: f64,
    /// Requests finished, for the budget's weights.
    finished_count: u64,
}

impl Default for Tracker {
    fn default() -> Self {
        Self::new()
    }
}

impl Tracker {
    pub fn new() -> Self {
        Tracker {
            conns: FxHashMap::default(),
            fds: FxHashMap::default(),
            accepts: FxHashMap::default(),
            exchanges: Exchanges::default(),
            handshakes: FxHashMap::default(),
            comms: FxHashMap::default(),
            go: FxHashSet::default(),
            listeners: BTreeMap::new(),
            timeline: Timeline::default(),
            finished: Vec::new(),
            serving: FxHashMap::default(),
            new_stacks: Vec::new(),
            connections: 0,
            open_peak: 0,
            events: 0,
            forks: Vec::new(),
            orphans: 0,
            weight: 1.0,
            finished_count: 0,
        }
    }

    /// What each request finished from now on stands for.
    pub fn set_weight(&mut self, weight: f64) {
        self.weight = weight.max(1.0);
    }

    /// Requests finished so far.
    pub fn finished_count(&self) -> u64 {
        self.finished_count
    }

    pub fn add_process(&mut self, pid: u32, comm: &str, is_go: bool) {
        self.comms.insert(pid, Rc::from(comm));
        if is_go {
            self.go.insert(pid);
        }
    }

    /// Forgets a process that exited (a daemon outlives many): its name,
    /// its fds, and its place among listeners' processes. Its connections
    /// went with their closes.
    pub fn forget_process(&mut self, pid: u32) {
        self.comms.remove(&pid);
        self.go.remove(&pid);
        self.fds.retain(|(p, _), _| *p != pid);
        self.accepts.retain(|(p, _), _| *p != pid);
        for l in self.listeners.values_mut() {
            l.pids.retain(|&p| p != pid);
        }
        // A port no traced process listens on any more (a service
        // restarted elsewhere) is forgotten with its figures.
        self.listeners.retain(|_, l| !l.pids.is_empty());
    }

    pub fn add_listener(&mut self, pid: u32, port: u16) {
        let l = self.listeners.entry(port).or_default();
        if !l.pids.contains(&pid) {
            l.pids.push(pid);
        }
    }

    /// Requests finished since the last call, oldest first.
    pub fn take_finished(&mut self) -> std::vec::Drain<'_, Finished> {
        self.finished.drain(..)
    }

    /// Stacks seen since the last call: to be symbolized while their
    /// processes live.
    pub fn take_new_stacks(&mut self) -> std::vec::Drain<'_, StackKey> {
        self.new_stacks.drain(..)
    }

    /// Processes forked by traced ones since the last call, (parent, child).
    pub fn take_forks(&mut self) -> Vec<(u32, u32)> {
        std::mem::take(&mut self.forks)
    }

    /// Whether any Go request is being served now.
    pub fn serves_goroutines(&self) -> bool {
        !self.serving.is_empty()
    }

    /// (tgid, goroutine) of the Go requests being served now.
    pub fn serving_goroutines(&self, out: &mut Vec<(u32, u64)>) {
        out.clear();
        out.extend(self.serving.values().copied());
    }

    /// Listening ports of the traced processes, by port.
    pub fn listeners(&self) -> &BTreeMap<u16, Listener> {
        &self.listeners
    }

    /// Inbound connections seen.
    pub fn connections(&self) -> u64 {
        self.connections
    }

    /// Most inbound connections open at once.
    pub fn open_peak(&self) -> usize {
        self.open_peak
    }

    /// The inbound connections open now, by where they stand. `unsent`
    /// tells whether a peer's connection still has response bytes to send:
    /// a connection that wrote a response is `writing` if so, else `idle`.
    pub fn open_connections_now(&self, unsent: impl Fn(SocketAddr) -> bool) -> OpenConnections {
        let mut open = OpenConnections::default();
        for conn in self.conns.values() {
            let count = match conn.chain.standing() {
                Standing::ReadingRequest => &mut open.reading_request,
                Standing::InHandler => &mut open.in_handler,
                Standing::Responded if conn.peer.is_some_and(&unsent) => &mut open.writing,
                // A response all sent is a connection waiting for the next request.
                Standing::Idle | Standing::Responded => &mut open.idle,
            };
            *count += 1;
        }
        open
    }

    /// Events handled.
    pub fn events(&self) -> u64 {
        self.events
    }

    pub fn handle(&mut self, event: Event) {
        self.events += 1;
        match event {
            // Counted by the listener's queue, and by the kernel's count of
            // the requests left out; not a connection traced.
            Event::Accept(a) if a.left_out != 0 => {
                self.queue_sample(a.port, a.backlog, a.backlog_max, a.listener_drops);
            }
            Event::Accept(a) => {
                let key = (a.hdr.tgid, a.fd);
                // The fd was closed and reused: whatever it named is gone.
                if let Some(old) = self.fds.remove(&key) {
                    self.close_fd(old, key, a.hdr.ts);
                }
                if self.accepts.len() >= SWEEP_AT {
                    let now = a.hdr.ts;
                    self.accepts
                        .retain(|_, &mut ts| now.saturating_sub(ts) < HANDSHAKE_TTL_NS);
                }
                if self.orphans >= ORPHANS_SWEEP_AT {
                    self.sweep_orphans(a.hdr.ts);
                }
                self.accepts.insert(key, a.hdr.ts);
                self.queue_sample(a.port, a.backlog, a.backlog_max, a.listener_drops);
            }
            Event::Socket(s) => self.on_socket(&s),
            Event::Io(io, payload) => self.on_io(&io, payload),
            Event::Connect(c) => {
                self.fds.insert((c.hdr.tgid, c.fd), c.sk);
                self.exchanges
                    .open(c.hdr.tgid, c.sk, target_of(socket_peer(&c)), c.hdr.ts, true);
            }
            Event::Close(c) => {
                self.close(c.sk, c.hdr.ts);
                self.exchanges.close(c.sk);
            }
            Event::LeftOut(c) => {
                // Its last response is done: the request in progress ends here.
                self.close(c.sk, c.hdr.ts);
            }
            Event::Established(s) => self.on_handshake(&s),
            Event::Listen(s) => self.add_listener(s.hdr.tgid, s.sport),
            Event::Fork(f) => self.on_fork(f.hdr.tgid, f.child_pid),
            Event::Sample(s) => {
                let sample = Sample {
                    ts: s.hdr.ts,
                    tgid: s.hdr.tgid,
                    user_stack: s.user_stack,
                    kernel_stack: s.kernel_stack,
                };
                self.note_stack(s.hdr.tgid, s.user_stack, s.kernel_stack);
                self.timeline
                    .push_sample(Worker::of(s.hdr.tid, s.g), sample);
            }
            Event::OffCpu(o) => self.on_off_cpu(&o),
        }
    }

    /// A child starts as a copy of its parent: same name, same runtime, until
    /// it is looked at (it may serve a connection and exit before that).
    fn on_fork(&mut self, parent: u32, child: u32) {
        if let Some(comm) = self.comms.get(&parent).cloned() {
            self.comms.entry(child).or_insert(comm);
        }
        if self.go.contains(&parent) {
            self.go.insert(child);
        }
        self.forks.push((parent, child));
    }

    fn queue_sample(&mut self, port: u16, depth: u32, limit: u32, drops: u32) {
        let Some(l) = self.listeners.get_mut(&port) else {
            return;
        };
        if depth != u32::MAX {
            l.queue.record(depth);
            l.backlog_limit = Some(limit);
        }
        if drops != u32::MAX {
            l.drops_seen = Some(
                l.drops_seen
                    .map_or((drops, drops), |(first, _)| (first, drops)),
            );
        }
    }

    fn on_handshake(&mut self, s: &SockEvent) {
        self.queue_sample(s.sport, s.backlog, s.backlog_max, s.listener_drops);
        if self.handshakes.len() >= SWEEP_AT {
            let now = s.hdr.ts;
            self.handshakes
                .retain(|_, h| now.saturating_sub(h.ts) < HANDSHAKE_TTL_NS);
        }
        self.handshakes.insert(
            s.sk,
            Handshake {
                ts: s.hdr.ts,
                peer: handshake_peer(s),
            },
        );
    }

    /// First use of a socket by a traced process: an inbound connection
    /// gets its chain; anything else is remembered as outbound.
    fn on_socket(&mut self, s: &SocketEvent) {
        let (pid, key) = (s.hdr.tgid, (s.hdr.tgid, s.fd));
        if let Some(old) = self.fds.insert(key, s.sk).filter(|&old| old != s.sk) {
            self.close_fd(old, key, s.hdr.ts);
        }
        if self.conns.contains_key(&s.sk) || self.exchanges.is_outbound(s.sk) {
            return;
        }
        let handshake = self.handshakes.remove(&s.sk);
        let inbound = s.protocol != IPPROTO_UDP
            && (handshake.is_some() || self.listeners.contains_key(&s.sport));
        if !inbound {
            self.exchanges
                .open(pid, s.sk, target_of(socket_peer(s)), s.hdr.ts, false);
            return;
        }
        let mut chain = match self.accepts.remove(&key) {
            Some(ts) => {
                if let Some(l) = self.listeners.get_mut(&s.sport) {
                    l.accepted += 1;
                }
                Connection::accepted(ts)
            }
            // Accepted before tracing began.
            None => Connection::already_open(),
        };
        if let Some(h) = &handshake {
            chain.set_established(h.ts);
        }
        let peer = handshake
            .map(|h| h.peer)
            .or_else(|| has_addresses(s).then(|| socket_peer(s)));
        self.conns.insert(
            s.sk,
            Conn {
                pid,
                fd: s.fd,
                chain,
                peer,
                seqs: [None; 2],
                opened: s.hdr.ts,
            },
        );
        // Traced again after the overhead budget left it out: not a new one.
        if s.again == 0 {
            self.connections += 1;
        }
        self.open_peak = self.open_peak.max(self.conns.len());
    }

    fn on_io(&mut self, ev: &IoEvent, payload: &[u8]) {
        let Some(conn) = self.conns.get_mut(&ev.sk) else {
            if ev.ret > 0 {
                self.exchanges.io(ev.sk, ev.dir == dir::READ, ev.hdr.ts);
            }
            return;
        };
        if conn.pid != ev.hdr.tgid {
            // Another process took the connection over: a child forked to
            // serve it, or a worker it was passed to.
            conn.pid = ev.hdr.tgid;
            conn.fd = ev.fd;
            self.fds.insert((ev.hdr.tgid, ev.fd), ev.sk);
        }
        if conn.gap_before(ev) {
            conn.chain.events_lost();
        }
        let io = Io {
            by: Worker::of(ev.hdr.tid, ev.g),
            enter_ns: ev.enter_ts,
            exit_ns: ev.hdr.ts,
            ret: ev.ret,
            ready_ns: ev.ready_ts,
            payload,
        };
        // Go: the goroutine that read a request serves it until it writes.
        if ev.g != 0 && ev.ret > 0 {
            if ev.dir == dir::READ {
                self.serving.insert(ev.sk, (conn.pid, ev.g));
            } else {
                self.serving.remove(&ev.sk);
            }
        }
        let done = if ev.dir == dir::READ {
            conn.chain.on_read(&io)
        } else {
            conn.chain.on_write(&io)
        };
        let (pid, peer) = (conn.pid, conn.peer);
        for req in done {
            self.finish(pid, peer, req);
        }
    }

    fn note_stack(&mut self, tgid: u32, user_stack: i32, kernel_stack: i32) {
        self.new_stacks.push(StackKey {
            tgid,
            user_stack,
            kernel_stack,
            _pad: 0,
        });
    }

    fn on_off_cpu(&mut self, o: &OffCpuEvent) {
        let tgid = o.hdr.tgid;
        if self.go.contains(&tgid) && traced::GO_PARKING.contains(&o.syscall) {
            return;
        }
        // Resolved now, while the fd still names what it named when the thread blocked.
        let sk = (o.fd >= 0)
            .then(|| self.fds.get(&(tgid, o.fd as i32)).copied())
            .flatten();
        let target = match sk {
            Some(sk) if self.conns.contains_key(&sk) => Target::Inbound,
            Some(sk) => self.exchanges.target(sk).unwrap_or(Target::None),
            None => Target::None,
        };
        self.note_stack(tgid, o.user_stack, o.kernel_stack);
        self.timeline.push_off_cpu(
            Worker::of(o.hdr.tid, o.g),
            OffCpu {
                start: o.start_ts,
                end: o.hdr.ts,
                tgid,
                user_stack: o.user_stack,
                kernel_stack: o.kernel_stack,
                syscall: o.syscall,
                target,
                waker_tgid: o.waker_tgid,
            },
        );
    }

    /// An fd that named `sk` now names something else: close the connection
    /// if it still is the one behind that fd (socket addresses are reused).
    /// A connection never read nor written was handed on, not closed (its
    /// close would have been seen): a server forking per connection closes
    /// its copy and accepts the next on the same fd before the child reads.
    /// It stays open, without an fd, until its new owner uses or closes it.
    fn close_fd(&mut self, sk: u64, (pid, fd): (u32, i32), ts: u64) {
        let Some(conn) = self
            .conns
            .get_mut(&sk)
            .filter(|c| c.pid == pid && c.fd == fd)
        else {
            return;
        };
        if conn.seqs == [None; 2] {
            conn.fd = -1;
            self.orphans += 1;
        } else {
            self.close(sk, ts);
        }
    }

    /// Forgets connections handed on and never used since (reset before
    /// anyone read them), once old.
    fn sweep_orphans(&mut self, now: u64) {
        let mut left = 0;
        self.conns.retain(|_, c| {
            let stale = c.orphaned() && now.saturating_sub(c.opened) >= HANDSHAKE_TTL_NS;
            left += usize::from(c.orphaned() && !stale);
            !stale
        });
        self.orphans = left;
    }

    fn close(&mut self, sk: u64, ts: u64) {
        self.serving.remove(&sk);
        if let Some(mut conn) = self.conns.remove(&sk) {
            if self.fds.get(&(conn.pid, conn.fd)) == Some(&sk) {
                self.fds.remove(&(conn.pid, conn.fd));
            }
            for req in conn.chain.on_close(ts) {
                self.finish(conn.pid, conn.peer, req);
            }
        }
    }

    fn finish(&mut self, pid: u32, peer: Option<SocketAddr>, req: Request) {
        let comm = self
            .comms
            .get(&pid)
            .cloned()
            .unwrap_or_else(|| Rc::from(pid.to_string()));
        let (from, to) = req.handler_ns;
        let mut attribution = self.timeline.within(&[req.read_by, req.write_by], from, to);
        let claimed = self.exchanges.claim(pid, from, to);
        // A goroutine waiting on its own outbound call, or an event loop
        // waiting while this request's call was pending, is named by the
        // call's peer, not again by its wait.
        for (w, ns) in &mut attribution.go_waits {
            *ns = ns.saturating_sub(covered(w.start.max(from), w.end.min(to), &claimed.spans));
        }
        attribution.go_waits.retain(|&(_, ns)| ns > 0);
        for (o, ns) in attribution.off.iter_mut().filter(|(o, _)| o.is_loop_wait()) {
            *ns = ns.saturating_sub(covered(o.start.max(from), o.end.min(to), &claimed.spans));
        }
        attribution.off.retain(|&(_, ns)| ns > 0);
        attribution.waits = claimed.waits;
        self.finished_count += 1;
        self.finished.push(Finished {
            request: req,
            origin: Origin {
                pid,
                comm,
                peer,
                weight: self.weight,
            },
            attribution,
        });
    }

    /// Gives back the memory of tables that emptied since their peak (many
    /// connections held open, then closed). Returns whether any shrank.
    pub fn compact(&mut self) -> bool {
        fn shrink<K: std::hash::Hash + Eq, V>(m: &mut FxHashMap<K, V>) -> bool {
            let big = m.capacity() > 1024 && m.len() * 4 < m.capacity();
            if big {
                m.shrink_to_fit();
            }
            big
        }
        let shrunk = [
            shrink(&mut self.serving),
            shrink(&mut self.conns),
            shrink(&mut self.fds),
            shrink(&mut self.accepts),
            shrink(&mut self.handshakes),
        ];
        shrunk.iter().any(|&s| s) | self.exchanges.compact()
    }

    /// A goroutine of `tgid` the sampler saw waiting.
    pub fn push_go_wait(&mut self, g: u64, wait: GoWait) {
        self.timeline.push_go_wait(Worker::Goroutine(g), wait);
    }

    /// Forgets what no request can still need: what threads and
    /// goroutines did before every request in progress began (less a
    /// second, for records still on their way), or minutes ago.
    pub fn sweep(&mut self, now: u64) {
        let oldest = self
            .conns
            .values()
            .filter_map(|c| c.chain.in_progress_since())
            .min()
            .unwrap_or(now);
        self.timeline
            .sweep(now, oldest.min(now).saturating_sub(SWEEP_MARGIN_NS));
    }

    /// Tracing stopped at `ts`: settle every connection's request in progress.
    pub fn finish_all(&mut self, ts: u64) {
        self.serving.clear();
        let conns: Vec<_> = self.conns.drain().collect();
        for (_, mut conn) in conns {
            for req in conn.chain.on_trace_end(ts) {
                self.finish(conn.pid, conn.peer, req);
            }
        }
    }

    /// Connections currently tracked (for bounded-memory checks).
    #[cfg(test)]
    pub fn open_connections(&self) -> usize {
        self.conns.len()
    }
}

/// A peer as a blocking target: port 53 is DNS.
fn target_of(peer: SocketAddr) -> Target {
    if peer.port() == DNS_PORT {
        Target::Dns(peer)
    } else {
        Target::Outbound(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::{AcceptEvent, CloseEvent, EventHeader, SampleEvent, kind};

    const MS: u64 = 1_000_000;

    fn hdr(kind: u8, ts_ms: u64) -> EventHeader {
        EventHeader {
            kind,
            tgid: 10,
            tid: 11,
            ts: ts_ms * MS,
            ..Default::default()
        }
    }

    fn socket(sk: u64, fd: i32, sport: u16, dport: u16, ts_ms: u64) -> Event<'static> {
        let mut s = SocketEvent {
            hdr: hdr(kind::SOCKET, ts_ms),
            sk,
            fd,
            family: 2,
            protocol: 6,
            sport,
            dport,
            ..Default::default()
        };
        s.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        s.daddr[..4].copy_from_slice(&[10, 0, 0, 9]);
        Event::Socket(s)
    }

    fn io(sk: u64, fd: i32, d: u8, ts_ms: u64, ret: i64) -> IoEvent {
        IoEvent {
            hdr: hdr(kind::IO, ts_ms),
            enter_ts: ts_ms * MS,
            sk,
            ret,
            fd,
            dir: d,
            ..Default::default()
        }
    }

    fn accept(fd: i32, ts_ms: u64) -> Event<'static> {
        Event::Accept(AcceptEvent {
            hdr: hdr(kind::ACCEPT, ts_ms),
            fd,
            port: 80,
            left_out: 0,
            _pad: 0,
            backlog: 0,
            backlog_max: 128,
            listener_drops: 7 + ts_ms as u32,
            _pad2: 0,
        })
    }

    #[test]
    fn joins_handshake_accept_and_io_of_one_connection() {
        let mut c = Tracker::new();
        c.add_process(10, "srv", false);
        c.add_listener(10, 80);
        // The listener is not known yet: its queue was not read.
        let mut est = SockEvent {
            hdr: hdr(kind::ESTABLISHED, 5),
            sk: 0xa,
            family: 2,
            sport: 80,
            dport: 4000,
            backlog: u32::MAX,
            backlog_max: u32::MAX,
            listener_drops: u32::MAX,
            ..Default::default()
        };
        est.hdr.tgid = 0;
        est.daddr[..4].copy_from_slice(&[10, 0, 0, 9]);
        c.handle(Event::Established(est));
        c.handle(accept(7, 8));
        c.handle(socket(0xa, 7, 80, 4000, 9));
        c.handle(Event::Io(
            io(0xa, 7, dir::READ, 9, 40),
            b"GET /x HTTP/1.1\r\n",
        ));
        c.handle(Event::Io(
            io(0xa, 7, dir::WRITE, 29, 40),
            b"HTTP/1.1 200 OK\r\n",
        ));
        c.handle(Event::Close(CloseEvent {
            hdr: hdr(kind::CLOSE, 30),
            sk: 0xa,
        }));
        let done: Vec<Finished> = c.take_finished().collect();
        assert_eq!(done.len(), 1);
        let r = &done[0];
        assert_eq!(r.origin.peer, Some("10.0.0.9:4000".parse().expect("addr")));
        assert_eq!(
            r.request.stages.get(crate::chain::Stage::AcceptQueue),
            3 * MS
        );
        assert_eq!(r.request.route.as_deref(), Some("GET /x"));
        assert_eq!(c.open_connections(), 0);
        assert_eq!(c.listeners[&80].accepted, 1);
        assert_eq!(c.listeners[&80].backlog_limit, Some(128));
        assert_eq!(
            c.listeners[&80].drops(),
            Some(0),
            "one accept: no drops seen between readings"
        );
    }

    /// Connections that never send a byte are seen from their accept, and
    /// every open connection is told by where it stands.
    #[test]
    fn open_connections_are_counted_by_where_they_stand() {
        let mut c = Tracker::new();
        c.add_listener(10, 80);
        for (i, fd) in (20..26).enumerate() {
            c.handle(accept(fd, 1));
            c.handle(socket(0x100 + fd as u64, fd, 80, 5000 + i as u16, 1));
        }
        let mut ev = |fd: i32, d: u8, ts: u64, bytes: &'static [u8]| {
            c.handle(Event::Io(
                io(0x100 + fd as u64, fd, d, ts, bytes.len() as i64),
                bytes,
            ));
        };
        // fd 20 and 21: silent. 22: half a request. 23: a whole one.
        ev(22, dir::READ, 2, b"GET /slow HTTP/1.1\r\nHost: x\r\n");
        ev(23, dir::READ, 2, b"GET /busy HTTP/1.1\r\n\r\n");
        // 24 and 25 answered; only 25's response is still in its send queue.
        for fd in [24, 25] {
            ev(fd, dir::READ, 2, b"GET / HTTP/1.1\r\n\r\n");
            ev(fd, dir::WRITE, 3, b"HTTP/1.1 200 OK\r\n");
        }
        let open = c.open_connections_now(|peer| peer.port() == 5005);
        assert_eq!(
            open,
            OpenConnections {
                idle: 3,
                reading_request: 1,
                in_handler: 1,
                writing: 1
            }
        );
        assert_eq!((c.connections(), c.open_peak()), (6, 6));
        assert_eq!(c.listeners[&80].accepted, 6);
    }

    /// A server forking a child per connection: the parent accepts, forks,
    /// closes its copy and accepts the next on the same fd, maybe before the
    /// child reads. The child's requests are counted, under its own pid
    /// and its parent's name.
    #[test]
    fn a_child_forked_per_connection_takes_it_over() {
        let mut c = Tracker::new();
        c.add_process(10, "srv", false);
        c.add_listener(10, 80);
        let child = |mut e: IoEvent| {
            e.hdr.tgid = 20;
            e.hdr.tid = 20;
            e
        };
        c.handle(accept(4, 1));
        c.handle(socket(0xa, 4, 80, 1, 1));
        c.handle(Event::Fork(tracer_common::ForkEvent {
            hdr: hdr(kind::FORK, 2),
            child_pid: 20,
            _pad: 0,
        }));
        c.handle(accept(4, 3));
        c.handle(socket(0xb, 4, 80, 2, 3));
        c.handle(Event::Io(
            child(io(0xa, 4, dir::READ, 4, 10)),
            b"GET /a HTTP/1.1\r\n\r\n",
        ));
        c.handle(Event::Io(
            child(io(0xa, 4, dir::WRITE, 5, 10)),
            b"HTTP/1.1 200 OK\r\n",
        ));
        let mut close = CloseEvent {
            hdr: hdr(kind::CLOSE, 6),
            sk: 0xa,
        };
        close.hdr.tgid = 20;
        c.handle(Event::Close(close));
        let done: Vec<Finished> = c.take_finished().collect();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].request.outcome, crate::chain::Outcome::Complete);
        assert_eq!((done[0].origin.pid, &*done[0].origin.comm), (20, "srv"));
        assert_eq!(c.take_forks(), vec![(10, 20)]);
        assert_eq!((c.connections(), c.open_connections()), (2, 1));
        assert_eq!(c.listeners[&80].accepted, 2);
    }

    /// An event loop serving a request that awaits an upstream 60 ms, then
    /// a 10 ms timer: the loop's epoll_wait spans both. The upstream's part
    /// is named by the upstream alone; the rest stays the loop's.
    #[test]
    fn an_event_loops_wait_is_not_counted_on_top_of_the_requests_call() {
        let mut c = Tracker::new();
        c.add_listener(10, 80);
        c.handle(accept(7, 1));
        c.handle(socket(0xa, 7, 80, 1, 1));
        c.handle(Event::Io(
            io(0xa, 7, dir::READ, 2, 10),
            b"GET /proxy HTTP/1.1\r\n\r\n",
        ));
        c.handle(socket(0xb, 9, 41000, 9001, 3));
        c.handle(Event::Io(
            io(0xb, 9, dir::WRITE, 3, 10),
            b"GET / HTTP/1.1\r\n",
        ));
        c.handle(Event::OffCpu(OffCpuEvent {
            hdr: hdr(kind::OFF_CPU, 73),
            start_ts: 3 * MS,
            syscall: tracer_common::syscall::EPOLL_WAIT,
            fd: -1,
            ..Default::default()
        }));
        c.handle(Event::Io(
            io(0xb, 9, dir::READ, 63, 10),
            b"HTTP/1.1 200 OK\r\n",
        ));
        c.handle(Event::Io(
            io(0xa, 7, dir::WRITE, 73, 10),
            b"HTTP/1.1 200 OK\r\n",
        ));
        c.finish_all(100 * MS);
        let done: Vec<Finished> = c.take_finished().collect();
        let a = &done[0].attribution;
        assert_eq!(a.waits.len(), 1);
        assert_eq!(a.waits[0].2, 60 * MS, "the upstream's wait");
        assert_eq!(a.off.len(), 1);
        assert!(a.off[0].0.is_loop_wait());
        assert_eq!(a.off[0].1, 10 * MS, "what the upstream does not cover");
    }

    /// The overhead budget stops tracing a keep-alive connection between
    /// two requests and takes it up again later: the first request is
    /// whole, the connection is counted once.
    #[test]
    fn a_connection_left_out_and_taken_up_again_is_one_connection() {
        let mut c = Tracker::new();
        c.add_listener(10, 80);
        c.handle(accept(7, 1));
        c.handle(socket(0xa, 7, 80, 1, 1));
        c.handle(Event::Io(
            io(0xa, 7, dir::READ, 2, 10),
            b"GET /a HTTP/1.1\r\n\r\n",
        ));
        c.handle(Event::Io(
            io(0xa, 7, dir::WRITE, 3, 10),
            b"HTTP/1.1 200 OK\r\n",
        ));
        c.handle(Event::LeftOut(CloseEvent {
            hdr: hdr(kind::LEFT_OUT, 4),
            sk: 0xa,
        }));
        let done: Vec<Finished> = c.take_finished().collect();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].request.outcome, crate::chain::Outcome::Complete);
        // Taken up again: the kernel announces it anew, saying so.
        let Event::Socket(mut again) = socket(0xa, 7, 80, 1, 9) else {
            unreachable!("a socket event")
        };
        again.again = 1;
        c.handle(Event::Socket(again));
        c.handle(Event::Io(
            io(0xa, 7, dir::READ, 9, 10),
            b"GET /b HTTP/1.1\r\n\r\n",
        ));
        c.handle(Event::Io(
            io(0xa, 7, dir::WRITE, 10, 10),
            b"HTTP/1.1 200 OK\r\n",
        ));
        c.finish_all(20 * MS);
        assert_eq!(c.take_finished().count(), 1);
        assert_eq!(c.connections(), 1);
    }

    /// Connections handed on that nobody ever used (reset before the child
    /// read them) do not pile up.
    #[test]
    fn connections_handed_on_and_never_used_are_forgotten() {
        let mut c = Tracker::new();
        c.add_listener(10, 80);
        for i in 0..=ORPHANS_SWEEP_AT as u64 {
            c.handle(accept(4, 1));
            c.handle(socket(0x1000 + i, 4, 80, 1, 1));
        }
        assert_eq!(c.open_connections(), ORPHANS_SWEEP_AT + 1);
        c.handle(accept(4, 200_000));
        assert_eq!(
            c.open_connections(),
            0,
            "this accept hands on the last one too"
        );
    }

    #[test]
    fn accept_queue_depth_peak_and_p99() {
        let mut q = QueueDepth::default();
        assert_eq!((q.peak(), q.quantile(0.99)), (None, None));
        for d in 0..100 {
            q.record(d % 10);
        }
        q.record(40);
        assert_eq!(q.peak(), Some(40));
        assert_eq!(q.quantile(0.5), Some(5));
        assert_eq!(q.quantile(0.99), Some(9));
        assert_eq!(q.quantile(1.0), Some(40));
    }

    #[test]
    fn a_reused_socket_address_is_not_closed_by_its_old_fd() {
        let mut c = Tracker::new();
        c.add_listener(10, 80);
        // Connection 1 on fd 9, socket 0xa, closed.
        c.handle(accept(9, 1));
        c.handle(socket(0xa, 9, 80, 1, 1));
        c.handle(Event::Io(
            io(0xa, 9, dir::READ, 2, 10),
            b"GET / HTTP/1.1\r\n",
        ));
        c.handle(Event::Io(
            io(0xa, 9, dir::WRITE, 3, 10),
            b"HTTP/1.1 200 OK\r\n",
        ));
        c.handle(Event::Close(CloseEvent {
            hdr: hdr(kind::CLOSE, 4),
            sk: 0xa,
        }));
        // Connection 2 gets the same socket address, on fd 8; fd 9 is accepted again.
        c.handle(accept(8, 5));
        c.handle(socket(0xa, 8, 80, 2, 5));
        c.handle(Event::Io(
            io(0xa, 8, dir::READ, 6, 10),
            b"GET /two HTTP/1.1\r\n",
        ));
        c.handle(accept(9, 7));
        c.handle(Event::Io(
            io(0xa, 8, dir::WRITE, 8, 10),
            b"HTTP/1.1 200 OK\r\n",
        ));
        c.handle(Event::Close(CloseEvent {
            hdr: hdr(kind::CLOSE, 9),
            sk: 0xa,
        }));
        let done: Vec<Finished> = c.take_finished().collect();
        let two = done
            .iter()
            .find(|s| s.request.route.as_deref() == Some("GET /two"))
            .expect("second request");
        assert_eq!(two.request.outcome, crate::chain::Outcome::Complete);
        assert_eq!(two.request.status, Some(200));
    }

    #[test]
    fn outbound_sockets_are_not_chains() {
        let mut c = Tracker::new();
        c.add_listener(10, 80);
        c.handle(socket(0xb, 5, 41000, 9001, 1));
        c.handle(Event::Io(
            io(0xb, 5, dir::WRITE, 1, 10),
            b"GET / HTTP/1.1\r\n",
        ));
        c.handle(Event::Io(
            io(0xb, 5, dir::READ, 2, 10),
            b"HTTP/1.1 200 OK\r\n",
        ));
        c.finish_all(10 * MS);
        assert_eq!(c.take_finished().count(), 0);
    }

    #[test]
    fn connections_open_before_tracing_are_followed() {
        let mut c = Tracker::new();
        c.add_listener(10, 80);
        c.handle(socket(0xc, 9, 80, 5555, 1));
        c.handle(Event::Io(
            io(0xc, 9, dir::READ, 2, 10),
            b"GET /old HTTP/1.1\r\n",
        ));
        c.handle(Event::Io(
            io(0xc, 9, dir::WRITE, 3, 10),
            b"HTTP/1.1 200 OK\r\n",
        ));
        c.finish_all(10 * MS);
        let done: Vec<Finished> = c.take_finished().collect();
        assert_eq!(done[0].request.route.as_deref(), Some("GET /old"));
        assert_eq!(
            done[0].origin.peer,
            Some("10.0.0.9:5555".parse().expect("addr"))
        );
    }

    #[test]
    fn fd_reuse_closes_the_previous_connection() {
        let mut c = Tracker::new();
        c.add_listener(10, 80);
        c.handle(accept(7, 1));
        c.handle(socket(0xa, 7, 80, 1, 1));
        c.handle(Event::Io(
            io(0xa, 7, dir::READ, 2, 10),
            b"GET / HTTP/1.1\r\n",
        ));
        c.handle(Event::Io(
            io(0xa, 7, dir::WRITE, 3, 10),
            b"HTTP/1.1 200 OK\r\n",
        ));
        // Closed after a reset (no close event), then fd 7 comes back from accept.
        c.handle(accept(7, 4));
        c.handle(socket(0xd, 7, 80, 2, 4));
        assert_eq!(c.take_finished().count(), 1);
        assert_eq!(c.connections, 2);
        assert_eq!(c.open_connections(), 1);
    }

    #[test]
    fn blocks_on_outbound_and_dns_sockets_are_named() {
        let mut c = Tracker::new();
        c.add_listener(10, 80);
        c.handle(socket(0xb, 5, 41000, 9001, 1));
        let mut udp = SocketEvent {
            hdr: hdr(kind::SOCKET, 1),
            sk: 0xe,
            fd: 6,
            family: 2,
            protocol: 17,
            sport: 50000,
            dport: 53,
            ..Default::default()
        };
        udp.daddr[..4].copy_from_slice(&[127, 0, 0, 53]);
        c.handle(Event::Socket(udp));
        for (fd, start) in [(5, 10), (6, 20), (-1, 30)] {
            let o = OffCpuEvent {
                hdr: hdr(kind::OFF_CPU, start + 5),
                start_ts: start * MS,
                syscall: 45,
                fd,
                ..Default::default()
            };
            c.handle(Event::OffCpu(o));
        }
        let a = c.timeline.within(&[Worker::Thread(11)], 0, 100 * MS);
        let mut targets: Vec<Target> = a.off.iter().map(|(o, _)| o.target).collect();
        targets.sort();
        assert_eq!(
            targets,
            vec![
                Target::None,
                Target::Outbound("10.0.0.9:9001".parse().expect("addr")),
                Target::Dns("127.0.0.53:53".parse().expect("addr"))
            ]
        );
    }

    /// In Go, a request's samples are its goroutine's, on whatever thread
    /// it ran; what its reading thread ran for other goroutines is not its.
    #[test]
    fn go_requests_take_their_goroutines_samples() {
        let mut c = Tracker::new();
        c.add_process(10, "api", true);
        c.add_listener(10, 80);
        let (mine, other) = (0xc000_0010_u64, 0xc000_0020_u64);
        let on = |tid: u32, g: u64, ts_ms: u64, user_stack: i32| {
            Event::Sample(SampleEvent {
                hdr: EventHeader {
                    kind: kind::SAMPLE,
                    tgid: 10,
                    tid,
                    ts: ts_ms * MS,
                    ..Default::default()
                },
                user_stack,
                kernel_stack: -1,
                g,
            })
        };
        c.handle(accept(7, 1));
        c.handle(socket(0xa, 7, 80, 4000, 1));
        let mut read = io(0xa, 7, dir::READ, 2, 40);
        read.g = mine;
        c.handle(Event::Io(read, b"GET /x HTTP/1.1\r\n"));
        c.handle(on(11, other, 5, 1)); // the reading thread, another goroutine
        c.handle(on(12, mine, 6, 2)); // another thread, this request's goroutine
        c.handle(on(13, mine, 7, 3));
        let mut write = io(0xa, 7, dir::WRITE, 20, 40);
        write.hdr.tid = 13;
        write.g = mine;
        c.handle(Event::Io(write, b"HTTP/1.1 200 OK\r\n"));
        c.handle(Event::Close(CloseEvent {
            hdr: hdr(kind::CLOSE, 30),
            sk: 0xa,
        }));
        let done: Vec<Finished> = c.take_finished().collect();
        assert_eq!(done.len(), 1);
        let r = &done[0];
        assert_eq!(r.request.read_by, Worker::Goroutine(mine));
        let mut stacks: Vec<i32> = r.attribution.samples.iter().map(|s| s.user_stack).collect();
        stacks.sort_unstable();
        assert_eq!(stacks, vec![2, 3]);
    }

    /// Records lost mid-request (ring buffer full): the response of one
    /// request and the start of the next vanish, and what is left reads
    /// like one long request. The gap in the write sequence marks it.
    #[test]
    fn a_request_spanning_lost_records_is_marked_not_measured() {
        let mut c = Tracker::new();
        c.add_listener(10, 80);
        c.handle(accept(7, 1));
        c.handle(socket(0xa, 7, 80, 1, 1));
        let seq = |mut e: IoEvent, s: u16| {
            e.seq = s;
            e
        };
        c.handle(Event::Io(
            seq(io(0xa, 7, dir::READ, 2, 10), 1),
            b"GET /a HTTP/1.1\r\n",
        ));
        c.handle(Event::Io(
            seq(io(0xa, 7, dir::WRITE, 3, 10), 1),
            b"HTTP/1.1 200 OK\r\n",
        ));
        // Lost: read 2 and write 2 (a request /b and its response, or the
        // rest of /a's response: nothing tells). /a may end later than
        // seen, and /c's times may hold /b's: both are marked.
        c.handle(Event::Io(
            seq(io(0xa, 7, dir::READ, 2000, 10), 3),
            b"GET /c HTTP/1.1\r\n",
        ));
        c.handle(Event::Io(
            seq(io(0xa, 7, dir::WRITE, 2001, 10), 3),
            b"HTTP/1.1 200 OK\r\n",
        ));
        // A write and a read of the next request, reordered between CPUs: no loss.
        c.handle(Event::Io(
            seq(io(0xa, 7, dir::READ, 2002, 10), 4),
            b"GET /d HTTP/1.1\r\n",
        ));
        c.handle(Event::Io(
            seq(io(0xa, 7, dir::WRITE, 2003, 10), 4),
            b"HTTP/1.1 200 OK\r\n",
        ));
        c.finish_all(3000 * MS);
        let done: Vec<Finished> = c.take_finished().collect();
        let outcome = |path: &str| {
            done.iter()
                .find(|f| f.request.route.as_deref() == Some(path))
                .map(|f| f.request.outcome)
        };
        assert_eq!(outcome("GET /a"), Some(crate::chain::Outcome::EventsLost));
        assert_eq!(outcome("GET /c"), Some(crate::chain::Outcome::EventsLost));
        assert_eq!(outcome("GET /d"), Some(crate::chain::Outcome::Complete));

        let mut agg = crate::aggregate::Aggregates::new(0);
        for f in &done {
            agg.record(f);
        }
        assert_eq!((agg.requests(), agg.lost()), (3, 2));
        let (_, r) = &agg.routes()[1];
        assert_eq!((r.count, r.lost, r.measured()), (1, 1, 0));
        assert_eq!(r.latency.quantile(0.99), 0, "a lost request is no latency");
        assert!(agg.slowest().iter().all(|s| s.route.path != "/c"));
    }
}
