//! Subscription documents and their topics, in both generations' shapes. Pure functions.
//!
//! Topics expand the specification's URI templates with each variable percent-encoded exactly
//! once, as a whole: every byte but the RFC 3986 unreserved characters (`A–Z a–z 0–9 - . _ ~`) is
//! encoded, so `:`, `/`, `{`, `}` and `%` inside a topic selector or subscriber id never split or
//! alias a path segment.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use quicksilver_auth::Generation;
use serde_json::{json, Value};

use crate::HUB_PATH;

/// What RFC 6570 simple expansion encodes: everything but the unreserved characters.
const EXPANSION: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The JSON-LD context of pre-standardization documents.
pub const LEGACY_CONTEXT: &str = "https://mercure.rocks/";

/// The path under which subscriptions live.
pub fn subscriptions_path() -> String {
    format!("{HUB_PATH}/subscriptions")
}

/// The generation whose shape a stored document has (legacy documents carry `@context`).
pub fn document_generation(document: &Value) -> Generation {
    if document.get("@context").is_some() {
        Generation::Legacy
    } else {
        Generation::Current
    }
}

/// One subscription: a matcher of one connection.
#[derive(Clone, Debug, PartialEq)]
pub struct SubscriptionInfo {
    /// The generation whose document shape it has: [`Generation::Legacy`] for `topic=` selectors
    /// (JSON-LD, `type: "Subscription"`, `topic`), [`Generation::Current`] for `match` /
    /// `match_<type>` matchers (plain JSON, `type: "subscription"`, `match_type`, `match`).
    pub generation: Generation,
    /// `exact` or `urlpattern` (current generation only).
    pub match_type: &'static str,
    /// The topic selector or matcher, as the subscriber gave it.
    pub pattern: String,
    /// The connection's subscriber id (`urn:uuid:…`).
    pub subscriber: String,
    /// The payload its token gives this subscription.
    pub payload: Option<Value>,
}

impl SubscriptionInfo {
    /// The topic of its events, which is also its id and its API URL path.
    pub fn topic(&self) -> String {
        match self.generation {
            Generation::Legacy => legacy_topic(&self.pattern, Some(&self.subscriber)),
            Generation::Current => {
                current_topic(self.match_type, &self.pattern, Some(&self.subscriber))
            }
        }
    }

    /// Its document, with `active` as given.
    pub fn document(&self, active: bool) -> Value {
        let mut doc = match self.generation {
            Generation::Legacy => json!({
                "@context": LEGACY_CONTEXT,
                "id": self.topic(),
                "type": "Subscription",
                "topic": self.pattern,
                "subscriber": self.subscriber,
                "active": active,
            }),
            Generation::Current => json!({
                "id": self.topic(),
                "type": "subscription",
                "match_type": self.match_type,
                "match": self.pattern,
                "subscriber": self.subscriber,
                "active": active,
            }),
        };
        if let Some(payload) = &self.payload {
            doc["payload"] = payload.clone();
        }
        doc
    }
}

/// Encodes one template variable.
pub fn encode(value: &str) -> String {
    utf8_percent_encode(value, EXPANSION).to_string()
}

/// `/.well-known/mercure/subscriptions/{topic}[/{subscriber}]`.
pub fn legacy_topic(topic: &str, subscriber: Option<&str>) -> String {
    let mut out = format!("{}/{}", subscriptions_path(), encode(topic));
    if let Some(s) = subscriber {
        out.push('/');
        out.push_str(&encode(s));
    }
    out
}

/// `/.well-known/mercure/subscriptions/{match_type}/{match}[/{subscriber}]`.
pub fn current_topic(match_type: &str, pattern: &str, subscriber: Option<&str>) -> String {
    let mut out = format!(
        "{}/{}/{}",
        subscriptions_path(),
        match_type,
        encode(pattern)
    );
    if let Some(s) = subscriber {
        out.push('/');
        out.push_str(&encode(s));
    }
    out
}

/// What a subscription API path asks for, its segments decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiTarget {
    /// Every subscription.
    All,
    /// The subscriptions of one selector (legacy) or one matcher (current).
    Collection(String),
    /// One subscription.
    One(String),
}

/// Reads the path after `/.well-known/mercure/subscriptions` (`""` or `/a/b…`, still
/// percent-encoded) as `generation` lays it out, giving the canonical ids to look for; `None` when
/// the path cannot name anything in that generation's shape.
pub fn parse_api_path(rest: &str, generation: Generation) -> Option<ApiTarget> {
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Some(ApiTarget::All);
    }
    let segments: Vec<String> = rest
        .split('/')
        .map(|s| percent_decode_str(s).decode_utf8().map(|c| c.into_owned()))
        .collect::<Result<_, _>>()
        .ok()?;
    match (generation, segments.as_slice()) {
        (Generation::Legacy, [topic]) => Some(ApiTarget::Collection(legacy_topic(topic, None))),
        (Generation::Legacy, [topic, subscriber]) => {
            Some(ApiTarget::One(legacy_topic(topic, Some(subscriber))))
        }
        (Generation::Current, [match_type, pattern]) if is_match_type(match_type) => Some(
            ApiTarget::Collection(current_topic(match_type, pattern, None)),
        ),
        (Generation::Current, [match_type, pattern, subscriber]) if is_match_type(match_type) => {
            Some(ApiTarget::One(current_topic(
                match_type,
                pattern,
                Some(subscriber),
            )))
        }
        _ => None,
    }
}

