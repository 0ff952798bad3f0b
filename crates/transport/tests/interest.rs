//! Reading on interest against a real `redis-server`: a node reads only the partitions its
//! subscribers need, a reader started late misses nothing for the subscriber that started it, idle
//! readers stop and start again afresh, and an update with alternate topics in other partitions
//! reaches each subscriber once, from the partition of the topic it subscribed to. Many partitions
//! are read over one connection (one per hash slot on Redis Cluster), a partition joining a blocked
//! read is read at once, and a loss in one partition of a group is reported for that one only.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use quicksilver_protocol::{Envelope, Position};
use quicksilver_testkit::{update, wait_until, RedisCluster, RedisServer};
use quicksilver_transport::redis::hash_slot;
use quicksilver_transport::redis::{RedisConfig, RedisTransport};
use quicksilver_transport::{Gap, Scope, Transport, UpdateSink};
use tokio::sync::mpsc;

const TEST_LIMIT: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(10);
const PARTITIONS: u16 = 8;

struct Collect(mpsc::UnboundedSender<Arc<Envelope>>);

#[async_trait]
impl UpdateSink for Collect {
    async fn deliver(&self, envelope: Arc<Envelope>) {
        let _ = self.0.send(envelope);
    }

    async fn gap(&self, _gap: Gap) {}
}

fn config(url: String, linger: Duration) -> RedisConfig {
    RedisConfig {
        block_ms: 200,
        command_timeout: Duration::from_millis(500),
        partitions: PARTITIONS,
        read_on_interest: true,
        idle_reader_linger: linger,
        ..RedisConfig::new(url)
    }
}

async fn node(config: RedisConfig) -> (RedisTransport, mpsc::UnboundedReceiver<Arc<Envelope>>) {
    let transport = RedisTransport::new(config).expect("valid config");
    let (tx, rx) = mpsc::unbounded_channel();
    transport.start_reader(Arc::new(Collect(tx)));
    wait_until("transport ready", WAIT, async || transport.is_ready()).await;
    (transport, rx)
}

/// A topic of partition `p` (the `n`-th found).
fn topic_in(t: &RedisTransport, p: u16, n: usize) -> String {
    (0..)
        .map(|i| format!("https://example.com/doc/{i}"))
        .filter(|topic| t.partition_of(topic) == p)
        .nth(n)
        .unwrap_or_default()
}

fn exact(topics: &[&str]) -> Scope {
    Scope::Topics(topics.iter().map(|t| t.to_string()).collect())
}

/// Everything that arrives within `quiet` of the previous arrival.
async fn drain(rx: &mut mpsc::UnboundedReceiver<Arc<Envelope>>, quiet: Duration) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(quiet, rx.recv()).await {
        out.push(e.update.id.clone());
    }
    out
}

