//! The blocking chain of one connection: a state machine fed with the
//! connection's reads, writes and close, which yields each request with the
//! time spent in every stage.
//!
//! Request boundaries come from the read/write alternation: reads, then
//! writes, then reads again start a new request. This holds for any
//! request/response protocol; HTTP/1.x lines add method, path and status.

pub mod http;

use serde::Serialize;
use tracer_common::{
    PAYLOAD_MAX, STATUS_CAPTURE,
    errno::{EAGAIN, EINTR},
};

use crate::attribution::Worker;

/// The links of the chain, in the order a request walks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Handshake done, waiting in the listener's queue for `accept`.
    AcceptQueue,
    /// Request bytes arrived, nobody read them yet.
    ReadWait,
    /// From the first to the last read of the request.
    RequestRead,
    /// Request read, no response byte written yet: the application.
    Handler,
    /// From the first response write to the end of the last one.
    ResponseWrite,
    /// Keep-alive: previous response done, next request not arrived yet.
    Idle,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::AcceptQueue,
        Stage::ReadWait,
        Stage::RequestRead,
        Stage::Handler,
        Stage::ResponseWrite,
        Stage::Idle,
    ];

    /// The stages that make up a request's latency (all but `idle`).
    pub const LATENCY: [Stage; 5] = [
        Stage::AcceptQueue,
        Stage::ReadWait,
        Stage::RequestRead,
        Stage::Handler,
        Stage::ResponseWrite,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::AcceptQueue => "accept_queue",
            Stage::ReadWait => "read_wait",
            Stage::RequestRead => "request_read",
            Stage::Handler => "handler",
            Stage::ResponseWrite => "response_write",
            Stage::Idle => "idle",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Nanoseconds per stage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StageTimes([u64; 6]);

impl StageTimes {
    pub fn get(&self, stage: Stage) -> u64 {
        self.0[stage.index()]
    }

    pub fn set(&mut self, stage: Stage, ns: u64) {
        self.0[stage.index()] = ns;
    }

    /// Request latency: every stage but `idle`.
    pub fn total(&self) -> u64 {
        Stage::LATENCY.iter().map(|&s| self.get(s)).sum()
    }
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A response was written and the connection moved on.
    Complete,
    /// The client went away (EOF, reset, broken pipe) before the response was done.
    ClientClosed,
    /// The server closed the connection without writing a response.
    ServerClosed,
    /// Still without a response when tracing stopped.
    Unanswered,
    /// Records of its connection were lost while it was in progress (the
    /// ring buffer was full): its times cannot be trusted, and it may be
    /// two requests merged. Counted, and kept out of every figure.
    EventsLost,
}

/// One completed (or abandoned) request with its chain.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// `METHOD path` for HTTP/1.x requests.
    pub route: Option<Box<str>>,
    pub status: Option<u16>,
    pub stages: StageTimes,
    /// When the request's latency began (ns, monotonic clock).
    pub start_ns: u64,
    /// When the last response byte left, or the request was abandoned.
    pub end_ns: u64,
    pub outcome: Outcome,
    /// The `handler` window and the threads that read the request and wrote
    /// the response: off-CPU and on-CPU time inside it belongs to this request.
    pub handler_ns: (u64, u64),
    /// Who read the request and who wrote the response.
    pub read_by: Worker,
    pub write_by: Worker,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// 0 for the first request of the connection.
    pub seq: u32,
    /// Requests that arrived pipelined behind this one (HTTP/1.1
    /// pipelining): merged into its chain, since reads and writes no longer
    /// alternate per request.
    pub pipelined: u32,
}

impl Request {
    pub fn total_ns(&self) -> u64 {
        self.stages.total()
    }

    /// A complete `GET path` with the given stage times, for tests of what
    /// comes after the chain.
    #[cfg(test)]
    pub fn test_get(path: &str, stages: StageTimes) -> Request {
        Request {
            route: Some(format!("GET {path}").into()),
            status: Some(200),
            stages,
            start_ns: 0,
            end_ns: 0,
            outcome: Outcome::Complete,
            handler_ns: (0, 0),
            read_by: Worker::Thread(1),
            write_by: Worker::Thread(1),
            bytes_in: 0,
            bytes_out: 0,
            seq: 0,
            pipelined: 0,
        }
    }

    #[cfg(test)]
    pub fn method(&self) -> Option<&str> {
        self.route.as_deref().map(|r| http::split_label(r).0)
    }

    #[cfg(test)]
    pub fn path(&self) -> Option<&str> {
        self.route.as_deref().map(|r| http::split_label(r).1)
    }
}

/// Where a connection stands, from what its reads and writes showed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// No request in progress: accepted and silent, or between requests.
    Idle,
    /// Request bytes came, and the request's headers have not ended.
    ReadingRequest,
    /// The request was read and no response byte was written.
    InHandler,
    /// A response was written; whether all of it left cannot be told from
    /// the writes alone (the socket's send queue tells).
    Responded,
}

