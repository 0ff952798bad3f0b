//! The `urlpattern` matcher type: topics selected by a WHATWG URL Pattern such as
//! `https://example.com/books/:id`.
//!
//! A subscriber asks for one with `match_urlpattern=…`, a token grants one with
//! `{"match": "…", "match_type": "urlpattern"}`. Data flows one way:
//!
//! 1. [`UrlPatternMatcher::compile`] refuses over-long patterns, resolves the pattern against the
//!    hub's URL (the base) with the `urlpattern` crate (Deno's implementation of the URL Pattern
//!    Living Standard), refuses patterns with too many groups, and builds the few regular
//!    expressions matching will need.
//! 2. [`UrlPatternMatcher::is_match`] parses a topic as a URL reference against the same base and
//!    tests each URL component (protocol, username, password, hostname, port, pathname, search,
//!    hash) against the pattern's.
//!
//! # Rules from the specification
//! - A relative pattern (`/books/:id`) or a relative topic (`/books/1`) is resolved against the
//!   hub's URL, so subscribers can match the hub's own relative topics (subscription events).
//!   When the hub's URL is not known, [`FALLBACK_BASE_URL`] stands in for it, as the reference hub
//!   does: relative patterns still match relative topics, and absolute ones absolute topics.
//! - A topic that does not parse as a URL reference against the base never matches.
//! - The standard's `ignoreCase` option is never enabled. Hosts still compare case-insensitively
//!   because URL parsing lowercases them; every other component is case-sensitive.
//! - Normalization is the URL parser's and nothing more, on the pattern and the topic alike:
//!   lowercase scheme and host, IDNA to punycode, default port dropped, dot segments removed,
//!   characters outside the allowed set percent-encoded. So `https://EXAMPLE.net:443/a/../foo/1`
//!   matches `https://example.net/foo/:id`. No Unicode (NFC) normalization and no percent-decoding:
//!   `/f%6Fo` stays distinct from `/foo`, as the specification's byte-comparison rule asks.
//! - The reserved wildcard `*` never gets here: it means every topic whatever the matcher type, and
//!   [`crate::selector`] recognizes it first.
//!
//! # Denial of service
//! The standard compiles patterns to regular expressions, which backtracking engines can be made to
//! run for exponential time. The specification lets a hub either use a linear-time engine or cap
//! each evaluation; this module does the first: every regular expression here runs on the `regex`
//! crate, which has no backtracking and searches in time linear in the topic. Syntax that engine
//! lacks (lookaround, backreferences) makes the pattern invalid. On top of that, each of these is
//! bounded, so neither compiling nor holding a pattern can be made expensive:
//! - the pattern's length ([`UrlPatternLimits::max_len`]), before anything is parsed;
//! - its number of groups ([`UrlPatternLimits::max_groups`]);
//! - the size of each regular expression, estimated from its syntax tree *before* it is compiled
//!   (a counted repetition such as `(\w{100}){10}` would otherwise compile to megabytes), with the
//!   `regex` crate's own compiled-size limit as a backstop;
//! - which regular expressions exist at all: components that are literals or a single `:name` / `*`
//!   use the crate's plain string matchers, and the per-component expressions the crate keeps only
//!   to extract group values (which a hub never needs) are validated but never compiled.
//!
//! Compiled patterns are cached (boundedly) by [`crate::SelectorStore`]; this module holds no state.

use std::cell::Cell;
use std::sync::OnceLock;

use ::urlpattern::component::Component;
use ::urlpattern::matcher::InnerMatcher;
use ::urlpattern::regexp::RegExp;
use ::urlpattern::{RegexSyntax, UrlPattern, UrlPatternInit, UrlPatternOptions};
use regex::{Regex, RegexBuilder};
use regex_syntax::hir::{Class, Hir, HirKind};
use thiserror::Error;
use url::Url;

/// The base URL used when the hub's own URL is not configured: the default hub path on a host
/// that cannot exist (`.invalid` is reserved by RFC 6761), so it never collides with a real topic.
pub const FALLBACK_BASE_URL: &str = "https://mercure.invalid/.well-known/mercure";

