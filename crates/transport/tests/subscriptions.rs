//! The Redis subscription registry against real `redis-server` processes (each test its own, on a
//! free port): nodes see each other's records, dead nodes are reaped exactly once, failed handlers
//! are retried, a Redis restart is repaired, and it all works on a 3-master Redis Cluster.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use quicksilver_testkit::{poll_until, wait_until, RedisCluster, RedisServer};
use quicksilver_transport::{
    OrphanHandler, RedisConfig, RedisSubscriptionRegistry, RedisTransport, RegistryOptions,
    SubscriptionRecord, SubscriptionRegistry, TransportError,
};

/// Upper bound on any single test.
const TEST_LIMIT: Duration = Duration::from_secs(60);
/// Upper bound on waiting for something that should happen promptly.
const WAIT: Duration = Duration::from_secs(15);
/// Short leases so deaths are noticed quickly.
const LEASE: Duration = Duration::from_millis(300);

/// Records every call; fails the first `fail_first` calls.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<(String, Vec<SubscriptionRecord>)>>,
    revived: Mutex<Vec<(String, Vec<SubscriptionRecord>)>>,
    fail_first: AtomicUsize,
}

#[async_trait]
impl OrphanHandler for Recorder {
    async fn orphaned(
        &self,
        node: &str,
        records: Vec<SubscriptionRecord>,
    ) -> Result<(), TransportError> {
        self.calls.lock().push((node.to_string(), records));
        let failing = self
            .fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(TransportError::Unavailable("handler refuses".into()));
        }
        Ok(())
    }

    async fn revived(
        &self,
        node: &str,
        records: Vec<SubscriptionRecord>,
    ) -> Result<(), TransportError> {
        self.revived.lock().push((node.to_string(), records));
        Ok(())
    }
}

impl Recorder {
    fn calls_for(&self, node: &str) -> Vec<Vec<SubscriptionRecord>> {
        self.calls
            .lock()
            .iter()
            .filter(|(n, _)| n == node)
            .map(|(_, r)| r.clone())
            .collect()
    }
}

fn config(urls: Vec<String>) -> RedisConfig {
    RedisConfig {
        urls,
        ..RedisConfig::default()
    }
}

/// A registry with its own transport (as on its own node), not started.
fn registry(urls: &[String], node: &str) -> (RedisTransport, Arc<RedisSubscriptionRegistry>) {
    let transport = RedisTransport::new(config(urls.to_vec())).expect("valid config");
    let registry = transport.subscription_registry(RegistryOptions {
        node_id: node.into(),
        lease_ttl: LEASE,
        // A reap whose lock could not be released is retried after this plus a lease.
        reap_timeout: Duration::from_secs(2),
        ..RegistryOptions::default()
    });
    (transport, registry)
}

fn records(node: &str, n: usize) -> Vec<SubscriptionRecord> {
    (0..n)
        .map(|i| SubscriptionRecord {
            id: format!("/.well-known/mercure/subscriptions/exact/t{i}/{node}"),
            document: format!(r#"{{"id":"{node}-{i}","active":true}}"#),
        })
        .collect()
}

/// id → document, for order-free comparisons.
fn by_id(records: &[SubscriptionRecord]) -> BTreeMap<String, String> {
    records
        .iter()
        .map(|r| (r.id.clone(), r.document.clone()))
        .collect()
}

async fn bounded<F: Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_LIMIT, test)
        .await
        .expect("test exceeded its time limit");
}

/// Polls `list` until `want` holds of its answer.
async fn list_until(
    registry: &dyn SubscriptionRegistry,
    what: &str,
    want: impl Fn(&BTreeMap<String, String>) -> bool,
) {
    wait_until(what, WAIT, async || {
        registry.list().await.is_ok_and(|list| want(&by_id(&list)))
    })
    .await;
}

fn contains_all(list: &BTreeMap<String, String>, records: &[SubscriptionRecord]) -> bool {
    records.iter().all(|r| list.get(&r.id) == Some(&r.document))
}

