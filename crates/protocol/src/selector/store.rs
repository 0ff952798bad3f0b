//! The node's selector cache: compiled selectors and URL-pattern match results, in bounded caches
//! shared by every request and every shard.
//!
//! Compiling a template or a URL pattern is costly and the same selectors arrive again and again
//! (every browser tab of an app subscribes with the same ones), so [`SelectorStore`] keeps them
//! compiled: memory stays fixed whatever clients send, and a hot selector is compiled once per
//! node. URL-pattern selectors, whose match parses the topic as a URL (about 800 ns), also have
//! their results cached, keyed by `(selector, topic)`. Both caches are probed with borrowed keys,
//! so the hot path (same selectors, same topics) never allocates.
//!
//! The cache alone would not bound memory: a selector evicted from it stays alive in every
//! subscription that holds it, and a client sending distinct selectors would make the node hold
//! one compiled copy per connection. So every selector the store compiles is also interned while
//! alive (a map of weak references, keyed like the cache): whoever asks for the same text gets the
//! same compiled selector, evicted from the cache or not, and each live selector is charged once to
//! the store's memory budget ([`SelectorStore::with_budget`]) until its last holder drops it. A
//! compile that would take the live selectors past the budget first lets the cache go (what only
//! the cache held is freed), and if that is not enough it is refused
//! ([`SelectorError::OverBudget`]).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::{Compiled, Inner, Selector, SelectorError};
use crate::url_pattern::UrlPatternLimits;

impl Selector {
    /// What this selector is cached under; the base is empty for pre-standardization selectors.
    fn key(&self) -> KeyRef<'_> {
        match &self.0.matcher {
            Compiled::UrlPattern(m) => KeyRef {
                syntax: Syntax::UrlPattern,
                base: m.base(),
                raw: &self.0.raw,
            },
            _ => KeyRef {
                syntax: Syntax::TopicSelector,
                base: "",
                raw: &self.0.raw,
            },
        }
    }
}

/// Which syntax a cached selector's text was read with: the same text means different things as a
/// pre-standardization selector and as a URL pattern, so it is part of every cache key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Syntax {
    TopicSelector,
    UrlPattern,
}

/// The compiled-cache key: syntax, base URL (empty unless a URL pattern) and text.
#[derive(Debug, PartialEq, Eq)]
struct Key {
    syntax: Syntax,
    base: Box<str>,
    raw: Box<str>,
}

/// A [`Key`] borrowed from the caller, to probe the cache without copying.
#[derive(Clone, Copy)]
struct KeyRef<'a> {
    syntax: Syntax,
    base: &'a str,
    raw: &'a str,
}

impl KeyRef<'_> {
    fn owned(self) -> Key {
        Key {
            syntax: self.syntax,
            base: self.base.into(),
            raw: self.raw.into(),
        }
    }

    fn is(&self, key: &Key) -> bool {
        self.syntax == key.syntax && *key.base == *self.base && *key.raw == *self.raw
    }
}

// The owned and borrowed forms hash the same fields in the same order, which is what lets the
// caches find owned entries with borrowed keys.
impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.syntax, &*self.base, &*self.raw).hash(state);
    }
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.syntax, self.base, self.raw).hash(state);
    }
}

impl quick_cache::Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.is(key)
    }
}

/// The match-cache key: a selector's key and a topic.
#[derive(Debug, PartialEq, Eq)]
struct MatchKey {
    selector: Key,
    topic: Box<str>,
}

/// A [`MatchKey`] borrowed from the caller: `(selector, topic)` without copying either.
struct MatchKeyRef<'a> {
    selector: KeyRef<'a>,
    topic: &'a str,
}

impl Hash for MatchKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (&self.selector, &*self.topic).hash(state);
    }
}

impl Hash for MatchKeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (&self.selector, self.topic).hash(state);
    }
}