/// Bounds on the URL patterns a hub accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlPatternLimits {
    /// Longest pattern accepted, in bytes. The specification leaves the value to the hub; 2048
    /// bytes is generous for URLs and is also the subscribe query's own per-matcher limit.
    pub max_len: usize,
    /// Most groups (`:name`, `*`, `(regexp)`) in all eight URL components together, counting the
    /// `*` the standard fills in for components a pattern leaves out (an absolute pattern such as
    /// `https://example.com/books/:id` already has five). Each group adds to the regular expression
    /// of its component, so this bounds their size; real patterns use a handful.
    pub max_groups: usize,
}

impl Default for UrlPatternLimits {
    fn default() -> Self {
        Self {
            max_len: 2048,
            max_groups: 32,
        }
    }
}

/// Why a URL pattern was refused; the message is safe to send to the client that sent it.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum UrlPatternError {
    /// Longer than [`UrlPatternLimits::max_len`].
    #[error("URL pattern longer than {max} bytes")]
    TooLong {
        /// The limit in bytes.
        max: usize,
    },
    /// More groups than [`UrlPatternLimits::max_groups`].
    #[error("URL pattern has more than {max} groups")]
    TooManyGroups {
        /// The limit.
        max: usize,
    },
    /// A regular expression group whose compiled form would exceed the size bound.
    #[error("URL pattern regular expression too complex")]
    TooComplex,
    /// A regular expression group that is malformed or uses syntax the linear-time engine lacks.
    #[error(
        "invalid regular expression in URL pattern (lookaround and backreferences are not supported)"
    )]
    InvalidRegex,
    /// Not a well-formed URL pattern.
    #[error("invalid URL pattern: {0}")]
    Invalid(String),
    /// The base URL (the hub's URL) is not an absolute URL with a host.
    #[error("invalid base URL for URL patterns: {0:?}")]
    InvalidBase(String),
}

/// A compiled URL pattern together with the base URL it was resolved against.
#[derive(Debug)]
pub struct UrlPatternMatcher {
    pattern: UrlPattern<LinearRegex>,
    base: Url,
    approx_memory: usize,
}

impl UrlPatternMatcher {
    /// Compiles `pattern`, resolving it against `base` (the hub's URL; [`FALLBACK_BASE_URL`] when
    /// `None`).
    pub fn compile(
        pattern: &str,
        base: Option<&str>,
        limits: &UrlPatternLimits,
    ) -> Result<Self, UrlPatternError> {
        if pattern.len() > limits.max_len {
            return Err(UrlPatternError::TooLong {
                max: limits.max_len,
            });
        }
        // A cheap upper bound first, so a pattern made of thousands of groups is refused before the
        // crate parses it and generates expressions for every one of them.
        if group_openers(pattern) > 2 * limits.max_groups {
            return Err(UrlPatternError::TooManyGroups {
                max: limits.max_groups,
            });
        }
        let base = parse_base(base.unwrap_or(FALLBACK_BASE_URL))?;
        REGEX_TOO_COMPLEX.set(false);
        let compiled =
            UrlPatternInit::parse_constructor_string::<LinearRegex>(pattern, Some(base.clone()))
                .and_then(|init| {
                    // `ignore_case: false` is a requirement of the specification, not a default.
                    UrlPattern::<LinearRegex>::parse(
                        init,
                        UrlPatternOptions {
                            regex_syntax: RegexSyntax::Rust,
                            ignore_case: false,
                        },
                    )
                });
        let pattern = compiled.map_err(|e| match e {
            ::urlpattern::Error::RegExp(()) if REGEX_TOO_COMPLEX.get() => {
                UrlPatternError::TooComplex
            }
            ::urlpattern::Error::RegExp(()) => UrlPatternError::InvalidRegex,
            e => UrlPatternError::Invalid(e.to_string()),
        })?;

        let groups: usize = components(&pattern)
            .iter()
            .map(|c| c.group_name_list.len())
            .sum();
        if groups > limits.max_groups {
            return Err(UrlPatternError::TooManyGroups {
                max: limits.max_groups,
            });
        }

        // Build now what matching will use, so the first update to arrive does not pay for it on the
        // fan-out path, and so a pattern that cannot be built is refused rather than silently
        // matching nothing.
        let mut needed = Vec::new();
        for component in components(&pattern) {
            if let InnerMatcher::RegExp { regexp } = &component.matcher.inner {
                needed.push(regexp.as_ref().map_err(|_| UrlPatternError::InvalidRegex)?);
            }
        }
        // Each expression is within the bound; all of them together must be too, or eight
        // components could cost eight times as much to compile.
        let cost = needed.iter().fold(0, |sum, r| sum + r.cost);
        if cost > MAX_REGEX_COST {
            return Err(UrlPatternError::TooComplex);
        }
        let mut approx_memory = PATTERN_MEMORY + pattern_bytes(&pattern) * PATTERN_BYTE_MEMORY;
        for regexp in needed {
            regexp.compiled().ok_or(UrlPatternError::TooComplex)?;
            approx_memory += REGEX_MEMORY + regexp.cost * REGEX_COST_MEMORY;
        }
        Ok(Self {
            pattern,
            base,
            approx_memory,
        })
    }

