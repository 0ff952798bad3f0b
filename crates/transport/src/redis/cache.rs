//! The history tail cache: the newest entries of one partition's stream, kept in memory by this
//! node's reader so most history requests (above all the resume storm after a node dies) are answered
//! without a Redis round trip.
//!
//! The reader fills it (warm-up from the stream's tail, then every entry it reads, before handing the
//! entry to the fan-out) and is its only writer; history reads take snapshots under a read lock. The
//! cache always holds a contiguous run of the stream ending where the reader is, so "everything after
//! X" is a slice of it as soon as X is in it. Event ids are indexed to a running ordinal, so finding
//! where a subscriber left off is O(1) (a reused id resolves to its earliest retained occurrence, as in
//! the in-memory transport).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use quicksilver_protocol::{Envelope, Position};

use super::history::{before, holds_all_after, Start};

/// The newest entries of one partition (see the module docs).
#[derive(Debug)]
pub(crate) struct TailCache {
    capacity: usize,
    entries: VecDeque<Arc<Envelope>>,
    /// Ordinal of `entries[0]`; every entry pushed gets the next ordinal.
    first_ordinal: u64,
    /// Event id → (ordinal of its earliest cached occurrence, number of cached occurrences).
    ids: HashMap<Arc<str>, (u64, u32)>,
    /// Whether the cache holds every entry the stream retained when it was last filled, and has
    /// evicted nothing since: then nothing older exists in Redis either.
    complete: bool,
    /// The most bytes it holds (see [`approx_bytes`]): large updates evict sooner.
    max_bytes: usize,
    bytes: usize,
}

/// What an entry costs in memory, about: its SSE frame, its data and a little bookkeeping.
pub(crate) fn approx_bytes(entry: &Envelope) -> usize {
    entry.frame.len() + entry.update.data.len() + 256
}

/// A copy of part of the cache, taken under the lock.
#[derive(Debug, Default)]
pub(crate) struct CacheSlice {
    pub(crate) entries: Vec<Arc<Envelope>>,
    /// The newest cached position when the copy was taken (the reader had reached it).
    pub(crate) last: Option<Position>,
    /// Entries that belong after the start may be gone (evicted past the stream's retention):
    /// the reply must then say so (see `history`).
    pub(crate) incomplete: bool,
    /// The run reached the byte budget: what precedes it counts as gone.
    pub(crate) full: bool,
}

impl TailCache {
    /// An empty cache of at most `capacity` entries and `max_bytes` bytes. It is incomplete
    /// until the reader says otherwise: an empty cache before the first warm-up only answers once
    /// the reader has filled it.
    pub(crate) fn new(capacity: usize, max_bytes: usize) -> Self {
        Self {
            capacity,
            entries: VecDeque::new(),
            first_ordinal: 0,
            ids: HashMap::new(),
            complete: false,
            max_bytes,
            bytes: 0,
        }
    }

    /// How many entries it keeps at most.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Replaces the contents with `entries` (oldest first). `complete`: they are everything the
    /// stream holds.
    pub(crate) fn reset(&mut self, entries: Vec<Arc<Envelope>>, complete: bool) {
        self.entries.clear();
        self.ids.clear();
        self.first_ordinal = 0;
        self.bytes = 0;
        self.complete = complete;
        for entry in entries {
            self.push(entry);
        }
    }

    /// Appends the next entry of the stream, evicting the oldest beyond capacity.
    pub(crate) fn push(&mut self, entry: Arc<Envelope>) {
        if self.capacity == 0 {
            self.complete = false;
            return;
        }
        let ordinal = self.first_ordinal + self.entries.len() as u64;
        let id: Arc<str> = entry.update.id.as_str().into();
        self.ids
            .entry(id)
            .and_modify(|(_, count)| *count += 1)
            .or_insert((ordinal, 1));
        self.bytes += approx_bytes(&entry);
        self.entries.push_back(entry);
        while self.entries.len() > self.capacity
            || (self.bytes > self.max_bytes && self.entries.len() > 1)
        {
            self.evict_oldest();
            self.complete = false;
        }
    }

    /// Drops entries older than `min_ms` (history past its maximum age). Redis drops them too, so
    /// the cache stays as complete as it was.
    pub(crate) fn prune_older_than(&mut self, min_ms: u64) {
        while self.entries.front().is_some_and(|e| e.position.ms < min_ms) {
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        let Some(old) = self.entries.pop_front() else {
            return;
        };
        self.bytes = self.bytes.saturating_sub(approx_bytes(&old));
        let evicted = self.first_ordinal;
        self.first_ordinal += 1;
        let id = old.update.id.as_str();
        let Some((ordinal, count)) = self.ids.get_mut(id) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            self.ids.remove(id);
        } else if *ordinal == evicted {
            // A reused id: move the index to its next occurrence.
            if let Some(offset) = self.entries.iter().position(|e| e.update.id == id) {
                *ordinal = self.first_ordinal + offset as u64;
            }
        }
    }

    /// Whether the cache holds all of the partition's retained history (the newest `history_size`
    /// entries, or everything the stream holds).
    pub(crate) fn covers_history(&self, history_size: usize) -> bool {
        self.complete || self.entries.len() >= history_size
    }

    /// Whether every retained entry at or after time `min_ms` that the reader has reached is cached.
    pub(crate) fn covers_from_ms(&self, min_ms: u64, history_size: usize) -> bool {
        self.covers_history(history_size)
            || self.entries.front().is_some_and(|e| e.position.ms < min_ms)
    }

