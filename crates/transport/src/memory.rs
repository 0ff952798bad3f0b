//! The embedded transport: bounded in-memory rings of the latest updates, for a single node.
//!
//! Publishing appends to a ring and then queues the update for the node's reader, both under one
//! lock, so the reader sees updates in exactly the order they were numbered and the ring always
//! holds an update before any subscriber can receive it live (what replay-then-live relies on). The
//! reader queue is bounded: when the fan-out is backed up, publishers wait instead of memory
//! growing. The reader, woken by an update, yields once before handing over what has arrived by
//! then: publishers that are ready run first, and a burst of updates reaches the fan-out together
//! (a subscriber's deliveries of it can then leave in one write). Event ids are indexed to their
//! sequence number, so finding where a reconnecting subscriber left off is O(1).
//!
//! Updates are kept in one ring per retention class (see [`crate::retention`]): an update goes into
//! the ring of the class of each of its topics (the same shared `Arc` in each), so a busy class
//! never pushes another class's updates out. Subscription events ([`Transport::publish_event`]) are
//! numbered in the same sequence but kept in a ring of their own, so a flood of them never pushes
//! real updates out of history. History merges the rings a subscriber may match back into sequence
//! order. Without retention rules there is one update ring, of `history_size`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use quicksilver_protocol::{Envelope, Position, Update, EARLIEST};
use tokio::sync::{mpsc, Mutex};
use tracing::Instrument;

use crate::retention::{ClassSet, Retention, Window};
use crate::{
    now_micros, ClassStats, HistoryReply, Interest, Scope, Transport, TransportError,
    TransportStats, UpdateSink,
};

/// Capacity of the queue between publishers and the reader.
const READER_QUEUE: usize = 4096;

/// The in-memory transport. History holds the last `history_size` updates (and the last
/// `event_history` subscription events), or what the retention rules say per class.
pub struct MemoryTransport {
    store: Mutex<Store>,
    reader_tx: mpsc::Sender<Arc<Envelope>>,
    reader_rx: std::sync::Mutex<Option<mpsc::Receiver<Arc<Envelope>>>>,
    closed: AtomicBool,
    /// Rules given by [`Transport::set_retention`], not yet applied to the store.
    pending: parking_lot::Mutex<Option<Arc<Retention>>>,
    /// The counters of the class rings in force, readable without the store's lock.
    class_counters: parking_lot::Mutex<Vec<(Arc<str>, Arc<RingCounters>)>>,
    /// History requests answered (the id was retained, or `earliest`) and not (unknown id).
    history_hits: AtomicU64,
    history_misses: AtomicU64,
}

impl std::fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTransport").finish_non_exhaustive()
    }
}

/// What is numbered and retained, under the transport's one lock.
struct Store {
    next_seq: u64,
    retention: Arc<Retention>,
    /// One ring per retention class, index as `retention.classes()`.
    classes: Vec<Ring>,
    events: Ring,
}

/// What a ring stored and holds, for metrics.
#[derive(Debug, Default)]
struct RingCounters {
    stored: AtomicU64,
    held: AtomicU64,
}

/// The retained entries of one kind, oldest first (their sequence numbers increase but may skip
/// the other rings').
struct Ring {
    /// The retention class (`None`: the subscription events).
    tag: Option<Arc<str>>,
    capacity: usize,
    max_age: Option<Duration>,
    entries: VecDeque<Arc<Envelope>>,
    /// Event id → (sequence of its earliest retained occurrence, number of retained occurrences).
    ids: HashMap<IdKey, (u64, u32)>,
    /// The sequence of the newest entry evicted (or never kept, with a capacity of 0); for a ring
    /// created after updates were numbered, the last sequence numbered then (what came before is
    /// not known to it).
    evicted: u64,
    counters: Arc<RingCounters>,
}

/// A key of a ring's id index: the earliest retained update with that id, hashed and compared by
/// its id. The index shares the update rather than copying its id: one allocation less per update.
/// Keyed by the earliest occurrence, which [`Ring::forget`] moves on, so a key never keeps an
/// evicted update alive.
#[derive(Clone)]
struct IdKey(Arc<Envelope>);

impl std::borrow::Borrow<str> for IdKey {
    fn borrow(&self) -> &str {
        &self.0.update.id
    }
}