    /// Whether `topic`, read as a URL reference against the base, matches. A topic that is not a
    /// URL reference does not.
    pub fn is_match(&self, topic: &str) -> bool {
        let Ok(url) = Url::options().base_url(Some(&self.base)).parse(topic) else {
            return false;
        };
        // The same component values the standard's "match" algorithm reads from a URL; the crate's
        // own `test` computes them too, but copies each into a new string and builds group maps.
        let p = &self.pattern;
        let hit = |c: &Component<LinearRegex>, value: &str| c.matcher.matches(value).is_some();
        // Most selective first: a miss usually shows in the path or the host.
        hit(&p.pathname, url.path())
            && hit(&p.hostname, url.host_str().unwrap_or_default())
            && hit(&p.protocol, url.scheme())
            && hit(&p.port, ::url::quirks::port(&url))
            && hit(&p.search, url.query().unwrap_or_default())
            && hit(&p.hash, url.fragment().unwrap_or_default())
            && hit(&p.username, url.username())
            && hit(&p.password, url.password().unwrap_or_default())
    }

    /// The base URL the pattern was resolved against, serialized.
    pub fn base(&self) -> &str {
        self.base.as_str()
    }

    /// A rough estimate of the heap this matcher holds, in bytes; what a cache of compiled
    /// selectors should weigh it at.
    pub fn approx_memory(&self) -> usize {
        self.approx_memory
    }
}

/// Counts what may open a group in `pattern` without parsing it: every unescaped `*`, `(` and `:`
/// that can start a name (not before `/` or a digit, as in `https://` or `:8080`). Every group opens
/// with one of them, and characters inside regexp groups count too, so this is at least the number
/// of groups; legitimate patterns stay far below twice the limit.
fn group_openers(pattern: &str) -> usize {
    let mut count = 0;
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // The tokenizer reads `\x` as one escaped character, inside regexp groups too.
            '\\' => {
                chars.next();
            }
            '*' | '(' => count += 1,
            ':' if !chars
                .peek()
                .is_some_and(|n| *n == '/' || n.is_ascii_digit()) =>
            {
                count += 1
            }
            _ => {}
        }
    }
    count
}

fn parse_base(base: &str) -> Result<Url, UrlPatternError> {
    match Url::parse(base) {
        Ok(url) if url.has_host() && !url.cannot_be_a_base() => Ok(url),
        _ => Err(UrlPatternError::InvalidBase(base.to_string())),
    }
}

fn components(p: &UrlPattern<LinearRegex>) -> [&Component<LinearRegex>; 8] {
    [
        &p.protocol,
        &p.username,
        &p.password,
        &p.hostname,
        &p.port,
        &p.pathname,
        &p.search,
        &p.hash,
    ]
}

fn pattern_bytes(p: &UrlPattern<LinearRegex>) -> usize {
    components(p)
        .iter()
        .map(|c| c.pattern_string.len() + c.matcher.prefix.len() + c.matcher.suffix.len())
        .sum()
}

