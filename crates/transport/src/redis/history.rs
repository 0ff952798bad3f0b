//! Answering reconnecting subscribers: the updates after their last event id.
//!
//! The fast path reads only the tail caches, under their read locks, with no Redis round trip; it
//! answers whenever the caches hold everything the reply needs (the anchor and all that follows it,
//! or proof that an id is unknown). Otherwise the slow path loads each stream's retained history
//! (its newest `history_size` entries, `event_history` for subscription events: the cached tail
//! plus older entries read from Redis with `XREVRANGE` in batches, so the scan is bounded) and
//! answers from that. Identical concurrent slow paths are merged into one by last event id
//! (single-flight).
//!
//! A lookup reads only the streams of the caller's interest (the partitions its subscriber may
//! match, see `interest`; every stream for a caller without one), which are exactly the streams
//! this node's running readers fill.
//!
//! With retention rules (see `crate::retention`), a partition's history is not its stream but the
//! history streams of its retention classes, each with its own length and age, and a lookup reads
//! those of the classes its subscriber may match. Their entries carry the positions of the
//! partition's stream, so everything below holds per class stream as it does per stream; an
//! update kept in several classes is one entry, replayed once. The high-water mark of a partition
//! is where its reader was when its class caches were copied (one lock covers them all), and a
//! scan of a class stream in Redis stops there: what a class read returns beyond it would claim,
//! for the whole partition, entries of other classes the read did not cover.
//!
//! Replies are assembled the same way on both paths, stream by stream:
//! - the stream holding the anchor (the earliest retained occurrence of the id): the entries after
//!   it;
//! - with one partition, the other of the pair updates/subscription events, exactly: after an
//!   update, the events that follow it or a later update; after an event, the updates after the
//!   one it follows (every node hands events over right after the update they follow, so that is
//!   exactly what the subscriber had not seen);
//! - with several partitions, every other stream its entries at or after the anchor's stream time
//!   minus the resume margin (see the `redis` module docs for what that guarantees), except that
//!   partition 0 and the events stream keep the exact rule between them; and a stream holding a
//!   copy of the anchor's update (its topics span several partitions, see the `redis` module
//!   docs) takes, exactly, the entries after that copy: the subscriber had that copy or the
//!   anchor's, and in either case everything before both.
//!
//! The merged reply is in the order nodes hand entries over: with one partition, each event right
//! after the update it follows; with several, `(stream time, partition, sequence)`. Each stream
//! read contributes its high-water mark: the newest position the read covered, whether or not an
//! entry of it was returned.
//!
//! # What a reply promises
//! The caller (a subscriber) registered for live updates before asking, so a reply must cover
//! everything up to the moment of the call: what the live queue will not hold.
//! - A caller that joins a scan already in flight gets a snapshot that may predate its
//!   registration. The reply is topped up from the tail cache with everything after the snapshot's
//!   high-water marks; when the cache no longer reaches back to them, the caller scans alone.
//! - An id is only called unknown once this node's readers have read up to where the streams
//!   ended when it was asked (waiting at most the command timeout): an id published moments ago
//!   through another node is otherwise not yet in the cache, and the caller would be told
//!   `earliest` and then receive, live, updates it already had.
//!
//! # Bounded
//! An id the caches prove unknown (they hold the whole retained history, as they do by default)
//! costs no scan, only the catch-up check, one command per partition. The Redis work of history
//! lookups (scans and catch-up checks) is bounded: at most `max_history_scans` at once, each other
//! caller waiting up to the command timeout for its turn and then failing (a `503` for the
//! subscriber), so a flood of distinct made-up ids queues behind a few commands instead of
//! sending Redis one scan each.

use std::sync::Arc;

use quicksilver_protocol::{Envelope, Position, EARLIEST};

