//! The /proc side of the collector: what an fd is when the event stream did
//! not see it open (connections accepted before tracing began, listeners of a
//! process started by `tracer exec`).

use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::{
    collector::{SocketKind, SocketOracle},
    procfs::{self, TCP_ESTABLISHED, TCP_LISTEN, TcpSocket},
};

/// /proc/net/tcp can be megabytes with many connections: read it at most this often.
const REFRESH: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct ProcOracle {
    sockets: FxHashMap<u64, TcpSocket>,
    refreshed: Option<Instant>,
}

impl ProcOracle {
    fn lookup(&mut self, tgid: u32, fd: i32) -> Option<TcpSocket> {
        let inode = procfs::fd_socket_inode(tgid, fd)?;
        if let Some(s) = self.sockets.get(&inode) {
            return Some(*s);
        }
        if self.refreshed.is_some_and(|t| t.elapsed() < REFRESH) {
            return None;
        }
        self.sockets = procfs::tcp_sockets(tgid).into_iter().collect();
        self.refreshed = Some(Instant::now());
        self.sockets.get(&inode).copied()
    }

    fn is_listening_port(&self, port: u16) -> bool {
        self.sockets.values().any(|s| s.state == TCP_LISTEN && s.local.port() == port)
    }
}

impl SocketOracle for ProcOracle {
    fn classify(&mut self, tgid: u32, fd: i32) -> SocketKind {
        match self.lookup(tgid, fd) {
            Some(s) if s.state == TCP_ESTABLISHED && self.is_listening_port(s.local.port()) => {
                SocketKind::Inbound { peer: s.remote }
            }
            _ => SocketKind::Other,
        }
    }

    fn listen_port(&mut self, tgid: u32, fd: i32) -> Option<u16> {
        self.lookup(tgid, fd).filter(|s| s.state == TCP_LISTEN).map(|s| s.local.port())
    }
}