// Memory estimate, rounded up (it weighs cache entries, so overestimating only makes the cache hold
// fewer): the eight components with their strings, and per compiled regular expression about 10 KiB
// plus a search cache, growing with its size.
const PATTERN_MEMORY: usize = 4 * 1024;
const PATTERN_BYTE_MEMORY: usize = 8;
const REGEX_MEMORY: usize = 16 * 1024;
const REGEX_COST_MEMORY: usize = 32;

/// Most cost units (see [`regex_cost`]) one regular expression may have, and all the expressions
/// one pattern compiles together. `[^/]+?` (a `:name` segment) costs about 60, `\d+` about 500 and
/// `\w+` about 7 000 (both are Unicode-aware); what passes compiles in a millisecond or two to a few
/// hundred KiB at worst, so a subscription's hundred patterns cannot cost seconds to compile.
const MAX_REGEX_COST: usize = 8 * 1024;

/// Cap on one compiled program. Expressions within [`MAX_REGEX_COST`] stay well under it (see the
/// tests); it is the backstop should the estimate be wrong.
const REGEX_SIZE_LIMIT: usize = 2 * 1024 * 1024;

/// Cap on the lazy DFA cache of one expression; thousands of patterns may be cached on a node, so
/// each gets a small cache instead of the crate's default 2 MiB.
const DFA_SIZE_LIMIT: usize = 256 * 1024;

thread_local! {
    /// Set when [`LinearRegex::parse`] refuses an expression for its size, so the caller can say
    /// "too complex" rather than "invalid": the crate's error carries nothing but `()`. Compiling
    /// runs synchronously on one thread, so the flag read after it is the one that compile set.
    static REGEX_TOO_COMPLEX: Cell<bool> = const { Cell::new(false) };
}

/// The regular expressions of a URL pattern: validated and sized when the pattern is parsed,
/// compiled with the linear-time `regex` crate only when first needed.
///
/// Laziness is what keeps the crate's per-component expressions (kept for group extraction, which
/// a hub never does) from ever being built: a typical pattern then compiles no expression at all.
#[derive(Debug)]
struct LinearRegex {
    pattern: Box<str>,
    case_insensitive: bool,
    cost: usize,
    compiled: OnceLock<Option<Regex>>,
}

impl LinearRegex {
    /// The compiled expression; `None` if it exceeds the compiled-size backstop.
    fn compiled(&self) -> Option<&Regex> {
        self.compiled
            .get_or_init(|| {
                RegexBuilder::new(&self.pattern)
                    .case_insensitive(self.case_insensitive)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .dfa_size_limit(DFA_SIZE_LIMIT)
                    .build()
                    .ok()
            })
            .as_ref()
    }
}

impl RegExp for LinearRegex {
    fn syntax() -> RegexSyntax {
        RegexSyntax::Rust
    }

    fn parse(pattern: &str, flags: &str, _force_eval: bool) -> Result<Self, ()> {
        let case_insensitive = flags.contains('i');
        // The same parser configuration `regex::Regex` uses, so what passes here compiles there.
        let hir = regex_syntax::ParserBuilder::new()
            .case_insensitive(case_insensitive)
            .build()
            .parse(pattern)
            .map_err(|_| ())?;
        let cost = regex_cost(&hir);
        if cost > MAX_REGEX_COST {
            REGEX_TOO_COMPLEX.set(true);
            return Err(());
        }
        Ok(Self {
            pattern: pattern.into(),
            case_insensitive,
            cost,
            compiled: OnceLock::new(),
        })
    }

    /// Only whether it matches: captures would cost a slower engine and group values are never
    /// read (the result is empty on a match, which `test` treats like any match).
    fn matches<'a>(&self, text: &'a str) -> Option<Vec<Option<&'a str>>> {
        // An expression over the backstop counts as not matching, as the specification asks of an
        // evaluation that hits a limit; compiling refuses such patterns, so this is not reached.
        self.compiled()?.is_match(text).then(Vec::new)
    }

    fn pattern_string(&self) -> &str {
        &self.pattern
    }
}

