//! Active subscriptions (`--subscriptions`): subscription events and the subscription API, for the
//! whole cluster, in the shape of each protocol generation.
//!
//! When a subscriber connects, every matcher of its request becomes a subscription: its document
//! ([`document`]) is recorded in the cluster registry (the transport's
//! [`SubscriptionRegistry`]: a map on the memory transport, Redis hashes with a lease per node on
//! the Redis transport) and its `active: true` event is published as a private update through the
//! transport ([`Transport::publish_event`]: in the one order every node delivers, but retained
//! apart from real updates, so a flood of connections never pushes them out of history), so
//! every node's subscribers see every node's events. When the stream ends, the
//! records are removed and the `active: false` events published. A node that dies without saying
//! goodbye stops renewing its lease; another node then takes its records and publishes their
//! `active: false` events ([`OrphanEvents`]).
//!
//! A subscription keeps the shape of the generation it was made with: `topic=` selectors give the
//! pre-standardization JSON-LD document on `/.well-known/mercure/subscriptions/{topic}/{subscriber}`,
//! `match`/`match_<type>` matchers the current plain JSON document, with the SSE event type
//! `mercure`, on `/.well-known/mercure/subscriptions/{match_type}/{match}/{subscriber}`. The API
//! ([`api`]) answers in the shape of the requesting token's generation, listing the subscriptions
//! of that shape: an app still on the old protocol keeps seeing what it saw before while another
//! app of the same deployment has moved on.
//!
//! The event publishes and registry writes of a connection run in the connection's request (the
//! `active` ones, before the stream starts, so they come before the `inactive` ones) and in a
//! tracked task at its end, which shutdown waits for.

pub mod api;
pub mod document;
pub mod pace;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use quicksilver_auth::Generation;
use quicksilver_protocol::Update;
use quicksilver_transport::{
    OrphanHandler, SubscriptionRecord, SubscriptionRegistry, Transport, TransportError,
};
use tokio_util::task::TaskTracker;

pub use document::SubscriptionInfo;
pub use pace::{EventPace, Refused};

/// The SSE event type of current-generation subscription events.
pub const EVENT_TYPE: &str = "mercure";

/// How long shutdown waits for the last `active: false` events to be published.
const GOODBYE_GRACE: Duration = Duration::from_secs(5);

/// The active-subscriptions machinery of one node.
pub struct Subscriptions {
    registry: Arc<dyn SubscriptionRegistry>,
    transport: Arc<dyn Transport>,
    tasks: TaskTracker,
    pace: Arc<EventPace>,
}

impl std::fmt::Debug for Subscriptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriptions")
            .field("node", &self.registry.node_id())
            .finish_non_exhaustive()
    }
}

/// A connection's subscriptions: dropping it (when the stream ends, or when the request is
/// abandoned before the stream starts) ends them.
#[derive(Debug)]
pub struct Held {
    owner: Option<Arc<Subscriptions>>,
    infos: Vec<SubscriptionInfo>,
    /// The task recording and announcing the subscriptions, while it may still be running.
    announcing: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(owner) = self.owner.take() {
            owner.end(std::mem::take(&mut self.infos), self.announcing.take());
        }
    }
}

impl Subscriptions {
    /// Starts the registry's background work (lease, sweeping dead nodes); events are published
    /// at the pace of `pace`.
    pub fn start(
        registry: Arc<dyn SubscriptionRegistry>,
        transport: Arc<dyn Transport>,
        pace: EventPace,
    ) -> Self {
        let pace = Arc::new(pace);
        registry.start(Arc::new(OrphanEvents {
            transport: transport.clone(),
            pace: pace.clone(),
        }));
        Self {
            registry,
            transport,
            tasks: TaskTracker::new(),
            pace,
        }
    }

    /// A handle to the registry (for metrics).
    pub fn registry_handle(&self) -> Arc<dyn SubscriptionRegistry> {
        self.registry.clone()
    }

    /// The registry (for the API).
    pub fn registry(&self) -> &dyn SubscriptionRegistry {
        &*self.registry
    }

    /// Records a connection's subscriptions and publishes their `active: true` events, once the
    /// events' pace allows (their `active: false` ones are charged now too); refused when that
    /// would take longer than the pace's patience. Failures to record or publish are logged, not
    /// returned: the subscriber's stream works without them. The work runs in a task of its own,
    /// so an abandoned request cannot leave it half done.
    pub async fn connected(
        self: &Arc<Self>,
        infos: Vec<SubscriptionInfo>,
    ) -> Result<Held, Refused> {
        self.pace.admit(2 * infos.len()).await?;
        let this = self.clone();
        let announced = infos.clone();
        let mut held = Held {
            owner: Some(self.clone()),
            infos,
            announcing: None,
        };
        let task = held.announcing.insert(
            self.tasks
                .spawn(async move { this.announce(announced).await }),
        );
        // A failed task was logged by itself; the subscriptions end normally either way.
        let _ = task.await;
        held.announcing = None;
        Ok(held)
    }

