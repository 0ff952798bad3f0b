//! Cluster behaviour with real processes: several `quicksilver` nodes sharing a real `redis-server`,
//! nodes killed with SIGKILL, Redis restarted, a node cut off from Redis by a proxy that is stopped.
//!
//! Every test checks the same promise from the subscriber's side: each subscriber receives every
//! update acknowledged with 200 that it may see, exactly once, in publish order — following the
//! browser's behaviour of reconnecting (to any node) with its last event id when a stream ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use quicksilver_testkit::hub::{is_ready, HubProcess};
use quicksilver_testkit::redis::{RedisOptions, RedisServer};
use quicksilver_testkit::sse::SseClient;
use quicksilver_testkit::token::{mercure_token, publisher_token};
use quicksilver_testkit::{wait_until, Followed, Follower, TEST_JWT_KEY};

const BIN: &str = env!("CARGO_BIN_EXE_quicksilver");

fn node(redis_url: &str, extra: &[&str]) -> HubProcess {
    let mut args = vec![
        "--jwt-key",
        TEST_JWT_KEY,
        "--anonymous",
        "--transport",
        "redis",
        "--redis-url",
        redis_url,
        "--history-size",
        "100000",
        "--redis-timeout",
        "500ms",
    ];
    args.extend_from_slice(extra);
    HubProcess::spawn(BIN, &args)
}

/// A client whose requests give up after 5 s: publishers here target nodes that get killed.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Publishes `topic=t&id=<seq>`; `Some(status)` if an HTTP answer came, `None` if the node is gone.
async fn try_publish(c: &reqwest::Client, node: &str, token: &str, seq: u64) -> Option<u16> {
    try_publish_to(c, node, token, "t", seq).await
}

/// Publishes update `seq` to `topic` (already form-encoded), as [`try_publish`].
async fn try_publish_to(
    c: &reqwest::Client,
    node: &str,
    token: &str,
    topic: &str,
    seq: u64,
) -> Option<u16> {
    c.post(format!("{node}/.well-known/mercure"))
        .bearer_auth(token)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("topic={topic}&id={seq}&data=update-{seq}"))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// The form-encoded topic `https://ex.com/t/<n>`, matched by the selector `https://ex.com/t/{n}`.
fn numbered_topic(n: u64) -> String {
    format!("https%3A%2F%2Fex.com%2Ft%2F{n}")
}

/// The Mercure endpoints of the nodes at `urls`.
fn endpoints(urls: &[String]) -> Vec<String> {
    urls.iter()
        .map(|u| format!("{u}/.well-known/mercure"))
        .collect()
}

/// Asserts `received` is strictly increasing (in order, no duplicate) and holds every acked update.
fn assert_complete(name: &str, received: &[u64], acked: &[u64]) {
    for w in received.windows(2) {
        assert!(
            w[0] < w[1],
            "{name}: out of order or duplicate: {} then {}",
            w[0],
            w[1]
        );
    }
    let missing: Vec<u64> = acked
        .iter()
        .filter(|a| received.binary_search(a).is_err())
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "{name}: lost acknowledged updates {missing:?}"
    );
}

