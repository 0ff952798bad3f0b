//! The stored form of an update: one Redis stream entry, versioned so nodes of different versions
//! can share a stream during a rolling upgrade.
//!
//! An entry has two fields: `v`, the format version (`"1"`), and `u`, the MessagePack encoding (with
//! field names, via `rmp-serde`) of [`EntryV1`]: the update, the time the publishing node accepted
//! it and, when the publish was traced, the W3C trace context of its `mercure.transport.publish`
//! span (absent otherwise; see `crate::trace_context`). Publishing encodes once; every node's reader
//! decodes each entry once into an [`Envelope`], whose SSE frame is then shared by all of that node's
//! subscribers.
//!
//! With retention rules, an update's entry in its partition's stream has a third field, `r`: the
//! retention classes (their tags, comma-separated) whose history streams the same script stored it
//! in (see `crate::retention`); the copies there have the same stream id and the same `v` and `u`.
//! A reader fills its per-class tail caches from it.
//!
//! A subscription event, kept in its own stream, has a third field, `a`: the stream id, in the
//! updates stream of partition 0, of the update it comes right after (see `reader`). An update's
//! payload may carry a `nonce`, a random number drawn once per publish, so that an `XADD` that a
//! client library retried after it had already run (a Redis Cluster failover) is recognised as the
//! same update and delivered once.
//!
//! Compatibility rules, for whoever writes version 2:
//! - Readers ignore fields of the entry they do not know, and MessagePack maps are decoded by field
//!   name, so adding a field to the stored struct (with `#[serde(default)]`) keeps `v = "1"` readable
//!   by old nodes. Fields added to `quicksilver_protocol::Update` must likewise be `#[serde(default)]`,
//!   or entries written before them stop decoding.
//! - An entry whose `v` is unknown is skipped by the reader with a warning (and counted), never a
//!   crash. A node of the next version must therefore keep reading `v = "1"` and keep writing it until
//!   every node understands the new version, or old nodes will skip the new entries.

use quicksilver_protocol::update::TraceContext;
use quicksilver_protocol::{Envelope, Position, Update};
use redis::streams::StreamId;
use redis::Value;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Field holding the format version.
pub(crate) const FIELD_VERSION: &str = "v";
/// Field holding the encoded update.
pub(crate) const FIELD_UPDATE: &str = "u";
/// Field of a subscription event holding the update it follows.
pub(crate) const FIELD_FOLLOWS: &str = "a";
/// Field of an update holding the retention classes it was stored for.
pub(crate) const FIELD_CLASSES: &str = "r";
/// The format this version writes.
pub(crate) const FORMAT_V1: &str = "1";