impl std::hash::Hash for IdKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `str` hashes, which `Borrow<str>` requires.
        self.0.update.id.as_str().hash(state);
    }
}

impl PartialEq for IdKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.update.id == other.0.update.id
    }
}

impl Eq for IdKey {}

impl MemoryTransport {
    /// A transport retaining the last `history_size` updates (0 keeps none: no replay) and as many
    /// subscription events.
    pub fn new(history_size: usize) -> Self {
        Self::with_event_history(history_size, history_size)
    }

    /// A transport retaining the last `history_size` updates and the last `event_history`
    /// subscription events.
    pub fn with_event_history(history_size: usize, event_history: usize) -> Self {
        let (reader_tx, reader_rx) = mpsc::channel(READER_QUEUE);
        let retention = Arc::new(Retention::global(Window {
            length: history_size,
            max_age: None,
        }));
        let classes: Vec<Ring> = retention
            .classes()
            .iter()
            .map(|c| Ring::new(Some(c.tag().clone()), c.window(), 0))
            .collect();
        let class_counters = classes
            .iter()
            .filter_map(|r| Some((r.tag.clone()?, r.counters.clone())))
            .collect();
        Self {
            class_counters: parking_lot::Mutex::new(class_counters),
            store: Mutex::new(Store {
                next_seq: 1,
                classes,
                retention,
                events: Ring::new(
                    None,
                    Window {
                        length: event_history,
                        max_age: None,
                    },
                    0,
                ),
            }),
            reader_tx,
            reader_rx: std::sync::Mutex::new(Some(reader_rx)),
            closed: AtomicBool::new(false),
            pending: parking_lot::Mutex::new(None),
            history_hits: AtomicU64::new(0),
            history_misses: AtomicU64::new(0),
        }
    }

    /// The store, under its lock, with the latest rules applied.
    async fn locked(&self) -> tokio::sync::MutexGuard<'_, Store> {
        let mut store = self.store.lock().await;
        if let Some(retention) = self.pending.lock().take() {
            store.set_retention(retention);
            *self.class_counters.lock() = store.counters();
        }
        store
    }

    /// Stops accepting publishes (shutdown).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }
}

impl Ring {
    /// An empty ring for `window`; `numbered`: the last sequence numbered before it existed.
    fn new(tag: Option<Arc<str>>, window: Window, numbered: u64) -> Self {
        Self {
            tag,
            capacity: window.length,
            max_age: window.max_age,
            entries: VecDeque::with_capacity(window.length.min(65_536)),
            ids: HashMap::new(),
            evicted: numbered,
            counters: Arc::default(),
        }
    }

    fn push(&mut self, envelope: Arc<Envelope>) {
        self.counters.stored.fetch_add(1, Ordering::Relaxed);
        if self.capacity == 0 {
            self.evicted = envelope.position.seq;
            return;
        }
        self.ids
            .entry(IdKey(envelope.clone()))
            .and_modify(|(_, count)| *count += 1)
            .or_insert((envelope.position.seq, 1));
        self.entries.push_back(envelope);
        while self.entries.len() > self.capacity {
            self.evict_oldest();
        }
        self.counters
            .held
            .store(self.entries.len() as u64, Ordering::Relaxed);
    }

    fn evict_oldest(&mut self) {
        if let Some(old) = self.entries.pop_front() {
            self.evicted = old.position.seq;
            self.forget(&old);
        }
        self.counters
            .held
            .store(self.entries.len() as u64, Ordering::Relaxed);
    }

    /// Evicts what is older than the ring's maximum age, by the time it was accepted.
    fn prune(&mut self, now_micros: u64) {
        let Some(age) = self.max_age else {
            return;
        };
        let cutoff = now_micros.saturating_sub(age.as_micros() as u64);
        while self
            .entries
            .front()
            .is_some_and(|e| e.accepted_at_micros < cutoff)
        {
            self.evict_oldest();
        }
    }

