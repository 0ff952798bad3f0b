//! Property tests of the protocol crate against the plain references in `reference/` (shared with
//! the fuzz targets under `fuzz/`): URI template matching agrees with reference expansion, SSE
//! frames read back as what was encoded, form bodies and query strings round-trip, and no
//! selector text makes a parser panic. Case counts stay small so `cargo test` stays fast; the
//! fuzz targets search the same properties for as long as one wants.

mod reference;

use proptest::prelude::*;
use quicksilver_protocol::form::parse_pairs;
use quicksilver_protocol::sse::encode_update;
use quicksilver_protocol::template::UriTemplate;
use quicksilver_protocol::{
    parse_publish_form, parse_subscribe_query, PublishLimits, Selector, SelectorStore,
    SubscribeLimits, Update,
};
use reference::{expand_template, form_body, form_encode, normalize_newlines, parse_sse, Value};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// Text for values and ids: mostly printable, with the characters that matter to the encoders
/// (reserved URI characters, `%`, `+`, `&`, `=`, non-ASCII, line breaks) overrepresented.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::char::range('a', 'z'),
            2 => prop::sample::select(vec![
                '/', ':', '?', '#', '[', ']', '@', '!', '$', '&', '\'', '(', ')', '*', '+', ',',
                ';', '=', '%', ' ', '-', '.', '_', '~', 'é', '日', '\u{1F600}', '\r', '\n',
            ]),
            1 => any::<char>(),
        ],
        0..12,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

/// A URI template built from the RFC 6570 grammar: literal runs between expressions of every
/// operator, with prefix and explode modifiers.
fn template() -> impl Strategy<Value = String> {
    let literal = prop::sample::select(vec![
        "",
        "https://example.com/",
        "books/",
        "/",
        "-",
        ".json",
        "~user",
        "%7E",
        "é",
        "a=b&",
    ]);
    let varspec = (
        prop::sample::select(vec!["id", "x", "y", "list", "a.b", "var_1", "%41"]),
        prop::sample::select(vec!["", "", "*", ":1", ":3", ":9999"]),
    )
        .prop_map(|(name, modifier)| format!("{name}{modifier}"));
    let expression = (
        prop::sample::select(vec!["", "+", "#", ".", "/", ";", "?", "&"]),
        prop::collection::vec(varspec, 1..4),
    )
        .prop_map(|(op, vars)| format!("{{{op}{}}}", vars.join(",")));
    prop::collection::vec((literal, expression), 1..4).prop_flat_map(|parts| {
        prop::sample::select(vec!["", "/end", "?q=1"]).prop_map(move |tail| {
            let mut out: String = parts.iter().map(|(l, e)| format!("{l}{e}")).collect();
            out.push_str(tail);
            out
        })
    })
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Undef),
        4 => text().prop_map(Value::Str),
        2 => prop::collection::vec(text(), 0..4).prop_map(Value::List),
        2 => prop::collection::vec((text(), text()), 0..4).prop_map(Value::Assoc),
    ]
}