/// An upper estimate of the size of the automaton `hir` compiles to, in units of about one NFA
/// state, computed without compiling it.
///
/// A Unicode class costs the UTF-8 byte ranges it becomes (so `\w`, with hundreds of ranges, is
/// expensive and `[^/]`, three ranges spanning all of Unicode, is not), and a counted repetition
/// multiplies: the automaton holds one copy of its body per count (`x{n,m}` costs `m` copies,
/// `x{n,}` `n + 1`). Saturating, so an absurd pattern costs `usize::MAX` instead of overflowing.
fn regex_cost(hir: &Hir) -> usize {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => 1,
        HirKind::Literal(literal) => literal.0.len(),
        HirKind::Class(Class::Unicode(class)) => class
            .ranges()
            .iter()
            .flat_map(|r| regex_syntax::utf8::Utf8Sequences::new(r.start(), r.end()))
            .map(|seq| seq.len())
            .sum(),
        HirKind::Class(Class::Bytes(class)) => class.ranges().len(),
        HirKind::Repetition(rep) => {
            let copies = match rep.max {
                Some(max) => max.max(1),
                None => rep.min.saturating_add(1),
            };
            regex_cost(&rep.sub).saturating_mul(copies as usize)
        }
        HirKind::Capture(capture) => regex_cost(&capture.sub).saturating_add(1),
        HirKind::Concat(subs) | HirKind::Alternation(subs) => {
            subs.iter().map(regex_cost).fold(1, usize::saturating_add)
        }
    }
}

#[cfg(test)]
mod tests {
    use ::urlpattern::UrlPatternMatchInput;

    use super::*;

    const HUB: &str = "https://hub.example.com/.well-known/mercure";

    fn compile(pattern: &str, base: Option<&str>) -> UrlPatternMatcher {
        UrlPatternMatcher::compile(pattern, base, &UrlPatternLimits::default())
            .unwrap_or_else(|e| panic!("{pattern:?}: {e}"))
    }

    #[test]
    fn unbalanced_ipv6_brackets_are_refused_not_panicking() {
        // Found by fuzzing: `]` before any `[` in the host makes the `urlpattern` crate decrement
        // an unsigned bracket depth below zero. Its wrapping arithmetic is what the standard's
        // signed counter does, so only overflow checks turn it into a panic; the workspace
        // profile switches them off for that crate (see Cargo.toml).
        for pattern in [
            "https://]",
            "https://e]x.example.com:443/a",
            "https://]]:8080/a",
            "https://]x[/a",
        ] {
            assert!(
                UrlPatternMatcher::compile(pattern, Some(HUB), &UrlPatternLimits::default())
                    .is_err(),
                "{pattern:?}"
            );
        }
        // A balanced IPv6 host (its colons escaped, as the standard requires) still works.
        assert!(compile(r"https://[\:\:1]\:8443/a/:id", None).is_match("https://[::1]:8443/a/1"));
    }

    fn refused(pattern: &str) -> UrlPatternError {
        match UrlPatternMatcher::compile(pattern, Some(HUB), &UrlPatternLimits::default()) {
            Ok(_) => panic!("{pattern:?} should be refused"),
            Err(e) => e,
        }
    }

    #[test]
    fn named_groups_match_one_segment() {
        let m = compile("https://example.net/foo/:id", None);
        assert!(m.is_match("https://example.net/foo/1"));
        assert!(m.is_match("https://example.net/foo/abc-def"));
        assert!(!m.is_match("https://example.net/foo/1/2"));
        assert!(!m.is_match("https://example.net/foo/"));
        assert!(!m.is_match("https://example.net/bar/1"));
        assert!(!m.is_match("https://example.com/foo/1"));
        assert!(!m.is_match("http://example.net/foo/1"));
        // Components the pattern leaves out are wildcards.
        assert!(m.is_match("https://example.net/foo/1?page=2#top"));
        assert!(m.is_match("https://user:pw@example.net/foo/1"));
        // The spec's own example.
        let m = compile("https://example.com/books/:id", Some(HUB));
        assert!(m.is_match("https://example.com/books/1"));
        assert!(!m.is_match("https://example.com/books"));
        assert!(!m.is_match("https://example.com/users/42/books/1"));
    }