/// A completed read or write syscall on the connection.
#[derive(Clone, Copy, Debug, Default)]
pub struct Io<'a> {
    pub by: Worker,
    pub enter_ns: u64,
    pub exit_ns: u64,
    /// Bytes moved, 0 for EOF, -errno on error.
    pub ret: i64,
    /// When bytes became readable before this read, 0 if unknown.
    pub ready_ns: u64,
    /// First bytes of the buffer, present on the first read or write of a run.
    pub payload: &'a [u8],
}

/// A call that would have blocked, or was interrupted: nothing happened on
/// the connection. (The kernel side does not report EAGAIN; other sources might.)
fn nothing_happened(ret: i64) -> bool {
    ret == -EAGAIN || ret == -EINTR
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No request in progress.
    Idle,
    /// Reading a request (and running its handler until the first write).
    Reading,
    /// Writing the response.
    Writing,
}

/// The first bytes of a request or a response, gathered over the reads or
/// writes that carry them until the first line is complete or the kernel's
/// capture of the run is (`PAYLOAD_MAX` of a request, `STATUS_CAPTURE` of a
/// response).
#[derive(Clone, Debug, Default)]
struct Head {
    buf: Vec<u8>,
    done: bool,
}

impl Head {
    /// Adds captured bytes; returns all bytes so far once the first line is
    /// complete or no more will come. A first line that arrives whole (the
    /// usual case) is handed back without being copied.
    fn feed<'a>(&mut self, bytes: &'a [u8], capture: usize) -> Option<std::borrow::Cow<'a, [u8]>> {
        if self.done || bytes.is_empty() {
            return None;
        }
        if self.buf.is_empty() && (bytes.len() >= capture || bytes.contains(&b'\n')) {
            self.done = true;
            return Some(std::borrow::Cow::Borrowed(bytes));
        }
        let room = capture.saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        if self.buf.contains(&b'\n') || self.buf.len() >= capture {
            self.done = true;
            return Some(std::borrow::Cow::Owned(std::mem::take(&mut self.buf)));
        }
        None
    }

    /// What was gathered when no more bytes will come.
    fn rest(&mut self) -> Option<Vec<u8>> {
        if self.done || self.buf.is_empty() {
            return None;
        }
        self.done = true;
        Some(std::mem::take(&mut self.buf))
    }
}

#[derive(Clone, Debug, Default)]
struct Pending {
    request_head: Head,
    response_head: Head,
    ready_ns: u64,
    first_read_exit: u64,
    last_read_exit: u64,
    first_write_enter: u64,
    last_write_exit: u64,
    read_by: Worker,
    write_by: Worker,
    route: Option<Box<str>>,
    status: Option<u16>,
    bytes_in: u64,
    bytes_out: u64,
    /// Records of the connection were lost while it was in progress.
    lost: bool,
    /// The end of the request's headers (an empty line) was seen, and the
    /// last bytes read, to find it across reads.
    headers_done: bool,
    tail: [u8; 2],
    /// A read's bytes were not all captured: whether the headers ended
    /// cannot be told.
    unsure: bool,
    /// Requests seen pipelined behind this one in its reads.
    pipelined: u32,
    /// Body bytes still to come, when the head framed them (its first read
    /// held it whole); `None` when that cannot be told.
    body_left: Option<u64>,
}

impl Pending {
    /// Looks for the empty line that ends HTTP headers in a read's bytes.
    fn scan_headers(&mut self, payload: &[u8], ret: i64) {
        let whole = payload.len() as i64 == ret;
        if !whole {
            self.unsure = true;
        }
        if self.read_whole() && http::parse_request_line(payload).is_some() {
            // A request read after this one's end: the client pipelines.
            self.pipelined += 1;
        }
        if self.headers_done {
            self.body_left = self.body_left.map(|n| n.saturating_sub(ret as u64));
        }
        // Each end of headers in the read: this request's, and any request
        // pipelined behind it whose line follows.
        for end in http::header_ends(self.tail, payload) {
            if !self.headers_done && whole && self.bytes_in == 0 {
                let after = (ret as u64).saturating_sub(end as u64);
                self.body_left =
                    http::body_length(&payload[..end]).map(|n| n.saturating_sub(after));
            }
            self.headers_done = true;
            if http::parse_request_line(&payload[end..]).is_some() {
                self.pipelined += 1;
            }
        }
        self.tail = http::last_two(self.tail, payload);
    }

    /// The request's bytes were all seen and its headers never ended: the
    /// client had not finished sending it.
    fn unfinished(&self) -> bool {
        !self.headers_done && !self.unsure && self.bytes_in > 0
    }

    /// The request's head and body were all read: by its framing, what
    /// comes next is another request's.
    fn read_whole(&self) -> bool {
        self.headers_done && self.body_left == Some(0)
    }

    fn parse_request(&mut self, head: &[u8]) {
        if let Some(route) = http::route_label(head) {
            self.route = Some(route);
        }
    }
}

/// A read kept aside, with its bytes, until it is known whose it is.
#[derive(Clone, Debug)]
struct Held {
    io: Io<'static>,
    payload: Vec<u8>,
}

