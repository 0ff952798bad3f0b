//! The Redis Streams transport: updates are stored in Redis streams shared by every node, which is
//! what lets the hub scale out horizontally.
//!
//! # How an update travels
//! A publish encodes the update once (see `entry`) and appends it with
//! `XADD <stream> MAXLEN ~ <history_size> * v 1 u <bytes>` through a small set of shared multiplexed
//! connections, publishes to one partition that arrive during an append's round trip going together
//! in the next (see `appends`); the position (partition and stream entry id) is returned only after Redis replied,
//! so `Ok` means stored. Any failure, including no answer within `command_timeout`, is
//! [`TransportError::Unavailable`] (the server answers 503 with `Retry-After`). A publish that timed out
//! may still have been stored: a publisher retrying it can produce a duplicate.
//!
//! A node reads the partitions it needs in reader groups (see `interest`): one task per group, on
//! its own connection, one `XREAD BLOCK` over the group's streams, that appends what it reads to
//! the node's tail caches and then hands it to the fan-out, in stream order per partition. The publishing node receives its own updates the same way, so every node delivers the
//! same order.
//!
//! # Partitions
//! With `partitions = 1` there is one stream, `<prefix>:updates`, and one total order; this works
//! with a plain Redis and with Redis Cluster. With `P > 1` (for Redis Cluster, to spread the write
//! load over masters) an update goes to stream `hash(canonical topic) mod P`, named
//! `<prefix>:{<tag>}` with tags chosen so the streams spread evenly over the cluster's hash slots.
//! Order then holds per partition: updates of one topic keep their order, updates of different
//! topics in different partitions may be seen in different relative orders by different nodes.
//!
//! **Alternate topics.** A subscriber of an exact topic must find, in that topic's partition,
//! every update it may match, including those for which the topic is an alternate. So an update
//! whose topics hash to several partitions is stored once in each of them (one `XADD` per
//! partition, the publish acknowledged once all are stored), every copy carrying the partition of
//! each of the update's topics (see `entry`). A subscriber takes only the copy stored in the
//! partition of the first of the update's topics it matches
//! ([`quicksilver_protocol::Envelope::is_copy_for`], applied
//! by the fan-out and by replay), so it gets the update once even on a node that reads several of
//! those partitions, and every update it gets through a given exact topic comes from that
//! topic's partition, in that partition's one order, on every node. An update stored once (one
//! topic, or all its topics in one partition, and always with one partition) has no copies. The
//! cost is one more `XADD` (and one more entry of history) per extra partition an update's topics
//! reach. Nodes of a version before this rule store an update once, in its canonical topic's
//! partition, and read every partition; during a rolling upgrade their subscribers of an
//! alternate topic may get an update once per copy.
//!
//! # Reading on interest
//! With `read_on_interest` (the server's choice), a node reads only the partitions its subscribers
//! may match: a subscriber's exact topics name one partition each (an exact topic that is a
//! subscription topic adds partition 0, whose reader also reads the subscription events); a `*`,
//! URI template or URL pattern selector may match any topic, so one such subscriber makes its
//! node read every partition. A reader starts when the first subscriber needing its partition
//! arrives, and stops `idle_reader_linger` after the last one left; a subscriber is answered once
//! the readers it needs have found their place, so nothing is missed between its registration and
//! its history lookup (see `interest`). History lookups read only the streams of the subscriber's
//! partitions. A node's Redis work then follows the topics of its subscribers rather than the
//! whole hub's traffic, which is what topic-affine routing at the load balancer makes small.
//!
//! **Resuming in partitioned mode.** A last event id names an update stored in one partition `p`.
//! The replay holds every retained update of `p` after it (exactly as with one partition) and, for
//! every other partition `q`, every retained update of `q` whose stream-id time is at or after the
//! resume point's stream-id time minus `resume_margin`, merged in one deterministic order (stream-id
//! time, then partition index, then sequence). Nothing is lost as long as the Redis masters' clocks,
//! plus how far one partition's reader ran behind another's on the node the subscriber was connected
//! to, differ by less than `resume_margin` (default 5 s; reader lag is milliseconds on a healthy node,
//! up to the reconnect back-off while a reader reconnects). Updates of other partitions stored within
//! the margin before the resume point may be replayed although the subscriber already had them:
//! duplicates are possible, but never for updates of the resume point's own partition, and never
//! beyond the margin.
//!
//! # History
//! `history` answers from the node's tail cache when it can (an id → position index, O(1), and no
//! Redis round trip: what keeps the resume storm after a node's death cheap), and otherwise scans
//! the streams' retained entries in batches (`XREVRANGE`, at most `history_size` per partition),
//! merging identical concurrent scans into one. A reused event id resolves to its earliest retained
//! occurrence. An unknown id yields no anchor and no entries (the client is told `earliest`).
//! [`HistoryReply::high_water`] lists, per partition read, the newest position the read covered, so
//! the server's replay-then-live filter also drops live updates the read covered but did not return.
//!
//! # Retention per topic
//! With retention rules (see [`crate::retention`]) a partition's stream only carries updates to
//! the readers: it is trimmed to `MIN_STREAM_LEN` (1000) entries, what a reader that fell behind
//! needs. History lives beside it, in one stream per retention class and partition,
//! `<stream>:retain:<class>` in the partition's hash slot. One script stores an update in the
//! partition's stream (with an `r` field naming its classes) and in the stream of each class of
//! its topics that keeps history, under the same stream id, each trimmed to its own length
//! (`MAXLEN ~`) and age (`MINID ~`, and a `PEXPIRE` of the age plus a minute, so a class left alone
//! does not outlive its window); a class of length 0 costs nothing. A busy class trims only
//! itself. Positions are the partition stream's in every class, so replay-then-live, the
//! high-water marks and the resume rules above hold unchanged. Readers fill one tail cache per
//! class from the `r` field (warmed from the class streams), and history reads the classes a
//! subscriber may match (see `history`). Without rules nothing of this exists: the partition's
//! stream is the history, as before.
//!
//! # Stream epochs: knowing when history was lost
//! Beside each stream lives a marker, `<stream>:epoch` (in the stream's hash slot), holding a random
//! value set with `SET NX` when the stream is first used. If Redis restarts without persistence, or
//! the stream and its marker are deleted, the next reader to connect sets a new value. A reader that
//! sees the value change (on reconnection, or within 5 s while connected) knows the old positions
//! mean nothing: unless the stream still holds the last entry it read (then only the marker was lost),
//! it empties its tail cache, logs a warning, counts it ([`RedisStats::epoch_changes`]) and reads
//! the new stream from its start. Subscribers resuming with an id from before are then not found in
//! the cache nor in Redis, so they get no anchor and are told `earliest` rather than a silently
//! partial replay. (Event ids are chosen by publishers and not tied to an epoch: an id reused in the
//! new stream is resolved there.) A reader that finds the stream trimmed past what it had read (it
//! fell further behind than the stream retains) logs and counts that too ([`RedisStats::trimmed_gaps`]).
//!
//! # Readiness
//! [`Transport::is_ready`] is true once the readers are started, no running reader is failing (and,
//! reading every partition, each has connected once), and the shared connections reach Redis (checked by publishes and a `PING` every second).
//!
//! # Layout
//! - `config`: [`RedisConfig`] and its validation.
//! - `keys`: stream names, CRC16 hash slots, the partition tag table and the topic → partition hash.
//! - `entry`: the versioned stream entry format.
//! - `connection` and `pool`: plain or cluster connections, timeouts, the shared connections.
//! - `commands`: the Redis commands sent and their replies.
//! - `interest`: which partitions this node reads, the reader groups they form, starting and
//!   stopping their tasks.
//! - `reader`: a reader group's task, and each partition's reading within it. `cache`: the tail caches it fills (one per retention
//!   class with rules).
//! - `history`: cache and Redis history lookups; `singleflight`: merging identical scans.
//! - `status`: readiness flags and [`RedisStats`].
//! - `script`: Lua scripts sent by digest (`EVALSHA`), for the limiter.

