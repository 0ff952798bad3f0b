//! Topic selectors: what a subscriber (or a JWT grant) says it wants, compiled once.
//!
//! A [`Selector`] is one of four kinds ([`SelectorKind`]):
//! - `*`, every topic: the reserved wildcard, recognized before anything else whatever the matcher
//!   type, as the specification asks;
//! - an exact topic, compared byte for byte (the `exact` matcher type: `match`, `match_exact`,
//!   `"match_type": "exact"` or none);
//! - a URL pattern (the `urlpattern` matcher type: `match_urlpattern`, `"match_type":
//!   "urlpattern"`), resolved against the hub's URL; see [`crate::url_pattern`];
//! - an RFC 6570 URI template, from pre-standardization `topic=` selectors and `mercure` claims,
//!   where any selector containing `{` (e.g. `https://example.com/books/{id}`) is a template.
//!
//! Compiling is costly and the same selectors arrive again and again, so the node keeps compiled
//! selectors in its [`SelectorStore`] (the [`store`] module: bounded caches of compiled selectors
//! and of URL-pattern match results).
//!
//! Data flow: a raw selector goes through [`SelectorStore::compile`] (pre-standardization syntax),
//! [`SelectorStore::compile_url_pattern`], [`compile_matcher`] (a grant's `match` / `match_type`
//! pair) or [`Selector::exact_topic`] once, when a subscription or a JWT grant is read, and becomes
//! a [`Selector`]; each published topic then goes through [`SelectorStore::matches`]. Wildcard and
//! exact selectors answer directly, and so do templates: their compiled regular expression runs in
//! linear time and is faster than a cache probe (about 100 ns against 180 ns in the `matching`
//! benchmark). URL-pattern selectors, whose match parses the topic as a URL (about 800 ns), first
//! try the match cache, keyed by `(selector, topic)`, and only on a miss run the compiled matcher.
//! The cache is probed with a borrowed key, so the hot path (same selectors, same topics) never
//! allocates.

use std::sync::Arc;

use thiserror::Error;

use crate::template::UriTemplate;
use crate::url_pattern::{UrlPatternError, UrlPatternLimits, UrlPatternMatcher};
use crate::validate;

pub mod store;

pub use store::SelectorStore;

/// Why a selector was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SelectorError {
    /// Longer than the configured maximum.
    #[error("topic selector longer than {max} bytes")]
    TooLong {
        /// The limit in bytes.
        max: usize,
    },
    /// Contains a control or format character.
    #[error("topic selector contains a control character")]
    ControlCharacter,
    /// Not a valid URI template.
    #[error("invalid URI template: {0}")]
    InvalidTemplate(String),
    /// Not a valid URL pattern, or one over the limits.
    #[error(transparent)]
    UrlPattern(#[from] UrlPatternError),
    /// A `match_type` naming no matcher type this hub supports.
    #[error("unsupported matcher type {0:?}")]
    UnsupportedMatchType(String),
    /// Compiling it would take the node's compiled selectors past their memory budget.
    #[error("this node's compiled topic selectors are at their memory budget ({budget} bytes), retry later or on another node")]
    OverBudget {
        /// The budget in bytes.
        budget: usize,
    },
}

/// What kind of selector this is; also the label of the subscriptions-by-kind metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SelectorKind {
    /// `*`: every topic.
    Wildcard,
    /// One topic, compared byte for byte.
    Exact,
    /// An RFC 6570 URI template.
    Template,
    /// A WHATWG URL pattern.
    UrlPattern,
}

impl SelectorKind {
    /// A short lowercase name (`wildcard`, `exact`, `template`, `urlpattern`).
    pub fn as_str(&self) -> &'static str {
        match self {
            SelectorKind::Wildcard => "wildcard",
            SelectorKind::Exact => "exact",
            SelectorKind::Template => "template",
            SelectorKind::UrlPattern => "urlpattern",
        }
    }
}

/// A compiled topic selector. Cloning is cheap (one `Arc`).
#[derive(Clone, Debug)]
pub struct Selector(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    raw: Box<str>,
    matcher: Compiled,
    /// What this selector is charged to the store's memory budget, given back when it goes.
    charge: Option<store::Charge>,
}

