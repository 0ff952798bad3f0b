//! The current generation's grants: the `authorization_details` claim (RFC 9396) of an access
//! token, read as the specification's Mercure authorization details.
//!
//! ```json
//! { "authorization_details": [
//!     { "type": "https://mercure.rocks/authorization-detail",
//!       "actions": ["subscribe"],
//!       "topics": [{"match": "https://example.com/books/:id", "match_type": "urlpattern"}],
//!       "payload": {"tenant": "a"} } ] }
//! ```
//!
//! The rules ("Authorization Details", "Topic Matcher List", "Payloads"):
//! - entries of another `type` (compared byte for byte) belong to other APIs and are ignored;
//! - a Mercure detail needs a non-empty `actions` array of strings — `publish` and `subscribe`
//!   grant, any other string is ignored (future actions), a non-string is an error — and a
//!   non-empty `topics` array of topic matcher objects;
//! - a topic matcher is `{"match": …, "match_type": …}`; `match_type` is case-sensitive, defaults
//!   to `exact`, and must be a supported type (`exact`, `urlpattern`) or the token is refused; a
//!   `match` of `*` matches every topic whatever the type. Matchers compile through
//!   [`compile_matcher`], the protocol crate's one definition of their meaning;
//! - `payload`, when present, is a JSON object, and only a `subscribe` detail's is used;
//! - any defect in any Mercure detail refuses the whole token — no partial acceptance — as does
//!   going over the limits on details, topics or pattern length.
//!
//! No detail means no rights: such a token is valid and grants nothing.
//!
//! Claims enter as the JSON already authenticated by [`crate::AccessTokenVerifier`] and leave as
//! [`Grants`], the same type the legacy `mercure` claim produces ([`crate::claims`]).

use quicksilver_protocol::selector::compile_matcher;
use quicksilver_protocol::validate::is_clean;
use quicksilver_protocol::{Selector, SelectorError, SelectorStore};
use serde_json::Value;

use crate::error::AuthError;
use crate::grants::Grants;

/// The authorization detail type the specification defines.
pub const AUTHORIZATION_DETAIL_TYPE: &str = "https://mercure.rocks/authorization-detail";

/// Default for [`DetailLimits::max_details`]: the reference hub's limit.
pub const DEFAULT_MAX_DETAILS: usize = 100;

/// Default for [`DetailLimits::max_topics`]: the legacy claim's per-claim limit
/// ([`crate::DEFAULT_MAX_SELECTORS_PER_CLAIM`]), so a token migrated from it still fits. (The
/// reference hub allows 100; every token it accepts is accepted here.)
pub const DEFAULT_MAX_TOPICS: usize = 1000;

/// Default for [`DetailLimits::max_match_len`]: the reference hub's pattern limit.
pub const DEFAULT_MAX_MATCH_LEN: usize = 4096;

/// The implementation-defined limits the specification asks for: a token over any of them is
/// refused as `invalid_token`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DetailLimits {
    /// Most Mercure authorization details in one token.
    pub max_details: usize,
    /// Most topic matchers summed over all Mercure details of one token (bounding how many
    /// patterns one token makes the hub compile, however they are split).
    pub max_topics: usize,
    /// Longest `match` value, in bytes.
    pub max_match_len: usize,
}

impl Default for DetailLimits {
    fn default() -> Self {
        Self {
            max_details: DEFAULT_MAX_DETAILS,
            max_topics: DEFAULT_MAX_TOPICS,
            max_match_len: DEFAULT_MAX_MATCH_LEN,
        }
    }
}