    #[test]
    fn wildcards_and_modifiers() {
        let m = compile("https://example.com/users/42/*", None);
        assert!(m.is_match("https://example.com/users/42/books/1"));
        assert!(m.is_match("https://example.com/users/42/"));
        assert!(!m.is_match("https://example.com/users/43/books/1"));
        let m = compile("https://*.example.com/*", None);
        assert!(m.is_match("https://a.example.com/x"));
        assert!(!m.is_match("https://example.org/x"));
        let m = compile("https://example.com/books/:id/:chapter?", None);
        assert!(m.is_match("https://example.com/books/1"));
        assert!(m.is_match("https://example.com/books/1/2"));
        assert!(!m.is_match("https://example.com/books/1/2/3"));
        let m = compile("https://example.com/:path+", None);
        assert!(m.is_match("https://example.com/a/b/c"));
        assert!(!m.is_match("https://example.com/"));
        let m = compile("https://example.com/books{/:id}?", None);
        assert!(m.is_match("https://example.com/books"));
        assert!(m.is_match("https://example.com/books/7"));
        let m = compile("https://example.com/books/:id(\\d+)", None);
        assert!(m.is_match("https://example.com/books/12"));
        assert!(!m.is_match("https://example.com/books/abc"));
        let m = compile("https://example.com/search?q=:term", None);
        assert!(m.is_match("https://example.com/search?q=rust"));
        assert!(!m.is_match("https://example.com/search?lang=fr"));
        assert!(!m.is_match("https://example.com/search"));
    }

    #[test]
    fn relative_patterns_and_topics_resolve_against_the_base() {
        let events = "/.well-known/mercure/subscriptions/exact/:topic/:subscriber";
        let m = compile(events, Some(HUB));
        assert_eq!(m.base(), HUB);
        let topic = "/.well-known/mercure/subscriptions/exact/https%3A%2F%2Fexample.com%2Ffoo/urn%3Auuid%3A1";
        assert!(m.is_match(topic));
        // The same resource, written absolutely on the hub's host.
        assert!(m.is_match(&format!("https://hub.example.com{topic}")));
        // ... but not on another host.
        assert!(!m.is_match(&format!("https://other.example.com{topic}")));
        // A path without a leading slash resolves relative to the hub URL's directory.
        let m = compile("books/:id", Some(HUB));
        assert!(m.is_match("books/1"));
        assert!(m.is_match("/.well-known/books/1"));
        assert!(!m.is_match("/books/1"));
        // An absolute pattern matches a relative topic that resolves to it.
        let m = compile("https://hub.example.com/books/:id", Some(HUB));
        assert!(m.is_match("/books/1"));
    }

    #[test]
    fn without_a_base_the_fallback_keeps_relative_matching_working() {
        let m = compile("/.well-known/mercure/subscriptions/:type/:topic/:id", None);
        assert_eq!(m.base(), FALLBACK_BASE_URL);
        assert!(m.is_match("/.well-known/mercure/subscriptions/exact/a/b"));
        assert!(!m.is_match("https://example.com/.well-known/mercure/subscriptions/exact/a/b"));
        let m = compile("https://example.com/books/:id", None);
        assert!(m.is_match("https://example.com/books/1"));
        assert!(!m.is_match("/books/1"));
    }

    #[test]
    fn topics_that_are_not_urls_never_match() {
        let m = compile("https://*/*", Some(HUB));
        for topic in [
            "https://exa mple.com/x",
            "http://[::1",
            "https://",
            "http://example.com:99999/",
        ] {
            assert!(!m.is_match(topic), "{topic:?}");
        }
        // A bare word is a relative reference: it resolves to a URL on the hub's host.
        assert!(m.is_match("bar"));
        assert!(!compile("https://example.com/*", Some(HUB)).is_match("bar"));
    }

