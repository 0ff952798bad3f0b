//! The limiter shared by every node through Redis.
//!
//! # Rates
//! One string per key, `<prefix>:rate:<key>`, holding the key's GCRA time in microseconds of
//! Redis' clock (`TIME`, so node clocks do not matter). `RATE` reads it, decides, and stores the
//! new time with a `PX` expiry at which the key would be idle anyway: an idle key costs Redis
//! nothing, and the number of keys is bounded by the keys used within one burst's span. One
//! `EVALSHA` per check; each script touches one key, so on Redis Cluster the keys spread over the
//! masters like any other. A key Redis refused is answered by the node itself until its wait is
//! over (see `Refusals`): a client flooding over its rate costs Redis one call per wait.
//!
//! # Connections
//! All connection keys share one hash tag, `{<prefix>:limits}`, so one script reaches them all (on
//! Redis Cluster they live in one slot, on one master; the work per connection is small):
//! - `{<prefix>:limits}:nodes`: SET of the node ids that count connections.
//! - `{<prefix>:limits}:lease:<id>`: STRING with a `PX` expiry: the node is alive while it exists.
//! - `{<prefix>:limits}:node:<id>`: HASH of the node's counts: `c:<key>` connections and `m:<key>`
//!   matchers, for every key with connections on the node (a field goes when it reaches 0). Its
//!   expiry (three leases) is pushed back at every renewal and every admission, so the counts of a
//!   node that died with no one left to sweep vanish by themselves.
//!
//! `ACQUIRE` sums a key's counts over the nodes whose lease exists and, if the caps allow,
//! increments this node's fields, atomically: two nodes admitting at the same time cannot both
//! take the last place. A dead node's connections stop counting the moment its lease expires.
//! Releases (a [`ConnectionSlot`] dropped) update the node's local copy at once and are sent in
//! batches by the background task as decrements (`RELEASE`), so a shutdown that closes thousands
//! of connections costs a few round trips, not thousands.
//!
//! The local copy (key → counts) is this node's truth: when a write fails, or the lease was found
//! gone (Redis restarted without persistence, or the node was cut off for a whole lease), the
//! background task rewrites the node's hash from it in one transaction. Admissions and release
//! batches take a shared lock and that rewrite an exclusive one, so a rewrite never misses an
//! admission in flight nor replays a release it already reflects.
//!
//! The background task, started by the first admission (a node that never counts a connection
//! writes nothing), renews the lease every third of it (`EXISTS`, `SET … PX`, `SADD`, `PEXPIRE`
//! in one transaction) and sweeps: `SWEEP` drops the hash and set entry of every node
//! without a lease. [`Limiter::close`] deletes this node's lease and counts (its connections stop
//! counting at once).
//!
//! # Failure cases
//! - **Redis unreachable**: checks and admissions fail with [`TransportError::Unavailable`] after
//!   the transport's command timeout; the server applies the rule's choice (allow or refuse).
//!   Releases stay in the local copy and reach Redis with the next successful write or rewrite.
//! - **A node cut off from Redis for longer than a lease**: the others stop counting its
//!   connections (they may admit more than the cap until it is back and rewrites its counts).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{
    Admission, CapExceeded, ConnectionCap, ConnectionSlot, Limiter, LimiterStats, Rate,
    RateDecision, SlotOwner,
};
use crate::redis::pool::ConnectionPool;
use crate::redis::script::Script;
use crate::TransportError;

/// One GCRA step in Redis (see [`gcra`](super::gcra)). Times are microseconds of Redis' clock;
/// Lua numbers are doubles, exact up to 2^53 (about 285 years of microseconds), and written back
/// with `%.0f` so no digit is lost to Lua's default number format.
/// KEYS: the rate key. ARGV: interval in µs, burst. Returns {1, 0} (allowed) or {0, µs to wait}.
const RATE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local next = tat + interval
local allowed_from = next - interval * tonumber(ARGV[2])
if allowed_from > now then return {0, allowed_from - now} end
redis.call('SET', KEYS[1], string.format('%.0f', next), 'PX', math.ceil((next - now) / 1000))
return {1, 0}
";

