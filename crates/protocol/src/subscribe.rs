//! Subscription requests: a query string in, the subscriber's selectors and cursor out.
//!
//! Both protocol generations are read side by side: `topic` selectors (exact, `*`, URI templates)
//! and `lastEventID` from pre-standardization clients, `match`/`match_<type>` matchers and
//! `last_event_id` from current ones. The matcher types are `exact` (`match`, `match_exact`) and
//! `urlpattern` (`match_urlpattern`); parameter names are case-sensitive, and any other name in the
//! reserved `match` namespace (compared case-insensitively, so `Match_URLPattern` is caught too) is
//! refused rather than ignored, so a typo fails loudly. Counts and lengths are bounded so one
//! request cannot make the hub compile or hold unbounded selectors. Patterns are only collected
//! here; compiling them (and refusing malformed URL patterns) is [`crate::selector`]'s job.

use thiserror::Error;

use crate::{form, validate};

/// How a requested matcher compares topics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatchType {
    /// A pre-standardization `topic` selector: exact, `*` or a URI template.
    TopicSelector,
    /// `match` / `match_exact`: the topic, compared byte for byte.
    Exact,
    /// `match_urlpattern`: a WHATWG URL pattern, resolved against the hub's URL.
    UrlPattern,
}

/// One requested matcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matcher {
    /// How it compares.
    pub kind: MatchType,
    /// The pattern as sent.
    pub pattern: String,
}

/// A parsed subscription query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscribeQuery {
    /// Every requested matcher, in request order.
    pub matchers: Vec<Matcher>,
    /// The cursor from the query (`last_event_id`, else `lastEventID`, else `Last-Event-ID`; the
    /// first non-empty one, else an empty string when only empty ones were sent); the
    /// `Last-Event-ID` header, when present, takes precedence over all of them.
    pub last_event_id: Option<String>,
    /// Values of the `authorization` query parameter (a token in the URL, pre-standardization only).
    pub authorization: Vec<String>,
}

/// Limits on subscription queries.
#[derive(Clone, Debug)]
pub struct SubscribeLimits {
    /// Maximum number of matchers in one request.
    pub max_matchers: usize,
    /// Maximum length of one matcher's pattern in bytes.
    pub max_pattern_len: usize,
}

impl Default for SubscribeLimits {
    fn default() -> Self {
        Self {
            max_matchers: 100,
            max_pattern_len: 2048,
        }
    }
}

/// Why a subscription query was refused; the message is safe to send to the client.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SubscribeError {
    /// The query is not UTF-8 once decoded.
    #[error("invalid query string: parameters must be UTF-8")]
    InvalidUtf8,
    /// No matcher at all.
    #[error("missing \"match\" (or \"topic\") parameter")]
    MissingTopic,
    /// Too many matchers.
    #[error("too many topic selectors: at most {0}")]
    TooManyMatchers(usize),
    /// A pattern is too long.
    #[error("topic selector too long: at most {0} bytes")]
    PatternTooLong(usize),
    /// A pattern holds a control or format character.
    #[error("topic selector contains a control character")]
    ControlCharacter,
    /// A name in the reserved `match` namespace that is no supported matcher type.
    #[error("unsupported matcher type \"{0}\"")]
    UnsupportedMatcher(String),
}

