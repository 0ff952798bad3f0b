//! Transports: the one place an update is stored and given its place in the hub's order.
//!
//! A publish is acknowledged only after [`Transport::publish`] returns: the update is then stored
//! and will be delivered. Every node runs the transport's reader, which hands each stored update, in
//! transport order, to an [`UpdateSink`] (the node's fan-out). The publishing node does not shortcut
//! to its own subscribers: it receives its updates from its reader like every other node, so all
//! nodes deliver in the same order. [`Transport::history`] answers reconnecting subscribers.
//!
//! # Layout
//! - [`Transport`], [`UpdateSink`], [`HistoryReply`], [`TransportError`], and the [`Scope`] and
//!   [`Interest`] that tell a transport what its node must read (this file).
//! - [`memory`]: the embedded single-node transport, a bounded ring buffer with O(1) id lookup.
//! - [`redis`]: Redis Streams shared by every node (optionally partitioned over Redis Cluster), with a
//!   per-node tail cache answering history.
//! - [`limits`]: the counters behind rate limits and connection caps (in process, or in Redis
//!   with a lease per node).
//! - [`retention`]: retention per topic, rules giving topics history windows of their own
//!   (classes), which both transports keep apart.
//! - [`revocations`]: the revoked tokens every node enforces (in memory, or in Redis with a log of
//!   changes that nodes follow).
//! - [`subscriptions`]: the cluster-wide registry of active subscriptions (in memory, or in Redis
//!   with a lease per node and reaping of dead nodes' subscriptions).
//! - [`trace_context`]: the spans around storing and dispatching an update, and the W3C trace
//!   context stored with it so other nodes' readers continue the publisher's trace.

pub mod limits;
pub mod memory;
pub mod redis;
pub mod retention;
pub mod revocations;
pub mod subscriptions;
pub mod trace_context;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use quicksilver_protocol::{Envelope, Position, Update};
use thiserror::Error;

pub use limits::{
    Admission, CapExceeded, ConnectionCap, ConnectionSlot, Limiter, LimiterStats, MemoryLimiter,
    Rate, RateDecision, RedisLimiter,
};
pub use memory::MemoryTransport;
pub use redis::{RedisConfig, RedisTransport};
pub use retention::{ClassSet, Retention, RetentionError, Window};
pub use revocations::{
    MemoryRevocations, PutOutcome, RedisRevocations, RevocationRecord, RevocationStore,
};
pub use subscriptions::{
    MemoryRegistry, OrphanHandler, RedisSubscriptionRegistry, RegistryOptions, RegistryStats,
    SubscriptionRecord, SubscriptionRegistry,
};

/// Why a transport could not do what was asked.
#[derive(Debug, Error)]
pub enum TransportError {
    /// The backing store cannot be reached now; the request may be retried.
    #[error("transport unavailable: {0}")]
    Unavailable(String),
    /// The transport is shutting down.
    #[error("transport closed")]
    Closed,
    /// Stored data could not be decoded.
    #[error("corrupt stream entry: {0}")]
    Corrupt(String),
}

/// Where a reader hands the stored updates, in transport order.
#[async_trait]
pub trait UpdateSink: Send + Sync + 'static {
    /// Takes one update. May wait (back-pressure on the reader); must not drop it.
    async fn deliver(&self, envelope: Arc<Envelope>);

    /// Updates were lost before this node's reader read them: the stream was trimmed past what the
    /// reader had read, or recreated, or rolled back by a failover. Called in order: after every
    /// update read before the loss and before any read after it. The node's subscribers may have
    /// matched the lost updates and cannot see the hole: the sink must tell them (end their
    /// streams so they resume with their last event id), never just log.
    async fn gap(&self, gap: Gap);
}

/// Updates lost before a node's reader read them (see [`UpdateSink::gap`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    /// The partition (stream) that lost them.
    pub partition: u16,
    /// How many, when the transport can count them.
    pub missed: Option<u64>,
    /// How they were lost.
    pub cause: GapCause,
}

