//! Orders a worker broadcasts to all its subscriber tasks through a `tokio::sync::watch` channel.
//!
//! A watch channel suits this: subscribers only care about the latest state, each holds a cheap
//! receiver, and a change wakes them all. Every field only ever moves forward (an order is set,
//! then replaced by a newer generation; `stop` goes from false to true).

use std::sync::Arc;

use crate::manifest::IndexedManifest;

/// The current orders for subscriber tasks.
#[derive(Clone, Debug, Default)]
pub(crate) struct Directive {
    /// The latest resume order (resume storms).
    pub(crate) resume: Option<Arc<ResumeOrder>>,
    /// Publishing is over: this is everything that was published; report completion.
    pub(crate) finish: Option<Arc<IndexedManifest>>,
    /// End now and hand back the report.
    pub(crate) stop: bool,
}

/// Reconnect (or expect the hub to have gone) and catch up to `targets`.
#[derive(Debug)]
pub(crate) struct ResumeOrder {
    pub(crate) generation: u32,
    /// Drop the connection and reconnect at once (otherwise the connection is expected to break
    /// by itself, e.g. because the hub was killed).
    pub(crate) drop_connections: bool,
    /// When the order was given, Unix micros: catch-up time is counted from here.
    pub(crate) at_us: u64,
    /// Updates settled when the order was given: catching up means having all of them, and
    /// one published after the order.
    pub(crate) targets: IndexedManifest,
}