    /// Drops an evicted update from the id index. If the id occurs again later in the ring (a reused
    /// id), the index moves to that next occurrence: a cursor resolves to the earliest retained one.
    fn forget(&mut self, old: &Envelope) {
        let id = old.update.id.as_str();
        let Some((seq, count)) = self.ids.get_mut(id) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            self.ids.remove(id);
            return;
        }
        if *seq == old.position.seq {
            let count = *count;
            if let Some(next) = self.entries.iter().find(|e| e.update.id == id) {
                // Keyed by the next occurrence now, not by the evicted update (see [`IdKey`]).
                let next = next.clone();
                self.ids.remove(id);
                self.ids
                    .insert(IdKey(next.clone()), (next.position.seq, count));
            }
        }
    }

    /// The retained entries numbered after `seq` (all of them for `None`).
    fn after(&self, seq: Option<u64>) -> impl Iterator<Item = &Arc<Envelope>> {
        let start = seq.map_or(0, |s| self.entries.partition_point(|e| e.position.seq <= s));
        self.entries.range(start..)
    }
}

impl Store {
    /// The rings a read of `classes` covers: those classes' and the events'.
    fn rings<'a>(&'a self, classes: &'a ClassSet) -> impl Iterator<Item = &'a Ring> + 'a {
        self.classes
            .iter()
            .filter(|r| r.tag.as_deref().is_some_and(|t| classes.contains(t)))
            .chain(std::iter::once(&self.events))
    }

    /// The entries of the rings covering `classes` numbered after `seq`, in sequence order, each
    /// once (an update kept in several classes' rings is the same entry).
    fn after(&self, seq: Option<u64>, classes: &ClassSet) -> Vec<Arc<Envelope>> {
        let mut out: Vec<Arc<Envelope>> = self
            .rings(classes)
            .flat_map(|r| r.after(seq).cloned())
            .collect();
        out.sort_by_key(|e| e.position.seq);
        out.dedup_by_key(|e| e.position.seq);
        out
    }

    /// The sequence of the earliest retained occurrence of `id` in the rings covering `classes`.
    fn find(&self, id: &str, classes: &ClassSet) -> Option<u64> {
        self.rings(classes)
            .filter_map(|r| r.ids.get(id).map(|(seq, _)| *seq))
            .min()
    }

    /// Whether every ring covering `classes` still holds all it was given after `seq`.
    fn complete_after(&self, seq: u64, classes: &ClassSet) -> bool {
        self.rings(classes).all(|r| r.evicted < seq)
    }

    /// The counters of the class rings.
    fn counters(&self) -> Vec<(Arc<str>, Arc<RingCounters>)> {
        self.classes
            .iter()
            .filter_map(|r| Some((r.tag.clone()?, r.counters.clone())))
            .collect()
    }

    /// Evicts what is past its ring's maximum age.
    fn prune(&mut self) {
        let now = now_micros();
        for ring in &mut self.classes {
            ring.prune(now);
        }
    }

    /// Numbers `envelope`, keeps it in the rings it belongs to and returns it shared.
    fn number(&mut self, mut envelope: Envelope, event: bool) -> Arc<Envelope> {
        envelope.position = Position::new(0, 0, self.next_seq);
        self.next_seq += 1;
        let envelope = Arc::new(envelope);
        if event {
            self.events.push(envelope.clone());
            return envelope;
        }
        let now = envelope.accepted_at_micros;
        if let ([ring], false) = (
            self.classes.as_mut_slice(),
            envelope.update.topics.is_empty(),
        ) {
            // One class (no retention rules): every update is kept in it, and finding it needs
            // neither the topics' classes nor a list of them.
            ring.push(envelope.clone());
            ring.prune(now);
            return envelope;
        }
        for class in self.retention.classes_of(&envelope.update) {
            if let Some(ring) = self
                .classes
                .iter_mut()
                .find(|r| r.tag.as_ref() == Some(class.tag()))
            {
                ring.push(envelope.clone());
                ring.prune(now);
            }
        }
        envelope
    }

    /// Applies new rules: rings of classes still named keep their updates, new classes start
    /// empty (knowing nothing of what was numbered before), the others are dropped.
    fn set_retention(&mut self, retention: Arc<Retention>) {
        let numbered = self.next_seq - 1;
        let mut old: Vec<Ring> = std::mem::take(&mut self.classes);
        self.classes = retention
            .classes()
            .iter()
            .map(
                |class| match old.iter().position(|r| r.tag.as_ref() == Some(class.tag())) {
                    Some(index) => old.swap_remove(index),
                    None => Ring::new(Some(class.tag().clone()), class.window(), numbered),
                },
            )
            .collect();
        self.retention = retention;
    }
}