/// Why updates were lost before a reader read them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GapCause {
    /// The stream was trimmed (length or age limit) past the last entry the reader had read: the
    /// reader fell further behind than the stream retains.
    Trimmed,
    /// The stream was recreated (its epoch changed: Redis restarted without persistence, or the
    /// stream was deleted).
    Recreated,
    /// The stream no longer holds entries the reader had read (a replica without them took over
    /// after a failover): what was published after them may be missing too.
    RolledBack,
}

impl GapCause {
    /// A short name for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            GapCause::Trimmed => "trimmed",
            GapCause::Recreated => "recreated",
            GapCause::RolledBack => "rolled_back",
        }
    }
}

/// The updates a reconnecting subscriber missed.
#[derive(Debug, Default)]
pub struct HistoryReply {
    /// The id the replay starts after: the requested id when it was found, `None` when the
    /// subscriber asked for `earliest` or the id is unknown (answered as `earliest`).
    pub anchor: Option<String>,
    /// Every retained update after the anchor, in transport order (not yet filtered by topic or
    /// access: the caller knows the subscriber).
    pub entries: Vec<Arc<Envelope>>,
    /// Per partition the read covered, the newest position it covered, which may be later than the
    /// last entry returned for that partition (or cover a partition none was returned for). Live
    /// updates at or before it were covered by this read: replay-then-live drops them, taking per
    /// partition the later of this and the last entry's position. May be empty (then the entries'
    /// positions are all there is).
    pub high_water: Vec<Position>,
}

/// What a subscriber may match, as far as choosing what its node reads goes (see
/// [`Transport::interest`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Any update: a subscriber with a `*`, URI template or URL pattern selector. On a partitioned
    /// transport it makes its node read every partition.
    All,
    /// Only updates with at least one of these exact topics (canonical or alternate).
    Topics(Vec<String>),
    /// Updates with one of these exact topics, or with a topic starting with one of these
    /// prefixes (the literal starts of a subscriber's URI templates). Reads every partition, as
    /// [`Scope::All`] does; history reads only the retention classes such topics may belong to
    /// (see [`retention`]).
    Matching {
        /// Exact topics.
        topics: Vec<String>,
        /// Literal starts of URI templates.
        prefixes: Vec<String>,
    },
}

/// A subscriber's hold on the reading it needs: while it lives, its node's reader(s) deliver every
/// update the subscriber's [`Scope`] may match. Dropping it lets the transport stop reading what no
/// one else holds. It also bounds history lookups to what it covers
/// ([`Transport::history_within`]).
pub struct Interest {
    /// The history streams (partitions, and the subscription events' index) it covers; `None`:
    /// every stream.
    streams: Option<Arc<[u16]>>,
    /// Whatever the transport releases when the hold is dropped.
    _hold: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for Interest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interest")
            .field("streams", &self.streams)
            .finish_non_exhaustive()
    }
}

impl Interest {
    /// A hold on everything that holds nothing: for a transport that reads everything anyway.
    pub fn everything() -> Self {
        Self {
            streams: None,
            _hold: None,
        }
    }

    /// A hold covering `streams` (`None`: all), releasing `hold` when dropped.
    pub fn new(
        streams: Option<Vec<u16>>,
        hold: Option<Box<dyn std::any::Any + Send + Sync>>,
    ) -> Self {
        Self {
            streams: streams.map(Into::into),
            _hold: hold,
        }
    }

    /// The history streams it covers; `None` for all of them.
    pub fn streams(&self) -> Option<&[u16]> {
        self.streams.as_deref()
    }
}

/// Counters a transport exposes to the metrics endpoint; zeros where a transport has no such thing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Times a reader had to reconnect to its backing store.
    pub reader_reconnects: u64,
    /// Errors talking to the backing store (reads, writes, pings).
    pub errors: u64,
    /// Stream entries stored but not yet read by this node's readers (summed over partitions).
    pub reader_lag: u64,
    /// History requests answered from the node's memory.
    pub history_cache_hits: u64,
    /// History requests that had to scan the backing store.
    pub history_cache_misses: u64,
    /// Times a stream was found recreated (its history lost).
    pub epoch_changes: u64,
    /// Times a reader found updates lost before it read them (each told to the sink as a
    /// [`Gap`]).
    pub gaps: u64,
    /// Updates lost before this node's readers read them, as far as they could be counted.
    pub missed_entries: u64,
    /// Partitions this node reads now (a transport that reads everything: all of them).
    pub partitions_read: u64,
    /// Connections this node's readers hold open now (one per reader group it reads: a
    /// transport without separate reader connections reports 0).
    pub reader_connections: u64,
    /// Round trips that carried publishes' appends to the backing store (a transport without one
    /// reports 0).
    pub append_round_trips: u64,
    /// Appends those round trips carried: over `append_round_trips`, how many publishes shared a
    /// round trip on average.
    pub appends: u64,
}