/// Admits one connection if the caps allow, counting it on this node (see the module docs).
/// KEYS: nodes set, this node's hash, this node's lease. ARGV: key base, connections field,
/// matchers field, max connections (-1: none), max matchers (-1: none), matchers to add, hash
/// expiry in ms. Returns {1, connections, matchers} (admitted), {0, …} (over the connection cap),
/// {2, …} (over the matcher cap), or {-1, 0, 0} (this node has no lease: renew, then retry).
const ACQUIRE: &str = r"
if redis.call('EXISTS', KEYS[3]) == 0 then return {-1, 0, 0} end
local conns, matchers = 0, 0
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. ':lease:' .. node) == 1 then
    local counts = redis.call('HMGET', ARGV[1] .. ':node:' .. node, ARGV[2], ARGV[3])
    conns = conns + (tonumber(counts[1]) or 0)
    matchers = matchers + (tonumber(counts[2]) or 0)
  end
end
local add = tonumber(ARGV[6])
local max_conns, max_matchers = tonumber(ARGV[4]), tonumber(ARGV[5])
if max_conns >= 0 and conns + 1 > max_conns then return {0, conns, matchers} end
if max_matchers >= 0 and matchers + add > max_matchers then return {2, conns, matchers} end
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
if add > 0 then redis.call('HINCRBY', KEYS[2], ARGV[3], add) end
redis.call('PEXPIRE', KEYS[2], ARGV[7])
return {1, conns + 1, matchers + add}
";

/// Applies a batch of decrements to this node's counts, dropping fields that reach 0.
/// KEYS: this node's hash. ARGV: field, delta, field, delta, …
const RELEASE: &str = r"
for i = 1, #ARGV, 2 do
  if redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) <= 0 then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return 0
";

/// Forgets every node without a lease: its counts and its place in the set.
/// KEYS: nodes set. ARGV: key base. Returns how many nodes went.
const SWEEP: &str = r"
local gone = 0
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. ':lease:' .. node) == 0 then
    redis.call('DEL', ARGV[1] .. ':node:' .. node)
    redis.call('SREM', KEYS[1], node)
    gone = gone + 1
  end
end
return gone
";

/// Keys per release script call and fields per `HSET` of a rewrite.
const CHUNK: usize = 500;

/// How a [`RedisLimiter`] behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimiterOptions {
    /// This node's id, unique in the cluster (default: a random UUID, new at every start).
    pub node_id: String,
    /// A node whose lease was not renewed for this long no longer counts. Renewed every third.
    pub lease_ttl: Duration,
}

impl Default for LimiterOptions {
    fn default() -> Self {
        Self {
            node_id: uuid::Uuid::new_v4().to_string(),
            lease_ttl: crate::subscriptions::DEFAULT_LEASE_TTL,
        }
    }
}

/// The limiter's key names (see the module docs).
#[derive(Clone, Debug)]
struct Keys {
    /// `{<prefix>:limits}`.
    base: String,
    nodes: String,
    lease: String,
    node: String,
    /// `<prefix>:rate:`.
    rate: String,
}

impl Keys {
    fn new(prefix: &str, node_id: &str) -> Self {
        let base = format!("{{{prefix}:limits}}");
        Self {
            nodes: format!("{base}:nodes"),
            lease: format!("{base}:lease:{node_id}"),
            node: format!("{base}:node:{node_id}"),
            rate: format!("{prefix}:rate:"),
            base,
        }
    }
}

/// Local counts and the releases not yet sent, behind one lock (see the module docs).
#[derive(Default)]
struct State {
    /// key → (connections, matchers) held on this node.
    local: HashMap<Box<str>, (u64, u64)>,
    /// key → (connections, matchers) released but not yet sent.
    pending: HashMap<Box<str>, (u64, u64)>,
}

