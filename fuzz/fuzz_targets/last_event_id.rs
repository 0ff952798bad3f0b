//! Last-Event-ID values, wherever a client can send one: the three query parameters (current
//! `last_event_id`, legacy `lastEventID`, `Last-Event-ID`) and, once a publisher chose it, the
//! `id:` line a browser reads it back from.
//!
//! Properties:
//! - any value, encoded in any of the three parameters, is read back exactly (empty means "sent,
//!   nothing to replay"), and the parameters' precedence holds whatever the values;
//! - an id the publish validation accepts survives the whole loop: SSE frame, browser parsing,
//!   query parameter, unchanged;
//! - a stream-entry cursor that parses re-serialises to itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use quicksilver_fuzz::reference::{form_body, form_encode, parse_sse};
use quicksilver_protocol::{
    parse_publish_form, parse_subscribe_query, sse, Position, PublishLimits, SubscribeLimits,
};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let limits = SubscribeLimits::default();
    let expect = Some(value.to_string());
    for name in ["last_event_id", "lastEventID", "Last-Event-ID"] {
        let query = format!("topic=a&{name}={}", form_encode(value));
        let parsed = parse_subscribe_query(&query, &limits).expect("valid query");
        assert_eq!(parsed.last_event_id, expect, "{name}");
        // Sent raw (a client that forgot to encode): never a panic.
        let _ = parse_subscribe_query(&format!("topic=a&{name}={value}"), &limits);
    }

    // Precedence: current, then legacy, then the legacy header-named parameter; empty ones skipped
    // unless all are empty.
    let mut middle = value.len() / 2;
    while !value.is_char_boundary(middle) {
        middle -= 1;
    }
    let (a, b) = value.split_at(middle);
    let parts = [
        ("Last-Event-ID", value),
        ("lastEventID", b),
        ("last_event_id", a),
    ];
    let parsed = parse_subscribe_query(
        &format!("topic=a&{}", form_body(parts.iter().copied())),
        &limits,
    )
    .expect("valid query");
    let winner = [a, b, value]
        .into_iter()
        .find(|v| !v.is_empty())
        .unwrap_or_default()
        .to_string();
    let winner = Some(winner);
    assert_eq!(parsed.last_event_id, winner);

    // The full loop for ids a publisher may choose.
    let body = form_body([
        ("topic", "https://example.com/books/1"),
        ("id", value),
        ("data", "x"),
    ]);
    if let Ok(update) = parse_publish_form(body.as_bytes(), &PublishLimits::default(), || {
        "urn:uuid:generated".into()
    }) {
        if !value.is_empty() {
            assert_eq!(update.id, value);
        }
        let frame = sse::encode_update(&update);
        let events = parse_sse(std::str::from_utf8(&frame).unwrap());
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].last_event_id, update.id,
            "the browser's Last-Event-ID"
        );
        let query = format!(
            "topic=a&lastEventID={}",
            form_encode(&events[0].last_event_id)
        );
        let parsed = parse_subscribe_query(&query, &limits).expect("valid query");
        assert_eq!(parsed.last_event_id.as_deref(), Some(update.id.as_str()));
    }

    if let Some(position) = Position::parse_stream_id(3, value) {
        let again = Position::parse_stream_id(3, &position.stream_id());
        assert_eq!(again, Some(position));
    }
});
