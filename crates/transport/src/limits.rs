//! The counters behind the hub's rate limits and connection caps, shared by the whole cluster.
//!
//! The server decides *which* rule applies to a request and *what* it is counted by (a key it
//! builds from the rule and the client's subject or address); a [`Limiter`] only counts:
//! - [`Limiter::check_rate`]: one event (a publish) against a [`Rate`], with the generic cell rate
//!   algorithm (GCRA, see [`gcra`]): per key, one timestamp (the "theoretical arrival time") is
//!   all the state, so a key costs a few bytes and vanishes once idle.
//! - [`Limiter::acquire`]: one more connection holding `matchers` topic matchers against a
//!   [`ConnectionCap`]; the returned [`ConnectionSlot`] gives them back when dropped.
//!
//! # Implementations
//! - [`MemoryLimiter`]: one process (the memory transport). A bounded, sharded GCRA table (idle
//!   entries are swept as new ones arrive; at its cap the entry nearest to idle is evicted, and
//!   counted) and a map of connection counts. No I/O.
//! - [`RedisLimiter`] (from [`RedisTransport::limiter`](crate::RedisTransport::limiter)): rates in
//!   one Redis key per key with an expiry (one `EVALSHA` per check, Redis' clock), connections in a
//!   hash per node under a node lease, summed over live nodes by a script; see [`redis`].
//!
//! A limiter never learns who a client is: keys are opaque strings the server builds from rule
//! names and digests, so nothing a client sends becomes a key's shape or length.

pub mod memory;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::TransportError;

pub use memory::MemoryLimiter;
pub use redis::RedisLimiter;

/// A sustained rate with a burst: on average one event every `interval`, and up to `burst` at
/// once after a quiet spell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Time between two events at the sustained rate (at least a microsecond).
    pub interval: Duration,
    /// Events allowed at once (at least 1).
    pub burst: u32,
}

impl Rate {
    /// The interval in whole microseconds, at least 1.
    pub fn interval_micros(&self) -> u64 {
        u64::try_from(self.interval.as_micros())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// The burst, at least 1.
    pub fn burst(&self) -> u64 {
        u64::from(self.burst.max(1))
    }
}

/// The answer of [`Limiter::check_rate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateDecision {
    /// The event is counted.
    Allowed,
    /// Over the rate: nothing was counted; the same event would be allowed after `retry_after`.
    Limited {
        /// How long until one more event fits.
        retry_after: Duration,
    },
}

/// One step of the generic cell rate algorithm, in microseconds on any monotonic clock.
///
/// `tat` is the key's theoretical arrival time (`None`, or anything in the past, for an idle key).
/// Returns the new `tat` to store when the event is allowed, or how long to wait. An idle key
/// allows `burst` events at once; each event pushes `tat` one interval further, and an event is
/// refused while `tat` would run more than `burst` intervals ahead of `now`. The key may be
/// forgotten once `now` reaches the stored `tat`: it is then as good as idle.
pub fn gcra(now: u64, tat: Option<u64>, rate: Rate) -> Result<u64, Duration> {
    let interval = rate.interval_micros();
    let tat = tat.unwrap_or(now).max(now);
    let next = tat.saturating_add(interval);
    let allowed_from = next.saturating_sub(interval.saturating_mul(rate.burst()));
    if allowed_from > now {
        Err(Duration::from_micros(allowed_from - now))
    } else {
        Ok(next)
    }
}

/// The caps of one connection's key; `None`: no cap on that count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionCap {
    /// Connections the key may hold at once, cluster-wide.
    pub max_connections: Option<u32>,
    /// Topic matchers (selectors) the key's connections may hold together, cluster-wide.
    pub max_matchers: Option<u32>,
}

/// Which cap refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapExceeded {
    /// [`ConnectionCap::max_connections`].
    Connections,
    /// [`ConnectionCap::max_matchers`].
    Matchers,
}

impl CapExceeded {
    /// A short name for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            CapExceeded::Connections => "connections",
            CapExceeded::Matchers => "matchers",
        }
    }
}

/// The answer of [`Limiter::acquire`].
#[derive(Debug)]
pub enum Admission {
    /// Counted; the connection holds its share until the slot is dropped.
    Admitted(ConnectionSlot),
    /// Over a cap: nothing was counted.
    Refused(CapExceeded),
}

/// What gives a connection's share back (implemented by each limiter).
pub(crate) trait SlotOwner: Send + Sync + 'static {
    /// Gives back one connection and its `matchers`, counted under `key`.
    fn release(&self, key: &str, matchers: u32);
}

