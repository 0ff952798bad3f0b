//! The embedded transport: bounded in-memory rings of the latest updates, for a single node.
//!
//! Publishing appends to a ring and then queues the update for the node's reader, both under one
//! lock, so the reader sees updates in exactly the order they were numbered and the ring always
//! holds an update before any subscriber can receive it live (what replay-then-live relies on). The
//! reader queue is bounded: when the fan-out is backed up, publishers wait instead of memory
//! growing. Event ids are indexed to their sequence number, so finding where a reconnecting
//! subscriber left off is O(1).
//!
//! Subscription events ([`Transport::publish_event`]) are numbered in the same sequence but kept in
//! a ring of their own, so a flood of them never pushes real updates out of history; history
//! merges the two rings back into sequence order.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use quicksilver_protocol::{Envelope, Position, Update, EARLIEST};
use tokio::sync::{mpsc, Mutex};
use tracing::Instrument;

use crate::{now_micros, HistoryReply, Transport, TransportError, TransportStats, UpdateSink};

/// Capacity of the queue between publishers and the reader.
const READER_QUEUE: usize = 4096;

/// The in-memory transport. History holds the last `history_size` updates (and the last
/// `event_history` subscription events).
pub struct MemoryTransport {
    store: Mutex<Store>,
    reader_tx: mpsc::Sender<Arc<Envelope>>,
    reader_rx: std::sync::Mutex<Option<mpsc::Receiver<Arc<Envelope>>>>,
    closed: AtomicBool,
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
    updates: Ring,
    events: Ring,
}

/// The retained entries of one kind, oldest first (their sequence numbers increase but may skip
/// the other kind's).
struct Ring {
    capacity: usize,
    entries: VecDeque<Arc<Envelope>>,
    /// Event id → (sequence of its earliest retained occurrence, number of retained occurrences).
    ids: HashMap<Arc<str>, (u64, u32)>,
    /// The sequence of the newest entry evicted (or never kept, with a capacity of 0).
    evicted: u64,
}

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
        Self {
            store: Mutex::new(Store {
                next_seq: 1,
                updates: Ring::new(history_size),
                events: Ring::new(event_history),
            }),
            reader_tx,
            reader_rx: std::sync::Mutex::new(Some(reader_rx)),
            closed: AtomicBool::new(false),
            history_hits: AtomicU64::new(0),
            history_misses: AtomicU64::new(0),
        }
    }

    /// Stops accepting publishes (shutdown).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }
}

impl Ring {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: VecDeque::with_capacity(capacity.min(65_536)),
            ids: HashMap::new(),
            evicted: 0,
        }
    }

    fn push(&mut self, envelope: Arc<Envelope>) {
        if self.capacity == 0 {
            self.evicted = envelope.position.seq;
            return;
        }
        let id: Arc<str> = envelope.update.id.as_str().into();
        self.ids
            .entry(id)
            .and_modify(|(_, count)| *count += 1)
            .or_insert((envelope.position.seq, 1));
        self.entries.push_back(envelope);
        while self.entries.len() > self.capacity {
            if let Some(old) = self.entries.pop_front() {
                self.evicted = old.position.seq;
                self.forget(&old);
            }
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
            if let Some(next) = self.entries.iter().find(|e| e.update.id == id) {
                *seq = next.position.seq;
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
    /// Both rings' entries after `seq`, in sequence order.
    fn after(&self, seq: Option<u64>) -> Vec<Arc<Envelope>> {
        let mut updates = self.updates.after(seq).peekable();
        let mut events = self.events.after(seq).peekable();
        let mut out = Vec::new();
        loop {
            let next = match (updates.peek(), events.peek()) {
                (Some(u), Some(e)) if e.position.seq < u.position.seq => events.next(),
                (Some(_), _) => updates.next(),
                (None, Some(_)) => events.next(),
                (None, None) => break,
            };
            out.extend(next.cloned());
        }
        out
    }

    /// The sequence of the earliest retained occurrence of `id`, in either ring.
    fn find(&self, id: &str) -> Option<u64> {
        let update = self.updates.ids.get(id).map(|(seq, _)| *seq);
        let event = self.events.ids.get(id).map(|(seq, _)| *seq);
        match (update, event) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Numbers `envelope`, keeps it in `ring` and returns it shared.
    fn number(&mut self, mut envelope: Envelope, event: bool) -> Arc<Envelope> {
        envelope.position = Position::new(0, 0, self.next_seq);
        self.next_seq += 1;
        let envelope = Arc::new(envelope);
        let ring = if event {
            &mut self.events
        } else {
            &mut self.updates
        };
        ring.push(envelope.clone());
        envelope
    }
}

impl MemoryTransport {
    async fn store(&self, update: Update, event: bool) -> Result<Position, TransportError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(TransportError::Closed);
        }
        // Encode the frame before taking the lock; only numbering happens under it.
        let mut envelope = Envelope::new(Position::default(), update, now_micros());
        envelope.trace_context = crate::trace_context::current();
        let mut store = self.store.lock().await;
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
        let store = self.store.lock().await;
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
                entries: store.after(None),
                high_water,
            });
        }
        let (counter, reply) = match store.find(last_event_id) {
            Some(seq) => (
                &self.history_hits,
                HistoryReply {
                    // Something numbered after it was evicted (the other kind's shorter history):
                    // replay what is left, but tell the subscriber it may have missed updates.
                    anchor: (store.updates.evicted < seq && store.events.evicted < seq)
                        .then(|| last_event_id.to_string()),
                    entries: store.after(Some(seq)),
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
            while let Some(envelope) = rx.recv().await {
                let span = crate::trace_context::dispatch_span(&envelope);
                sink.deliver(envelope).instrument(span).await;
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
}
