//! The in-process limiter of a single node (the memory transport): no round trip, bounded memory.
//!
//! # Rates
//! A GCRA table (key → theoretical arrival time, microseconds on Tokio's clock) split into
//! `SHARDS` shards, each an `IndexMap` behind its own lock, so concurrent publishes rarely meet
//! and an entry can be sampled by index in O(1). An entry whose time has passed is as good as
//! absent (see [`gcra`]), so idle entries are dropped as the table is used: every
//! new key looks at `SWEEP_PROBES` random entries of its shard and drops those that went idle.
//! A full shard first drops idle entries among `EVICTION_SAMPLE` random ones; if none is idle it
//! evicts the sampled entry nearest to idle (giving that key a fresh burst early) and counts it
//! ([`LimiterStats::rate_evictions`](super::LimiterStats::rate_evictions)), so the table never
//! grows past its cap whatever the number of keys a client spreads its requests over.
//!
//! # Connections
//! A map key → (connections, matchers) behind one lock, holding only keys with connections
//! (an entry goes when its last connection does), so it is bounded by the node's connections.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use indexmap::IndexMap;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::{
    gcra, Admission, CapExceeded, ConnectionCap, ConnectionSlot, Limiter, LimiterStats, Rate,
    RateDecision, SlotOwner,
};
use crate::TransportError;

/// Default cap on the rate table's entries (about 100 bytes each).
pub const DEFAULT_RATE_ENTRIES: usize = 100_000;

/// Shards of the rate table.
const SHARDS: usize = 16;

/// Entries a new key inspects (and drops when idle), keeping the table near its live size.
const SWEEP_PROBES: usize = 2;

/// Entries a full shard samples to choose what to evict.
const EVICTION_SAMPLE: usize = 8;

type Shard = IndexMap<Box<str>, u64>;

/// The limiter of one process (see the module docs).
pub struct MemoryLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    /// Tokio's clock (paused in tests): the zero of the table's microseconds.
    epoch: Instant,
    shards: Box<[Mutex<Shard>]>,
    cap_per_shard: usize,
    entries: AtomicU64,
    evictions: AtomicU64,
    /// key → (connections, matchers).
    connections: Mutex<HashMap<Box<str>, (u64, u64)>>,
}

impl std::fmt::Debug for MemoryLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryLimiter")
            .field("cap", &(self.inner.cap_per_shard * SHARDS))
            .finish_non_exhaustive()
    }
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        Self::new(DEFAULT_RATE_ENTRIES)
    }
}