impl Held {
    fn of(io: &Io) -> Self {
        Held {
            io: Io {
                payload: &[],
                ..*io
            },
            payload: io.payload.to_vec(),
        }
    }

    fn io(&self) -> Io<'_> {
        Io {
            payload: &self.payload,
            ..self.io
        }
    }
}

/// The requests one event completed: none, one, or two (the one in
/// progress and the next, begun by a read held for it).
#[derive(Debug, Default)]
#[must_use]
pub struct Done([Option<Request>; 2]);

impl Done {
    fn push(&mut self, request: Option<Request>) {
        if let Some(r) = request {
            let slot = usize::from(self.0[0].is_some());
            self.0[slot] = Some(r);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0[0].is_none()
    }

    /// The one request completed, for tests of single requests.
    #[cfg(test)]
    fn single(self) -> Option<Request> {
        let [first, second] = self.0;
        assert!(second.is_none(), "two requests completed: {second:?}");
        first
    }
}

impl IntoIterator for Done {
    type Item = Request;
    type IntoIter = std::iter::Flatten<std::array::IntoIter<Option<Request>, 2>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter().flatten()
    }
}

/// The chain of one accepted connection.
#[derive(Clone, Debug)]
pub struct Connection {
    /// When the handshake completed (the connection entered the accept queue).
    established_ns: Option<u64>,
    /// When `accept` returned it; `None` for connections open before tracing began.
    accepted_ns: Option<u64>,
    /// End of the previous response: start of the keep-alive idle time.
    prev_end_ns: Option<u64>,
    phase: Phase,
    pending: Option<Pending>,
    /// The next request's first bytes, read before this request's response
    /// was seen (see `on_read`).
    early: Option<Held>,
    served: u32,
}

impl Connection {
    /// A connection returned by `accept` at `accepted_ns`.
    pub fn accepted(accepted_ns: u64) -> Self {
        Connection {
            established_ns: None,
            accepted_ns: Some(accepted_ns),
            prev_end_ns: None,
            phase: Phase::Idle,
            pending: None,
            early: None,
            served: 0,
        }
    }

    /// A connection that was already open when tracing began.
    pub fn already_open() -> Self {
        Connection {
            accepted_ns: None,
            ..Connection::accepted(0)
        }
    }

    /// Records of this connection were lost (a gap in its sequence): the
    /// request in progress, which may have absorbed a lost boundary, is
    /// marked.
    pub fn events_lost(&mut self) {
        if let Some(p) = self.pending.as_mut() {
            p.lost = true;
        }
    }

    /// When the request in progress began to be waited for, if one is.
    pub fn in_progress_since(&self) -> Option<u64> {
        let p = self.pending.as_ref()?;
        Some(if p.ready_ns != 0 {
            p.ready_ns.min(p.first_read_exit)
        } else {
            p.first_read_exit
        })
    }

    pub fn standing(&self) -> Standing {
        match (self.phase, &self.pending) {
            (Phase::Writing, _) => Standing::Responded,
            (Phase::Reading, Some(p)) if p.unfinished() => Standing::ReadingRequest,
            (Phase::Reading, _) => Standing::InHandler,
            (Phase::Idle, _) => Standing::Idle,
        }
    }

    /// The handshake time, learnt once the connection's socket is known.
    pub fn set_established(&mut self, established_ns: u64) {
        self.established_ns = Some(established_ns);
    }

    /// A read returned. Yields the previous request if this read starts a new one.
    ///
    /// A read past the end its head framed, of a fragment of a request,
    /// before any response byte, is the next request's first bytes, held
    /// until this request's response is seen. Go's background read takes
    /// the next request's first byte as soon as the client sends it, and
    /// that read can be recorded before the response write that let the
    /// client send it: taken as this request's, it would cut the next
    /// request's method short. A whole request read there is the client
    /// pipelining: merged and counted, as pipelining is.
    pub fn on_read(&mut self, io: &Io) -> Done {
        let mut done = Done::default();
        if nothing_happened(io.ret) {
            return done;
        }
        if self.phase == Phase::Writing {
            done.push(self.finish(Outcome::Complete, 0));
        }
        let read_whole =
            self.phase == Phase::Reading && self.pending.as_ref().is_some_and(Pending::read_whole);
        if read_whole && self.early.is_none() && io.ret > 0 && is_fragment(io) {
            self.early = Some(Held::of(io));
            return done;
        }
        if let Some(early) = self.early.take() {
            done.push(self.read(&early.io()));
        }
        done.push(self.read(io));
        done
    }

    fn read(&mut self, io: &Io) -> Option<Request> {
        if io.ret <= 0 {
            return self.client_gone(io.exit_ns);
        }
        let done = if self.phase == Phase::Writing {
            self.finish(Outcome::Complete, 0)
        } else {
            None
        };
        let pending = self.pending.get_or_insert_with(|| Pending {
            ready_ns: io.ready_ns,
            first_read_exit: io.exit_ns,
            ..Pending::default()
        });
        if let Some(head) = pending.request_head.feed(io.payload, PAYLOAD_MAX) {
            pending.parse_request(&head);
        }
        pending.scan_headers(io.payload, io.ret);
        pending.last_read_exit = io.exit_ns;
        pending.read_by = io.by;
        pending.bytes_in += io.ret as u64;
        self.phase = Phase::Reading;
        done
    }