use super::cache::{approx_bytes, CacheSlice};
use super::commands::{self, TailEnd, Via};
use super::connection::CallError;
use super::singleflight::Joined;
use super::status::Counters;
use super::Shared;
use crate::retention::ClassSet;
use crate::{HistoryReply, TransportError};

/// A history answer, shared by the callers of one single-flight.
#[derive(Debug, Default)]
pub(crate) struct Resolution {
    anchor: Option<String>,
    entries: Vec<Arc<Envelope>>,
    high_water: Vec<Position>,
}

/// What single-flight hands every caller of one slow path.
pub(crate) type Flight = Result<Arc<Resolution>, String>;

impl Resolution {
    fn into_reply(self) -> HistoryReply {
        HistoryReply {
            anchor: self.anchor,
            entries: self.entries,
            high_water: self.high_water,
        }
    }

    fn to_reply(&self) -> HistoryReply {
        HistoryReply {
            anchor: self.anchor.clone(),
            entries: self.entries.clone(),
            high_water: self.high_water.clone(),
        }
    }
}

/// What a lookup reads: which of the node's streams, and which retention classes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reach<'a> {
    /// The streams read (cache indexes: partitions, and the events' index); `None`: every stream.
    pub(crate) streams: Option<&'a [u16]>,
    /// The retention classes read.
    pub(crate) classes: &'a ClassSet,
}

impl Reach<'_> {
    /// Whether stream `index` is among those read.
    fn reads(&self, index: usize) -> bool {
        self.streams
            .is_none_or(|s| s.iter().any(|&i| usize::from(i) == index))
    }

    /// What identifies the lookup besides the id: callers reading different streams or classes
    /// share a scan only with their own.
    fn key(&self) -> String {
        let streams = match self.streams {
            None => "*".to_string(),
            Some(streams) => streams
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(","),
        };
        let classes = match self.classes {
            ClassSet::All => "*".to_string(),
            ClassSet::Tags(tags) => tags.iter().map(|t| &**t).collect::<Vec<_>>().join(","),
        };
        format!("{streams}\u{0}{classes}")
    }
}

/// The retained updates after `last_event_id` (see the module docs), in what `reach` covers.
pub(crate) async fn history(
    shared: &Arc<Shared>,
    last_event_id: &str,
    reach: Reach<'_>,
) -> Result<HistoryReply, TransportError> {
    if shared.settings.history_size == 0 && !shared.retention().has_rules() {
        return Ok(HistoryReply::default());
    }
    let reply = lookup(shared, last_event_id, reach).await?;
    if reply.anchor.is_some() || last_event_id == EARLIEST {
        return Ok(reply);
    }
    // Unknown so far: perhaps only because this node has not read it yet.
    if catch_up(shared, reach).await {
        return lookup(shared, last_event_id, reach).await;
    }
    Ok(reply)
}

/// One lookup: the caches, else a (shared) scan of Redis.
async fn lookup(
    shared: &Arc<Shared>,
    last_event_id: &str,
    reach: Reach<'_>,
) -> Result<HistoryReply, TransportError> {
    if let Some(resolution) = from_cache(shared, last_event_id, reach) {
        Counters::bump(&shared.counters.history_cache_hits);
        return Ok(resolution.into_reply());
    }
    let slow = shared.clone();
    let id = last_event_id.to_string();
    let owned_streams: Option<Vec<u16>> = reach.streams.map(<[u16]>::to_vec);
    let owned_classes = reach.classes.clone();
    let key = format!("{last_event_id}\u{0}{}", reach.key());
    let (flight, joined) = shared
        .flights
        .run_or_join(&key, move || async move {
            let _turn = scan_turn(&slow).await?;
            let reach = Reach {
                streams: owned_streams.as_deref(),
                classes: &owned_classes,
            };
            from_redis(&slow, &id, reach)
                .await
                .map(Arc::new)
                .map_err(|e| e.to_string())
        })
        .await;
    match flight {
        Some(Ok(resolution)) if joined == Joined(false) => Ok(resolution.to_reply()),
        Some(Ok(resolution)) => match top_up(shared, &resolution, reach) {
            Some(reply) => Ok(reply),
            None => {
                // The cache moved on past the shared snapshot: this caller reads alone.
                Counters::bump(&shared.counters.history_rescans);
                let _turn = scan_turn(shared)
                    .await
                    .map_err(TransportError::Unavailable)?;
                from_redis(shared, last_event_id, reach)
                    .await
                    .map(Resolution::into_reply)
                    .map_err(TransportError::from)
            }
        },
        Some(Err(reason)) => Err(TransportError::Unavailable(reason)),
        None => Err(TransportError::Unavailable("history scan failed".into())),
    }
}

