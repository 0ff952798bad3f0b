//! Retention per topic on the Redis transport, against a real `redis-server` (each test its own,
//! on a free port) shared by two transports (two nodes): a busy short window never trims a long
//! one, a window of length 0 keeps nothing, an id out of its window is answered `earliest`, and
//! windows hold after a node restarts and on the other node, partitioned or not.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use quicksilver_protocol::{Envelope, Selector};
use quicksilver_testkit::{update, wait_until, RedisServer};
use quicksilver_transport::redis::{RedisConfig, RedisTransport};
use quicksilver_transport::retention::Rule;
use quicksilver_transport::{Gap, HistoryReply, Retention, Scope, Transport, UpdateSink, Window};
use tokio::sync::mpsc;

const TEST_LIMIT: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(10);

const DOC: &str = "https://example.com/documents/1";
const BUSY: &str = "https://example.com/telemetry/1";
const NOTE: &str = "https://example.com/users/1/notifications";

struct Collect(mpsc::UnboundedSender<Arc<Envelope>>);

#[async_trait]
impl UpdateSink for Collect {
    async fn deliver(&self, envelope: Arc<Envelope>) {
        let _ = self.0.send(envelope);
    }

    async fn gap(&self, gap: Gap) {
        panic!("no update may be lost here: {gap:?}");
    }
}

fn config(url: String) -> RedisConfig {
    RedisConfig {
        block_ms: 200,
        command_timeout: Duration::from_millis(500),
        history_size: 20,
        ..RedisConfig::new(url)
    }
}

fn window(length: usize) -> Window {
    Window {
        length,
        max_age: None,
    }
}

fn rule(topic: &str, window: Window) -> Rule {
    Rule {
        selectors: vec![Selector::compile(topic).expect("selector")],
        window,
    }
}

/// Documents keep 500, telemetry 5, notifications none; other topics the default 20.
fn rules() -> Arc<Retention> {
    Arc::new(
        Retention::new(
            window(20),
            vec![
                rule("https://example.com/documents/{id}", window(500)),
                rule("https://example.com/telemetry/{id}", window(5)),
                rule("https://example.com/users/{id}/notifications", window(0)),
            ],
        )
        .expect("rules"),
    )
}

/// A node with `retention`, reading, ready.
async fn node(
    config: RedisConfig,
    retention: Arc<Retention>,
) -> (RedisTransport, mpsc::UnboundedReceiver<Arc<Envelope>>) {
    let transport = RedisTransport::new(config).expect("valid config");
    transport.set_retention(retention);
    let (tx, rx) = mpsc::unbounded_channel();
    transport.start_reader(Arc::new(Collect(tx)));
    wait_until("transport ready", WAIT, async || transport.is_ready()).await;
    (transport, rx)
}

async fn receive(rx: &mut mpsc::UnboundedReceiver<Arc<Envelope>>, n: usize) {
    for got in 0..n {
        match tokio::time::timeout(WAIT, rx.recv()).await {
            Ok(Some(_)) => {}
            _ => panic!("received {got} of {n} updates"),
        }
    }
}

async fn publish(t: &RedisTransport, id: &str, topics: &[&str]) {
    t.publish(update(id, topics, "data"))
        .await
        .expect("publish");
}

/// The history after `id` for a subscriber of exactly `topics`.
async fn resume(t: &RedisTransport, id: &str, topics: &[&str]) -> HistoryReply {
    let scope = Scope::Topics(topics.iter().map(|t| t.to_string()).collect());
    let interest = t.interest(&scope).await.expect("interest");
    t.history_within(id, &interest, &scope)
        .await
        .expect("history")
}

fn ids(reply: &HistoryReply) -> Vec<&str> {
    reply.entries.iter().map(|e| e.update.id.as_str()).collect()
}

