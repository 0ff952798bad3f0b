//! Server-Sent Events encoding: the one place where an update becomes bytes on the wire.
//!
//! Every update is encoded once into a [`Bytes`] frame (see [`crate::Envelope`]) that all subscribers
//! share. Ids and types were validated at publish time, but the encoder does not trust that: it
//! strips any CR/LF from single-line fields, so no input can inject an SSE field. Data is split on
//! CR, LF and CRLF into one `data:` line per line, as the SSE specification reassembles it.

use bytes::{BufMut, Bytes, BytesMut};

use crate::Update;

/// The first bytes of every stream: a comment, so headers and the stream's start reach the client
/// (and every proxy on the way) before any update exists.
pub const STREAM_PREAMBLE: &[u8] = b":\n";

/// A heartbeat comment keeping idle connections open through proxies and load balancers.
pub const HEARTBEAT: &[u8] = b":\n";

/// Encodes an update as one SSE event terminated by a blank line.
pub fn encode_update(update: &Update) -> Bytes {
    let mut buf = BytesMut::with_capacity(update.data.len() + update.id.len() + 32);
    if let Some(t) = &update.event_type {
        put_field(&mut buf, b"event: ", t);
    }
    if let Some(retry) = update.retry {
        buf.put_slice(b"retry: ");
        buf.put_slice(retry.to_string().as_bytes());
        buf.put_u8(b'\n');
    }
    put_field(&mut buf, b"id: ", &update.id);
    for line in split_lines(&update.data) {
        buf.put_slice(b"data: ");
        buf.put_slice(line.as_bytes());
        buf.put_u8(b'\n');
    }
    buf.put_u8(b'\n');
    buf.freeze()
}

/// `frame` as one HTTP/1.1 chunk: its length in hex and CRLF, the frame, CRLF.
pub fn chunked(frame: &[u8]) -> Bytes {
    let size = format!("{:X}\r\n", frame.len());
    let mut buf = BytesMut::with_capacity(size.len() + frame.len() + 2);
    buf.put_slice(size.as_bytes());
    buf.put_slice(frame);
    buf.put_slice(b"\r\n");
    buf.freeze()
}

/// Encodes a `retry:` field alone, telling clients how soon to reconnect (used when draining).
pub fn encode_retry(ms: u64) -> Bytes {
    Bytes::from(format!("retry: {ms}\n\n"))
}

fn put_field(buf: &mut BytesMut, name: &[u8], value: &str) {
    buf.put_slice(name);
    for part in value.split(['\r', '\n']) {
        buf.put_slice(part.as_bytes());
    }
    buf.put_u8(b'\n');
}

/// Splits on CRLF, CR or LF; an empty string is one empty line (the event still has `data:`).
fn split_lines(data: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let s = rest?;
        match s.find(['\r', '\n']) {
            None => {
                rest = None;
                Some(s)
            }
            Some(i) => {
                let skip = if s[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&s[i + skip..]);
                Some(&s[..i])
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_frame_as_one_chunk() {
        assert_eq!(&chunked(b"data: x\n\n")[..], b"9\r\ndata: x\n\n\r\n");
        assert_eq!(&chunked(&[b'a'; 300])[..5], b"12C\r\n");
    }

    use super::*;
    use proptest::prelude::*;

    fn update(id: &str, data: &str) -> Update {
        Update {
            id: id.into(),
            topics: vec!["t".into()],
            data: data.into(),
            private: false,
            event_type: None,
            retry: None,
        }
    }

    #[test]
    fn encodes_all_fields() {
        let mut u = update("urn:uuid:1", "a\nb\r\nc\rd");
        u.event_type = Some("ping".into());
        u.retry = Some(1500);
        assert_eq!(
            &encode_update(&u)[..],
            b"event: ping\nretry: 1500\nid: urn:uuid:1\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
    }

    #[test]
    fn empty_data_still_has_a_data_line() {
        assert_eq!(&encode_update(&update("x", ""))[..], b"id: x\ndata: \n\n");
    }

    /// A minimal SSE parser following the HTML specification's event stream interpretation.
    fn parse(frame: &[u8]) -> Vec<(String, String)> {
        let text = std::str::from_utf8(frame).unwrap();
        let mut fields = Vec::new();
        for line in text.split('\n') {
            if line.is_empty() || line.starts_with(':') {
                continue;
            }
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            fields.push((
                name.to_string(),
                value.strip_prefix(' ').unwrap_or(value).to_string(),
            ));
        }
        fields
    }

    proptest! {
        #[test]
        fn no_field_injection(id in ".*", ty in ".*", data in ".*") {
            let mut u = update(&id, &data);
            u.event_type = Some(ty.clone());
            let frame = encode_update(&u);
            // Exactly one blank line, at the end: the frame is one event.
            let s = std::str::from_utf8(&frame).unwrap();
            prop_assert!(s.ends_with("\n\n"));
            prop_assert!(!s[..s.len() - 2].contains("\n\n"));
            prop_assert!(!s.contains('\r'));
            let fields = parse(&frame);
            let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
            prop_assert_eq!(names.iter().filter(|n| **n == "id").count(), 1);
            prop_assert_eq!(names.iter().filter(|n| **n == "event").count(), 1);
            prop_assert!(names.iter().all(|n| ["id", "event", "data"].contains(n)));
            let data_back: Vec<&str> = fields.iter().filter(|(n, _)| n == "data").map(|(_, v)| v.as_str()).collect();
            let normalized = data.replace("\r\n", "\n").replace('\r', "\n");
            prop_assert_eq!(data_back.join("\n"), normalized);
        }
    }
}
