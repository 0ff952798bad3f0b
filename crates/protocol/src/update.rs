//! The update a publisher sends, and the envelope every node hands to its subscribers.
//!
//! An [`Update`] is what the publish form describes. Once a transport has stored it, the update gets
//! a [`Position`] and its SSE frame is encoded; the result is an [`Envelope`], shared behind an
//! `Arc` by the history, the fan-out shards and every subscriber queue, so the bytes are built once
//! per node however many subscribers receive them.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{sse, Position};

/// One update: a new version of one or more topics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    /// The event id (publisher-chosen, or `urn:uuid:<v4>` assigned by the hub).
    pub id: String,
    /// The topics; the first one is canonical, the others are alternates. Never empty.
    pub topics: Vec<String>,
    /// The payload, sent as one `data:` field per line.
    pub data: String,
    /// Private updates reach only subscribers whose grants match one of the topics.
    pub private: bool,
    /// The SSE `event:` field.
    pub event_type: Option<String>,
    /// The SSE `retry:` field, in milliseconds.
    pub retry: Option<u64>,
}

impl Update {
    /// The canonical topic (the first one).
    pub fn canonical_topic(&self) -> &str {
        self.topics.first().map(String::as_str).unwrap_or_default()
    }
}

/// An update that a transport has stored, ready for delivery: its position in the transport's order
/// and its encoded SSE frame.
#[derive(Debug)]
pub struct Envelope {
    /// Where the update sits in the transport's order.
    pub position: Position,
    /// The update itself (topics and privacy are needed to decide who receives it).
    pub update: Update,
    /// The complete SSE event (`id:`, `event:`, `retry:`, `data:` lines and the blank line); a
    /// slice of `chunk`.
    pub frame: Bytes,
    /// The same event as one HTTP/1.1 chunk (its size line, the frame, CRLF), encoded once so
    /// that a socket is written the update with one plain write ([`sse::chunked`]).
    pub chunk: Bytes,
    /// When the publishing node accepted the update, in microseconds since the Unix epoch; used for
    /// delivery latency metrics. `0` when unknown.
    pub accepted_at_micros: u64,
    /// The trace context of the span that stored the update, when that span was recorded (tracing
    /// on and sampled); `None` otherwise.
    pub trace_context: Option<TraceContext>,
    /// For an update stored beside the main order rather than in it (a subscription event, kept
    /// in its own stream so that it never pushes real updates out of history): the position in the
    /// main order it comes right after. `None` for updates of the main order.
    pub follows: Option<Position>,
    /// For an update stored once per partition its topics hash to (a partitioned transport, an
    /// update whose alternate topics live in other partitions than its canonical topic): the
    /// partition of each topic, index as `update.topics`. Each copy is for the subscribers whose
    /// first matching topic lives in the copy's partition (see [`Envelope::is_copy_for`]), so a
    /// node that reads several of those partitions still delivers the update once to each
    /// subscriber, in the order of one partition. `None` for an update stored once.
    pub copies: Option<std::sync::Arc<[u16]>>,
}

/// The W3C trace context (`traceparent`, and `tracestate` when there is one) of the span that
/// stored an update, so that every node's reader can continue the publisher's trace. It travels
/// with the update inside the transport only: it is never part of the SSE frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    /// `00-<trace id>-<parent span id>-<flags>`.
    pub traceparent: String,
    /// Vendor-specific trace state, when the trace carries any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

impl Envelope {
    /// Wraps a stored update, encoding its SSE frame.
    pub fn new(position: Position, update: Update, accepted_at_micros: u64) -> Self {
        let frame = sse::encode_update(&update);
        let chunk = sse::chunked(&frame);
        // The frame is the chunk's data: shared, not copied twice.
        let start = chunk.len() - frame.len() - 2;
        let frame = chunk.slice(start..start + frame.len());
        Self {
            position,
            update,
            frame,
            chunk,
            accepted_at_micros,
            trace_context: None,
            follows: None,
            copies: None,
        }
    }

    /// Whether this envelope is the copy a subscriber takes whose first matching topic (in the
    /// update's order) is `topics[first_match]`: always for an update stored once, otherwise only
    /// the copy stored in that topic's partition.
    pub fn is_copy_for(&self, first_match: usize) -> bool {
        match &self.copies {
            None => true,
            Some(partitions) => partitions.get(first_match) == Some(&self.position.partition),
        }
    }
}
