//! One subscriber as the fan-out sees it: what it asked for, what private updates it may read, and
//! the handle its SSE stream holds.
//!
//! The [`Subscriber`] is the receiving end of the subscriber's bounded queue ([`crate::queue`]).
//! Dropping it (the client went away, the response ended) unregisters the subscriber from its
//! shard, so a closed connection costs nothing after its drop. Its [`CutOff`] lets whoever writes
//! the subscriber's stream to a socket see, while a write is blocked, that the stream must end: the
//! fan-out gave up on it, the write has been blocked longer than the dispatch timeout, or the
//! stream's deadline (maximum connection life, token expiry) passed. The shard's alarm tick wakes
//! a blocked writer for those times whether or not updates arrive.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::clock::now_ms;
use crate::index::{ShardIndex, SubscriberKey};
use crate::queue::Queue;
use crate::stats::FanoutStats;
use parking_lot::Mutex;
use quicksilver_protocol::{Envelope, Position, Selector, SelectorStore};

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
        let wanted = match self.first_match(store, envelope) {
            Some(first) => envelope.is_copy_for(first),
            None => false,
        };
        wanted && (!envelope.update.private || self.access.allows(store, topics))
    }

    /// The index of the first of the update's topics that one of this subscriber's selectors
    /// matches, if any.
    pub fn first_match(&self, store: &SelectorStore, envelope: &Envelope) -> Option<usize> {
        envelope
            .update
            .topics
            .iter()
            .position(|t| self.selectors.iter().any(|s| store.matches(s, t)))
    }
}

/// State shared by a subscriber's index entry and its [`Subscriber`] handle.
#[derive(Debug)]
pub(crate) struct SubscriberState {
    /// The subscriber's updates, pushed by its shard.
    pub(crate) queue: Queue,
    /// Set when the fan-out cut the subscriber off as too slow.
    pub(crate) lagged: AtomicBool,
    /// Set when the fan-out ended the subscriber's stream because updates it may have matched
    /// were lost before this node read them ([`crate::Fanout::interrupt_all`]).
    pub(crate) interrupted: AtomicBool,
    /// Set when the fan-out ended the subscriber's stream because its token was revoked
    /// ([`crate::Fanout::revoke`]).
    pub(crate) revoked: AtomicBool,
    /// When the oldest update still waiting in the queue was queued ([`crate::now_ms`]); 0 when
    /// the queue was last seen empty. The dispatch timeout compares against it.
    pub(crate) waiting_since_ms: AtomicU64,
    /// When the stream wants to be woken even if no update comes ([`crate::now_ms`]); 0 for
    /// never. The shard's alarm tick clears it when it wakes the stream.
    pub(crate) alarm_ms: AtomicU64,
    /// When the stream must end ([`crate::now_ms`]: its maximum life or its token's expiry); 0 for
    /// never. A writer blocked on a full socket is ended at this time too.
    pub(crate) deadline_ms: AtomicU64,
    /// How long a write may stay blocked before the stream is cut off (the dispatch timeout, in
    /// milliseconds; 0: no limit).
    pub(crate) stall_ms: u64,
}

impl SubscriberState {
    pub(crate) fn new(capacity: usize, stall_ms: u64) -> Self {
        Self {
            queue: Queue::new(capacity),
            lagged: AtomicBool::new(false),
            interrupted: AtomicBool::new(false),
            revoked: AtomicBool::new(false),
            waiting_since_ms: AtomicU64::new(0),
            alarm_ms: AtomicU64::new(0),
            deadline_ms: AtomicU64::new(0),
            stall_ms,
        }
    }

    /// Asks for the alarm to ring at `at_ms` at the latest, keeping an earlier one already set.
    fn arm_alarm_by(&self, at_ms: u64) {
        let _ = self
            .alarm_ms
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |current| {
                (current == 0 || at_ms < current).then_some(at_ms)
            });
    }
}

/// A registered subscriber: the receiving end of its queue, its alarm and its cut-off flag.
/// Dropping it unregisters the subscriber.
pub struct Subscriber {
    key: SubscriberKey,
    state: Arc<SubscriberState>,
    index: Arc<Mutex<ShardIndex>>,
    stats: Arc<FanoutStats>,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("key", &self.key)
            .finish()
    }
}

