//! Local fan-out: hands every update a node's transport reader produces to the local subscribers
//! that may receive it, without letting one slow subscriber hold up the others.
//!
//! # How an update passes through
//! The transport reader calls [`Fanout::dispatch`] with an `Arc`'d [`Envelope`] (its SSE frame is
//! already encoded). The envelope is sent to each of K shards over a bounded channel; each shard is
//! a task that owns a [`ShardIndex`] of its subscribers and finds the matching ones (exact topics
//! by hash lookup, then `*` subscribers, then each distinct template or URL-pattern selector once),
//! checks private access, and pushes the same `Arc` into each subscriber's bounded queue. A
//! subscriber whose queue is full is cut off and counted: its writer sees it through [`CutOff`],
//! the client reconnects with its last event id and catches up from history, so the hub never
//! buffers without bound and others never wait. A resuming subscriber's history and its live
//! queue meet in [`Resume`]. A subscriber that keeps up is written to by the shard itself, without
//! a queue entry or a wakeup of its stream's task ([`direct`]).
//!
//! # Streams ended from outside
//! Besides a cut-off, the hub ends streams for three reasons, each flagged on the subscriber so its
//! stream can say why: a drain or shutdown ([`Fanout::close_all`], [`Fanout::close_some`]), updates
//! lost before the node read them ([`Fanout::interrupt_all`], ordered with the updates), and a
//! revoked token ([`Fanout::revoke`], at once, for subscribers registered with their token's
//! identity by [`Fanout::subscribe_as`]).
//!
//! # Timers without timers
//! An idle stream still has deadlines: a heartbeat to send, a maximum connection life, a token's
//! expiry. Rather than one Tokio timer per stream (two boxed `Sleep`s, about 220 bytes, per idle
//! subscriber), a stream sets an alarm ([`Subscriber::set_alarm`], a millisecond stamp in its
//! shared state) and each shard task, on a coarse tick ([`FanoutConfig::alarm_tick`]), wakes the
//! streams whose alarm is due. One `Interval` per shard serves every subscriber of the shard. Stamps
//! come from [`now_ms`], which reads Tokio's clock, so tests pause time instead of sleeping. A
//! writer blocked on a full socket uses the same alarm through its [`CutOff`]: it asks to be woken
//! when its write will have been blocked for the dispatch timeout, or at the stream's deadline, so a
//! stalled stream is ended on time whether or not updates arrive.
//!
//! # Layout
//! - [`Fanout`] (this file): the handle the server and the transport reader share; owns the shard tasks.
//! - [`index`]: one shard's subscriber index ([`ShardIndex`]) and the offering of an update.
//! - `queue`: a subscriber's bounded queue (a mutex'd `VecDeque`, empty and unallocated while idle).
//! - [`direct`]: live updates written to the socket by the shard itself while the stream's writer
//!   has nothing to write ([`DirectWrites`], [`DirectSink`]).
//! - [`subscriber`]: what a subscriber asked for ([`SubscriberSpec`]), its private access
//!   ([`Access`]), the [`Subscriber`] handle whose drop unregisters it, and its [`CutOff`].
//! - [`resume`]: replay then live ([`Resume`]), and the node's bound on replay batches in flight
//!   ([`ReplayBudget`]).
//! - [`clock`]: the millisecond clock of alarms and timeouts.
//! - [`stats`]: counters and gauges read by the metrics endpoint.

pub mod clock;
pub mod direct;
pub mod index;
pub(crate) mod queue;
pub mod resume;
pub mod stats;
pub mod subscriber;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use quicksilver_auth::Identity;
use quicksilver_protocol::{Envelope, SelectorStore};
use tokio::sync::mpsc;

pub use clock::now_ms;
pub use direct::{DirectSink, DirectWrites, Sent};
pub use index::ShardIndex;
pub use resume::{ReplayBudget, Resume};
pub use stats::FanoutStats;
pub use subscriber::{Access, CutOff, CutOffReason, Subscriber, SubscriberSpec};

