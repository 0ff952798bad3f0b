//! Publish form bodies: form decoding plus publish validation, on arbitrary bytes.
//!
//! Properties checked beyond "no panic":
//! - the form decoder round-trips: re-encoding the decoded pairs and decoding again gives them back;
//! - an accepted update satisfies every validation rule (topic count and length, no control
//!   characters, no reserved topic, id or type), so the checks cannot be bypassed by encoding;
//! - an accepted update re-encoded as a form body parses to the same update;
//! - its SSE frame reads back, through the reference parser, as exactly its id, type and data.

#![no_main]

use libfuzzer_sys::fuzz_target;
use quicksilver_fuzz::reference::{form_body, normalize_newlines, parse_sse};
use quicksilver_protocol::form::parse_pairs;
use quicksilver_protocol::publish::is_reserved_topic;
use quicksilver_protocol::validate::is_clean;
use quicksilver_protocol::{parse_publish_form, sse, PublishLimits, EARLIEST};

const GENERATED: &str = "urn:uuid:00000000-0000-4000-8000-000000000000";

fuzz_target!(|body: &[u8]| {
    if let Ok(pairs) = parse_pairs(body) {
        let again = form_body(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        let reparsed = parse_pairs(again.as_bytes()).expect("re-encoded pairs are UTF-8");
        assert_eq!(reparsed, pairs);
    }

    let limits = PublishLimits::default();
    let Ok(update) = parse_publish_form(body, &limits, || GENERATED.to_string()) else {
        return;
    };
    assert!(!update.topics.is_empty() && update.topics.len() <= limits.max_topics);
    for topic in &update.topics {
        assert!(!topic.is_empty() && topic.len() <= limits.max_field_len);
        assert!(is_clean(topic), "{topic:?}");
        assert!(!is_reserved_topic(topic), "{topic:?}");
    }
    assert!(is_clean(&update.id) && update.id.len() <= limits.max_field_len);
    assert!(update.id != EARLIEST && !update.id.starts_with('#'));
    if let Some(t) = &update.event_type {
        assert!(!t.is_empty() && is_clean(t) && t.len() <= limits.max_field_len);
        assert_ne!(t, "mercure");
    }

    // Round trip through a body a well-behaved publisher would send.
    let mut fields: Vec<(&str, &str)> = update
        .topics
        .iter()
        .map(|t| ("topic", t.as_str()))
        .collect();
    fields.push(("data", &update.data));
    fields.push(("id", &update.id));
    if let Some(t) = &update.event_type {
        fields.push(("type", t));
    }
    let retry = update.retry.map(|r| r.to_string());
    if let Some(r) = &retry {
        fields.push(("retry", r));
    }
    if update.private {
        fields.push(("private", "on"));
    }
    let again = form_body(fields);
    let reparsed = parse_publish_form(again.as_bytes(), &limits, || unreachable!("id is set"))
        .expect("a re-encoded valid update stays valid");
    assert_eq!(reparsed, update);

    // What subscribers receive is exactly what was published.
    let frame = sse::encode_update(&update);
    let events = parse_sse(std::str::from_utf8(&frame).unwrap());
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(event.last_event_id, update.id);
    // No type, or an empty one, is the default `message`.
    let expected_type = match update.event_type.as_deref() {
        None | Some("") => "message",
        Some(t) => t,
    };
    assert_eq!(event.event_type, expected_type);
    assert_eq!(event.data, normalize_newlines(&update.data));
    assert_eq!(event.retry, update.retry);
});