impl quick_cache::Equivalent<MatchKey> for MatchKeyRef<'_> {
    fn equivalent(&self, key: &MatchKey) -> bool {
        self.selector.is(&key.selector) && *key.topic == *self.topic
    }
}

/// Memory one unit of compiled-cache capacity stands for: a typical template (a URL with an
/// expression or two) compiles to about 20 KiB, so it weighs one unit, while the largest templates
/// allowed weigh about five. A typical URL pattern weighs one too (its components are mostly plain
/// strings), one with several groups per component two or three.
const COMPILED_UNIT_BYTES: usize = 32 * 1024;

/// Key bytes one unit of match-cache capacity stands for; a typical `(selector, topic)` pair fits.
const MATCH_UNIT_BYTES: usize = 256;

/// Weighs a compiled selector by the memory it holds, so the cache's bound is one of memory and not
/// only of entries: a flood of large templates evicts more entries instead of growing the heap.
#[derive(Clone, Copy, Debug)]
struct CompiledWeighter;

impl quick_cache::Weighter<Key, Selector> for CompiledWeighter {
    fn weight(&self, key: &Key, selector: &Selector) -> u64 {
        let compiled = match &selector.0.matcher {
            Compiled::Template(t) => t.approx_memory(),
            Compiled::UrlPattern(m) => m.approx_memory() + m.base().len(),
            Compiled::Wildcard | Compiled::Exact => 0,
        };
        // At least one, as a zero weight would pin the entry.
        (1 + (2 * key.raw.len() + key.base.len() + compiled) / COMPILED_UNIT_BYTES) as u64
    }
}

/// Weighs a match result by the length of its key, for the same reason.
#[derive(Clone, Copy, Debug)]
struct MatchWeighter;

impl quick_cache::Weighter<MatchKey, bool> for MatchWeighter {
    fn weight(&self, key: &MatchKey, _: &bool) -> u64 {
        let len = key.selector.base.len() + key.selector.raw.len() + key.topic.len();
        (1 + len / MATCH_UNIT_BYTES) as u64
    }
}

/// The memory the live compiled selectors of a store take, against its budget.
#[derive(Debug)]
struct Ledger {
    used: AtomicUsize,
    budget: usize,
}

/// One live selector's share of its store's [`Ledger`], given back when the selector is dropped.
#[derive(Debug)]
pub(super) struct Charge {
    bytes: usize,
    ledger: Arc<Ledger>,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.ledger.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Every live selector the store compiled, by key, so the same text is compiled once however many
/// hold it. Dead entries are swept when the map has doubled since the last sweep.
#[derive(Default)]
struct Interned {
    live: HashMap<Key, Weak<Inner>>,
    sweep_at: usize,
}

/// Bounded caches of compiled selectors and of template and URL-pattern match results, shared by a
/// whole node, the interned live selectors and their memory budget, plus the limits URL patterns
/// are compiled within.
pub struct SelectorStore {
    compiled: quick_cache::sync::Cache<Key, Selector, CompiledWeighter>,
    matches: quick_cache::sync::Cache<MatchKey, bool, MatchWeighter>,
    interned: Mutex<Interned>,
    ledger: Arc<Ledger>,
    url_pattern_limits: UrlPatternLimits,
}

impl std::fmt::Debug for SelectorStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelectorStore")
            .field("compiled", &self.compiled.len())
            .field("matches", &self.matches.len())
            .field("memory_used", &self.memory_used())
            .field("url_pattern_limits", &self.url_pattern_limits)
            .finish()
    }
}

impl Default for SelectorStore {
    fn default() -> Self {
        Self::new(10_000, 100_000)
    }
}