/// What a selector was compiled to.
#[derive(Debug)]
enum Compiled {
    Wildcard,
    Exact,
    Template(UriTemplate),
    UrlPattern(Box<UrlPatternMatcher>),
}

impl Selector {
    /// Compiles a pre-standardization selector (`*`, a URI template if it holds `{`, else an exact
    /// topic) without caching (the [`SelectorStore`] caches).
    pub fn compile(raw: &str) -> Result<Self, SelectorError> {
        let matcher = if raw == "*" {
            Compiled::Wildcard
        } else if raw.contains('{') {
            Compiled::Template(
                UriTemplate::compile(raw)
                    .map_err(|e| SelectorError::InvalidTemplate(e.to_string()))?,
            )
        } else {
            Compiled::Exact
        };
        Ok(Self::new(raw, matcher))
    }

    /// An `exact` matcher for `topic`, whatever characters it holds (`{` is not a template here),
    /// except that `*` is the reserved wildcard, which the specification recognizes before the
    /// matcher type.
    pub fn exact_topic(topic: &str) -> Self {
        let matcher = if topic == "*" {
            Compiled::Wildcard
        } else {
            Compiled::Exact
        };
        Self::new(topic, matcher)
    }

    /// Compiles a URL pattern resolved against `base` (the hub's URL; a stand-in when `None`, see
    /// [`crate::url_pattern::FALLBACK_BASE_URL`]) within the default limits, without caching. `*`
    /// is the reserved wildcard.
    pub fn url_pattern(pattern: &str, base: Option<&str>) -> Result<Self, SelectorError> {
        Self::url_pattern_with_limits(pattern, base, &UrlPatternLimits::default())
    }

    /// [`Selector::url_pattern`] within the given limits.
    pub fn url_pattern_with_limits(
        pattern: &str,
        base: Option<&str>,
        limits: &UrlPatternLimits,
    ) -> Result<Self, SelectorError> {
        if pattern.len() > limits.max_len {
            return Err(SelectorError::TooLong {
                max: limits.max_len,
            });
        }
        if !validate::is_clean(pattern) {
            return Err(SelectorError::ControlCharacter);
        }
        if pattern == "*" {
            return Ok(Self::new(pattern, Compiled::Wildcard));
        }
        let matcher = UrlPatternMatcher::compile(pattern, base, limits)?;
        Ok(Self::new(pattern, Compiled::UrlPattern(Box::new(matcher))))
    }

    fn new(raw: &str, matcher: Compiled) -> Self {
        Self(Arc::new(Inner {
            raw: raw.into(),
            matcher,
            charge: None,
        }))
    }

    /// The selector as the client wrote it.
    pub fn raw(&self) -> &str {
        &self.0.raw
    }

    /// Its kind.
    pub fn kind(&self) -> SelectorKind {
        match self.0.matcher {
            Compiled::Wildcard => SelectorKind::Wildcard,
            Compiled::Exact => SelectorKind::Exact,
            Compiled::Template(_) => SelectorKind::Template,
            Compiled::UrlPattern(_) => SelectorKind::UrlPattern,
        }
    }

    /// The topic, for an exact selector.
    pub fn exact(&self) -> Option<&str> {
        matches!(self.0.matcher, Compiled::Exact).then_some(&*self.0.raw)
    }

    /// The base URL a URL-pattern selector was resolved against (serialized); `None` for other
    /// kinds. Two URL patterns select the same topics when their text and base are equal.
    pub fn base_url(&self) -> Option<&str> {
        match &self.0.matcher {
            Compiled::UrlPattern(m) => Some(m.base()),
            _ => None,
        }
    }

    /// A rough estimate of the heap this selector holds, in bytes: its text and its compiled
    /// matcher. What the [`SelectorStore`]'s memory budget charges it.
    pub fn approx_memory(&self) -> usize {
        let compiled = match &self.0.matcher {
            Compiled::Template(t) => t.approx_memory(),
            Compiled::UrlPattern(m) => m.approx_memory() + m.base().len(),
            Compiled::Wildcard | Compiled::Exact => 0,
        };
        std::mem::size_of::<Inner>() + self.0.raw.len() + compiled
    }

