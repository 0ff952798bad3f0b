//! Publish requests: a form body in, a validated [`Update`] out.
//!
//! Every rule that protects subscribers is enforced here, before anything is stored: ids and types
//! cannot carry control characters (no SSE field injection, no broken `Last-Event-ID` headers), an id
//! cannot be `earliest` or start with `#` (both would corrupt reconnection cursors), `type: mercure`
//! and topics inside the hub's own `/.well-known/mercure` namespace are reserved for events the hub
//! generates itself, and the number of topics is bounded.

use thiserror::Error;

use crate::{form, validate, Update, EARLIEST};

/// Limits applied to publish requests.
#[derive(Clone, Debug)]
pub struct PublishLimits {
    /// Maximum number of `topic` fields in one update.
    pub max_topics: usize,
    /// Maximum length in bytes of a topic, an id or a type.
    pub max_field_len: usize,
}

impl Default for PublishLimits {
    fn default() -> Self {
        Self {
            max_topics: 100,
            max_field_len: 2048,
        }
    }
}

/// Why a publish body was refused. The message is a short reason safe to send to the publisher.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PublishError {
    /// The body is not UTF-8 once decoded.
    #[error("invalid form body: fields must be UTF-8")]
    InvalidUtf8,
    /// No `topic` field.
    #[error("missing \"topic\" field")]
    MissingTopic,
    /// More topics than allowed (a size limit: 413).
    #[error("too many topics: at most {0} per update")]
    TooManyTopics(usize),
    /// A field is longer than allowed (a size limit: 413).
    #[error("field \"{0}\" is too long")]
    FieldTooLong(&'static str),
    /// A field holds a control or format character.
    #[error("field \"{0}\" contains a control character")]
    ControlCharacter(&'static str),
    /// A topic is empty.
    #[error("empty topic")]
    EmptyTopic,
    /// A topic is `*` or inside the hub's reserved namespace.
    #[error("topic \"{0}\" is reserved by the hub")]
    ReservedTopic(String),
    /// The id would corrupt reconnection cursors.
    #[error("invalid \"id\": it must not be \"earliest\" nor start with \"#\"")]
    ReservedId,
    /// `type: mercure` is reserved for hub events.
    #[error("invalid \"type\": \"mercure\" is reserved by the hub")]
    ReservedType,
    /// `retry` is not a non-negative integer.
    #[error("invalid \"retry\": it must be a non-negative integer")]
    InvalidRetry,
}

impl PublishError {
    /// Whether this is a size limit (answered with 413 rather than 400).
    pub fn is_size_limit(&self) -> bool {
        matches!(
            self,
            PublishError::TooManyTopics(_) | PublishError::FieldTooLong(_)
        )
    }
}

/// Parses and validates a publish form body. `generate_id` is called when the publisher gave no id
/// (an empty `id` counts as none).
pub fn parse_publish_form(
    body: &[u8],
    limits: &PublishLimits,
    generate_id: impl FnOnce() -> String,
) -> Result<Update, PublishError> {
    let pairs = form::parse_pairs(body).map_err(|_| PublishError::InvalidUtf8)?;
    let mut topics = Vec::new();
    let mut data = None;
    let mut id = None;
    let mut event_type = None;
    let mut retry = None;
    let mut private = false;
    for (name, value) in pairs {
        match name.as_str() {
            "topic" => {
                if topics.len() == limits.max_topics {
                    return Err(PublishError::TooManyTopics(limits.max_topics));
                }
                topics.push(value);
            }
            // The first occurrence wins, as with the reference hub's form parsing.
            "data" => {
                data.get_or_insert(value);
            }
            "id" => {
                id.get_or_insert(value);
            }
            "type" => {
                event_type.get_or_insert(value);
            }
            "retry" => {
                retry.get_or_insert(value);
            }
            // Presence alone marks the update private, whatever the value.
            "private" => private = true,
            _ => {}
        }
    }
    if topics.is_empty() {
        return Err(PublishError::MissingTopic);
    }
    for topic in &topics {
        check_field("topic", topic, limits)?;
        if topic.is_empty() {
            return Err(PublishError::EmptyTopic);
        }
        if is_reserved_topic(topic) {
            return Err(PublishError::ReservedTopic(topic.clone()));
        }
    }
    let id = match id.filter(|id| !id.is_empty()) {
        Some(id) => {
            check_field("id", &id, limits)?;
            if id == EARLIEST || id.starts_with('#') {
                return Err(PublishError::ReservedId);
            }
            id
        }
        None => generate_id(),
    };
    let event_type = match event_type.filter(|t| !t.is_empty()) {
        Some(t) => {
            check_field("type", &t, limits)?;
            if t == "mercure" {
                return Err(PublishError::ReservedType);
            }
            Some(t)
        }
        None => None,
    };
    let retry = match retry.filter(|r| !r.is_empty()) {
        Some(r) if r.bytes().all(|b| b.is_ascii_digit()) => {
            Some(r.parse::<u64>().map_err(|_| PublishError::InvalidRetry)?)
        }
        Some(_) => return Err(PublishError::InvalidRetry),
        None => None,
    };
    Ok(Update {
        id,
        topics,
        data: data.unwrap_or_default(),
        private,
        event_type,
        retry,
    })
}

fn check_field(
    name: &'static str,
    value: &str,
    limits: &PublishLimits,
) -> Result<(), PublishError> {
    if value.len() > limits.max_field_len {
        return Err(PublishError::FieldTooLong(name));
    }
    if !validate::is_clean(value) {
        return Err(PublishError::ControlCharacter(name));
    }
    Ok(())
}

/// Path of the namespace the hub reserves for the resources it generates (subscription events).
pub const HUB_PATH: &str = "/.well-known/mercure";

/// Whether a topic is `*` or addresses the hub's reserved namespace once resolved against the hub
/// URL: its path, after dot-segment removal and decoding of percent-encoded unreserved characters,
/// is `/.well-known/mercure` or below it, whatever the scheme and authority. A topic that does not
/// parse as a URL reference cannot name a hub path and is allowed.
pub fn is_reserved_topic(topic: &str) -> bool {
    if topic == "*" {
        return true;
    }
    // Decode unreserved characters first so `%6D` and friends cannot hide the reserved path; the URL
    // parser then removes dot segments.
    let decoded = decode_unreserved(topic);
    !cannot_name_hub_path(&decoded) && resolves_to_hub_path(&decoded)
}

/// The resolution itself: `decoded` against the hub URL, then its path.
fn resolves_to_hub_path(decoded: &str) -> bool {
    static BASE: std::sync::OnceLock<Option<url::Url>> = std::sync::OnceLock::new();
    let Some(base) = BASE
        .get_or_init(|| url::Url::parse("https://hub.invalid/.well-known/mercure").ok())
        .as_ref()
    else {
        return false;
    };
    let Ok(resolved) = base.join(decoded) else {
        return false;
    };
    let path = resolved.path();
    path == HUB_PATH || path.starts_with("/.well-known/mercure/")
}

/// A cheap proof that `decoded` cannot resolve to the hub's path, which spares most topics the
/// URL parser (publishing calls this for every topic of every update): an absolute URL whose text
/// does not contain `well-known` in any case. The parser creates no letters in a path (it
/// percent-decodes nothing there; unreserved escapes were decoded before), so without that text
/// the path cannot be the hub's. Only what the parser would read without the hub URL as a base
/// qualifies: a scheme, and for the base's own scheme (`https:`) an authority (`https:mercure`
/// is relative to a base of that scheme); tabs and newlines, which the parser drops, send the
/// topic to the full resolution.
fn cannot_name_hub_path(decoded: &str) -> bool {
    let Some((scheme, rest)) = decoded.split_once(':') else {
        return false;
    };
    let scheme_ok = scheme
        .as_bytes()
        .first()
        .is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok || (scheme.eq_ignore_ascii_case("https") && !rest.starts_with("//")) {
        return false;
    }
    let bytes = decoded.as_bytes();
    !bytes.iter().any(|b| matches!(b, b'\t' | b'\n' | b'\r'))
        && !bytes
            .windows(b"well-known".len())
            .any(|w| w.eq_ignore_ascii_case(b"well-known"))
}

fn decode_unreserved(s: &str) -> std::borrow::Cow<'_, str> {
    let bytes = s.as_bytes();
    // Most topics have no escape at all: no copy for them (this runs for every topic published).
    if !bytes.contains(&b'%') {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                let v = h << 4 | l;
                if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                    out.push(v);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    // Only ASCII bytes were substituted for ASCII escapes, so the result stays valid UTF-8.
    std::borrow::Cow::Owned(String::from_utf8(out).unwrap_or_else(|_| s.to_string()))
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Update, PublishError> {
        parse_publish_form(body.as_bytes(), &PublishLimits::default(), || {
            "urn:uuid:gen".into()
        })
    }

    #[test]
    fn parses_a_full_update() {
        let u = parse("topic=https%3A%2F%2Fex.com%2Fa&topic=b&data=hello%0Aworld&private=on&id=42&type=t&retry=10&foo=bar").unwrap();
        assert_eq!(u.topics, vec!["https://ex.com/a", "b"]);
        assert_eq!(u.data, "hello\nworld");
        assert!(u.private);
        assert_eq!(u.id, "42");
        assert_eq!(u.event_type.as_deref(), Some("t"));
        assert_eq!(u.retry, Some(10));
    }

    #[test]
    fn generates_an_id_and_defaults() {
        let u = parse("topic=a").unwrap();
        assert_eq!(u.id, "urn:uuid:gen");
        assert_eq!(u.data, "");
        assert!(!u.private);
        assert!(parse("topic=a&private=").unwrap().private);
        assert_eq!(parse("topic=a&id=").unwrap().id, "urn:uuid:gen");
    }

    #[test]
    fn refuses_bad_fields() {
        assert_eq!(parse("data=x"), Err(PublishError::MissingTopic));
        assert_eq!(
            parse("topic=a&id=a%0Ab"),
            Err(PublishError::ControlCharacter("id"))
        );
        assert_eq!(
            parse("topic=a&type=a%0Db"),
            Err(PublishError::ControlCharacter("type"))
        );
        assert_eq!(
            parse("topic=a%0Ab"),
            Err(PublishError::ControlCharacter("topic"))
        );
        assert_eq!(parse("topic=a&id=earliest"), Err(PublishError::ReservedId));
        assert_eq!(parse("topic=a&id=%23frag"), Err(PublishError::ReservedId));
        assert_eq!(
            parse("topic=a&type=mercure"),
            Err(PublishError::ReservedType)
        );
        assert_eq!(parse("topic=a&retry=1.5"), Err(PublishError::InvalidRetry));
        assert_eq!(parse("topic=a&retry=-1"), Err(PublishError::InvalidRetry));
        assert_eq!(parse("topic=a&data=%FF"), Err(PublishError::InvalidUtf8));
        assert_eq!(parse("topic="), Err(PublishError::EmptyTopic));
        let many = (0..101)
            .map(|i| format!("topic={i}"))
            .collect::<Vec<_>>()
            .join("&");
        assert_eq!(parse(&many), Err(PublishError::TooManyTopics(100)));
        assert!(parse(&many).unwrap_err().is_size_limit());
    }

    #[test]
    fn reserved_namespace() {
        for t in [
            "*",
            "/.well-known/mercure",
            "/.well-known/mercure/subscriptions/a/b",
            "https://other.example/.well-known/mercure/subscriptions",
            "https://hub.example/.well-known/%6Dercure/subscriptions",
            "https://hub.example/.well-known/mercure/../mercure/x",
            "https://hub.example/foo/../.well-known/mercure",
        ] {
            assert!(is_reserved_topic(t), "{t} should be reserved");
        }
        for t in [
            "https://example.com/books/1",
            "/.well-known/mercurex",
            "urn:uuid:1",
            "session-123",
            "https://example.com/.well-known/mercure-foo",
        ] {
            assert!(!is_reserved_topic(t), "{t} should be allowed");
        }
        // Relative to the hub URL although they carry its scheme, and cut by the parser.
        for t in [
            "https:mercure",
            "HTTPS:mercure/x",
            "https://hub.example/.well-\tknown/mercure",
        ] {
            assert!(is_reserved_topic(t), "{t:?} should be reserved");
        }
    }

    proptest::proptest! {
        /// The shortcut never answers differently from the resolution.
        #[test]
        fn the_shortcut_agrees_with_the_resolution(
            topic in "(https?:|urn:|HTTPS:|x-y\\.z:|c:)?(//?|\\\\)?(hub\\.example|\\.|\\.\\.|well-known|WELL-known|wel\\tl-known|mercure|%6D|%2e|/|\\?|#|\\t|\\n| )*"
        ) {
            let decoded = decode_unreserved(&topic);
            if cannot_name_hub_path(&decoded) {
                proptest::prop_assert!(!resolves_to_hub_path(&decoded), "{:?}", topic);
            }
        }
    }
}
