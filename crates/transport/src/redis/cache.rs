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
//!
//! A reader fills one [`StreamHistory`] per stream it reads: without retention rules one cache, of
//! the stream itself; with rules one per retention class, each a contiguous run of that class's
//! history stream (see `crate::retention`), filled from the entries of the reader's stream that
//! name the class. The caches of one stream sit under one lock with the reader's position, so a
//! history read takes all of them, and the position they reach together, at one instant.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use quicksilver_protocol::{Envelope, Position};

use super::history::{before, holds_all_after, Start};
use crate::retention::{ClassSet, Retention};

/// What a reader fills for one stream it reads (see the module docs), under one lock.
#[derive(Debug)]
pub(crate) struct StreamHistory {
    /// The newest position the reader has read in its stream and cached (`None` before its first
    /// warm-up, or once it stopped).
    pub(crate) read: Option<Position>,
    /// One per history the reader fills.
    pub(crate) caches: Vec<ClassCache>,
}

/// The cache of one history stream.
#[derive(Debug)]
pub(crate) struct ClassCache {
    /// The retention class (`None`: the reader's stream is itself the history).
    pub(crate) class: Option<Arc<str>>,
    /// The Redis stream holding this history.
    pub(crate) key: String,
    /// Entries the stream retains (its history length).
    pub(crate) retention: usize,
    /// Entries older than this are dropped (`None`: no age limit).
    pub(crate) max_age: Option<std::time::Duration>,
    pub(crate) cache: TailCache,
}

impl ClassCache {
    /// Whether a read of `classes` covers this history.
    pub(crate) fn read_by(&self, classes: &ClassSet) -> bool {
        self.class
            .as_deref()
            .is_none_or(|tag| classes.contains(tag))
    }

    /// Whether an entry stored for `tags` (its `r` field) belongs here.
    pub(crate) fn holds(&self, tags: Option<&str>) -> bool {
        match (&self.class, tags) {
            (None, _) => true,
            (Some(class), Some(tags)) => tags.split(',').any(|t| t == &**class),
            (Some(_), None) => false,
        }
    }

    /// Entries older than this are past the maximum age (`None`: no age limit).
    pub(crate) fn age_cutoff_ms(&self) -> Option<u64> {
        let age = self.max_age?;
        Some((crate::now_micros() / 1_000).saturating_sub(age.as_millis() as u64))
    }
}

impl StreamHistory {
    /// A history whose one cache is of the stream `key` itself.
    pub(crate) fn single(
        key: String,
        retention: usize,
        max_age: Option<std::time::Duration>,
        capacity: usize,
        max_bytes: usize,
    ) -> Self {
        Self {
            read: None,
            caches: vec![ClassCache {
                class: None,
                key,
                retention,
                max_age,
                cache: TailCache::new(capacity, max_bytes),
            }],
        }
    }

    /// Where the reader is, once it has read something (an empty stream's zero position says
    /// nothing a history read could cover).
    pub(crate) fn reached(&self) -> Option<Position> {
        self.read.filter(|p| p.ms != 0 || p.seq != 0)
    }

