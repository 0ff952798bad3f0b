//! One shard's subscriber index: who wants which topics, found without scanning everyone.
//!
//! Exact selectors are keyed by topic in a hash map, `*` subscribers sit in their own set, and
//! template selectors are grouped by their text so each distinct template is matched once per
//! update however many subscribers share it. Sets are `IndexSet`s: iteration is as fast as a vector
//! and removal is O(1), which matters when thousands of subscribers of one topic leave at once.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use indexmap::IndexSet;
use quicksilver_protocol::selector::SelectorKind;
use quicksilver_protocol::{Envelope, Selector, SelectorStore};
use slab::Slab;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::stats::FanoutStats;
use crate::subscriber::{now_ms, SubscriberSpec, SubscriberState};

/// Identifies a registered subscriber: its slab slot plus a unique id, so a handle whose entry was
/// already removed (cut off) cannot remove a newer subscriber that reused the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubscriberKey {
    slot: usize,
    id: u64,
}

struct Entry {
    id: u64,
    queue: mpsc::Sender<Arc<Envelope>>,
    spec: SubscriberSpec,
    /// The dispatch stamp of the last update offered, so a subscriber matching an update through
    /// several selectors or topics gets it once.
    last_stamp: u64,
    state: Arc<SubscriberState>,
}

/// The subscribers of one shard.
pub struct Registry {
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
}

impl Registry {
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
        }
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
        queue: mpsc::Sender<Arc<Envelope>>,
    ) -> (SubscriberKey, Arc<SubscriberState>) {
        self.next_id += 1;
        let id = self.next_id;
        let state = Arc::new(SubscriberState::default());
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
            }
        }
        self.entries.insert(Entry {
            id,
            queue,
            spec,
            last_stamp: 0,
            state: state.clone(),
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

    /// Offers one update to every matching subscriber of this shard; cuts off those whose queue is
    /// full and forgets those whose handle is gone.
    pub(crate) fn deliver(&mut self, envelope: &Arc<Envelope>) {
        self.stamp += 1;
        let mut offer = Offer {
            now_ms: self.dispatch_timeout_ms.map_or(0, |_| now_ms()),
            dispatch_timeout_ms: self.dispatch_timeout_ms,
            stamp: self.stamp,
            envelope,
            store: &self.store,
            entries: &mut self.entries,
            delivered: 0,
            dropped: Vec::new(),
        };
        let topics = &envelope.update.topics;
        for topic in topics {
            if let Some(set) = self.exact.get(topic.as_str()) {
                set.iter().for_each(|slot| offer.offer(*slot));
            }
        }
        self.wildcard.iter().for_each(|slot| offer.offer(*slot));
        for (selector, set) in self.templates.values() {
            if topics.iter().any(|t| self.store.matches(selector, t)) {
                set.iter().for_each(|slot| offer.offer(*slot));
            }
        }
        let (delivered, dropped) = (offer.delivered, offer.dropped);
        self.stats.delivered.fetch_add(delivered, Ordering::Relaxed);
        for (slot, lagged) in dropped {
            if lagged {
                self.stats
                    .lagged_disconnects
                    .fetch_add(1, Ordering::Relaxed);
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

/// The state of offering one update, split from the registry's indexes so they can be iterated
/// while entries are updated.
struct Offer<'a> {
    now_ms: u64,
    dispatch_timeout_ms: Option<u64>,
    stamp: u64,
    envelope: &'a Arc<Envelope>,
    store: &'a SelectorStore,
    entries: &'a mut Slab<Entry>,
    delivered: u64,
    /// Slots to remove after the pass, with whether the subscriber lagged (else its handle is gone).
    dropped: Vec<(usize, bool)>,
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
        if update.private && !entry.spec.access.allows(self.store, &update.topics) {
            return;
        }
        if let Some(timeout) = self.dispatch_timeout_ms {
            // Updates have waited in this queue longer than the dispatch timeout: the connection is
            // stalled (its socket stopped draining) even if the queue is not full yet.
            let since = entry.state.waiting_since_ms.load(Ordering::Relaxed);
            let queued = entry.queue.capacity() < entry.queue.max_capacity();
            if queued && since != 0 && self.now_ms.saturating_sub(since) > timeout {
                self.dropped.push((slot, true));
                return;
            }
            if !queued || since == 0 {
                entry
                    .state
                    .waiting_since_ms
                    .store(self.now_ms, Ordering::Relaxed);
            }
        }
        match entry.queue.try_send(self.envelope.clone()) {
            Ok(()) => self.delivered += 1,
            Err(TrySendError::Full(_)) => self.dropped.push((slot, true)),
            Err(TrySendError::Closed(_)) => self.dropped.push((slot, false)),
        }
    }
}