/// A shared snapshot, completed with everything the readers cached after its high-water marks;
/// `None` when a cache no longer holds everything after a mark (evicted or reset since).
fn top_up(shared: &Shared, resolution: &Resolution, reach: Reach<'_>) -> Option<HistoryReply> {
    let mut reply = resolution.to_reply();
    if reply.anchor.is_none() {
        // Unknown id (or `earliest` answered from a snapshot): nothing was promised after it.
        if reply.entries.is_empty() {
            return Some(reply);
        }
    }
    let mut high_water = Vec::with_capacity(shared.caches.len());
    for (q, history) in shared.caches.iter().enumerate() {
        if !reach.reads(q) {
            continue;
        }
        let history = history.read();
        let mark = resolution
            .high_water
            .iter()
            .find(|p| usize::from(p.partition) == q)
            .copied();
        for class in history.read_by(reach.classes) {
            let newer = match mark {
                // The cache must still hold everything after the mark for what follows to be
                // contiguous with it.
                Some(mark) if class.cache.holds_after(mark) => class.cache.after(mark),
                Some(_) => return None,
                // The snapshot saw nothing of this stream: all it holds now is newer, if it holds
                // everything the stream has.
                None if class.cache.covers_history(class.retention) => class.cache.all(),
                None => return None,
            };
            reply.entries.extend(newer.entries);
        }
        high_water.extend(history.reached().or(mark));
    }
    sort_and_dedup(shared.settings.partitions, &mut reply.entries);
    reply.high_water = high_water;
    Some(reply)
}

/// Waits (at most the command timeout) for every reader to reach where its stream ended when
/// called; `true` when one had to catch up (a new lookup may then find more).
async fn catch_up(shared: &Shared, reach: Reach<'_>) -> bool {
    let deadline = tokio::time::Instant::now() + shared.settings.command_timeout;
    let Ok(_turn) = scan_turn(shared).await else {
        return false;
    };
    let mut waited = false;
    for partition in 0..=shared.settings.partitions {
        if !reach.reads(usize::from(partition)) {
            continue;
        }
        let key = if partition == shared.events_partition() {
            &shared.keys[0].events
        } else {
            &shared.keys[usize::from(partition)].stream
        };
        let mut via = Via::Pool {
            pool: &shared.pool,
            sent: &shared.counters.history_redis_commands,
        };
        let Ok(info) = commands::stream_info(&mut via, key, partition).await else {
            return waited;
        };
        let end = info.last_generated;
        let mut progress = shared.progress[usize::from(partition)].subscribe();
        let reached = |p: &Option<Position>| p.is_some_and(|p| !end.is_after(&p));
        if reached(&progress.borrow()) {
            continue;
        }
        waited = true;
        if tokio::time::timeout_at(deadline, progress.wait_for(reached))
            .await
            .is_err()
        {
            tracing::debug!(partition, "history: the reader did not catch up in time");
            return waited;
        }
    }
    waited
}

/// Waits (up to the command timeout) for a turn to talk to Redis for history (see "Bounded").
async fn scan_turn(shared: &Shared) -> Result<tokio::sync::SemaphorePermit<'_>, String> {
    match tokio::time::timeout(shared.settings.command_timeout, shared.scans.acquire()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err("too many history lookups in progress, retry in a moment".into()),
    }
}