    /// The caches a read of `classes` covers.
    pub(crate) fn read_by<'a>(
        &'a self,
        classes: &'a ClassSet,
    ) -> impl Iterator<Item = &'a ClassCache> + 'a {
        self.caches.iter().filter(move |c| c.read_by(classes))
    }

    /// Appends an entry the reader read, to every cache it belongs to (`tags`: its `r` field).
    pub(crate) fn push(&mut self, entry: &Arc<Envelope>, tags: Option<&str>) {
        for cache in &mut self.caches {
            if cache.holds(tags) {
                cache.cache.push(entry.clone());
                if let Some(cutoff) = cache.age_cutoff_ms() {
                    cache.cache.prune_older_than(cutoff);
                }
            }
        }
    }

    /// Empties every cache; `complete`: the streams hold nothing older than what comes next.
    pub(crate) fn reset(&mut self, complete: bool) {
        for cache in &mut self.caches {
            cache.cache.reset(Vec::new(), complete);
        }
    }

    /// Makes the caches those of `retention` (for a reader's updates stream whose key is
    /// `stream`, whose classes' streams are named by `class_key`): without rules one cache of the
    /// stream itself, with rules one per class. Caches of classes still named are kept; new ones
    /// start empty, holding whatever the reader reads from now on.
    pub(crate) fn set_retention(
        &mut self,
        retention: &Retention,
        stream: &str,
        class_key: impl Fn(&str) -> String,
        capacity: impl Fn(usize) -> usize,
        max_bytes: usize,
    ) {
        let mut old = std::mem::take(&mut self.caches);
        let mut take = |class: Option<&Arc<str>>| {
            old.iter()
                .position(|c| c.class.as_ref() == class)
                .map(|i| old.swap_remove(i))
        };
        // What each wanted cache is: its class, stream, length and age (a cache with no class
        // yet, not filled).
        let spec = |class: Option<Arc<str>>, key: String, window: crate::Window| ClassCache {
            class,
            key,
            retention: window.length,
            max_age: window.max_age,
            cache: TailCache::new(0, 0),
        };
        let wanted: Vec<ClassCache> = if retention.has_rules() {
            retention
                .classes()
                .iter()
                .map(|c| spec(Some(c.tag().clone()), class_key(c.tag()), c.window()))
                .collect()
        } else {
            vec![spec(
                None,
                stream.to_string(),
                retention.default_class().window(),
            )]
        };
        for mut want in wanted {
            let cache = match take(want.class.as_ref()) {
                // The same window (the same class, or the stream itself with unchanged settings).
                Some(kept) if kept.retention == want.retention && kept.max_age == want.max_age => {
                    kept
                }
                _ => {
                    want.cache = TailCache::new(capacity(want.retention), max_bytes);
                    if let Some(read) = self.read {
                        want.cache.start_after(read);
                    }
                    want
                }
            };
            self.caches.push(cache);
        }
    }
}

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
    /// It holds every entry of its stream after this position (an entry it evicted, or where it
    /// started), whether or not it holds that position itself: `None` when only its first entry
    /// on is known to be contiguous.
    since: Option<Position>,
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
    /// Whether the cache held every entry of its stream after a position (see
    /// [`TailCache::holds_after`]), when the copy was taken.
    pub(crate) holds: Holds,
}

/// From where on a cache held every entry of its stream, when a copy of it was taken.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Holds {
    since: Option<Position>,
    first: Option<Position>,
}

impl Holds {
    /// Whether every entry of the stream after `position` (up to where the reader was) was held.
    /// (Holding all the stream holds is not enough: it may have trimmed entries after `position`
    /// before the cache was filled.)
    pub(crate) fn after(&self, position: Position) -> bool {
        self.since.is_some_and(|s| !s.is_after(&position))
            || self.first.is_some_and(|f| !f.is_after(&position))
    }
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
            since: None,
        }
    }

    /// How many entries it holds.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
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
        self.since = None;
        for entry in entries {
            self.push(entry);
        }
    }

    /// Appends the next entry of the stream, evicting the oldest beyond capacity.
    pub(crate) fn push(&mut self, entry: Arc<Envelope>) {
        if self.capacity == 0 {
            self.complete = false;
            self.since = Some(entry.position);
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
        self.since = Some(old.position);
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

    /// Notes that the cache holds every entry of its stream after `position` (where its reader
    /// is when it starts filling it), unless it knows more already.
    pub(crate) fn start_after(&mut self, position: Position) {
        if self.since.is_none() && self.entries.is_empty() {
            self.since = Some(position);
        }
    }

    /// From where on it holds every entry of its stream (see [`Holds`]).
    pub(crate) fn holds(&self) -> Holds {
        Holds {
            since: self.since,
            first: self.first(),
        }
    }

    /// Whether it holds every entry of its stream after `position` (up to where its reader is).
    pub(crate) fn holds_after(&self, position: Position) -> bool {
        self.holds().after(position)
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
            // Everything after the position must be here (or be all there is).
            Start::After(p) => covered || self.holds_after(p),
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
        slice.incomplete = match start {
            // Whatever the cache holds its stream holds too (it keeps no more than the stream's
            // newest entries), so holding everything after the start proves nothing was lost, and
            // so does holding all of a stream shorter than its retention (it never trimmed).
            // Otherwise the cache reached the start only by holding the stream's whole retained
            // history, which lost something after it. (A history of no length holds nothing:
            // whether something was lost is whether its reader saw something after the start.)
            Start::After(p) => {
                !(self.holds_after(p) || (self.complete && self.entries.len() < history_size))
            }
            _ => !holds_all_after(
                self.entries.front(),
                self.entries.len(),
                history_size,
                start,
            ),
        };
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
            holds: self.holds(),
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