impl SelectorStore {
    /// A store keeping at most `compiled_capacity` compiled selectors and `match_capacity` match
    /// results, compiling URL patterns within the default [`UrlPatternLimits`].
    ///
    /// Entries are weighed by size, so these are also memory bounds: a compiled template or URL
    /// pattern counts once per 32 KiB it holds (most count once; the largest allowed, a few times),
    /// and a match result once per 256 bytes of selector and topic. The caches thus hold at most
    /// about `compiled_capacity` × 32 KiB of compiled selectors and `match_capacity` × 256 bytes of
    /// keys.
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
            interned: Mutex::new(Interned::default()),
            ledger: Arc::new(Ledger {
                used: AtomicUsize::new(0),
                budget: usize::MAX,
            }),
            url_pattern_limits: UrlPatternLimits::default(),
        }
    }

    /// This store, holding live compiled selectors within `bytes` (as estimated by
    /// [`Selector::approx_memory`]). Set it before the store is shared.
    pub fn with_budget(mut self, bytes: usize) -> Self {
        self.ledger = Arc::new(Ledger {
            used: AtomicUsize::new(0),
            budget: bytes,
        });
        self
    }

    /// Bytes the live compiled selectors take now (see [`SelectorStore::with_budget`]).
    pub fn memory_used(&self) -> usize {
        self.ledger.used.load(Ordering::Relaxed)
    }

    /// The memory budget of live compiled selectors, in bytes.
    pub fn memory_budget(&self) -> usize {
        self.ledger.budget
    }

    /// Compiles with `compile` the selector of `key`, unless a live one is found: in the cache, or
    /// interned. Returns it and whether it was compiled now (what only this caller holds).
    fn get_or_compile(
        &self,
        key: KeyRef<'_>,
        compile: impl FnOnce() -> Result<Selector, SelectorError>,
    ) -> Result<(Selector, bool), SelectorError> {
        if let Some(s) = self.compiled.get(&key) {
            return Ok((s, false));
        }
        if let Some(s) = self.find_interned(key) {
            self.compiled.insert(key.owned(), s.clone());
            return Ok((s, false));
        }
        let mut selector = compile()?;
        let bytes = selector.approx_memory();
        if !self.try_charge(bytes) {
            // Let go of what only the cache holds, then try once more.
            self.compiled.clear();
            if !self.try_charge(bytes) {
                return Err(SelectorError::OverBudget {
                    budget: self.ledger.budget,
                });
            }
        }
        let charge = Charge {
            bytes,
            ledger: self.ledger.clone(),
        };
        match Arc::get_mut(&mut selector.0) {
            Some(inner) => inner.charge = Some(charge),
            // Freshly compiled, so never shared; were it, its charge is given back at once.
            None => drop(charge),
        }
        self.intern(key, &selector);
        self.compiled.insert(key.owned(), selector.clone());
        Ok((selector, true))
    }

    fn try_charge(&self, bytes: usize) -> bool {
        let budget = self.ledger.budget;
        self.ledger
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                let after = used.checked_add(bytes)?;
                (after <= budget).then_some(after)
            })
            .is_ok()
    }

    fn find_interned(&self, key: KeyRef<'_>) -> Option<Selector> {
        // An owned key, allocated only when the cache missed (a compile is near anyway).
        let owned = key.owned();
        let interned = self.interned.lock().unwrap_or_else(|e| e.into_inner());
        interned
            .live
            .get(&owned)
            .and_then(Weak::upgrade)
            .map(Selector)
    }

    fn intern(&self, key: KeyRef<'_>, selector: &Selector) {
        let mut interned = self.interned.lock().unwrap_or_else(|e| e.into_inner());
        interned
            .live
            .insert(key.owned(), Arc::downgrade(&selector.0));
        if interned.live.len() >= interned.sweep_at {
            interned.live.retain(|_, weak| weak.strong_count() > 0);
            interned.sweep_at = (interned.live.len() * 2).max(64);
        }
    }

    /// This store, compiling URL patterns within `limits` instead of the defaults. Set it before
    /// the store is shared: compiled patterns are cached without their limits.
    pub fn with_url_pattern_limits(mut self, limits: UrlPatternLimits) -> Self {
        self.url_pattern_limits = limits;
        self
    }

    /// The limits URL patterns are compiled within.
    pub fn url_pattern_limits(&self) -> &UrlPatternLimits {
        &self.url_pattern_limits
    }

    /// Compiles a pre-standardization selector, reusing a live compilation when there is one.
    pub fn compile(&self, raw: &str) -> Result<Selector, SelectorError> {
        self.compile_fresh(raw).map(|(s, _)| s)
    }

    /// [`SelectorStore::compile`], also telling whether the selector was compiled for this call
    /// (no one else held it): what a subscription alone costs.
    pub fn compile_fresh(&self, raw: &str) -> Result<(Selector, bool), SelectorError> {
        let key = KeyRef {
            syntax: Syntax::TopicSelector,
            base: "",
            raw,
        };
        self.get_or_compile(key, || Selector::compile(raw))
    }

    /// Compiles a URL pattern resolved against `base` (see [`Selector::url_pattern`]) within this
    /// store's limits, reusing a cached compilation for the same pattern and base.
    pub fn compile_url_pattern(
        &self,
        pattern: &str,
        base: Option<&str>,
    ) -> Result<Selector, SelectorError> {
        self.compile_url_pattern_fresh(pattern, base)
            .map(|(s, _)| s)
    }

    /// [`SelectorStore::compile_url_pattern`], also telling whether the selector was compiled for
    /// this call (see [`SelectorStore::compile_fresh`]).
    pub fn compile_url_pattern_fresh(
        &self,
        pattern: &str,
        base: Option<&str>,
    ) -> Result<(Selector, bool), SelectorError> {
        // Checked before the lookup too, so an oversized pattern is not even hashed.
        if pattern.len() > self.url_pattern_limits.max_len {
            return Err(SelectorError::TooLong {
                max: self.url_pattern_limits.max_len,
            });
        }
        let key = KeyRef {
            syntax: Syntax::UrlPattern,
            base: base.unwrap_or(crate::url_pattern::FALLBACK_BASE_URL),
            raw: pattern,
        };
        self.get_or_compile(key, || {
            Selector::url_pattern_with_limits(pattern, base, &self.url_pattern_limits)
        })
    }

    /// Whether `topic` matches `selector`; URL-pattern results are cached.
    pub fn matches(&self, selector: &Selector, topic: &str) -> bool {
        match &selector.0.matcher {
            Compiled::Wildcard | Compiled::Exact | Compiled::Template(_) => selector.matches(topic),
            Compiled::UrlPattern(_) => {
                let key = MatchKeyRef {
                    selector: selector.key(),
                    topic,
                };
                if let Some(hit) = self.matches.get(&key) {
                    return hit;
                }
                let hit = selector.matches(topic);
                // Only a miss pays for owned copies of the key.
                self.matches.insert(
                    MatchKey {
                        selector: key.selector.owned(),
                        topic: topic.into(),
                    },
                    hit,
                );
                hit
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;
    use std::sync::Arc;

    use super::*;

    fn sel(raw: &str) -> Selector {
        Selector::compile(raw).unwrap_or_else(|e| panic!("{raw:?}: {e}"))
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

    fn selector_key<'a>(raw: &'a str, base: &'a str, syntax: Syntax) -> KeyRef<'a> {
        KeyRef { syntax, base, raw }
    }

    #[test]
    fn borrowed_key_hashes_like_the_owned_key() {
        let state = std::collections::hash_map::RandomState::new();
        let sel = selector_key("sel{x}", "", Syntax::TopicSelector);
        let owned = MatchKey {
            selector: sel.owned(),
            topic: "topic".into(),
        };
        let borrowed = MatchKeyRef {
            selector: sel,
            topic: "topic",
        };
        assert_eq!(state.hash_one(&owned), state.hash_one(&borrowed));
        assert_eq!(state.hash_one(sel.owned()), state.hash_one(sel));
        assert!(quick_cache::Equivalent::equivalent(&borrowed, &owned));
        let differs = |selector: KeyRef<'_>, topic: &str| {
            !quick_cache::Equivalent::equivalent(&MatchKeyRef { selector, topic }, &owned)
        };
        assert!(differs(sel, "topiC"));
        // The field boundary is part of the key.
        assert!(differs(
            selector_key("sel{x}t", "", Syntax::TopicSelector),
            "opic"
        ));
        // So are the syntax and the base: the same text as a URL pattern is another selector.
        assert!(differs(
            selector_key("sel{x}", "", Syntax::UrlPattern),
            "topic"
        ));
        assert!(differs(
            selector_key("sel{x}", "https://a.example/", Syntax::TopicSelector),
            "topic"
        ));
    }

    #[test]
    fn hits_are_found_with_the_borrowed_key() {
        let store = SelectorStore::default();
        let s = Selector::url_pattern("https://example.com/books/:id", None).unwrap();
        // Plant a wrong answer: if the lookup finds the owned entry, it is what comes back.
        store.matches.insert(
            MatchKey {
                selector: s.key().owned(),
                topic: "https://example.com/books/1".into(),
            },
            false,
        );
        assert!(!store.matches(&s, "https://example.com/books/1"));
        assert!(store.matches(&s, "https://example.com/books/2"));
    }

    #[test]
    fn caches_stay_bounded() {
        let store = SelectorStore::new(4, 16);
        // Only URL-pattern matches are cached.
        let s = Selector::url_pattern("https://example.com/books/:id", None).unwrap();
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
        let key = MatchKey {
            selector: s.key().owned(),
            topic: long.into(),
        };
        assert_eq!(
            quick_cache::Weighter::weight(&MatchWeighter, &key, &true),
            1 + (30 + 1_000) / 256
        );
    }

    #[test]
    fn large_templates_weigh_more() {
        let small = sel("https://example.com/books/{id}");
        let large = sel(&format!("{{/{}}}", vec!["a"; 64].join(",")));
        let w =
            |s: &Selector| quick_cache::Weighter::weight(&CompiledWeighter, &s.key().owned(), s);
        assert_eq!(w(&small), 1);
        assert!(w(&large) > 1);
        assert_eq!(w(&sel("https://example.com/books/1")), 1);
    }

    #[test]
    fn live_selectors_are_shared_and_held_within_the_budget() {
        let one = sel("https://example.com/a/{id}").approx_memory();
        // A cache of one entry, and a budget of three selectors.
        let store = SelectorStore::new(1, 16).with_budget(3 * one + one / 2);
        let compile = |i: usize| store.compile_fresh(&format!("https://example.com/{i}/{{id}}"));
        let (a, fresh) = compile(1).unwrap();
        assert!(fresh);
        let (b, _) = compile(2).unwrap();
        // Evicted from the one-entry cache, but still live: the same compilation comes back.
        let (again, fresh) = compile(1).unwrap();
        assert!(!fresh);
        assert!(Arc::ptr_eq(&a.0, &again.0));
        let (c, _) = compile(3).unwrap();
        assert!(store.memory_used() <= store.memory_budget());
        // A fourth distinct selector does not fit while the three are held.
        assert_eq!(
            compile(4).map(|(s, _)| s.raw().to_string()),
            Err(SelectorError::OverBudget {
                budget: store.memory_budget()
            })
        );
        // Let one go: its memory is given back and the fourth fits.
        drop((b, again));
        let (d, fresh) = compile(4).unwrap();
        assert!(fresh);
        drop((a, c, d));
        // Only what the cache still holds is charged.
        assert!(
            store.memory_used() <= one + one / 2,
            "{}",
            store.memory_used()
        );
        // What only the cache held is let go when the budget is needed.
        let held: Vec<_> = (10..13).map(|i| compile(i).unwrap().0).collect();
        assert_eq!(held.len(), 3);
    }
}