/// Turns the `authorization_details` claim (`None` when absent) into grants. Relative URL
/// patterns resolve against `hub_url`.
pub(crate) fn into_grants(
    claim: Option<&Value>,
    store: &SelectorStore,
    hub_url: Option<&str>,
    limits: &DetailLimits,
) -> Result<Grants, AuthError> {
    let invalid = AuthError::InvalidAuthorizationDetails;
    let entries = match claim {
        None | Some(Value::Null) => return Ok(Grants::default()),
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err(invalid("the claim must be an array")),
    };

    let mut publish = Vec::new();
    let mut subscribe = Vec::new();
    let mut payloads = Vec::new();
    let (mut details, mut topics_seen) = (0usize, 0usize);
    for entry in entries {
        let Value::Object(entry) = entry else {
            return Err(invalid("every entry must be an object"));
        };
        match entry.get("type") {
            Some(Value::String(t)) if t == AUTHORIZATION_DETAIL_TYPE => {}
            Some(Value::String(_)) => continue,
            _ => return Err(invalid("every entry needs a type string")),
        }
        details += 1;
        if details > limits.max_details {
            return Err(AuthError::TooManySelectors {
                claim: "authorization_details",
                max: limits.max_details,
            });
        }

        let (grants_publish, grants_subscribe) = actions(entry.get("actions"))?;

        let topics = match entry.get("topics") {
            Some(Value::Array(t)) if !t.is_empty() => t,
            _ => return Err(invalid("topics must be a non-empty array")),
        };
        // Counted before anything compiles, so an oversized token costs no pattern compilation.
        topics_seen += topics.len();
        if topics_seen > limits.max_topics {
            return Err(AuthError::TooManySelectors {
                claim: "authorization_details.topics",
                max: limits.max_topics,
            });
        }
        let matchers = topics
            .iter()
            .map(|t| topic_matcher(t, store, hub_url, limits))
            .collect::<Result<Vec<_>, _>>()?;

        let payload = match entry.get("payload") {
            None | Some(Value::Null) => None,
            Some(p @ Value::Object(_)) => Some(p.clone()),
            Some(_) => return Err(invalid("payload must be an object")),
        };

        if grants_publish {
            publish.extend(matchers.iter().cloned());
        }
        if grants_subscribe {
            subscribe.extend(matchers.iter().cloned());
            payloads.push((matchers, payload));
        }
    }

    Ok(payloads.into_iter().fold(
        Grants::new(publish, subscribe, None),
        |grants, (topics, payload)| grants.with_subscribe_payload(topics, payload),
    ))
}

/// Whether `actions` grants publish and subscribe.
fn actions(actions: Option<&Value>) -> Result<(bool, bool), AuthError> {
    let invalid = AuthError::InvalidAuthorizationDetails;
    let actions = match actions {
        Some(Value::Array(a)) if !a.is_empty() => a,
        _ => return Err(invalid("actions must be a non-empty array")),
    };
    let (mut publish, mut subscribe) = (false, false);
    for action in actions {
        match action.as_str() {
            Some("publish") => publish = true,
            Some("subscribe") => subscribe = true,
            // Actions from later specifications grant nothing here but do not void the token.
            Some(_) => {}
            None => return Err(invalid("actions must be strings")),
        }
    }
    Ok((publish, subscribe))
}