struct Inner {
    pool: Arc<ConnectionPool>,
    keys: Keys,
    options: LimiterOptions,
    state: Mutex<State>,
    /// Shared by admissions and release batches, exclusive for a rewrite and for the goodbye.
    sync: tokio::sync::RwLock<()>,
    /// Wakes the background task when releases wait to be sent.
    released: Notify,
    /// The first renewal wrote the lease.
    registered: AtomicBool,
    /// A write failed: Redis may differ from the local copy until the next rewrite.
    dirty: AtomicBool,
    closed: AtomicBool,
    reregistrations: AtomicU64,
    errors: AtomicU64,
    /// Keys Redis refused lately, answered here until their wait is over.
    refusals: Refusals,
    local_refusals: AtomicU64,
}

/// Keys Redis refused, with the time until which they stay refused, so a client that keeps
/// sending over its rate costs Redis one call per wait rather than one per request. Exact, not
/// an estimate: a refusal does not change the key's time in Redis and other nodes can only push
/// it later, so every request before the wait is over would be refused there too. Bounded: at
/// [`MAX_REFUSALS`] the expired entries are dropped (at most once a second); while it stays full
/// new refusals are not remembered (they just cost their round trip).
#[derive(Default)]
struct Refusals(Mutex<RefusalMap>);

#[derive(Default)]
struct RefusalMap {
    until: HashMap<Box<str>, tokio::time::Instant>,
    swept: Option<tokio::time::Instant>,
}

/// Refused keys remembered per node (about 100 bytes each).
const MAX_REFUSALS: usize = 10_000;

impl Refusals {
    /// How long `key` stays refused, if Redis refused it and the wait is not over.
    fn until(&self, key: &str) -> Option<Duration> {
        let map = self.0.lock();
        let until = *map.until.get(key)?;
        let now = tokio::time::Instant::now();
        (until > now).then(|| until - now)
    }

    fn remember(&self, key: &str, wait: Duration) {
        let now = tokio::time::Instant::now();
        let mut map = self.0.lock();
        if map.until.len() >= MAX_REFUSALS
            && map
                .swept
                .is_none_or(|at| now >= at + Duration::from_secs(1))
        {
            map.until.retain(|_, until| *until > now);
            map.swept = Some(now);
        }
        if map.until.len() < MAX_REFUSALS || map.until.contains_key(key) {
            map.until.insert(key.into(), now + wait);
        }
    }
}

/// The Redis-backed limiter (see the module docs). Dropping it stops its background task without
/// a goodbye (its connections then count until its lease expires); call [`Limiter::close`] on a
/// graceful shutdown.
pub struct RedisLimiter {
    inner: Arc<Inner>,
    shutdown: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("node_id", &self.inner.options.node_id)
            .field("keys", &self.inner.keys.base)
            .finish_non_exhaustive()
    }
}

/// The scripts, digested once per process.
fn scripts() -> &'static [Script; 4] {
    static SCRIPTS: std::sync::OnceLock<[Script; 4]> = std::sync::OnceLock::new();
    SCRIPTS.get_or_init(|| {
        [
            Script::new(RATE),
            Script::new(ACQUIRE),
            Script::new(RELEASE),
            Script::new(SWEEP),
        ]
    })
}

impl RedisLimiter {
    /// A limiter on `pool`. Its background task (renewal, sweep, release batches) starts with the
    /// first admission, on the Tokio runtime of that call: a node that never counts a connection
    /// writes no lease.
    pub(crate) fn new(pool: Arc<ConnectionPool>, prefix: &str, options: LimiterOptions) -> Self {
        let inner = Arc::new(Inner {
            pool,
            keys: Keys::new(prefix, &options.node_id),
            options,
            state: Mutex::new(State::default()),
            sync: tokio::sync::RwLock::new(()),
            released: Notify::new(),
            registered: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            reregistrations: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            refusals: Refusals::default(),
            local_refusals: AtomicU64::new(0),
        });
        Self {
            inner,
            shutdown: CancellationToken::new(),
            task: Mutex::new(None),
        }
    }

