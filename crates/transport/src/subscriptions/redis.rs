//! The subscription registry kept in Redis, shared by every node of the cluster.
//!
//! # Keys
//! All keys share one hash tag, `{<prefix>:subs}` (the transport's key prefix), so on Redis Cluster
//! they live in one slot: pipelines, `MULTI`/`EXEC` and the Lua scripts below all reach one master.
//! (The registry is small next to the update streams; one slot is plenty.)
//! - `{<prefix>:subs}:nodes`: SET of the ids of nodes that registered.
//! - `{<prefix>:subs}:node:<id>`: HASH subscription id → subscription document, one per node.
//! - `{<prefix>:subs}:lease:<id>`: STRING with a `PX` expiry: the node is alive while it exists.
//! - `{<prefix>:subs}:reap:<id>`: STRING, `SET NX PX`: the lock of the node reaping `<id>`.
//!
//! # Writes
//! `add` and `remove` update this node's local copy of its records and write through to Redis
//! (`HSET`/`HDEL`, one round trip). The local copy is the truth for this node: when a write fails
//! (the caller gets `Unavailable`), the registry marks itself dirty and the next renewal rewrites the
//! whole hash from the local copy. Writes take a shared lock and that rewrite an exclusive one, so a
//! rewrite never loses a concurrent `add`.
//!
//! # Lease and sweep
//! Every `lease_ttl / 3` the background task renews the lease with one transaction (`EXISTS lease`,
//! `SET lease PX lease_ttl`, `SADD nodes`). If the lease had vanished (Redis restarted without
//! persistence or failed over and lost it; or this node could not reach Redis, or was paused, for a
//! whole lease and may have been reaped), it rewrites all its records (`DEL` + `HSET` in one
//! transaction) and counts a re-registration. Records added before the first renewal are written
//! by it: a node never has records in the `nodes` set without a lease, which would get them reaped.
//!
//! Then it sweeps: `SMEMBERS nodes`, and `EXISTS lease:<id>` for every other node. For each node
//! without a lease it tries the reap lock (`SET reap:<id> NX PX reap_timeout + lease_ttl`); only the
//! winner reaps, in batches of [`REAP_BATCH`] records, so a node that held tens of thousands of
//! subscriptions is reaped with steady progress that survives a timeout or a crash: a script takes
//! a batch (`HRANDFIELD … WITHVALUES`) only while the node's lease is still missing (a node that
//! came back keeps its records), and the batch goes to
//! [`OrphanHandler::orphaned`](super::OrphanHandler::orphaned). On `Ok` the batch's records are
//! deleted (`HDEL`) and the lock extended for the next batch; on `Err` (or a handler slower than
//! `reap_timeout`) the batch is kept and the lock released (compare-and-delete), so the next sweep,
//! on any node, goes on from there. A batch's ends may thus be published twice (a reaper that
//! died between publishing and deleting), never lost. Once the hash is empty a script removes the
//! node from the set and shortens the lock to one lease: a sweeper that read the set before the
//! cleanup finds it taken and cannot reap it a second time.
//!
//! `list` reads `SMEMBERS`, then `EXISTS` + `HLEN` per node, then `HGETALL` of the live ones in one
//! pipeline: a dead node's records disappear from answers as soon as its lease expires, before it is
//! reaped. At most `max_list` records are returned (the node crossing the cap is read with `HSCAN`
//! up to it), which bounds the memory one call takes.
//!
//! # Failure cases
//! - **Redis restarted without persistence** (or the slot's master failed over and lost writes):
//!   every lease and record is gone. Each live node notices at its next renewal (within a third of
//!   a lease) and rewrites its records; meanwhile `list` answers with fewer subscriptions. Nothing is
//!   reaped: the dead nodes' records are gone with the rest, so their ends are never published.
//! - **A node partitioned from Redis** (or paused) for longer than a lease is dead to the others:
//!   its records are reaped and their ends published, although its subscribers may still be
//!   connected. The reaper leaves a marker, `{<prefix>:subs}:reaped:<id>` (kept a day). When the
//!   node reaches Redis again it re-registers, rewrites its records (they are in `list` again),
//!   takes the marker and has [`OrphanHandler::revived`] publish its live subscriptions as active
//!   again (retried at each renewal until it succeeds); [`RegistryStats::reregistrations`] counts
//!   it. Choose `lease_ttl` well above ordinary hiccups.
//! - **Redis unreachable**: operations fail with [`TransportError::Unavailable`] after the
//!   transport's command timeout, and the background task retries at its next tick.
//! - **Clocks**: only Redis' clock measures leases; node clocks do not matter.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{
    OrphanHandler, RegistryOptions, RegistryStats, SubscriptionRecord, SubscriptionRegistry,
};
use crate::redis::pool::ConnectionPool;
use crate::TransportError;

