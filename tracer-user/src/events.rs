//! Decoding of ring-buffer records into typed events.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tracer_common::{
    AcceptEvent, CloseEvent, EventHeader, ForkEvent, IoEvent, IoPayloadEvent, OffCpuEvent,
    SampleEvent, SockEvent, SocketEvent, kind, read_record,
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
    Established(SockEvent),
    Listen(SockEvent),
    Fork(ForkEvent),
    Sample(SampleEvent),
    OffCpu(OffCpuEvent),
}

/// Decodes one record; `None` for a record too short or of an unknown kind.
pub fn decode(bytes: &[u8]) -> Option<Event<'_>> {
    // SAFETY (all `read_record` calls): the tracer-common types are plain old
    // data, valid for any bit pattern; lengths are checked by `read_record`.
    let hdr: EventHeader = unsafe { read_record(bytes) }?;
    Some(match hdr.kind {
        kind::ACCEPT => Event::Accept(unsafe { read_record(bytes) }?),
        kind::SOCKET => Event::Socket(unsafe { read_record(bytes) }?),
        kind::IO => Event::Io(unsafe { read_record(bytes) }?, &[]),
        kind::IO_PAYLOAD => {
            let io: IoEvent = unsafe { read_record(bytes) }?;
            let start = std::mem::offset_of!(IoPayloadEvent, payload);
            let end = start + usize::from(io.payload_len).min(tracer_common::PAYLOAD_MAX);
            Event::Io(io, bytes.get(start..end)?)
        }
        kind::CONNECT => Event::Connect(unsafe { read_record(bytes) }?),
        kind::CLOSE => Event::Close(unsafe { read_record(bytes) }?),
        kind::ESTABLISHED => Event::Established(unsafe { read_record(bytes) }?),
        kind::LISTEN => Event::Listen(unsafe { read_record(bytes) }?),
        kind::FORK => Event::Fork(unsafe { read_record(bytes) }?),
        kind::SAMPLE => Event::Sample(unsafe { read_record(bytes) }?),
        kind::OFF_CPU => Event::OffCpu(unsafe { read_record(bytes) }?),
        _ => return None,
    })
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

impl SockEventExt for SockEvent {
    fn remote(&self) -> SocketAddr {
        socket_addr(self.family, &self.daddr, self.dport)
    }
}

pub trait SockEventExt {
    /// The peer of a passive open: the client.
    fn remote(&self) -> SocketAddr;
}

pub trait SocketEventExt {
    fn remote(&self) -> SocketAddr;
    /// IPv4 or IPv6: the addresses mean something.
    fn has_addresses(&self) -> bool;
}

impl SocketEventExt for SocketEvent {
    fn remote(&self) -> SocketAddr {
        socket_addr(self.family, &self.daddr, self.dport)
    }
    fn has_addresses(&self) -> bool {
        self.family == AF_INET || self.family == AF_INET6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain `repr(C)` value.
        unsafe {
            std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
        .to_vec()
    }

    #[test]
    fn decodes_payload_event_up_to_its_length() {
        let mut ev = IoPayloadEvent {
            io: IoEvent::default(),
            payload: [b'x'; tracer_common::PAYLOAD_MAX],
        };
        ev.io.hdr.kind = kind::IO_PAYLOAD;
        ev.io.payload_len = 3;
        ev.io.fd = 9;
        let raw = bytes_of(&ev);
        match decode(&raw) {
            Some(Event::Io(io, payload)) => {
                assert_eq!(io.fd, 9);
                assert_eq!(payload, b"xxx");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        assert!(decode(&[1, 2, 3]).is_none());
        let mut hdr = EventHeader {
            kind: 200,
            ..Default::default()
        };
        assert!(decode(&bytes_of(&hdr)).is_none());
        hdr.kind = kind::ACCEPT;
        assert!(
            decode(&bytes_of(&hdr)).is_none(),
            "header alone is shorter than an accept"
        );
    }

    #[test]
    fn addresses() {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(socket_addr(2, &a, 80).to_string(), "127.0.0.1:80");
        let v6 = Ipv6Addr::LOCALHOST.octets();
        assert_eq!(socket_addr(10, &v6, 443).to_string(), "[::1]:443");
    }
}