    #[test]
    fn url_normalization_applies_to_topics_and_patterns() {
        let m = compile("https://example.net/foo/:id", None);
        // Host case, default port and dot segments are canonicalized by URL parsing.
        assert!(m.is_match("https://EXAMPLE.net:443/bar/../foo/1"));
        // The path stays case-sensitive: `ignoreCase` is never enabled.
        assert!(!m.is_match("https://example.net/FOO/1"));
        // The pattern's host is canonicalized too.
        assert!(compile("https://EXAMPLE.net/x", None).is_match("https://example.net/x"));
        // IDNA hosts and non-ASCII paths compare in their encoded forms, both ways.
        let m = compile("https://exämple.com/é", None);
        assert!(m.is_match("https://xn--exmple-cua.com/%C3%A9"));
        assert!(m.is_match("https://EXÄMPLE.com/é"));
        // Percent-encoded unreserved characters are not decoded.
        assert!(!compile("https://example.com/foo", None).is_match("https://example.com/f%6Fo"));
    }

    #[test]
    fn agrees_with_the_crates_own_test() {
        let patterns = [
            "https://example.net/foo/:id",
            "https://example.com/users/42/*",
            "https://*.example.com:8080/a/:b?/c",
            "https://example.com/books/:id(\\d+)/:rest*",
            "/.well-known/mercure/subscriptions/:type/:topic/:sub",
            "https://example.com/search?q=:term#:frag",
            "http://:user@example.com/x",
            "urn\\:*",
            "books/:id",
        ];
        let topics = [
            "https://example.net/foo/1",
            "https://example.net/foo/1/2",
            "https://example.com/users/42/x",
            "https://a.example.com:8080/a/c",
            "https://a.example.com:8080/a/b/c",
            "https://a.example.com/a/b/c",
            "https://example.com/books/12/x/y",
            "https://example.com/books/ab",
            "/.well-known/mercure/subscriptions/exact/t/s",
            "https://example.com/search?q=x#y",
            "http://bob@example.com/x",
            "urn:uuid:1",
            "books/1",
            "bar",
            "https://exa mple.com/",
        ];
        for pattern in patterns {
            let m = compile(pattern, Some(HUB));
            for topic in topics {
                let want = Url::options()
                    .base_url(Some(&m.base))
                    .parse(topic)
                    .ok()
                    .map(|url| {
                        m.pattern
                            .test(UrlPatternMatchInput::Url(url))
                            .unwrap_or_else(|e| panic!("{e}"))
                    })
                    .unwrap_or(false);
                assert_eq!(m.is_match(topic), want, "{pattern:?} vs {topic:?}");
            }
        }
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for pattern in [
            "https://example.com/:",
            "https://example.com/(",
            "https://example.com/(?=a)",
            "https://example.com/:id/:id",
            "http://[",
            "::",
        ] {
            assert!(
                matches!(refused(pattern), UrlPatternError::Invalid(_)),
                "{pattern:?}"
            );
        }
        // Valid to the standard, but not to a linear-time engine.
        assert_eq!(
            refused("https://example.com/(a)(\\1)"),
            UrlPatternError::InvalidRegex
        );
        assert_eq!(
            refused("https://example.com/((?<=a)b)"),
            UrlPatternError::InvalidRegex
        );
    }

    #[test]
    fn length_and_group_limits() {
        let limits = UrlPatternLimits::default();
        let head = "https://example.com/";
        let ok = format!("{head}{}", "x".repeat(2048 - head.len()));
        assert!(UrlPatternMatcher::compile(&ok, None, &limits).is_ok());
        let long = format!("{ok}x");
        assert_eq!(
            UrlPatternMatcher::compile(&long, None, &limits).err(),
            Some(UrlPatternError::TooLong { max: 2048 })
        );
        let tight = UrlPatternLimits {
            max_len: 16,
            ..limits.clone()
        };
        assert_eq!(
            UrlPatternMatcher::compile("https://example.com/", None, &tight).err(),
            Some(UrlPatternError::TooLong { max: 16 })
        );

        // Four `*` groups come with any absolute pattern (username, password, search, hash), so 28
        // named segments reach the default 32 and 29 exceed it.
        let segments = |n: usize| {
            let path: String = (0..n).map(|i| format!("/:s{i}")).collect();
            format!("https://example.com{path}")
        };
        let m = UrlPatternMatcher::compile(&segments(28), None, &limits)
            .unwrap_or_else(|e| panic!("{e}"));
        let topic: String = (0..28).map(|i| format!("/{i}")).collect();
        assert!(m.is_match(&format!("https://example.com{topic}")));
        assert_eq!(
            UrlPatternMatcher::compile(&segments(29), None, &limits).err(),
            Some(UrlPatternError::TooManyGroups { max: 32 })
        );
        // Thousands of groups are refused before the crate parses them.
        for many in [
            format!("https://example.com/{}", "*".repeat(2000)),
            format!("https://{}example.com/", "*.".repeat(900)),
            format!("https://example.com/{}", "([^/]+?)".repeat(250)),
        ] {
            assert_eq!(
                UrlPatternMatcher::compile(&many, None, &limits).err(),
                Some(UrlPatternError::TooManyGroups { max: 32 })
            );
        }
        assert_eq!(
            group_openers("https://example.com:8080/a/:b/*/(c)\\*\\:d"),
            3
        );
        assert_eq!(group_openers("urn:uuid::id"), 3);
    }