/// Fields per `HSET`/`HDEL` command, so no single command grows without bound.
const CHUNK: usize = 1_000;

/// `HSCAN` batch size when reading the node that crosses `max_list`.
const SCAN_COUNT: usize = 1_000;

/// Records a reaper hands out at a time.
pub const REAP_BATCH: usize = 500;

/// Takes the next batch of a dead node's records, unless its lease came back meanwhile (then
/// `false`, and nothing). The first batch leaves the `reaped` marker, so a node that was only cut
/// off learns that its subscriptions' ends went out.
/// KEYS: lease, hash, reaped marker. ARGV: batch size, marker life in ms.
const REAP_BATCH_SCRIPT: &str = "if redis.call('EXISTS', KEYS[1]) == 1 then return false end \
     local batch = redis.call('HRANDFIELD', KEYS[2], ARGV[1], 'WITHVALUES') \
     if #batch > 0 then redis.call('SET', KEYS[3], '1', 'PX', ARGV[2]) end \
     return batch";

/// Removes a reaped node (its hash now empty) from the set, unless its lease came back meanwhile,
/// and shortens the reap lock to one lease (long enough for any sweeper that read the set before
/// to find the lock taken). Returns 1 if the node was removed from the set.
/// KEYS: lease, nodes, lock. ARGV: node id, lease in ms.
const REAP_DONE: &str = "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end \
     redis.call('PEXPIRE', KEYS[3], ARGV[2]) \
     return redis.call('SREM', KEYS[2], ARGV[1])";

/// How long a `reaped` marker waits for its node to come back.
const REAPED_MARKER_MS: u64 = 24 * 60 * 60 * 1000;

/// Deletes a lock only if it still holds our token. KEYS: lock. ARGV: token.
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
     return redis.call('DEL', KEYS[1]) end return 0";

/// The registry's key names (see the module docs).
#[derive(Clone, Debug)]
struct Keys {
    /// `{<prefix>:subs}`.
    base: String,
    nodes: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        let base = format!("{{{prefix}:subs}}");
        Self {
            nodes: format!("{base}:nodes"),
            base,
        }
    }

    fn node(&self, id: &str) -> String {
        format!("{}:node:{id}", self.base)
    }

    fn lease(&self, id: &str) -> String {
        format!("{}:lease:{id}", self.base)
    }

    fn reap(&self, id: &str) -> String {
        format!("{}:reap:{id}", self.base)
    }

    fn reaped(&self, id: &str) -> String {
        format!("{}:reaped:{id}", self.base)
    }
}

#[derive(Default)]
struct Counters {
    orphans_reaped: AtomicU64,
    nodes_reaped: AtomicU64,
    reregistrations: AtomicU64,
    list_truncations: AtomicU64,
    errors: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

struct Inner {
    /// The transport's shared connections (the registry's commands are few and short).
    pool: Arc<ConnectionPool>,
    keys: Keys,
    options: RegistryOptions,
    /// This node's records, id → document: the truth Redis is repaired from.
    records: Mutex<HashMap<String, String>>,
    /// Shared by `add`/`remove`, exclusive for a rewrite of the whole hash and for `close`.
    sync: tokio::sync::RwLock<()>,
    /// Set once the first renewal wrote the lease and the records: before that, writes stay local.
    registered: AtomicBool,
    /// A write failed: Redis may differ from the local copy until the next rewrite.
    dirty: AtomicBool,
    /// This node was reaped while alive and its subscriptions' `active` events are still to be
    /// published again ([`OrphanHandler::revived`]).
    revive: AtomicBool,
    closed: AtomicBool,
    counters: Counters,
}

/// The Redis-backed registry (see the module docs). Dropping it stops its background task without
/// a goodbye (as if the node died); call [`SubscriptionRegistry::close`] on a graceful shutdown.
pub struct RedisSubscriptionRegistry {
    inner: Arc<Inner>,
    shutdown: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for RedisSubscriptionRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSubscriptionRegistry")
            .field("node_id", &self.inner.options.node_id)
            .field("keys", &self.inner.keys.base)
            .finish_non_exhaustive()
    }
}

