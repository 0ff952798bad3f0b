//! One shard's subscriber index: who wants which topics, found without scanning everyone, and the
//! offering of each update to them.
//!
//! Exact selectors are keyed by topic in a hash map, `*` subscribers sit in their own set, and
//! template and URL-pattern selectors are grouped by their text (and, for URL patterns, the base URL
//! they were resolved against) so each distinct pattern is matched once per update however many
//! subscribers share it. Sets are `IndexSet`s: iteration is as fast as a vector
//! and removal is O(1), which matters when thousands of subscribers of one topic leave at once.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use indexmap::IndexSet;
use quicksilver_auth::Identity;
use quicksilver_protocol::selector::SelectorKind;
use quicksilver_protocol::{Envelope, Selector, SelectorStore};
use slab::Slab;

use crate::clock::now_ms;
use crate::queue::{push_batch, BatchPush, PushError, Pushed, Stall};
use crate::stats::FanoutStats;
use crate::subscriber::{SubscriberSpec, SubscriberState};

/// Identifies a registered subscriber: its slab slot plus a unique id, so a handle whose entry was
/// already removed (cut off) cannot remove a newer subscriber that reused the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubscriberKey {
    slot: usize,
    id: u64,
}

struct Entry {
    id: u64,
    spec: SubscriberSpec,
    /// The dispatch stamp of the last update offered, so a subscriber matching an update through
    /// several selectors or topics gets it once.
    last_stamp: u64,
    state: Arc<SubscriberState>,
    /// Whom the token that authenticated the subscriber names, when revocation could match it
    /// (shared with the verified token: one pointer per subscriber).
    identity: Option<Arc<Identity>>,
}

impl Drop for Entry {
    /// A subscriber the index lets go (cut off, closed, or gone) gets no more updates: its
    /// stream ends after what is queued.
    fn drop(&mut self) {
        self.state.queue.close();
    }
}

/// The subscribers of one shard.
pub struct ShardIndex {
    store: Arc<SelectorStore>,
    stats: Arc<FanoutStats>,
    entries: Slab<Entry>,
    next_id: u64,
    stamp: u64,
    /// Cut off subscribers whose queued updates waited longer than this (milliseconds).
    dispatch_timeout_ms: Option<u64>,
    exact: HashMap<Box<str>, IndexSet<usize>>,
    wildcard: IndexSet<usize>,
    templates: HashMap<Box<str>, (Selector, IndexSet<usize>)>,
    /// Keyed by `(pattern, base URL)`: the same text resolved against another base selects other
    /// topics.
    url_patterns: HashMap<UrlPatternKey, (Selector, IndexSet<usize>)>,
    /// Sends a fan-out's direct writes batched (`--io-uring`), when the kernel allows it.
    ring: Option<quicksilver_uring::SendRing>,
}

/// The most subscribers whose queues one batched send holds locked (the ring's submission queue
/// holds as many sends).
pub(crate) const RING_BATCH: usize = 1024;

/// A URL-pattern selector's index key: its text and the base URL it was resolved against.
type UrlPatternKey = (Box<str>, Box<str>);

impl ShardIndex {
    pub(crate) fn new(
        store: Arc<SelectorStore>,
        stats: Arc<FanoutStats>,
        dispatch_timeout: Option<std::time::Duration>,
    ) -> Self {
        Self {
            store,
            stats,
            dispatch_timeout_ms: dispatch_timeout.map(|d| d.as_millis().max(1) as u64),
            entries: Slab::new(),
            next_id: 0,
            stamp: 0,
            exact: HashMap::new(),
            wildcard: IndexSet::new(),
            templates: HashMap::new(),
            url_patterns: HashMap::new(),
            ring: None,
        }
    }

    /// Sends this shard's direct writes through `ring`, batched per update.
    pub(crate) fn use_ring(&mut self, ring: quicksilver_uring::SendRing) {
        self.ring = Some(ring);
    }

