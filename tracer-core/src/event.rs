//! Kernel records, decoded: what the tracker is fed. (Decoding the ring
//! buffer's bytes is the session's business; this is what comes out.)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tracer_common::{
    AcceptEvent, CloseEvent, ForkEvent, IoEvent, OffCpuEvent, SampleEvent, SockEvent, SocketEvent,
};

#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    Accept(AcceptEvent),
    /// First use of a socket by a traced process.
    Socket(SocketEvent),
    /// A socket read or write, with the first bytes of its payload when captured.
    Io(IoEvent, &'a [u8]),
    Connect(SocketEvent),
    Close(CloseEvent),
    /// The overhead budget stopped tracing a connection, between requests.
    LeftOut(CloseEvent),
    Established(SockEvent),
    Listen(SockEvent),
    Fork(ForkEvent),
    Sample(SampleEvent),
    OffCpu(OffCpuEvent),
}

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// An address as the kernel reports it: 4 bytes for IPv4, 16 for IPv6.
pub fn socket_addr(family: u16, addr: &[u8; 16], port: u16) -> SocketAddr {
    let ip = if family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
    } else {
        let v6 = Ipv6Addr::from(*addr);
        v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
    };
    SocketAddr::new(ip, port)
}

/// The peer of a passive open: the client.
pub fn handshake_peer(s: &SockEvent) -> SocketAddr {
    socket_addr(s.family, &s.daddr, s.dport)
}

/// The remote end of a traced process's socket.
pub fn socket_peer(s: &SocketEvent) -> SocketAddr {
    socket_addr(s.family, &s.daddr, s.dport)
}

/// IPv4 or IPv6: the socket's addresses mean something.
pub fn has_addresses(s: &SocketEvent) -> bool {
    s.family == AF_INET || s.family == AF_INET6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(socket_addr(2, &a, 80).to_string(), "127.0.0.1:80");
        let v6 = Ipv6Addr::LOCALHOST.octets();
        assert_eq!(socket_addr(10, &v6, 443).to_string(), "[::1]:443");
        let mapped = Ipv4Addr::new(10, 0, 0, 9).to_ipv6_mapped().octets();
        assert_eq!(socket_addr(10, &mapped, 1).to_string(), "10.0.0.9:1");
    }
}