impl RedisSubscriptionRegistry {
    pub(crate) fn new(pool: Arc<ConnectionPool>, prefix: &str, options: RegistryOptions) -> Self {
        let keys = Keys::new(prefix);
        Self {
            inner: Arc::new(Inner {
                pool,
                keys,
                options,
                records: Mutex::new(HashMap::new()),
                sync: tokio::sync::RwLock::new(()),
                registered: AtomicBool::new(false),
                dirty: AtomicBool::new(false),
                revive: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                counters: Counters::default(),
            }),
            shutdown: CancellationToken::new(),
            task: Mutex::new(None),
        }
    }

    /// The key of this node's lease (for tests and operators).
    pub fn lease_key(&self) -> String {
        self.inner.keys.lease(&self.inner.options.node_id)
    }

    /// The key of the set of registered nodes (for tests and operators).
    pub fn nodes_key(&self) -> String {
        self.inner.keys.nodes.clone()
    }

    /// Runs one renewal and one sweep now (what the background task does every `lease_ttl / 3`).
    pub async fn tick(&self, handler: &dyn OrphanHandler) {
        self.inner.tick(handler).await;
    }
}

impl Drop for RedisSubscriptionRegistry {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Inner {
    fn node_id(&self) -> &str {
        &self.options.node_id
    }

    fn ttl_ms(&self) -> u64 {
        (self.options.lease_ttl.as_millis() as u64).max(1)
    }

    fn failed(&self, what: &str, e: impl std::fmt::Display) -> TransportError {
        bump(&self.counters.errors, 1);
        tracing::debug!(node = %self.node_id(), error = %e, "subscription registry: {what} failed");
        TransportError::Unavailable(format!("subscription registry: {what}: {e}"))
    }

    async fn tick(&self, handler: &dyn OrphanHandler) {
        // After the goodbye a renewal would resurrect the lease.
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = self.renew(handler).await {
            tracing::warn!(node = %self.node_id(), error = %e, "subscription lease renewal failed");
        }
        if let Err(e) = self.sweep(handler).await {
            tracing::warn!(node = %self.node_id(), error = %e, "subscription sweep failed");
        }
    }

    /// Renews the lease; rewrites the records if the lease had vanished or a write failed; if this
    /// node had been reaped, has the handler announce its subscriptions again.
    async fn renew(&self, handler: &dyn OrphanHandler) -> Result<(), TransportError> {
        let id = self.node_id();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("EXISTS")
            .arg(self.keys.lease(id))
            .cmd("SET")
            .arg(self.keys.lease(id))
            .arg(id)
            .arg("PX")
            .arg(self.ttl_ms())
            .ignore()
            .cmd("SADD")
            .arg(&self.keys.nodes)
            .arg(id)
            .ignore()
            .cmd("DEL")
            .arg(self.keys.reaped(id));
        let (existed, reaped): (i64, i64) = self
            .pool
            .query_pipeline(&pipe)
            .await
            .map_err(|e| self.failed("renewing the lease", e))?;
        let registered = self.registered.load(Ordering::Acquire);
        if existed == 0 && registered {
            bump(&self.counters.reregistrations, 1);
            tracing::warn!(
                node = %id,
                "subscription lease had vanished (Redis lost its data, or this node was unreachable \
                 for a whole lease); writing this node's subscriptions again"
            );
        }
        if reaped == 1 {
            tracing::warn!(
                node = %id,
                "this node was taken for dead and its subscriptions ended; announcing them again"
            );
            self.revive.store(true, Ordering::Release);
        }
        if existed == 0 || !registered || self.dirty.load(Ordering::Acquire) {
            self.rewrite().await?;
        }
        if self.revive.load(Ordering::Acquire) {
            let records = super::records_of(&self.records.lock());
            let outcome =
                tokio::time::timeout(self.options.reap_timeout, handler.revived(id, records)).await;
            match outcome {
                Ok(Ok(())) => self.revive.store(false, Ordering::Release),
                // Kept: the next renewal tries again.
                Ok(Err(e)) => return Err(self.failed("announcing subscriptions again", e)),
                Err(_) => {
                    return Err(self.failed("announcing subscriptions again", "no answer in time"))
                }
            }
        }
        Ok(())
    }