    /// Number of registered subscribers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no subscriber is registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn insert(
        &mut self,
        spec: SubscriberSpec,
        identity: Option<Arc<Identity>>,
        queue_capacity: usize,
    ) -> (SubscriberKey, Arc<SubscriberState>) {
        self.next_id += 1;
        let id = self.next_id;
        let state = Arc::new(SubscriberState::new(
            queue_capacity,
            self.dispatch_timeout_ms.unwrap_or(0),
        ));
        let slot = self.entries.vacant_key();
        for selector in &spec.selectors {
            match selector.kind() {
                SelectorKind::Exact => {
                    self.exact
                        .entry(selector.raw().into())
                        .or_default()
                        .insert(slot);
                    self.stats.matchers_exact.fetch_add(1, Ordering::Relaxed);
                }
                SelectorKind::Wildcard => {
                    self.wildcard.insert(slot);
                    self.stats.matchers_wildcard.fetch_add(1, Ordering::Relaxed);
                }
                SelectorKind::Template => {
                    self.templates
                        .entry(selector.raw().into())
                        .or_insert_with(|| (selector.clone(), IndexSet::new()))
                        .1
                        .insert(slot);
                    self.stats.matchers_template.fetch_add(1, Ordering::Relaxed);
                }
                SelectorKind::UrlPattern => {
                    self.url_patterns
                        .entry(url_pattern_key(selector))
                        .or_insert_with(|| (selector.clone(), IndexSet::new()))
                        .1
                        .insert(slot);
                    self.stats
                        .matchers_urlpattern
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.entries.insert(Entry {
            id,
            spec,
            last_stamp: 0,
            state: state.clone(),
            identity,
        });
        self.stats.subscribers.fetch_add(1, Ordering::Relaxed);
        (SubscriberKey { slot, id }, state)
    }

    /// Removes a subscriber if it is still registered under this key.
    pub(crate) fn remove(&mut self, key: SubscriberKey) {
        if self.entries.get(key.slot).is_some_and(|e| e.id == key.id) {
            self.remove_slot(key.slot);
        }
    }

    fn remove_slot(&mut self, slot: usize) {
        let entry = self.entries.remove(slot);
        for selector in &entry.spec.selectors {
            match selector.kind() {
                SelectorKind::Exact => {
                    if let Some(set) = self.exact.get_mut(selector.raw()) {
                        set.swap_remove(&slot);
                        if set.is_empty() {
                            self.exact.remove(selector.raw());
                        }
                    }
                    self.stats.matchers_exact.fetch_sub(1, Ordering::Relaxed);
                }
                SelectorKind::Wildcard => {
                    self.wildcard.swap_remove(&slot);
                    self.stats.matchers_wildcard.fetch_sub(1, Ordering::Relaxed);
                }
                SelectorKind::Template => {
                    if let Some((_, set)) = self.templates.get_mut(selector.raw()) {
                        set.swap_remove(&slot);
                        if set.is_empty() {
                            self.templates.remove(selector.raw());
                        }
                    }
                    self.stats.matchers_template.fetch_sub(1, Ordering::Relaxed);
                }
                SelectorKind::UrlPattern => {
                    let key = url_pattern_key(selector);
                    if let Some((_, set)) = self.url_patterns.get_mut(&key) {
                        set.swap_remove(&slot);
                        if set.is_empty() {
                            self.url_patterns.remove(&key);
                        }
                    }
                    self.stats
                        .matchers_urlpattern
                        .fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        self.stats.subscribers.fetch_sub(1, Ordering::Relaxed);
    }

    /// Removes every subscriber; their queues close after what they already hold.
    pub(crate) fn clear(&mut self) {
        let slots: Vec<usize> = self.entries.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            self.remove_slot(slot);
        }
    }

    /// Ends the stream of every subscriber registered up to `registered_up_to` (see
    /// [`ShardIndex::last_registered`]) after what it already holds, marked as interrupted
    /// (updates were lost before this node read them); returns how many. Those registered later
    /// read their history after the loss was found, so it cannot be a hole for them.
    pub(crate) fn interrupt_all(&mut self, registered_up_to: u64) -> usize {
        let slots: Vec<usize> = self
            .entries
            .iter()
            .filter(|(_, entry)| entry.id <= registered_up_to)
            .map(|(slot, _)| slot)
            .collect();
        for &slot in &slots {
            // Flagged before the entry goes: dropping it closes the queue, which wakes the stream.
            self.entries[slot]
                .state
                .interrupted
                .store(true, Ordering::Relaxed);
            self.remove_slot(slot);
        }
        self.stats
            .gap_disconnects
            .fetch_add(slots.len() as u64, Ordering::Relaxed);
        slots.len()
    }

    /// Ends the stream of every subscriber whose identity `revoked` says is revoked, after what
    /// it already holds, marked as revoked; returns how many.
    pub(crate) fn revoke(&mut self, revoked: &dyn Fn(&Identity) -> bool) -> usize {
        let slots: Vec<usize> = self
            .entries
            .iter()
            .filter(|(_, entry)| entry.identity.as_deref().is_some_and(revoked))
            .map(|(slot, _)| slot)
            .collect();
        for &slot in &slots {
            // Flagged before the entry goes: dropping it closes the queue, which wakes the stream.
            self.entries[slot]
                .state
                .revoked
                .store(true, Ordering::Relaxed);
            self.remove_slot(slot);
        }
        self.stats
            .revoked_disconnects
            .fetch_add(slots.len() as u64, Ordering::Relaxed);
        slots.len()
    }

    /// The registration number of the newest subscriber (they grow with each registration).
    pub(crate) fn last_registered(&self) -> u64 {
        self.next_id
    }

    /// Closes one subscriber (any), returning whether there was one.
    pub(crate) fn close_one(&mut self) -> bool {
        let slot = self.entries.iter().next().map(|(slot, _)| slot);
        match slot {
            Some(slot) => {
                self.remove_slot(slot);
                true
            }
            None => false,
        }
    }

    /// Wakes every stream whose alarm ([`crate::Subscriber::set_alarm`]) is at or before `now_ms`,
    /// clearing the alarm: the stream sets the next one when it has looked at the time.
    pub(crate) fn ring_alarms(&self, now_ms: u64) {
        for (_, entry) in &self.entries {
            let alarm = &entry.state.alarm_ms;
            let at = alarm.load(Ordering::Relaxed);
            if at != 0
                && at <= now_ms
                && alarm
                    .compare_exchange(at, 0, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                entry.state.queue.wake();
            }
        }
    }

    /// Offers one update to every matching subscriber of this shard; cuts off those whose queue is
    /// full and forgets those whose handle is gone. With `direct`, an update may be written to a
    /// subscriber's socket by this call ([`crate::direct`]).
    pub(crate) fn deliver(&mut self, envelope: &Arc<Envelope>, direct: bool) {
        self.stamp += 1;
        let mut offer = Offer {
            now_ms: self.dispatch_timeout_ms.map_or(0, |_| now_ms()),
            dispatch_timeout_ms: self.dispatch_timeout_ms,
            stamp: self.stamp,
            envelope,
            store: &self.store,
            entries: &mut self.entries,
            delivered: 0,
            written_directly: 0,
            direct,
            dropped: Vec::new(),
            batched: (direct && self.ring.is_some()).then(Vec::new),
            ring_failed: false,
            ring_sends: 0,
        };
        let topics = &envelope.update.topics;
        for topic in topics {
            if let Some(set) = self.exact.get(topic.as_str()) {
                set.iter().for_each(|slot| offer.offer(*slot));
            }
        }
        self.wildcard.iter().for_each(|slot| offer.offer(*slot));
        for (selector, set) in self.templates.values().chain(self.url_patterns.values()) {
            if topics.iter().any(|t| self.store.matches(selector, t)) {
                set.iter().for_each(|slot| offer.offer(*slot));
            }
        }
        if let Some(slots) = offer.batched.take() {
            offer.push_batched(&slots, self.ring.as_mut());
        }
        let ring_failed = offer.ring_failed;
        if offer.ring_sends > 0 {
            self.stats
                .ring_sends
                .fetch_add(offer.ring_sends, Ordering::Relaxed);
        }
        let (delivered, written_directly, dropped) =
            (offer.delivered, offer.written_directly, offer.dropped);
        if ring_failed {
            tracing::warn!(
                "io_uring failed: this shard writes to sockets one at a time from now on"
            );
            self.ring = None;
            self.stats.ring_shards.fetch_sub(1, Ordering::Relaxed);
            self.stats.ring_fallbacks.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.delivered.fetch_add(delivered, Ordering::Relaxed);
        self.stats
            .written_directly
            .fetch_add(written_directly, Ordering::Relaxed);
        for (slot, lagged) in dropped {
            if lagged {
                self.stats
                    .lagged_disconnects
                    .fetch_add(1, Ordering::Relaxed);
                // Flagged before the entry goes: dropping it closes the queue, which wakes the
                // stream's task (its writer, if blocked, then sees the flag through `CutOff`).
                self.entries[slot]
                    .state
                    .lagged
                    .store(true, Ordering::Relaxed);
                tracing::debug!("subscriber queue full: cutting it off");
            }
            self.remove_slot(slot);
        }
    }
}

/// The index key of a URL-pattern selector. Building it allocates, which only registering and
/// removing a subscriber do, never delivery.
fn url_pattern_key(selector: &Selector) -> UrlPatternKey {
    (
        selector.raw().into(),
        selector.base_url().unwrap_or_default().into(),
    )
}

/// The state of offering one update, split from the index's maps so they can be iterated
/// while entries are updated.
struct Offer<'a> {
    now_ms: u64,
    dispatch_timeout_ms: Option<u64>,
    stamp: u64,
    envelope: &'a Arc<Envelope>,
    store: &'a SelectorStore,
    entries: &'a mut Slab<Entry>,
    delivered: u64,
    /// Of those, written to the socket by this shard.
    written_directly: u64,
    /// Whether updates may be written to sockets directly.
    direct: bool,
    /// Slots to remove after the pass, with whether the subscriber lagged (else its handle is gone).
    dropped: Vec<(usize, bool)>,
    /// With a ring: the slots matched, pushed together after the pass ([`Offer::push_batched`]).
    batched: Option<Vec<usize>>,
    /// The ring failed during this offer.
    ring_failed: bool,
    /// Sends made through the ring.
    ring_sends: u64,
}

impl Offer<'_> {
    fn offer(&mut self, slot: usize) {
        let Some(entry) = self.entries.get_mut(slot) else {
            return;
        };
        if entry.last_stamp == self.stamp {
            return;
        }
        entry.last_stamp = self.stamp;
        let update = &self.envelope.update;
        if self.envelope.copies.is_some() {
            // Stored once per partition of its topics: this subscriber takes only the copy of the
            // partition of the first topic it matches (the others reach it too when this node reads
            // their partitions).
            let first = entry.spec.first_match(self.store, self.envelope);
            if !first.is_some_and(|i| self.envelope.is_copy_for(i)) {
                return;
            }
        }
        if update.private && !entry.spec.access.allows(self.store, &update.topics) {
            return;
        }
        if let Some(batched) = self.batched.as_mut() {
            batched.push(slot);
            return;
        }
        self.push_one(slot, self.direct);
    }

    /// The dispatch-timeout check of a push to `state`'s queue: updates that waited in it longer
    /// than the timeout mean the connection is stalled (its socket stopped draining) even if the
    /// queue is not full yet.
    fn stall<'s>(&self, state: &'s SubscriberState) -> Option<Stall<'s>> {
        self.dispatch_timeout_ms.map(|timeout_ms| Stall {
            now_ms: self.now_ms,
            timeout_ms,
            waiting_since_ms: &state.waiting_since_ms,
        })
    }

    /// Pushes the update to `slot`'s subscriber on its own (a write of its own, if `direct`).
    fn push_one(&mut self, slot: usize, direct: bool) {
        let Some(entry) = self.entries.get(slot) else {
            return;
        };
        let pushed = entry
            .state
            .queue
            .push_within(self.envelope, direct, self.stall(&entry.state));
        self.count(slot, pushed);
    }

    /// Pushes to the subscribers of `slots` in batches whose direct writes go out through `ring`
    /// in one submission each ([`crate::queue::push_batch`]).
    fn push_batched(
        &mut self,
        slots: &[usize],
        mut ring: Option<&mut quicksilver_uring::SendRing>,
    ) {
        let mut outcomes = Vec::new();
        for chunk in slots.chunks(RING_BATCH) {
            let Some(ring) = ring.as_deref_mut().filter(|_| !self.ring_failed) else {
                // The ring failed: one write each, as without it.
                for &slot in chunk {
                    self.push_one(slot, true);
                }
                continue;
            };
            let (present, pushes): (Vec<usize>, Vec<BatchPush<'_>>) = chunk
                .iter()
                .filter_map(|&slot| {
                    let state = &self.entries.get(slot)?.state;
                    let push = BatchPush {
                        queue: &state.queue,
                        stall: self.stall(state),
                    };
                    Some((slot, push))
                })
                .unzip();
            match push_batch(pushes, self.envelope, ring, &mut outcomes) {
                Ok(sends) => self.ring_sends += sends as u64,
                Err(_) => self.ring_failed = true,
            }
            for (slot, pushed) in present.into_iter().zip(outcomes.drain(..)) {
                self.count(slot, pushed);
            }
        }
    }

    /// Counts what became of the push to `slot`'s subscriber.
    fn count(&mut self, slot: usize, pushed: Result<Pushed, PushError>) {
        match pushed {
            Ok(Pushed::Queued) => self.delivered += 1,
            Ok(Pushed::Written) => {
                self.delivered += 1;
                self.written_directly += 1;
            }
            // The subscriber's replay holds it: delivered as history.
            Ok(Pushed::Covered) => {}
            Err(PushError::Full | PushError::Stalled) => self.dropped.push((slot, true)),
            Err(PushError::Closed) => self.dropped.push((slot, false)),
        }
    }
}

#[cfg(test)]
mod tests {
    use quicksilver_protocol::{Position, Update};

    use super::*;
    use crate::subscriber::Access;

    const HUB: &str = "https://hub.example.com/.well-known/mercure";

    fn envelope(seq: u64, topics: &[&str]) -> Arc<Envelope> {
        Arc::new(Envelope::new(
            Position::new(0, 0, seq),
            Update {
                id: format!("id-{seq}"),
                topics: topics.iter().map(|t| t.to_string()).collect(),
                data: String::new(),
                private: false,
                event_type: None,
                retry: None,
            },
            0,
        ))
    }

    fn received(rx: &mut Arc<SubscriberState>) -> Vec<u64> {
        std::iter::from_fn(|| rx.queue.try_pop())
            .map(|e| e.position.seq)
            .collect()
    }

    #[test]
    fn an_update_stored_in_several_partitions_reaches_each_subscriber_once() {
        let store = Arc::new(SelectorStore::default());
        let stats = Arc::new(FanoutStats::default());
        let mut index = ShardIndex::new(store.clone(), stats, None);
        let mut subscribe = |selectors: Vec<Selector>| {
            let spec = SubscriberSpec {
                selectors,
                access: Access::None,
            };
            index.insert(spec, None, 16).1
        };
        let mut canonical = subscribe(vec![Selector::exact_topic("/a")]);
        let mut alternate = subscribe(vec![Selector::exact_topic("/b")]);
        let mut both = subscribe(vec![
            Selector::exact_topic("/b"),
            Selector::exact_topic("/a"),
        ]);
        let mut everything = subscribe(vec![Selector::exact_topic("*")]);
        // "/a" lives in partition 1, "/b" in partition 4: one copy in each.
        let copy = |partition: u16, seq: u64| {
            let update = envelope(seq, &["/a", "/b"]).update.clone();
            let mut e = Envelope::new(Position::new(partition, 0, seq), update, 0);
            e.copies = Some(Arc::from([1u16, 4]));
            Arc::new(e)
        };
        index.deliver(&copy(1, 1), false);
        index.deliver(&copy(4, 2), false);
        assert_eq!(received(&mut canonical), [1]);
        assert_eq!(received(&mut alternate), [2]);
        // The first of the update's topics it matches is "/a", whatever its selectors' order.
        assert_eq!(received(&mut both), [1]);
        assert_eq!(received(&mut everything), [1]);
    }

    #[test]
    fn url_pattern_selectors_are_grouped_by_text_and_base() {
        let store = Arc::new(SelectorStore::default());
        let stats = Arc::new(FanoutStats::default());
        let mut index = ShardIndex::new(store.clone(), stats.clone(), None);
        let pattern = |p: &str, base: &str| {
            store
                .compile_url_pattern(p, Some(base))
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let mut subscribe = |selectors: Vec<Selector>| {
            let spec = SubscriberSpec {
                selectors,
                access: Access::None,
            };
            index.insert(spec, None, 16)
        };
        let (a, mut rx_a) = subscribe(vec![pattern("/books/:id", HUB)]);
        let (_, mut rx_b) = subscribe(vec![pattern("/books/:id", HUB)]);
        let (_, mut rx_other) = subscribe(vec![pattern("/books/:id", "https://other.example/")]);
        // Matching through a pattern and an exact selector at once: delivered once.
        let (_, mut rx_both) = subscribe(vec![
            pattern("https://hub.example.com/books/*", HUB),
            Selector::exact_topic("/books/1"),
        ]);
        assert_eq!(index.url_patterns.len(), 3);
        assert_eq!(stats.matchers_urlpattern.load(Ordering::Relaxed), 4);
        assert_eq!(stats.matchers_exact.load(Ordering::Relaxed), 1);

        index.deliver(&envelope(1, &["/books/1"]), false);
        index.deliver(&envelope(2, &["https://hub.example.com/books/2"]), false);
        index.deliver(&envelope(3, &["/books/3/chapters/1"]), false);
        index.deliver(&envelope(4, &["https://other.example/books/4"]), false);
        assert_eq!(received(&mut rx_a), [1, 2]);
        assert_eq!(received(&mut rx_b), [1, 2]);
        // A relative topic resolves against each pattern's own base, so `/books/1` matches there too.
        assert_eq!(received(&mut rx_other), [1, 4]);
        assert_eq!(received(&mut rx_both), [1, 2, 3]);

        // The group outlives one of its subscribers and goes with the last.
        index.remove(a);
        assert_eq!(index.url_patterns.len(), 3);
        assert_eq!(stats.matchers_urlpattern.load(Ordering::Relaxed), 3);
        index.deliver(&envelope(5, &["/books/5"]), false);
        assert_eq!(received(&mut rx_b), [5]);
        index.clear();
        assert!(index.url_patterns.is_empty());
        assert_eq!(stats.matchers_urlpattern.load(Ordering::Relaxed), 0);
        assert_eq!(stats.matchers_exact.load(Ordering::Relaxed), 0);
    }
}