async fn bounded(test: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(TEST_LIMIT, test)
        .await
        .expect("test took too long");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_short_window_never_trims_a_long_one_on_any_node() {
    let redis = RedisServer::start();
    bounded(async {
        let (a, mut rx_a) = node(config(redis.url()), rules()).await;
        let (b, mut rx_b) = node(config(redis.url()), rules()).await;
        for i in 0..10 {
            publish(&a, &format!("doc{i}"), &[DOC]).await;
        }
        // Far more than the partition's stream keeps (about 1000): it is trimmed, the documents'
        // history is not.
        let busy = 3000;
        for i in 0..busy {
            publish(&b, &format!("busy{i}"), &[BUSY]).await;
        }
        receive(&mut rx_a, 10 + busy).await;
        receive(&mut rx_b, 10 + busy).await;
        let stream_len: usize = redis.query(&["XLEN", "quicksilver:updates"]).unwrap();
        assert!(stream_len < 2000, "the partition's stream covers lag only");
        for t in [&a, &b] {
            let doc = resume(t, "doc2", &[DOC]).await;
            assert_eq!(doc.anchor.as_deref(), Some("doc2"));
            assert_eq!(
                ids(&doc),
                (3..10).map(|i| format!("doc{i}")).collect::<Vec<_>>()
            );
            // The busy class keeps its own five.
            let busy_now = resume(t, "earliest", &[BUSY]).await;
            assert_eq!(
                ids(&busy_now),
                (busy - 5..busy)
                    .map(|i| format!("busy{i}"))
                    .collect::<Vec<_>>()
            );
            // Out of its class's window: unknown, answered `earliest`, nothing replayed.
            let gone = resume(t, "busy10", &[BUSY]).await;
            assert!(gone.anchor.is_none() && gone.entries.is_empty());
            let recent = resume(t, &format!("busy{}", busy - 3), &[BUSY]).await;
            assert_eq!(
                recent.anchor.as_deref(),
                Some(format!("busy{}", busy - 3).as_str())
            );
            assert_eq!(recent.entries.len(), 2);
            // A subscriber of both missed busy updates after doc2: told so, given what is left.
            let both = resume(t, "doc2", &[DOC, BUSY]).await;
            assert!(both.anchor.is_none());
            assert_eq!(both.entries.len(), 7 + 5);
        }
        // The class streams in Redis: documents hold all ten, telemetry about its five (`MAXLEN ~`
        // trims whole nodes of entries).
        let docs: usize = redis
            .query(&["XLEN", "{quicksilver:updates}:retain:n500"])
            .unwrap();
        assert_eq!(docs, 10);
        let busy_len: usize = redis
            .query(&["XLEN", "{quicksilver:updates}:retain:n5"])
            .unwrap();
        assert!(busy_len < 200, "{busy_len}");
        // What each node published per class, and holds in its caches.
        let stats = |t: &RedisTransport, class: &str| {
            t.retention_stats()
                .into_iter()
                .find(|s| &*s.class == class)
                .map(|s| (s.stored, s.held))
        };
        assert_eq!(stats(&a, "n500"), Some((10, 10)));
        assert_eq!(stats(&b, "n500"), Some((0, 10)));
        assert_eq!(stats(&b, "n5"), Some((busy as u64, 5)));
        assert_eq!(stats(&a, "n0"), Some((0, 0)));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_of_length_zero_keeps_nothing_and_alternate_topics_keep_their_own() {
    let redis = RedisServer::start();
    bounded(async {
        let (a, mut rx_a) = node(config(redis.url()), rules()).await;
        let (b, mut rx_b) = node(config(redis.url()), rules()).await;
        publish(&a, "n1", &[NOTE]).await;
        publish(&a, "both", &[NOTE, DOC]).await;
        publish(&b, "n2", &[NOTE]).await;
        receive(&mut rx_a, 3).await;
        receive(&mut rx_b, 3).await;
        let no_class_stream: bool = redis
            .query(&["EXISTS", "{quicksilver:updates}:retain:n0"])
            .unwrap();
        assert!(!no_class_stream);
        for t in [&a, &b] {
            assert!(resume(t, "earliest", &[NOTE]).await.entries.is_empty());
            let n1 = resume(t, "n1", &[NOTE]).await;
            assert!(n1.anchor.is_none() && n1.entries.is_empty());
            // Kept for its alternate topic, in that topic's class.
            assert_eq!(ids(&resume(t, "earliest", &[DOC]).await), vec!["both"]);
            let doc = resume(t, "both", &[DOC]).await;
            assert_eq!(doc.anchor.as_deref(), Some("both"));
            // A subscriber that may match notifications missed n2.
            assert!(resume(t, "both", &[DOC, NOTE]).await.anchor.is_none());
        }
        // The storing script is sent by its SHA1 once known; a Redis that lost it (restarted,
        // failed over, flushed) is sent it again.
        publish(&a, "doc-before-flush", &[DOC]).await;
        let _: String = redis.query(&["SCRIPT", "FLUSH"]).unwrap();
        publish(&a, "doc-after-flush", &[DOC]).await;
        receive(&mut rx_b, 2).await;
        assert_eq!(
            ids(&resume(&b, "earliest", &[DOC]).await),
            vec!["both", "doc-before-flush", "doc-after-flush"]
        );
        let stats: String = redis.query(&["INFO", "commandstats"]).unwrap();
        assert!(stats.contains("cmdstat_evalsha:"), "{stats}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_hold_after_a_node_restart_and_from_redis() {
    let redis = RedisServer::start();
    bounded(async {
        let (a, mut rx_a) = node(config(redis.url()), rules()).await;
        for i in 0..30 {
            publish(&a, &format!("doc{i}"), &[DOC]).await;
            publish(&a, &format!("busy{i}"), &[BUSY]).await;
            publish(&a, &format!("other{i}"), &["https://example.com/other"]).await;
        }
        receive(&mut rx_a, 90).await;
        drop(a);
        // A node started afterwards warms its caches from the class streams; one with a tiny cache
        // answers from Redis.
        let (restarted, _rx) = node(config(redis.url()), rules()).await;
        let (tiny, _rx_tiny) = node(
            RedisConfig {
                tail_cache_size: Some(2),
                ..config(redis.url())
            },
            rules(),
        )
        .await;
        for t in [&restarted, &tiny] {
            let doc = resume(t, "doc0", &[DOC]).await;
            assert_eq!(doc.anchor.as_deref(), Some("doc0"));
            assert_eq!(doc.entries.len(), 29);
            assert_eq!(
                ids(&resume(t, "earliest", &[BUSY]).await),
                vec!["busy25", "busy26", "busy27", "busy28", "busy29"]
            );
            assert!(resume(t, "busy20", &[BUSY]).await.anchor.is_none());
            // The default class keeps its 20.
            let other = resume(t, "earliest", &["https://example.com/other"]).await;
            assert_eq!(other.entries.len(), 20);
            assert!(resume(t, "other5", &["https://example.com/other"])
                .await
                .anchor
                .is_none());
            let other = resume(t, "other15", &["https://example.com/other"]).await;
            assert_eq!(other.anchor.as_deref(), Some("other15"));
            assert_eq!(other.entries.len(), 14);
        }
        assert!(tiny.stats().history_redis_scans > 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_classes_keep_alternate_topics_in_their_own_partition() {
    let redis = RedisServer::start();
    bounded(async {
        let cfg = RedisConfig {
            partitions: 3,
            ..config(redis.url())
        };
        let (a, mut rx_a) = node(cfg.clone(), rules()).await;
        let (b, mut rx_b) = node(cfg, rules()).await;
        // Documents in other partitions than the busy topic, as alternates of busy updates.
        let docs: Vec<String> = (0..40)
            .map(|i| format!("https://example.com/documents/{i}"))
            .filter(|d| a.partition_of(d) != a.partition_of(BUSY))
            .take(2)
            .collect();
        assert_eq!(docs.len(), 2);
        publish(&a, "first", &[&docs[0]]).await;
        publish(&a, "mixed", &[BUSY, &docs[1]]).await;
        for i in 0..50 {
            publish(&b, &format!("busy{i}"), &[BUSY]).await;
        }
        publish(&b, "last", &[&docs[0]]).await;
        // "mixed" is stored in two partitions (two copies delivered); each node gets 54.
        receive(&mut rx_a, 54).await;
        receive(&mut rx_b, 54).await;
        for t in [&a, &b] {
            let reply = resume(t, "first", &[&docs[0], &docs[1]]).await;
            assert_eq!(reply.anchor.as_deref(), Some("first"));
            assert_eq!(ids(&reply), vec!["mixed", "last"]);
            let busy = resume(t, "earliest", &[BUSY]).await;
            assert_eq!(busy.entries.len(), 5);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maximum_age_trims_a_class_and_expires_its_stream() {
    let redis = RedisServer::start();
    bounded(async {
        let aged = Arc::new(
            Retention::new(
                window(20),
                vec![rule(
                    "https://example.com/documents/{id}",
                    Window {
                        length: 100,
                        max_age: Some(Duration::from_millis(300)),
                    },
                )],
            )
            .expect("rules"),
        );
        let (a, mut rx_a) = node(config(redis.url()), aged.clone()).await;
        let (b, mut rx_b) = node(config(redis.url()), aged).await;
        publish(&a, "old", &[DOC]).await;
        receive(&mut rx_a, 1).await;
        receive(&mut rx_b, 1).await;
        let key = "{quicksilver:updates}:retain:n100a300";
        let ttl: i64 = redis.query(&["PTTL", key]).unwrap();
        assert!(
            ttl > 0,
            "an aged class stream expires when left alone: {ttl}"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        publish(&b, "new", &[DOC]).await;
        receive(&mut rx_a, 1).await;
        receive(&mut rx_b, 1).await;
        for t in [&a, &b] {
            assert_eq!(ids(&resume(t, "earliest", &[DOC]).await), vec!["new"]);
            assert!(resume(t, "old", &[DOC]).await.anchor.is_none());
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_history_of_windows_still_named() {
    let redis = RedisServer::start();
    bounded(async {
        let (a, mut rx_a) = node(config(redis.url()), rules()).await;
        let (b, mut rx_b) = node(config(redis.url()), rules()).await;
        publish(&a, "d1", &[DOC]).await;
        publish(&a, "b1", &[BUSY]).await;
        receive(&mut rx_a, 2).await;
        receive(&mut rx_b, 2).await;
        // Documents keep their window under another selector; telemetry gets a new one.
        let reloaded = Arc::new(
            Retention::new(
                window(20),
                vec![
                    rule("https://example.com/documents/1", window(500)),
                    rule("https://example.com/telemetry/{id}", window(7)),
                ],
            )
            .expect("rules"),
        );
        a.set_retention(reloaded.clone());
        b.set_retention(reloaded);
        publish(&b, "d2", &[DOC]).await;
        publish(&b, "b2", &[BUSY]).await;
        receive(&mut rx_a, 2).await;
        receive(&mut rx_b, 2).await;
        for t in [&a, &b] {
            let doc = resume(t, "d1", &[DOC]).await;
            assert_eq!((ids(&doc), doc.anchor.as_deref()), (vec!["d2"], Some("d1")));
            // The old telemetry class is no longer read: b1 is unknown now.
            assert!(resume(t, "b1", &[BUSY]).await.anchor.is_none());
            assert_eq!(ids(&resume(t, "earliest", &[BUSY]).await), vec!["b2"]);
        }
        // Back to no rules: the partition's stream is the history again.
        let none = Arc::new(Retention::global(window(20)));
        a.set_retention(none);
        let all = a.history("earliest").await.expect("history");
        assert_eq!(ids(&all), vec!["d1", "b1", "d2", "b2"]);
    })
    .await;
}
