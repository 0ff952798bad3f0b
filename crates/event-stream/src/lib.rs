//! Reads a `text/event-stream` the way a browser's `EventSource` does: the HTML specification's
//! "interpreting an event stream" (§9.2.6), fed with byte chunks exactly as they arrive from the network.
//!
//! It is the reading side of every SSE check in this repository: the test kit's SSE client parses the hub's
//! responses with it, and the protocol crate's property tests and the fuzz targets read the encoder's frames
//! back through it. It shares no code with the hub (which only encodes), so a disagreement points at a bug in
//! one of the two. It is a crate of its own, without dependencies, because the property tests and the fuzz
//! targets need it without the rest of the test kit (which links the server).
//!
//! # Layout
//!
//! One file. Bytes enter through [`EventStreamParser::feed`]; complete [`SseItem`]s (dispatched
//! [`SseEvent`]s and comments) leave into the caller's queue. A chunk may end anywhere: inside a UTF-8
//! sequence, inside a line, or between the CR and LF of a CRLF pair; the parser keeps what it needs (the
//! partial line, "the last byte was CR") until the next chunk. It departs from the specification in one way
//! only, on purpose: comment lines are surfaced as [`SseItem::Comment`] instead of being ignored, because
//! tests assert on heartbeats and on the hub's opening comment.

use std::collections::VecDeque;

/// One dispatched event, as a browser's `EventSource` would see it, plus the fields a test wants to check
/// about the block that produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The value of an `id` field inside this event's block, if the block had one (the field, not the
    /// stream's last event ID, which carries over from earlier blocks).
    pub id: Option<String>,
    /// The stream's last event ID buffer when this event was dispatched (`MessageEvent.lastEventId`).
    pub last_event_id: String,
    /// The event type: the last `event` field of the block, or `"message"` when it had none or an empty one.
    pub event_type: String,
    /// The `data` fields of the block joined with `\n`.
    pub data: String,
    /// The value of a valid (all-digits) `retry` field inside this event's block, if any.
    pub retry: Option<u64>,
    /// The name of every field line of this event's block, in order, ignored and invalid ones included
    /// (`["id", "data", "data"]`): a check that no input injects a field looks here.
    pub fields: Vec<String>,
}

/// What a stream yields: dispatched events and comment lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// A dispatched event.
    Event(SseEvent),
    /// A line starting with `:`; the text after the colon, unaltered (`":\n"` gives `Comment("")`, `": hi"`
    /// gives `Comment(" hi")`).
    Comment(String),
}

/// Incremental parser state: the partial line and the buffers of the event being built.
#[derive(Debug, Default)]
pub struct EventStreamParser {
    /// Bytes of the current line, not yet terminated. Decoded only once complete, so a UTF-8 sequence split
    /// across chunks is decoded whole.
    line: Vec<u8>,
    /// The previous byte was a CR: a LF right after it is the second half of a CRLF, not an empty line.
    after_cr: bool,
    /// A line has been completed already, so a byte order mark is no longer special.
    seen_first_line: bool,
    data: String,
    event_type: String,
    last_event_id: String,
    block_id: Option<String>,
    block_retry: Option<u64>,
    block_fields: Vec<String>,
    reconnection_time: Option<u64>,
}

