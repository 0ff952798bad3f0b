//! The cluster-wide registry of active subscriptions (Mercure's "Active Subscriptions" API).
//!
//! Each node records the subscriptions its subscribers hold when they connect
//! ([`SubscriptionRegistry::add`]) and forgets them when they disconnect
//! ([`SubscriptionRegistry::remove`]). [`SubscriptionRegistry::list`] answers for the whole cluster.
//! A node that dies without saying goodbye (SIGKILL, lost host) leaves subscriptions behind; exactly
//! one surviving node is handed them ([`OrphanHandler::orphaned`]) to publish their end
//! (`active: false`), after which they are forgotten.
//!
//! Records are opaque here: the server renders the subscription document and chooses the id (the
//! topic of the subscription's events, unique in the cluster).
//!
//! # Implementations
//! - [`MemoryRegistry`]: a single node, a map; nothing can die but the whole hub.
//! - [`RedisSubscriptionRegistry`] (from [`RedisTransport::subscription_registry`](crate::RedisTransport::subscription_registry)):
//!   records in Redis with a lease per node; see [`redis`] for the key layout, the lease, the sweep
//!   and what happens when Redis restarts or a node is partitioned away.

pub mod memory;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::TransportError;

pub use memory::MemoryRegistry;
pub use redis::RedisSubscriptionRegistry;

/// Default lease of a node: it is considered dead this long after its last renewal.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);

/// Default cap on the records one [`SubscriptionRegistry::list`] returns (memory bound).
pub const DEFAULT_MAX_LIST: usize = 100_000;

/// Default bound on one [`OrphanHandler::orphaned`] call.
pub const DEFAULT_REAP_TIMEOUT: Duration = Duration::from_secs(30);

/// One active subscription as the cluster knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    /// Unique cluster-wide: the topic of the subscription's events (e.g.
    /// `/.well-known/mercure/subscriptions/exact/foo/urn%3Auuid%3A…`).
    pub id: String,
    /// The subscription document as JSON text, rendered by the server (with `"active":true`).
    /// Opaque here.
    pub document: String,
}

/// A node's local copy of its records (id → document) as records.
pub(crate) fn records_of(
    map: &std::collections::HashMap<String, String>,
) -> Vec<SubscriptionRecord> {
    map.iter()
        .map(|(id, document)| SubscriptionRecord {
            id: id.clone(),
            document: document.clone(),
        })
        .collect()
}

/// What to do with the subscriptions of a node that died without saying goodbye.
#[async_trait]
pub trait OrphanHandler: Send + Sync + 'static {
    /// Called on exactly one node of the cluster for a dead node's subscriptions: publish their end.
    /// `Err` (or not returning within the registry's reap timeout) → the records are kept and offered
    /// again at a later sweep, possibly on another node (so a failed call may be repeated: the
    /// handler should tolerate publishing an end twice).
    async fn orphaned(
        &self,
        node: &str,
        records: Vec<SubscriptionRecord>,
    ) -> Result<(), TransportError>;

    /// Called on a node that was reaped while still alive (cut off from Redis, or paused, for
    /// longer than its lease) once it is back and has written its records again: the ends of its
    /// subscriptions were published, so publish the live ones (`records`) as active again. Not
    /// called when Redis merely lost its data, since no end was published then. `Err` → called
    /// again at the next renewal. The default does nothing.
    async fn revived(
        &self,
        node: &str,
        records: Vec<SubscriptionRecord>,
    ) -> Result<(), TransportError> {
        let _ = (node, records);
        Ok(())
    }
}

/// Counters of a registry, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistryStats {
    /// Subscriptions currently recorded by this node.
    pub local_records: u64,
    /// Records of dead nodes this node handed to the [`OrphanHandler`] successfully.
    pub orphans_reaped: u64,
    /// Dead nodes this node cleaned up (with or without records).
    pub nodes_reaped: u64,
    /// Times this node found its own lease gone (Redis lost its data, or the node was unreachable
    /// or paused for longer than the lease and may have been reaped) and wrote its records again.
    pub reregistrations: u64,
    /// Times a `list` hit the record cap and returned a partial answer.
    pub list_truncations: u64,
    /// Failed registry operations (Redis errors, handler errors).
    pub errors: u64,
}

/// The cluster-wide registry of active subscriptions (see the module docs).
#[async_trait]
pub trait SubscriptionRegistry: Send + Sync + 'static {
    /// This node's id.
    fn node_id(&self) -> &str;

    /// Records subscriptions held by this node (a record with a known id replaces it). The local copy
    /// is updated even when `Err` is returned: the registry then writes it again in the background.
    async fn add(&self, records: Vec<SubscriptionRecord>) -> Result<(), TransportError>;

    /// Forgets subscriptions of this node by id (unknown ids are ignored). As with `add`, an `Err`
    /// is repaired in the background.
    async fn remove(&self, ids: Vec<String>) -> Result<(), TransportError>;

    /// Every subscription held by a live node of the cluster (order unspecified), at most the
    /// registry's `max_list` records.
    async fn list(&self) -> Result<Vec<SubscriptionRecord>, TransportError>;

    /// Starts the background work (lease renewal, sweeping dead nodes) until `close`. Records added
    /// before are published to the cluster by the first renewal.
    fn start(&self, handler: Arc<dyn OrphanHandler>);

    /// Graceful goodbye: stops background work and deletes this node's lease and records.
    async fn close(&self);

    /// Counters for metrics.
    fn stats(&self) -> RegistryStats;
}

/// How a [`RedisSubscriptionRegistry`] behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryOptions {
    /// This node's id, unique in the cluster (default: a random UUID, new at every start, so a
    /// restarted node never resurrects its previous incarnation's records).
    pub node_id: String,
    /// A node whose lease was not renewed for this long is dead and its records are reaped. It is
    /// renewed every third of it. Keep it well above the longest expected Redis hiccup.
    pub lease_ttl: Duration,
    /// Cap on the records one `list` returns, to bound memory; beyond it the answer is partial, a
    /// warning is logged and [`RegistryStats::list_truncations`] counts it.
    pub max_list: usize,
    /// Bound on one [`OrphanHandler::orphaned`] call; a call taking longer counts as failed.
    pub reap_timeout: Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            node_id: uuid::Uuid::new_v4().to_string(),
            lease_ttl: DEFAULT_LEASE_TTL,
            max_list: DEFAULT_MAX_LIST,
            reap_timeout: DEFAULT_REAP_TIMEOUT,
        }
    }
}
