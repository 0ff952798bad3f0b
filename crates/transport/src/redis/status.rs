//! What the transport knows about its own health: readiness flags and event counters.
//!
//! Readers flip their flag when they connect and when they fail; publishes and a periodic `PING`
//! flip the pool's. Counters are plain atomics read as a [`RedisStats`] snapshot (for metrics and for
//! tests that assert, say, that a history request cost no Redis round trip).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

/// Readiness: the pool reaches Redis and no running reader is failing.
pub(crate) struct Health {
    pool_ok: AtomicBool,
    /// Index = partition: a [`ReaderState`] as `u8`.
    readers: Vec<AtomicU8>,
    started: AtomicBool,
}

/// Where a partition's reader stands, as readiness sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum ReaderState {
    /// Not running (no subscriber of this node needs the partition): not counted.
    Idle = 0,
    /// Running, not connected yet: counted as not ready (a node reading every partition is ready
    /// once all its readers have found their place).
    Connecting = 1,
    /// Running and reading.
    Connected = 2,
    /// Running, failed, reconnecting.
    Failing = 3,
}

impl Health {
    pub(crate) fn new(partitions: u16) -> Self {
        Self {
            pool_ok: AtomicBool::new(false),
            readers: (0..partitions)
                .map(|_| AtomicU8::new(ReaderState::Idle as u8))
                .collect(),
            started: AtomicBool::new(false),
        }
    }

    pub(crate) fn set_pool(&self, ok: bool) {
        self.pool_ok.store(ok, Ordering::Relaxed);
    }

    pub(crate) fn set_reader(&self, partition: u16, state: ReaderState) {
        if let Some(flag) = self.readers.get(usize::from(partition)) {
            flag.store(state as u8, Ordering::Relaxed);
        }
    }

    /// Marks the readers started; `false` if they already were.
    pub(crate) fn start(&self) -> bool {
        !self.started.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn is_ready(&self) -> bool {
        let settled = |r: &AtomicU8| {
            let state = r.load(Ordering::Relaxed);
            state == ReaderState::Idle as u8 || state == ReaderState::Connected as u8
        };
        self.started.load(Ordering::Acquire)
            && self.pool_ok.load(Ordering::Relaxed)
            && self.readers.iter().all(settled)
    }
}

/// Counters of notable events, since the transport was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedisStats {
    /// History requests answered from the tail cache alone (no Redis round trip).
    pub history_cache_hits: u64,
    /// History scans sent to Redis (identical concurrent requests share one).
    pub history_redis_scans: u64,
    /// Commands sent for history requests: scans (`XREVRANGE`), and the look at where the streams
    /// end before an id is called unknown.
    pub history_redis_commands: u64,
    /// History requests that joined a scan in flight whose snapshot the tail cache could no longer
    /// complete, and scanned again alone.
    pub history_rescans: u64,
    /// Times a reader found the stream trimmed past what it had read: updates were lost for this
    /// node (the reader fell further behind than the stream retains).
    pub trimmed_gaps: u64,
    /// Times a reader found the stream without entries it had read (rolled back by a failover).
    pub rollbacks: u64,
    /// Times a reader found its stream recreated and the entries it had read gone (an epoch change
    /// that lost history; a renewed marker on an intact stream is not one).
    pub recreations: u64,
    /// Entries lost before this node read them, as far as they could be counted.
    pub missed_entries: u64,
    /// Second entries of a publish that a client library retried after it had been stored
    /// (recognised by their nonce), skipped.
    pub duplicates_suppressed: u64,
    /// Times a stream's epoch changed (stream recreated, e.g. Redis restarted without persistence).
    pub epoch_changes: u64,
    /// Entries that could not be decoded (unknown format version, corrupt) and were skipped.
    pub skipped_entries: u64,
    /// Reader failures (each followed by a back-off and a reconnect).
    pub reader_errors: u64,
}

/// The live counters behind [`RedisStats`].
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) history_cache_hits: AtomicU64,
    pub(crate) history_redis_scans: AtomicU64,
    pub(crate) history_redis_commands: AtomicU64,
    pub(crate) history_rescans: AtomicU64,
    pub(crate) trimmed_gaps: AtomicU64,
    pub(crate) rollbacks: AtomicU64,
    pub(crate) recreations: AtomicU64,
    pub(crate) missed_entries: AtomicU64,
    pub(crate) duplicates_suppressed: AtomicU64,
    pub(crate) epoch_changes: AtomicU64,
    pub(crate) skipped_entries: AtomicU64,
    pub(crate) reader_errors: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> RedisStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RedisStats {
            history_cache_hits: get(&self.history_cache_hits),
            history_redis_scans: get(&self.history_redis_scans),
            history_redis_commands: get(&self.history_redis_commands),
            history_rescans: get(&self.history_rescans),
            trimmed_gaps: get(&self.trimmed_gaps),
            rollbacks: get(&self.rollbacks),
            recreations: get(&self.recreations),
            missed_entries: get(&self.missed_entries),
            duplicates_suppressed: get(&self.duplicates_suppressed),
            epoch_changes: get(&self.epoch_changes),
            skipped_entries: get(&self.skipped_entries),
            reader_errors: get(&self.reader_errors),
        }
    }
}
