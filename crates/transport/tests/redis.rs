//! The Redis transport against real `redis-server` processes (each test its own, on a free port):
//! ordering across nodes, history from the tail cache and from Redis, single-flight, failures and
//! restarts, epochs, and partitions on a 3-master Redis Cluster.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use quicksilver_protocol::{Envelope, Position, Update};
use quicksilver_testkit::redis::RedisOptions;
use quicksilver_testkit::{poll_until, update, wait_until, RedisCluster, RedisServer};
use quicksilver_transport::redis::{hash_slot, RedisConfig, RedisTransport};
use quicksilver_transport::{Gap, GapCause, HistoryReply, Transport, TransportError, UpdateSink};
use tokio::sync::mpsc;

/// Upper bound on any single test.
const TEST_LIMIT: Duration = Duration::from_secs(60);
/// Upper bound on waiting for something that should happen promptly.
const WAIT: Duration = Duration::from_secs(10);

/// A sink that passes updates on to a channel and keeps the losses it is told of.
struct Collect {
    tx: mpsc::UnboundedSender<Arc<Envelope>>,
    gaps: Arc<Mutex<Vec<Gap>>>,
}

/// A sink that holds the reader until permits are added (a node whose fan-out is stuck), and logs
/// what it is handed, updates and losses, in order.
struct Gated {
    tx: mpsc::UnboundedSender<Arc<Envelope>>,
    gate: Arc<tokio::sync::Semaphore>,
    log: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl UpdateSink for Gated {
    async fn deliver(&self, envelope: Arc<Envelope>) {
        if let Ok(permit) = self.gate.acquire().await {
            permit.forget();
        }
        self.log.lock().push(envelope.update.id.clone());
        let _ = self.tx.send(envelope);
    }

    async fn gap(&self, gap: Gap) {
        self.log.lock().push(format!("gap {gap:?}"));
    }
}

#[async_trait]
impl UpdateSink for Collect {
    async fn deliver(&self, envelope: Arc<Envelope>) {
        let _ = self.tx.send(envelope);
    }

    async fn gap(&self, gap: Gap) {
        self.gaps.lock().push(gap);
    }
}

/// Quick timeouts so failures show within the test's bounds.
fn config(url: String) -> RedisConfig {
    RedisConfig {
        block_ms: 200,
        command_timeout: Duration::from_millis(500),
        ..RedisConfig::new(url)
    }
}

/// A transport whose reader delivers into the returned channel, once it is ready.
async fn node(config: RedisConfig) -> (RedisTransport, mpsc::UnboundedReceiver<Arc<Envelope>>) {
    let (transport, rx, _) = node_with_gaps(config).await;
    (transport, rx)
}

/// [`node`], and the losses its reader reports.
async fn node_with_gaps(
    config: RedisConfig,
) -> (
    RedisTransport,
    mpsc::UnboundedReceiver<Arc<Envelope>>,
    Arc<Mutex<Vec<Gap>>>,
) {
    let transport = RedisTransport::new(config).expect("valid config");
    let (tx, rx) = mpsc::unbounded_channel();
    let gaps = Arc::new(Mutex::new(Vec::new()));
    transport.start_reader(Arc::new(Collect {
        tx,
        gaps: gaps.clone(),
    }));
    wait_until("transport ready", WAIT, async || transport.is_ready()).await;
    (transport, rx, gaps)
}

async fn receive(rx: &mut mpsc::UnboundedReceiver<Arc<Envelope>>, n: usize) -> Vec<Arc<Envelope>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(WAIT, rx.recv()).await {
            Ok(Some(e)) => out.push(e),
            _ => panic!("received {} of {n} updates", out.len()),
        }
    }
    out
}

async fn publish_all(t: &RedisTransport, ids: &[String], topic: &str) -> Vec<Position> {
    let mut positions = Vec::new();
    for id in ids {
        positions.push(
            t.publish(update(id, &[topic], "data"))
                .await
                .expect("publish"),
        );
    }
    positions
}

/// Publishes, retrying while Redis comes back.
async fn publish_retrying(t: &RedisTransport, u: Update) -> Position {
    let (mut position, mut error) = (None, None);
    poll_until(WAIT, async || match t.publish(u.clone()).await {
        Ok(p) => {
            position = Some(p);
            true
        }
        Err(e) => {
            error = Some(e);
            false
        }
    })
    .await;
    position.unwrap_or_else(|| panic!("publish kept failing: {error:?}"))
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

fn ids(envelopes: &[Arc<Envelope>]) -> Vec<&str> {
    envelopes.iter().map(|e| e.update.id.as_str()).collect()
}

fn reply_ids(reply: &HistoryReply) -> Vec<&str> {
    ids(&reply.entries)
}

async fn bounded<F: Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_LIMIT, test)
        .await
        .expect("test exceeded its time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_delivers_published_updates_in_order() {
    let redis = RedisServer::start();
    bounded(async {
        let (t, mut rx) = node(config(redis.url())).await;
        let sent = names("u", 100);
        let positions = publish_all(&t, &sent, "/books/1").await;
        assert!(positions.windows(2).all(|w| w[1].is_after(&w[0])));
        let got = receive(&mut rx, 100).await;
        assert_eq!(
            ids(&got),
            sent.iter().map(String::as_str).collect::<Vec<_>>()
        );
        assert_eq!(
            got.iter().map(|e| e.position).collect::<Vec<_>>(),
            positions
        );
        assert!(got[0].accepted_at_micros > 0);
        assert!(std::str::from_utf8(&got[0].frame)
            .unwrap()
            .contains("id: u0"));
        assert_eq!(t.name(), "redis");
    })
    .await;
}

