//! Fan-out counters and gauges, updated with relaxed atomics on the hot path and read by the
//! server's metrics endpoint.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Counters shared by all shards of a node.
#[derive(Debug, Default)]
pub struct FanoutStats {
    /// Updates handed to subscriber queues (one per subscriber per update).
    pub delivered: AtomicU64,
    /// Of those, written to the subscriber's socket by the shard itself ([`crate::direct`]).
    pub written_directly: AtomicU64,
    /// Shards sending their direct writes through io_uring (`--io-uring`) now.
    pub ring_shards: AtomicI64,
    /// Direct writes sent through a shard's io_uring (also counted in `written_directly` when
    /// they went out).
    pub ring_sends: AtomicU64,
    /// Shards that asked for io_uring and could not have it (or lost it): they write one at a
    /// time.
    pub ring_fallbacks: AtomicU64,
    /// Subscribers cut off because their queue was full.
    pub lagged_disconnects: AtomicU64,
    /// Subscribers cut off because their writer stayed blocked on a full socket for longer than the
    /// dispatch timeout (also counted in `lagged_disconnects`).
    pub stalled_disconnects: AtomicU64,
    /// Subscribers whose stream was ended because updates were lost before this node read them.
    pub gap_disconnects: AtomicU64,
    /// Subscribers whose stream was ended because the token that authenticated it was revoked.
    pub revoked_disconnects: AtomicU64,
    /// Subscribers currently registered.
    pub subscribers: AtomicI64,
    /// Registered matchers by kind: exact, wildcard, template, URL pattern.
    pub matchers_exact: AtomicI64,
    /// See `matchers_exact`.
    pub matchers_wildcard: AtomicI64,
    /// See `matchers_exact`.
    pub matchers_template: AtomicI64,
    /// See `matchers_exact`.
    pub matchers_urlpattern: AtomicI64,
}

impl FanoutStats {
    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
