//! One subscriber as the fan-out sees it: what it asked for, what private updates it may read, and
//! the handle its SSE writer holds.
//!
//! The [`Subscription`] is the receiving end of the subscriber's bounded queue ([`crate::queue`]). Dropping it (the
//! client went away, the response ended) unregisters the subscriber from its shard, so a closed
//! connection costs nothing after its drop.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use crate::queue::Queue;
use crate::registry::{Registry, SubscriberKey};
use parking_lot::Mutex;
use quicksilver_protocol::{Envelope, Selector, SelectorStore};

/// Which private updates a subscriber may receive. The type, and the one implementation of
/// "private stays private", belong to the auth crate, next to the grants they are derived from
/// ([`quicksilver_auth::Grants::private_access`]); the fan-out stores a subscriber's access and
/// asks it about each private update.
pub use quicksilver_auth::Access;

/// What a subscriber asked for.
#[derive(Clone, Debug)]
pub struct SubscriberSpec {
    /// Its topic selectors; an update matching any of them (through any of its topics) is wanted.
    pub selectors: Vec<Selector>,
    /// Its access to private updates.
    pub access: Access,
}

impl SubscriberSpec {
    /// Whether this subscriber wants and may read `envelope` (the same test the shards apply; used
    /// when replaying history).
    pub fn accepts(&self, store: &SelectorStore, envelope: &Envelope) -> bool {
        let topics = &envelope.update.topics;
        let wanted = topics
            .iter()
            .any(|t| self.selectors.iter().any(|s| store.matches(s, t)));
        wanted && (!envelope.update.private || self.access.allows(store, topics))
    }
}

/// Milliseconds on a process-wide monotonic clock (never 0), for cheap shared timestamps and
/// stream alarms ([`Subscription::set_alarm`]).
pub fn now_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// State shared by a subscriber's registry entry and its [`Subscription`] handle.
#[derive(Debug)]
pub(crate) struct SubscriberState {
    /// The subscriber's updates, pushed by its shard.
    pub(crate) queue: Queue,
    /// Set when the fan-out cut the subscriber off as too slow.
    pub(crate) lagged: AtomicBool,
    /// When the oldest update still waiting in the queue was queued ([`now_ms`]); 0 when the queue
    /// was last seen empty. The dispatch timeout compares against it.
    pub(crate) waiting_since_ms: AtomicU64,
    /// When the stream wants to be woken even if no update comes ([`now_ms`]); 0 for never. The
    /// shard's alarm tick clears it when it wakes the stream.
    pub(crate) alarm_ms: AtomicU64,
    /// Cancelled when the subscriber is cut off as too slow, so whoever owns its connection can
    /// close it at once: a client that stopped reading would otherwise keep the socket and every
    /// byte already written to it until it reads again.
    pub(crate) closer: Option<tokio_util::sync::CancellationToken>,
}

impl SubscriberState {
    pub(crate) fn new(
        capacity: usize,
        closer: Option<tokio_util::sync::CancellationToken>,
    ) -> Self {
        Self {
            queue: Queue::new(capacity),
            lagged: AtomicBool::new(false),
            waiting_since_ms: AtomicU64::new(0),
            alarm_ms: AtomicU64::new(0),
            closer,
        }
    }
}

/// The receiving end of a registered subscriber's queue. Dropping it unregisters the subscriber.
pub struct Subscription {
    key: SubscriberKey,
    state: Arc<SubscriberState>,
    registry: Arc<Mutex<Registry>>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("key", &self.key)
            .finish()
    }
}

impl Subscription {
    pub(crate) fn new(
        (key, state): (SubscriberKey, Arc<SubscriberState>),
        registry: Arc<Mutex<Registry>>,
    ) -> Self {
        Self {
            key,
            state,
            registry,
        }
    }

    fn drained(&self) {
        self.state.waiting_since_ms.store(0, Ordering::Relaxed);
    }

    /// Waits for the next update; `None` once the subscriber was cut off (or closed by the hub) and
    /// its queue is drained.
    pub async fn recv(&mut self) -> Option<Arc<Envelope>> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next update (for hand-written streams).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Arc<Envelope>>> {
        let poll = self.state.queue.poll_pop(cx);
        if poll.is_pending() {
            self.drained();
        }
        poll
    }

    /// Takes an already-queued update without waiting.
    pub fn try_recv(&mut self) -> Option<Arc<Envelope>> {
        let next = self.state.queue.try_pop();
        if next.is_none() {
            self.drained();
        }
        next
    }

    /// Moves up to `max` already-queued updates into `out` at once (one lock for the lot) and
    /// returns how many.
    pub fn try_recv_many(&mut self, out: &mut Vec<Arc<Envelope>>, max: usize) -> usize {
        let n = self.state.queue.pop_many(out, max);
        if n < max {
            self.drained();
        }
        n
    }

    /// Asks to be woken (the waker of the last [`Subscription::poll_recv`] that returned `Pending`)
    /// once [`now_ms`] reaches `at_ms`, even if no update comes; `0` cancels. The shard checks
    /// alarms on its tick ([`crate::FanoutConfig::alarm_tick`]), so the wakeup comes up to one tick
    /// late; it may also come early or twice, so the stream looks at the clock when woken.
    pub fn set_alarm(&self, at_ms: u64) {
        self.state.alarm_ms.store(at_ms, Ordering::Relaxed);
    }

    /// Whether the fan-out cut this subscriber off as too slow (queue full, or updates waiting
    /// longer than the dispatch timeout).
    pub fn was_cut_off(&self) -> bool {
        self.state.lagged.load(Ordering::Relaxed)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.state.queue.drop_receiver();
        self.registry.lock().remove(self.key);
    }
}