/// What [`stamp`] hands back: the receiver, and each update's id with its arrival time.
type Stamped = (
    mpsc::UnboundedReceiver<Arc<Envelope>>,
    Vec<(String, Instant)>,
);

/// Arrival times at the sink of the next `n` updates, taken as they arrive (not when the test gets
/// to look), and the receiver back.
fn stamp(
    mut rx: mpsc::UnboundedReceiver<Arc<Envelope>>,
    n: usize,
) -> tokio::task::JoinHandle<Stamped> {
    tokio::spawn(async move {
        let mut arrived = Vec::new();
        while arrived.len() < n {
            let Ok(Some(e)) = tokio::time::timeout(WAIT, rx.recv()).await else {
                break;
            };
            arrived.push((e.update.id.clone(), Instant::now()));
        }
        (rx, arrived)
    })
}

/// The batch window: once a topic repeats within the window, what is published on it during the
/// next window is handed over together when it ends (downstream, one write per subscriber), in
/// order and complete. Updates on changing topics are handed over as they come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_topic_is_handed_over_in_batches_of_a_window() {
    let redis = RedisServer::start();
    bounded(async {
        let (t, rx) = node(RedisConfig {
            batch_window: Duration::from_secs(1),
            ..config(redis.url())
        })
        .await;
        let stamper = stamp(rx, 4);
        // w1 repeats w0's topic within the window: what follows it (100 ms apart) waits for the
        // window's end and goes together.
        for id in ["w0", "w1", "w2", "w3"] {
            t.publish(update(id, &["/t"], "data")).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (rx, arrived) = stamper.await.unwrap();
        let arrived_ids: Vec<&str> = arrived.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(arrived_ids, ["w0", "w1", "w2", "w3"]);
        let gap = arrived[3].1 - arrived[2].1;
        assert!(
            gap < Duration::from_millis(50),
            "w2 and w3 were published 100 ms apart inside a window, yet handed over {gap:?} apart"
        );

        // After a quiet spell, updates on different topics are not held back.
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        let stamper = stamp(rx, 2);
        t.publish(update("x0", &["/a"], "data")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        t.publish(update("x1", &["/b"], "data")).await.unwrap();
        let (_, arrived) = stamper.await.unwrap();
        let arrived_ids: Vec<&str> = arrived.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(arrived_ids, ["x0", "x1"]);
        let gap = arrived[1].1 - arrived[0].1;
        // Held back, x1 would wait for the window x0 opened (1 s).
        assert!(
            gap > Duration::from_millis(150) && gap < Duration::from_millis(700),
            "x0 and x1 (different topics, 300 ms apart) were not handed over as they came: \
             {gap:?} apart"
        );

        assert!(RedisTransport::new(RedisConfig {
            batch_window: Duration::from_millis(1_001),
            ..config(redis.url())
        })
        .is_err());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_read_every_update_in_the_same_order() {
    let redis = RedisServer::start();
    bounded(async {
        let (a, mut rx_a) = node(config(redis.url())).await;
        let (b, mut rx_b) = node(config(redis.url())).await;
        let (a, b) = (Arc::new(a), Arc::new(b));
        let mut tasks = Vec::new();
        for i in 0..60 {
            let t = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                t.publish(update(&format!("c{i}"), &["/t"], "data"))
                    .await
                    .unwrap()
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let got_a = receive(&mut rx_a, 60).await;
        let got_b = receive(&mut rx_b, 60).await;
        assert_eq!(ids(&got_a), ids(&got_b));
        assert!(got_a
            .windows(2)
            .all(|w| w[1].position.is_after(&w[0].position)));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_served_from_the_tail_cache_without_redis() {
    let redis = RedisServer::start();
    bounded(async {
        let (t, mut rx) = node(config(redis.url())).await;
        let sent = names("h", 5);
        publish_all(&t, &sent, "/t").await;
        let got = receive(&mut rx, 5).await;
        let before = t.stats();

        let reply = t.history("h1").await.unwrap();
        assert_eq!(reply.anchor.as_deref(), Some("h1"));
        assert_eq!(reply_ids(&reply), vec!["h2", "h3", "h4"]);
        assert_eq!(reply.high_water, vec![got[4].position]);

        let newest = t.history("h4").await.unwrap();
        assert!(newest.entries.is_empty());
        assert_eq!(
            newest.high_water,
            vec![got[4].position],
            "covers the anchor"
        );

        let all = t.history("earliest").await.unwrap();
        assert!(all.anchor.is_none());
        assert_eq!(reply_ids(&all), vec!["h0", "h1", "h2", "h3", "h4"]);

        let unknown = t.history("nope").await.unwrap();
        assert!(unknown.anchor.is_none() && unknown.entries.is_empty());

        let after = t.stats();
        // The unknown id cost one look at where each stream (updates, events) ends, to be sure
        // the reader had read everything when it was asked; nothing was scanned.
        assert_eq!(
            after.history_redis_commands,
            before.history_redis_commands + 2
        );
        assert_eq!(after.history_redis_scans, before.history_redis_scans);
        assert_eq!(after.history_cache_hits, before.history_cache_hits + 4);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_falls_back_to_redis_beyond_the_cache() {
    let redis = RedisServer::start();
    bounded(async {
        let small_cache = RedisConfig {
            history_size: 100,
            tail_cache_size: Some(10),
            ..config(redis.url())
        };
        let (a, mut rx_a) = node(small_cache.clone()).await;
        let sent = names("f", 50);
        publish_all(&a, &sent, "/t").await;
        receive(&mut rx_a, 50).await;

        // A node started after the updates: its cache holds the newest 10.
        let (b, _rx_b) = node(small_cache).await;
        let cached = b.history("f45").await.unwrap();
        assert_eq!(reply_ids(&cached), vec!["f46", "f47", "f48", "f49"]);
        assert_eq!(b.stats().history_redis_scans, 0);

        let reply = b.history("f5").await.unwrap();
        assert_eq!(reply.anchor.as_deref(), Some("f5"));
        let expected: Vec<&str> = sent[6..].iter().map(String::as_str).collect();
        assert_eq!(reply_ids(&reply), expected);
        assert_eq!(b.stats().history_redis_scans, 1);
        assert!(b.stats().history_redis_commands >= 1);

        let all = b.history("earliest").await.unwrap();
        assert_eq!(all.entries.len(), 50);
        assert_eq!(reply_ids(&all)[0], "f0");

        let unknown = b.history("missing").await.unwrap();
        assert!(unknown.anchor.is_none() && unknown.entries.is_empty());
        assert_eq!(b.stats().history_redis_scans, 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_bounded_by_history_size() {
    let redis = RedisServer::start();
    bounded(async {
        let cfg = RedisConfig {
            history_size: 20,
            ..config(redis.url())
        };
        let (t, mut rx) = node(cfg.clone()).await;
        publish_all(&t, &names("b", 30), "/t").await;
        receive(&mut rx, 30).await;
        let all = t.history("earliest").await.unwrap();
        assert_eq!(reply_ids(&all).first(), Some(&"b10"));
        assert_eq!(all.entries.len(), 20);
        assert!(
            t.history("b5").await.unwrap().anchor.is_none(),
            "past history_size"
        );
        // The same answers from a node that must ask Redis.
        let (fresh, _rx) = node(RedisConfig {
            tail_cache_size: Some(2),
            ..cfg
        })
        .await;
        assert_eq!(fresh.history("earliest").await.unwrap().entries.len(), 20);
        assert!(fresh.history("b5").await.unwrap().anchor.is_none());
        assert_eq!(reply_ids(&fresh.history("b25").await.unwrap()).len(), 4);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_fallbacks_for_one_id_cost_one_scan() {
    let redis = RedisServer::start();
    bounded(async {
        let cfg = RedisConfig {
            history_size: 5_000,
            tail_cache_size: Some(5),
            ..config(redis.url())
        };
        let (t, mut rx) = node(cfg).await;
        let t = Arc::new(t);
        // Enough entries that the scan outlasts the burst of callers.
        let mut tasks = Vec::new();
        for chunk in 0..10 {
            let t = t.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..300 {
                    t.publish(update(&format!("s{chunk}-{i}"), &["/t"], "data"))
                        .await
                        .unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        receive(&mut rx, 3_000).await;
        assert_eq!(
            t.stats().trimmed_gaps,
            0,
            "full batches checked, nothing lost"
        );
        let barrier = Arc::new(tokio::sync::Barrier::new(500));
        let mut tasks = Vec::new();
        for _ in 0..500 {
            let t = t.clone();
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                t.history("not-there").await.unwrap()
            }));
        }
        for task in tasks {
            let reply = task.await.unwrap();
            assert!(reply.anchor.is_none() && reply.entries.is_empty());
        }
        assert_eq!(t.stats().history_redis_scans, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_publishes_fast_and_clears_readiness() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let (t, _rx) = node(config(url)).await;
    t.publish(update("ok", &["/t"], "data")).await.unwrap();
    redis.kill();
    bounded(async {
        let started = Instant::now();
        let err = t
            .publish(update("lost", &["/t"], "data"))
            .await
            .unwrap_err();
        assert!(matches!(err, TransportError::Unavailable(_)), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        wait_until("not ready", WAIT, async || !t.is_ready()).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_redis_gives_an_error_not_a_hang() {
    let redis = RedisServer::start();
    bounded(async {
        let (t, _rx) = node(config(redis.url())).await;
        // Makes the server stop answering other clients for 3 s.
        let pause = redis.query::<String>(&["CLIENT", "PAUSE", "3000", "ALL"]);
        assert!(pause.is_ok());
        let started = Instant::now();
        let err = t
            .publish(update("slow", &["/t"], "data"))
            .await
            .unwrap_err();
        assert!(matches!(err, TransportError::Unavailable(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_millis(1_500));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_resumes_after_a_restart_with_persistence() {
    let mut redis = RedisServer::start_with(RedisOptions {
        appendonly: true,
        ..RedisOptions::default()
    });
    let (t, mut rx) = node(config(redis.url())).await;
    let mut acked = Vec::new();
    for i in 0..10 {
        t.publish(update(&format!("r{i}"), &["/t"], "data"))
            .await
            .unwrap();
        acked.push(format!("r{i}"));
    }
    receive(&mut rx, 10).await;
    redis.restart();
    bounded(async {
        for i in 10..20 {
            publish_retrying(&t, update(&format!("r{i}"), &["/t"], "data")).await;
            acked.push(format!("r{i}"));
        }
        let got = receive(&mut rx, 10).await;
        assert_eq!(
            ids(&got),
            acked[10..].iter().map(String::as_str).collect::<Vec<_>>()
        );
        wait_until("ready again", WAIT, async || t.is_ready()).await;
        assert_eq!(
            t.stats().epoch_changes,
            0,
            "AOF kept the stream and its epoch"
        );
        assert!(t.stats().reader_errors >= 1);
        // History still spans the restart.
        assert_eq!(reply_ids(&t.history("r8").await.unwrap()).len(), 11);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_resumes_after_its_connection_is_cut() {
    let redis = RedisServer::start();
    bounded(async {
        let (t, mut rx) = node(config(redis.url())).await;
        t.publish(update("k0", &["/t"], "data")).await.unwrap();
        receive(&mut rx, 1).await;
        // Cuts every client connection (the reader's included), then publishes before the reader is
        // back: it must resume after the last entry it read, skipping nothing.
        redis
            .query::<i64>(&["CLIENT", "KILL", "TYPE", "normal"])
            .unwrap();
        let mut sent = Vec::new();
        for i in 1..=10 {
            publish_retrying(&t, update(&format!("k{i}"), &["/t"], "data")).await;
            sent.push(format!("k{i}"));
        }
        let got = receive(&mut rx, 10).await;
        assert_eq!(
            ids(&got),
            sent.iter().map(String::as_str).collect::<Vec<_>>()
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(300), rx.recv())
                .await
                .is_err(),
            "no duplicates"
        );
        assert_eq!(t.stats().reader_errors, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_without_persistence_changes_the_epoch() {
    let mut redis = RedisServer::start();
    let (t, mut rx) = node(config(redis.url())).await;
    publish_all(&t, &names("e", 3), "/t").await;
    receive(&mut rx, 3).await;
    assert_eq!(t.history("e1").await.unwrap().anchor.as_deref(), Some("e1"));
    redis.restart();
    bounded(async {
        publish_retrying(&t, update("after", &["/t"], "data")).await;
        let got = receive(&mut rx, 1).await;
        assert_eq!(ids(&got), vec!["after"]);
        wait_until("epoch change seen", WAIT, async || {
            t.stats().epoch_changes >= 1
        })
        .await;
        let old = t.history("e1").await.unwrap();
        assert!(
            old.anchor.is_none() && old.entries.is_empty(),
            "old ids are gone"
        );
        assert_eq!(
            reply_ids(&t.history("earliest").await.unwrap()),
            vec!["after"]
        );
        t.publish(update("next", &["/t"], "data")).await.unwrap();
        receive(&mut rx, 1).await;
        assert_eq!(reply_ids(&t.history("after").await.unwrap()), vec!["next"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_trimmed_past_the_reader_is_detected() {
    let redis = RedisServer::start();
    bounded(async {
        let (t, mut rx, gaps) = node_with_gaps(config(redis.url())).await;
        t.publish(update("g0", &["/t"], "data")).await.unwrap();
        receive(&mut rx, 1).await;
        let key = t.stream_keys()[0].clone();
        // Atomically: two entries arrive and are trimmed away before any reader can see them.
        let script = "redis.call('XADD', KEYS[1], '*', 'v', '1', 'u', 'x') \
                      redis.call('XADD', KEYS[1], '*', 'v', '1', 'u', 'x') \
                      redis.call('XTRIM', KEYS[1], 'MAXLEN', 0) return 1";
        redis.query::<i64>(&["EVAL", script, "1", &key]).unwrap();
        redis
            .query::<i64>(&["CLIENT", "KILL", "TYPE", "normal"])
            .unwrap();
        wait_until("gap counted", WAIT, async || t.stats().trimmed_gaps == 1).await;
        // Told to the sink, with the count of what was lost.
        assert_eq!(
            *gaps.lock(),
            [Gap {
                partition: 0,
                missed: Some(2),
                cause: GapCause::Trimmed
            }]
        );
        assert_eq!(t.stats().missed_entries, 2);
        publish_retrying(&t, update("g1", &["/t"], "data")).await;
        assert_eq!(ids(&receive(&mut rx, 1).await), vec!["g1"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_of_unknown_versions_are_skipped() {
    let redis = RedisServer::start();
    bounded(async {
        let (t, mut rx) = node(config(redis.url())).await;
        let key = t.stream_keys()[0].clone();
        redis
            .query::<String>(&["XADD", &key, "*", "v", "2", "u2", "future"])
            .unwrap();
        redis
            .query::<String>(&["XADD", &key, "*", "v", "1", "u", "garbage"])
            .unwrap();
        t.publish(update("fine", &["/t"], "data")).await.unwrap();
        assert_eq!(ids(&receive(&mut rx, 1).await), vec!["fine"]);
        assert_eq!(t.stats().skipped_entries, 2);
        assert!(t.is_ready());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_max_age_hides_old_updates() {
    let redis = RedisServer::start();
    bounded(async {
        let (t, mut rx) = node(RedisConfig {
            history_max_age: Some(Duration::from_millis(500)),
            ..config(redis.url())
        })
        .await;
        t.publish(update("old", &["/t"], "data")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        t.publish(update("new", &["/t"], "data")).await.unwrap();
        receive(&mut rx, 2).await;
        assert_eq!(
            reply_ids(&t.history("earliest").await.unwrap()),
            vec!["new"]
        );
        assert!(t.history("old").await.unwrap().anchor.is_none());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_spread_over_a_three_master_cluster() {
    let cluster = RedisCluster::start(3);
    bounded(async {
        let cfg = RedisConfig {
            urls: cluster.urls(),
            partitions: 3,
            resume_margin: Duration::from_secs(3_600),
            ..config(cluster.url())
        };
        let (a, mut rx_a) = node(cfg.clone()).await;
        let (_b, mut rx_b) = node(cfg.clone()).await;

        // Each stream sits on its own master, at the slot we computed.
        let keys = a.stream_keys();
        for key in &keys {
            let slot: i64 = cluster.nodes()[0]
                .query(&["CLUSTER", "KEYSLOT", key])
                .unwrap();
            assert_eq!(slot, i64::from(hash_slot(key)));
        }

        // Topics over every partition.
        let topics: Vec<String> = (0..30).map(|i| format!("/topic/{i}")).collect();
        let mut covered = [false; 3];
        for topic in &topics {
            covered[usize::from(a.partition_of(topic))] = true;
        }
        assert_eq!(covered, [true; 3]);
        let mut sent = Vec::new();
        for i in 0..90 {
            let topic = &topics[i % topics.len()];
            let p = a
                .publish(update(&format!("p{i}"), &[topic], "data"))
                .await
                .unwrap();
            assert_eq!(p.partition, a.partition_of(topic));
            sent.push((format!("p{i}"), p));
        }
        for node in cluster.nodes() {
            let size: i64 = node.query(&["DBSIZE"]).unwrap();
            assert_eq!(size, 2, "one stream and its epoch per master");
        }

        // Both nodes deliver every update, in the same order within each partition.
        let got_a = receive(&mut rx_a, 90).await;
        let got_b = receive(&mut rx_b, 90).await;
        for partition in 0..3 {
            let of = |got: &[Arc<Envelope>]| -> Vec<String> {
                got.iter()
                    .filter(|e| e.position.partition == partition)
                    .map(|e| e.update.id.clone())
                    .collect()
            };
            assert_eq!(of(&got_a), of(&got_b));
            let published: Vec<String> = sent
                .iter()
                .filter(|(_, p)| p.partition == partition)
                .map(|(id, _)| id.clone())
                .collect();
            assert_eq!(of(&got_a), published);
        }

        // Resume: everything of the anchor's partition after it; other partitions within the margin
        // (an hour here, so all of them); high-water marks for every partition.
        let (anchor_id, anchor) = sent[40].clone();
        let reply = a.history(&anchor_id).await.unwrap();
        assert_eq!(reply.anchor.as_deref(), Some(anchor_id.as_str()));
        let replayed: Vec<&str> = reply_ids(&reply);
        for (id, p) in &sent {
            let expected = p.partition != anchor.partition || p.is_after(&anchor);
            assert_eq!(replayed.contains(&id.as_str()), expected, "{id} at {p}");
        }
        let order: Vec<(u64, u16, u64)> = reply
            .entries
            .iter()
            .map(|e| (e.position.ms, e.position.partition, e.position.seq))
            .collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "deterministic merge order"
        );
        assert_eq!(reply.high_water.len(), 3);

        // The same answer from Redis, on a node with a tiny cache.
        let (c, _rx_c) = node(RedisConfig {
            tail_cache_size: Some(2),
            ..cfg.clone()
        })
        .await;
        let from_redis = c.history(&anchor_id).await.unwrap();
        assert_eq!(reply_ids(&from_redis), replayed);
        assert_eq!(from_redis.high_water, reply.high_water);
        assert_eq!(c.stats().history_redis_scans, 1);

        // With no margin, other partitions replay only from the anchor's time on: nothing published
        // after the anchor is lost.
        let (d, _rx_d) = node(RedisConfig {
            resume_margin: Duration::ZERO,
            ..cfg
        })
        .await;
        let tight = d.history(&anchor_id).await.unwrap();
        let tight_ids = reply_ids(&tight);
        for (id, p) in &sent[41..] {
            assert!(tight_ids.contains(&id.as_str()), "{id} at {p} lost");
        }
        assert!(tight.entries.iter().all(|e| e.position.ms >= anchor.ms));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_left_behind_by_trimming_reports_the_loss() {
    let redis = RedisServer::start();
    bounded(async {
        // history_size 10 still keeps ~1000 entries in the stream (the floor for readers).
        let t = RedisTransport::new(RedisConfig {
            history_size: 10,
            ..config(redis.url())
        })
        .unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let log = Arc::new(Mutex::new(Vec::new()));
        t.start_reader(Arc::new(Gated {
            tx,
            gate: gate.clone(),
            log: log.clone(),
        }));
        wait_until("ready", WAIT, async || t.is_ready()).await;
        t.publish(update("first", &["/t"], "data")).await.unwrap();
        for i in 0..3_000 {
            t.publish(update(&format!("x{i}"), &["/t"], "data"))
                .await
                .unwrap();
        }
        gate.add_permits(1_000_000);
        loop {
            let e = receive(&mut rx, 1).await;
            if e[0].update.id == "x2999" {
                break;
            }
        }
        assert_eq!(t.stats().trimmed_gaps, 1);
        // The loss is handed over in order: after what was read before it, before anything after.
        let log = log.lock().clone();
        assert_eq!(log[0], "first");
        assert!(log[1].starts_with("gap"), "{:?}", &log[..3]);
        let missed = t.stats().missed_entries;
        let delivered_after = (log.len() - 2) as u64;
        assert_eq!(
            missed + delivered_after,
            3_000,
            "every update is either delivered or counted as missed"
        );
        assert!(log[2..].iter().all(|id| id.starts_with('x')));
        let all = t.history("earliest").await.unwrap();
        assert_eq!(reply_ids(&all).last(), Some(&"x2999"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_stops_publishing_and_reading() {
    let redis = RedisServer::start();
    bounded(async {
        let (t, mut rx) = node(config(redis.url())).await;
        t.close();
        assert!(matches!(
            t.publish(update("late", &["/t"], "data")).await,
            Err(TransportError::Closed)
        ));
        assert!(!t.is_ready());
        // The reader task ended and dropped its sink.
        assert!(tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .is_none());
    })
    .await;
}

#[test]
fn urls_with_tls_and_credentials_are_accepted() {
    for url in [
        "rediss://user:secret@redis.example:6380/0",
        "redis://:secret@127.0.0.1:1/2",
    ] {
        assert!(RedisTransport::new(RedisConfig::new(url)).is_ok(), "{url}");
    }
    let cluster = RedisConfig {
        urls: vec!["rediss://a:1".into(), "rediss://b:2".into()],
        ..RedisConfig::default()
    };
    assert!(RedisTransport::new(cluster).is_ok());
    assert!(RedisTransport::new(RedisConfig::new("http://nope")).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_events_never_push_updates_out_of_history() {
    let redis = RedisServer::start();
    bounded(async {
        let (t, mut rx) = node(RedisConfig {
            history_size: 10,
            event_history: 10,
            ..config(redis.url())
        })
        .await;
        let real = names("real", 5);
        publish_all(&t, &real, "/t").await;
        for i in 0..2_000 {
            t.publish_event(update(
                &format!("ev{i}"),
                &["/.well-known/mercure/subscriptions/x"],
                "data",
            ))
            .await
            .unwrap();
        }
        receive(&mut rx, 2_005).await;
        let all = t.history("earliest").await.unwrap();
        let kept = reply_ids(&all);
        for id in &real {
            assert!(kept.contains(&id.as_str()), "{id} was pushed out by events");
        }
        // Each kind keeps its own history: the newest 10 events, all 5 updates.
        assert_eq!(kept.len(), 15);
        assert_eq!(kept.last(), Some(&"ev1999"));
        // Resuming after the last update: the events stored after it are more than the events'
        // history keeps, so the subscriber gets what is left and is told it may have missed some.
        let resumed = t.history("real4").await.unwrap();
        assert_eq!(resumed.anchor, None);
        assert_eq!(reply_ids(&resumed).len(), 10);
        // Resuming after a recent event: nothing after it is gone.
        let recent = t.history("ev1995").await.unwrap();
        assert_eq!(recent.anchor.as_deref(), Some("ev1995"));
        assert_eq!(reply_ids(&recent), ["ev1996", "ev1997", "ev1998", "ev1999"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_handed_over_after_the_update_they_follow_on_every_node_and_in_history() {
    let redis = RedisServer::start();
    bounded(async {
        let (a, mut rx_a) = node(config(redis.url())).await;
        let (b, mut rx_b) = node(config(redis.url())).await;
        a.publish(update("u1", &["/t"], "data")).await.unwrap();
        assert_eq!(ids(&receive(&mut rx_a, 1).await), ["u1"]);
        assert_eq!(ids(&receive(&mut rx_b, 1).await), ["u1"]);
        // A has read u1: its event follows u1. B's event follows what B read, u1 too.
        a.publish_event(update("e1", &["/s"], "data"))
            .await
            .unwrap();
        b.publish_event(update("e2", &["/s"], "data"))
            .await
            .unwrap();
        b.publish(update("u2", &["/t"], "data")).await.unwrap();
        a.publish_event(update("e3", &["/s"], "data"))
            .await
            .unwrap();
        let want = ["e1", "e2", "u2", "e3"];
        assert_eq!(ids(&receive(&mut rx_a, 4).await), want);
        assert_eq!(ids(&receive(&mut rx_b, 4).await), want);
        // History replays them at the same places, whichever kind the anchor is.
        for (from, expected) in [
            ("earliest", vec!["u1", "e1", "e2", "u2", "e3"]),
            ("u1", vec!["e1", "e2", "u2", "e3"]),
            ("e1", vec!["e2", "u2", "e3"]),
            ("e2", vec!["u2", "e3"]),
            ("u2", vec!["e3"]),
            ("e3", vec![]),
        ] {
            for node in [&a, &b] {
                let reply = node.history(from).await.unwrap();
                assert_eq!(reply_ids(&reply), expected, "after {from}");
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn megabyte_updates_are_read_and_replayed_within_byte_bounds() {
    let redis = RedisServer::start();
    bounded(async {
        // A node that can store 1 MiB updates: its reads ask for 16 MiB at most, and it keeps and
        // replays 8 MiB of history.
        let sized = |url: String| RedisConfig {
            max_entry_bytes: (1 << 20) + 4096,
            read_budget: 16 << 20,
            history_max_bytes: 8 << 20,
            history_size: 1_000,
            command_timeout: Duration::from_secs(5),
            ..config(url)
        };
        let (a, mut rx_a) = node(sized(redis.url())).await;
        let data = "x".repeat(1 << 20);
        for i in 0..40 {
            a.publish(update(&format!("m{i}"), &["/big"], &data))
                .await
                .unwrap();
        }
        assert_eq!(receive(&mut rx_a, 40).await.len(), 40);
        // A node starting now warms from 40 MiB of stream within its bounds and becomes ready.
        let (b, mut rx_b) = node(sized(redis.url())).await;
        a.publish(update("after", &["/big"], "small"))
            .await
            .unwrap();
        assert_eq!(ids(&receive(&mut rx_b, 1).await), ["after"]);
        // History holds about 8 MiB of memory (an update holds its data and its frame): the newest
        // few. A resume from the start is past it, as if
        // trimmed (`earliest`, nothing replayed); `earliest` replays what it holds.
        let gone = b.history("m0").await.unwrap();
        assert!(gone.anchor.is_none() && gone.entries.is_empty());
        let all = b.history("earliest").await.unwrap();
        let replayed = reply_ids(&all);
        assert!(
            (3..=9).contains(&replayed.len()),
            "{} replayed",
            replayed.len()
        );
        assert_eq!(replayed.last(), Some(&"after"));
        // A resume close to the end is whole.
        let recent = b.history("m38").await.unwrap();
        assert_eq!(recent.anchor.as_deref(), Some("m38"));
        assert_eq!(reply_ids(&recent), ["m39", "after"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_stored_twice_by_a_retry_is_delivered_and_replayed_once() {
    let redis = RedisServer::start();
    bounded(async {
        let (t, mut rx) = node(config(redis.url())).await;
        t.publish(update("before", &["/t"], "data")).await.unwrap();
        assert_eq!(ids(&receive(&mut rx, 1).await), ["before"]);
        // What a client library's retry after a failover leaves behind: the same entry (same
        // publish, same nonce) appended twice.
        let payload = quicksilver_transport::redis::encode_entry(
            &update("once", &["/t"], "data"),
            1,
            None,
            0x5eed,
        )
        .unwrap();
        let key = t.stream_keys()[0].clone();
        let client = redis::Client::open(redis.url()).unwrap();
        let mut conn = client.get_connection().unwrap();
        for _ in 0..2 {
            let _: String = redis::cmd("XADD")
                .arg(&key)
                .arg("*")
                .arg("v")
                .arg("1")
                .arg("u")
                .arg(&payload)
                .query(&mut conn)
                .unwrap();
        }
        t.publish(update("after", &["/t"], "data")).await.unwrap();
        assert_eq!(ids(&receive(&mut rx, 2).await), ["once", "after"]);
        assert_eq!(t.stats().duplicates_suppressed, 1);
        assert_eq!(
            reply_ids(&t.history("before").await.unwrap()),
            ["once", "after"]
        );
        // Another node, reading the stream from Redis, skips it too.
        let (other, _rx) = node(RedisConfig {
            tail_cache_size: Some(1),
            ..config(redis.url())
        })
        .await;
        assert_eq!(
            reply_ids(&other.history("before").await.unwrap()),
            ["once", "after"]
        );
    })
    .await;
}

/// Publishes `count` updates at once (ids `<prefix><i>`, topics round-robin over `topics`) and
/// checks that each was acknowledged with the position its update was read back at, in every
/// partition in stream order.
async fn publish_concurrently_and_check(
    t: &RedisTransport,
    rx: &mut mpsc::UnboundedReceiver<Arc<Envelope>>,
    prefix: &str,
    topics: &[&str],
    count: usize,
) {
    let sent = names(prefix, count);
    let positions: Vec<Position> = futures_util::future::join_all(
        sent.iter()
            .enumerate()
            .map(|(i, id)| t.publish(update(id, &[topics[i % topics.len()]], "data"))),
    )
    .await
    .into_iter()
    .map(|r| r.expect("publish"))
    .collect();
    let got = receive(rx, count).await;
    for envelope in &got {
        let i = sent
            .iter()
            .position(|id| *id == envelope.update.id)
            .expect("an update that was published");
        // The reply a publish got is its own update's entry, not another of its batch.
        assert_eq!(positions[i], envelope.position, "{}", envelope.update.id);
    }
    for partition in got.iter().map(|e| e.position.partition) {
        let order: Vec<Position> = got
            .iter()
            .filter(|e| e.position.partition == partition)
            .map(|e| e.position)
            .collect();
        assert!(order.windows(2).all(|w| w[1].is_after(&w[0])), "{order:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_share_round_trips_and_each_gets_its_own_reply() {
    let redis = RedisServer::start();
    bounded(async {
        let (t, mut rx) = node(config(redis.url())).await;
        publish_concurrently_and_check(&t, &mut rx, "c", &["/books/1"], 300).await;
        let stats = Transport::stats(&t);
        assert_eq!(stats.appends, 300);
        assert!(
            stats.append_round_trips < 300 / 2,
            "{} round trips for 300 concurrent publishes",
            stats.append_round_trips
        );
        // One at a time: a round trip each, nothing waits for company.
        publish_all(&t, &names("s", 5), "/books/1").await;
        assert_eq!(
            Transport::stats(&t).append_round_trips,
            stats.append_round_trips + 5
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_over_a_cluster_go_to_each_partitions_master() {
    let cluster = RedisCluster::start(3);
    bounded(async {
        let cfg = RedisConfig {
            urls: cluster.urls(),
            partitions: 3,
            ..config(cluster.url())
        };
        let (t, mut rx) = node(cfg).await;
        let topics: Vec<String> = (0..12).map(|i| format!("/topic/{i}")).collect();
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        publish_concurrently_and_check(&t, &mut rx, "k", &topics, 240).await;
        assert!(Transport::stats(&t).append_round_trips < 240 / 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_refused_by_redis_fails_each_publish_of_its_batch_and_nothing_hangs() {
    let redis = RedisServer::start();
    bounded(async {
        let (t, _rx) = node(config(redis.url())).await;
        t.publish(update("before", &["/t"], "data")).await.unwrap();
        // The stream's key now holds a string: every XADD to it is refused (WRONGTYPE).
        let key = t.stream_keys()[0].clone();
        assert!(redis
            .query::<String>(&["SET", &key, "not a stream"])
            .is_ok());
        let refused = futures_util::future::join_all(
            (0..50).map(|i| t.publish(update(&format!("r{i}"), &["/t"], "data"))),
        )
        .await;
        for result in refused {
            let err = result.unwrap_err();
            assert!(
                matches!(&err, TransportError::Unavailable(m) if m.contains("WRONGTYPE")),
                "{err:?}"
            );
        }
        assert!(redis.query::<i64>(&["DEL", &key]).is_ok());
        publish_retrying(&t, update("after", &["/t"], "data")).await;
    })
    .await;
}