/// One connection's share of its key's caps, given back when dropped (the connection closed, on
/// any path: end of stream, error, shutdown).
pub struct ConnectionSlot {
    owner: Arc<dyn SlotOwner>,
    key: Box<str>,
    matchers: u32,
}

impl std::fmt::Debug for ConnectionSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionSlot")
            .field("key", &self.key)
            .field("matchers", &self.matchers)
            .finish_non_exhaustive()
    }
}

impl ConnectionSlot {
    pub(crate) fn new(owner: Arc<dyn SlotOwner>, key: &str, matchers: u32) -> Self {
        Self {
            owner,
            key: key.into(),
            matchers,
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.owner.release(&self.key, self.matchers);
    }
}

/// Counters of a limiter, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LimiterStats {
    /// Rate keys held in this process (the memory limiter's table; 0 for Redis, whose keys
    /// expire there).
    pub rate_entries: u64,
    /// Rate entries evicted before they were idle because the table was full: each gave its key a
    /// fresh burst.
    pub rate_evictions: u64,
    /// Keys with connections counted on this node.
    pub connection_keys: u64,
    /// Connections counted on this node.
    pub connections: u64,
    /// Times this node found its lease gone and wrote its connection counts again.
    pub reregistrations: u64,
    /// Failed calls to the backing store (checks, releases, renewals).
    pub errors: u64,
    /// Rate checks refused by the node itself, without a round trip, because the backing store
    /// had refused the key and its wait was not over.
    pub local_refusals: u64,
}

/// Counts events against rates and connections against caps (see the module docs).
#[async_trait]
pub trait Limiter: Send + Sync + 'static {
    /// Counts one event under `key` if `rate` allows it. `Err` when the backing store cannot be
    /// reached (the caller decides whether that allows the event).
    async fn check_rate(&self, key: &str, rate: Rate) -> Result<RateDecision, TransportError>;

    /// Counts one more connection holding `matchers` matchers under `key` if `cap` allows it,
    /// cluster-wide. `Err` when the backing store cannot be reached.
    async fn acquire(
        &self,
        key: &str,
        matchers: u32,
        cap: ConnectionCap,
    ) -> Result<Admission, TransportError>;

    /// Graceful goodbye: this node's connections stop counting at once (not after a lease).
    async fn close(&self);

    /// Counters for metrics.
    fn stats(&self) -> LimiterStats;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_second: u64, burst: u32) -> Rate {
        Rate {
            interval: Duration::from_micros(1_000_000 / per_second),
            burst,
        }
    }

    #[test]
    fn an_idle_key_allows_its_burst_then_refuses() {
        let r = rate(10, 3);
        let now = 5_000_000;
        let mut tat = None;
        for _ in 0..3 {
            tat = Some(gcra(now, tat, r).expect("within the burst"));
        }
        let wait = gcra(now, tat, r).expect_err("over the burst");
        assert_eq!(wait, Duration::from_millis(100));
    }

    #[test]
    fn the_rate_refills_one_interval_at_a_time() {
        let r = rate(10, 2);
        let mut now = 1_000_000;
        let mut tat = Some(gcra(now, None, r).unwrap());
        tat = Some(gcra(now, tat, r).unwrap());
        assert!(gcra(now, tat, r).is_err());
        now += 100_000;
        tat = Some(gcra(now, tat, r).expect("one interval later, one more"));
        assert!(gcra(now, tat, r).is_err());
        // A long pause refills the whole burst, never more.
        now += 10_000_000;
        tat = Some(gcra(now, tat, r).unwrap());
        tat = Some(gcra(now, tat, r).unwrap());
        assert!(gcra(now, tat, r).is_err());
    }

    #[test]
    fn a_stored_time_in_the_past_counts_as_idle() {
        let r = rate(1, 1);
        assert_eq!(gcra(10_000_000, Some(3), r), Ok(11_000_000));
    }

    #[test]
    fn extreme_rates_do_not_overflow() {
        let r = Rate {
            interval: Duration::MAX,
            burst: u32::MAX,
        };
        let tat = gcra(u64::MAX - 1, None, r).expect("one event always fits an idle key");
        assert_eq!(tat, u64::MAX);
        let zero = Rate {
            interval: Duration::ZERO,
            burst: 0,
        };
        assert!(gcra(7, None, zero).is_ok());
    }
}