mod appends;
mod cache;
mod commands;
mod config;
mod connection;
mod entry;
mod history;
mod interest;
mod keys;
pub(crate) mod pool;
mod reader;
pub(crate) mod script;
mod singleflight;
mod status;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::RwLock;
use quicksilver_protocol::{Position, Update};
use tokio_util::sync::CancellationToken;

pub use config::{
    RedisConfig, RedisConfigError, DEFAULT_BATCH_WINDOW, DEFAULT_HISTORY_MAX_BYTES,
    DEFAULT_IDLE_READER_LINGER, DEFAULT_READER_PARTITIONS, DEFAULT_READ_BUDGET,
    DEFAULT_TAIL_CACHE_CAP, MAX_BATCH_WINDOW,
};
/// The stream entry codec, public for the codec benchmark.
pub use entry::{decode_payload as decode_entry, encode as encode_entry, EntryError};
pub use keys::{crc16, hash_slot, PartitionHash};
pub use status::RedisStats;

use cache::StreamHistory;
use config::Settings;
use connection::{CallError, Connector};
use interest::{Hold, Readers};
use keys::StreamKeys;
use pool::ConnectionPool;
use singleflight::SingleFlight;
use status::{Counters, Health, ReaderState};

use crate::retention::{Class, Retention, Window};
use crate::{
    now_micros, HistoryReply, Interest, Scope, Transport, TransportError, TransportStats,
    UpdateSink,
};