impl MemoryLimiter {
    /// A limiter whose rate table holds at most about `max_rate_entries` keys (at least one per
    /// shard).
    pub fn new(max_rate_entries: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                epoch: Instant::now(),
                shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
                cap_per_shard: max_rate_entries.div_ceil(SHARDS).max(1),
                entries: AtomicU64::new(0),
                evictions: AtomicU64::new(0),
                connections: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn now_micros(&self) -> u64 {
        u64::try_from(self.inner.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn shard_of(&self, key: &str) -> &Mutex<Shard> {
        use std::hash::Hasher;
        // Fixed keys: the shard only spreads lock contention, it is no defence (the cap is).
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        hasher.write(key.as_bytes());
        &self.inner.shards[(hasher.finish() as usize) % SHARDS]
    }

    /// The rate decision for `key` at `now` (microseconds since the limiter's epoch).
    fn check(&self, key: &str, rate: Rate, now: u64) -> RateDecision {
        let mut shard = self.shard_of(key).lock();
        if let Some(tat) = shard.get_mut(key) {
            return match gcra(now, Some(*tat), rate) {
                Ok(next) => {
                    *tat = next;
                    RateDecision::Allowed
                }
                Err(retry_after) => RateDecision::Limited { retry_after },
            };
        }
        // A new key (or one that was dropped when idle, which is the same).
        let next = match gcra(now, None, rate) {
            Ok(next) => next,
            Err(retry_after) => return RateDecision::Limited { retry_after },
        };
        let mut removed = sweep(&mut shard, now, SWEEP_PROBES);
        if shard.len() >= self.inner.cap_per_shard {
            removed += make_room(&mut shard, now, &self.inner.evictions);
        }
        shard.insert(key.into(), next);
        drop(shard);
        self.inner.entries.fetch_add(1, Ordering::Relaxed);
        if removed > 0 {
            self.inner.entries.fetch_sub(removed, Ordering::Relaxed);
        }
        RateDecision::Allowed
    }
}

/// Drops the idle ones among `probes` random entries; how many went.
fn sweep(shard: &mut Shard, now: u64, probes: usize) -> u64 {
    let mut removed = 0;
    for _ in 0..probes {
        if shard.is_empty() {
            break;
        }
        let index = fastrand::usize(..shard.len());
        if shard.get_index(index).is_some_and(|(_, tat)| *tat <= now) {
            shard.swap_remove_index(index);
            removed += 1;
        }
    }
    removed
}

/// Frees one place in a full shard: an idle entry among a sample if there is one, else the sampled
/// entry nearest to idle (counted as an eviction). Returns how many entries went.
fn make_room(shard: &mut Shard, now: u64, evictions: &AtomicU64) -> u64 {
    let removed = sweep(shard, now, EVICTION_SAMPLE);
    if removed > 0 {
        return removed;
    }
    let nearest = (0..EVICTION_SAMPLE.min(shard.len()))
        .map(|_| fastrand::usize(..shard.len()))
        .min_by_key(|&i| shard.get_index(i).map_or(u64::MAX, |(_, tat)| *tat));
    match nearest {
        Some(index) => {
            shard.swap_remove_index(index);
            evictions.fetch_add(1, Ordering::Relaxed);
            1
        }
        None => 0,
    }
}

impl SlotOwner for Inner {
    fn release(&self, key: &str, matchers: u32) {
        let mut connections = self.connections.lock();
        if let Some((conns, held)) = connections.get_mut(key) {
            *conns = conns.saturating_sub(1);
            *held = held.saturating_sub(u64::from(matchers));
            if *conns == 0 {
                connections.remove(key);
            }
        }
    }
}

#[async_trait]
impl Limiter for MemoryLimiter {
    async fn check_rate(&self, key: &str, rate: Rate) -> Result<RateDecision, TransportError> {
        Ok(self.check(key, rate, self.now_micros()))
    }

    async fn acquire(
        &self,
        key: &str,
        matchers: u32,
        cap: ConnectionCap,
    ) -> Result<Admission, TransportError> {
        {
            let mut connections = self.inner.connections.lock();
            let (conns, held) = connections.get(key).copied().unwrap_or((0, 0));
            if cap
                .max_connections
                .is_some_and(|max| conns + 1 > u64::from(max))
            {
                return Ok(Admission::Refused(CapExceeded::Connections));
            }
            if cap
                .max_matchers
                .is_some_and(|max| held + u64::from(matchers) > u64::from(max))
            {
                return Ok(Admission::Refused(CapExceeded::Matchers));
            }
            let entry = connections.entry(key.into()).or_insert((0, 0));
            entry.0 += 1;
            entry.1 += u64::from(matchers);
        }
        let owner: Arc<dyn SlotOwner> = self.inner.clone();
        Ok(Admission::Admitted(ConnectionSlot::new(
            owner, key, matchers,
        )))
    }

    async fn close(&self) {}

    fn stats(&self) -> LimiterStats {
        let (connection_keys, connections) = {
            let map = self.inner.connections.lock();
            (map.len() as u64, map.values().map(|(c, _)| *c).sum())
        };
        LimiterStats {
            rate_entries: self.inner.entries.load(Ordering::Relaxed),
            rate_evictions: self.inner.evictions.load(Ordering::Relaxed),
            connection_keys,
            connections,
            ..LimiterStats::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn rate(per_second: u64, burst: u32) -> Rate {
        Rate {
            interval: Duration::from_micros(1_000_000 / per_second),
            burst,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_sustained_rate() {
        let limiter = MemoryLimiter::default();
        let r = rate(10, 5);
        for _ in 0..5 {
            assert_eq!(
                limiter.check_rate("k", r).await.unwrap(),
                RateDecision::Allowed
            );
        }
        let RateDecision::Limited { retry_after } = limiter.check_rate("k", r).await.unwrap()
        else {
            panic!("the sixth event of a burst of five is refused");
        };
        assert!(retry_after <= Duration::from_millis(100));
        // Another key has its own burst.
        assert_eq!(
            limiter.check_rate("other", r).await.unwrap(),
            RateDecision::Allowed
        );
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(
            limiter.check_rate("k", r).await.unwrap(),
            RateDecision::Allowed
        );
        assert!(matches!(
            limiter.check_rate("k", r).await.unwrap(),
            RateDecision::Limited { .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_stays_under_its_cap_and_counts_evictions() {
        let cap = 64;
        let limiter = MemoryLimiter::new(cap);
        // A slow rate: no entry goes idle during the flood, so the cap must evict.
        let r = rate(1, 1);
        for i in 0..10_000 {
            limiter.check_rate(&format!("key-{i}"), r).await.unwrap();
        }
        let stats = limiter.stats();
        assert!(stats.rate_entries as usize <= cap.div_ceil(SHARDS) * SHARDS);
        let held: usize = limiter.inner.shards.iter().map(|s| s.lock().len()).sum();
        assert_eq!(held as u64, stats.rate_entries);
        assert!(stats.rate_evictions > 0);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_entries_are_swept_without_evictions() {
        let limiter = MemoryLimiter::new(64);
        let r = rate(1000, 1);
        for i in 0..10_000 {
            limiter.check_rate(&format!("key-{i}"), r).await.unwrap();
            // Each entry is idle a millisecond after its event.
            tokio::time::advance(Duration::from_millis(2)).await;
        }
        let stats = limiter.stats();
        assert_eq!(stats.rate_evictions, 0);
        assert!(stats.rate_entries <= 64);
    }

    #[tokio::test]
    async fn connections_are_capped_and_given_back() {
        let limiter = MemoryLimiter::default();
        let cap = ConnectionCap {
            max_connections: Some(2),
            max_matchers: Some(5),
        };
        let Admission::Admitted(a) = limiter.acquire("s", 2, cap).await.unwrap() else {
            panic!("first connection admitted");
        };
        let Admission::Admitted(b) = limiter.acquire("s", 2, cap).await.unwrap() else {
            panic!("second connection admitted");
        };
        assert!(matches!(
            limiter.acquire("s", 1, cap).await.unwrap(),
            Admission::Refused(CapExceeded::Connections)
        ));
        drop(a);
        assert!(matches!(
            limiter.acquire("s", 4, cap).await.unwrap(),
            Admission::Refused(CapExceeded::Matchers)
        ));
        let Admission::Admitted(c) = limiter.acquire("s", 3, cap).await.unwrap() else {
            panic!("fits again once one closed");
        };
        assert_eq!(limiter.stats().connections, 2);
        drop((b, c));
        let stats = limiter.stats();
        assert_eq!((stats.connections, stats.connection_keys), (0, 0));
    }
}