impl EventStreamParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `bytes`, pushing every item they complete onto `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut VecDeque<SseItem>) {
        for &byte in bytes {
            let after_cr = std::mem::replace(&mut self.after_cr, false);
            match byte {
                b'\n' if after_cr => {}
                b'\n' => self.end_line(out),
                b'\r' => {
                    self.end_line(out);
                    self.after_cr = true;
                }
                _ => self.line.push(byte),
            }
        }
    }

    /// Parses `bytes` and returns the items they complete (a convenience for tests of the parser itself).
    pub fn feed_collect(&mut self, bytes: &[u8]) -> Vec<SseItem> {
        let mut out = VecDeque::new();
        self.feed(bytes, &mut out);
        out.into()
    }

    /// The last event ID buffer: the value of the latest valid `id` field seen, even in an undispatched block.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The reconnection time in milliseconds from the latest valid `retry` field, if any.
    pub fn reconnection_time(&self) -> Option<u64> {
        self.reconnection_time
    }

    /// Whether a partial line or an undispatched event is pending; at the end of the stream both are
    /// discarded, as the specification says.
    pub fn has_pending(&self) -> bool {
        !self.line.is_empty() || !self.data.is_empty()
    }

    fn end_line(&mut self, out: &mut VecDeque<SseItem>) {
        let mut bytes = std::mem::take(&mut self.line);
        if !self.seen_first_line {
            self.seen_first_line = true;
            if bytes.starts_with(b"\xEF\xBB\xBF") {
                bytes.drain(..3);
            }
        }
        let line = String::from_utf8_lossy(&bytes);
        if line.is_empty() {
            self.dispatch(out);
        } else if let Some(comment) = line.strip_prefix(':') {
            out.push_back(SseItem::Comment(comment.to_owned()));
        } else {
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (&*line, ""),
            };
            self.field(field, value);
        }
    }

    fn field(&mut self, field: &str, value: &str) {
        self.block_fields.push(field.to_owned());
        match field {
            "event" => self.event_type = value.to_owned(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => {
                self.last_event_id = value.to_owned();
                self.block_id = Some(value.to_owned());
            }
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                // All digits but too large for u64: the specification has no limit; ignoring it is the
                // closest a test client can get.
                if let Ok(ms) = value.parse() {
                    self.reconnection_time = Some(ms);
                    self.block_retry = Some(ms);
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut VecDeque<SseItem>) {
        let id = self.block_id.take();
        let retry = self.block_retry.take();
        let fields = std::mem::take(&mut self.block_fields);
        let event_type = std::mem::take(&mut self.event_type);
        let mut data = std::mem::take(&mut self.data);
        if data.is_empty() {
            return;
        }
        if data.ends_with('\n') {
            data.pop();
        }
        out.push_back(SseItem::Event(SseEvent {
            id,
            last_event_id: self.last_event_id.clone(),
            event_type: if event_type.is_empty() {
                "message".to_owned()
            } else {
                event_type
            },
            data,
            retry,
            fields,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain event: `data`, dispatched from a block whose field lines were `fields`.
    fn event(fields: &[&str], data: &str) -> SseEvent {
        SseEvent {
            id: None,
            last_event_id: String::new(),
            event_type: "message".to_owned(),
            data: data.to_owned(),
            retry: None,
            fields: fields.iter().map(|f| f.to_string()).collect(),
        }
    }

    fn parse_whole(input: &[u8]) -> Vec<SseItem> {
        EventStreamParser::new().feed_collect(input)
    }

    /// Feeds `input` one byte at a time: the result must not depend on where chunks end.
    fn parse_bytewise(input: &[u8]) -> Vec<SseItem> {
        let mut parser = EventStreamParser::new();
        input
            .iter()
            .flat_map(|b| parser.feed_collect(&[*b]))
            .collect()
    }

    fn parse(input: &[u8]) -> Vec<SseItem> {
        let whole = parse_whole(input);
        assert_eq!(whole, parse_bytewise(input), "chunking changed the result");
        whole
    }

    #[test]
    fn a_simple_event_with_id() {
        let items = parse(b"id: urn:1\ndata: hello\n\n");
        let mut expected = event(&["id", "data"], "hello");
        expected.id = Some("urn:1".into());
        expected.last_event_id = "urn:1".into();
        assert_eq!(items, vec![SseItem::Event(expected)]);
    }

    #[test]
    fn multi_line_data_is_joined_with_lf_and_the_last_lf_dropped() {
        assert_eq!(
            parse(b"data: a\ndata:b\ndata:  c\n\n"),
            vec![SseItem::Event(event(&["data"; 3], "a\nb\n c"))]
        );
    }

    #[test]
    fn crlf_cr_and_lf_all_end_lines() {
        let items = parse(b"data: one\r\ndata: two\rdata: three\n\r\n");
        assert_eq!(
            items,
            vec![SseItem::Event(event(&["data"; 3], "one\ntwo\nthree"))]
        );
        // CR then LF split across chunks is one line end, not an empty line in between.
        let mut parser = EventStreamParser::new();
        assert!(parser.feed_collect(b"data: x\r").is_empty());
        assert!(parser.feed_collect(b"\n").is_empty());
        assert_eq!(
            parser.feed_collect(b"\r"),
            vec![SseItem::Event(event(&["data"], "x"))]
        );
        // Two CRs are two line ends: the event is dispatched.
        assert_eq!(
            parse(b"data: y\r\r"),
            vec![SseItem::Event(event(&["data"], "y"))]
        );
    }

    #[test]
    fn comments_are_surfaced_and_do_not_end_events() {
        let items = parse(b":\n\n: heartbeat\ndata: a\n:mid\ndata: b\n\n");
        assert_eq!(
            items,
            vec![
                SseItem::Comment(String::new()),
                SseItem::Comment(" heartbeat".into()),
                SseItem::Comment("mid".into()),
                SseItem::Event(event(&["data", "data"], "a\nb")),
            ]
        );
    }

    #[test]
    fn event_type_defaults_to_message_and_resets_after_dispatch() {
        let items = parse(b"event: update\ndata: 1\n\nevent:\ndata: 2\n\ndata: 3\n\n");
        let types: Vec<_> = items
            .iter()
            .map(|item| match item {
                SseItem::Event(e) => e.event_type.as_str(),
                SseItem::Comment(_) => panic!("no comments here"),
            })
            .collect();
        assert_eq!(types, ["update", "message", "message"]);
    }

    #[test]
    fn blocks_without_data_dispatch_nothing_but_keep_their_id() {
        let mut parser = EventStreamParser::new();
        assert!(parser.feed_collect(b"id: 7\nevent: x\n\n").is_empty());
        assert_eq!(parser.last_event_id(), "7");
        let items = parser.feed_collect(b"data: after\n\n");
        let mut expected = event(&["data"], "after");
        expected.last_event_id = "7".into();
        assert_eq!(
            items,
            vec![SseItem::Event(expected)],
            "event type and block id reset, last id kept"
        );
    }

    #[test]
    fn an_empty_data_field_dispatches_an_empty_event() {
        assert_eq!(
            parse(b"data\n\ndata:\n\n"),
            vec![
                SseItem::Event(event(&["data"], "")),
                SseItem::Event(event(&["data"], ""))
            ]
        );
    }

    #[test]
    fn id_with_nul_is_ignored_and_empty_id_resets() {
        let mut parser = EventStreamParser::new();
        parser.feed_collect(b"id: a\n\nid: b\0c\n\n");
        assert_eq!(parser.last_event_id(), "a");
        let items = parser.feed_collect(b"id\ndata: x\n\n");
        let mut expected = event(&["id", "data"], "x");
        expected.id = Some(String::new());
        assert_eq!(items, vec![SseItem::Event(expected)]);
        assert_eq!(parser.last_event_id(), "");
    }

    #[test]
    fn retry_accepts_only_digits() {
        let mut parser = EventStreamParser::new();
        parser.feed_collect(b"retry: 1500\nretry: 12a\nretry: -1\nretry:\ndata: x\n\n");
        assert_eq!(parser.reconnection_time(), Some(1500));
        let items = parser.feed_collect(b"retry: 10\ndata: y\n\n");
        match &items[..] {
            [SseItem::Event(e)] => assert_eq!(e.retry, Some(10)),
            other => panic!("expected one event, got {other:?}"),
        }
    }

    #[test]
    fn only_one_leading_space_is_stripped_and_colons_in_values_are_kept() {
        assert_eq!(
            parse(b"data:  two spaces\ndata: a:b: c\n\n"),
            vec![SseItem::Event(event(
                &["data", "data"],
                " two spaces\na:b: c"
            ))]
        );
    }

    #[test]
    fn unknown_fields_are_ignored_and_field_names_are_case_sensitive() {
        assert_eq!(
            parse(b"Data: no\nfoo: bar\ndata: yes\n\n"),
            vec![SseItem::Event(event(&["Data", "foo", "data"], "yes"))]
        );
    }

    #[test]
    fn a_leading_bom_is_stripped_once() {
        assert_eq!(
            parse(b"\xEF\xBB\xBFdata: x\n\n"),
            vec![SseItem::Event(event(&["data"], "x"))]
        );
        // A second BOM is part of the field name, which then is not "data".
        assert!(parse(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\n").is_empty());
    }

    #[test]
    fn utf8_split_across_chunks_decodes_whole() {
        let input = "data: héllo ✓\n\n".as_bytes();
        assert_eq!(
            parse(input),
            vec![SseItem::Event(event(&["data"], "héllo ✓"))]
        );
    }

    #[test]
    fn fields_name_every_field_line_of_the_dispatched_block_only() {
        let items = parse(b"id: 1\n\nevent: x\nfoo\n: note\ndata: a\nretry: soon\n\ndata: b\n\n");
        let fields: Vec<Vec<&str>> = items
            .iter()
            .filter_map(|item| match item {
                SseItem::Event(e) => Some(e.fields.iter().map(String::as_str).collect()),
                SseItem::Comment(_) => None,
            })
            .collect();
        // The `id` block dispatched nothing and its field is forgotten; a comment is no field.
        assert_eq!(
            fields,
            [vec!["event", "foo", "data", "retry"], vec!["data"]]
        );
    }

    #[test]
    fn an_unterminated_event_stays_pending() {
        let mut parser = EventStreamParser::new();
        assert!(parser.feed_collect(b"data: partial\n").is_empty());
        assert!(parser.has_pending());
        assert!(parser.feed_collect(b"data: more").is_empty());
        assert!(parser.has_pending());
    }
}