/// How much longer than its maximum age a retention class's stream lives after its last write.
const CLASS_EXPIRY_SLACK_MS: u64 = 60_000;

/// How often the shared connections are checked with `PING` for readiness.
const PING_EVERY: Duration = Duration::from_secs(1);

/// The Redis Streams transport (see the module docs). Dropping it (or [`close`](Self::close))
/// stops its reader and health tasks.
pub struct RedisTransport {
    shared: Arc<Shared>,
    readers: Arc<Readers>,
    /// Every partition, held for the node's life when it does not read on interest.
    permanent: parking_lot::Mutex<Option<Hold>>,
    shutdown: CancellationToken,
    closed: AtomicBool,
}

impl std::fmt::Debug for RedisTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTransport")
            .field("streams", &self.stream_keys())
            .finish_non_exhaustive()
    }
}

/// State shared by the transport handle, its readers and its history scans.
pub(crate) struct Shared {
    pub(crate) settings: Settings,
    /// Index = partition.
    keys: Vec<StreamKeys>,
    pub(crate) pool: Arc<ConnectionPool>,
    /// Publishes' appends, sent a batch per partition per round trip (see `appends`).
    appends: Arc<appends::Appends>,
    /// Opens readers' own connections, whose response timeout covers a blocking read.
    reader_connector: Connector,
    /// Index = partition, then one more for the subscription events (index `partitions`): the
    /// tail caches each reader fills (one per retention class with rules). A blocking lock: only
    /// the reader writes, history reads copy slices; no `.await` happens while it is held.
    caches: Vec<RwLock<StreamHistory>>,
    /// The retention rules publishes follow (see `crate::retention`); replaced on reload.
    retention: RwLock<Arc<Retention>>,
    /// Per retention class in force, the updates this node published in it (for metrics).
    published: RwLock<Vec<(Arc<str>, Arc<AtomicU64>)>>,
    /// Index = partition: entries stored but not yet read by that partition's reader, as last
    /// measured (0 whenever a read returned less than a full batch: the reader is caught up).
    lags: Vec<std::sync::atomic::AtomicU64>,
    health: Health,
    counters: Counters,
    flights: SingleFlight<history::Flight>,
    /// Index as `caches`: the newest position the reader has read and cached (`None` before its
    /// first warm-up). History waits on it before calling an id unknown (see `history`); events
    /// are published following partition 0's.
    progress: Vec<tokio::sync::watch::Sender<Option<Position>>>,
    /// History lookups talking to Redis at once (`max_history_scans`).
    scans: tokio::sync::Semaphore,
    /// Reader connections open now (one per reader group being read).
    reader_connections: AtomicU64,
}