    /// A write returned. Yields the request if the client went away.
    pub fn on_write(&mut self, io: &Io) -> Done {
        let mut done = Done::default();
        done.push(self.write(io));
        done
    }

    fn write(&mut self, io: &Io) -> Option<Request> {
        if nothing_happened(io.ret) {
            return None;
        }
        if io.ret < 0 {
            return match self.phase {
                Phase::Idle => None,
                _ => self.finish(Outcome::ClientClosed, io.exit_ns),
            };
        }
        let Some(pending) = self.pending.as_mut() else {
            // Bytes written with no request in progress (a greeting, say): not a chain.
            return None;
        };
        if let Some(head) = pending.response_head.feed(io.payload, STATUS_CAPTURE) {
            pending.status = http::parse_status_line(&head);
            if self.phase == Phase::Reading && pending.status.is_some_and(http::is_interim) {
                // `100 Continue` and friends: the request body is still to come.
                pending.status = None;
                pending.response_head = Head::default();
                return None;
            }
        }
        if self.phase == Phase::Reading {
            pending.first_write_enter = io.enter_ns;
            pending.write_by = io.by;
            self.phase = Phase::Writing;
        }
        pending.last_write_exit = io.exit_ns;
        pending.bytes_out += io.ret.max(0) as u64;
        None
    }

    /// The server closed its end.
    pub fn on_close(&mut self, ts: u64) -> Done {
        self.settle(Outcome::ServerClosed, ts)
    }

    /// Tracing stopped at `ts`: settle what is in progress.
    pub fn on_trace_end(&mut self, ts: u64) -> Done {
        self.settle(Outcome::Unanswered, ts)
    }

    /// Ends what is in progress: a request without a response ends with
    /// `unanswered`, and the next one, if its first bytes were held, too.
    fn settle(&mut self, unanswered: Outcome, ts: u64) -> Done {
        let mut done = Done::default();
        if let Some(early) = self.early.take() {
            if self.phase == Phase::Writing {
                done.push(self.finish(Outcome::Complete, 0));
            }
            done.push(self.read(&early.io()));
        }
        done.push(match self.phase {
            Phase::Idle => None,
            Phase::Reading => self.finish(unanswered, ts),
            Phase::Writing => self.finish(Outcome::Complete, 0),
        });
        done
    }

    /// EOF or error on read: the client is gone.
    fn client_gone(&mut self, ts: u64) -> Option<Request> {
        match self.phase {
            Phase::Idle => None,
            // The response was written; the client closing after it is normal.
            Phase::Writing => self.finish(Outcome::Complete, 0),
            Phase::Reading => self.finish(Outcome::ClientClosed, ts),
        }
    }

    /// Closes the pending request. `end_ns` is when it was abandoned, for
    /// requests that did not complete.
    fn finish(&mut self, outcome: Outcome, end_ns: u64) -> Option<Request> {
        let phase = std::mem::replace(&mut self.phase, Phase::Idle);
        let mut p = self.pending.take()?;
        let outcome = if p.lost { Outcome::EventsLost } else { outcome };
        if let Some(head) = p.request_head.rest() {
            p.parse_request(&head);
        }
        if let Some(head) = p.response_head.rest() {
            p.status = http::parse_status_line(&head);
        }
        let seq = self.served;
        self.served += 1;

        // Where waiting for this request could begin: after the previous
        // response, or after accept for the first request of the connection.
        let base = if seq == 0 {
            self.accepted_ns
        } else {
            self.prev_end_ns
        };
        let ready = if p.ready_ns != 0 {
            p.ready_ns
        } else {
            p.first_read_exit
        };
        let wait_from = base.map_or(ready, |b| ready.max(b)).min(p.first_read_exit);

        let mut stages = StageTimes::default();
        stages.set(Stage::Idle, base.map_or(0, |b| wait_from.saturating_sub(b)));
        stages.set(Stage::ReadWait, p.first_read_exit - wait_from);
        stages.set(Stage::RequestRead, p.last_read_exit - p.first_read_exit);

        let mut start_ns = wait_from;
        if seq == 0
            && let (Some(est), Some(acc)) = (self.established_ns, self.accepted_ns)
        {
            stages.set(Stage::AcceptQueue, acc.saturating_sub(est));
            start_ns = est.min(acc);
        }

        let (handler_end, end) = match (phase, outcome) {
            (Phase::Writing, Outcome::Complete) => (p.first_write_enter, p.last_write_exit),
            (Phase::Writing, _) => (p.first_write_enter, end_ns.max(p.first_write_enter)),
            _ => (end_ns.max(p.last_read_exit), end_ns.max(p.last_read_exit)),
        };
        let handler_end = handler_end.max(p.last_read_exit);
        let handler_ns = if phase != Phase::Writing && p.unfinished() {
            // Abandoned while the client was still sending: no handler ran.
            stages.set(Stage::RequestRead, end - p.first_read_exit);
            (end, end)
        } else {
            stages.set(Stage::Handler, handler_end - p.last_read_exit);
            stages.set(Stage::ResponseWrite, end.saturating_sub(handler_end));
            (p.last_read_exit, handler_end)
        };

        self.prev_end_ns = Some(end);
        Some(Request {
            route: p.route,
            status: p.status,
            stages,
            start_ns,
            end_ns: end,
            outcome,
            handler_ns,
            read_by: p.read_by,
            write_by: p.write_by,
            bytes_in: p.bytes_in,
            bytes_out: p.bytes_out,
            seq,
            pipelined: p.pipelined,
        })
    }
}