fn contains_none(list: &BTreeMap<String, String>, records: &[SubscriptionRecord]) -> bool {
    records.iter().all(|r| !list.contains_key(&r.id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_see_each_others_records_and_removals() {
    let server = RedisServer::start();
    let urls = vec![server.url()];
    bounded(async {
        let handler = Arc::new(Recorder::default());
        let (_ta, a) = registry(&urls, "a");
        let (_tb, b) = registry(&urls, "b");
        let ra = records("a", 3);
        let rb = records("b", 2);
        // Added before start: kept locally and written by the first renewal.
        a.add(ra.clone()).await.unwrap();
        a.start(handler.clone());
        b.start(handler.clone());
        // After start: written through.
        list_until(b.as_ref(), "b's list holds a's records", |l| {
            contains_all(l, &ra)
        })
        .await;
        b.add(rb.clone()).await.unwrap();
        let both: Vec<_> = ra.iter().chain(&rb).cloned().collect();
        assert_eq!(by_id(&a.list().await.unwrap()), by_id(&both));
        assert_eq!(by_id(&b.list().await.unwrap()), by_id(&both));

        a.remove(vec![ra[0].id.clone(), "unknown".into()])
            .await
            .unwrap();
        let list = by_id(&b.list().await.unwrap());
        assert!(!list.contains_key(&ra[0].id));
        assert_eq!(list.len(), 4);
        assert_eq!(a.stats().local_records, 2);

        // A graceful goodbye removes a's records at once; nobody reaps it.
        a.close().await;
        assert_eq!(by_id(&b.list().await.unwrap()), by_id(&rb));
        tokio::time::sleep(LEASE * 3).await;
        assert!(
            handler.calls.lock().is_empty(),
            "a closed node is not reaped"
        );
        assert!(matches!(
            a.add(records("a", 1)).await,
            Err(TransportError::Closed)
        ));
        b.close().await;
        assert!(b.list().await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_is_reaped_exactly_once_by_racing_sweepers() {
    let server = RedisServer::start();
    let urls = vec![server.url()];
    bounded(async {
        let handler = Arc::new(Recorder::default());
        let (_ta, a) = registry(&urls, "a");
        let (_tb, b) = registry(&urls, "b");
        let (tc, c) = registry(&urls, "c");
        let rc = records("c", 50);
        c.add(rc.clone()).await.unwrap();
        c.start(handler.clone());
        a.start(handler.clone());
        b.start(handler.clone());
        list_until(a.as_ref(), "c's records", |l| contains_all(l, &rc)).await;

        // SIGKILL: c stops renewing and never says goodbye.
        drop(c);
        drop(tc);
        // Extra sweeps racing the background ones.
        for _ in 0..20 {
            tokio::join!(a.tick(handler.as_ref()), b.tick(handler.as_ref()));
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        wait_until("c reaped", WAIT, async || {
            !handler.calls_for("c").is_empty()
        })
        .await;
        list_until(a.as_ref(), "c's records gone", |l| contains_none(l, &rc)).await;
        // Give any duplicate a chance to show.
        tokio::time::sleep(LEASE * 3).await;
        let calls = handler.calls_for("c");
        assert_eq!(calls.len(), 1, "handled exactly once");
        assert_eq!(by_id(&calls[0]), by_id(&rc), "with all its records");
        let reaped = a.stats().orphans_reaped + b.stats().orphans_reaped;
        assert_eq!(reaped, 50);
        assert_eq!(a.stats().nodes_reaped + b.stats().nodes_reaped, 1);
        // Nothing left of c.
        let members: Vec<String> = server.query(&["SMEMBERS", &a.nodes_key()]).unwrap();
        assert!(!members.iter().any(|m| m == "c"), "{members:?}");
        let hash: i64 = server
            .query(&["EXISTS", "{quicksilver:subs}:node:c"])
            .unwrap();
        assert_eq!(hash, 0);
        assert!(handler.calls_for("a").is_empty() && handler.calls_for("b").is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_handler_is_offered_the_records_again() {
    let server = RedisServer::start();
    let urls = vec![server.url()];
    bounded(async {
        let handler = Arc::new(Recorder {
            fail_first: AtomicUsize::new(2),
            ..Recorder::default()
        });
        let (_ta, a) = registry(&urls, "a");
        let (tc, c) = registry(&urls, "c");
        let rc = records("c", 5);
        c.add(rc.clone()).await.unwrap();
        c.start(handler.clone());
        a.start(handler.clone());
        list_until(a.as_ref(), "c's records", |l| contains_all(l, &rc)).await;
        drop(c);
        drop(tc);
        wait_until("three attempts", WAIT, async || {
            handler.calls_for("c").len() >= 3
        })
        .await;
        wait_until("c reaped", WAIT, async || a.stats().nodes_reaped == 1).await;
        tokio::time::sleep(LEASE * 3).await;
        let calls = handler.calls_for("c");
        assert_eq!(
            calls.len(),
            3,
            "two failures, then one success, then nothing"
        );
        for call in &calls {
            assert_eq!(by_id(call), by_id(&rc));
        }
        let stats = a.stats();
        assert_eq!(stats.orphans_reaped, 5);
        assert!(stats.errors >= 2, "{stats:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_written_again_after_redis_loses_them() {
    let mut server = RedisServer::start();
    let urls = vec![server.url()];
    let handler = Arc::new(Recorder::default());
    let (_ta, a) = registry(&urls, "a");
    let ra = records("a", 4);
    a.add(ra.clone()).await.unwrap();
    a.start(handler.clone());
    bounded(list_until(a.as_ref(), "a's records", |l| {
        contains_all(l, &ra)
    }))
    .await;

    // Lost without a trace: FLUSHALL, then a restart without persistence.
    server.query::<String>(&["FLUSHALL"]).unwrap();
    bounded(list_until(
        a.as_ref(),
        "records rewritten after FLUSHALL",
        |l| contains_all(l, &ra),
    ))
    .await;
    server.restart();
    bounded(async {
        list_until(a.as_ref(), "records rewritten after a restart", |l| {
            contains_all(l, &ra)
        })
        .await;
        // Writes after the restart work too (the pool reconnected).
        let more = records("more", 1);
        assert!(
            poll_until(WAIT, async || a.add(more.clone()).await.is_ok()).await,
            "add keeps failing"
        );
        list_until(a.as_ref(), "the new record", |l| contains_all(l, &more)).await;
        assert!(a.stats().reregistrations >= 2, "{:?}", a.stats());
        assert!(handler.calls.lock().is_empty());
        // No end was published, so nothing is announced again.
        assert!(handler.revived.lock().is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_failed_while_redis_was_down_are_repaired() {
    let mut server = RedisServer::start();
    let urls = vec![server.url()];
    let handler = Arc::new(Recorder::default());
    let (_ta, a) = registry(&urls, "a");
    let ra = records("a", 3);
    a.add(ra.clone()).await.unwrap();
    a.start(handler.clone());
    bounded(list_until(a.as_ref(), "a's records", |l| {
        contains_all(l, &ra)
    }))
    .await;

    server.kill();
    // Fails (Redis is down) but the local copy changes; the renewal repairs Redis later.
    assert!(a.remove(vec![ra[0].id.clone()]).await.is_err());
    assert!(a.list().await.is_err(), "no answer without Redis");
    server.restart();
    bounded(list_until(a.as_ref(), "repaired", |l| {
        !l.contains_key(&ra[0].id) && contains_all(l, &ra[1..])
    }))
    .await;
    assert!(a.stats().errors >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_is_capped() {
    let server = RedisServer::start();
    let urls = vec![server.url()];
    bounded(async {
        let handler = Arc::new(Recorder::default());
        let transport = RedisTransport::new(config(urls.clone())).unwrap();
        let a = transport.subscription_registry(RegistryOptions {
            node_id: "a".into(),
            lease_ttl: LEASE,
            max_list: 2_500,
            ..RegistryOptions::default()
        });
        let (_tb, b) = registry(&urls, "b");
        a.add(records("a", 2_000)).await.unwrap();
        b.add(records("b", 2_000)).await.unwrap();
        a.start(handler.clone());
        b.start(handler.clone());
        list_until(b.as_ref(), "all 4000", |l| l.len() == 4_000).await;
        let capped = a.list().await.unwrap();
        assert_eq!(capped.len(), 2_500);
        assert_eq!(by_id(&capped).len(), 2_500, "no duplicates");
        assert_eq!(a.stats().list_truncations, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_on_a_three_master_cluster() {
    let cluster = RedisCluster::start(3);
    let urls = cluster.urls();
    bounded(async {
        let handler = Arc::new(Recorder::default());
        let (_ta, a) = registry(&urls, "a");
        let (_tb, b) = registry(&urls, "b");
        let (tc, c) = registry(&urls, "c");
        let (ra, rc) = (records("a", 3), records("c", 7));
        a.add(ra.clone()).await.unwrap();
        c.add(rc.clone()).await.unwrap();
        for r in [&a, &b, &c] {
            r.start(handler.clone());
        }
        list_until(b.as_ref(), "a's and c's records", |l| {
            contains_all(l, &ra) && contains_all(l, &rc)
        })
        .await;
        a.remove(vec![ra[0].id.clone()]).await.unwrap();
        assert!(!by_id(&b.list().await.unwrap()).contains_key(&ra[0].id));

        drop(c);
        drop(tc);
        wait_until("c reaped", WAIT, async || {
            !handler.calls_for("c").is_empty()
        })
        .await;
        list_until(a.as_ref(), "c's records gone", |l| contains_none(l, &rc)).await;
        tokio::time::sleep(LEASE * 3).await;
        let calls = handler.calls_for("c");
        assert_eq!(calls.len(), 1);
        assert_eq!(by_id(&calls[0]), by_id(&rc));
        assert_eq!(by_id(&b.list().await.unwrap()), by_id(&ra[1..]));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reaped_while_alive_announces_its_live_subscriptions_again() {
    let server = RedisServer::start();
    let urls = vec![server.url()];
    let handler = Arc::new(Recorder::default());
    let (_ta, a) = registry(&urls, "a");
    let (_tb, b) = registry(&urls, "b");
    let ra = records("a", 3);
    a.add(ra.clone()).await.unwrap();
    // `a` is never started: it renews only when the test ticks it, like a node cut off from Redis.
    a.tick(handler.as_ref()).await;
    b.start(handler.clone());
    bounded(async {
        list_until(b.as_ref(), "a's records", |l| contains_all(l, &ra)).await;
        wait_until("b reaping a", WAIT, async || {
            handler.calls_for("a").len() == 1
        })
        .await;
    })
    .await;
    assert_eq!(by_id(&handler.calls_for("a")[0]), by_id(&ra));
    assert!(handler.revived.lock().is_empty());

    // One subscription ended while `a` was cut off; the others are announced again when `a` is
    // back, once.
    a.remove(vec![ra[0].id.clone()]).await.ok();
    a.tick(handler.as_ref()).await;
    a.tick(handler.as_ref()).await;
    let revived: Vec<_> = handler.revived.lock().clone();
    assert_eq!(revived.len(), 1, "{revived:?}");
    assert_eq!(revived[0].0, "a");
    assert_eq!(by_id(&revived[0].1), by_id(&ra[1..]));
    // Back to renewing by itself, `a` is listed with its live subscriptions only.
    a.start(handler.clone());
    bounded(list_until(b.as_ref(), "a's live records again", |l| {
        contains_all(l, &ra[1..]) && contains_none(l, &ra[..1])
    }))
    .await;
    assert_eq!(handler.calls_for("a").len(), 1);
}