    #[test]
    fn expensive_regular_expressions_are_refused_before_compiling() {
        for pattern in [
            "https://example.com/(\\w{100}){10}",
            "https://example.com/((?:a{1000}){1000})",
            "https://example.com/(\\p{L}{64})",
            "https://example.com/(.{5000})",
        ] {
            let started = std::time::Instant::now();
            assert_eq!(refused(pattern), UrlPatternError::TooComplex, "{pattern:?}");
            // Refused from the syntax tree alone: far quicker than compiling would be (generous
            // bound; this is a sanity check on the design, not a timing test).
            assert!(started.elapsed() < std::time::Duration::from_secs(1));
        }
        // Ordinary expressions are fine.
        for pattern in [
            "https://example.com/:id(\\d+)",
            "https://example.com/:slug(\\w+)",
            "https://example.com/:code([A-Z]{3})",
            "https://example.com/(.{200})",
        ] {
            compile(pattern, None);
        }
    }

    #[test]
    fn expressions_within_the_cost_bound_compile_under_the_size_backstop() {
        // The costliest shapes that still pass: each must build under REGEX_SIZE_LIMIT, or the
        // estimate would let through patterns that then fail to compile.
        let worst = [
            "\\w{2}",
            "\\p{L}{2}",
            "[^/]{290}",
            ".{290}",
            "(?:\\w|\\p{Greek})+",
            "(?i)[a-z\\d]{30}",
        ];
        for body in worst {
            let re = format!("^(?:{body})$");
            let hir = regex_syntax::Parser::new()
                .parse(&re)
                .unwrap_or_else(|e| panic!("{e}"));
            let cost = regex_cost(&hir);
            assert!(cost <= MAX_REGEX_COST, "{body}: cost {cost}");
            let parsed = <LinearRegex as RegExp>::parse(&re, "u", false)
                .unwrap_or_else(|()| panic!("{body}"));
            assert!(parsed.compiled().is_some(), "{body}: cost {cost}");
        }
    }

    #[test]
    fn simple_patterns_compile_no_regular_expression() {
        // Literal and single-group components use plain string matchers; the crate's per-component
        // expressions are never built.
        let m = compile("https://example.net/foo/:id", None);
        for c in components(&m.pattern) {
            assert!(
                !matches!(c.matcher.inner, InnerMatcher::RegExp { .. }),
                "{:?}",
                c.pattern_string
            );
            if let Ok(r) = &c.regexp {
                assert!(r.compiled.get().is_none(), "{:?}", c.pattern_string);
            }
        }
        assert!(m.approx_memory() < 16 * 1024);
        // A component with several groups needs one, built at compile time.
        let m = compile("https://example.net/:a/:b", None);
        match &m.pattern.pathname.matcher.inner {
            InnerMatcher::RegExp { regexp: Ok(r) } => assert!(r.compiled.get().is_some()),
            other => panic!("{other:?}"),
        }
        assert!(m.approx_memory() > 16 * 1024);
    }

    #[test]
    fn bad_base_urls_are_refused() {
        for base in ["", "not a url", "/relative", "mailto:a@example.com"] {
            assert!(
                matches!(
                    UrlPatternMatcher::compile("/x", Some(base), &UrlPatternLimits::default()),
                    Err(UrlPatternError::InvalidBase(_))
                ),
                "{base:?}"
            );
        }
    }
}