    /// The earliest cached occurrence of `event_id`.
    pub(crate) fn find(&self, event_id: &str) -> Option<&Arc<Envelope>> {
        let (ordinal, _) = self.ids.get(event_id)?;
        let index = usize::try_from(ordinal - self.first_ordinal).ok()?;
        self.entries.get(index)
    }

    /// The entries `start` takes (see `history::Start`), when the cache holds all of them:
    /// `None` when some may only be in Redis. `history_size`: what the stream retains.
    pub(crate) fn select(&self, start: Start, history_size: usize) -> Option<CacheSlice> {
        let covered = self.covers_history(history_size);
        let reaches = match start {
            Start::All => covered,
            // The cache must hold the position itself (or be all there is).
            Start::After(p) => covered || self.first().is_some_and(|f| !f.is_after(&p)),
            Start::SinceMs(ms) => self.covers_from_ms(ms, history_size),
            // The first cached event must follow an earlier update (or be all there is).
            Start::Following(p) => {
                covered
                    || self
                        .entries
                        .front()
                        .and_then(|e| e.follows)
                        .is_some_and(|f| p.is_after(&f))
            }
        };
        if !reaches {
            return None;
        }
        let mut slice = self.slice_from(self.entries.partition_point(before(start)));
        slice.incomplete = !holds_all_after(
            self.entries.front(),
            self.entries.len(),
            history_size,
            start,
        );
        Some(slice)
    }

    /// The cached entries strictly after `position` (of this partition).
    pub(crate) fn after(&self, position: Position) -> CacheSlice {
        let start = self
            .entries
            .partition_point(|e| !e.position.is_after(&position));
        self.slice_from(start)
    }

    /// Every cached entry.
    pub(crate) fn all(&self) -> CacheSlice {
        self.slice_from(0)
    }

    fn slice_from(&self, start: usize) -> CacheSlice {
        CacheSlice {
            entries: self.entries.range(start..).cloned().collect(),
            last: self.last(),
            incomplete: false,
            full: false,
        }
    }

    /// The newest cached position.
    pub(crate) fn last(&self) -> Option<Position> {
        self.entries.back().map(|e| e.position)
    }

    /// The oldest cached position.
    pub(crate) fn first(&self) -> Option<Position> {
        self.entries.front().map(|e| e.position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quicksilver_protocol::Update;

    fn env(id: &str, ms: u64) -> Arc<Envelope> {
        let update = Update {
            id: id.into(),
            topics: vec!["t".into()],
            data: String::new(),
            private: false,
            event_type: None,
            retry: None,
        };
        Arc::new(Envelope::new(Position::new(0, ms, 0), update, 0))
    }

    fn ids(slice: &CacheSlice) -> Vec<&str> {
        slice.entries.iter().map(|e| e.update.id.as_str()).collect()
    }

    #[test]
    fn finds_and_slices_after_an_id() {
        let mut c = TailCache::new(3, usize::MAX);
        for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
            c.push(env(id, i as u64 + 1));
        }
        assert!(c.find("a").is_none());
        let b = c.find("b").unwrap().position;
        assert_eq!(ids(&c.after(b)), vec!["c", "d"]);
        assert_eq!(c.after(b).last, Some(Position::new(0, 4, 0)));
        assert_eq!(
            ids(&c.select(Start::SinceMs(3), 3).unwrap_or_default()),
            vec!["c", "d"]
        );
        assert!(
            !c.covers_history(10),
            "evicted, so older entries may exist in Redis"
        );
        assert!(c.covers_history(3));
        assert!(c.covers_from_ms(3, 10) && !c.covers_from_ms(2, 10));
    }

    #[test]
    fn reused_ids_resolve_to_the_earliest_retained() {
        let mut c = TailCache::new(4, usize::MAX);
        for (i, id) in ["x", "a", "x", "b"].iter().enumerate() {
            c.push(env(id, i as u64 + 1));
        }
        assert_eq!(
            ids(&c.after(c.find("x").unwrap().position)),
            vec!["a", "x", "b"]
        );
        c.push(env("c", 5));
        assert_eq!(ids(&c.after(c.find("x").unwrap().position)), vec!["b", "c"]);
    }

    #[test]
    fn large_entries_evict_by_bytes() {
        let big = |id: &str, ms: u64| {
            let update = Update {
                id: id.into(),
                topics: vec!["t".into()],
                data: "x".repeat(1000),
                private: false,
                event_type: None,
                retry: None,
            };
            Arc::new(Envelope::new(Position::new(0, ms, 0), update, 0))
        };
        let one = approx_bytes(&big("a", 1));
        let mut c = TailCache::new(100, one * 3);
        c.reset(Vec::new(), true);
        for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
            c.push(big(id, i as u64 + 1));
        }
        assert_eq!(ids(&c.all()), vec!["b", "c", "d"]);
        assert!(
            !c.covers_history(100),
            "evicted: older entries are in Redis"
        );
        // One entry larger than the whole budget is still kept, alone.
        let mut tiny = TailCache::new(100, 10);
        tiny.push(big("huge", 1));
        assert_eq!(ids(&tiny.all()), vec!["huge"]);
    }

    #[test]
    fn reset_and_age_pruning() {
        let mut c = TailCache::new(10, usize::MAX);
        c.reset(vec![env("a", 1), env("b", 2), env("c", 3)], true);
        assert!(c.covers_history(100));
        c.prune_older_than(3);
        assert_eq!(ids(&c.all()), vec!["c"]);
        assert!(c.find("a").is_none() && c.find("c").is_some());
        assert!(c.covers_history(100), "age pruning mirrors Redis trimming");
        c.reset(Vec::new(), false);
        assert!(c.last().is_none() && !c.covers_history(1));
    }
}