fn topic_matcher(
    topic: &Value,
    store: &SelectorStore,
    hub_url: Option<&str>,
    limits: &DetailLimits,
) -> Result<Selector, AuthError> {
    let invalid = AuthError::InvalidAuthorizationDetails;
    let Value::Object(topic) = topic else {
        return Err(invalid("topic matchers must be objects"));
    };
    let Some(Value::String(match_)) = topic.get("match") else {
        return Err(invalid("a topic matcher needs a match string"));
    };
    // An explicit `null` is read as absent, as the reference hub does.
    let match_type = match topic.get("match_type") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(t.as_str()),
        Some(_) => return Err(invalid("match_type must be a string")),
    };
    if match_.is_empty() {
        return Err(invalid("a match value must not be empty"));
    }
    if match_.len() > limits.max_match_len {
        return Err(invalid("a match value is too long"));
    }
    if !is_clean(match_) {
        return Err(invalid("a match value contains a control character"));
    }
    // The protocol crate owns matcher semantics: `*` is the wildcard whatever the (supported)
    // type, `exact` is byte for byte, `urlpattern` resolves against the hub URL, and any other
    // type is an error — which must void the token, not be skipped.
    compile_matcher(store, match_, match_type, hub_url).map_err(|e| match e {
        SelectorError::UnsupportedMatchType(_) => invalid("unsupported match_type"),
        SelectorError::TooLong { .. } => invalid("a match value is too long"),
        _ => invalid("a topic matcher does not compile"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TYPE: &str = AUTHORIZATION_DETAIL_TYPE;

    fn grants(claim: Value) -> Result<Grants, AuthError> {
        into_grants(
            Some(&claim),
            &SelectorStore::default(),
            Some("https://hub.example.com/.well-known/mercure"),
            &DetailLimits {
                max_details: 3,
                max_topics: 4,
                max_match_len: 64,
            },
        )
    }

    fn detail(actions: Value, topics: Value) -> Value {
        json!({"type": TYPE, "actions": actions, "topics": topics})
    }

    fn raws(s: &[Selector]) -> Vec<&str> {
        s.iter().map(Selector::raw).collect()
    }

    #[test]
    fn publish_and_subscribe_details() {
        let g = grants(json!([
            detail(json!(["publish"]), json!([{"match": "urn:p"}])),
            detail(
                json!(["subscribe", "publish"]),
                json!([{"match": "https://ex.com/{id}", "match_type": "exact"}])
            ),
        ]))
        .unwrap();
        assert_eq!(raws(g.publish()), ["urn:p", "https://ex.com/{id}"]);
        assert_eq!(
            raws(g.private_access().selectors()),
            ["https://ex.com/{id}"]
        );
        // `exact` means exact: braces are not a URI template in this generation.
        let store = SelectorStore::default();
        assert!(g
            .private_access()
            .allows(&store, &["https://ex.com/{id}".into()]));
        assert!(!g
            .private_access()
            .allows(&store, &["https://ex.com/1".into()]));
        assert!(!g.publish_all() && !matches!(g.private_access(), crate::Access::All));
    }

    #[test]
    fn urlpattern_details() {
        let store = SelectorStore::default();
        let g = grants(json!([
            detail(
                json!(["subscribe"]),
                json!([{"match": "/.well-known/mercure/subscriptions/:type/:topic", "match_type": "urlpattern"}])
            ),
            {"type": TYPE, "actions": ["subscribe", "publish"],
             "topics": [{"match": "https://example.com/bar/:id", "match_type": "urlpattern"}],
             "payload": {"custom2": "x"}},
        ]))
        .unwrap();
        let sub = |t: &str| g.private_access().allows(&store, &[t.to_string()]);
        // Relative patterns resolve against the hub URL, for relative and absolute topics alike.
        assert!(sub("/.well-known/mercure/subscriptions/exact/urn%3Aa"));
        assert!(sub(
            "https://hub.example.com/.well-known/mercure/subscriptions/exact/urn%3Aa"
        ));
        assert!(!sub(
            "https://other.example/.well-known/mercure/subscriptions/exact/urn%3Aa"
        ));
        assert!(sub("https://example.com/bar/7"));
        assert!(!sub("https://example.com/bar/7/8"));
        assert!(crate::can_publish(
            &store,
            &g,
            &["https://example.com/bar/1".into()]
        ));
        assert!(!crate::can_publish(
            &store,
            &g,
            &["/.well-known/mercure/subscriptions/a/b".into()]
        ));
        // "Payloads": the subscription's own matcher string is matched as if it were a topic.
        assert_eq!(
            g.payload_for(&store, "https://example.com/bar/:id"),
            Some(&json!({"custom2": "x"}))
        );
        assert_eq!(g.payload_for(&store, "https://example.com/foo"), None);
    }

    #[test]
    fn invalid_urlpatterns_refuse_the_token() {
        for pattern in [
            "https://example.com/(",
            "https://example.com/(?=x)",
            "https://example.com/:id(\\1)",
        ] {
            let claim = json!([detail(
                json!(["subscribe"]),
                json!([{"match": pattern, "match_type": "urlpattern"}])
            )]);
            assert!(
                matches!(
                    grants(claim),
                    Err(AuthError::InvalidAuthorizationDetails(_))
                ),
                "{pattern}"
            );
        }
    }

    #[test]
    fn wildcard_matches_whatever_the_type() {
        for topic in [
            json!({"match": "*"}),
            json!({"match": "*", "match_type": "urlpattern"}),
        ] {
            let g = grants(json!([detail(
                json!(["publish", "subscribe"]),
                json!([topic])
            )]))
            .unwrap();
            assert!(g.publish_all() && matches!(g.private_access(), crate::Access::All));
        }
    }

    #[test]
    fn absent_or_foreign_details_grant_nothing() {
        for claim in [
            Value::Null,
            json!([]),
            json!([{"type": "payment_initiation", "actions": "x", "topics": 3}]),
            json!([{"type": "https://mercure.rocks/authorization-detail/", "actions": ["publish"]}]),
            json!([{"type": "HTTPS://MERCURE.ROCKS/AUTHORIZATION-DETAIL", "actions": ["publish"]}]),
            json!([detail(json!(["read", "admin"]), json!([{"match": "*"}]))]),
        ] {
            let g = grants(claim.clone()).unwrap();
            assert!(
                g.publish().is_empty() && matches!(g.private_access(), crate::Access::None),
                "{claim}"
            );
        }
        let none = into_grants(
            None,
            &SelectorStore::default(),
            None,
            &DetailLimits::default(),
        );
        assert!(none.unwrap().publish().is_empty());
    }

    #[test]
    fn unknown_actions_are_ignored_next_to_known_ones() {
        let g = grants(json!([detail(
            json!(["future", "subscribe"]),
            json!([{"match": "urn:a"}])
        )]))
        .unwrap();
        assert_eq!(raws(g.private_access().selectors()), ["urn:a"]);
        assert!(g.publish().is_empty());
    }

    #[test]
    fn payloads_follow_subscribe_details() {
        let store = SelectorStore::default();
        let g = grants(json!([
            {"type": TYPE, "actions": ["subscribe"], "topics": [{"match": "urn:foo"}], "payload": {"a": 1}},
            {"type": TYPE, "actions": ["publish"], "topics": [{"match": "urn:bar"}], "payload": {"ignored": true}},
            {"type": TYPE, "actions": ["subscribe"], "topics": [{"match": "*"}], "payload": {"default": true}},
        ]))
        .unwrap();
        assert_eq!(g.payload_for(&store, "urn:foo"), Some(&json!({"a": 1})));
        assert_eq!(
            g.payload_for(&store, "urn:bar"),
            Some(&json!({"default": true}))
        );
        assert_eq!(g.payload(), None);
    }

    #[test]
    fn any_defect_refuses_the_whole_token() {
        let ok = detail(json!(["publish"]), json!([{"match": "urn:ok"}]));
        let bad = [
            json!({"not": "an array"}),
            json!([ok, "not an object"]),
            json!([ok, {"actions": ["publish"], "topics": [{"match": "x"}]}]),
            json!([ok, {"type": 7}]),
            json!([ok, detail(json!([]), json!([{"match": "x"}]))]),
            json!([ok, detail(json!("publish"), json!([{"match": "x"}]))]),
            json!([ok, detail(json!(["publish", 1]), json!([{"match": "x"}]))]),
            json!([ok, {"type": TYPE, "topics": [{"match": "x"}]}]),
            json!([ok, detail(json!(["publish"]), json!([]))]),
            json!([ok, {"type": TYPE, "actions": ["publish"]}]),
            json!([ok, detail(json!(["publish"]), json!(["urn:bare-string"]))]),
            json!([ok, detail(json!(["publish"]), json!([null]))]),
            json!([
                ok,
                detail(json!(["publish"]), json!([{"match_type": "exact"}]))
            ]),
            json!([ok, detail(json!(["publish"]), json!([{"match": 1}]))]),
            json!([ok, detail(json!(["publish"]), json!([{"match": ""}]))]),
            json!([ok, detail(json!(["publish"]), json!([{"match": "a\nb"}]))]),
            json!([
                ok,
                detail(
                    json!(["publish"]),
                    json!([{"match": "x", "match_type": "Exact"}])
                )
            ]),
            json!([
                ok,
                detail(
                    json!(["publish"]),
                    json!([{"match": "x", "match_type": "template"}])
                )
            ]),
            json!([
                ok,
                detail(
                    json!(["publish"]),
                    json!([{"match": "*", "match_type": "regex"}])
                )
            ]),
            json!([
                ok,
                detail(json!(["publish"]), json!([{"match": "x", "match_type": 1}]))
            ]),
            json!([ok, {"type": TYPE, "actions": ["subscribe"], "topics": [{"match": "x"}], "payload": "s"}]),
            // Defects in a detail granting nothing known still count.
            json!([
                ok,
                detail(
                    json!(["future"]),
                    json!([{"match": "x", "match_type": "nope"}])
                )
            ]),
        ];
        for claim in bad {
            assert!(
                matches!(
                    grants(claim.clone()),
                    Err(AuthError::InvalidAuthorizationDetails(_))
                ),
                "{claim}"
            );
        }
    }

    #[test]
    fn limits_refuse_the_token() {
        let d = |n: usize| {
            detail(
                json!(["publish"]),
                json!(vec![json!({"match": "urn:x"}); n]),
            )
        };
        assert!(grants(json!([d(1), d(1), d(1)])).is_ok());
        assert_eq!(
            grants(json!([d(1), d(1), d(1), d(1)])).unwrap_err(),
            AuthError::TooManySelectors {
                claim: "authorization_details",
                max: 3
            }
        );
        assert!(grants(json!([d(2), d(2)])).is_ok());
        assert!(matches!(
            grants(json!([d(2), d(3)])).unwrap_err(),
            AuthError::TooManySelectors { max: 4, .. }
        ));
        let long = "x".repeat(65);
        assert!(matches!(
            grants(json!([detail(
                json!(["publish"]),
                json!([{"match": long}])
            )]))
            .unwrap_err(),
            AuthError::InvalidAuthorizationDetails("a match value is too long")
        ));
        // Foreign details do not count.
        let foreign = json!({"type": "other"});
        assert!(grants(json!([foreign, foreign, foreign, foreign, d(1)])).is_ok());
    }
}