impl Shared {
    /// The retention rules in force.
    pub(crate) fn retention(&self) -> Arc<Retention> {
        self.retention.read().clone()
    }

    /// The tail cache capacity of a history that retains `length` entries.
    pub(crate) fn cache_capacity(&self, length: usize) -> usize {
        self.settings
            .tail_cache_size
            .unwrap_or(length.min(DEFAULT_TAIL_CACHE_CAP))
            .min(length)
    }

    /// The partition index of subscription events' positions (one past the update partitions).
    pub(crate) fn events_partition(&self) -> u16 {
        self.settings.partitions
    }

    /// The history streams (cache indexes) partition `partition`'s reader fills: its updates, and
    /// for partition 0 the subscription events too.
    pub(crate) fn streams_of(&self, partition: u16) -> impl Iterator<Item = usize> {
        let events = (partition == 0).then_some(usize::from(self.events_partition()));
        std::iter::once(usize::from(partition)).chain(events)
    }

    /// Forgets what a stopped reader read: its caches are emptied (not complete: history asks
    /// Redis), its position and lag cleared.
    pub(crate) fn forget(&self, partition: u16) {
        for index in self.streams_of(partition) {
            if let Some(history) = self.caches.get(index) {
                let mut history = history.write();
                history.read = None;
                history.reset(false);
            }
            if let Some(progress) = self.progress.get(index) {
                progress.send_replace(None);
            }
        }
        if let Some(lag) = self.lags.get(usize::from(partition)) {
            lag.store(0, Ordering::Relaxed);
        }
    }
}

/// How long a subscriber waits, at most, for the readers it needs to find their place, in command
/// timeouts (a first connection warms the tail cache in a few commands).
const POSITION_WAIT_TIMEOUTS: u32 = 3;

/// Whether `topic` may be a subscription event's topic (`…/.well-known/mercure/subscriptions…`),
/// whose stream partition 0's reader reads.
fn is_subscription_topic(topic: &str) -> bool {
    topic.contains("/.well-known/mercure/subscriptions")
}

impl RedisTransport {
    /// A transport for `config`. Nothing is sent to Redis yet: connections open on first use, so a
    /// node can start while Redis is down (it is simply not ready).
    pub fn new(config: RedisConfig) -> Result<Self, RedisConfigError> {
        let settings = Settings::resolve(&config)?;
        let pool_connector = Connector::new(&settings, settings.command_timeout)?;
        let reader_connector =
            Connector::new(&settings, settings.block + settings.command_timeout)?;
        let stream_keys = keys::stream_keys(
            &settings.prefix,
            settings.partitions,
            settings.partition_slots,
        );
        let pool = Arc::new(ConnectionPool::new(
            pool_connector,
            settings.pool_size,
            settings.command_timeout,
        ));
        let shared = Shared {
            appends: Arc::new(appends::Appends::new(
                pool.clone(),
                usize::from(settings.partitions),
            )),
            pool,
            reader_connector,
            lags: (0..settings.partitions)
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
            caches: stream_keys
                .iter()
                .map(|k| {
                    RwLock::new(StreamHistory::single(
                        k.stream.clone(),
                        settings.history_size,
                        settings.max_age,
                        settings.cache_capacity,
                        settings.history_max_bytes,
                    ))
                })
                .chain(std::iter::once(RwLock::new(StreamHistory::single(
                    stream_keys[0].events.clone(),
                    settings.event_history,
                    settings.max_age,
                    settings.event_cache_capacity,
                    settings.history_max_bytes,
                ))))
                .collect(),
            retention: RwLock::new(Arc::new(Retention::global(Window {
                length: settings.history_size,
                max_age: settings.max_age,
            }))),
            published: RwLock::new(vec![(
                Window {
                    length: settings.history_size,
                    max_age: settings.max_age,
                }
                .tag()
                .into(),
                Arc::default(),
            )]),
            health: Health::new(settings.partitions),
            counters: Counters::default(),
            flights: SingleFlight::new(),
            progress: (0..=settings.partitions)
                .map(|_| tokio::sync::watch::channel(None).0)
                .collect(),
            scans: tokio::sync::Semaphore::new(settings.max_history_scans),
            reader_connections: AtomicU64::new(0),
            keys: stream_keys,
            settings,
        };
        let shared = Arc::new(shared);
        let shutdown = CancellationToken::new();
        let starting_state = if shared.settings.read_on_interest {
            // A reader starting for a subscriber does not make the node unready: the subscriber
            // waits for it.
            ReaderState::Idle
        } else {
            ReaderState::Connecting
        };
        Ok(Self {
            readers: Readers::new(shared.clone(), shutdown.child_token(), starting_state),
            permanent: parking_lot::Mutex::new(None),
            shared,
            shutdown,
            closed: AtomicBool::new(false),
        })
    }