async fn wait_all_received(followers: &[Follower], acked: &[u64], timeout: Duration) {
    let last = *acked.last().expect("something was acked");
    wait_until("every subscriber to catch up", timeout, async || {
        followers
            .iter()
            .all(|f| f.received().last().is_some_and(|l| *l >= last))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_delivers_every_update_in_the_same_order() {
    let redis = RedisServer::start();
    let nodes: Vec<HubProcess> = (0..3).map(|_| node(&redis.url(), &[])).collect();
    let urls: Vec<String> = nodes.iter().map(|n| n.url().to_string()).collect();
    let mut followers = Vec::new();
    for i in 0..9 {
        followers.push(Follower::start(endpoints(&urls), i % 3, "topic=t").await);
    }
    let c = client();
    let token = publisher_token();
    // Concurrent publishers on every node: the stream decides one order for everybody.
    let mut tasks = Vec::new();
    for (n, url) in urls.iter().enumerate() {
        let (c, url, token) = (c.clone(), url.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            for k in 0..100u64 {
                assert_eq!(
                    try_publish(&c, &url, &token, 1 + n as u64 * 1000 + k).await,
                    Some(200)
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    wait_until(
        "all 300 updates everywhere",
        Duration::from_secs(20),
        async || followers.iter().all(|f| f.received().len() >= 300),
    )
    .await;
    let reference = followers[0].received();
    assert_eq!(reference.len(), 300);
    for f in followers {
        let got = f.stop().await.received;
        assert_eq!(got, reference, "two subscribers saw different orders");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_of_a_killed_node_resume_on_others_without_loss() {
    let redis = RedisServer::start();
    let mut nodes: Vec<HubProcess> = (0..3).map(|_| node(&redis.url(), &[])).collect();
    let urls: Vec<String> = nodes.iter().map(|n| n.url().to_string()).collect();
    let mut followers = Vec::new();
    for i in 0..30 {
        followers.push(Follower::start(endpoints(&urls), i % 3, "topic=t").await);
    }
    let c = client();
    let token = publisher_token();
    let publisher = {
        let (c, urls, token) = (c.clone(), urls.clone(), token.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for seq in 1..=400u64 {
                // Through every node in turn, the victim included: refused or failed publishes are
                // simply not acknowledged.
                if try_publish(&c, &urls[seq as usize % 3], &token, seq).await == Some(200) {
                    acked.push(seq);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    nodes[2].kill();
    let acked = publisher.await.unwrap();
    assert!(
        acked.len() > 250,
        "publishing through the live nodes kept working ({} acked)",
        acked.len()
    );
    wait_all_received(&followers, &acked, Duration::from_secs(30)).await;
    let mut resumed = 0;
    for (i, f) in followers.into_iter().enumerate() {
        let Followed {
            received: got,
            reconnections,
            ..
        } = f.stop().await;
        assert_complete(&format!("subscriber {i}"), &got, &acked);
        if i % 3 == 2 {
            assert!(
                reconnections >= 1,
                "subscriber {i} of the killed node reconnected"
            );
            resumed += 1;
        }
    }
    assert_eq!(resumed, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_loses_no_acknowledged_update() {
    let mut redis = RedisServer::start_with(RedisOptions {
        appendonly: true,
        ..RedisOptions::default()
    });
    let nodes: Vec<HubProcess> = (0..2).map(|_| node(&redis.url(), &[])).collect();
    let urls: Vec<String> = nodes.iter().map(|n| n.url().to_string()).collect();
    let mut followers = Vec::new();
    for i in 0..6 {
        followers.push(Follower::start(endpoints(&urls), i % 2, "topic=t").await);
    }
    let c = client();
    let token = publisher_token();
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (c, urls, token, stop) = (c.clone(), urls.clone(), token.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut acked, mut refused) = (Vec::new(), 0);
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) && seq < 5000 {
                seq += 1;
                match try_publish(&c, &urls[seq as usize % 2], &token, seq).await {
                    Some(200) => acked.push(seq),
                    Some(503) => refused += 1,
                    other => panic!("unexpected publish answer {other:?}"),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (acked, refused)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.kill();
    // While Redis is down the nodes stay up but are not ready.
    for url in &urls {
        wait_until("readyz to turn 503", Duration::from_secs(10), async || {
            !is_ready(&c, url).await
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart();
    for url in &urls {
        wait_until("readyz to recover", Duration::from_secs(20), async || {
            is_ready(&c, url).await
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (acked, refused) = publisher.await.unwrap();
    assert!(
        refused > 0,
        "publishes during the outage were refused with 503"
    );
    wait_all_received(&followers, &acked, Duration::from_secs(30)).await;
    for (i, f) in followers.into_iter().enumerate() {
        let got = f.stop().await.received;
        assert_complete(&format!("subscriber {i}"), &got, &acked);
    }
    drop(nodes);
}

/// A TCP proxy that can be cut (every connection dropped, new ones refused) and restored on the
/// same port.
struct CuttableProxy {
    port: u16,
    cut: Arc<AtomicBool>,
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl CuttableProxy {
    async fn start(target: std::net::SocketAddr) -> CuttableProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = CuttableProxy {
            port,
            cut: Arc::new(AtomicBool::new(false)),
            generation: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        };
        let (cut, generation) = (proxy.cut.clone(), proxy.generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if cut.load(Ordering::Relaxed) {
                    drop(inbound);
                    continue;
                }
                let (cut, generation) = (cut.clone(), generation.clone());
                let born = generation.load(Ordering::Relaxed);
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                    tokio::pin!(copy);
                    loop {
                        tokio::select! {
                            _ = &mut copy => return,
                            () = tokio::time::sleep(Duration::from_millis(50)) => {
                                if cut.load(Ordering::Relaxed) || generation.load(Ordering::Relaxed) != born {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        proxy
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn cut(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
        self.cut.store(true, Ordering::Relaxed);
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_redis_catches_up_when_the_link_returns() {
    let redis = RedisServer::start();
    let proxy = CuttableProxy::start(redis.addr()).await;
    let healthy = node(&redis.url(), &[]);
    let isolated = node(&proxy.url(), &[]);
    let urls = vec![isolated.url().to_string()];
    // Subscribers of the isolated node only (they must not move: they stay connected through the cut).
    let mut followers = Vec::new();
    for _ in 0..5 {
        followers.push(Follower::start(endpoints(&urls), 0, "topic=t").await);
    }
    let c = client();
    let token = publisher_token();
    let mut acked = Vec::new();
    for seq in 1..=50u64 {
        assert_eq!(try_publish(&c, healthy.url(), &token, seq).await, Some(200));
        acked.push(seq);
    }
    wait_all_received(&followers, &acked, Duration::from_secs(10)).await;

    proxy.cut();
    wait_until(
        "the isolated node to report not ready",
        Duration::from_secs(10),
        async || !is_ready(&c, isolated.url()).await,
    )
    .await;
    for seq in 51..=150u64 {
        assert_eq!(try_publish(&c, healthy.url(), &token, seq).await, Some(200));
        acked.push(seq);
    }
    proxy.restore();
    wait_until(
        "the isolated node to be ready again",
        Duration::from_secs(20),
        async || is_ready(&c, isolated.url()).await,
    )
    .await;
    wait_all_received(&followers, &acked, Duration::from_secs(20)).await;
    for (i, f) in followers.into_iter().enumerate() {
        let Followed {
            received: got,
            reconnections,
            ..
        } = f.stop().await;
        assert_complete(&format!("subscriber {i}"), &got, &acked);
        assert_eq!(
            reconnections, 0,
            "subscriber {i} stayed connected through the cut"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_over_a_redis_cluster_a_killed_node_loses_nothing() {
    let cluster = quicksilver_testkit::redis::RedisCluster::start(3);
    let urls_arg = cluster.urls().join(",");
    let extra = ["--redis-cluster", "--redis-partitions", "4"];
    let mut nodes: Vec<HubProcess> = (0..3).map(|_| node(&urls_arg, &extra)).collect();
    let urls: Vec<String> = nodes.iter().map(|n| n.url().to_string()).collect();
    let mut followers = Vec::new();
    for i in 0..12 {
        followers.push(
            Follower::start(
                endpoints(&urls),
                i % 3,
                "topic=https%3A%2F%2Fex.com%2Ft%2F%7Bn%7D",
            )
            .await,
        );
    }
    let c = client();
    let token = publisher_token();
    let topics = 8;
    let publisher = {
        let (c, urls, token) = (c.clone(), urls.clone(), token.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for seq in 1..=320u64 {
                let topic = numbered_topic(seq % topics);
                if try_publish_to(&c, &urls[seq as usize % 3], &token, &topic, seq).await
                    == Some(200)
                {
                    acked.push(seq);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    nodes[1].kill();
    let acked = publisher.await.unwrap();
    assert!(acked.len() > 200, "{} acked", acked.len());
    // Partitions have no common order: wait until each follower has every acked update.
    wait_until(
        "every subscriber to receive every acknowledged update",
        Duration::from_secs(30),
        async || {
            followers.iter().all(|f| {
                let got = f.received();
                acked.iter().all(|a| got.contains(a))
            })
        },
    )
    .await;
    let mut duplicates = 0;
    for (i, f) in followers.into_iter().enumerate() {
        let got = f.stop().await.received;
        let mut seen = std::collections::HashSet::new();
        let mut last_per_topic = vec![0u64; topics as usize];
        for seq in got {
            if !seen.insert(seq) {
                duplicates += 1; // allowed within the resume margin, for other partitions
                continue;
            }
            let t = (seq % topics) as usize;
            assert!(
                seq > last_per_topic[t],
                "subscriber {i}: topic {t} out of order ({seq} after {})",
                last_per_topic[t]
            );
            last_per_topic[t] = seq;
        }
    }
    eprintln!("partitioned resume: {duplicates} duplicate deliveries across all subscribers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_subscribers_of_a_partitioned_hub_read_on_interest_and_lose_nothing_across_a_kill() {
    // Every node reads only the partitions of its subscribers' exact topics; updates with an
    // alternate topic are stored in that topic's partition too. Subscribers of a document and of
    // the alternate topic follow across a killed node: each gets its updates once, in order.
    let redis = RedisServer::start();
    let extra = ["--redis-partitions", "16"];
    let mut nodes: Vec<HubProcess> = (0..3).map(|_| node(&redis.url(), &extra)).collect();
    let urls: Vec<String> = nodes.iter().map(|n| n.url().to_string()).collect();
    let documents = 6u64;
    let alternate = "https%3A%2F%2Fex.com%2Fall";
    let mut followers = Vec::new();
    for n in 0..documents {
        let query = format!("topic={}", numbered_topic(n));
        followers.push(Follower::start(endpoints(&urls), n as usize % 3, &query).await);
    }
    for i in 0..2 {
        let query = format!("topic={alternate}");
        followers.push(Follower::start(endpoints(&urls), i + 1, &query).await);
    }
    let c = client();
    let token = publisher_token();
    let publisher = {
        let (c, urls, token) = (c.clone(), urls.clone(), token.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for seq in 1..=300u64 {
                let mut topic = numbered_topic(seq % documents);
                if seq % 4 == 0 {
                    topic = format!("{topic}&topic={alternate}");
                }
                // Node 1 is killed midway: publish to the others.
                let node = &urls[[0, 2][seq as usize % 2]];
                if try_publish_to(&c, node, &token, &topic, seq).await == Some(200) {
                    acked.push(seq);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    nodes[1].kill();
    let acked = publisher.await.unwrap();
    assert!(acked.len() > 250, "{} acked", acked.len());
    let wanted = |i: usize| -> Vec<u64> {
        acked
            .iter()
            .copied()
            .filter(|seq| {
                if i < documents as usize {
                    seq % documents == i as u64
                } else {
                    seq % 4 == 0
                }
            })
            .collect()
    };
    wait_until(
        "every subscriber to receive its acknowledged updates",
        Duration::from_secs(30),
        async || {
            followers.iter().enumerate().all(|(i, f)| {
                let got = f.received();
                wanted(i).iter().all(|a| got.contains(a))
            })
        },
    )
    .await;
    for (i, f) in followers.into_iter().enumerate() {
        let Followed { received, told, .. } = f.stop().await;
        assert_eq!(
            told, 0,
            "subscriber {i} was told it may have missed updates"
        );
        // Once each, in order, and nothing else: one partition per exact topic.
        assert_eq!(received, wanted(i), "subscriber {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_hands_its_subscribers_to_the_others_without_loss() {
    let redis = RedisServer::start();
    let mut draining = node(
        &redis.url(),
        &["--drain-window", "1s", "--drain-retry", "100ms"],
    );
    let others: Vec<HubProcess> = (0..2).map(|_| node(&redis.url(), &[])).collect();
    let mut urls = vec![draining.url().to_string()];
    urls.extend(others.iter().map(|n| n.url().to_string()));
    let mut followers = Vec::new();
    for _ in 0..20 {
        followers.push(Follower::start(endpoints(&urls), 0, "topic=t").await);
    }
    let c = client();
    let token = publisher_token();
    let publisher = {
        let (c, urls, token) = (c.clone(), urls.clone(), token.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for seq in 1..=300u64 {
                if try_publish(&c, &urls[1 + seq as usize % 2], &token, seq).await == Some(200) {
                    acked.push(seq);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    draining.sigterm();
    let acked = publisher.await.unwrap();
    assert_eq!(acked.len(), 300);
    wait_all_received(&followers, &acked, Duration::from_secs(30)).await;
    for (i, f) in followers.into_iter().enumerate() {
        let Followed {
            received: got,
            reconnections,
            ..
        } = f.stop().await;
        assert_complete(&format!("subscriber {i}"), &got, &acked);
        assert!(reconnections >= 1, "subscriber {i} moved to another node");
    }
    let status = draining
        .wait_exit(Duration::from_secs(15))
        .expect("the drained node exits");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_master_outage_is_survived() {
    let mut cluster = quicksilver_testkit::redis::RedisCluster::start(3);
    let urls_arg = cluster.urls().join(",");
    let extra = ["--redis-cluster", "--redis-partitions", "3"];
    let nodes: Vec<HubProcess> = (0..2).map(|_| node(&urls_arg, &extra)).collect();
    let urls: Vec<String> = nodes.iter().map(|n| n.url().to_string()).collect();
    let mut followers = Vec::new();
    for i in 0..4 {
        followers.push(
            Follower::start(
                endpoints(&urls),
                i % 2,
                "topic=https%3A%2F%2Fex.com%2Ft%2F%7Bn%7D",
            )
            .await,
        );
    }
    let c = client();
    let token = publisher_token();
    let publish = |seq: u64| {
        let (c, url, token) = (c.clone(), urls[seq as usize % 2].clone(), token.clone());
        async move { try_publish_to(&c, &url, &token, &numbered_topic(seq % 6), seq).await }
    };
    let mut acked = Vec::new();
    let mut refused = 0;
    for seq in 1..=60u64 {
        if publish(seq).await == Some(200) {
            acked.push(seq);
        }
    }
    // One master goes down: the streams it holds cannot be written; the nodes say so.
    cluster.nodes_mut()[0].kill();
    for url in &urls {
        wait_until("readyz to turn 503", Duration::from_secs(15), async || {
            !is_ready(&c, url).await
        })
        .await;
    }
    for seq in 61..=120u64 {
        match publish(seq).await {
            Some(200) => acked.push(seq),
            Some(503) => refused += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(
        refused > 0,
        "publishes to the missing master's partitions are refused with 503"
    );
    cluster.nodes_mut()[0].restart();
    cluster
        .wait_ok(Duration::from_secs(20))
        .expect("cluster healthy again");
    for url in &urls {
        wait_until("readyz to recover", Duration::from_secs(30), async || {
            is_ready(&c, url).await
        })
        .await;
    }
    for seq in 121..=180u64 {
        assert_eq!(publish(seq).await, Some(200), "publishing works again");
        acked.push(seq);
    }
    wait_until(
        "every subscriber to receive every acknowledged update",
        Duration::from_secs(30),
        async || {
            followers.iter().all(|f| {
                let got = f.received();
                acked.iter().all(|a| got.contains(a))
            })
        },
    )
    .await;
    for f in followers {
        let Followed {
            received: got,
            reconnections,
            ..
        } = f.stop().await;
        // The master came back without its data (no persistence): the partition it held was
        // recreated, and each node told its subscribers once when its reader found that (they
        // resumed; nothing was lost): at most one reconnection per node.
        assert!(
            reconnections <= 2,
            "subscribers reconnected {reconnections} times through one outage"
        );
        // Resuming in partitioned mode replays the other partitions from a margin before the
        // resume point (see the README): updates seen again are duplicates, allowed there; what
        // is new keeps each topic's order.
        let mut last = [0u64; 6];
        let mut seen = std::collections::HashSet::new();
        for seq in got {
            if !seen.insert(seq) {
                continue;
            }
            let t = (seq % 6) as usize;
            assert!(seq > last[t], "topic {t}: {seq} after {}", last[t]);
            last[t] = seq;
        }
    }
}

/// Active subscriptions are one registry for the whole cluster: a node's subscriptions are
/// announced to and listed by every node, and when the node is killed without a goodbye another
/// node ends them (their `active: false` events) once its lease expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscription_registry_is_cluster_wide_and_outlives_a_killed_node() {
    let redis = RedisServer::start();
    let extra = ["--subscriptions", "--subscription-lease", "1s"];
    let mut victim = node(&redis.url(), &extra);
    let survivor = node(&redis.url(), &extra);
    let c = client();
    let template = "/.well-known/mercure/subscriptions/{topic}/{subscriber}";
    let watcher_token = mercure_token(
        TEST_JWT_KEY,
        &[],
        &["/.well-known/mercure/subscriptions", template],
        None,
    );
    let bearer = format!("Bearer {watcher_token}");
    let sse = SseClient::new();
    let mut watcher = sse
        .open(
            &format!(
                "{}/.well-known/mercure?topic={}",
                survivor.url(),
                "%2F.well-known%2Fmercure%2Fsubscriptions%2F%7Btopic%7D%2F%7Bsubscriber%7D"
            ),
            &[("Authorization", bearer.as_str())],
        )
        .await
        .unwrap();
    let own: serde_json::Value = serde_json::from_str(
        &watcher
            .next_event(Duration::from_secs(10))
            .await
            .unwrap()
            .data,
    )
    .unwrap();
    assert_eq!(own["active"], true);

    // Three subscribers on the node about to die.
    let mut held = Vec::new();
    for topic in ["a", "b", "c"] {
        let s = sse
            .open(
                &format!("{}/.well-known/mercure?topic={topic}", victim.url()),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(s.status(), 200);
        held.push(s);
    }
    let mut active = std::collections::BTreeSet::new();
    for _ in 0..3 {
        let e = watcher.next_event(Duration::from_secs(10)).await.unwrap();
        let doc: serde_json::Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(doc["active"], true);
        active.insert(doc["id"].as_str().unwrap().to_string());
    }
    let list = |node: String| {
        let (c, bearer) = (c.clone(), bearer.clone());
        async move {
            let doc: serde_json::Value = c
                .get(format!("{node}/.well-known/mercure/subscriptions"))
                .header("Authorization", bearer)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            doc["subscriptions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].as_str().unwrap().to_string())
                .collect::<std::collections::BTreeSet<_>>()
        }
    };
    // Both nodes answer for the whole cluster.
    for n in [victim.url().to_string(), survivor.url().to_string()] {
        let ids = list(n).await;
        assert_eq!(ids.len(), 4, "{ids:?}");
        assert!(active.is_subset(&ids));
    }

    victim.kill();
    let mut ended = std::collections::BTreeSet::new();
    while ended.len() < 3 {
        let e = watcher
            .next_event(Duration::from_secs(15))
            .await
            .expect("the killed node's subscriptions are ended by the survivor");
        let doc: serde_json::Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(doc["active"], false, "{doc}");
        ended.insert(doc["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ended, active);
    let ids = list(survivor.url().to_string()).await;
    assert_eq!(
        ids.len(),
        1,
        "only the watcher's own subscription is left: {ids:?}"
    );
    watcher.assert_no_event(Duration::from_millis(1500)).await;
    drop(held);
}
