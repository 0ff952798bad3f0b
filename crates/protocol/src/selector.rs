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
                UriTemplate::compile(raw).map_err(|e| SelectorError::InvalidTemplate(e.to_string()))?,
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

/// Bounded caches of compiled selectors and of template match results, shared by a whole node.
pub struct SelectorStore {
    compiled: quick_cache::sync::Cache<Box<str>, Selector>,
    matches: quick_cache::sync::Cache<(Box<str>, Box<str>), bool>,
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
    pub fn new(compiled_capacity: usize, match_capacity: usize) -> Self {
        Self {
            compiled: quick_cache::sync::Cache::new(compiled_capacity.max(1)),
            matches: quick_cache::sync::Cache::new(match_capacity.max(1)),
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
                self.matches.insert((selector.raw().into(), topic.into()), hit);
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