/// What a transport holds for one retention class (see [`retention`]), for the metrics endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassStats {
    /// The class ([`Window::tag`]).
    pub class: Arc<str>,
    /// Updates this node published in the class since the class came into force here (an update
    /// stored in several partitions counts once per copy; a class of length 0 counts what it did
    /// not keep).
    pub stored: u64,
    /// Updates of the class this node holds in memory (its history, or its tail caches).
    pub held: u64,
}

/// A place updates are stored, ordered and read back.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Stores an update and returns its position. Returning `Ok` means the update is stored and
    /// will reach every node's reader.
    ///
    /// Implementations run in a [`trace_context::PUBLISH_SPAN`] span and store
    /// [`trace_context::current`] with the update; their readers wrap each hand-off to the sink in
    /// [`trace_context::dispatch_span`].
    async fn publish(&self, update: Update) -> Result<Position, TransportError>;

    /// Stores a subscription event (an update the hub publishes about its own subscriptions) and
    /// returns its position, as [`Transport::publish`] does, but with a retention of its own: a
    /// flood of connections never pushes real updates out of history. Events still take their
    /// place in the one order every node delivers and history replays.
    async fn publish_event(&self, update: Update) -> Result<Position, TransportError>;

    /// The retained updates after `last_event_id` (`earliest`: all of them). An unknown id yields no
    /// entries and no anchor: the client is told `earliest` rather than left silently behind.
    async fn history(&self, last_event_id: &str) -> Result<HistoryReply, TransportError>;

    /// The retained updates after `last_event_id` in the streams `interest` covers and the
    /// retention classes a subscriber of `scope` may match (see [`retention`]): what a subscriber
    /// holding `interest` may match (the caller filters by topic and access). Cheaper than
    /// [`Transport::history`] on a partitioned transport, and sound while only the streams the
    /// node holds an interest in are read.
    async fn history_within(
        &self,
        last_event_id: &str,
        interest: &Interest,
        scope: &Scope,
    ) -> Result<HistoryReply, TransportError> {
        let _ = (interest, scope);
        self.history(last_event_id).await
    }

    /// Makes this node read what a subscriber of `scope` may match, until the returned [`Interest`]
    /// is dropped. Returns once that reading has found its place: every update stored from then on
    /// reaches the sink; what was stored before is history. A transport that reads everything
    /// anyway answers at once.
    async fn interest(&self, scope: &Scope) -> Result<Interest, TransportError> {
        let _ = scope;
        Ok(Interest::everything())
    }

    /// Applies retention rules (see [`retention`]) to the updates published from now on, and to
    /// history reads. Classes whose window is still named keep their history; the history of a
    /// class no rule names any more is no longer read. A transport without per-topic retention
    /// ignores it.
    fn set_retention(&self, retention: Arc<Retention>) {
        let _ = retention;
    }

    /// Starts this node's reader(s), which hand stored updates to `sink` in transport order until
    /// the transport is closed: every update, or (a transport reading on interest) those that the
    /// held [`Interest`]s may match.
    fn start_reader(&self, sink: Arc<dyn UpdateSink>);

    /// Whether the transport can currently store and read updates (readiness probe).
    fn is_ready(&self) -> bool;

    /// Counters for the metrics endpoint.
    fn stats(&self) -> TransportStats {
        TransportStats::default()
    }

    /// Per retention class in force, what it stored and holds (for the metrics endpoint).
    fn retention_stats(&self) -> Vec<ClassStats> {
        Vec::new()
    }

    /// A short name for logs and metrics (`memory`, `redis`).
    fn name(&self) -> &'static str;
}

/// Microseconds since the Unix epoch, stamped on updates when accepted (for latency metrics).
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
