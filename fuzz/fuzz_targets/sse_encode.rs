//! SSE encoding of arbitrary updates: no input may inject a field or split an event.
//!
//! The frame is read back by the reference parser (the HTML event-stream rules, CR, LF and CRLF
//! all ending lines) and must yield exactly one event equal to the input: data with its line
//! endings normalised, the id and type with any CR/LF removed (the encoder's documented
//! sanitising), the retry as given. Two frames back to back must stay two events.

#![no_main]

use libfuzzer_sys::fuzz_target;
use quicksilver_fuzz::reference::{normalize_newlines, parse_sse};
use quicksilver_protocol::sse::{encode_update, STREAM_PREAMBLE};
use quicksilver_protocol::Update;

/// The input: `id 0xFF type 0xFF data 0xFF retry`, split on the one byte that never occurs in
/// UTF-8, so every field can hold anything else (CR, LF, NUL). A missing type or retry is `None`;
/// a retry that is not a decimal number is taken from its first eight bytes.
struct Input {
    id: String,
    event_type: Option<String>,
    data: String,
    retry: Option<u64>,
}

fn decode(bytes: &[u8]) -> Input {
    let mut parts = bytes.split(|b| *b == 0xFF);
    let mut text = || {
        parts
            .next()
            .map(|p| String::from_utf8_lossy(p).into_owned())
    };
    let id = text().unwrap_or_default();
    let event_type = text();
    let data = text().unwrap_or_default();
    let retry = text().map(|r| {
        r.parse().unwrap_or_else(|_| {
            let mut word = [0u8; 8];
            for (w, b) in word.iter_mut().zip(r.bytes()) {
                *w = b;
            }
            u64::from_le_bytes(word)
        })
    });
    Input {
        id,
        event_type,
        data,
        retry,
    }
}

fn strip_line_breaks(s: &str) -> String {
    s.chars().filter(|c| !matches!(c, '\r' | '\n')).collect()
}

fuzz_target!(|bytes: &[u8]| {
    let input = decode(bytes);
    let update = Update {
        id: input.id.clone(),
        topics: vec!["https://example.com/books/1".into()],
        data: input.data.clone(),
        private: false,
        event_type: input.event_type.clone(),
        retry: input.retry,
    };
    let frame = encode_update(&update);
    let text = std::str::from_utf8(&frame).expect("frames are UTF-8");
    assert!(text.ends_with("\n\n"), "frame must end with a blank line");
    assert!(
        !text.contains('\r'),
        "CR must never reach the wire: {text:?}"
    );

    let stream = format!(
        "{}{text}{text}",
        std::str::from_utf8(STREAM_PREAMBLE).unwrap()
    );
    let events = parse_sse(&stream);
    assert_eq!(events.len(), 2, "one frame, one event: {text:?}");
    for event in &events {
        // Field injection would show up as an extra or unknown field name.
        let count = |name: &str| event.fields.iter().filter(|f| *f == name).count();
        assert_eq!(count("id"), 1, "{text:?}");
        assert_eq!(
            count("event"),
            usize::from(input.event_type.is_some()),
            "{text:?}"
        );
        assert_eq!(
            count("retry"),
            usize::from(input.retry.is_some()),
            "{text:?}"
        );
        assert!(
            event
                .fields
                .iter()
                .all(|f| ["id", "event", "retry", "data"].contains(&f.as_str())),
            "unexpected field in {text:?}"
        );
        assert_eq!(event.data, normalize_newlines(&input.data));
        let id = strip_line_breaks(&input.id);
        // Browsers ignore an id holding NUL (publish validation refuses one anyway).
        let expected_id = if id.contains('\0') { "" } else { id.as_str() };
        assert_eq!(event.last_event_id, expected_id);
        // No type, or one that is empty once stripped, is the default `message`.
        let expected_type = input
            .event_type
            .as_deref()
            .map(strip_line_breaks)
            .unwrap_or_default();
        let expected_type = if expected_type.is_empty() {
            "message"
        } else {
            expected_type.as_str()
        };
        assert_eq!(event.event_type, expected_type);
        assert_eq!(event.retry, input.retry);
    }
});
