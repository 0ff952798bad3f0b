//! Subscription query strings: topic/match/match_urlpattern selectors, cursors and URL tokens.
//!
//! Properties checked beyond "no panic":
//! - an accepted query is within the limits (matcher count, pattern length, no control
//!   characters) and re-encoding what was read parses to the same query;
//! - every matcher compiles or is refused without panicking; a compiled selector matches its own
//!   text where the syntax says it must (exact, template, wildcard), and the store's cached answer
//!   always equals the uncached one, on a first and on a repeated lookup.

#![no_main]

use libfuzzer_sys::fuzz_target;
use quicksilver_fuzz::reference::form_body;
use quicksilver_protocol::subscribe::MatchType;
use quicksilver_protocol::validate::is_clean;
use quicksilver_protocol::{
    compile_matcher, parse_subscribe_query, SelectorKind, SelectorStore, SubscribeLimits,
};

const HUB: &str = "https://example.com/.well-known/mercure";

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let limits = SubscribeLimits::default();
    let Ok(parsed) = parse_subscribe_query(query, &limits) else {
        return;
    };
    assert!(!parsed.matchers.is_empty() && parsed.matchers.len() <= limits.max_matchers);
    for m in &parsed.matchers {
        assert!(m.pattern.len() <= limits.max_pattern_len);
        assert!(is_clean(&m.pattern), "{:?}", m.pattern);
    }
    if let Some(id) = &parsed.last_event_id {
        assert!(!id.is_empty());
    }

    let mut fields: Vec<(&str, &str)> = parsed
        .matchers
        .iter()
        .map(|m| {
            let name = match m.kind {
                MatchType::TopicSelector => "topic",
                MatchType::Exact => "match",
                MatchType::UrlPattern => "match_urlpattern",
            };
            (name, m.pattern.as_str())
        })
        .collect();
    if let Some(id) = &parsed.last_event_id {
        fields.push(("last_event_id", id));
    }
    fields.extend(
        parsed
            .authorization
            .iter()
            .map(|a| ("authorization", a.as_str())),
    );
    let again = parse_subscribe_query(&form_body(fields), &limits).expect("re-encoded query");
    assert_eq!(again, parsed);

    let store = SelectorStore::new(64, 256);
    for m in &parsed.matchers {
        let compiled = match m.kind {
            MatchType::TopicSelector => store.compile(&m.pattern),
            MatchType::Exact => compile_matcher(&store, &m.pattern, None, Some(HUB)),
            MatchType::UrlPattern => {
                compile_matcher(&store, &m.pattern, Some("urlpattern"), Some(HUB))
            }
        };
        let Ok(selector) = compiled else {
            continue;
        };
        match selector.kind() {
            SelectorKind::Wildcard | SelectorKind::Exact | SelectorKind::Template => {
                assert!(selector.matches(&m.pattern), "{:?}", m.pattern);
            }
            SelectorKind::UrlPattern => {}
        }
        let topics = [
            m.pattern.as_str(),
            "https://example.com/books/1",
            "/books/1",
            "urn:uuid:1",
            "",
        ];
        for topic in topics
            .iter()
            .copied()
            .chain(parsed.matchers.iter().map(|o| o.pattern.as_str()))
        {
            let direct = selector.matches(topic);
            assert_eq!(
                store.matches(&selector, topic),
                direct,
                "{:?} vs {topic:?}",
                m.pattern
            );
            assert_eq!(
                store.matches(&selector, topic),
                direct,
                "cached {:?} vs {topic:?}",
                m.pattern
            );
        }
    }
});
