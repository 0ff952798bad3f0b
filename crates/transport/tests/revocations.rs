//! The Redis revocation store against real `redis-server` processes: two nodes follow each other's
//! changes through the log, the cap counts only records not yet expired, concurrent writers of a
//! key conflict instead of overwriting, a trimmed log or a Redis that lost its data makes a node
//! reload, and it all works on a 3-master Redis Cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use quicksilver_testkit::{RedisCluster, RedisServer};
use quicksilver_transport::revocations::{Change, Changes, Cursor, LOG_LENGTH};
use quicksilver_transport::{
    PutOutcome, RedisConfig, RedisTransport, RevocationRecord, RevocationStore,
};

/// Upper bound on any single test.
const TEST_LIMIT: Duration = Duration::from_secs(60);

fn store(urls: &[String]) -> (RedisTransport, std::sync::Arc<dyn RevocationStore>) {
    let transport = RedisTransport::new(RedisConfig {
        urls: urls.to_vec(),
        ..RedisConfig::default()
    })
    .expect("valid config");
    let store = transport.revocation_store();
    (transport, store)
}

fn record(key: &str, expires_at: u64) -> RevocationRecord {
    RevocationRecord {
        key: key.into(),
        document: format!(r#"{{"key":"{key}","note":"a:b"}}"#),
        expires_at,
    }
}

/// A node's copy: applies snapshots and changes as the server does.
#[derive(Default)]
struct Follower {
    records: BTreeMap<String, RevocationRecord>,
    cursor: Cursor,
    reloads: usize,
}

impl Follower {
    async fn sync(&mut self, store: &dyn RevocationStore) {
        loop {
            match store.changes(&self.cursor).await.unwrap() {
                Changes::Unchanged => return,
                Changes::Reload => {
                    self.reloads += 1;
                    let snapshot = store.snapshot().await.unwrap();
                    self.records = snapshot
                        .records
                        .into_iter()
                        .map(|r| (r.key.clone(), r))
                        .collect();
                    self.cursor = snapshot.cursor;
                }
                Changes::Changed { changes, cursor } => {
                    for change in changes {
                        match change {
                            Change::Put(r) => {
                                self.records.insert(r.key.clone(), r);
                            }
                            Change::Remove(key) => {
                                self.records.remove(&key);
                            }
                        }
                    }
                    self.cursor = cursor;
                }
            }
        }
    }
}

async fn bounded(test: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(TEST_LIMIT, test)
        .await
        .expect("test exceeded its time limit");
}

/// Two nodes: one writes, the other follows; then the cap, conflicts, trimming and a restart.
async fn follow_and_recover(urls: Vec<String>, mut restart: impl FnMut()) {
    let (_ta, a) = store(&urls);
    let (_tb, b) = store(&urls);
    let mut follower = Follower::default();
    follower.sync(b.as_ref()).await;
    assert!(follower.records.is_empty());

    let now = 1_000;
    for key in ["jti:x", "sub:y"] {
        assert_eq!(
            a.put(&record(key, now + 100), None, now, 3).await.unwrap(),
            PutOutcome::Stored { replaced: false }
        );
    }
    follower.sync(b.as_ref()).await;
    assert_eq!(follower.records.len(), 2);
    assert_eq!(follower.records["jti:x"], record("jti:x", now + 100));

    // Compare-and-set: a writer holding a stale value conflicts; the one holding the current one
    // replaces it.
    let current = a.get("sub:y").await.unwrap();
    assert_eq!(current, Some(record("sub:y", now + 100)));
    assert_eq!(
        a.put(&record("sub:y", now + 500), None, now, 3)
            .await
            .unwrap(),
        PutOutcome::Conflict
    );
    assert_eq!(
        a.put(&record("sub:y", now + 500), current.as_ref(), now, 3)
            .await
            .unwrap(),
        PutOutcome::Stored { replaced: true }
    );
    assert!(a.remove("jti:x").await.unwrap());
    assert!(!a.remove("jti:x").await.unwrap());
    follower.sync(b.as_ref()).await;
    assert_eq!(
        follower.records.values().cloned().collect::<Vec<_>>(),
        vec![record("sub:y", now + 500)]
    );
    assert_eq!(follower.reloads, 1, "the first sync only");

    // The cap: three records not yet expired; a fourth is refused until one expires.
    a.put(&record("k1", now + 10), None, now, 3).await.unwrap();
    a.put(&record("k2", now + 100), None, now, 3).await.unwrap();
    assert_eq!(
        a.put(&record("k3", now + 100), None, now, 3).await.unwrap(),
        PutOutcome::Full
    );
    assert_eq!(
        a.put(&record("k3", now + 100), None, now + 10, 3)
            .await
            .unwrap(),
        PutOutcome::Stored { replaced: false }
    );
    assert!(a.get("k1").await.unwrap().is_none(), "purged once expired");

    // A follower further behind than the log reloads, and ends with the same set.
    let behind = follower.cursor.clone();
    for i in 0..LOG_LENGTH + 300 {
        a.put(
            &record(&format!("bulk{}", i % 5), now + 100),
            None,
            now,
            100,
        )
        .await
        .map(|_| ())
        .unwrap_or(());
        let _ = a.remove(&format!("bulk{}", i % 5)).await;
    }
    assert_eq!(b.changes(&behind).await.unwrap(), Changes::Reload);
    follower.sync(b.as_ref()).await;
    let snapshot = a.snapshot().await.unwrap();
    assert_eq!(follower.records.len(), snapshot.records.len());

    // Redis loses everything: the next poll says so, and the reload empties the copy.
    let reloads = follower.reloads;
    restart();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match b.changes(&follower.cursor).await {
            Ok(Changes::Reload) => break,
            Ok(other) => panic!("a restarted Redis must ask for a reload, got {other:?}"),
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("Redis did not come back: {e}"),
        }
    }
    follower.sync(b.as_ref()).await;
    assert!(follower.records.is_empty());
    assert_eq!(follower.reloads, reloads + 1);
    // And it follows the new epoch's changes (the writer's first command after the restart may
    // meet one of its pool's broken connections, each then replaced).
    let mut stored = a.put(&record("after", now + 100), None, now, 3).await;
    for _ in 0..RedisConfig::default().pool_size {
        if stored.is_ok() {
            break;
        }
        stored = a.put(&record("after", now + 100), None, now, 3).await;
    }
    assert_eq!(stored.unwrap(), PutOutcome::Stored { replaced: false });
    follower.sync(b.as_ref()).await;
    assert_eq!(follower.records.len(), 1);
    assert_eq!(follower.reloads, reloads + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_follow_the_log_and_reload_when_it_cannot_tell() {
    let mut server = RedisServer::start();
    let urls = vec![server.url()];
    bounded(follow_and_recover(urls, || server.restart())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_works_on_redis_cluster() {
    let cluster = RedisCluster::start(3);
    let urls = cluster.urls();
    let flush = cluster.urls();
    bounded(follow_and_recover(urls, move || {
        // Every master loses its data, as a cluster restarted without persistence would.
        for url in &flush {
            let _: () = quicksilver_testkit::redis::query_url(url, &["FLUSHALL"]).unwrap();
        }
    }))
    .await;
}
