//! Topic selectors: what a subscriber (or a JWT grant) says it wants, compiled once.
//!
//! A selector is `*` (every topic), an RFC 6570 URI template (any selector containing `{`, e.g.
//! `https://example.com/books/{id}`), or an exact topic. Compiling a template is costly and the same
//! selectors arrive again and again (every browser tab of an app subscribes with the same ones), so
//! the [`SelectorStore`] keeps compiled selectors and template match results in bounded caches:
//! memory stays fixed whatever clients send, and a hot selector is compiled once per node.
//!
//! Data flow: a raw selector string goes through [`SelectorStore::compile`] (or [`Selector::compile`])
//! once, when a subscription or a JWT grant is read, and becomes a [`Selector`]; each published
//! topic then goes through [`SelectorStore::matches`]. Wildcard and exact selectors answer directly;
//! a template selector first tries the match cache, keyed by `(selector, topic)`, and only on a miss
//! runs the compiled [`UriTemplate`](crate::template::UriTemplate) regex. The cache is probed with a
//! borrowed key, so the hot path (same selectors, same topics) never allocates.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use thiserror::Error;

use crate::template::UriTemplate;

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
}

impl SelectorKind {
    /// A short lowercase name (`wildcard`, `exact`, `template`).
    pub fn as_str(&self) -> &'static str {
        match self {
            SelectorKind::Wildcard => "wildcard",
            SelectorKind::Exact => "exact",
            SelectorKind::Template => "template",
        }
    }
}

/// A compiled topic selector. Cloning is cheap (one `Arc`).
#[derive(Clone, Debug)]
pub struct Selector(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    raw: Box<str>,
    matcher: Matcher,
}

#[derive(Debug)]
enum Matcher {
    Wildcard,
    Exact,
    Template(UriTemplate),
}

impl Selector {
    /// Compiles `raw` without caching (the [`SelectorStore`] caches).
    pub fn compile(raw: &str) -> Result<Self, SelectorError> {
        let matcher = if raw == "*" {
            Matcher::Wildcard
        } else if raw.contains('{') {
            Matcher::Template(
                UriTemplate::compile(raw)
                    .map_err(|e| SelectorError::InvalidTemplate(e.to_string()))?,
            )
        } else {
            Matcher::Exact
        };
        Ok(Self(Arc::new(Inner {
            raw: raw.into(),
            matcher,
        })))
    }

    /// The selector as the client wrote it.
    pub fn raw(&self) -> &str {
        &self.0.raw
    }

    /// Its kind.
    pub fn kind(&self) -> SelectorKind {
        match self.0.matcher {
            Matcher::Wildcard => SelectorKind::Wildcard,
            Matcher::Exact => SelectorKind::Exact,
            Matcher::Template(_) => SelectorKind::Template,
        }
    }

    /// The topic, for an exact selector.
    pub fn exact(&self) -> Option<&str> {
        matches!(self.0.matcher, Matcher::Exact).then_some(&*self.0.raw)
    }

    /// Whether this is `*`.
    pub fn is_wildcard(&self) -> bool {
        matches!(self.0.matcher, Matcher::Wildcard)
    }

    /// Whether `topic` matches, computed without any cache.
    pub fn matches(&self, topic: &str) -> bool {
        match &self.0.matcher {
            Matcher::Wildcard => true,
            // A template selector also matches its own literal text, as on the reference hub.
            Matcher::Exact => *self.0.raw == *topic,
            Matcher::Template(t) => *self.0.raw == *topic || t.is_match(topic),
        }
    }
}

/// A match-cache key borrowed from the caller: `(selector, topic)` without copying either string.
///
/// It hashes exactly like the owned `(Box<str>, Box<str>)` key (a tuple hashes its fields in order,
/// and `Box<str>` hashes as `str`), which is what lets the cache find owned entries with it.
struct MatchKeyRef<'a>(&'a str, &'a str);

impl Hash for MatchKeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.0, self.1).hash(state);
    }
}