    /// Starts the background task unless it runs (or the limiter is closed).
    fn ensure_started(&self) {
        let mut task = self.task.lock();
        if task.is_none() && !self.shutdown.is_cancelled() {
            *task = Some(tokio::spawn(background(
                self.inner.clone(),
                self.shutdown.clone(),
            )));
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.options.node_id
    }

    /// The key of this node's lease (for tests and operators).
    pub fn lease_key(&self) -> &str {
        &self.inner.keys.lease
    }

    /// The Redis key holding the rate state of `key` (for tests and operators).
    pub fn rate_key(&self, key: &str) -> String {
        format!("{}{key}", self.inner.keys.rate)
    }
}

impl Drop for RedisLimiter {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Renews every third of a lease, sends releases as they come, until `shutdown`.
async fn background(inner: Arc<Inner>, shutdown: CancellationToken) {
    let every = (inner.options.lease_ttl / 3).max(Duration::from_millis(1));
    let mut next_renewal = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = inner.released.notified() => inner.flush().await,
            _ = tokio::time::sleep_until(next_renewal) => {
                if let Err(e) = inner.renew().await {
                    tracing::warn!(node = %inner.options.node_id, error = %e, "connection limit lease renewal failed");
                }
                if let Err(e) = inner.sweep().await {
                    tracing::debug!(error = %e, "connection limit sweep failed");
                }
                // Releases that failed to go out are in the rewrite; the rest go now.
                inner.flush().await;
                next_renewal = tokio::time::Instant::now() + every;
            }
        }
    }
}