/// Why an entry could not be read (or, for an invalid update, written).
#[derive(Debug, Error)]
pub enum EntryError {
    /// The entry id is not `<ms>-<seq>`.
    #[error("invalid stream entry id {0:?}")]
    BadId(String),
    /// Written by a newer (or foreign) format.
    #[error("unknown entry format version {0:?}")]
    UnknownVersion(String),
    /// A required field is absent or not a byte string.
    #[error("entry field {0:?} missing or not a string")]
    MissingField(&'static str),
    /// The MessagePack payload does not decode.
    #[error("entry payload does not decode: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    /// The update could not be encoded (not expected for valid updates).
    #[error("update does not encode: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
}

/// What a version-1 entry's `u` field holds, as written.
#[derive(Serialize)]
struct EntryV1Ref<'a> {
    update: &'a Update,
    accepted_at_micros: u64,
    /// Added after the first release: omitted when absent, so untraced entries are unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_context: Option<&'a TraceContext>,
    /// Added later still: omitted when 0 (none).
    #[serde(skip_serializing_if = "is_zero")]
    nonce: u64,
    /// Added with partitioned reading: omitted for an update stored once.
    #[serde(skip_serializing_if = "Option::is_none")]
    copies: Option<&'a [u16]>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What a version-1 entry's `u` field holds, as read.
#[derive(Deserialize)]
struct EntryV1 {
    update: Update,
    #[serde(default)]
    accepted_at_micros: u64,
    #[serde(default)]
    trace_context: Option<TraceContext>,
    #[serde(default)]
    nonce: u64,
    #[serde(default)]
    copies: Option<Vec<u16>>,
}

/// A decoded entry: the envelope, and the nonce of the publish that wrote it (0: none).
#[derive(Debug)]
pub(crate) struct Decoded {
    pub(crate) envelope: Envelope,
    pub(crate) nonce: u64,
    /// The retention classes it was stored for (comma-separated tags), when it says.
    pub(crate) classes: Option<Box<str>>,
}

/// The `u` field of a new entry for `update`; `nonce` identifies the publish (0: none).
pub fn encode(
    update: &Update,
    accepted_at_micros: u64,
    trace_context: Option<&TraceContext>,
    nonce: u64,
) -> Result<Vec<u8>, EntryError> {
    encode_copy(update, accepted_at_micros, trace_context, nonce, None)
}

/// The `u` field of the copies of an update stored in several partitions: `copies` holds the
/// partition of each of its topics (see the module docs); `None` for an update stored once.
pub(crate) fn encode_copy(
    update: &Update,
    accepted_at_micros: u64,
    trace_context: Option<&TraceContext>,
    nonce: u64,
    copies: Option<&[u16]>,
) -> Result<Vec<u8>, EntryError> {
    Ok(rmp_serde::to_vec_named(&EntryV1Ref {
        update,
        accepted_at_micros,
        trace_context,
        nonce,
        copies,
    })?)
}

/// Decodes one stream entry of `partition` into an envelope (encoding its SSE frame).
pub(crate) fn decode(partition: u16, entry: &StreamId) -> Result<Decoded, EntryError> {
    let position = Position::parse_stream_id(partition, &entry.id)
        .ok_or_else(|| EntryError::BadId(entry.id.clone()))?;
    let version = entry
        .map
        .get(FIELD_VERSION)
        .and_then(bytes_of)
        .ok_or(EntryError::MissingField(FIELD_VERSION))?;
    if version != FORMAT_V1.as_bytes() {
        return Err(EntryError::UnknownVersion(
            String::from_utf8_lossy(version).into_owned(),
        ));
    }
    let payload = entry
        .map
        .get(FIELD_UPDATE)
        .and_then(bytes_of)
        .ok_or(EntryError::MissingField(FIELD_UPDATE))?;
    let mut decoded = decode_v1(position, payload)?;
    decoded.envelope.follows = entry
        .map
        .get(FIELD_FOLLOWS)
        .and_then(bytes_of)
        .and_then(|id| std::str::from_utf8(id).ok())
        .and_then(|id| Position::parse_stream_id(0, id));
    decoded.classes = entry
        .map
        .get(FIELD_CLASSES)
        .and_then(bytes_of)
        .and_then(|tags| std::str::from_utf8(tags).ok())
        .map(Into::into);
    Ok(decoded)
}

/// Decodes a version-1 `u` field stored at `position` into an envelope (encoding its SSE frame).
pub fn decode_payload(position: Position, payload: &[u8]) -> Result<Envelope, EntryError> {
    decode_v1(position, payload).map(|d| d.envelope)
}

fn decode_v1(position: Position, payload: &[u8]) -> Result<Decoded, EntryError> {
    let stored: EntryV1 = rmp_serde::from_slice(payload)?;
    let mut envelope = Envelope::new(position, stored.update, stored.accepted_at_micros);
    envelope.trace_context = stored.trace_context;
    // A copies list that does not fit the topics is ignored: the copy is then delivered like an
    // update stored once (a duplicate at worst, never a loss).
    envelope.copies = stored
        .copies
        .filter(|c| c.len() == envelope.update.topics.len())
        .map(Into::into);
    Ok(Decoded {
        envelope,
        nonce: stored.nonce,
        classes: None,
    })
}

fn bytes_of(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.as_bytes()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn update() -> Update {
        Update {
            id: "urn:uuid:1".into(),
            topics: vec!["https://example.com/a".into(), "alt".into()],
            data: "line1\nline2".into(),
            private: true,
            event_type: Some("evt".into()),
            retry: Some(5),
        }
    }

    fn entry(id: &str, fields: &[(&str, Vec<u8>)]) -> StreamId {
        StreamId {
            id: id.into(),
            map: fields
                .iter()
                .map(|(k, v)| (k.to_string(), Value::BulkString(v.clone())))
                .collect::<HashMap<_, _>>(),
            ..StreamId::default()
        }
    }

    #[test]
    fn copies_round_trip_and_single_entries_have_none() {
        let bytes = encode_copy(&update(), 1, None, 7, Some(&[3, 1])).unwrap();
        let e = entry("5-0", &[("v", b"1".to_vec()), ("u", bytes)]);
        let env = decode(1, &e).unwrap().envelope;
        assert_eq!(env.copies.as_deref(), Some(&[3u16, 1][..]));
        assert!(
            env.is_copy_for(1),
            "the alternate topic's copy is in partition 1"
        );
        assert!(
            !env.is_copy_for(0),
            "the canonical topic's copy is in partition 3"
        );
        let single = encode(&update(), 1, None, 7).unwrap();
        let e = entry("5-0", &[("v", b"1".to_vec()), ("u", single)]);
        assert!(decode(1, &e).unwrap().envelope.copies.is_none());
        // A list that does not fit the topics is ignored rather than hiding the update.
        let odd = encode_copy(&update(), 1, None, 7, Some(&[3])).unwrap();
        let e = entry("5-0", &[("v", b"1".to_vec()), ("u", odd)]);
        assert!(decode(1, &e).unwrap().envelope.copies.is_none());
    }

    #[test]
    fn round_trips() {
        let bytes = encode(&update(), 42, None, 0).unwrap();
        let e = entry(
            "17-3",
            &[("v", b"1".to_vec()), ("u", bytes), ("future", vec![1])],
        );
        let env = decode(2, &e).unwrap().envelope;
        assert_eq!(env.update, update());
        assert_eq!(env.accepted_at_micros, 42);
        assert_eq!(env.position, Position::new(2, 17, 3));
        assert!(!env.frame.is_empty());
    }

    #[test]
    fn unknown_versions_and_garbage_are_errors_not_panics() {
        let bytes = encode(&update(), 1, None, 0).unwrap();
        let v2 = entry("1-0", &[("v", b"2".to_vec()), ("u", bytes.clone())]);
        assert!(matches!(decode(0, &v2), Err(EntryError::UnknownVersion(v)) if v == "2"));
        let junk = entry("1-0", &[("v", b"1".to_vec()), ("u", vec![0xc1, 0x00])]);
        assert!(matches!(decode(0, &junk), Err(EntryError::Decode(_))));
        let missing = entry("1-0", &[("u", bytes.clone())]);
        assert!(matches!(
            decode(0, &missing),
            Err(EntryError::MissingField("v"))
        ));
        let bad_id = entry("x", &[("v", b"1".to_vec()), ("u", bytes)]);
        assert!(matches!(decode(0, &bad_id), Err(EntryError::BadId(_))));
    }

    #[test]
    fn newer_payload_fields_are_ignored() {
        #[derive(Serialize)]
        struct EntryV1Plus<'a> {
            update: &'a Update,
            accepted_at_micros: u64,
            trace_id: &'a str,
        }
        let u = update();
        let bytes = rmp_serde::to_vec_named(&EntryV1Plus {
            update: &u,
            accepted_at_micros: 7,
            trace_id: "abc",
        })
        .unwrap();
        let env = decode(0, &entry("5-0", &[("v", b"1".to_vec()), ("u", bytes)]))
            .unwrap()
            .envelope;
        assert_eq!(env.update, u);
        assert_eq!(env.accepted_at_micros, 7);
    }

