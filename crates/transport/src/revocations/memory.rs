//! The single-node revocation store: a map and the last [`LOG_LENGTH`] changes, behind one mutex
//! (held for a few map operations, never across an `.await`).

use std::collections::{HashMap, VecDeque};

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{
    Change, Changes, Cursor, PutOutcome, RevocationRecord, RevocationStore, Snapshot,
    CHANGES_BATCH, LOG_LENGTH,
};
use crate::TransportError;

/// The revocations of a hub without a cluster (see the module docs).
#[derive(Debug)]
pub struct MemoryRevocations {
    /// Fixed for the store's life: nothing here can lose its data without the node.
    epoch: String,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    records: HashMap<String, RevocationRecord>,
    version: u64,
    /// The last changes, oldest first, each with its version.
    log: VecDeque<(u64, Change)>,
}

impl State {
    fn log(&mut self, change: Change) -> u64 {
        self.version += 1;
        if self.log.len() == LOG_LENGTH {
            self.log.pop_front();
        }
        self.log.push_back((self.version, change));
        self.version
    }
}

impl MemoryRevocations {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            epoch: uuid::Uuid::new_v4().to_string(),
            state: Mutex::new(State::default()),
        }
    }

    fn cursor(&self, version: u64) -> Cursor {
        Cursor {
            epoch: Some(self.epoch.clone()),
            version,
            log_id: None,
        }
    }
}

impl Default for MemoryRevocations {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl RevocationStore for MemoryRevocations {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &str) -> Result<Option<RevocationRecord>, TransportError> {
        Ok(self.state.lock().records.get(key).cloned())
    }

    async fn put(
        &self,
        record: &RevocationRecord,
        expected: Option<&RevocationRecord>,
        now: u64,
        max: usize,
    ) -> Result<PutOutcome, TransportError> {
        let mut state = self.state.lock();
        if state.records.get(&record.key) != expected {
            return Ok(PutOutcome::Conflict);
        }
        state.records.retain(|_, r| !r.is_expired(now));
        let replaced = state.records.contains_key(&record.key);
        if !replaced && state.records.len() >= max {
            return Ok(PutOutcome::Full);
        }
        state.records.insert(record.key.clone(), record.clone());
        state.log(Change::Put(record.clone()));
        Ok(PutOutcome::Stored { replaced })
    }

    async fn remove(&self, key: &str) -> Result<bool, TransportError> {
        let mut state = self.state.lock();
        if state.records.remove(key).is_none() {
            return Ok(false);
        }
        state.log(Change::Remove(key.to_string()));
        Ok(true)
    }

    async fn snapshot(&self) -> Result<Snapshot, TransportError> {
        let state = self.state.lock();
        Ok(Snapshot {
            records: state.records.values().cloned().collect(),
            cursor: self.cursor(state.version),
        })
    }

    async fn changes(&self, cursor: &Cursor) -> Result<Changes, TransportError> {
        let state = self.state.lock();
        if cursor.epoch.as_deref() != Some(self.epoch.as_str()) || cursor.version > state.version {
            return Ok(Changes::Reload);
        }
        if cursor.version == state.version {
            return Ok(Changes::Unchanged);
        }
        // The log must still hold the change right after the cursor.
        match state.log.front() {
            Some((first, _)) if *first <= cursor.version + 1 => {}
            _ => return Ok(Changes::Reload),
        }
        let changes: Vec<(u64, Change)> = state
            .log
            .iter()
            .filter(|(v, _)| *v > cursor.version)
            .take(CHANGES_BATCH)
            .cloned()
            .collect();
        let last = changes.last().map_or(cursor.version, |(v, _)| *v);
        Ok(Changes::Changed {
            changes: changes.into_iter().map(|(_, c)| c).collect(),
            cursor: self.cursor(last),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, expires_at: u64) -> RevocationRecord {
        RevocationRecord {
            key: key.into(),
            document: format!("{{\"k\":\"{key}\"}}"),
            expires_at,
        }
    }

    #[tokio::test]
    async fn changes_follow_a_cursor_and_a_lost_log_asks_for_a_reload() {
        let store = MemoryRevocations::new();
        let start = store.snapshot().await.unwrap();
        assert!(start.records.is_empty());
        assert_eq!(
            store.changes(&start.cursor).await.unwrap(),
            Changes::Unchanged
        );

        let a = record("a", 100);
        assert_eq!(
            store.put(&a, None, 10, 10).await.unwrap(),
            PutOutcome::Stored { replaced: false }
        );
        // A stale expectation is a conflict, nothing is written.
        assert_eq!(
            store.put(&record("a", 200), None, 10, 10).await.unwrap(),
            PutOutcome::Conflict
        );
        assert!(store.remove("a").await.unwrap());
        assert!(!store.remove("a").await.unwrap());
        let Changes::Changed { changes, cursor } = store.changes(&start.cursor).await.unwrap()
        else {
            panic!("two changes expected");
        };
        assert_eq!(changes, vec![Change::Put(a), Change::Remove("a".into())]);
        assert_eq!(cursor.version(), 2);
        assert_eq!(store.changes(&cursor).await.unwrap(), Changes::Unchanged);

        // A cursor of another store (epoch), or one the log no longer reaches, reloads.
        let other = MemoryRevocations::new().snapshot().await.unwrap().cursor;
        assert_eq!(store.changes(&other).await.unwrap(), Changes::Reload);
        for i in 0..=LOG_LENGTH {
            let r = record(&format!("k{i}"), 100);
            store.put(&r, None, 10, usize::MAX).await.unwrap();
        }
        assert_eq!(store.changes(&cursor).await.unwrap(), Changes::Reload);
    }

    #[tokio::test]
    async fn the_cap_counts_only_records_not_yet_expired() {
        let store = MemoryRevocations::new();
        store.put(&record("a", 50), None, 10, 2).await.unwrap();
        store.put(&record("b", 500), None, 10, 2).await.unwrap();
        assert_eq!(
            store.put(&record("c", 500), None, 10, 2).await.unwrap(),
            PutOutcome::Full
        );
        // Replacing a held key is always allowed.
        let b = store.get("b").await.unwrap();
        assert_eq!(
            store
                .put(&record("b", 600), b.as_ref(), 10, 2)
                .await
                .unwrap(),
            PutOutcome::Stored { replaced: true }
        );
        // Once `a` expired, `c` fits.
        assert_eq!(
            store.put(&record("c", 500), None, 60, 2).await.unwrap(),
            PutOutcome::Stored { replaced: false }
        );
        assert!(store.get("a").await.unwrap().is_none());
    }
}