/// Where a replay starts: the anchor's position, and for an event the update it follows.
#[derive(Clone, Copy, Debug)]
struct Anchor {
    position: Position,
    follows: Option<Position>,
}

/// Which entries of one stream a reply takes (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Start {
    /// All of them (`earliest`).
    All,
    /// Those after this position.
    After(Position),
    /// Those whose stream-id time is at least this (other partitions).
    SinceMs(u64),
    /// Events following this update or a later one.
    Following(Position),
}

/// Where stream `index` (a partition, or the events at index `partitions`) starts for `anchor`,
/// whose update also has a copy at each of `copies` (see the module docs).
fn start_for(shared: &Shared, index: usize, anchor: Option<Anchor>, copies: &[Position]) -> Start {
    let Some(anchor) = anchor else {
        return Start::All;
    };
    let events = usize::from(shared.events_partition());
    let home = usize::from(anchor.position.partition);
    if index == home {
        return Start::After(anchor.position);
    }
    if let Some(copy) = copies.iter().find(|c| usize::from(c.partition) == index) {
        return Start::After(*copy);
    }
    match (anchor.follows, index) {
        // After an event: partition 0's updates after the one it follows.
        (Some(follows), 0) => Start::After(follows),
        // After an update of partition 0: the events that follow it or a later one.
        (None, i) if i == events && home == 0 => Start::Following(anchor.position),
        _ => Start::SinceMs(from_ms(shared, &anchor.position)),
    }
}

/// The copies of the anchor's update among `occurrences` (the first occurrence of the anchor's id in
/// each stream read): entries stored by the same publish in other partitions, which carry a copies
/// list and are within the resume margin of the anchor (an id reused later is not a copy).
fn copies_of(
    shared: &Shared,
    anchor: Option<Anchor>,
    occurrences: &[Arc<Envelope>],
) -> Vec<Position> {
    let Some(anchor) = anchor else {
        return Vec::new();
    };
    let margin = shared.settings.resume_margin.as_millis() as u64;
    occurrences
        .iter()
        .filter(|e| e.copies.is_some() && e.position.partition != anchor.position.partition)
        .filter(|e| e.position.ms.abs_diff(anchor.position.ms) <= margin)
        .map(|e| e.position)
        .collect()
}

/// Whether an entry of stream `index` found in a history of maximum age `cutoff` is past it (as
/// good as trimmed). Subscription events are not dropped by age.
fn too_old(shared: &Shared, index: usize, cutoff: Option<u64>, entry: &Envelope) -> bool {
    index != usize::from(shared.events_partition())
        && entry.follows.is_none()
        && cutoff.is_some_and(|c| entry.position.ms < c)
}