impl Inner {
    fn failed(&self, what: &str, e: impl std::fmt::Display) -> TransportError {
        self.errors.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(node = %self.options.node_id, error = %e, "connection limits: {what} failed");
        TransportError::Unavailable(format!("limits: {what}: {e}"))
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.options.lease_ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// How long this node's hash outlives its last renewal or admission.
    fn hash_ttl_ms(&self) -> u64 {
        self.ttl_ms().saturating_mul(3)
    }

    /// Renews the lease; rewrites the counts when the lease had gone or a write failed.
    async fn renew(&self) -> Result<(), TransportError> {
        let keys = &self.keys;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("EXISTS")
            .arg(&keys.lease)
            .cmd("SET")
            .arg(&keys.lease)
            .arg(&self.options.node_id)
            .arg("PX")
            .arg(self.ttl_ms())
            .ignore()
            .cmd("SADD")
            .arg(&keys.nodes)
            .arg(&self.options.node_id)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&keys.node)
            .arg(self.hash_ttl_ms())
            .ignore();
        let (existed,): (i64,) = self
            .pool
            .query_pipeline(&pipe)
            .await
            .map_err(|e| self.failed("renewing the lease", e))?;
        let registered = self.registered.swap(true, Ordering::AcqRel);
        if existed == 0 && registered {
            self.reregistrations.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                node = %self.options.node_id,
                "connection limit lease had vanished (Redis lost its data, or this node was \
                 unreachable for a whole lease); writing this node's connection counts again"
            );
        }
        if existed == 0 || self.dirty.load(Ordering::Acquire) {
            self.rewrite().await?;
        }
        Ok(())
    }

    /// Replaces this node's hash with the local copy, in one transaction.
    async fn rewrite(&self) -> Result<(), TransportError> {
        let _exclusive = self.sync.write().await;
        if self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        let fields: Vec<(String, u64)> = {
            let mut state = self.state.lock();
            // Everything pending is already reflected in the local copy written below.
            state.pending.clear();
            state
                .local
                .iter()
                .flat_map(|(key, (conns, matchers))| {
                    [
                        (format!("c:{key}"), *conns),
                        (format!("m:{key}"), *matchers),
                    ]
                })
                .filter(|(_, count)| *count > 0)
                .collect()
        };
        let hash = &self.keys.node;
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("DEL").arg(hash).ignore();
        for chunk in fields.chunks(CHUNK) {
            pipe.cmd("HSET").arg(hash);
            for (field, count) in chunk {
                pipe.arg(field).arg(*count);
            }
            pipe.ignore();
        }
        pipe.cmd("PEXPIRE")
            .arg(hash)
            .arg(self.hash_ttl_ms())
            .ignore();
        self.pool
            .query_pipeline::<()>(&pipe)
            .await
            .map_err(|e| self.failed("rewriting connection counts", e))?;
        self.dirty.store(false, Ordering::Release);
        Ok(())
    }

    async fn sweep(&self) -> Result<(), TransportError> {
        let gone: i64 = self
            .pool
            .eval(&scripts()[3], &[&self.keys.nodes], &self.keys.base)
            .await
            .map_err(|e| self.failed("sweeping dead nodes", e))?;
        if gone > 0 {
            tracing::debug!(gone, "connection limits: dead nodes' counts dropped");
        }
        Ok(())
    }

    /// Sends the releases waiting; on failure the next renewal rewrites the counts.
    async fn flush(&self) {
        let _shared = self.sync.read().await;
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let pending = std::mem::take(&mut self.state.lock().pending);
        if pending.is_empty() {
            return;
        }
        let entries: Vec<(Box<str>, (u64, u64))> = pending.into_iter().collect();
        for chunk in entries.chunks(CHUNK) {
            let mut args: Vec<String> = Vec::with_capacity(chunk.len() * 4);
            for (key, (conns, matchers)) in chunk {
                args.push(format!("c:{key}"));
                args.push(format!("-{conns}"));
                if *matchers > 0 {
                    args.push(format!("m:{key}"));
                    args.push(format!("-{matchers}"));
                }
            }
            let sent: Result<i64, _> = self
                .pool
                .eval(&scripts()[2], &[&self.keys.node], args)
                .await;
            if let Err(e) = sent {
                self.dirty.store(true, Ordering::Release);
                let e = self.failed("sending released connections", e);
                tracing::warn!(error = %e, "released connections are written again at the next lease renewal");
                return;
            }
        }
    }

    async fn acquire(
        self: &Arc<Self>,
        key: &str,
        matchers: u32,
        cap: ConnectionCap,
    ) -> Result<Admission, TransportError> {
        let cap_arg = |cap: Option<u32>| cap.map_or(-1, i64::from);
        for _ in 0..2 {
            let shared = self.sync.read().await;
            if self.closed.load(Ordering::Acquire) {
                return Err(TransportError::Closed);
            }
            let args = (
                self.keys.base.as_str(),
                format!("c:{key}"),
                format!("m:{key}"),
                cap_arg(cap.max_connections),
                cap_arg(cap.max_matchers),
                matchers,
                self.hash_ttl_ms(),
            );
            let (outcome, _, _): (i64, i64, i64) = self
                .pool
                .eval(
                    &scripts()[1],
                    &[&self.keys.nodes, &self.keys.node, &self.keys.lease],
                    args,
                )
                .await
                .map_err(|e| self.failed("admitting a connection", e))?;
            match outcome {
                1 => {
                    {
                        let mut state = self.state.lock();
                        let entry = state.local.entry(key.into()).or_insert((0, 0));
                        entry.0 += 1;
                        entry.1 += u64::from(matchers);
                    }
                    drop(shared);
                    let owner: Arc<dyn SlotOwner> = self.clone();
                    return Ok(Admission::Admitted(ConnectionSlot::new(
                        owner, key, matchers,
                    )));
                }
                0 => return Ok(Admission::Refused(CapExceeded::Connections)),
                2 => return Ok(Admission::Refused(CapExceeded::Matchers)),
                _ => {
                    // No lease (first admission, or the lease was lost): take it, then retry.
                    drop(shared);
                    self.renew().await?;
                }
            }
        }
        Err(self.failed(
            "admitting a connection",
            "this node's lease could not be kept",
        ))
    }

    async fn goodbye(&self) {
        let _exclusive = self.sync.write().await;
        self.closed.store(true, Ordering::Release);
        {
            let mut state = self.state.lock();
            state.local.clear();
            state.pending.clear();
        }
        if !self.registered.load(Ordering::Acquire) {
            return;
        }
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(&self.keys.lease)
            .ignore()
            .cmd("DEL")
            .arg(&self.keys.node)
            .ignore()
            .cmd("SREM")
            .arg(&self.keys.nodes)
            .arg(&self.options.node_id)
            .ignore();
        if let Err(e) = self.pool.query_pipeline::<()>(&pipe).await {
            let e = self.failed("saying goodbye", e);
            tracing::warn!(error = %e, "connection limits goodbye failed; this node's connections count until its lease expires");
        }
    }
}