    /// The partitions a subscriber of `scope` may match (see "Reading on interest").
    pub fn partitions_for(&self, scope: &Scope) -> Vec<u16> {
        let partitions = self.shared.settings.partitions;
        let hash = self.shared.settings.partition_hash;
        match scope {
            Scope::All | Scope::Matching { .. } => (0..partitions).collect(),
            Scope::Topics(topics) => {
                let mut out: Vec<u16> = topics
                    .iter()
                    .map(|t| keys::partition_of(t, partitions, hash))
                    .chain(topics.iter().any(|t| is_subscription_topic(t)).then_some(0))
                    .collect();
                out.sort_unstable();
                out.dedup();
                out
            }
        }
    }

    /// How many partitions this node reads now.
    pub fn partitions_read(&self) -> usize {
        self.readers.reading()
    }

    /// How many connections this node's readers hold open now (one per reader group read).
    pub fn reader_connections(&self) -> u64 {
        self.shared.reader_connections.load(Ordering::Relaxed)
    }

    /// Stores `payload` in `partition` and in the history streams there of `classes` (the
    /// retention classes of the update's topics in this partition; empty without rules); the
    /// position, or why not.
    async fn store(
        &self,
        partition: u16,
        payload: &[u8],
        classes: &[&Class],
    ) -> Result<Position, TransportError> {
        let shared = &self.shared;
        let settings = &shared.settings;
        let keys = &shared.keys[usize::from(partition)];
        let key = &keys.stream;
        if !classes.is_empty() {
            // The partition's stream only has to cover its readers' lag: history is in the classes'
            // streams, each trimmed to its own window in the same script.
            let tags: Vec<&str> = classes.iter().map(|c| &**c.tag()).collect();
            let names: Vec<String> = classes
                .iter()
                .filter(|c| c.keeps_history())
                .map(|c| keys.class(c.tag()))
                .collect();
            let now_ms = now_micros() / 1_000;
            let streams: Vec<commands::ClassStream<'_>> = classes
                .iter()
                .filter(|c| c.keeps_history())
                .zip(&names)
                .map(|(class, name)| {
                    let window = class.window();
                    let age_ms = window.max_age.map(|a| a.as_millis() as u64);
                    commands::ClassStream {
                        key: name,
                        max_len: window.length,
                        min_ms: age_ms.map(|a| now_ms.saturating_sub(a)),
                        // Everything in it is past its age by then: let Redis drop it if no
                        // publish comes to trim it.
                        expire_ms: age_ms.map(|a| a + CLASS_EXPIRY_SLACK_MS),
                    }
                })
                .collect();
            let stored = commands::xadd_retained(
                &shared.pool,
                key,
                config::MIN_STREAM_LEN,
                payload,
                &tags.join(","),
                &streams,
            )
            .await;
            let stored = self.stored(partition, stored);
            if stored.is_ok() {
                let published = shared.published.read();
                for (class, count) in published.iter() {
                    if tags.contains(&&**class) {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            return stored;
        }
        if let Some((_, count)) = shared.published.read().first() {
            // Without rules, the default class.
            count.fetch_add(1, Ordering::Relaxed);
        }
        let xadd = commands::xadd(key, settings.stream_len, payload);
        let stored: Result<String, CallError> = match settings.age_cutoff_ms() {
            None => shared.appends.append(partition, xadd, payload.len()).await,
            Some(min_ms) => {
                // XADD takes one trim strategy; the age limit is a second command in the same
                // round trip.
                let mut pipe = redis::pipe();
                pipe.add_command(xadd)
                    .add_command(commands::xtrim_minid(key, min_ms))
                    .ignore();
                shared
                    .pool
                    .query_pipeline::<(String,)>(&pipe)
                    .await
                    .map(|(id,)| id)
            }
        };
        self.stored(partition, stored)
    }

    /// Stops the readers; later publishes fail with [`TransportError::Closed`].
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.shutdown.cancel();
        self.readers.close();
        self.permanent.lock().take();
    }

    /// Counters since creation (for metrics).
    pub fn stats(&self) -> RedisStats {
        self.shared.counters.snapshot()
    }

    /// The stream keys, index = partition.
    pub fn stream_keys(&self) -> Vec<String> {
        self.shared.keys.iter().map(|k| k.stream.clone()).collect()
    }

    /// The cluster-wide registry of active subscriptions, kept in this transport's Redis under its key
    /// prefix and sharing its connections (see [`crate::subscriptions::redis`]). Call
    /// [`SubscriptionRegistry::start`](crate::SubscriptionRegistry::start) to begin renewing this
    /// node's lease and sweeping dead nodes.
    pub fn subscription_registry(
        &self,
        options: crate::subscriptions::RegistryOptions,
    ) -> Arc<crate::subscriptions::RedisSubscriptionRegistry> {
        Arc::new(crate::subscriptions::RedisSubscriptionRegistry::new(
            self.shared.pool.clone(),
            &self.shared.settings.prefix,
            options,
        ))
    }

    /// The cluster's revocations, kept beside the streams (see [`crate::revocations::redis`]).
    pub fn revocation_store(&self) -> Arc<crate::revocations::RedisRevocations> {
        Arc::new(crate::revocations::RedisRevocations::new(
            self.shared.pool.clone(),
            &self.shared.settings.prefix,
        ))
    }

    /// The cluster-wide limiter of rates and connection caps, on this transport's shared
    /// connections and key prefix (see [`crate::limits::redis`]).
    pub fn limiter(
        &self,
        options: crate::limits::redis::LimiterOptions,
    ) -> Arc<crate::RedisLimiter> {
        Arc::new(crate::RedisLimiter::new(
            self.shared.pool.clone(),
            &self.shared.settings.prefix,
            options,
        ))
    }

    /// The partition updates whose canonical topic is `topic` are stored in.
    pub fn partition_of(&self, topic: &str) -> u16 {
        let settings = &self.shared.settings;
        keys::partition_of(topic, settings.partitions, settings.partition_hash)
    }

    /// An entry's payload for `update`, with a fresh nonce: a retried `XADD` of it is recognised.
    fn encode(&self, update: &Update, copies: Option<&[u16]>) -> Result<Vec<u8>, TransportError> {
        let trace_context = crate::trace_context::current();
        // Never 0 (which means "none").
        let nonce = fastrand::u64(1..);
        entry::encode_copy(update, now_micros(), trace_context.as_ref(), nonce, copies)
            .map_err(|e| TransportError::Corrupt(e.to_string()))
    }

    /// The outcome of storing an entry in `partition`.
    fn stored(
        &self,
        partition: u16,
        stored: Result<String, CallError>,
    ) -> Result<Position, TransportError> {
        let shared = &self.shared;
        match stored {
            Ok(id) => {
                shared.health.set_pool(true);
                Position::parse_stream_id(partition, &id)
                    .ok_or_else(|| TransportError::Corrupt(format!("stream id {id:?}")))
            }
            Err(e) => {
                if e.breaks_connection() {
                    shared.health.set_pool(false);
                }
                Err(e.into())
            }
        }
    }

    fn spawn_health_check(&self) {
        let shared = self.shared.clone();
        let shutdown = self.shutdown.child_token();
        tokio::spawn(async move {
            loop {
                let ping = shared.pool.query::<String>(&redis::cmd("PING")).await;
                shared.health.set_pool(ping.is_ok());
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(PING_EVERY) => {}
                }
            }
        });
    }
}

impl Drop for RedisTransport {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.readers.close();
    }
}