/// The fast path: `None` when the caches cannot answer alone.
fn from_cache(shared: &Shared, last_event_id: &str, reach: Reach<'_>) -> Option<Resolution> {
    let partitions = shared.settings.partitions;
    let mut occurrences = Vec::new();
    let anchor = if last_event_id == EARLIEST {
        None
    } else {
        let mut found: Option<Anchor> = None;
        let mut all_covered = true;
        let mut aged = false;
        for (index, history) in shared.caches.iter().enumerate() {
            if !reach.reads(index) {
                continue;
            }
            let history = history.read();
            for class in history.read_by(reach.classes) {
                if let Some(entry) = class.cache.find(last_event_id) {
                    if too_old(shared, index, class.age_cutoff_ms(), entry) {
                        // Past its maximum age: as good as trimmed.
                        aged = true;
                    } else {
                        occurrences.push(entry.clone());
                        let candidate = Anchor {
                            position: entry.position,
                            follows: entry.follows,
                        };
                        if found.is_none_or(|a| {
                            order_key(partitions, &candidate) < order_key(partitions, &a)
                        }) {
                            found = Some(candidate);
                        }
                    }
                }
                all_covered &= class.cache.covers_history(class.retention);
            }
        }
        let Some(anchor) = found else {
            // Unknown here; known unknown only if the caches hold all the retained history.
            return (aged || all_covered).then(Resolution::default);
        };
        Some(anchor)
    };
    let copies = copies_of(shared, anchor, &occurrences);
    let mut parts = Vec::with_capacity(shared.caches.len());
    for (index, history) in shared.caches.iter().enumerate() {
        if !reach.reads(index) {
            continue;
        }
        let start = start_for(shared, index, anchor, &copies);
        // One lock for all of the stream's caches: the position they reach together is the
        // reader's, at this instant.
        let history = history.read();
        for class in history.read_by(reach.classes) {
            // `None` when the cache does not reach back far enough (the anchor may also have been
            // evicted since it was found): the slow path answers then.
            let mut part = class.cache.select(start, class.retention)?;
            if let Some(cutoff) = class.age_cutoff_ms() {
                part.entries
                    .retain(|e| !too_old(shared, index, Some(cutoff), e));
            }
            part.last = history.reached().or(part.last);
            parts.push(part);
        }
    }
    let anchor_id = anchor.map(|_| last_event_id.to_string());
    Some(assemble(partitions, anchor_id, parts))
}

/// What a scan needs of one cache, copied under the lock.
struct Cached {
    key: String,
    retention: usize,
    cutoff: Option<u64>,
    slice: CacheSlice,
    covered: bool,
    first: Option<Position>,
}

/// The slow path: each stream's retained history, from its cache and Redis.
async fn from_redis(
    shared: &Shared,
    last_event_id: &str,
    reach: Reach<'_>,
) -> Result<Resolution, CallError> {
    Counters::bump(&shared.counters.history_redis_scans);
    let mut windows = Vec::with_capacity(shared.caches.len());
    for index in (0..shared.caches.len()).filter(|&i| reach.reads(i)) {
        let (read, cached): (Option<Position>, Vec<Cached>) = {
            let history = shared.caches[index].read();
            let cached = history
                .read_by(reach.classes)
                .map(|class| Cached {
                    key: class.key.clone(),
                    retention: class.retention,
                    cutoff: class.age_cutoff_ms(),
                    slice: class.cache.all(),
                    covered: class.cache.covers_history(class.retention),
                    first: class.cache.first(),
                })
                .collect();
            (history.reached(), cached)
        };
        for cached in cached {
            let retention = cached.retention;
            let cutoff = cached.cutoff;
            let mut window = load_window(shared, index, cached, read).await?;
            window
                .entries
                .retain(|e| !too_old(shared, index, cutoff, e));
            if let Some(read) = read {
                // Beyond the reader's position: live updates, not history (see the module docs).
                window.entries.retain(|e| !e.position.is_after(&read));
                window.last = Some(read);
            }
            windows.push((index, retention, window));
        }
    }
    let occurrences: Vec<Arc<Envelope>> = windows
        .iter()
        .filter_map(|(_, _, w)| w.entries.iter().find(|e| e.update.id == last_event_id))
        .cloned()
        .collect();
    let anchor = if last_event_id == EARLIEST {
        None
    } else {
        let found = occurrences
            .iter()
            .map(|e| Anchor {
                position: e.position,
                follows: e.follows,
            })
            .min_by_key(|a| order_key(shared.settings.partitions, a));
        let Some(anchor) = found else {
            return Ok(Resolution::default());
        };
        Some(anchor)
    };
    let copies = copies_of(shared, anchor, &occurrences);
    let parts = windows
        .into_iter()
        .map(|(index, retention, mut window)| {
            let start = start_for(shared, index, anchor, &copies);
            let len = if window.full {
                usize::MAX
            } else {
                window.entries.len()
            };
            let held = match start {
                Start::After(p) => window.holds.after(p),
                _ => false,
            };
            window.incomplete =
                !(held || holds_all_after(window.entries.first(), len, retention, start));
            let begin = window.entries.partition_point(before(start));
            window.entries.drain(..begin);
            window
        })
        .collect();
    let anchor_id = anchor.map(|_| last_event_id.to_string());
    Ok(assemble(shared.settings.partitions, anchor_id, parts))
}