impl SlotOwner for Inner {
    fn release(&self, key: &str, matchers: u32) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        {
            let mut state = self.state.lock();
            let Some((conns, held)) = state.local.get_mut(key) else {
                return;
            };
            *conns = conns.saturating_sub(1);
            *held = held.saturating_sub(u64::from(matchers));
            if *conns == 0 {
                state.local.remove(key);
            }
            let pending = state.pending.entry(key.into()).or_insert((0, 0));
            pending.0 += 1;
            pending.1 += u64::from(matchers);
        }
        self.released.notify_one();
    }
}

#[async_trait]
impl Limiter for RedisLimiter {
    async fn check_rate(&self, key: &str, rate: Rate) -> Result<RateDecision, TransportError> {
        let inner = &self.inner;
        if let Some(retry_after) = inner.refusals.until(key) {
            inner.local_refusals.fetch_add(1, Ordering::Relaxed);
            return Ok(RateDecision::Limited { retry_after });
        }
        let (allowed, wait): (i64, i64) = inner
            .pool
            .eval(
                &scripts()[0],
                &[self.rate_key(key)],
                (rate.interval_micros(), rate.burst()),
            )
            .await
            .map_err(|e| inner.failed("checking a rate", e))?;
        if allowed == 1 {
            return Ok(RateDecision::Allowed);
        }
        let retry_after = Duration::from_micros(u64::try_from(wait).unwrap_or(0));
        inner.refusals.remember(key, retry_after);
        Ok(RateDecision::Limited { retry_after })
    }

    async fn acquire(
        &self,
        key: &str,
        matchers: u32,
        cap: ConnectionCap,
    ) -> Result<Admission, TransportError> {
        self.ensure_started();
        self.inner.acquire(key, matchers, cap).await
    }

    async fn close(&self) {
        self.shutdown.cancel();
        let task = self.task.lock().take();
        if let Some(task) = task {
            // Wait for the task so no renewal follows the goodbye.
            let _ = task.await;
        }
        self.inner.goodbye().await;
    }

    fn stats(&self) -> LimiterStats {
        let (connection_keys, connections) = {
            let state = self.inner.state.lock();
            (
                state.local.len() as u64,
                state.local.values().map(|(c, _)| *c).sum(),
            )
        };
        LimiterStats {
            connection_keys,
            connections,
            reregistrations: self.inner.reregistrations.load(Ordering::Relaxed),
            errors: self.inner.errors.load(Ordering::Relaxed),
            local_refusals: self.inner.local_refusals.load(Ordering::Relaxed),
            ..LimiterStats::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::hash_slot;

    #[test]
    fn connection_keys_share_one_slot() {
        let k = Keys::new("quicksilver", "n1");
        assert_eq!(k.nodes, "{quicksilver:limits}:nodes");
        assert_eq!(k.node, "{quicksilver:limits}:node:n1");
        let slot = hash_slot(&k.nodes);
        for key in [&k.lease, &k.node, &format!("{}:node:other", k.base)] {
            assert_eq!(hash_slot(key), slot, "{key}");
        }
        assert_eq!(k.rate, "quicksilver:rate:");
    }
}