#[async_trait]
impl Transport for RedisTransport {
    #[tracing::instrument(
        name = "mercure.transport.publish",
        skip_all,
        fields(otel.kind = "producer", mercure.transport = "redis")
    )]
    async fn publish(&self, update: Update) -> Result<Position, TransportError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(TransportError::Closed);
        }
        let partitions = self.shared.settings.partitions;
        let hash = self.shared.settings.partition_hash;
        let home = keys::partition_of(update.canonical_topic(), partitions, hash);
        let copies: Vec<u16> = update
            .topics
            .iter()
            .map(|t| keys::partition_of(t, partitions, hash))
            .collect();
        let retention = self.shared.retention();
        // The retention classes of the topics stored in `partition` (none without rules).
        let classes_in = |partition: u16| -> Vec<&Class> {
            if !retention.has_rules() {
                return Vec::new();
            }
            retention.classes_of_topics(
                update
                    .topics
                    .iter()
                    .zip(&copies)
                    .filter(|(_, &p)| p == partition)
                    .map(|(t, _)| t.as_str()),
            )
        };
        if copies.iter().all(|&p| p == home) {
            let payload = self.encode(&update, None)?;
            return self.store(home, &payload, &classes_in(home)).await;
        }
        // Stored once per partition of its topics (see "Alternate topics"), all copies at once;
        // acknowledged when every copy is stored, its position the canonical topic's copy's.
        let payload = self.encode(&update, Some(&copies))?;
        let mut targets = copies.clone();
        targets.sort_unstable();
        targets.dedup();
        let classes: Vec<Vec<&Class>> = targets.iter().map(|&p| classes_in(p)).collect();
        let stored = futures_util::future::join_all(
            targets
                .iter()
                .zip(&classes)
                .map(|(&p, classes)| self.store(p, &payload, classes)),
        )
        .await;
        let mut home_position = None;
        for (partition, result) in targets.iter().zip(stored) {
            let position = result?;
            if *partition == home {
                home_position = Some(position);
            }
        }
        home_position.ok_or_else(|| TransportError::Corrupt("no copy in the home partition".into()))
    }

    #[tracing::instrument(
        name = "mercure.transport.publish",
        skip_all,
        fields(otel.kind = "producer", mercure.transport = "redis")
    )]
    async fn publish_event(&self, update: Update) -> Result<Position, TransportError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(TransportError::Closed);
        }
        let shared = &self.shared;
        let payload = self.encode(&update, None)?;
        let keys = &shared.keys[0];
        let cmd = commands::xadd_event(
            &keys.events,
            &keys.stream,
            shared.settings.event_stream_len,
            &payload,
        );
        let stored = shared.pool.query(&cmd).await;
        self.stored(shared.events_partition(), stored)
    }

    async fn history(&self, last_event_id: &str) -> Result<HistoryReply, TransportError> {
        // Every stream: sound only while every reader runs, so hold them all meanwhile.
        let interest = self.interest(&Scope::All).await?;
        self.history_within(last_event_id, &interest, &Scope::All)
            .await
    }

    async fn history_within(
        &self,
        last_event_id: &str,
        interest: &Interest,
        scope: &Scope,
    ) -> Result<HistoryReply, TransportError> {
        let classes = self.shared.retention().classes_for(scope);
        let reach = history::Reach {
            streams: interest.streams(),
            classes: &classes,
        };
        history::history(&self.shared, last_event_id, reach).await
    }

    fn set_retention(&self, retention: Arc<Retention>) {
        let shared = &self.shared;
        // Caches first: an update stored under the new rules then finds its class's cache.
        for (keys, history) in shared.keys.iter().zip(&shared.caches) {
            history.write().set_retention(
                &retention,
                &keys.stream,
                |tag| keys.class(tag),
                |length| shared.cache_capacity(length),
                shared.settings.history_max_bytes,
            );
        }
        {
            let mut published = shared.published.write();
            let kept = std::mem::take(&mut *published);
            *published = retention
                .classes()
                .iter()
                .map(|class| {
                    let count = kept
                        .iter()
                        .find(|(tag, _)| tag == class.tag())
                        .map_or_else(Arc::default, |(_, count)| count.clone());
                    (class.tag().clone(), count)
                })
                .collect();
        }
        *shared.retention.write() = retention;
    }

    fn retention_stats(&self) -> Vec<crate::ClassStats> {
        let shared = &self.shared;
        let rules = shared.retention().has_rules();
        let published = shared.published.read().clone();
        published
            .into_iter()
            .map(|(class, count)| {
                let held: usize = shared.caches[..usize::from(shared.settings.partitions)]
                    .iter()
                    .map(|history| {
                        history
                            .read()
                            .caches
                            .iter()
                            .filter(|c| match &c.class {
                                Some(tag) => *tag == class,
                                None => !rules,
                            })
                            .map(|c| c.cache.len())
                            .sum::<usize>()
                    })
                    .sum();
                crate::ClassStats {
                    class,
                    stored: count.load(Ordering::Relaxed),
                    held: held as u64,
                }
            })
            .collect()
    }

    async fn interest(&self, scope: &Scope) -> Result<Interest, TransportError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(TransportError::Closed);
        }
        if !self.shared.settings.read_on_interest {
            return Ok(Interest::everything());
        }
        let partitions = self.partitions_for(scope);
        let streams: Vec<u16> = partitions
            .iter()
            .flat_map(|&p| self.shared.streams_of(p))
            .map(|i| i as u16)
            .collect();
        let wait = self.shared.settings.command_timeout * POSITION_WAIT_TIMEOUTS;
        let hold = self.readers.acquire(partitions, wait).await?;
        Ok(Interest::new(Some(streams), Some(Box::new(hold))))
    }

    fn start_reader(&self, sink: Arc<dyn UpdateSink>) {
        if !self.shared.health.start() || !self.readers.set_sink(sink) {
            tracing::warn!("redis transport readers already started");
            return;
        }
        if !self.shared.settings.read_on_interest {
            let all = (0..self.shared.settings.partitions).collect();
            match self.readers.hold(all) {
                Ok((hold, _)) => *self.permanent.lock() = Some(hold),
                Err(e) => tracing::error!(error = %e, "cannot start the redis readers"),
            }
        }
        self.spawn_health_check();
    }

    fn is_ready(&self) -> bool {
        !self.closed.load(Ordering::Relaxed) && self.shared.health.is_ready()
    }

    fn stats(&self) -> TransportStats {
        let s = RedisTransport::stats(self);
        TransportStats {
            reader_reconnects: s.reader_errors,
            errors: s.reader_errors + s.skipped_entries,
            reader_lag: self
                .shared
                .lags
                .iter()
                .map(|l| l.load(std::sync::atomic::Ordering::Relaxed))
                .sum(),
            history_cache_hits: s.history_cache_hits,
            history_cache_misses: s.history_redis_scans,
            epoch_changes: s.epoch_changes,
            gaps: s.trimmed_gaps + s.rollbacks + s.recreations,
            missed_entries: s.missed_entries,
            partitions_read: self.readers.reading() as u64,
            reader_connections: self.shared.reader_connections.load(Ordering::Relaxed),
            append_round_trips: self.shared.appends.counts().0,
            appends: self.shared.appends.counts().1,
        }
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}
