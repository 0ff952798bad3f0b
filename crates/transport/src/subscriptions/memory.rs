//! The single-node registry: a map. There is no other node, so no lease and nothing to reap.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{OrphanHandler, RegistryStats, SubscriptionRecord, SubscriptionRegistry};
use crate::TransportError;

/// The registry of a hub without a cluster (see the module docs).
#[derive(Debug)]
pub struct MemoryRegistry {
    node_id: String,
    records: Mutex<HashMap<String, String>>,
}

impl MemoryRegistry {
    /// An empty registry with a random node id.
    pub fn new() -> Self {
        Self {
            node_id: uuid::Uuid::new_v4().to_string(),
            records: Mutex::new(HashMap::new()),
        }
    }
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl SubscriptionRegistry for MemoryRegistry {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    async fn add(&self, records: Vec<SubscriptionRecord>) -> Result<(), TransportError> {
        let mut map = self.records.lock();
        for r in records {
            map.insert(r.id, r.document);
        }
        Ok(())
    }

    async fn remove(&self, ids: Vec<String>) -> Result<(), TransportError> {
        let mut map = self.records.lock();
        for id in ids {
            map.remove(&id);
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<SubscriptionRecord>, TransportError> {
        Ok(super::records_of(&self.records.lock()))
    }

    fn start(&self, _handler: Arc<dyn OrphanHandler>) {}

    async fn close(&self) {
        self.records.lock().clear();
    }

    fn stats(&self) -> RegistryStats {
        RegistryStats {
            local_records: self.records.lock().len() as u64,
            ..RegistryStats::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, doc: &str) -> SubscriptionRecord {
        SubscriptionRecord {
            id: id.into(),
            document: doc.into(),
        }
    }

    #[tokio::test]
    async fn add_list_remove_close() {
        let r = MemoryRegistry::new();
        assert!(!r.node_id().is_empty());
        r.add(vec![record("a", "1"), record("b", "2")])
            .await
            .unwrap();
        r.add(vec![record("a", "3")]).await.unwrap();
        let mut all = r.list().await.unwrap();
        all.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!(all, vec![record("a", "3"), record("b", "2")]);
        assert_eq!(r.stats().local_records, 2);
        r.remove(vec!["a".into(), "unknown".into()]).await.unwrap();
        assert_eq!(r.list().await.unwrap(), vec![record("b", "2")]);
        r.close().await;
        assert!(r.list().await.unwrap().is_empty());
    }
}