/// Whether the retained run of a stream that begins with `first` and holds `len` entries (a stream
/// retaining `retention`) still holds every entry `start` takes. A run shorter than the retention
/// is all the stream ever had (it never trimmed); a full run lost what preceded it, which matters
/// when that could come after the start: the start is not in the run (for `After`), or the run's
/// first event does not follow an earlier update (for `Following`).
pub(crate) fn holds_all_after(
    first: Option<&Arc<Envelope>>,
    len: usize,
    retention: usize,
    start: Start,
) -> bool {
    if len < retention {
        return true;
    }
    match start {
        Start::All | Start::SinceMs(_) => true,
        Start::After(p) => first.is_some_and(|f| !f.position.is_after(&p)),
        Start::Following(p) => first
            .and_then(|f| f.follows)
            .is_some_and(|f| p.is_after(&f)),
    }
}

/// Whether an entry comes before where `start` begins (entries of one stream, in order, are all
/// before it, then all not: a partition point).
pub(crate) fn before(start: Start) -> impl Fn(&Arc<Envelope>) -> bool {
    move |e| match start {
        Start::All => false,
        Start::After(p) => !e.position.is_after(&p),
        Start::SinceMs(ms) => e.position.ms < ms,
        Start::Following(p) => e.follows.is_some_and(|f| p.is_after(&f)),
    }
}

/// A history stream's retained history: its newest entries (as many as it retains), oldest
/// first, from its cache and, for what the cache does not hold, from Redis (up to `read`, the
/// reader's position, when the cache holds nothing).
async fn load_window(
    shared: &Shared,
    index: usize,
    cached: Cached,
    read: Option<Position>,
) -> Result<CacheSlice, CallError> {
    let Cached {
        key,
        retention,
        slice: cached,
        covered,
        first,
        ..
    } = cached;
    if covered || retention == 0 {
        return Ok(cached);
    }
    let partition = index as u16;
    let mut via = Via::Pool {
        pool: &shared.pool,
        sent: &shared.counters.history_redis_commands,
    };
    let need = retention.saturating_sub(cached.entries.len());
    let end = match (first, read) {
        (Some(first), _) => TailEnd::Before(first),
        (None, Some(read)) => TailEnd::At(read),
        (None, None) => TailEnd::Newest,
    };
    let budget = shared
        .settings
        .history_max_bytes
        .saturating_sub(cached.entries.iter().map(|e| approx_bytes(e)).sum());
    let older = commands::read_tail_within(
        &mut via,
        &key,
        end,
        need,
        shared.settings.read_count,
        budget,
    )
    .await?;
    // A publish retried after it had been stored left a second entry with the same nonce: readers
    // skip it (so the cache never holds it), and so does history, keeping the first.
    let mut seen = std::collections::HashSet::new();
    let mut entries: Vec<Arc<Envelope>> =
        commands::decode_all(partition, older.entries, |id, e| {
            // Counted by the readers; history scans see the same entries again and again.
            tracing::debug!(partition, entry = %id.id, error = %e, "skipping unreadable stream entry");
        })
        .into_iter()
        .filter(|read| read.nonce == 0 || seen.insert(read.nonce))
        .map(|read| read.envelope)
        .collect();
    let last = cached.last.or(entries.last().map(|e| e.position));
    entries.extend(cached.entries);
    Ok(CacheSlice {
        entries,
        last,
        incomplete: false,
        // Stopped by the byte budget: the window counts as full (what precedes it as gone).
        full: older.over_budget,
        holds: cached.holds,
    })
}