impl Subscriber {
    pub(crate) fn new(
        (key, state): (SubscriberKey, Arc<SubscriberState>),
        index: Arc<Mutex<ShardIndex>>,
        stats: Arc<FanoutStats>,
    ) -> Self {
        Self {
            key,
            state,
            index,
            stats,
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

    /// Asks to be woken (the waker of the last [`Subscriber::poll_recv`] that returned `Pending`)
    /// once [`crate::now_ms`] reaches `at_ms`, even if no update comes; `0` cancels. The shard checks
    /// alarms on its tick ([`crate::FanoutConfig::alarm_tick`]), so the wakeup comes up to one tick
    /// late; it may also come early or twice, so the stream looks at the clock when woken.
    pub fn set_alarm(&self, at_ms: u64) {
        self.state.alarm_ms.store(at_ms, Ordering::Relaxed);
    }

    /// Sets when the stream must end ([`crate::now_ms`]; `0`: never): its maximum life or its
    /// token's expiry. The stream ends itself at that time; [`CutOff`] ends a writer blocked on a
    /// full socket at that time too.
    pub fn set_deadline(&self, at_ms: u64) {
        self.state.deadline_ms.store(at_ms, Ordering::Relaxed);
    }

    /// When the stream must end ([`crate::now_ms`]), as set by [`Subscriber::set_deadline`];
    /// `None` for never.
    pub fn deadline(&self) -> Option<u64> {
        Some(self.state.deadline_ms.load(Ordering::Relaxed)).filter(|&at| at != 0)
    }

    /// Whether the fan-out cut this subscriber off as too slow (queue full, updates waiting
    /// longer than the dispatch timeout, or its writer blocked that long).
    pub fn was_cut_off(&self) -> bool {
        self.state.lagged.load(Ordering::Relaxed)
    }

    /// Whether the fan-out ended this subscriber's stream because updates were lost before this
    /// node read them: the client must reconnect with its last event id to be told.
    pub fn was_interrupted(&self) -> bool {
        self.state.interrupted.load(Ordering::Relaxed)
    }

    /// Whether the fan-out ended this subscriber's stream because the token that authenticated
    /// it was revoked: the client reconnecting with it will be refused.
    pub fn was_revoked(&self) -> bool {
        self.state.revoked.load(Ordering::Relaxed)
    }

    /// Tells the fan-out which live updates the history this stream replays holds already (per
    /// partition, the last position it covers; [`crate::Resume::covered`]): they are dropped
    /// instead of queued, so they never count against the queue's capacity.
    pub fn skip_covered(&self, covered: &[Position]) {
        self.state.queue.skip_covered(covered);
    }

    /// Tells the fan-out that the stream sends no more history, so live updates need no filtering
    /// and may be written to the socket directly ([`crate::direct`]).
    pub fn set_live_only(&self) {
        self.state.queue.set_live_only();
    }

    /// A handle for whoever writes this subscriber's stream, to watch for a cut-off while a write
    /// is blocked.
    pub fn cut_off(&self) -> CutOff {
        CutOff {
            state: self.state.clone(),
            stats: self.stats.clone(),
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.state.queue.drop_receiver();
        self.index.lock().remove(self.key);
    }
}

/// Tells the writer of one subscriber's stream, while a write is blocked, that the stream must
/// end: the fan-out cut the subscriber off as too slow (queue full, or updates waiting longer than
/// the dispatch timeout), the write itself has been blocked for longer than the dispatch timeout,
/// or the stream's deadline (maximum connection life, token expiry) passed.
///
/// A writer blocked on a full socket polls no updates, so without this it would learn of none of
/// that until the client reads again: the socket, the bytes already written to it, its replay
/// batch and its queued updates would stay for as long as the client likes, even with no new
/// update to trigger the dispatch timeout. Polling this while the write is blocked arms the
/// subscriber's alarm for the stall limit and the deadline, which the shard's tick rings. It is
/// cloned from the [`Subscriber`]: one per stream, so on a connection carrying several streams
/// (HTTP/2) a cut-off ends only its own.
#[derive(Clone)]
pub struct CutOff {
    state: Arc<SubscriberState>,
    stats: Arc<FanoutStats>,
}

/// Why a [`CutOff`] ended a blocked writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutOffReason {
    /// The fan-out cut the subscriber off (queue full, or updates waiting too long).
    TooSlow,
    /// The write stayed blocked for longer than the dispatch timeout.
    Stalled,
    /// The stream's deadline passed (maximum connection life or token expiry).
    Deadline,
}

impl std::fmt::Debug for CutOff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CutOff").field(&self.is_cut_off()).finish()
    }
}

impl CutOff {
    /// The stream's direct way ([`crate::direct`]): the writer that watches this cut-off may let
    /// the fan-out write live updates to its socket while it has nothing to write.
    pub fn direct_writes(&self) -> crate::direct::DirectWrites<'_> {
        crate::direct::DirectWrites { state: &self.state }
    }

    /// Whether the subscriber was cut off.
    pub fn is_cut_off(&self) -> bool {
        self.state.lagged.load(Ordering::Relaxed)
    }

    /// `Ready` once the stream must end; otherwise registers `cx`'s waker, which a cut-off wakes.
    /// `blocked_since_ms` is when the writer's current write blocked ([`crate::now_ms`]), or 0 if
    /// it is not blocked: only a blocked writer is ended for a stall or a deadline (a writer that
    /// makes progress polls its stream, which ends itself at its deadline), and only then is the
    /// alarm armed. It shares the queue's single waker slot: call it from the task that polls the
    /// subscriber's stream (its writer), the only task waiting on that queue.
    pub fn poll_cut_off(&self, cx: &mut Context<'_>, blocked_since_ms: u64) -> Poll<CutOffReason> {
        // Registered before the flag is read: the shard sets the flag and then closes the queue,
        // which wakes, so a cut-off between the two steps is not missed.
        self.state.queue.register(cx);
        if self.is_cut_off() {
            return Poll::Ready(CutOffReason::TooSlow);
        }
        if blocked_since_ms == 0 {
            return Poll::Pending;
        }
        let now = now_ms();
        let deadline = self.state.deadline_ms.load(Ordering::Relaxed);
        if deadline != 0 && now >= deadline {
            return Poll::Ready(CutOffReason::Deadline);
        }
        let stall = self.state.stall_ms;
        if stall != 0 {
            let limit = blocked_since_ms.saturating_add(stall);
            if now >= limit {
                // Counted with the other slow subscribers, and flagged so the stream's end says so.
                self.state.lagged.store(true, Ordering::Relaxed);
                self.stats
                    .lagged_disconnects
                    .fetch_add(1, Ordering::Relaxed);
                self.stats
                    .stalled_disconnects
                    .fetch_add(1, Ordering::Relaxed);
                return Poll::Ready(CutOffReason::Stalled);
            }
            self.state.arm_alarm_by(limit);
        }
        if deadline != 0 {
            self.state.arm_alarm_by(deadline);
        }
        Poll::Pending
    }
}