    async fn announce(&self, infos: Vec<SubscriptionInfo>) {
        let records: Vec<SubscriptionRecord> = infos
            .iter()
            .map(|i| SubscriptionRecord {
                id: i.topic(),
                document: i.document(true).to_string(),
            })
            .collect();
        if let Err(e) = self.registry.add(records).await {
            tracing::warn!(error = %e, "could not record subscriptions in the registry");
        }
        for info in &infos {
            if let Err(e) = publish_event(&*self.transport, info, true).await {
                tracing::warn!(error = %e, "could not publish a subscription event");
            }
        }
    }

    /// Ends subscriptions in the background, after their announcement if it is still running.
    fn end(
        self: Arc<Self>,
        infos: Vec<SubscriptionInfo>,
        announcing: Option<tokio::task::JoinHandle<()>>,
    ) {
        if infos.is_empty() {
            return;
        }
        let tasks = self.tasks.clone();
        tasks.spawn(async move {
            if let Some(task) = announcing {
                let _ = task.await;
            }
            let ids = infos.iter().map(SubscriptionInfo::topic).collect();
            if let Err(e) = self.registry.remove(ids).await {
                tracing::warn!(error = %e, "could not remove subscriptions from the registry");
            }
            for info in &infos {
                if let Err(e) = publish_event(&*self.transport, info, false).await {
                    tracing::warn!(error = %e, "could not publish a subscription event");
                }
            }
        });
    }

    /// Waits (bounded) for the pending `active: false` events, then says goodbye to the registry.
    pub async fn close(&self) {
        self.tasks.close();
        if tokio::time::timeout(GOODBYE_GRACE, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("gave up waiting for the last subscription events");
        }
        self.registry.close().await;
    }
}

async fn publish_event(
    transport: &dyn Transport,
    info: &SubscriptionInfo,
    active: bool,
) -> Result<(), TransportError> {
    let update = event_update(info.topic(), info.document(active), info.generation);
    transport.publish_event(update).await.map(drop)
}

/// The private update announcing a subscription document.
fn event_update(topic: String, document: serde_json::Value, generation: Generation) -> Update {
    Update {
        id: format!("urn:uuid:{}", uuid::Uuid::new_v4()),
        topics: vec![topic],
        data: document.to_string(),
        private: true,
        event_type: match generation {
            Generation::Current => Some(EVENT_TYPE.to_string()),
            Generation::Legacy => None,
        },
        retry: None,
    }
}

/// Publishes the end of a dead node's subscriptions (called on one node of the cluster).
struct OrphanEvents {
    transport: Arc<dyn Transport>,
    /// Charged with the events (owed: never refused), so new subscriptions wait for them.
    pace: Arc<EventPace>,
}

impl OrphanEvents {
    /// Publishes each record's document with `active` set as given, all at once (a batch of a
    /// reaped node holds hundreds: one round trip's wait, not hundreds).
    async fn publish(
        &self,
        records: Vec<SubscriptionRecord>,
        active: bool,
    ) -> Result<(), TransportError> {
        self.pace.owe(records.len());
        let publishes = records.into_iter().filter_map(|record| {
            let Ok(mut document) = serde_json::from_str::<serde_json::Value>(&record.document)
            else {
                tracing::warn!(id = %record.id, "skipping an unreadable subscription record");
                return None;
            };
            let generation = document::document_generation(&document);
            document["active"] = serde_json::Value::Bool(active);
            Some(
                self.transport
                    .publish_event(event_update(record.id, document, generation)),
            )
        });
        for outcome in futures_util::future::join_all(publishes).await {
            outcome?;
        }
        Ok(())
    }
}

#[async_trait]
impl OrphanHandler for OrphanEvents {
    async fn orphaned(
        &self,
        node: &str,
        records: Vec<SubscriptionRecord>,
    ) -> Result<(), TransportError> {
        tracing::info!(
            node,
            subscriptions = records.len(),
            "a node left without goodbye: ending its subscriptions"
        );
        self.publish(records, false).await
    }

    async fn revived(
        &self,
        node: &str,
        records: Vec<SubscriptionRecord>,
    ) -> Result<(), TransportError> {
        tracing::info!(
            node,
            subscriptions = records.len(),
            "this node's subscriptions were ended while it was cut off: announcing them again"
        );
        self.publish(records, true).await
    }
}
