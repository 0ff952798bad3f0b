//! The syncer: one task per node that keeps the node's [`RevocationSet`](super::RevocationSet)
//! equal to the store and ends the streams of revoked tokens.
//!
//! Every [`POLL`] (or at once when this node stored a change: [`SyncControl::sync_now`]) it asks
//! the store for the changes after its cursor. New revocations are put in force (a new index
//! swapped in) and the local streams they cover ended; removals are put in force. When the store
//! cannot tell what changed (first pass, Redis restarted or failed over, the log trimmed past the
//! cursor) it reads the whole set and ends the streams the whole set covers. Expired revocations
//! are dropped on the first pass after they lapse. A store that cannot be reached leaves the copy
//! as it is (what was revoked stays revoked) and is asked again at the next poll; the first
//! failure of a run is logged, and every one counted.
//!
//! The task holds the [`Revocations`](super::Revocations) weakly and ends once the hub is gone.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use quicksilver_transport::revocations::{Change, Changes, Cursor};
use quicksilver_transport::{RevocationRecord, TransportError};
use tokio::sync::{watch, Notify};

use super::set::{unix_now, Revocation, RevocationIndex};
use super::{Revocations, WeakRevocations};

/// How often a node asks the store for changes: a revocation made on another node is in force
/// here within this (plus a round trip).
pub const POLL: Duration = Duration::from_millis(250);

/// Wakes the syncer and tells who waits when a pass is done.
#[derive(Debug)]
pub(crate) struct SyncControl {
    nudge: Notify,
    /// The number of passes started.
    started: AtomicU64,
    /// The number of passes completed (pass `n` is started as `started` becomes `n`).
    passes: watch::Sender<u64>,
}

impl Default for SyncControl {
    fn default() -> Self {
        Self {
            nudge: Notify::new(),
            started: AtomicU64::new(0),
            passes: watch::Sender::new(0),
        }
    }
}

impl SyncControl {
    /// Wakes the syncer and waits (up to `max`) for a pass that started after this call.
    pub(crate) async fn sync_now(&self, max: Duration) {
        let mut passes = self.passes.subscribe();
        // A pass running now may have read the store before the caller's write: the one wanted
        // is the next to start.
        let wanted = self.started.load(Ordering::Acquire) + 1;
        self.nudge.notify_one();
        let _ = tokio::time::timeout(max, passes.wait_for(|n| *n >= wanted)).await;
    }
}

/// The syncer's own state: the store's records it holds and where it stands.
#[derive(Default)]
struct Follower {
    records: BTreeMap<String, Revocation>,
    cursor: Option<Cursor>,
    failing: bool,
}

/// Runs the syncer until the hub is dropped.
pub(crate) async fn run(revocations: WeakRevocations) {
    let mut follower = Follower::default();
    loop {
        let Some(r) = revocations.upgrade() else {
            return;
        };
        r.sync.started.fetch_add(1, Ordering::AcqRel);
        match follower.pass(&r).await {
            Ok(()) => {
                if follower.failing {
                    tracing::info!("revocation store reachable again");
                }
                follower.failing = false;
            }
            Err(e) => {
                r.metrics.sync_errors.inc();
                if !follower.failing {
                    tracing::warn!(error = %e, "cannot read the revocation store: the revocations in force stay, retrying");
                }
                follower.failing = true;
            }
        }
        follower.expire(&r);
        r.sync.passes.send_modify(|n| *n += 1);
        let nudged = async {
            r.sync.nudge.notified().await;
        };
        tokio::select! {
            () = nudged => {}
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

impl Follower {
    /// Reads the store's changes (or the whole set) and puts them in force.
    async fn pass(&mut self, r: &Revocations) -> Result<(), TransportError> {
        loop {
            let changes = match &self.cursor {
                Some(cursor) => r.store.changes(cursor).await?,
                None => Changes::Reload,
            };
            match changes {
                Changes::Unchanged => return Ok(()),
                Changes::Reload => {
                    let snapshot = r.store.snapshot().await?;
                    let now = unix_now();
                    self.records = snapshot
                        .records
                        .iter()
                        .filter(|record| !record.is_expired(now))
                        .filter_map(decode)
                        .collect();
                    self.cursor = Some(snapshot.cursor);
                    r.metrics.reloads.inc();
                    self.publish(r);
                    // Whatever is in force now, a stream may have been authenticated before it
                    // reached this node.
                    let index = RevocationIndex::new(self.records.values());
                    close_covered(r, &index, now);
                    return Ok(());
                }
                Changes::Changed { changes, cursor } => {
                    let mut added = Vec::new();
                    for change in changes {
                        match change {
                            Change::Put(record) => {
                                if let Some((key, revocation)) = decode(&record) {
                                    added.push(revocation.clone());
                                    self.records.insert(key, revocation);
                                }
                            }
                            Change::Remove(key) => {
                                self.records.remove(&key);
                            }
                        }
                    }
                    self.cursor = Some(cursor);
                    self.publish(r);
                    close_covered(r, &RevocationIndex::new(&added), unix_now());
                }
            }
        }
    }

    /// Drops the revocations that lapsed.
    fn expire(&mut self, r: &Revocations) {
        let now = unix_now();
        if self.records.values().any(|rev| rev.exp <= now) {
            self.records.retain(|_, rev| rev.exp > now);
            self.publish(r);
        }
    }

    /// Puts the held records in force on this node.
    fn publish(&self, r: &Revocations) {
        r.set.replace(self.records.clone());
        r.metrics.in_force.set(self.records.len() as i64);
    }
}

/// A stored record as a revocation, with its key; `None` (and a warning) for one this node
/// cannot read.
fn decode(record: &RevocationRecord) -> Option<(String, Revocation)> {
    match serde_json::from_str::<Revocation>(&record.document) {
        Ok(revocation) => Some((record.key.clone(), revocation)),
        Err(e) => {
            tracing::warn!(key = %record.key, error = %e, "unreadable revocation ignored");
            None
        }
    }
}

/// Ends the local streams whose token `index` covers.
fn close_covered(r: &Revocations, index: &RevocationIndex, now: u64) {
    if index.is_empty() {
        return;
    }
    let closed = r.fanout.revoke(|identity| index.covers(identity, now));
    if closed > 0 {
        r.metrics.streams_closed.inc_by(closed as u64);
        tracing::info!(
            streams = closed,
            "ended subscriber streams of revoked tokens"
        );
    }
}