impl quick_cache::Equivalent<(Box<str>, Box<str>)> for MatchKeyRef<'_> {
    fn equivalent(&self, key: &(Box<str>, Box<str>)) -> bool {
        *key.0 == *self.0 && *key.1 == *self.1
    }
}

/// Memory one unit of compiled-cache capacity stands for: a typical template (a URL with an
/// expression or two) compiles to about 20 KiB, so it weighs one unit, while the largest templates
/// allowed weigh about five.
const COMPILED_UNIT_BYTES: usize = 32 * 1024;

/// Key bytes one unit of match-cache capacity stands for; a typical `(selector, topic)` pair fits.
const MATCH_UNIT_BYTES: usize = 256;

/// Weighs a compiled selector by the memory it holds, so the cache's bound is one of memory and not
/// only of entries: a flood of large templates evicts more entries instead of growing the heap.
#[derive(Clone, Copy, Debug)]
struct CompiledWeighter;

impl quick_cache::Weighter<Box<str>, Selector> for CompiledWeighter {
    fn weight(&self, raw: &Box<str>, selector: &Selector) -> u64 {
        let compiled = match &selector.0.matcher {
            Matcher::Template(t) => t.approx_memory(),
            Matcher::Wildcard | Matcher::Exact => 0,
        };
        // At least one, as a zero weight would pin the entry.
        (1 + (2 * raw.len() + compiled) / COMPILED_UNIT_BYTES) as u64
    }
}

/// Weighs a match result by the length of its key, for the same reason.
#[derive(Clone, Copy, Debug)]
struct MatchWeighter;

impl quick_cache::Weighter<(Box<str>, Box<str>), bool> for MatchWeighter {
    fn weight(&self, (selector, topic): &(Box<str>, Box<str>), _: &bool) -> u64 {
        (1 + (selector.len() + topic.len()) / MATCH_UNIT_BYTES) as u64
    }
}

/// Bounded caches of compiled selectors and of template match results, shared by a whole node.
pub struct SelectorStore {
    compiled: quick_cache::sync::Cache<Box<str>, Selector, CompiledWeighter>,
    matches: quick_cache::sync::Cache<(Box<str>, Box<str>), bool, MatchWeighter>,
}

impl std::fmt::Debug for SelectorStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelectorStore")
            .field("compiled", &self.compiled.len())
            .field("matches", &self.matches.len())
            .finish()
    }
}

impl Default for SelectorStore {
    fn default() -> Self {
        Self::new(10_000, 100_000)
    }
}

impl SelectorStore {
    /// A store keeping at most `compiled_capacity` compiled selectors and `match_capacity` template
    /// match results.
    ///
    /// Entries are weighed by size, so these are also memory bounds: a compiled template counts
    /// once per 32 KiB it holds (most count once; the largest allowed, about five times), and a
    /// match result once per 256 bytes of selector and topic. The caches thus hold at most about
    /// `compiled_capacity` × 32 KiB of compiled selectors and `match_capacity` × 256 bytes of keys.
    pub fn new(compiled_capacity: usize, match_capacity: usize) -> Self {
        let compiled_capacity = compiled_capacity.max(1);
        let match_capacity = match_capacity.max(1);
        Self {
            compiled: quick_cache::sync::Cache::with_weighter(
                compiled_capacity,
                compiled_capacity as u64,
                CompiledWeighter,
            ),
            matches: quick_cache::sync::Cache::with_weighter(
                match_capacity,
                match_capacity as u64,
                MatchWeighter,
            ),
        }
    }

    /// Compiles `raw`, reusing a cached compilation when there is one.
    pub fn compile(&self, raw: &str) -> Result<Selector, SelectorError> {
        if let Some(s) = self.compiled.get(raw) {
            return Ok(s);
        }
        let s = Selector::compile(raw)?;
        self.compiled.insert(raw.into(), s.clone());
        Ok(s)
    }