    /// Replaces this node's hash with the local copy, in one transaction.
    async fn rewrite(&self) -> Result<(), TransportError> {
        let _exclusive = self.sync.write().await;
        if self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        let hash = self.keys.node(self.node_id());
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("DEL").arg(&hash).ignore();
        {
            let records = self.records.lock();
            let entries: Vec<(&String, &String)> = records.iter().collect();
            for chunk in entries.chunks(CHUNK) {
                pipe.cmd("HSET").arg(&hash);
                for (id, document) in chunk {
                    pipe.arg(*id).arg(*document);
                }
                pipe.ignore();
            }
        }
        // Cleared before sending: no write can interleave (we hold the lock exclusively).
        self.dirty.store(false, Ordering::Release);
        match self.pool.query_pipeline::<()>(&pipe).await {
            Ok(()) => {
                self.registered.store(true, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                self.dirty.store(true, Ordering::Release);
                Err(self.failed("writing this node's subscriptions", e))
            }
        }
    }

    /// Reaps every other registered node whose lease is gone.
    async fn sweep(&self, handler: &dyn OrphanHandler) -> Result<(), TransportError> {
        let members: Vec<String> = self
            .pool
            .query(redis::cmd("SMEMBERS").arg(&self.keys.nodes))
            .await
            .map_err(|e| self.failed("listing nodes", e))?;
        let others: Vec<String> = members
            .into_iter()
            .filter(|n| n != self.node_id())
            .collect();
        if others.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for node in &others {
            pipe.cmd("EXISTS").arg(self.keys.lease(node));
        }
        let alive: Vec<i64> = self
            .pool
            .query_pipeline(&pipe)
            .await
            .map_err(|e| self.failed("checking leases", e))?;
        for (node, alive) in others.iter().zip(alive) {
            if alive == 0 {
                self.reap(node, handler).await?;
            }
        }
        Ok(())
    }

    /// Reaps one dead node, batch by batch, if this node wins its reap lock.
    async fn reap(&self, node: &str, handler: &dyn OrphanHandler) -> Result<(), TransportError> {
        let lock = self.keys.reap(node);
        let token = uuid::Uuid::new_v4().to_string();
        let lock_ms =
            ((self.options.reap_timeout + self.options.lease_ttl).as_millis() as u64).max(1);
        let won: Option<String> = self
            .pool
            .query(
                redis::cmd("SET")
                    .arg(&lock)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(lock_ms),
            )
            .await
            .map_err(|e| self.failed("taking a reap lock", e))?;
        if won.is_none() {
            return Ok(());
        }
        let hash = self.keys.node(node);
        let mut reaped = 0u64;
        loop {
            let take = redis::cmd("EVAL")
                .arg(REAP_BATCH_SCRIPT)
                .arg(3)
                .arg(self.keys.lease(node))
                .arg(&hash)
                .arg(self.keys.reaped(node))
                .arg(REAP_BATCH)
                .arg(REAPED_MARKER_MS)
                .clone();
            let batch: Option<Vec<String>> = self
                .pool
                .query(&take)
                .await
                .map_err(|e| self.failed("reading a dead node's subscriptions", e))?;
            let Some(flat) = batch else {
                // The node came back: it keeps its records.
                return Ok(());
            };
            if flat.is_empty() {
                break;
            }
            let records: Vec<SubscriptionRecord> = flat
                .chunks_exact(2)
                .map(|pair| SubscriptionRecord {
                    id: pair[0].clone(),
                    document: pair[1].clone(),
                })
                .collect();
            let count = records.len() as u64;
            if reaped == 0 {
                tracing::info!(dead = %node, "reaping the subscriptions of a dead node");
            }
            let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
            let outcome =
                tokio::time::timeout(self.options.reap_timeout, handler.orphaned(node, records))
                    .await;
            let failure = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!("no answer within {:?}", self.options.reap_timeout)),
            };
            if let Some(reason) = failure {
                bump(&self.counters.errors, 1);
                tracing::warn!(dead = %node, reaped, error = %reason, "orphaned subscriptions not handled; the rest is reaped at a later sweep");
                // Let the next sweep (on any node) go on rather than waiting for the lock to expire.
                let release = redis::cmd("EVAL")
                    .arg(RELEASE)
                    .arg(1)
                    .arg(&lock)
                    .arg(&token)
                    .clone();
                if let Err(e) = self.pool.query::<i64>(&release).await {
                    let _ = self.failed("releasing a reap lock", e);
                }
                return Ok(());
            }
            // Their ends are out: they go, and the lock lasts for another batch.
            let mut done = redis::pipe();
            done.cmd("HDEL").arg(&hash).arg(&ids).ignore();
            done.cmd("PEXPIRE").arg(&lock).arg(lock_ms).ignore();
            self.pool
                .query_pipeline::<()>(&done)
                .await
                .map_err(|e| self.failed("deleting reaped subscriptions", e))?;
            reaped += count;
            bump(&self.counters.orphans_reaped, count);
        }
        let done = redis::cmd("EVAL")
            .arg(REAP_DONE)
            .arg(3)
            .arg(self.keys.lease(node))
            .arg(&self.keys.nodes)
            .arg(&lock)
            .arg(node)
            .arg(self.ttl_ms())
            .clone();
        let removed: i64 = self
            .pool
            .query(&done)
            .await
            .map_err(|e| self.failed("removing a reaped node", e))?;
        if removed == 1 {
            bump(&self.counters.nodes_reaped, 1);
            if reaped > 0 {
                tracing::info!(dead = %node, reaped, "a dead node's subscriptions are ended");
            }
        }
        Ok(())
    }

