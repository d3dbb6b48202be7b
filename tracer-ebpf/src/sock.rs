//! Reading a socket's identity from the kernel's `struct sock_common`, at
//! offsets taken from the running kernel's BTF.

use tracer_common::SocketEvent;

use crate::{
    maps::{OFFSETS, setting},
    util::{header, now, read_field},
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Local port of a socket, host byte order.
#[inline(always)]
pub fn local_port(sk: u64) -> u16 {
    read_field::<u16>(sk, setting(&OFFSETS).skc_num).unwrap_or(0)
}

/// A [`SocketEvent`] describing `sk`.
#[inline(always)]
pub fn describe(kind: u8, tgid: u32, tid: u32, sk: u64, fd: i32) -> SocketEvent {
    let o = setting(&OFFSETS);
    let family = read_field::<u16>(sk, o.skc_family).unwrap_or(0);
    let mut ev = SocketEvent {
        hdr: header(kind, tgid, tid, now()),
        sk,
        fd,
        family,
        protocol: read_field::<u16>(sk, o.sock_protocol).unwrap_or(0),
        sport: local_port(sk),
        dport: u16::from_be(read_field::<u16>(sk, o.skc_dport).unwrap_or(0)),
        again: 0,
        _pad: [0; 3],
        saddr: [0; 16],
        daddr: [0; 16],
    };
    if family == AF_INET {
        if let Some(a) = read_field::<[u8; 4]>(sk, o.skc_rcv_saddr) {
            ev.saddr[..4].copy_from_slice(&a);
        }
        if let Some(a) = read_field::<[u8; 4]>(sk, o.skc_daddr) {
            ev.daddr[..4].copy_from_slice(&a);
        }
    } else if family == AF_INET6 {
        ev.saddr = read_field::<[u8; 16]>(sk, o.skc_v6_rcv_saddr).unwrap_or([0; 16]);
        ev.daddr = read_field::<[u8; 16]>(sk, o.skc_v6_daddr).unwrap_or([0; 16]);
    }
    ev
}