/// The earliest time other streams are replayed from, for a resume at `anchor`.
fn from_ms(shared: &Shared, anchor: &Position) -> u64 {
    let margin = shared.settings.resume_margin.as_millis() as u64;
    anchor.ms.saturating_sub(margin)
}

/// An entry's place in the order nodes hand entries over (see the module docs), with
/// `partitions` update partitions.
fn order_key(partitions: u16, anchor: &Anchor) -> (u64, u64, u64, u64, u64) {
    let p = anchor.position;
    if partitions > 1 {
        return (p.ms, u64::from(p.partition), p.seq, 0, 0);
    }
    match anchor.follows {
        None => (p.ms, p.seq, 0, 0, 0),
        Some(f) => (f.ms, f.seq, 1, p.ms, p.seq),
    }
}

fn entry_key(partitions: u16, e: &Envelope) -> (u64, u64, u64, u64, u64) {
    order_key(
        partitions,
        &Anchor {
            position: e.position,
            follows: e.follows,
        },
    )
}

/// Sorts entries of several streams into the order nodes hand them over, each once (an update
/// kept in several retention classes is one entry, at one position).
fn sort_and_dedup(partitions: u16, entries: &mut Vec<Arc<Envelope>>) {
    // Stable, and each stream's entries are already in order.
    entries.sort_by_key(|e| entry_key(partitions, e));
    entries.dedup_by(|a, b| a.position == b.position);
}

/// Builds a reply from one slice per history stream read, with `partitions` update partitions
/// (the events' positions are in partition `partitions`).
fn assemble(partitions: u16, anchor: Option<String>, parts: Vec<CacheSlice>) -> Resolution {
    let high_water = parts.iter().filter_map(|part| part.last).collect();
    // Something after the anchor is gone: replay what is left after it, but tell the subscriber
    // (`earliest`) that it may have missed updates.
    let anchor = anchor.filter(|_| !parts.iter().any(|p| p.incomplete));
    let mut entries: Vec<Arc<Envelope>> = parts.into_iter().flat_map(|p| p.entries).collect();
    sort_and_dedup(partitions, &mut entries);
    Resolution {
        anchor,
        entries,
        high_water,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quicksilver_protocol::Update;

    fn env(id: &str, partition: u16, ms: u64) -> Arc<Envelope> {
        let update = Update {
            id: id.into(),
            topics: vec!["t".into()],
            data: String::new(),
            private: false,
            event_type: None,
            retry: None,
        };
        Arc::new(Envelope::new(Position::new(partition, ms, 0), update, 0))
    }

    #[test]
    fn merges_partitions_deterministically_with_high_water() {
        let p0 = CacheSlice {
            entries: vec![env("a", 0, 10), env("c", 0, 30)],
            last: Some(Position::new(0, 30, 0)),
            ..CacheSlice::default()
        };
        let p1 = CacheSlice {
            entries: vec![env("b", 1, 20), env("d", 1, 30)],
            last: Some(Position::new(1, 40, 0)),
            ..CacheSlice::default()
        };
        let empty = CacheSlice::default();
        // The same entry in two classes' streams is replayed once.
        let p0_class = CacheSlice {
            entries: vec![env("c", 0, 30)],
            last: Some(Position::new(0, 30, 0)),
            ..CacheSlice::default()
        };
        let r = assemble(3, Some("x".into()), vec![p0, p1, empty, p0_class]);
        let ids: Vec<&str> = r.entries.iter().map(|e| e.update.id.as_str()).collect();
        assert_eq!(ids, vec!["a", "b", "c", "d"]);
        assert_eq!(
            r.high_water,
            vec![
                Position::new(0, 30, 0),
                Position::new(1, 40, 0),
                Position::new(0, 30, 0)
            ]
        );
    }
}
