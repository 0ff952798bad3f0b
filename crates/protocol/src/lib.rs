//! The Mercure protocol as data: what an update is, how a subscriber names the topics it wants, how
//! publish and subscribe requests are parsed, and how an update becomes Server-Sent Events bytes.
//!
//! Nothing here performs I/O or needs a runtime, so every function can be unit-tested, property-tested
//! and fuzzed on its own. The other crates build on these types:
//!
//! # Layout
//! - [`update`]: [`Update`], the unit a publisher sends, and [`Envelope`], an update plus its position
//!   in the transport's order and its SSE frame, encoded once and shared by every subscriber.
//! - [`position`]: [`Position`], where an update sits in the transport's total order.
//! - [`sse`]: turns an update into its `text/event-stream` frame; comments and heartbeats.
//! - [`selector`]: topic selectors and matchers (`*`, exact, URL patterns, RFC 6570 URI templates),
//!   compiled once, the [`SelectorStore`] that caches compilations and match results within fixed
//!   bounds, and [`compile_matcher`] for a grant's `match` / `match_type` pair.
//! - [`url_pattern`]: the `urlpattern` matcher type (WHATWG URL Pattern, resolved against the
//!   hub's URL, matched in linear time within size limits).
//! - [`template`]: the RFC 6570 URI template to matcher compiler behind template selectors.
//! - [`publish`]: parsing and validating a publish form body into an [`Update`].
//! - [`subscribe`]: parsing a subscription query string (selectors, last event id, token).
//! - [`form`]: form-urlencoded decoding that refuses invalid UTF-8.
//! - [`validate`]: the character rules shared by topics, ids and types.

pub mod form;
pub mod position;
pub mod publish;
pub mod selector;
pub mod sse;
pub mod subscribe;
pub mod template;
pub mod update;
pub mod url_pattern;
pub mod validate;

pub use position::Position;
pub use publish::{parse_publish_form, PublishError, PublishLimits};
pub use selector::{compile_matcher, Selector, SelectorError, SelectorKind, SelectorStore};
pub use subscribe::{parse_subscribe_query, SubscribeError, SubscribeLimits, SubscribeQuery};
pub use update::{Envelope, Update};
pub use url_pattern::{UrlPatternError, UrlPatternLimits};

/// The reserved last event id asking for the whole retained history.
pub const EARLIEST: &str = "earliest";