/// Fan-out settings.
#[derive(Clone, Debug)]
pub struct FanoutConfig {
    /// Number of shards (independent dispatch tasks); the number of worker threads is a good value.
    pub shards: usize,
    /// Capacity of each shard's inbound channel; a full channel makes the reader wait.
    pub shard_channel: usize,
    /// Capacity of each subscriber's queue; a subscriber that falls this far behind is cut off.
    pub subscriber_queue: usize,
    /// A subscriber whose queued updates have waited longer than this is cut off too (its
    /// connection stopped draining); `None` disables the check.
    pub dispatch_timeout: Option<std::time::Duration>,
    /// How often each shard wakes the streams whose alarm is due: the precision of heartbeats,
    /// maximum connection lives and token expiries.
    pub alarm_tick: std::time::Duration,
    /// Send each update's direct writes with one io_uring submission per shard instead of a write
    /// per subscriber ([`quicksilver_uring`]), where the kernel allows it (else, and if a ring
    /// fails, one write each, said in the log and in [`FanoutStats::ring_fallbacks`]).
    pub io_uring: bool,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        Self {
            shards: std::thread::available_parallelism().map_or(2, |n| n.get()),
            shard_channel: 1024,
            subscriber_queue: 1024,
            dispatch_timeout: None,
            alarm_tick: std::time::Duration::from_secs(1),
            io_uring: false,
        }
    }
}

/// A shard: its index (shared with the [`Subscriber`] handles, which unregister on drop) and the
/// channel feeding its dispatch task.
struct Shard {
    index: Arc<Mutex<ShardIndex>>,
    inbox: mpsc::Sender<ShardInput>,
}

/// What a shard's dispatch task takes, in the reader's order.
enum ShardInput {
    /// An update to offer.
    Update(Arc<Envelope>),
    /// Updates were lost before the reader read them: end every stream registered up to this
    /// registration number (see [`Fanout::interrupt_all`]).
    Interrupt(u64),
}

/// Handle to the node's fan-out. Cloning is cheap. The shard tasks end when the last handle is
/// dropped (their channels close).
#[derive(Clone)]
pub struct Fanout {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Vec<Shard>,
    next_shard: AtomicUsize,
    queue_capacity: usize,
    stats: Arc<FanoutStats>,
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout")
            .field("shards", &self.inner.shards.len())
            .finish()
    }
}

impl Fanout {
    /// Starts the shard tasks on the current Tokio runtime.
    pub fn start(config: &FanoutConfig, selectors: Arc<SelectorStore>) -> Self {
        let stats = Arc::new(FanoutStats::default());
        let shards = (0..config.shards.max(1))
            .map(|_| {
                let mut shard_index =
                    ShardIndex::new(selectors.clone(), stats.clone(), config.dispatch_timeout);
                if config.io_uring {
                    match quicksilver_uring::SendRing::new(index::RING_BATCH as u32) {
                        Ok(ring) => {
                            shard_index.use_ring(ring);
                            stats.ring_shards.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => {
                            if stats.ring_fallbacks.fetch_add(1, Ordering::Relaxed) == 0 {
                                tracing::warn!(
                                    %error,
                                    "io_uring is not available: direct writes go one at a time"
                                );
                            }
                        }
                    }
                }
                let index = Arc::new(Mutex::new(shard_index));
                let (inbox, rx) = mpsc::channel(config.shard_channel.max(1));
                tokio::spawn(run_shard(index.clone(), rx, config.alarm_tick));
                Shard { index, inbox }
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                shards,
                next_shard: AtomicUsize::new(0),
                queue_capacity: config.subscriber_queue.max(1),
                stats,
            }),
        }
    }

    /// Registers a subscriber; live updates are queued from this moment on. Shards are chosen round
    /// robin so subscribers spread evenly over dispatch tasks.
    pub fn subscribe(&self, spec: SubscriberSpec) -> Subscriber {
        self.subscribe_as(spec, None)
    }

    /// Registers a subscriber authenticated by a token naming `identity`, so that revoking the
    /// token ends its stream ([`Fanout::revoke`]). The identity is the verified token's own
    /// (`Grants::identity`), shared, not copied.
    pub fn subscribe_as(
        &self,
        spec: SubscriberSpec,
        identity: Option<Arc<Identity>>,
    ) -> Subscriber {
        let i = self.inner.next_shard.fetch_add(1, Ordering::Relaxed) % self.inner.shards.len();
        let shard = &self.inner.shards[i];
        let key = shard
            .index
            .lock()
            .insert(spec, identity, self.inner.queue_capacity);
        Subscriber::new(key, shard.index.clone(), self.inner.stats.clone())
    }