/// A read whose bytes were all captured and hold no end of a request head.
fn is_fragment(io: &Io) -> bool {
    io.payload.len() as i64 == io.ret && http::header_ends([0; 2], io.payload).next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn read(at_ms: u64, ret: i64, ready_ms: u64, payload: &'static [u8]) -> Io<'static> {
        Io {
            by: Worker::Thread(7),
            enter_ns: at_ms * MS - 10,
            exit_ns: at_ms * MS,
            ret,
            ready_ns: ready_ms * MS,
            payload,
        }
    }

    fn write(enter_ms: u64, exit_ms: u64, ret: i64, payload: &'static [u8]) -> Io<'static> {
        Io {
            by: Worker::Thread(8),
            enter_ns: enter_ms * MS,
            exit_ns: exit_ms * MS,
            ret,
            ready_ns: 0,
            payload,
        }
    }

    fn ms(req: &Request, stage: Stage) -> u64 {
        req.stages.get(stage) / MS
    }

    #[test]
    fn single_request_has_every_stage() {
        let mut c = Connection::accepted(100 * MS);
        c.set_established(90 * MS);
        assert!(
            c.on_read(&read(105, 80, 102, b"GET /slow?x=1 HTTP/1.1\r\n"))
                .is_empty()
        );
        assert!(
            c.on_write(&write(305, 306, 120, b"HTTP/1.1 200 OK\r\n"))
                .is_empty()
        );
        let r = c.on_close(310 * MS).single().expect("request");
        assert_eq!(
            (r.method(), r.path(), r.status),
            (Some("GET"), Some("/slow"), Some(200))
        );
        assert_eq!(ms(&r, Stage::AcceptQueue), 10);
        assert_eq!(ms(&r, Stage::ReadWait), 3);
        assert_eq!(ms(&r, Stage::RequestRead), 0);
        assert_eq!(ms(&r, Stage::Handler), 200);
        assert_eq!(ms(&r, Stage::ResponseWrite), 1);
        assert_eq!(ms(&r, Stage::Idle), 2);
        assert_eq!(r.outcome, Outcome::Complete);
        // The 2 ms between accept and the first byte are the client's, not latency.
        assert_eq!(r.total_ns(), (306 - 90 - 2) * MS);
        assert_eq!((r.start_ns, r.end_ns), (90 * MS, 306 * MS));
        assert_eq!(r.handler_ns, (105 * MS, 305 * MS));
    }

    #[test]
    fn data_queued_before_accept_is_not_counted_twice() {
        let mut c = Connection::accepted(100 * MS);
        c.set_established(50 * MS);
        // Bytes arrived at 60 ms, while the connection was still in the accept queue.
        assert!(
            c.on_read(&read(101, 80, 60, b"GET / HTTP/1.1\r\n"))
                .is_empty()
        );
        assert!(
            c.on_write(&write(102, 102, 10, b"HTTP/1.1 200 OK\r\n"))
                .is_empty()
        );
        let r = c.on_trace_end(200 * MS).single().expect("request");
        assert_eq!(ms(&r, Stage::AcceptQueue), 50);
        assert_eq!(ms(&r, Stage::ReadWait), 1);
        assert_eq!(ms(&r, Stage::Idle), 0);
        assert_eq!(r.total_ns(), (102 - 50) * MS);
    }

    #[test]
    fn reads_and_writes_that_would_block_change_nothing() {
        let mut c = Connection::accepted(0);
        assert!(c.on_read(&read(5, -EAGAIN, 0, b"")).is_empty());
        assert!(
            c.on_read(&read(10, 80, 9, b"GET /a HTTP/1.1\r\n"))
                .is_empty()
        );
        assert!(c.on_read(&read(11, -EAGAIN, 0, b"")).is_empty());
        assert!(
            c.on_write(&write(30, 30, 4096, b"HTTP/1.1 200 OK\r\n"))
                .is_empty()
        );
        assert!(c.on_write(&write(31, 31, -EAGAIN, b"")).is_empty());
        assert!(c.on_write(&write(40, 41, 4096, b"")).is_empty());
        assert!(c.on_read(&read(50, -EAGAIN, 0, b"")).is_empty());
        let r = c.on_trace_end(60 * MS).single().expect("request");
        assert_eq!(r.outcome, Outcome::Complete);
        assert_eq!(ms(&r, Stage::Handler), 20);
        assert_eq!(ms(&r, Stage::ResponseWrite), 11);
    }

    #[test]
    fn request_split_over_several_reads() {
        let mut c = Connection::accepted(0);
        assert!(
            c.on_read(&read(10, 100, 9, b"POST /upload HTTP/1.1\r\n"))
                .is_empty()
        );
        assert!(c.on_read(&read(40, 4000, 39, b"")).is_empty());
        assert!(c.on_read(&read(70, 4000, 69, b"")).is_empty());
        assert!(
            c.on_write(&write(75, 76, 50, b"HTTP/1.1 201 Created\r\n"))
                .is_empty()
        );
        let r = c.on_close(80 * MS).single().expect("request");
        assert_eq!(r.path(), Some("/upload"));
        assert_eq!(r.status, Some(201));
        assert_eq!(ms(&r, Stage::RequestRead), 60);
        assert_eq!(ms(&r, Stage::Handler), 5);
        assert_eq!(r.bytes_in, 8100);
    }

    #[test]
    fn keep_alive_yields_each_request_when_the_next_begins() {
        let mut c = Connection::accepted(0);
        let mut done = Vec::new();
        for i in 0..5u64 {
            let t = 100 * i + 10;
            done.extend(c.on_read(&read(t, 80, t - 1, b"GET /a HTTP/1.1\r\n")));
            done.extend(c.on_write(&write(t + 20, t + 21, 100, b"HTTP/1.1 200 OK\r\n")));
        }
        // EOF from the client after the last response.
        done.extend(c.on_read(&read(600, 0, 0, b"")));
        assert!(c.on_close(601 * MS).is_empty());
        assert_eq!(done.len(), 5);
        for (i, r) in done.iter().enumerate() {
            assert_eq!(r.seq, i as u32);
            assert_eq!(r.outcome, Outcome::Complete);
            assert_eq!(ms(r, Stage::Handler), 20);
            assert_eq!(ms(r, Stage::ReadWait), 1);
            assert_eq!(ms(r, Stage::AcceptQueue), 0);
        }
        // Idle between requests: previous response ended at t+21, next bytes at t+99.
        assert_eq!(ms(&done[1], Stage::Idle), 109 - 31);
    }

    #[test]
    fn client_closing_mid_response() {
        let mut c = Connection::accepted(0);
        assert!(
            c.on_read(&read(10, 80, 9, b"GET /big HTTP/1.1\r\n"))
                .is_empty()
        );
        assert!(
            c.on_write(&write(20, 21, 65536, b"HTTP/1.1 200 OK\r\n"))
                .is_empty()
        );
        assert!(c.on_write(&write(21, 30, 65536, b"")).is_empty());
        let r = c
            .on_write(&write(30, 35, -32, b""))
            .single()
            .expect("request ends on EPIPE");
        assert_eq!(r.outcome, Outcome::ClientClosed);
        assert_eq!(r.status, Some(200));
        assert_eq!(ms(&r, Stage::ResponseWrite), 15);
        assert!(c.on_close(40 * MS).is_empty());
    }

    /// Headers sent in part, then a reset 200 ms later: the client never
    /// finished its request, so those 200 ms are request_read, not handler.
    #[test]
    fn a_request_never_finished_is_request_read() {
        let head = b"GET /slow HTTP/1.1\r\nHost: x\r\n";
        let mut c = Connection::accepted(0);
        assert!(c.on_read(&read(10, head.len() as i64, 9, head)).is_empty());
        let r = c.on_read(&read(210, -104, 0, b"")).single().expect("reset");
        assert_eq!(r.outcome, Outcome::ClientClosed);
        assert_eq!(ms(&r, Stage::RequestRead), 200);
        assert_eq!(ms(&r, Stage::Handler), 0);
        // The same request with its empty line, then a reset: the handler ran.
        let done = b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut c = Connection::accepted(0);
        assert!(c.on_read(&read(10, 20, 9, &done[..20])).is_empty());
        assert!(
            c.on_read(&read(11, (done.len() - 20) as i64, 0, &done[20..]))
                .is_empty()
        );
        let r = c.on_read(&read(211, -104, 0, b"")).single().expect("reset");
        assert_eq!(ms(&r, Stage::RequestRead), 1);
        assert_eq!(
            ms(&r, Stage::Handler),
            200,
            "the empty line split over reads counts"
        );
    }

    #[test]
    fn client_giving_up_while_handler_runs() {
        let mut c = Connection::accepted(0);
        assert!(
            c.on_read(&read(10, 80, 9, b"GET /hang HTTP/1.1\r\n"))
                .is_empty()
        );
        let r = c
            .on_read(&read(510, 0, 0, b""))
            .single()
            .expect("abandoned request");
        assert_eq!(r.outcome, Outcome::ClientClosed);
        assert_eq!(ms(&r, Stage::Handler), 500);
        assert_eq!(r.status, None);
    }

    #[test]
    fn server_that_never_answers() {
        let mut c = Connection::accepted(0);
        assert!(
            c.on_read(&read(10, 80, 9, b"GET /hang HTTP/1.1\r\n"))
                .is_empty()
        );
        let r = c
            .on_trace_end(5010 * MS)
            .single()
            .expect("unanswered request");
        assert_eq!(r.outcome, Outcome::Unanswered);
        assert_eq!(ms(&r, Stage::Handler), 5000);
        assert_eq!(ms(&r, Stage::ResponseWrite), 0);
    }

    #[test]
    fn server_closing_without_response() {
        let mut c = Connection::accepted(0);
        assert!(c.on_read(&read(10, 20, 9, b"GET /sl")).is_empty());
        let r = c.on_close(3010 * MS).single().expect("request");
        assert_eq!(r.outcome, Outcome::ServerClosed);
        assert_eq!(r.route, None);
    }

    #[test]
    fn interim_response_does_not_end_the_request() {
        let mut c = Connection::accepted(0);
        assert!(
            c.on_read(&read(
                10,
                100,
                9,
                b"PUT /f HTTP/1.1\r\nExpect: 100-continue\r\n",
            ))
            .is_empty()
        );
        assert!(
            c.on_write(&write(11, 11, 25, b"HTTP/1.1 100 Continue\r\n\r\n"))
                .is_empty()
        );
        assert!(c.on_read(&read(50, 1000, 49, b"body")).is_empty());
        assert!(
            c.on_write(&write(60, 61, 30, b"HTTP/1.1 204 No Content\r\n"))
                .is_empty()
        );
        let r = c.on_trace_end(100 * MS).single().expect("request");
        assert_eq!(r.status, Some(204));
        assert_eq!(ms(&r, Stage::RequestRead), 40);
        assert_eq!(r.seq, 0, "one request, not two");
    }

    #[test]
    fn unknown_ready_time_and_unknown_accept() {
        let mut c = Connection::already_open();
        assert!(
            c.on_read(&read(10, 80, 0, b"GET / HTTP/1.1\r\n"))
                .is_empty()
        );
        assert!(
            c.on_write(&write(12, 12, 10, b"HTTP/1.1 200 OK\r\n"))
                .is_empty()
        );
        let r = c.on_trace_end(20 * MS).single().expect("request");
        assert_eq!(ms(&r, Stage::ReadWait), 0);
        assert_eq!(ms(&r, Stage::Idle), 0);
        assert_eq!(ms(&r, Stage::Handler), 2);
    }

    #[test]
    fn request_line_split_over_reads() {
        // Go's background read can take the first byte of the next request alone.
        let mut c = Connection::accepted(0);
        assert!(c.on_read(&read(10, 1, 9, b"G")).is_empty());
        assert!(
            c.on_read(&read(11, 60, 0, b"ET /split HTTP/1.1\r\nHost: x\r\n\r\n"))
                .is_empty()
        );
        assert!(c.on_write(&write(12, 12, 40, b"HTTP/1.1 ")).is_empty());
        assert!(c.on_write(&write(12, 13, 40, b"503 Busy\r\n")).is_empty());
        let r = c.on_trace_end(20 * MS).single().expect("request");
        assert_eq!((r.method(), r.path()), (Some("GET"), Some("/split")));
        assert_eq!(r.status, Some(503));
        assert_eq!(ms(&r, Stage::ResponseWrite), 1);
    }

    #[test]
    fn status_read_from_the_kernels_short_capture_of_a_response() {
        // The kernel keeps STATUS_CAPTURE bytes of a response run, split
        // here over two writes: no end of line ever arrives.
        let mut c = Connection::accepted(0);
        assert!(
            c.on_read(&read(10, 1, 9, b"GET /cut HTTP/1.1\r\n\r\n"))
                .is_empty()
        );
        assert!(c.on_write(&write(12, 12, 9, b"HTTP/1.1 ")).is_empty());
        assert!(c.on_write(&write(12, 13, 4000, b"404 Not")).is_empty());
        assert!(c.on_write(&write(13, 14, 4000, b"")).is_empty());
        assert_eq!(b"HTTP/1.1 404 Not".len(), STATUS_CAPTURE);
        let r = c
            .on_read(&read(30, 20, 9, b"GET /next HTTP/1.1\r\n\r\n"))
            .single()
            .expect("request");
        assert_eq!(r.status, Some(404));
        assert_eq!(ms(&r, Stage::ResponseWrite), 2);
    }

    const GET_A: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";

    /// GET /a read at 10 ms; Go's background read takes the next request's
    /// first byte at 30 ms, recorded before the response write (at 30 ms)
    /// that let the client send it.
    fn answered_with_next_byte_early() -> Connection {
        let mut c = Connection::accepted(0);
        assert!(
            c.on_read(&read(10, GET_A.len() as i64, 9, GET_A))
                .is_empty()
        );
        assert!(c.on_read(&read(30, 1, 30, b"G")).is_empty());
        assert!(
            c.on_write(&write(30, 30, 40, b"HTTP/1.1 200 OK\r\n"))
                .is_empty()
        );
        c
    }

    #[test]
    fn next_requests_first_byte_recorded_before_the_response() {
        let mut c = answered_with_next_byte_early();
        let first = c
            .on_read(&read(31, 32, 0, b"ET /b HTTP/1.1\r\nHost: x\r\n\r\n"))
            .single()
            .expect("the first request ends");
        assert_eq!(first.path(), Some("/a"));
        assert_eq!(ms(&first, Stage::RequestRead), 0);
        assert_eq!(ms(&first, Stage::Handler), 20);
        assert_eq!(first.bytes_in, GET_A.len() as u64);
        assert!(
            c.on_write(&write(40, 40, 40, b"HTTP/1.1 200 OK\r\n"))
                .is_empty()
        );
        let second = c
            .on_trace_end(50 * MS)
            .single()
            .expect("the second request");
        assert_eq!((second.method(), second.path()), (Some("GET"), Some("/b")));
        assert_eq!(second.bytes_in, 33);
        assert_eq!(ms(&second, Stage::RequestRead), 1);
        assert_eq!(ms(&second, Stage::Handler), 9);
    }

    /// The next request's first byte held, then the connection ends: both
    /// requests are reported, neither merged into the other.
    #[test]
    fn held_first_byte_of_a_request_never_finished() {
        for end in [Connection::on_close, Connection::on_trace_end] {
            let mut c = answered_with_next_byte_early();
            let done: Vec<_> = end(&mut c, 90 * MS).into_iter().collect();
            assert_eq!(done.len(), 2);
            assert_eq!(done[0].outcome, Outcome::Complete);
            assert_eq!(ms(&done[0], Stage::Handler), 20);
            assert_ne!(done[1].outcome, Outcome::Complete);
            assert_eq!((done[1].bytes_in, done[1].route.as_deref()), (1, None));
        }
        // The client sends one byte and goes away.
        let mut c = answered_with_next_byte_early();
        let done: Vec<_> = c.on_read(&read(60, 0, 0, b"")).into_iter().collect();
        assert_eq!(done.len(), 2);
        assert_eq!(done[1].outcome, Outcome::ClientClosed);
    }

    /// Reads the head frames as the body stay the request's.
    #[test]
    fn body_reads_after_the_head_are_the_requests() {
        let head = b"POST /f HTTP/1.1\r\nContent-Length: 6\r\n\r\n";
        let mut c = Connection::accepted(0);
        assert!(c.on_read(&read(10, head.len() as i64, 9, head)).is_empty());
        assert!(c.on_read(&read(20, 3, 20, b"abc")).is_empty());
        assert!(c.on_read(&read(30, 3, 30, b"def")).is_empty());
        assert!(
            c.on_write(&write(35, 35, 40, b"HTTP/1.1 200 OK\r\n"))
                .is_empty()
        );
        let r = c.on_trace_end(50 * MS).single().expect("request");
        assert_eq!(r.path(), Some("/f"));
        assert_eq!(ms(&r, Stage::RequestRead), 20);
        assert_eq!(ms(&r, Stage::Handler), 5);
        assert_eq!(r.bytes_in, head.len() as u64 + 6);
        // Chunked: the end is not told by the head, every read stays.
        let head = b"POST /f HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut c = Connection::accepted(0);
        assert!(c.on_read(&read(10, head.len() as i64, 9, head)).is_empty());
        assert!(c.on_read(&read(20, 5, 20, b"1\r\na\r")).is_empty());
        assert!(
            c.on_write(&write(35, 35, 40, b"HTTP/1.1 200 OK\r\n"))
                .is_empty()
        );
        let r = c.on_trace_end(50 * MS).single().expect("request");
        assert_eq!(ms(&r, Stage::RequestRead), 10);
    }

    /// A whole request read before the previous one's response: the client
    /// pipelines; the two are merged and the second is counted.
    #[test]
    fn a_whole_request_read_early_is_pipelining() {
        let mut c = Connection::accepted(0);
        assert!(
            c.on_read(&read(10, GET_A.len() as i64, 9, GET_A))
                .is_empty()
        );
        assert!(
            c.on_read(&read(12, GET_A.len() as i64, 12, GET_A))
                .is_empty()
        );
        assert!(
            c.on_write(&write(30, 30, 80, b"HTTP/1.1 200 OK\r\n"))
                .is_empty()
        );
        let r = c.on_trace_end(50 * MS).single().expect("request");
        assert_eq!((r.pipelined, r.bytes_in), (1, 2 * GET_A.len() as u64));
    }

    #[test]
    fn greeting_before_any_request_is_ignored() {
        let mut c = Connection::accepted(0);
        assert!(
            c.on_write(&write(1, 1, 20, b"220 smtp ready\r\n"))
                .is_empty()
        );
        assert!(c.on_trace_end(5 * MS).is_empty());
    }
}