/// Parses a raw (still percent-encoded) query string.
pub fn parse_subscribe_query(
    query: &str,
    limits: &SubscribeLimits,
) -> Result<SubscribeQuery, SubscribeError> {
    let pairs = form::parse_pairs(query.as_bytes()).map_err(|_| SubscribeError::InvalidUtf8)?;
    let mut out = SubscribeQuery::default();
    let (mut current_cursor, mut legacy_cursor, mut legacy_header_cursor) = (None, None, None);
    for (name, value) in pairs {
        let kind = match name.as_str() {
            "topic" => MatchType::TopicSelector,
            "match" | "match_exact" => MatchType::Exact,
            "match_urlpattern" => MatchType::UrlPattern,
            // Compared as bytes: a name whose fifth byte falls inside a multi-byte character
            // (`aa𐀀`) must not be sliced as a string, which would panic.
            n if n
                .as_bytes()
                .get(..5)
                .is_some_and(|head| head.eq_ignore_ascii_case(b"match")) =>
            {
                return Err(SubscribeError::UnsupportedMatcher(name));
            }
            "last_event_id" => {
                current_cursor.get_or_insert(value);
                continue;
            }
            "lastEventID" => {
                legacy_cursor.get_or_insert(value);
                continue;
            }
            "Last-Event-ID" => {
                legacy_header_cursor.get_or_insert(value);
                continue;
            }
            "authorization" => {
                out.authorization.push(value);
                continue;
            }
            _ => continue,
        };
        if out.matchers.len() == limits.max_matchers {
            return Err(SubscribeError::TooManyMatchers(limits.max_matchers));
        }
        if value.len() > limits.max_pattern_len {
            return Err(SubscribeError::PatternTooLong(limits.max_pattern_len));
        }
        if !validate::is_clean(&value) {
            return Err(SubscribeError::ControlCharacter);
        }
        out.matchers.push(Matcher {
            kind,
            pattern: value,
        });
    }
    if out.matchers.is_empty() {
        return Err(SubscribeError::MissingTopic);
    }
    // A cursor sent empty still counts as sent (the answer then names the cursor `earliest`), but
    // loses to any non-empty one.
    let cursors = [current_cursor, legacy_cursor, legacy_header_cursor];
    out.last_event_id = cursors
        .iter()
        .flatten()
        .find(|v| !v.is_empty())
        .or_else(|| cursors.iter().flatten().next())
        .cloned();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str) -> Result<SubscribeQuery, SubscribeError> {
        parse_subscribe_query(q, &SubscribeLimits::default())
    }

    #[test]
    fn reads_both_generations() {
        let q = parse(
            "topic=https%3A%2F%2Fex.com%2Fbooks%2F%7Bid%7D&match=a&lastEventID=x&authorization=tok",
        )
        .unwrap();
        assert_eq!(q.matchers.len(), 2);
        assert_eq!(q.matchers[0].kind, MatchType::TopicSelector);
        assert_eq!(q.matchers[0].pattern, "https://ex.com/books/{id}");
        assert_eq!(q.matchers[1].kind, MatchType::Exact);
        assert_eq!(q.last_event_id.as_deref(), Some("x"));
        assert_eq!(q.authorization, vec!["tok"]);
    }

    #[test]
    fn cursor_precedence() {
        let q = parse("topic=a&lastEventID=old&last_event_id=new").unwrap();
        assert_eq!(q.last_event_id.as_deref(), Some("new"));
        let q = parse("topic=a&Last-Event-ID=h").unwrap();
        assert_eq!(q.last_event_id.as_deref(), Some("h"));
        assert_eq!(
            parse("topic=a&lastEventID=")
                .unwrap()
                .last_event_id
                .as_deref(),
            Some(""),
            "sent empty: answered, replays nothing"
        );
        assert_eq!(
            parse("topic=a&last_event_id=&lastEventID=x")
                .unwrap()
                .last_event_id
                .as_deref(),
            Some("x")
        );
        assert_eq!(parse("topic=a").unwrap().last_event_id, None);
    }

    #[test]
    fn refuses_bad_queries() {
        assert_eq!(parse(""), Err(SubscribeError::MissingTopic));
        assert_eq!(parse("foo=bar"), Err(SubscribeError::MissingTopic));
        assert_eq!(parse("topic=%FF"), Err(SubscribeError::InvalidUtf8));
        assert_eq!(parse("topic=a%0Ab"), Err(SubscribeError::ControlCharacter));
        assert!(matches!(
            parse("match_regex=a"),
            Err(SubscribeError::UnsupportedMatcher(_))
        ));
        assert!(matches!(
            parse("MATCHES=a"),
            Err(SubscribeError::UnsupportedMatcher(_))
        ));
        let many = (0..101)
            .map(|i| format!("topic={i}"))
            .collect::<Vec<_>>()
            .join("&");
        assert_eq!(parse(&many), Err(SubscribeError::TooManyMatchers(100)));
        let long = format!("topic={}", "a".repeat(2049));
        assert_eq!(parse(&long), Err(SubscribeError::PatternTooLong(2048)));
    }

    #[test]
    fn reads_url_pattern_matchers() {
        let q = parse(
            "match=https%3A%2F%2Fexample.com%2Ffoo&match=bar\
             &match_urlpattern=https%3A%2F%2Fexample.com%2Fbar%2F%3Aid\
             &match_exact=%7Bx%7D&match_urlpattern=%2Fbooks%2F*",
        )
        .unwrap();
        let got: Vec<(MatchType, &str)> = q
            .matchers
            .iter()
            .map(|m| (m.kind, m.pattern.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (MatchType::Exact, "https://example.com/foo"),
                (MatchType::Exact, "bar"),
                (MatchType::UrlPattern, "https://example.com/bar/:id"),
                (MatchType::Exact, "{x}"),
                (MatchType::UrlPattern, "/books/*"),
            ]
        );
        // A name without a value is that name with an empty value.
        let q = parse("match_urlpattern").unwrap();
        assert_eq!(q.matchers[0].kind, MatchType::UrlPattern);
        assert_eq!(q.matchers[0].pattern, "");
    }

    #[test]
    fn matcher_names_are_case_sensitive_and_reserved() {
        for name in [
            "match_URLPattern",
            "Match_urlpattern",
            "MATCH",
            "match_url_pattern",
            "match_urlpatterns",
            "match_",
            "matcher",
            "match_template",
        ] {
            assert_eq!(
                parse(&format!("{name}=https%3A%2F%2Fexample.com%2F%3Aid")),
                Err(SubscribeError::UnsupportedMatcher(name.to_string())),
                "{name:?}"
            );
        }
    }

    #[test]
    fn non_ascii_parameter_names_do_not_panic() {
        // Found by the property tests: the reserved-prefix check sliced the name at byte 5.
        assert_eq!(parse("topic=&aa\u{10000}").unwrap().matchers.len(), 1);
        assert_eq!(parse("aa%F0%90%80%80=x&topic=a").unwrap().matchers.len(), 1);
        assert_eq!(parse("aa\u{10000}=x&topic=a").unwrap().matchers.len(), 1);
        assert_eq!(parse("topic=a&mat\u{e9}=x").unwrap().matchers.len(), 1);
        assert!(matches!(
            parse("MATCH\u{e9}=x"),
            Err(SubscribeError::UnsupportedMatcher(_))
        ));
    }

    #[test]
    fn url_pattern_matchers_share_the_limits() {
        let many = (0..101)
            .map(|i| format!("match_urlpattern=%2F{i}%2F%3Aid"))
            .collect::<Vec<_>>()
            .join("&");
        assert_eq!(parse(&many), Err(SubscribeError::TooManyMatchers(100)));
        let mixed = (0..101)
            .map(|i| {
                if i % 2 == 0 {
                    format!("match={i}")
                } else {
                    format!("match_urlpattern=%2F{i}")
                }
            })
            .collect::<Vec<_>>()
            .join("&");
        assert_eq!(parse(&mixed), Err(SubscribeError::TooManyMatchers(100)));
        let long = format!("match_urlpattern=%2F{}", "a".repeat(2048));
        assert_eq!(parse(&long), Err(SubscribeError::PatternTooLong(2048)));
        assert_eq!(
            parse("match_urlpattern=%2Fa%E2%80%8Bb"),
            Err(SubscribeError::ControlCharacter)
        );
        assert_eq!(
            parse("match_urlpattern=%FF"),
            Err(SubscribeError::InvalidUtf8)
        );
    }
}