    #[test]
    fn trace_context_round_trips() {
        let tc = TraceContext {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate: Some("vendor=1".into()),
        };
        let bytes = encode(&update(), 9, Some(&tc), 0).unwrap();
        let env = decode(0, &entry("6-0", &[("v", b"1".to_vec()), ("u", bytes)]))
            .unwrap()
            .envelope;
        assert_eq!(env.trace_context, Some(tc));
        assert_eq!(env.update, update());
        // The trace context never reaches subscribers.
        assert!(!String::from_utf8_lossy(&env.frame).contains("4bf92f35"));
    }

    #[test]
    fn entries_written_before_trace_context_still_decode() {
        // Exactly what the first release wrote (no `trace_context` key).
        #[derive(Serialize)]
        struct OldEntryV1<'a> {
            update: &'a Update,
            accepted_at_micros: u64,
        }
        let u = update();
        let old = rmp_serde::to_vec_named(&OldEntryV1 {
            update: &u,
            accepted_at_micros: 3,
        })
        .unwrap();
        let env = decode(
            0,
            &entry("7-0", &[("v", b"1".to_vec()), ("u", old.clone())]),
        )
        .unwrap()
        .envelope;
        assert_eq!(env.update, u);
        assert_eq!(env.trace_context, None);
        // And an untraced entry is byte for byte what the first release wrote.
        assert_eq!(encode(&u, 3, None, 0).unwrap(), old);
    }

    #[test]
    fn nonces_and_followed_positions_round_trip() {
        let bytes = encode(&update(), 1, None, 77).unwrap();
        let d = decode(
            1,
            &entry(
                "9-0",
                &[("v", b"1".to_vec()), ("a", b"8-4".to_vec()), ("u", bytes)],
            ),
        )
        .unwrap();
        assert_eq!(d.nonce, 77);
        assert_eq!(d.envelope.follows, Some(Position::new(0, 8, 4)));
        let plain = encode(&update(), 1, None, 0).unwrap();
        let d = decode(
            0,
            &entry("9-1", &[("v", b"1".to_vec()), ("u", plain.clone())]),
        )
        .unwrap();
        assert_eq!((d.nonce, d.envelope.follows, d.classes), (0, None, None));
        let d = decode(
            0,
            &entry(
                "9-2",
                &[
                    ("v", b"1".to_vec()),
                    ("r", b"n0,n100".to_vec()),
                    ("u", plain),
                ],
            ),
        )
        .unwrap();
        assert_eq!(d.classes.as_deref(), Some("n0,n100"));
    }

    #[test]
    fn old_readers_ignore_the_trace_context() {
        // The first release's reader struct: no `trace_context` field.
        #[derive(Deserialize)]
        struct OldEntryV1 {
            update: Update,
            #[serde(default)]
            accepted_at_micros: u64,
        }
        let tc = TraceContext {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate: None,
        };
        let bytes = encode(&update(), 5, Some(&tc), 0).unwrap();
        let old: OldEntryV1 = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(old.update, update());
        assert_eq!(old.accepted_at_micros, 5);
    }
}