async fn bounded(test: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(TEST_LIMIT, test)
        .await
        .expect("test took too long");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reads_only_the_partitions_its_subscribers_need() {
    bounded(async {
        let redis = RedisServer::start();
        let (t, mut rx) = node(config(redis.url(), Duration::from_secs(60))).await;
        assert_eq!(t.partitions_read(), 0, "no subscriber, nothing read");
        let mine = topic_in(&t, 3, 0);
        let other = topic_in(&t, 5, 0);
        let interest = t.interest(&exact(&[&mine])).await.expect("interest");
        assert_eq!(t.partitions_read(), 1);
        assert_eq!(interest.streams(), Some(&[3u16][..]));
        t.publish(update("other", &[&other], "x"))
            .await
            .expect("publish");
        t.publish(update("mine", &[&mine], "x"))
            .await
            .expect("publish");
        assert_eq!(drain(&mut rx, Duration::from_millis(500)).await, ["mine"]);

        // A subscription topic needs partition 0, whose reader also reads subscription events.
        let events = exact(&["https://hub.example/.well-known/mercure/subscriptions/x/y"]);
        let needed = t.partitions_for(&events);
        assert!(needed.contains(&0), "{needed:?}");
        // A template or `*` needs every partition.
        let all = t.interest(&Scope::All).await.expect("interest");
        assert_eq!(t.partitions_read(), usize::from(PARTITIONS));
        t.publish(update("other-2", &[&other], "x"))
            .await
            .expect("publish");
        assert_eq!(
            drain(&mut rx, Duration::from_millis(500)).await,
            ["other-2"]
        );
        drop((all, interest));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_started_late_misses_nothing_for_the_subscriber_that_started_it() {
    bounded(async {
        let redis = RedisServer::start();
        let (publisher, _) = node(config(redis.url(), Duration::from_secs(60))).await;
        let (t, mut rx) = node(config(redis.url(), Duration::from_secs(60))).await;
        let topic = topic_in(&t, 2, 0);
        publisher
            .publish(update("before", &[&topic], "x"))
            .await
            .expect("publish");
        // Publishing goes on while the subscriber arrives and its reader starts.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let run = {
            let (stop, topic) = (stop.clone(), topic.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = publisher
                        .publish(update(&format!("u{n}"), &[&topic], "x"))
                        .await;
                    n += 1;
                    // Well within what the stream retains, so "before" stays in history.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                n
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        // As the server does: registered (the channel), then interest, then history.
        let interest = t.interest(&exact(&[&topic])).await.expect("interest");
        let history = t
            .history_within("before", &interest, &exact(&[&topic]))
            .await
            .expect("history");
        assert_eq!(history.anchor.as_deref(), Some("before"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let published = run.await.expect("publisher");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mark: Option<Position> = history
            .high_water
            .iter()
            .find(|p| p.partition == 2)
            .copied();
        let mut seen: Vec<String> = history
            .entries
            .iter()
            .map(|e| e.update.id.clone())
            .collect();
        while let Ok(e) = rx.try_recv() {
            // Replay then live: live updates the history covered are dropped.
            if mark.is_none_or(|m| e.position.is_after(&m)) {
                seen.push(e.update.id.clone());
            }
        }
        let expected: Vec<String> = (0..published).map(|n| format!("u{n}")).collect();
        assert_eq!(seen, expected, "every update once, in order");
        drop(interest);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_reader_stops_after_its_linger_and_starts_again_afresh() {
    bounded(async {
        let redis = RedisServer::start();
        let (t, mut rx) = node(config(redis.url(), Duration::from_millis(200))).await;
        let topic = topic_in(&t, 6, 0);
        let interest = t.interest(&exact(&[&topic])).await.expect("interest");
        t.publish(update("a", &[&topic], "x"))
            .await
            .expect("publish");
        assert_eq!(drain(&mut rx, Duration::from_millis(300)).await, ["a"]);
        drop(interest);
        // Another subscriber within the linger keeps the reader.
        let again = t.interest(&exact(&[&topic])).await.expect("interest");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(t.partitions_read(), 1);
        drop(again);
        wait_until("reader stopped", WAIT, async || t.partitions_read() == 0).await;
        t.publish(update("b", &[&topic], "x"))
            .await
            .expect("publish");
        assert!(drain(&mut rx, Duration::from_millis(300)).await.is_empty());
        // Started again: "b" is history, what follows is live.
        let interest = t.interest(&exact(&[&topic])).await.expect("interest");
        let history = t
            .history_within("a", &interest, &exact(&[&topic]))
            .await
            .expect("history");
        let replayed: Vec<&str> = history
            .entries
            .iter()
            .map(|e| e.update.id.as_str())
            .collect();
        assert_eq!(replayed, ["b"]);
        t.publish(update("c", &[&topic], "x"))
            .await
            .expect("publish");
        assert_eq!(drain(&mut rx, Duration::from_millis(300)).await, ["c"]);
        assert!(t.is_ready());
        drop(interest);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternate_topics_reach_each_subscriber_once_from_its_own_partition() {
    bounded(async {
        let redis = RedisServer::start();
        let (publisher, _) = node(config(redis.url(), Duration::from_secs(60))).await;
        let (alternate_node, mut alt_rx) = node(config(redis.url(), Duration::from_secs(60))).await;
        let (everything, mut all_rx) = node(config(redis.url(), Duration::from_secs(60))).await;
        let canonical = topic_in(&publisher, 1, 0);
        let alternate = topic_in(&publisher, 4, 0);
        // Stored once per partition of its topics; acknowledged with the canonical's position.
        let _alt = alternate_node
            .interest(&exact(&[&alternate]))
            .await
            .expect("interest");
        let _all = everything.interest(&Scope::All).await.expect("interest");
        publisher
            .publish(update("first", &[&alternate], "x"))
            .await
            .expect("publish");
        let position = publisher
            .publish(update("both", &[&canonical, &alternate], "x"))
            .await
            .expect("publish");
        assert_eq!(position.partition, 1);
        publisher
            .publish(update("last", &[&alternate], "x"))
            .await
            .expect("publish");

        // The node reading only the alternate's partition gets the update from there, as the copy
        // for a subscriber whose first matching topic is the alternate (index 1).
        let mut got = Vec::new();
        while let Ok(Some(e)) =
            tokio::time::timeout(Duration::from_millis(500), alt_rx.recv()).await
        {
            got.push(e);
        }
        let ids: Vec<&str> = got.iter().map(|e| e.update.id.as_str()).collect();
        assert_eq!(
            ids,
            ["first", "both", "last"],
            "in the alternate partition's order"
        );
        assert_eq!(got[1].position.partition, 4);
        assert!(got[1].is_copy_for(1) && !got[1].is_copy_for(0));

        // A node reading everything reads both copies; each subscriber takes exactly one.
        let mut copies = Vec::new();
        while let Ok(Some(e)) =
            tokio::time::timeout(Duration::from_millis(500), all_rx.recv()).await
        {
            if e.update.id == "both" {
                copies.push(e);
            }
        }
        assert_eq!(copies.len(), 2);
        for first_match in [0, 1] {
            assert_eq!(
                copies.iter().filter(|e| e.is_copy_for(first_match)).count(),
                1
            );
        }

        // Resuming at the copy the alternate's subscriber had replays only what followed it.
        let interest = alternate_node
            .interest(&exact(&[&alternate]))
            .await
            .expect("interest");
        let history = alternate_node
            .history_within("both", &interest, &exact(&[&alternate]))
            .await
            .expect("history");
        let replayed: BTreeSet<&str> = history
            .entries
            .iter()
            .map(|e| e.update.id.as_str())
            .collect();
        assert_eq!(replayed, BTreeSet::from(["last"]));
        let from_first = alternate_node
            .history_within("first", &interest, &exact(&[&alternate]))
            .await
            .expect("history");
        let replayed: Vec<&str> = from_first
            .entries
            .iter()
            .map(|e| e.update.id.as_str())
            .collect();
        assert_eq!(replayed, ["both", "last"]);
    })
    .await;
}

/// A block long enough that a read nobody wakes would outlast the test's waits.
const LONG_BLOCK_MS: u64 = 30_000;

/// How many of the Redis server's clients are blocked in (or last sent) an `XREAD`.
fn xread_clients(redis: &RedisServer) -> usize {
    let list: String = redis.query(&["CLIENT", "LIST"]).expect("CLIENT LIST");
    list.lines().filter(|l| l.contains("cmd=xread")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_partitions_are_read_over_one_connection_in_order() {
    bounded(async {
        let redis = RedisServer::start();
        let config = RedisConfig {
            partitions: 64,
            reader_partitions: 64,
            block_ms: LONG_BLOCK_MS,
            ..config(redis.url(), Duration::from_secs(60))
        };
        let (publisher, _) = node(config.clone()).await;
        let (t, mut rx) = node(config).await;
        // One topic in each of 40 partitions, each joining the group's read while it is blocked
        // (a join that did not wake it would not be positioned within the interest's wait).
        let topics: Vec<String> = (0..40u16).map(|p| topic_in(&t, p, 0)).collect();
        let mut holds = Vec::new();
        for topic in &topics {
            holds.push(t.interest(&exact(&[topic])).await.expect("interest"));
        }
        assert_eq!(t.partitions_read(), 40);
        assert_eq!(
            t.reader_connections(),
            1,
            "one reader connection for 40 partitions"
        );
        wait_until("one blocked reader", WAIT, async || {
            xread_clients(&redis) == 1
        })
        .await;
        for round in 0..10 {
            for (i, topic) in topics.iter().enumerate() {
                publisher
                    .publish(update(&format!("{i}-{round}"), &[topic], "x"))
                    .await
                    .expect("publish");
            }
        }
        let mut by_topic: Vec<Vec<String>> = vec![Vec::new(); topics.len()];
        let mut received = 0;
        while received < topics.len() * 10 {
            let e = tokio::time::timeout(WAIT, rx.recv())
                .await
                .expect("every update arrives")
                .expect("open");
            let i = topics
                .iter()
                .position(|t| *t == e.update.topics[0])
                .expect("a subscribed topic");
            by_topic[i].push(e.update.id.clone());
            received += 1;
        }
        for (i, ids) in by_topic.iter().enumerate() {
            let expected: Vec<String> = (0..10).map(|round| format!("{i}-{round}")).collect();
            assert_eq!(ids, &expected, "topic {i}: every update once, in order");
        }
        assert_eq!(xread_clients(&redis), 1, "still one reader connection");
        drop(holds);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_joining_a_blocked_read_gets_its_updates_live() {
    bounded(async {
        let redis = RedisServer::start();
        let config = RedisConfig {
            block_ms: LONG_BLOCK_MS,
            ..config(redis.url(), Duration::from_secs(60))
        };
        let (publisher, _) = node(config.clone()).await;
        let (t, mut rx) = node(config).await;
        let first = topic_in(&t, 1, 0);
        let later = topic_in(&t, 6, 0);
        let _first = t.interest(&exact(&[&first])).await.expect("interest");
        // The group's read is now blocked for up to 30 s.
        wait_until("the reader blocks", WAIT, async || {
            xread_clients(&redis) == 1
        })
        .await;
        let _later = t.interest(&exact(&[&later])).await.expect("interest");
        publisher
            .publish(update("live", &[&later], "x"))
            .await
            .expect("publish");
        let e = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("the newcomer's update arrives without waiting for the block to end")
            .expect("open");
        assert_eq!(e.update.id, "live");
        assert_eq!(t.reader_connections(), 1);
    })
    .await;
}

/// Delivers once let through; records losses.
struct GatedCollect {
    tx: mpsc::UnboundedSender<Arc<Envelope>>,
    gate: Arc<tokio::sync::Semaphore>,
    gaps: Arc<parking_lot::Mutex<Vec<Gap>>>,
}

#[async_trait]
impl UpdateSink for GatedCollect {
    async fn deliver(&self, envelope: Arc<Envelope>) {
        if let Ok(permit) = self.gate.acquire().await {
            permit.forget();
        }
        let _ = self.tx.send(envelope);
    }

    async fn gap(&self, gap: Gap) {
        self.gaps.lock().push(gap);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_in_one_partition_of_a_group_is_reported_for_that_partition_only() {
    bounded(async {
        let redis = RedisServer::start();
        // history_size 10 still keeps ~1000 entries in each stream (the floor for readers).
        let config = RedisConfig {
            history_size: 10,
            ..config(redis.url(), Duration::from_secs(60))
        };
        let t = RedisTransport::new(config).expect("valid config");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let gaps = Arc::new(parking_lot::Mutex::new(Vec::new()));
        t.start_reader(Arc::new(GatedCollect {
            tx,
            gate: gate.clone(),
            gaps: gaps.clone(),
        }));
        wait_until("transport ready", WAIT, async || t.is_ready()).await;
        let trimmed = topic_in(&t, 2, 0);
        let kept = topic_in(&t, 5, 0);
        let _hold = t
            .interest(&exact(&[&trimmed, &kept]))
            .await
            .expect("interest");
        assert_eq!(t.reader_connections(), 1, "both partitions in one group");
        // The reader stops at the first hand-over (the gate is shut) while partition 2's stream
        // is trimmed far past it; partition 5 keeps everything.
        t.publish(update("first", &[&trimmed], "x"))
            .await
            .expect("publish");
        for i in 0..3_000 {
            t.publish(update(&format!("t{i}"), &[&trimmed], "x"))
                .await
                .expect("publish");
            if i % 300 == 0 {
                t.publish(update(&format!("k{}", i / 300), &[&kept], "x"))
                    .await
                    .expect("publish");
            }
        }
        gate.add_permits(1_000_000);
        let mut kept_seen = Vec::new();
        loop {
            let e = tokio::time::timeout(WAIT, rx.recv())
                .await
                .expect("updates arrive")
                .expect("open");
            if e.update.id.starts_with('k') {
                kept_seen.push(e.update.id.clone());
            }
            if e.update.id == "t2999" && kept_seen.len() == 10 {
                break;
            }
            assert!(kept_seen.len() <= 10);
        }
        let expected: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
        assert_eq!(
            kept_seen, expected,
            "the other partition: everything, in order"
        );
        let gaps = gaps.lock().clone();
        assert!(!gaps.is_empty(), "the loss is reported");
        assert!(
            gaps.iter().all(|g| g.partition == 2),
            "only the trimmed partition: {gaps:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_cluster_partitions_sharing_a_slot_are_read_over_one_connection() {
    let cluster = RedisCluster::start(3);
    bounded(async {
        let config = RedisConfig {
            urls: cluster.urls(),
            partitions: 12,
            partition_slots: 3,
            block_ms: LONG_BLOCK_MS,
            ..config(cluster.url(), Duration::from_secs(60))
        };
        let (publisher, _) = node(config.clone()).await;
        let (t, mut rx) = node(config).await;
        // 12 streams over 3 slots, one per master: partition p shares p mod 3's slot.
        let keys = t.stream_keys();
        assert_eq!(keys.len(), 12);
        for (p, key) in keys.iter().enumerate() {
            let slot: i64 = cluster.nodes()[0]
                .query(&["CLUSTER", "KEYSLOT", key])
                .expect("KEYSLOT");
            assert_eq!(slot, i64::from(hash_slot(&keys[p % 3])), "{key}");
        }
        // Every partition joins its group one after the other, each while the group's read is
        // blocked (on the master of its slot).
        let topics: Vec<String> = (0..12u16).map(|p| topic_in(&t, p, 0)).collect();
        let mut holds = Vec::new();
        for topic in &topics {
            holds.push(t.interest(&exact(&[topic])).await.expect("interest"));
        }
        assert_eq!(t.reader_connections(), 3, "one reader connection per slot");
        for round in 0..5 {
            for (i, topic) in topics.iter().enumerate() {
                publisher
                    .publish(update(&format!("{i}-{round}"), &[topic], "x"))
                    .await
                    .expect("publish");
            }
        }
        let mut by_topic: Vec<Vec<String>> = vec![Vec::new(); topics.len()];
        for _ in 0..topics.len() * 5 {
            let e = tokio::time::timeout(WAIT, rx.recv())
                .await
                .expect("every update arrives")
                .expect("open");
            let i = topics
                .iter()
                .position(|t| *t == e.update.topics[0])
                .expect("a subscribed topic");
            by_topic[i].push(e.update.id.clone());
        }
        for (i, ids) in by_topic.iter().enumerate() {
            let expected: Vec<String> = (0..5).map(|round| format!("{i}-{round}")).collect();
            assert_eq!(ids, &expected, "topic {i}: every update once, in order");
        }
        drop(holds);
    })
    .await;
}