proptest! {
    #![proptest_config(config(96))]

    /// Every expansion of a template is matched by its compiled matcher.
    #[test]
    fn template_matches_every_reference_expansion(
        template in template(),
        values in prop::collection::vec(value(), 0..6),
    ) {
        let compiled = UriTemplate::compile(&template).expect("grammar-built templates are valid");
        let expansion = expand_template(&template, &values).expect("reference understands it");
        prop_assert!(
            compiled.is_match(&expansion),
            "{template:?} misses {expansion:?} (pattern {})", compiled.pattern()
        );
        // Through the selector layer and its caches, twice.
        let store = SelectorStore::new(8, 32);
        let selector = store.compile(&template).unwrap();
        prop_assert!(store.matches(&selector, &expansion));
        prop_assert!(store.matches(&selector, &expansion));
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// An SSE frame read back by a browser-like parser is the encoded update, whatever it holds:
    /// data line endings normalised, CR/LF gone from id and type, nothing injected.
    #[test]
    fn sse_frame_reads_back_as_encoded(
        id in text(),
        event_type in prop::option::of(text()),
        data in text(),
        retry in prop::option::of(any::<u64>()),
    ) {
        let update = Update {
            id: id.clone(),
            topics: vec!["t".into()],
            data: data.clone(),
            private: false,
            event_type: event_type.clone(),
            retry,
        };
        let frame = encode_update(&update);
        let stream = format!("{0}{0}", std::str::from_utf8(&frame).unwrap());
        let events = parse_sse(&stream);
        prop_assert_eq!(events.len(), 2);
        let strip = |s: &str| s.replace(['\r', '\n'], "");
        for event in events {
            prop_assert!(event.fields.iter().all(|f| ["id", "event", "retry", "data"].contains(&f.as_str())));
            prop_assert_eq!(event.fields.iter().filter(|f| *f == "id").count(), 1);
            prop_assert_eq!(&event.data, &normalize_newlines(&data));
            let expected_id = strip(&id);
            prop_assert_eq!(&event.last_event_id, if expected_id.contains('\0') { "" } else { &expected_id });
            // No type, or one that is empty once stripped, is the default `message`.
            let expected_type = event_type.as_deref().map(strip).unwrap_or_default();
            prop_assert_eq!(&event.event_type, if expected_type.is_empty() { "message" } else { &expected_type });
            prop_assert_eq!(event.retry, retry);
        }
    }

    /// Form bodies round-trip through the decoder, `+`, `%`, `&` and `=` included.
    #[test]
    fn form_pairs_round_trip(pairs in prop::collection::vec((text(), text()), 0..6)) {
        let body = form_body(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        prop_assert_eq!(parse_pairs(body.as_bytes()).unwrap(), pairs);
    }

    /// A valid update sent as a form body is parsed back unchanged.
    #[test]
    fn publish_form_round_trip(
        topics in prop::collection::vec("[a-z]{1,8}(/[a-z0-9]{1,4}){0,2}", 1..4),
        data in text(),
        id in "[a-zA-Z0-9:-]{1,20}",
        event_type in prop::option::of("[a-z]{1,8}"),
        retry in prop::option::of(any::<u64>()),
        private in any::<bool>(),
    ) {
        let topics: Vec<String> = topics.into_iter().map(|t| format!("https://example.com/{t}")).collect();
        let retry_text = retry.map(|r| r.to_string());
        let mut fields: Vec<(&str, &str)> = topics.iter().map(|t| ("topic", t.as_str())).collect();
        fields.extend([("data", data.as_str()), ("id", id.as_str())]);
        if let Some(t) = &event_type { fields.push(("type", t)); }
        if let Some(r) = &retry_text { fields.push(("retry", r)); }
        if private { fields.push(("private", "")); }
        let update = parse_publish_form(form_body(fields).as_bytes(), &PublishLimits::default(), || unreachable!())
            .unwrap();
        prop_assert_eq!(update, Update { id, topics, data, private, event_type, retry });
    }

    /// Any cursor value comes back exactly from each of the three query parameters (an empty one
    /// too: sent, it is answered, with nothing to replay).
    #[test]
    fn last_event_id_round_trip(id in text()) {
        for name in ["last_event_id", "lastEventID", "Last-Event-ID"] {
            let query = format!("topic=a&{name}={}", form_encode(&id));
            let parsed = parse_subscribe_query(&query, &SubscribeLimits::default()).unwrap();
            prop_assert_eq!(parsed.last_event_id, Some(id.clone()));
        }
    }

    /// No selector text makes a parser or compiler panic, in any syntax.
    #[test]
    fn selector_parsing_never_panics(raw in text(), topic in text()) {
        if let Ok(s) = Selector::compile(&raw) { let _ = s.matches(&topic); }
        if let Ok(s) = Selector::url_pattern(&raw, None) { let _ = s.matches(&topic); }
        for name in ["topic", "match", "match_urlpattern", "match_other"] {
            let _ = parse_subscribe_query(&format!("{name}={raw}"), &SubscribeLimits::default());
            let _ = parse_subscribe_query(&format!("{name}={}", form_encode(&raw)), &SubscribeLimits::default());
        }
    }
}