    /// Hands one stored update to every shard, in order. Waits when a shard is backed up, which
    /// slows the transport reader rather than dropping anything.
    pub async fn dispatch(&self, envelope: Arc<Envelope>) {
        for shard in &self.inner.shards {
            // A send fails only if the shard task is gone, which happens only at shutdown.
            let _ = shard.inbox.send(ShardInput::Update(envelope.clone())).await;
        }
    }

    /// Ends every local subscriber's stream, after the updates dispatched before this call and
    /// before any dispatched after it, marking it interrupted ([`Subscriber::was_interrupted`]).
    ///
    /// The transport reader calls this when updates were lost before it read them (its stream was
    /// trimmed past what it had read, or recreated): its subscribers have a hole they cannot see.
    /// Ended, they reconnect with their last event id and are told by the history lookup whether
    /// they missed something, instead of silently going on after the hole.
    pub async fn interrupt_all(&self) {
        for shard in &self.inner.shards {
            // Only the subscribers registered by now: one that registers later reads its
            // history after the loss, while this message waits behind the shard's updates.
            let registered_up_to = shard.index.lock().last_registered();
            let _ = shard
                .inbox
                .send(ShardInput::Interrupt(registered_up_to))
                .await;
        }
    }

    /// Ends the stream of every local subscriber registered with an identity that `revoked`
    /// says is revoked ([`Subscriber::was_revoked`]), after what it already holds; returns how
    /// many. Each shard is scanned once under its lock: revocations are rare, and a check is a
    /// couple of hash lookups, so even a large shard is held for milliseconds.
    pub fn revoke(&self, revoked: impl Fn(&Identity) -> bool) -> usize {
        self.inner
            .shards
            .iter()
            .map(|shard| shard.index.lock().revoke(&revoked))
            .sum()
    }

    /// Counters and gauges.
    pub fn stats(&self) -> &FanoutStats {
        &self.inner.stats
    }

    /// Closes every local subscription (used at shutdown and drain); their streams end after the
    /// updates already queued.
    pub fn close_all(&self) {
        for shard in &self.inner.shards {
            shard.index.lock().clear();
        }
    }

    /// Closes up to `n` local subscriptions, taking them from each shard in turn, and returns how many
    /// were closed. Draining calls this on a timer so clients reconnect elsewhere gradually rather
    /// than all at once.
    pub fn close_some(&self, n: usize) -> usize {
        let shards = self.inner.shards.len();
        let mut closed = 0;
        let mut idle_rounds = 0;
        let mut i = 0;
        while closed < n && idle_rounds < shards {
            let got = self.inner.shards[i % shards].index.lock().close_one();
            if got {
                closed += 1;
                idle_rounds = 0;
            } else {
                idle_rounds += 1;
            }
            i += 1;
        }
        closed
    }

    /// Number of subscribers currently registered on this node.
    pub fn subscriber_count(&self) -> usize {
        self.inner.shards.iter().map(|s| s.index.lock().len()).sum()
    }
}

/// A shard's dispatch loop: takes updates in order and delivers each under the index lock, and on
/// every alarm tick wakes the streams whose alarm is due. The lock is a plain mutex held without
/// `.await`: delivery only pushes into bounded queues, so the critical section is short and never
/// blocks on a subscriber.
async fn run_shard(
    index: Arc<Mutex<ShardIndex>>,
    mut inbox: mpsc::Receiver<ShardInput>,
    alarm_tick: std::time::Duration,
) {
    let mut batch = Vec::with_capacity(64);
    let mut tick = tokio::time::interval(alarm_tick.max(std::time::Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            n = inbox.recv_many(&mut batch, 64) => {
                if n == 0 {
                    break;
                }
                let mut index = index.lock();
                // One update in hand: the shard keeps up, and writes to sockets itself where it
                // can. More: it is behind, and queues them all, so each stream's writer sends
                // what is queued for it in one write rather than the shard one write per update.
                let direct = n == 1;
                for input in batch.drain(..) {
                    match input {
                        ShardInput::Update(envelope) => index.deliver(&envelope, direct),
                        ShardInput::Interrupt(registered_up_to) => {
                            let ended = index.interrupt_all(registered_up_to);
                            if ended > 0 {
                                tracing::debug!(ended, "streams interrupted by a history gap");
                            }
                        }
                    }
                }
            }
            _ = tick.tick() => index.lock().ring_alarms(now_ms()),
        }
    }
}