    /// Text every topic this selector matches starts with: the topic of an exact selector, the
    /// literal start of a URI template (up to its first expression); `None` for `*` and URL
    /// patterns, which may match topics of any spelling (a URL pattern matches the parsed URL, so
    /// equivalent spellings of one URL match alike). Two selectors whose prefixes are not a prefix
    /// of one another match no topic in common.
    pub fn literal_prefix(&self) -> Option<&str> {
        match &self.0.matcher {
            Compiled::Exact => Some(&self.0.raw),
            Compiled::Template(t) => Some(t.prefix()),
            Compiled::Wildcard | Compiled::UrlPattern(_) => None,
        }
    }

    /// Whether this is `*`.
    pub fn is_wildcard(&self) -> bool {
        matches!(self.0.matcher, Compiled::Wildcard)
    }

    /// Whether `topic` matches, computed without any cache.
    pub fn matches(&self, topic: &str) -> bool {
        match &self.0.matcher {
            Compiled::Wildcard => true,
            // A template selector also matches its own literal text, as on the reference hub.
            Compiled::Exact => *self.0.raw == *topic,
            Compiled::Template(t) => *self.0.raw == *topic || t.is_match(topic),
            Compiled::UrlPattern(m) => m.is_match(topic),
        }
    }
}

/// Compiles one entry of a token's topic matcher list, `{"match": pattern, "match_type":
/// match_type}`: no `match_type` or `"exact"` is an exact matcher, `"urlpattern"` a URL pattern
/// resolved against `base` (the hub's URL), `*` the wildcard either way, and any other type an
/// error, since a grant the hub cannot evaluate must invalidate the token rather than be skipped.
///
/// Patterns of both types are held to the store's [`UrlPatternLimits::max_len`] and must be free
/// of control characters, as topics are.
pub fn compile_matcher(
    store: &SelectorStore,
    pattern: &str,
    match_type: Option<&str>,
    base: Option<&str>,
) -> Result<Selector, SelectorError> {
    match match_type {
        None | Some("exact") => {
            let max = store.url_pattern_limits().max_len;
            if pattern.len() > max {
                return Err(SelectorError::TooLong { max });
            }
            if !validate::is_clean(pattern) {
                return Err(SelectorError::ControlCharacter);
            }
            Ok(Selector::exact_topic(pattern))
        }
        Some("urlpattern") => store.compile_url_pattern(pattern, base),
        Some(other) => Err(SelectorError::UnsupportedMatchType(other.to_string())),
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    fn sel(raw: &str) -> Selector {
        Selector::compile(raw).unwrap_or_else(|e| panic!("{raw:?}: {e}"))
    }

    #[test]
    fn kinds() {
        assert_eq!(sel("*").kind(), SelectorKind::Wildcard);
        assert!(sel("*").is_wildcard());
        assert_eq!(
            sel("https://example.com/books/1").kind(),
            SelectorKind::Exact
        );
        assert_eq!(
            sel("https://example.com/books/1").exact(),
            Some("https://example.com/books/1")
        );
        assert_eq!(
            sel("https://example.com/books/{id}").kind(),
            SelectorKind::Template
        );
        assert_eq!(sel("https://example.com/books/{id}").exact(), None);
        assert_eq!(
            sel("https://example.com/books/{id}").raw(),
            "https://example.com/books/{id}"
        );
        assert_eq!(SelectorKind::Template.as_str(), "template");
        assert_eq!(
            sel("https://example.com/books/{id}/x").literal_prefix(),
            Some("https://example.com/books/")
        );
        assert_eq!(sel("https://e/b").literal_prefix(), Some("https://e/b"));
        assert_eq!(sel("*").literal_prefix(), None);
    }

    #[test]
    fn matching() {
        let store = SelectorStore::default();
        let cases = [
            ("*", "https://example.com/anything", true),
            (
                "https://example.com/books/1",
                "https://example.com/books/1",
                true,
            ),
            (
                "https://example.com/books/1",
                "https://example.com/books/2",
                false,
            ),
            (
                "https://example.com/books/{id}",
                "https://example.com/books/1",
                true,
            ),
            (
                "https://example.com/books/{id}",
                "https://example.com/books/1/chapters",
                false,
            ),
            // A template matches its own text too, as on the reference hub.
            (
                "https://example.com/books/{id}",
                "https://example.com/books/{id}",
                true,
            ),
            (
                "https://example.com{/path*}",
                "https://example.com/a/b/c",
                true,
            ),
            (
                "https://example.com/search{?q,lang}",
                "https://example.com/search?q=a&lang=fr",
                true,
            ),
            (
                "https://example.com/search{?q,lang}",
                "https://example.com/search",
                true,
            ),
            (
                "https://example.com/search{?q,lang}",
                "https://example.com/search/x",
                false,
            ),
        ];
        for (raw, topic, want) in cases {
            let s = sel(raw);
            assert_eq!(s.matches(topic), want, "{raw:?} vs {topic:?}");
            // Twice through the store: a miss, then a hit.
            assert_eq!(store.matches(&s, topic), want, "{raw:?} vs {topic:?}");
            assert_eq!(
                store.matches(&s, topic),
                want,
                "{raw:?} vs {topic:?} (cached)"
            );
            let cached = store.compile(raw).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(store.matches(&cached, topic), want);
        }
    }

    #[test]
    fn invalid_templates_are_refused() {
        for raw in ["https://example.com/{id", "{}", "{a b}", "a}{b}"] {
            assert!(
                matches!(
                    Selector::compile(raw),
                    Err(SelectorError::InvalidTemplate(_))
                ),
                "{raw:?}"
            );
            assert!(SelectorStore::default().compile(raw).is_err(), "{raw:?}");
        }
        // Without `{` a selector is an exact topic, whatever it holds.
        assert_eq!(sel("a}b").kind(), SelectorKind::Exact);
    }

    const HUB: &str = "https://hub.example.com/.well-known/mercure";

    fn url_pattern(store: &SelectorStore, pattern: &str) -> Selector {
        store
            .compile_url_pattern(pattern, Some(HUB))
            .unwrap_or_else(|e| panic!("{pattern:?}: {e}"))
    }

    #[test]
    fn url_pattern_selectors() {
        let store = SelectorStore::default();
        let s = url_pattern(&store, "https://example.net/foo/:id");
        assert_eq!(s.kind(), SelectorKind::UrlPattern);
        assert_eq!(SelectorKind::UrlPattern.as_str(), "urlpattern");
        assert_eq!(s.raw(), "https://example.net/foo/:id");
        assert_eq!(s.base_url(), Some(HUB));
        assert_eq!(s.exact(), None);
        assert!(!s.is_wildcard());
        for (topic, want) in [
            ("https://example.net/foo/1", true),
            ("https://example.net/foo/1/2", false),
            ("https://example.net/foo/:id", true),
            ("not a url at all: https://exa mple.net/foo/1", false),
        ] {
            assert_eq!(s.matches(topic), want, "{topic:?}");
            // A miss, then a hit.
            assert_eq!(store.matches(&s, topic), want, "{topic:?}");
            assert_eq!(store.matches(&s, topic), want, "{topic:?} (cached)");
        }
        // Relative patterns and topics resolve against the base.
        let events = url_pattern(
            &store,
            "/.well-known/mercure/subscriptions/:type/:topic/:id",
        );
        assert!(store.matches(&events, "/.well-known/mercure/subscriptions/exact/a/b"));
        assert!(store.matches(
            &events,
            "https://hub.example.com/.well-known/mercure/subscriptions/exact/a/b"
        ));
        assert_eq!(
            sel("https://example.net/foo/:id").kind(),
            SelectorKind::Exact
        );
    }

    #[test]
    fn url_patterns_are_cached_per_base() {
        let store = SelectorStore::default();
        let a = url_pattern(&store, "/books/:id");
        let b = url_pattern(&store, "/books/:id");
        assert!(Arc::ptr_eq(&a.0, &b.0));
        let other = store
            .compile_url_pattern("/books/:id", Some("https://other.example.com/hub"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!Arc::ptr_eq(&a.0, &other.0));
        assert!(store.matches(&a, "https://hub.example.com/books/1"));
        assert!(!store.matches(&other, "https://hub.example.com/books/1"));
        assert!(store.matches(&other, "https://other.example.com/books/1"));
        // No base: the fallback, cached under it.
        let none = store
            .compile_url_pattern("/books/:id", None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(none.base_url(), Some(crate::url_pattern::FALLBACK_BASE_URL));
        assert!(store.matches(&none, "/books/1"));
        assert!(!store.matches(&none, "https://hub.example.com/books/1"));
    }

    #[test]
    fn same_text_as_template_and_url_pattern_stays_apart() {
        let store = SelectorStore::default();
        // `{…}` is a template expression to one syntax and a group to the other.
        let text = "https://example.com/books{/:id}?";
        let pattern = url_pattern(&store, text);
        assert_eq!(pattern.kind(), SelectorKind::UrlPattern);
        assert!(store.matches(&pattern, "https://example.com/books/7"));
        assert!(store.compile(text).is_err());
        let text = "https://example.com/{id}";
        let template = store.compile(text).unwrap_or_else(|e| panic!("{e}"));
        let pattern = url_pattern(&store, text);
        assert_eq!(template.kind(), SelectorKind::Template);
        assert_eq!(pattern.kind(), SelectorKind::UrlPattern);
        assert!(store.matches(&template, "https://example.com/1"));
        assert!(!store.matches(&pattern, "https://example.com/1"));
        assert!(store.matches(&template, "https://example.com/2"));
        assert!(!store.matches(&pattern, "https://example.com/2"));
    }

    #[test]
    fn the_wildcard_is_recognized_before_the_matcher_type() {
        let store = SelectorStore::default();
        for s in [
            Selector::exact_topic("*"),
            url_pattern(&store, "*"),
            Selector::url_pattern("*", None).unwrap_or_else(|e| panic!("{e}")),
            compile_matcher(&store, "*", None, None).unwrap_or_else(|e| panic!("{e}")),
            compile_matcher(&store, "*", Some("urlpattern"), Some(HUB))
                .unwrap_or_else(|e| panic!("{e}")),
        ] {
            assert!(s.is_wildcard());
            assert_eq!(s.kind(), SelectorKind::Wildcard);
            assert!(store.matches(&s, "anything, even not a URL"));
        }
        // `{` means nothing to the exact matcher type.
        let exact = Selector::exact_topic("https://example.com/{id}");
        assert_eq!(exact.kind(), SelectorKind::Exact);
        assert!(!exact.matches("https://example.com/1"));
    }

    #[test]
    fn url_pattern_limits_are_enforced_with_clear_errors() {
        let store = SelectorStore::default().with_url_pattern_limits(UrlPatternLimits {
            max_len: 64,
            max_groups: 6,
        });
        let err = |pattern: &str| match store.compile_url_pattern(pattern, Some(HUB)) {
            Ok(_) => panic!("{pattern:?} should be refused"),
            Err(e) => e,
        };
        let long = format!("https://example.com/{}", "a".repeat(64));
        assert_eq!(err(&long), SelectorError::TooLong { max: 64 });
        assert_eq!(
            err(&long).to_string(),
            "topic selector longer than 64 bytes"
        );
        assert_eq!(
            err("https://example.com/:a/:b/:c"),
            SelectorError::UrlPattern(UrlPatternError::TooManyGroups { max: 6 })
        );
        assert_eq!(
            err("https://example.com/:a/:b/:c").to_string(),
            "URL pattern has more than 6 groups"
        );
        assert_eq!(
            err("https://example.com/(\\w{100}){9}").to_string(),
            "URL pattern regular expression too complex"
        );
        assert_eq!(
            err("https://example.com/a\u{200B}"),
            SelectorError::ControlCharacter
        );
        assert!(matches!(
            err("https://example.com/:"),
            SelectorError::UrlPattern(UrlPatternError::Invalid(_))
        ));
        // Within the limits.
        url_pattern(&store, "https://example.com/:a/:b");
    }

    #[test]
    fn compile_matcher_reads_grant_entries() {
        let store = SelectorStore::default();
        let compile = |pattern: &str, match_type: Option<&str>| {
            compile_matcher(&store, pattern, match_type, Some(HUB))
        };
        for match_type in [None, Some("exact")] {
            let s = compile("https://example.com/books/:id", match_type)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(s.kind(), SelectorKind::Exact);
            assert!(s.matches("https://example.com/books/:id"));
            assert!(!s.matches("https://example.com/books/1"));
        }
        let s = compile("https://example.com/users/42/*", Some("urlpattern"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.kind(), SelectorKind::UrlPattern);
        assert!(store.matches(&s, "https://example.com/users/42/books/1"));
        assert!(!store.matches(&s, "https://example.com/books/1"));
        // Matcher type names are case-sensitive, and unknown ones are errors, never skipped.
        for unknown in ["URLPattern", "Exact", "regex", "template", ""] {
            assert_eq!(
                compile("https://example.com/", Some(unknown)).err(),
                Some(SelectorError::UnsupportedMatchType(unknown.to_string())),
                "{unknown:?}"
            );
        }
        assert_eq!(
            compile("*", Some("nope")).err(),
            Some(SelectorError::UnsupportedMatchType("nope".into()))
        );
        assert!(matches!(
            compile("https://example.com/:", Some("urlpattern")),
            Err(SelectorError::UrlPattern(_))
        ));
        assert_eq!(
            compile("a\nb", None).err(),
            Some(SelectorError::ControlCharacter)
        );
        assert_eq!(
            compile(&"a".repeat(2049), None).err(),
            Some(SelectorError::TooLong { max: 2048 })
        );
    }

    mod props {
        use proptest::prelude::*;

        use super::super::*;
        use super::HUB;

        proptest! {
            /// An exact selector, however it was compiled, matches exactly the topics equal to it
            /// byte for byte (the wildcard aside).
            #[test]
            fn exact_selectors_agree_with_string_equality(
                raw in "[a-z:/{}*?#%.é]{0,24}",
                topic in "[a-z:/{}*?#%.é]{0,24}",
            ) {
                prop_assume!(raw != "*");
                let store = SelectorStore::new(16, 64);
                let selectors = [
                    Selector::exact_topic(&raw),
                    compile_matcher(&store, &raw, None, None)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?,
                    compile_matcher(&store, &raw, Some("exact"), None)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?,
                ];
                for s in &selectors {
                    prop_assert_eq!(s.kind(), SelectorKind::Exact);
                    prop_assert_eq!(s.matches(&topic), raw == topic);
                    prop_assert_eq!(store.matches(s, &topic), raw == topic);
                    prop_assert!(s.matches(&raw));
                    prop_assert!(store.matches(s, &raw));
                }
                // A pre-standardization selector without `{` is exact too.
                if !raw.contains('{') {
                    let s = store.compile(&raw).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(s.kind(), SelectorKind::Exact);
                    prop_assert_eq!(store.matches(&s, &topic), raw == topic);
                }
            }

            /// Every topic a selector matches starts with its literal prefix (what retention rules
            /// rely on to tell that a subscriber cannot match a rule's topics).
            #[test]
            fn matched_topics_start_with_the_literal_prefix(
                raw in "(https://e/|)[a-z/]{0,6}(\\{[+#./;?&]?[a-z]{1,3}\\*?\\}|)[a-z/.]{0,6}",
                topic in "(https://e/|)[a-z/.,=?#&;]{0,16}",
            ) {
                let Ok(s) = Selector::compile(&raw) else { return Ok(()); };
                if let Some(prefix) = s.literal_prefix() {
                    prop_assert!(raw.starts_with(prefix));
                    if s.matches(&topic) {
                        prop_assert!(topic.starts_with(prefix), "{} matched {}", raw, topic);
                    }
                }
            }

            /// Compiling never panics on arbitrary input, and a URL pattern's cached answer is
            /// always its uncached one.
            #[test]
            fn url_patterns_compile_or_refuse_and_cache_consistently(
                pattern in "(https://|/|)[a-z:/*?(){}+.\\\\#]{0,24}",
                topic in "(https://|/|)[a-z:/?#.]{0,24}",
            ) {
                let store = SelectorStore::new(16, 64);
                if let Ok(s) = store.compile_url_pattern(&pattern, Some(HUB)) {
                    let direct = s.matches(&topic);
                    prop_assert_eq!(store.matches(&s, &topic), direct);
                    prop_assert_eq!(store.matches(&s, &topic), direct);
                }
            }
        }
    }
}
