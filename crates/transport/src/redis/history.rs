//! Answering reconnecting subscribers: the updates after their last event id.
//!
//! The fast path reads only the tail caches, under their read locks, with no Redis round trip; it
//! answers whenever the caches hold everything the reply needs (the anchor and all that follows it,
//! or proof that an id is unknown). Otherwise the slow path loads each partition's retained history
//! (its newest `history_size` entries: the cached tail plus older entries read from Redis with
//! `XREVRANGE` in batches, so the scan is bounded) and answers from that. Identical concurrent slow
//! paths are merged into one by last event id (single-flight).
//!
//! Replies are assembled the same way on both paths. With one partition the reply is the entries
//! after the earliest retained occurrence of the id. With several, the id's partition `p` gives the
//! entries after it, every other partition `q` its entries at or after the anchor's stream time minus
//! the resume margin, merged by `(stream time, partition, sequence)`; see the `redis` module docs for
//! what that guarantees. Each partition read contributes its high-water mark: the newest position the
//! read covered, whether or not an entry of it was returned.
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

use super::cache::CacheSlice;
use super::commands::{self, TailEnd, Via};
use super::connection::CallError;
use super::singleflight::Joined;
use super::status::Counters;
use super::Shared;
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

/// The retained updates after `last_event_id` (see the module docs).
pub(crate) async fn history(
    shared: &Arc<Shared>,
    last_event_id: &str,
) -> Result<HistoryReply, TransportError> {
    if shared.settings.history_size == 0 {
        return Ok(HistoryReply::default());
    }
    let reply = lookup(shared, last_event_id).await?;
    if reply.anchor.is_some() || last_event_id == EARLIEST {
        return Ok(reply);
    }
    // Unknown so far: perhaps only because this node has not read it yet.
    if catch_up(shared).await {
        return lookup(shared, last_event_id).await;
    }
    Ok(reply)
}