impl MemoryTransport {
    /// The history of the rings covering `classes` after `last_event_id` (see the module docs).
    async fn history_of(
        &self,
        last_event_id: &str,
        classes: &ClassSet,
    ) -> Result<HistoryReply, TransportError> {
        let mut store = self.locked().await;
        store.prune();
        // Everything numbered so far was covered by this read, even what the reader has not handed
        // to the fan-out yet: the caller (registered before asking) would otherwise receive it live
        // too, the anchor itself included.
        let high_water = store
            .next_seq
            .checked_sub(1)
            .filter(|&seq| seq > 0)
            .map(|seq| vec![Position::new(0, 0, seq)])
            .unwrap_or_default();
        if last_event_id == EARLIEST {
            self.history_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(HistoryReply {
                anchor: None,
                entries: store.after(None, classes),
                high_water,
            });
        }
        let (counter, reply) = match store.find(last_event_id, classes) {
            Some(seq) => (
                &self.history_hits,
                HistoryReply {
                    // Something numbered after it was evicted (a shorter window of another class
                    // the subscriber may match, or of the events): replay what is left, but tell
                    // the subscriber it may have missed updates.
                    anchor: store
                        .complete_after(seq, classes)
                        .then(|| last_event_id.to_string()),
                    entries: store.after(Some(seq), classes),
                    high_water,
                },
            ),
            // Unknown: nothing is replayed, and what was published before the call is history the
            // caller is told (`earliest`) it may have missed, not live updates.
            None => (
                &self.history_misses,
                HistoryReply {
                    high_water,
                    ..HistoryReply::default()
                },
            ),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(reply)
    }

    async fn store(&self, update: Update, event: bool) -> Result<Position, TransportError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(TransportError::Closed);
        }
        // Encode the frame before taking the lock; only numbering happens under it.
        let mut envelope = Envelope::new(Position::default(), update, now_micros());
        envelope.trace_context = crate::trace_context::current();
        let mut store = self.locked().await;
        let envelope = store.number(envelope, event);
        let position = envelope.position;
        // Still under the lock, so the reader receives updates in sequence order.
        self.reader_tx
            .send(envelope)
            .await
            .map_err(|_| TransportError::Closed)?;
        Ok(position)
    }
}