    /// Every live node's records, at most `max_list`.
    async fn list(&self) -> Result<Vec<SubscriptionRecord>, TransportError> {
        let pool = &self.pool;
        let nodes: Vec<String> = pool
            .query(redis::cmd("SMEMBERS").arg(&self.keys.nodes))
            .await
            .map_err(|e| self.failed("listing nodes", e))?;
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for node in &nodes {
            pipe.cmd("EXISTS")
                .arg(self.keys.lease(node))
                .cmd("HLEN")
                .arg(self.keys.node(node));
        }
        let sizes: Vec<i64> = pool
            .query_pipeline(&pipe)
            .await
            .map_err(|e| self.failed("checking leases", e))?;
        let cap = self.options.max_list;
        let mut budget = cap;
        let mut whole: Vec<&String> = Vec::new();
        let mut partial: Option<&String> = None;
        for (node, pair) in nodes.iter().zip(sizes.chunks(2)) {
            let [alive, len] = pair else { continue };
            if *alive == 0 || *len == 0 {
                continue;
            }
            let len = usize::try_from(*len).unwrap_or(usize::MAX);
            if len <= budget {
                budget -= len;
                whole.push(node);
            } else {
                partial = Some(node);
                break;
            }
        }
        let mut out: Vec<SubscriptionRecord> = Vec::new();
        if !whole.is_empty() {
            let mut pipe = redis::pipe();
            for node in &whole {
                pipe.cmd("HGETALL").arg(self.keys.node(node));
            }
            let hashes: Vec<HashMap<String, String>> = pool
                .query_pipeline(&pipe)
                .await
                .map_err(|e| self.failed("reading subscriptions", e))?;
            out.extend(
                hashes
                    .into_iter()
                    .flatten()
                    .map(|(id, document)| SubscriptionRecord { id, document }),
            );
        }
        let mut truncated = out.len() > cap;
        out.truncate(cap);
        if let Some(node) = partial {
            truncated = true;
            let hash = self.keys.node(node);
            let mut cursor = String::from("0");
            while out.len() < cap {
                let (next, flat): (String, Vec<String>) = pool
                    .query(
                        redis::cmd("HSCAN")
                            .arg(&hash)
                            .arg(&cursor)
                            .arg("COUNT")
                            .arg(SCAN_COUNT),
                    )
                    .await
                    .map_err(|e| self.failed("reading subscriptions", e))?;
                let mut pairs = flat.into_iter();
                while let (Some(id), Some(document)) = (pairs.next(), pairs.next()) {
                    if out.len() >= cap {
                        break;
                    }
                    out.push(SubscriptionRecord { id, document });
                }
                if next == "0" {
                    break;
                }
                cursor = next;
            }
        }
        if truncated {
            bump(&self.counters.list_truncations, 1);
            tracing::warn!(cap, "subscription list truncated at its cap");
        }
        Ok(out)
    }

    /// Writes `cmd` (HSET/HDEL chunks) unless the node is not registered yet.
    async fn write_through(
        &self,
        what: &str,
        pipe: Option<redis::Pipeline>,
    ) -> Result<(), TransportError> {
        let Some(pipe) = pipe else { return Ok(()) };
        match self.pool.query_pipeline::<()>(&pipe).await {
            Ok(()) => Ok(()),
            Err(e) => {
                // The local copy already changed: the next renewal rewrites Redis from it.
                self.dirty.store(true, Ordering::Release);
                Err(self.failed(what, e))
            }
        }
    }