/// One lookup: the caches, else a (shared) scan of Redis.
async fn lookup(shared: &Arc<Shared>, last_event_id: &str) -> Result<HistoryReply, TransportError> {
    if let Some(resolution) = from_cache(shared, last_event_id) {
        Counters::bump(&shared.counters.history_cache_hits);
        return Ok(resolution.into_reply());
    }
    let slow = shared.clone();
    let id = last_event_id.to_string();
    let (flight, joined) = shared
        .flights
        .run_or_join(last_event_id, move || async move {
            let _turn = scan_turn(&slow).await?;
            from_redis(&slow, &id)
                .await
                .map(Arc::new)
                .map_err(|e| e.to_string())
        })
        .await;
    match flight {
        Some(Ok(resolution)) if joined == Joined(false) => Ok(resolution.to_reply()),
        Some(Ok(resolution)) => match top_up(shared, &resolution) {
            Some(reply) => Ok(reply),
            None => {
                // The cache moved on past the shared snapshot: this caller reads alone.
                Counters::bump(&shared.counters.history_rescans);
                let _turn = scan_turn(shared)
                    .await
                    .map_err(TransportError::Unavailable)?;
                from_redis(shared, last_event_id)
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
/// `None` when a cache no longer holds a mark (evicted or reset since).
fn top_up(shared: &Shared, resolution: &Resolution) -> Option<HistoryReply> {
    let mut reply = resolution.to_reply();
    if reply.anchor.is_none() {
        // Unknown id (or `earliest` answered from a snapshot): nothing was promised after it.
        if reply.entries.is_empty() {
            return Some(reply);
        }
    }
    let mut high_water = Vec::with_capacity(shared.caches.len());
    for (q, cache) in shared.caches.iter().enumerate() {
        let cache = cache.read();
        let mark = resolution
            .high_water
            .iter()
            .find(|p| usize::from(p.partition) == q)
            .copied();
        let newer = match mark {
            // The cache must still hold the mark itself for what follows to be contiguous with it.
            Some(mark) if cache.first().is_some_and(|first| !first.is_after(&mark)) => {
                cache.after(mark)
            }
            Some(mark) if cache.last() == Some(mark) => CacheSlice {
                entries: Vec::new(),
                last: Some(mark),
            },
            Some(_) => return None,
            // The snapshot saw nothing of this partition: all it holds now is newer, if it holds
            // everything the stream has.
            None if cache.covers_history(shared.settings.history_size) => cache.all(),
            None => return None,
        };
        high_water.extend(newer.last.or(mark));
        reply.entries.extend(newer.entries);
    }
    if shared.caches.len() > 1 {
        reply.entries.sort_by_key(|e| order(&e.position));
    }
    reply.high_water = high_water;
    Some(reply)
}

/// Waits (at most the command timeout) for every reader to reach where its stream ended when
/// called; `true` when one had to catch up (a new lookup may then find more).
async fn catch_up(shared: &Shared) -> bool {
    let deadline = tokio::time::Instant::now() + shared.settings.command_timeout;
    let Ok(_turn) = scan_turn(shared).await else {
        return false;
    };
    let mut waited = false;
    for partition in 0..shared.settings.partitions {
        let key = &shared.keys[usize::from(partition)].stream;
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

/// The fast path: `None` when the caches cannot answer alone.
fn from_cache(shared: &Shared, last_event_id: &str) -> Option<Resolution> {
    let history_size = shared.settings.history_size;
    let cutoff = shared.settings.age_cutoff_ms();
    if last_event_id == EARLIEST {
        let mut parts = Vec::with_capacity(shared.caches.len());
        for cache in &shared.caches {
            let cache = cache.read();
            if !cache.covers_history(history_size) {
                return None;
            }
            parts.push(cache.all());
        }
        return Some(assemble(None, parts, cutoff));
    }

    let mut anchor: Option<Position> = None;
    let mut all_covered = true;
    for cache in &shared.caches {
        let cache = cache.read();
        if let Some(found) = cache.find(last_event_id) {
            if anchor.is_none_or(|a| order(&found) < order(&a)) {
                anchor = Some(found);
            }
        }
        all_covered &= cache.covers_history(history_size);
    }
    let Some(anchor) = anchor else {
        // Unknown here; known unknown only if the caches hold all the retained history.
        return all_covered.then(Resolution::default);
    };
    if cutoff.is_some_and(|c| anchor.ms < c) {
        // Past the maximum age: as good as trimmed.
        return Some(Resolution::default());
    }
    let from_ms = from_ms(shared, &anchor);
    let mut parts = Vec::with_capacity(shared.caches.len());
    for (q, cache) in shared.caches.iter().enumerate() {
        let cache = cache.read();
        if usize::from(anchor.partition) == q {
            // The anchor may have been evicted since it was found; then the slice would miss
            // entries, so let the slow path answer.
            if cache.first().is_none_or(|first| first.is_after(&anchor)) {
                return None;
            }
            parts.push(cache.after(anchor));
        } else {
            if !cache.covers_from_ms(from_ms, history_size) {
                return None;
            }
            parts.push(cache.since_ms(from_ms));
        }
    }
    Some(assemble(Some(last_event_id.to_string()), parts, cutoff))
}

/// The slow path: each partition's retained history, from its cache and Redis.
async fn from_redis(shared: &Shared, last_event_id: &str) -> Result<Resolution, CallError> {
    Counters::bump(&shared.counters.history_redis_scans);
    let cutoff = shared.settings.age_cutoff_ms();
    let mut windows = Vec::with_capacity(shared.caches.len());
    for partition in 0..shared.settings.partitions {
        let mut window = load_window(shared, partition).await?;
        if let Some(cutoff) = cutoff {
            window.entries.retain(|e| e.position.ms >= cutoff);
        }
        windows.push(window);
    }
    if last_event_id == EARLIEST {
        return Ok(assemble(None, windows, None));
    }
    let anchor = windows
        .iter()
        .filter_map(|w| {
            w.entries
                .iter()
                .find(|e| e.update.id == last_event_id)
                .map(|e| e.position)
        })
        .min_by_key(order);
    let Some(anchor) = anchor else {
        return Ok(Resolution::default());
    };
    let from_ms = from_ms(shared, &anchor);
    let parts = windows
        .into_iter()
        .enumerate()
        .map(|(q, mut window)| {
            let start = if usize::from(anchor.partition) == q {
                window
                    .entries
                    .partition_point(|e| !e.position.is_after(&anchor))
            } else {
                window.entries.partition_point(|e| e.position.ms < from_ms)
            };
            window.entries.drain(..start);
            window
        })
        .collect();
    Ok(assemble(Some(last_event_id.to_string()), parts, None))
}

/// A partition's retained history: its newest `history_size` entries, oldest first.
async fn load_window(shared: &Shared, partition: u16) -> Result<CacheSlice, CallError> {
    let history_size = shared.settings.history_size;
    let (cached, covered, first) = {
        let cache = shared.caches[usize::from(partition)].read();
        (
            cache.all(),
            cache.covers_history(history_size),
            cache.first(),
        )
    };
    if covered {
        return Ok(cached);
    }
    let key = &shared.keys[usize::from(partition)].stream;
    let mut via = Via::Pool {
        pool: &shared.pool,
        sent: &shared.counters.history_redis_commands,
    };
    let need = history_size.saturating_sub(cached.entries.len());
    let end = first.map_or(TailEnd::Newest, TailEnd::Before);
    let older = commands::read_tail(&mut via, key, end, need, shared.settings.read_count).await?;
    let mut entries = commands::decode_all(partition, older.entries, |id, e| {
        // Counted by the readers; history scans see the same entries again and again.
        tracing::debug!(partition, entry = %id.id, error = %e, "skipping unreadable stream entry");
    });
    let last = cached.last.or(entries.last().map(|e| e.position));
    entries.extend(cached.entries);
    Ok(CacheSlice { entries, last })
}

/// The earliest time other partitions are replayed from, for a resume at `anchor`.
fn from_ms(shared: &Shared, anchor: &Position) -> u64 {
    let margin = shared.settings.resume_margin.as_millis() as u64;
    anchor.ms.saturating_sub(margin)
}

/// The order of the merged replay, the same on every node.
fn order(p: &Position) -> (u64, u16, u64) {
    (p.ms, p.partition, p.seq)
}

/// Builds a reply from one slice per partition read.
fn assemble(anchor: Option<String>, parts: Vec<CacheSlice>, cutoff: Option<u64>) -> Resolution {
    let high_water = parts.iter().filter_map(|part| part.last).collect();
    let several = parts.len() > 1;
    let mut entries: Vec<Arc<Envelope>> = parts.into_iter().flat_map(|p| p.entries).collect();
    if let Some(cutoff) = cutoff {
        entries.retain(|e| e.position.ms >= cutoff);
    }
    if several {
        // Stable, and each partition's entries are already in stream order.
        entries.sort_by_key(|e| order(&e.position));
    }
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
        };
        let p1 = CacheSlice {
            entries: vec![env("b", 1, 20), env("d", 1, 30)],
            last: Some(Position::new(1, 40, 0)),
        };
        let empty = CacheSlice::default();
        let r = assemble(Some("x".into()), vec![p0, p1, empty], Some(15));
        let ids: Vec<&str> = r.entries.iter().map(|e| e.update.id.as_str()).collect();
        assert_eq!(ids, vec!["b", "c", "d"]);
        assert_eq!(
            r.high_water,
            vec![Position::new(0, 30, 0), Position::new(1, 40, 0)]
        );
    }
}
