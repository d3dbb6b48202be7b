//! Ring-buffer records to typed events: the one place bytes from the kernel
//! become values.

use tracer_common::{EventHeader, IoEvent, IoPayloadEvent, PAYLOAD_MAX, Record, kind};
use tracer_core::event::Event;

/// Decodes one record; `None` for a record too short or of an unknown kind.
pub fn decode(bytes: &[u8]) -> Option<Event<'_>> {
    let hdr = EventHeader::read(bytes)?;
    Some(match hdr.kind {
        kind::ACCEPT => Event::Accept(Record::read(bytes)?),
        kind::SOCKET => Event::Socket(Record::read(bytes)?),
        kind::IO => Event::Io(Record::read(bytes)?, &[]),
        kind::IO_PAYLOAD => {
            let io = IoEvent::read(bytes)?;
            let start = std::mem::offset_of!(IoPayloadEvent, payload);
            let end = start + usize::from(io.payload_len).min(PAYLOAD_MAX);
            Event::Io(io, bytes.get(start..end)?)
        }
        kind::CONNECT => Event::Connect(Record::read(bytes)?),
        kind::CLOSE => Event::Close(Record::read(bytes)?),
        kind::LEFT_OUT => Event::LeftOut(Record::read(bytes)?),
        kind::ESTABLISHED => Event::Established(Record::read(bytes)?),
        kind::LISTEN => Event::Listen(Record::read(bytes)?),
        kind::FORK => Event::Fork(Record::read(bytes)?),
        kind::SAMPLE => Event::Sample(Record::read(bytes)?),
        kind::OFF_CPU => Event::OffCpu(Record::read(bytes)?),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain `repr(C)` value.
        unsafe {
            std::slice::from_raw_parts(
                std::ptr::from_ref::<T>(v).cast::<u8>(),
                std::mem::size_of::<T>(),
            )
        }
        .to_vec()
    }

    #[test]
    fn decodes_payload_event_up_to_its_length() {
        let mut ev = IoPayloadEvent {
            io: IoEvent::default(),
            payload: [b'x'; PAYLOAD_MAX],
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
}