    async fn goodbye(&self) {
        let _exclusive = self.sync.write().await;
        self.closed.store(true, Ordering::Release);
        self.records.lock().clear();
        if !self.registered.load(Ordering::Acquire) {
            return;
        }
        let id = self.node_id();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(self.keys.lease(id))
            .ignore()
            .cmd("DEL")
            .arg(self.keys.node(id))
            .ignore()
            .cmd("SREM")
            .arg(&self.keys.nodes)
            .arg(id)
            .ignore();
        if let Err(e) = self.pool.query_pipeline::<()>(&pipe).await {
            let e = self.failed("saying goodbye", e);
            tracing::warn!(node = %id, error = %e, "subscription registry goodbye failed; other nodes will reap this node's subscriptions after its lease");
        }
    }
}

#[async_trait]
impl SubscriptionRegistry for RedisSubscriptionRegistry {
    fn node_id(&self) -> &str {
        self.inner.node_id()
    }

    async fn add(&self, records: Vec<SubscriptionRecord>) -> Result<(), TransportError> {
        let inner = &self.inner;
        if records.is_empty() {
            return Ok(());
        }
        let _shared = inner.sync.read().await;
        if inner.closed.load(Ordering::Acquire) {
            return Err(TransportError::Closed);
        }
        let pipe = {
            let mut map = inner.records.lock();
            for r in &records {
                map.insert(r.id.clone(), r.document.clone());
            }
            inner.registered.load(Ordering::Acquire).then(|| {
                let hash = inner.keys.node(inner.node_id());
                let mut pipe = redis::pipe();
                for chunk in records.chunks(CHUNK) {
                    pipe.cmd("HSET").arg(&hash);
                    for r in chunk {
                        pipe.arg(&r.id).arg(&r.document);
                    }
                    pipe.ignore();
                }
                pipe
            })
        };
        inner.write_through("recording subscriptions", pipe).await
    }

    async fn remove(&self, ids: Vec<String>) -> Result<(), TransportError> {
        let inner = &self.inner;
        if ids.is_empty() {
            return Ok(());
        }
        let _shared = inner.sync.read().await;
        if inner.closed.load(Ordering::Acquire) {
            return Err(TransportError::Closed);
        }
        let pipe = {
            let mut map = inner.records.lock();
            for id in &ids {
                map.remove(id);
            }
            inner.registered.load(Ordering::Acquire).then(|| {
                let hash = inner.keys.node(inner.node_id());
                let mut pipe = redis::pipe();
                for chunk in ids.chunks(CHUNK) {
                    pipe.cmd("HDEL").arg(&hash).arg(chunk).ignore();
                }
                pipe
            })
        };
        inner.write_through("forgetting subscriptions", pipe).await
    }

    async fn list(&self) -> Result<Vec<SubscriptionRecord>, TransportError> {
        self.inner.list().await
    }

    fn start(&self, handler: Arc<dyn OrphanHandler>) {
        let mut task = self.task.lock();
        if task.is_some() || self.inner.closed.load(Ordering::Acquire) {
            tracing::warn!("subscription registry already started or closed");
            return;
        }
        let inner = self.inner.clone();
        let shutdown = self.shutdown.clone();
        let every = (inner.options.lease_ttl / 3).max(Duration::from_millis(1));
        *task = Some(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = inner.tick(handler.as_ref()) => {}
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(every) => {}
                }
            }
        }));
    }

    async fn close(&self) {
        self.shutdown.cancel();
        let task = self.task.lock().take();
        if let Some(task) = task {
            // Wait for the task to stop so no renewal can follow the goodbye.
            let _ = task.await;
        }
        self.inner.goodbye().await;
    }

    fn stats(&self) -> RegistryStats {
        let c = &self.inner.counters;
        RegistryStats {
            local_records: self.inner.records.lock().len() as u64,
            orphans_reaped: c.orphans_reaped.load(Ordering::Relaxed),
            nodes_reaped: c.nodes_reaped.load(Ordering::Relaxed),
            reregistrations: c.reregistrations.load(Ordering::Relaxed),
            list_truncations: c.list_truncations.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::hash_slot;

    #[test]
    fn every_key_shares_one_slot() {
        let k = Keys::new("quicksilver");
        assert_eq!(k.nodes, "{quicksilver:subs}:nodes");
        assert_eq!(k.node("n1"), "{quicksilver:subs}:node:n1");
        let slot = hash_slot(&k.nodes);
        for key in [k.node("a"), k.lease("b{x}"), k.reap("c")] {
            assert_eq!(hash_slot(&key), slot, "{key}");
        }
    }
}