    /// Whether `topic` matches `selector`; template results are cached.
    pub fn matches(&self, selector: &Selector, topic: &str) -> bool {
        match &selector.0.matcher {
            Matcher::Wildcard => true,
            Matcher::Exact => *selector.0.raw == *topic,
            Matcher::Template(t) => {
                if *selector.0.raw == *topic {
                    return true;
                }
                if let Some(hit) = self.matches.get(&MatchKeyRef(selector.raw(), topic)) {
                    return hit;
                }
                let hit = t.is_match(topic);
                // Only a miss pays for owned copies of the key.
                self.matches
                    .insert((selector.raw().into(), topic.into()), hit);
                hit
            }
        }
    }
}

impl Selector {
    /// An exact-topic selector for `topic`, whatever characters it holds (the current protocol's
    /// `match` / `match_exact` matcher: `{` is not a template there).
    pub fn exact_topic(topic: &str) -> Self {
        Self(Arc::new(Inner {
            raw: topic.into(),
            matcher: Matcher::Exact,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

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

    #[test]
    fn compile_reuses_cached_selectors() {
        let store = SelectorStore::default();
        let a = store
            .compile("https://example.com/{x}")
            .unwrap_or_else(|e| panic!("{e}"));
        let b = store
            .compile("https://example.com/{x}")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(Arc::ptr_eq(&a.0, &b.0));
    }

    #[test]
    fn borrowed_key_hashes_like_the_owned_key() {
        let state = std::collections::hash_map::RandomState::new();
        let owned: (Box<str>, Box<str>) = ("sel{x}".into(), "topic".into());
        let borrowed = MatchKeyRef("sel{x}", "topic");
        assert_eq!(state.hash_one(&owned), state.hash_one(&borrowed));
        assert!(quick_cache::Equivalent::equivalent(&borrowed, &owned));
        assert!(!quick_cache::Equivalent::equivalent(
            &MatchKeyRef("sel{x}", "topiC"),
            &owned
        ));
        // The field boundary is part of the key.
        assert!(!quick_cache::Equivalent::equivalent(
            &MatchKeyRef("sel{x}t", "opic"),
            &owned
        ));
    }

    #[test]
    fn hits_are_found_with_the_borrowed_key() {
        let store = SelectorStore::default();
        let s = sel("https://example.com/books/{id}");
        // Plant a wrong answer: if the lookup finds the owned entry, it is what comes back.
        store.matches.insert(
            (
                "https://example.com/books/{id}".into(),
                "https://example.com/books/1".into(),
            ),
            false,
        );
        assert!(!store.matches(&s, "https://example.com/books/1"));
        assert!(store.matches(&s, "https://example.com/books/2"));
    }

    #[test]
    fn caches_stay_bounded() {
        let store = SelectorStore::new(4, 16);
        let s = sel("https://example.com/books/{id}");
        for i in 0..1_000 {
            assert!(store.matches(&s, &format!("https://example.com/books/{i}")));
            let raw = format!("https://example.com/{i}/{{id}}");
            assert!(store.compile(&raw).is_ok());
        }
        assert!(store.matches.weight() <= 16, "{:?}", store);
        assert!(store.compiled.weight() <= 4, "{:?}", store);
        // Long keys weigh more, so fewer fit.
        let long = "x".repeat(1_000);
        for i in 0..100 {
            assert!(store.matches(&s, &format!("https://example.com/books/{long}{i}")));
        }
        assert!(store.matches.weight() <= 16, "{:?}", store);
        assert_eq!(
            quick_cache::Weighter::weight(&MatchWeighter, &(s.raw().into(), long.into()), &true),
            1 + (30 + 1_000) / 256
        );
    }

    #[test]
    fn large_templates_weigh_more() {
        let small = sel("https://example.com/books/{id}");
        let large = sel(&format!("{{/{}}}", vec!["a"; 64].join(",")));
        let w = |s: &Selector| {
            quick_cache::Weighter::weight(&CompiledWeighter, &Box::<str>::from(s.raw()), s)
        };
        assert_eq!(w(&small), 1);
        assert!(w(&large) > 1);
        assert_eq!(w(&sel("https://example.com/books/1")), 1);
    }
}