fn is_match_type(value: &str) -> bool {
    matches!(value, "exact" | "urlpattern")
}

/// Whether the subscription with event topic `id` belongs to the collection `collection` (its
/// topic minus the subscriber segment).
pub fn in_collection(id: &str, collection: &str) -> bool {
    id.strip_prefix(collection)
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|subscriber| !subscriber.contains('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(generation: Generation, match_type: &'static str, pattern: &str) -> SubscriptionInfo {
        SubscriptionInfo {
            generation,
            match_type,
            pattern: pattern.into(),
            subscriber: "urn:uuid:bb3de268-05b0-4c65-b44e-8f9acefc29d6".into(),
            payload: Some(json!({"foo": "bar"})),
        }
    }

    #[test]
    fn topics_encode_each_variable_once_and_whole() {
        let legacy = info(
            Generation::Legacy,
            "exact",
            "https://example.com/{selector}",
        );
        assert_eq!(
            legacy.topic(),
            "/.well-known/mercure/subscriptions/https%3A%2F%2Fexample.com%2F%7Bselector%7D/urn%3Auuid%3Abb3de268-05b0-4c65-b44e-8f9acefc29d6"
        );
        let current = info(
            Generation::Current,
            "urlpattern",
            "https://example.com/:selector",
        );
        assert_eq!(
            current.topic(),
            "/.well-known/mercure/subscriptions/urlpattern/https%3A%2F%2Fexample.com%2F%3Aselector/urn%3Auuid%3Abb3de268-05b0-4c65-b44e-8f9acefc29d6"
        );
        // An already-encoded value is encoded again, never left as is.
        assert_eq!(encode("a%2Fb c"), "a%252Fb%20c");
        assert_eq!(encode("a-b.c_d~e"), "a-b.c_d~e");
    }

    #[test]
    fn documents_have_each_generations_fields() {
        let d = info(Generation::Legacy, "exact", "a").document(true);
        assert_eq!(d["@context"], LEGACY_CONTEXT);
        assert_eq!(d["type"], "Subscription");
        assert_eq!(d["topic"], "a");
        assert_eq!(d["payload"], json!({"foo": "bar"}));
        assert_eq!(document_generation(&d), Generation::Legacy);
        let d = info(Generation::Current, "exact", "a").document(false);
        assert_eq!(d["type"], "subscription");
        assert_eq!(d["match_type"], "exact");
        assert_eq!(d["match"], "a");
        assert_eq!(d["active"], false);
        assert!(d.get("@context").is_none());
        assert_eq!(d["id"], info(Generation::Current, "exact", "a").topic());
        assert_eq!(document_generation(&d), Generation::Current);
    }

    #[test]
    fn api_paths_decode_then_reencode_canonically() {
        assert_eq!(
            parse_api_path("", Generation::Current),
            Some(ApiTarget::All)
        );
        assert_eq!(
            parse_api_path("/", Generation::Legacy),
            Some(ApiTarget::All)
        );
        let one = info(
            Generation::Current,
            "urlpattern",
            "https://example.com/:selector",
        );
        // Lower-case hex in the request still finds the canonical id.
        let rest = "/urlpattern/https%3a%2f%2fexample.com%2f%3aselector/urn%3Auuid%3Abb3de268-05b0-4c65-b44e-8f9acefc29d6";
        assert_eq!(
            parse_api_path(rest, Generation::Current),
            Some(ApiTarget::One(one.topic()))
        );
        let Some(ApiTarget::Collection(c)) = parse_api_path(
            "/urlpattern/https%3A%2F%2Fexample.com%2F%3Aselector",
            Generation::Current,
        ) else {
            panic!("collection expected");
        };
        assert!(in_collection(&one.topic(), &c));
        assert!(!in_collection(&one.topic(), &c[..c.len() - 1]));
        assert_eq!(parse_api_path("/regex/x", Generation::Current), None);
        assert_eq!(parse_api_path("/a/b/c", Generation::Legacy), None);
        assert_eq!(parse_api_path("/%FF", Generation::Legacy), None);
        let legacy = info(
            Generation::Legacy,
            "exact",
            "https://example.com/{selector}",
        );
        assert_eq!(
            parse_api_path(
                "/https%3A%2F%2Fexample.com%2F%7Bselector%7D/urn%3Auuid%3Abb3de268-05b0-4c65-b44e-8f9acefc29d6",
                Generation::Legacy
            ),
            Some(ApiTarget::One(legacy.topic()))
        );
    }
}
