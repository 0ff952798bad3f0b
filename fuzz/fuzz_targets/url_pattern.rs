//! URL patterns (`match_urlpattern`, `"match_type": "urlpattern"`), compiled from arbitrary text
//! against several hub URLs and matched against arbitrary topics.
//!
//! Properties:
//! - bounds hold: a pattern over the length limit is refused as too long before being parsed, and
//!   a compiled one stays within a fixed memory estimate, under default and under tight limits;
//! - matching is deterministic, and the store's cached answer equals the uncached one;
//! - a pattern that is a plain absolute URL (no pattern syntax at all) matches that very URL.

#![no_main]

use libfuzzer_sys::fuzz_target;
use quicksilver_protocol::url_pattern::{UrlPatternError, UrlPatternLimits, UrlPatternMatcher};
use quicksilver_protocol::{SelectorError, SelectorStore};

/// The input: a flags byte (low bits pick the base URL, the top bit the tight limits), then the
/// pattern, a newline, and the topic.
struct Input {
    pattern: String,
    topic: String,
    base: u8,
    tight: bool,
}

fn decode(data: &[u8]) -> Option<Input> {
    let (&flags, rest) = data.split_first()?;
    let text = String::from_utf8_lossy(rest);
    let (pattern, topic) = text.split_once('\n').unwrap_or((&text, ""));
    Some(Input {
        pattern: pattern.to_string(),
        topic: topic.to_string(),
        base: flags & 0x7f,
        tight: flags & 0x80 != 0,
    })
}

const BASES: &[Option<&str>] = &[
    None,
    Some("https://example.com/.well-known/mercure"),
    Some("http://localhost:3000/.well-known/mercure"),
    Some("https://[::1]:8443/hub"),
    Some("not a url"),
];

const MEMORY_CEILING: usize = 8 * 1024 * 1024;

/// Text with no URL Pattern syntax in it: scheme, host and path made of plain characters.
fn is_plain_url(pattern: &str) -> bool {
    let Some(rest) = pattern.strip_prefix("https://") else {
        return false;
    };
    !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"/-_".contains(&b))
        && !rest.starts_with('/')
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = decode(data) else {
        return;
    };
    let limits = if input.tight {
        UrlPatternLimits {
            max_len: 64,
            max_groups: 8,
        }
    } else {
        UrlPatternLimits::default()
    };
    let base = BASES[usize::from(input.base) % BASES.len()];
    let result = UrlPatternMatcher::compile(&input.pattern, base, &limits);
    if input.pattern.len() > limits.max_len {
        assert!(matches!(result, Err(UrlPatternError::TooLong { .. })));
        return;
    }
    let Ok(matcher) = result else {
        return;
    };
    assert!(
        matcher.approx_memory() <= MEMORY_CEILING,
        "{:?}",
        input.pattern
    );
    let hit = matcher.is_match(&input.topic);
    assert_eq!(matcher.is_match(&input.topic), hit);
    if is_plain_url(&input.pattern) {
        assert!(matcher.is_match(&input.pattern), "{:?}", input.pattern);
    }

    let store = SelectorStore::new(16, 64).with_url_pattern_limits(limits.clone());
    match store.compile_url_pattern(&input.pattern, base) {
        Ok(selector) => {
            for topic in [input.topic.as_str(), input.pattern.as_str()] {
                let direct = selector.matches(topic);
                assert_eq!(store.matches(&selector, topic), direct);
                assert_eq!(store.matches(&selector, topic), direct);
            }
            if input.pattern != "*" {
                assert_eq!(selector.matches(&input.topic), hit);
            }
        }
        // The selector layer also refuses control characters, which the matcher leaves to it.
        Err(SelectorError::ControlCharacter) => {}
        Err(e) => panic!("matcher compiled but selector refused: {e}"),
    }
});