#[async_trait]
impl Transport for MemoryTransport {
    #[tracing::instrument(
        name = "mercure.transport.publish",
        skip_all,
        fields(otel.kind = "producer", mercure.transport = "memory")
    )]
    async fn publish(&self, update: Update) -> Result<Position, TransportError> {
        self.store(update, false).await
    }

    async fn publish_event(&self, update: Update) -> Result<Position, TransportError> {
        self.store(update, true).await
    }

    async fn history(&self, last_event_id: &str) -> Result<HistoryReply, TransportError> {
        self.history_of(last_event_id, &ClassSet::All).await
    }

    async fn history_within(
        &self,
        last_event_id: &str,
        interest: &Interest,
        scope: &Scope,
    ) -> Result<HistoryReply, TransportError> {
        let _ = interest;
        let classes = self.locked().await.retention.classes_for(scope);
        self.history_of(last_event_id, &classes).await
    }

    fn set_retention(&self, retention: Arc<Retention>) {
        // Applied by the next one to take the store's (async) lock, which this (sync) call cannot.
        *self.pending.lock() = Some(retention);
    }

    fn retention_stats(&self) -> Vec<ClassStats> {
        self.class_counters
            .lock()
            .iter()
            .map(|(class, counters)| ClassStats {
                class: class.clone(),
                stored: counters.stored.load(Ordering::Relaxed),
                held: counters.held.load(Ordering::Relaxed),
            })
            .collect()
    }

    fn stats(&self) -> TransportStats {
        TransportStats {
            history_cache_hits: self.history_hits.load(Ordering::Relaxed),
            history_cache_misses: self.history_misses.load(Ordering::Relaxed),
            partitions_read: 1,
            ..TransportStats::default()
        }
    }

    fn start_reader(&self, sink: Arc<dyn UpdateSink>) {
        let rx = self.reader_rx.lock().ok().and_then(|mut slot| slot.take());
        let Some(mut rx) = rx else {
            tracing::warn!("memory transport reader already started");
            return;
        };
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                // Woken by the first update of a burst: the publishers that are ready to run
                // publish first, then the whole burst goes to the fan-out in one go, so its writes
                // to a subscriber leave back to back.
                tokio::task::yield_now().await;
                let mut next = Some(first);
                while let Some(envelope) = next {
                    let span = crate::trace_context::dispatch_span(&envelope);
                    sink.deliver(envelope).instrument(span).await;
                    next = rx.try_recv().ok();
                }
            }
        });
    }

    fn is_ready(&self) -> bool {
        !self.closed.load(Ordering::Relaxed)
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(id: &str) -> Update {
        Update {
            id: id.into(),
            topics: vec!["t".into()],
            data: id.into(),
            private: false,
            event_type: None,
            retry: None,
        }
    }

    fn ids(reply: &HistoryReply) -> Vec<&str> {
        reply.entries.iter().map(|e| e.update.id.as_str()).collect()
    }

    struct Collect(tokio::sync::mpsc::UnboundedSender<Arc<Envelope>>);

    #[async_trait]
    impl UpdateSink for Collect {
        async fn deliver(&self, envelope: Arc<Envelope>) {
            let _ = self.0.send(envelope);
        }

        async fn gap(&self, gap: crate::Gap) {
            panic!("the in-memory transport never loses an update: {gap:?}");
        }
    }

    #[tokio::test]
    async fn replays_after_an_id_and_evicts_the_oldest() {
        let t = MemoryTransport::new(3);
        for id in ["a", "b", "c", "d"] {
            t.publish(update(id)).await.unwrap();
        }
        assert_eq!(ids(&t.history("b").await.unwrap()), vec!["c", "d"]);
        assert_eq!(t.history("b").await.unwrap().anchor.as_deref(), Some("b"));
        assert_eq!(
            ids(&t.history("earliest").await.unwrap()),
            vec!["b", "c", "d"]
        );
        let gone = t.history("a").await.unwrap();
        assert!(gone.entries.is_empty() && gone.anchor.is_none());
        assert!(t.history("d").await.unwrap().entries.is_empty());
    }

    #[tokio::test]
    async fn a_history_read_covers_what_the_reader_has_not_handed_over_yet() {
        // No reader started: every update is still on its way to the fan-out.
        let t = MemoryTransport::new(10);
        for id in ["a", "b"] {
            t.publish(update(id)).await.unwrap();
        }
        // Resuming at the newest update: nothing to replay, but the read covered it, so the
        // subscriber's live queue must not hand it over again.
        let at_b = t.history("b").await.unwrap();
        assert!(at_b.entries.is_empty());
        assert_eq!(at_b.high_water, vec![Position::new(0, 0, 2)]);
        assert_eq!(
            t.history("unknown").await.unwrap().high_water,
            vec![Position::new(0, 0, 2)]
        );
        assert!(MemoryTransport::new(10)
            .history("earliest")
            .await
            .unwrap()
            .high_water
            .is_empty());
    }

    #[tokio::test]
    async fn events_keep_their_own_history_and_their_place_in_the_order() {
        let t = MemoryTransport::with_event_history(2, 2);
        t.publish(update("u1")).await.unwrap();
        for id in ["e1", "e2", "e3"] {
            t.publish_event(update(id)).await.unwrap();
        }
        t.publish(update("u2")).await.unwrap();
        // The newest two of each kind, in the order they were stored.
        assert_eq!(
            ids(&t.history("earliest").await.unwrap()),
            vec!["u1", "e2", "e3", "u2"]
        );
        let after_e2 = t.history("e2").await.unwrap();
        assert_eq!(ids(&after_e2), vec!["e3", "u2"]);
        assert_eq!(after_e2.anchor.as_deref(), Some("e2"));
        // e1, stored after u1, is gone: what is left is replayed, and the subscriber is told.
        let after_u1 = t.history("u1").await.unwrap();
        assert_eq!(ids(&after_u1), vec!["e2", "e3", "u2"]);
        assert_eq!(after_u1.anchor, None);
    }

    #[tokio::test]
    async fn reused_ids_resolve_to_the_earliest_retained() {
        let t = MemoryTransport::new(4);
        for id in ["x", "a", "x", "b"] {
            t.publish(update(id)).await.unwrap();
        }
        assert_eq!(ids(&t.history("x").await.unwrap()), vec!["a", "x", "b"]);
        t.publish(update("c")).await.unwrap(); // evicts the first "x"
        assert_eq!(ids(&t.history("x").await.unwrap()), vec!["b", "c"]);
    }

    #[tokio::test]
    async fn reader_sees_transport_order() {
        let t = Arc::new(MemoryTransport::new(10));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        t.start_reader(Arc::new(Collect(tx)));
        let mut tasks = Vec::new();
        for i in 0..50 {
            let t = t.clone();
            tasks.push(tokio::spawn(async move {
                t.publish(update(&i.to_string())).await
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let mut last = 0;
        for _ in 0..50 {
            let e = rx.recv().await.unwrap();
            assert_eq!(e.position.seq, last + 1);
            last = e.position.seq;
        }
    }

    #[tokio::test]
    async fn no_history_when_size_is_zero() {
        let t = MemoryTransport::new(0);
        t.publish(update("a")).await.unwrap();
        t.publish(update("b")).await.unwrap();
        assert!(t.history("a").await.unwrap().entries.is_empty());
        assert!(t.history("earliest").await.unwrap().entries.is_empty());
    }

    fn on(id: &str, topics: &[&str]) -> Update {
        Update {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            ..update(id)
        }
    }

    const DOC: &str = "https://example.com/documents/1";
    const BUSY: &str = "https://example.com/telemetry/1";
    const NOTE: &str = "https://example.com/users/1/notifications";

    /// Documents keep 1000, telemetry 3, notifications none; the rest 2.
    fn rules(t: &MemoryTransport) {
        let rule = |topic: &str, length: usize| crate::retention::Rule {
            selectors: vec![quicksilver_protocol::Selector::compile(topic).unwrap()],
            window: Window {
                length,
                max_age: None,
            },
        };
        t.set_retention(Arc::new(
            Retention::new(
                Window {
                    length: 2,
                    max_age: None,
                },
                vec![
                    rule("https://example.com/documents/{id}", 1000),
                    rule("https://example.com/telemetry/{id}", 3),
                    rule("https://example.com/users/{id}/notifications", 0),
                ],
            )
            .unwrap(),
        ));
    }

    async fn within(t: &MemoryTransport, id: &str, scope: crate::Scope) -> HistoryReply {
        let interest = t.interest(&scope).await.unwrap();
        t.history_within(id, &interest, &scope).await.unwrap()
    }

    fn topics(list: &[&str]) -> crate::Scope {
        crate::Scope::Topics(list.iter().map(|t| t.to_string()).collect())
    }

    #[tokio::test]
    async fn a_busy_short_class_never_pushes_a_long_one_out() {
        let t = MemoryTransport::new(2);
        rules(&t);
        t.publish(on("d1", &[DOC])).await.unwrap();
        t.publish(on("d2", &[DOC])).await.unwrap();
        for i in 0..100 {
            t.publish(on(&format!("b{i}"), &[BUSY])).await.unwrap();
            t.publish(on(&format!("o{i}"), &["https://example.com/other"]))
                .await
                .unwrap();
        }
        let doc = within(&t, "d1", topics(&[DOC])).await;
        assert_eq!(ids(&doc), vec!["d2"]);
        assert_eq!(doc.anchor.as_deref(), Some("d1"));
        // Its window is its own: the busy class kept its last 3, the default its last 2.
        assert_eq!(
            ids(&within(&t, EARLIEST, topics(&[BUSY])).await),
            vec!["b97", "b98", "b99"]
        );
        assert_eq!(
            ids(&t.history("d2").await.unwrap()),
            vec!["b97", "b98", "o98", "b99", "o99"],
            "every class, in publication order"
        );
        // A subscriber that may match the busy topic too missed some of it: told so.
        assert_eq!(within(&t, "d1", topics(&[DOC, BUSY])).await.anchor, None);
        // Out of its class's window: unknown.
        let gone = within(&t, "b50", topics(&[BUSY])).await;
        assert!(gone.anchor.is_none() && gone.entries.is_empty());
        let mut stats: Vec<(String, u64, u64)> = t
            .retention_stats()
            .into_iter()
            .map(|s| (s.class.to_string(), s.stored, s.held))
            .collect();
        stats.sort();
        assert_eq!(
            stats,
            vec![
                ("n0".into(), 0, 0),
                ("n1000".into(), 2, 2),
                ("n2".into(), 100, 2),
                ("n3".into(), 100, 3)
            ]
        );
    }

    #[tokio::test]
    async fn a_class_of_length_zero_replays_nothing_and_an_update_lives_in_each_topics_class() {
        let t = MemoryTransport::new(10);
        rules(&t);
        t.publish(on("n1", &[NOTE])).await.unwrap();
        t.publish(on("both", &[NOTE, DOC])).await.unwrap();
        t.publish(on("n2", &[NOTE])).await.unwrap();
        let notes = within(&t, EARLIEST, topics(&[NOTE])).await;
        assert!(notes.entries.is_empty());
        assert!(within(&t, "n1", topics(&[NOTE])).await.anchor.is_none());
        // Kept for its alternate topic's class, and replayed once to whoever reads both.
        assert_eq!(
            ids(&within(&t, EARLIEST, topics(&[DOC])).await),
            vec!["both"]
        );
        assert_eq!(ids(&t.history(EARLIEST).await.unwrap()), vec!["both"]);
        // A document subscriber that may match notifications missed n2: told so.
        let mixed = within(&t, "both", topics(&[DOC, NOTE])).await;
        assert!(mixed.anchor.is_none() && mixed.entries.is_empty());
        let doc = within(&t, "both", topics(&[DOC])).await;
        assert_eq!(doc.anchor.as_deref(), Some("both"));
        // A template over documents does not read the notifications class.
        let template = crate::Scope::Matching {
            topics: vec![],
            prefixes: vec!["https://example.com/documents/".into()],
        };
        assert_eq!(
            within(&t, "both", template).await.anchor.as_deref(),
            Some("both")
        );
    }

    #[tokio::test]
    async fn a_maximum_age_drops_old_updates() {
        let t = MemoryTransport::new(10);
        t.set_retention(Arc::new(
            Retention::new(
                Window {
                    length: 10,
                    max_age: None,
                },
                vec![crate::retention::Rule {
                    selectors: vec![quicksilver_protocol::Selector::compile(DOC).unwrap()],
                    window: Window {
                        length: 10,
                        max_age: Some(std::time::Duration::from_millis(50)),
                    },
                }],
            )
            .unwrap(),
        ));
        t.publish(on("old", &[DOC])).await.unwrap();
        t.publish(on("kept", &["t"])).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
        t.publish(on("new", &[DOC])).await.unwrap();
        assert_eq!(
            ids(&t.history(EARLIEST).await.unwrap()),
            vec!["kept", "new"]
        );
        assert!(t.history("old").await.unwrap().anchor.is_none());
    }

    #[tokio::test]
    async fn a_reload_keeps_the_classes_whose_window_stays() {
        let t = MemoryTransport::new(10);
        rules(&t);
        t.publish(on("d1", &[DOC])).await.unwrap();
        t.publish(on("b1", &[BUSY])).await.unwrap();
        // Documents keep their window under another rule; telemetry gets a new one.
        let rule = |topic: &str, length: usize| crate::retention::Rule {
            selectors: vec![quicksilver_protocol::Selector::compile(topic).unwrap()],
            window: Window {
                length,
                max_age: None,
            },
        };
        t.set_retention(Arc::new(
            Retention::new(
                Window {
                    length: 10,
                    max_age: None,
                },
                vec![
                    rule("https://example.com/{kind}/1", 1000),
                    rule("https://example.com/telemetry/{id}", 7),
                ],
            )
            .unwrap(),
        ));
        t.publish(on("d2", &[DOC])).await.unwrap();
        t.publish(on("b2", &[BUSY])).await.unwrap();
        let doc = within(&t, "d1", topics(&[DOC])).await;
        // (Not filtered by topic: BUSY is a documents-class topic now, `{kind}/1`.)
        assert_eq!(
            (ids(&doc), doc.anchor.as_deref()),
            (vec!["d2", "b2"], Some("d1"))
        );
        // Its old class is gone, and with it b1.
        assert!(within(&t, "b1", topics(&[BUSY])).await.anchor.is_none());
        assert_eq!(
            ids(&t.history(EARLIEST).await.unwrap()),
            vec!["d1", "d2", "b2"]
        );
    }
}
