//! No silent loss, with real processes and a real Redis: when a node cannot deliver updates a
//! subscriber may have matched, the subscriber is told, never left with a hole it cannot see.

use std::time::{Duration, Instant};

use quicksilver_testkit::hub::HubProcess;
use quicksilver_testkit::hub::{is_ready, metric};
use quicksilver_testkit::redis::RedisServer;
use quicksilver_testkit::sse::{SseClient, SseError, SseItem};
use quicksilver_testkit::token::mercure_token;
use quicksilver_testkit::{publish, wait_until, Followed, Follower, WAIT};
use rustix::process::{kill_process, Pid, Signal};

const KEY: &str = "!ChangeThisMercureHubJWTSecretKey!";
const BIN: &str = env!("CARGO_BIN_EXE_quicksilver");

fn node(redis_url: &str, extra: &[&str]) -> HubProcess {
    let mut args = vec![
        "--jwt-key",
        KEY,
        "--anonymous",
        "--transport",
        "redis",
        "--redis-url",
        redis_url,
    ];
    args.extend_from_slice(extra);
    HubProcess::spawn(BIN, &args)
}

fn signal(process: &HubProcess, signal: Signal) {
    let pid = Pid::from_raw(process.pid() as i32).unwrap_or_else(|| panic!("no pid"));
    kill_process(pid, signal).unwrap_or_else(|e| panic!("signal: {e}"));
}

async fn wait_ready(c: &reqwest::Client, node: &HubProcess) {
    wait_until("the node to be ready", WAIT, async || {
        is_ready(c, node.url()).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_paused_past_the_trim_point_ends_its_streams_and_the_client_is_told() {
    let redis = RedisServer::start();
    // Each stream keeps about 1,000 entries whatever --history-size says.
    let a = node(
        &redis.url(),
        &["--history-size", "100", "--redis-timeout", "500ms"],
    );
    let b = node(
        &redis.url(),
        &["--history-size", "100", "--redis-timeout", "500ms"],
    );
    let c = reqwest::Client::new();
    wait_ready(&c, &a).await;
    wait_ready(&c, &b).await;
    let token = mercure_token(KEY, &["*"], &[], None);
    let publish_via_a = |id: String| {
        let (c, hub, token) = (c.clone(), a.mercure_url(), token.clone());
        async move {
            let (status, _) = publish(&c, &hub, &token, &[("topic", "t"), ("id", &id)]).await;
            assert_eq!(status, 200, "publish {id}");
        }
    };

    let sse = SseClient::new();
    let mut stream = sse
        .open(&format!("{}?topic=t", b.mercure_url()), &[])
        .await
        .unwrap_or_else(|e| panic!("subscribe: {e}"));
    publish_via_a("u0".into()).await;
    let first = stream
        .next_event(WAIT)
        .await
        .unwrap_or_else(|e| panic!("first update: {e}"));
    assert_eq!(first.id.as_deref(), Some("u0"));

    // B stops reading while 3,000 updates are acknowledged through A: most are trimmed away
    // before B's reader can read them.
    signal(&b, Signal::STOP);
    for i in 1..=3_000 {
        publish_via_a(format!("u{i}")).await;
    }
    signal(&b, Signal::CONT);

    // The subscriber on B is told: its stream ends (with a retry hint) instead of going on
    // after a hole it cannot see.
    let mut received = vec!["u0".to_string()];
    let deadline = Instant::now() + 3 * WAIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "the stream on B never ended after losing updates (got {} of 3,001)",
            received.len()
        );
        match stream.next_item(WAIT).await {
            Ok(SseItem::Event(e)) => received.extend(e.id),
            Ok(SseItem::Comment(_)) => {}
            Err(_) => break,
        }
    }
    assert!(
        received.len() < 3_001,
        "nothing was lost; the test did not pause B long enough"
    );
    assert!(
        stream.retry().is_some(),
        "the stream ended without a retry hint"
    );

    // Resuming with its last id, it learns that it missed updates (`earliest`) and gets what is
    // left, up to the newest.
    let last = received.last().cloned().unwrap_or_default();
    let mut resumed = sse
        .open(
            &format!("{}?topic=t", b.mercure_url()),
            &[("Last-Event-ID", last.as_str())],
        )
        .await
        .unwrap_or_else(|e| panic!("resume: {e}"));
    assert_eq!(
        resumed
            .headers()
            .get("last-event-id")
            .and_then(|v| v.to_str().ok()),
        Some("earliest"),
        "a resume past a loss must be told"
    );
    // From there on, nothing may be missing: the replay runs on to the newest update. B may end
    // the resumed stream once more: its reader hands over the backlog it read after the loss in
    // bursts that can exceed a subscriber's queue (`--subscriber-queue`), and a stream whose queue
    // is full is cut off as too slow. The client then resumes with its last id, as after any
    // cut-off, and gets the rest. A stream that goes quiet before the newest update has a hole:
    // the failure says so, with B's counters and log.
    let mut replayed: Vec<String> = Vec::new();
    let mut cut_offs = 0;
    loop {
        match resumed.next_event(WAIT).await {
            Ok(e) => {
                let id = e.id.unwrap_or_default();
                let done = id == "u3000";
                replayed.push(id);
                if done {
                    break;
                }
            }
            Err(SseError::Closed) if cut_offs < 3 && !replayed.is_empty() => {
                cut_offs += 1;
                let last = replayed.last().cloned().unwrap_or_default();
                resumed = sse
                    .open(
                        &format!("{}?topic=t", b.mercure_url()),
                        &[("Last-Event-ID", last.as_str())],
                    )
                    .await
                    .unwrap_or_else(|e| panic!("resume after a cut-off: {e}"));
            }
            Err(stopped) => {
                let mut seen = Vec::new();
                for name in [
                    "quicksilver_gap_disconnections_total",
                    "quicksilver_transport_gaps_total",
                    "quicksilver_transport_missed_entries_total",
                    "quicksilver_transport_reader_reconnects_total",
                ] {
                    seen.push(format!("{name} = {:?}", metric(&c, b.url(), name).await));
                }
                panic!(
                    "the resume on B stopped after {:?} ({} replayed from {:?}, {cut_offs} cut-offs): {stopped}\n{}\nB's log:\n{}",
                    replayed.last(),
                    replayed.len(),
                    replayed.first(),
                    seen.join("\n"),
                    b.output().join("\n")
                );
            }
        }
    }
    // What was replayed is one run of consecutive updates up to the newest.
    let first: usize = replayed[0]
        .strip_prefix('u')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected id {:?}", replayed[0]));
    let expected: Vec<String> = (first..=3_000).map(|i| format!("u{i}")).collect();
    assert_eq!(
        replayed, expected,
        "the replay after the loss has a hole or a repeat"
    );
    for name in [
        "quicksilver_gap_disconnections_total",
        "quicksilver_transport_gaps_total",
    ] {
        assert_eq!(metric(&c, b.url(), name).await, Some(1.0), "{name}");
    }
}

/// Publishes `topic=t&id=<id>` (a future that can move to another task).
async fn publish_t(c: &reqwest::Client, hub: &str, token: &str, id: &str) -> u16 {
    c.post(hub)
        .bearer_auth(token)
        .form(&[("topic", "t"), ("id", id)])
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// Reads events from `stream` until one with id `last` (included), failing after `limit`.
async fn read_until(
    stream: &mut quicksilver_testkit::SseStream,
    last: &str,
    limit: Duration,
) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut ids = Vec::new();
    while Instant::now() < deadline {
        match stream.next_event(WAIT).await {
            Ok(e) => {
                let id = e.id.unwrap_or_default();
                let done = id == last;
                ids.push(id);
                if done {
                    return ids;
                }
            }
            Err(e) => panic!(
                "stream ended or stalled before {last} ({} read): {e}",
                ids.len()
            ),
        }
    }
    panic!("{last} not received within {limit:?} ({} read)", ids.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_joining_a_history_scan_in_flight_misses_nothing() {
    let redis = RedisServer::start();
    // A tiny tail cache sends resumes to Redis, and a large maximum body makes every scan command
    // fetch one entry, so a scan of the history lasts long enough for a second subscriber to join
    // it while updates keep coming.
    let hub = node(
        &redis.url(),
        &[
            "--history-size",
            "5000",
            "--history-cache-size",
            "5",
            "--max-body-size",
            "67108864",
            "--redis-timeout",
            "5s",
        ],
    );
    let c = reqwest::Client::new();
    wait_ready(&c, &hub).await;
    let token = mercure_token(KEY, &["*"], &[], None);
    for i in 0..3_000 {
        let (status, _) = publish(
            &c,
            &hub.mercure_url(),
            &token,
            &[("topic", "t"), ("id", &format!("h{i}"))],
        )
        .await;
        assert_eq!(status, 200);
    }
    // Updates keep arriving while the subscribers resume.
    let publisher = {
        let (c, url, token) = (c.clone(), hub.mercure_url(), token.clone());
        tokio::spawn(async move {
            for i in 0..200 {
                assert_eq!(publish_t(&c, &url, &token, &format!("l{i}")).await, 200);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let url = format!("{}?topic=t", hub.mercure_url());
    let resume = |delay: u64| {
        let url = url.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let mut stream = SseClient::new()
                .open(&url, &[("Last-Event-ID", "h10")])
                .await
                .unwrap_or_else(|e| panic!("resume: {e}"));
            assert_eq!(
                stream
                    .headers()
                    .get("last-event-id")
                    .and_then(|v| v.to_str().ok()),
                Some("h10")
            );
            read_until(&mut stream, "l199", Duration::from_secs(60)).await
        })
    };
    let (first, second) = (resume(0), resume(300));
    let want: Vec<String> = (11..3_000)
        .map(|i| format!("h{i}"))
        .chain((0..200).map(|i| format!("l{i}")))
        .collect();
    for (name, subscriber) in [("first", first), ("second", second)] {
        let got = subscriber.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(
            got == want,
            "the {name} subscriber got {} updates, not the {} after h10 once and in order",
            got.len(),
            want.len()
        );
    }
    publisher.await.unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_published_moments_ago_through_another_node_is_found_not_called_unknown() {
    let redis = RedisServer::start();
    let a = node(&redis.url(), &[]);
    // B hands a busy topic over once a second: its reader is up to a second behind.
    let b = node(
        &redis.url(),
        &["--redis-batch-window", "1s", "--redis-timeout", "3s"],
    );
    let c = reqwest::Client::new();
    wait_ready(&c, &a).await;
    wait_ready(&c, &b).await;
    let token = mercure_token(KEY, &["*"], &[], None);
    let mut on_a = SseClient::new()
        .open(&format!("{}?topic=t", a.mercure_url()), &[])
        .await
        .unwrap_or_else(|e| panic!("subscribe: {e}"));
    for id in ["p1", "p2", "p3"] {
        let (status, _) =
            publish(&c, &a.mercure_url(), &token, &[("topic", "t"), ("id", id)]).await;
        assert_eq!(status, 200);
    }
    assert_eq!(read_until(&mut on_a, "p3", WAIT).await, ["p1", "p2", "p3"]);
    // The client moves to B at once, with the id it just got from A.
    let mut on_b = SseClient::new()
        .open(
            &format!("{}?topic=t", b.mercure_url()),
            &[("Last-Event-ID", "p3")],
        )
        .await
        .unwrap_or_else(|e| panic!("resume: {e}"));
    assert_eq!(
        on_b.headers()
            .get("last-event-id")
            .and_then(|v| v.to_str().ok()),
        Some("p3"),
        "the id was known to the cluster: it must be found, not answered with earliest"
    );
    let (status, _) = publish(
        &c,
        &a.mercure_url(),
        &token,
        &[("topic", "t"), ("id", "p4")],
    )
    .await;
    assert_eq!(status, 200);
    // Nothing it already had comes again.
    assert_eq!(read_until(&mut on_b, "p4", 3 * WAIT).await, ["p4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_subscriptions_of_a_killed_node_are_reaped_once_and_completely() {
    let redis = RedisServer::start();
    // Announcing 20,000 subscriptions at once is not what is tested here: no pace, and room in
    // the events' history for the whole burst on this 2-core machine.
    let mut victim = node(
        &redis.url(),
        &[
            "--subscriptions",
            "--subscription-lease",
            "1s",
            "--subscription-event-rate",
            "0",
            "--subscription-event-history",
            "50000",
        ],
    );
    let survivor = node(
        &redis.url(),
        &[
            "--subscriptions",
            "--subscription-lease",
            "1s",
            "--subscription-event-rate",
            "0",
            "--subscription-event-history",
            "50000",
            "--subscriber-queue",
            "100000",
        ],
    );
    let c = reqwest::Client::new();
    wait_ready(&c, &victim).await;
    wait_ready(&c, &survivor).await;
    let template = "/.well-known/mercure/subscriptions/{topic}/{subscriber}";
    let token = mercure_token(KEY, &[], &[template], None);
    let bearer = format!("Bearer {token}");
    let mut watcher = SseClient::new()
        .open(
            &format!(
                "{}?topic={}",
                survivor.mercure_url(),
                "%2F.well-known%2Fmercure%2Fsubscriptions%2F%7Btopic%7D%2F%7Bsubscriber%7D"
            ),
            &[("Authorization", bearer.as_str())],
        )
        .await
        .unwrap_or_else(|e| panic!("watcher: {e}"));
    // 200 connections of 100 topics each on the node about to die.
    let mut connections = Vec::new();
    for batch in 0..10 {
        let opens = (0..20).map(|i| {
            let n = batch * 20 + i;
            let query: Vec<String> = (0..100).map(|t| format!("topic=c{n}-t{t}")).collect();
            let url = format!("{}?{}", victim.mercure_url(), query.join("&"));
            async move {
                SseClient::new()
                    .open(&url, &[])
                    .await
                    .unwrap_or_else(|e| panic!("connection {n}: {e}"))
            }
        });
        connections.extend(futures_util::future::join_all(opens).await);
    }
    let mut active = std::collections::HashSet::new();
    let mut inactive = std::collections::HashMap::<String, u32>::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut killed = false;
    while inactive.len() < 20_000 {
        assert!(
            Instant::now() < deadline,
            "{} of 20,000 subscriptions announced, {} reaped",
            active.len(),
            inactive.len()
        );
        if !killed && active.len() == 20_000 {
            victim.kill();
            killed = true;
        }
        let event = watcher.next_event(3 * WAIT).await.unwrap_or_else(|e| {
            panic!(
                "watcher: {e}; survivor said:\n{}",
                survivor.stderr_lines().join("\n")
            )
        });
        let doc: serde_json::Value = serde_json::from_str(&event.data).unwrap_or_default();
        let id = doc["id"].as_str().unwrap_or_default().to_string();
        if !id.contains("/c") {
            continue; // the watcher's own subscription
        }
        if doc["active"] == true {
            active.insert(id);
        } else {
            *inactive.entry(id).or_default() += 1;
        }
    }
    drop(connections);
    assert!(inactive.keys().all(|id| active.contains(id)));
    // Once each: no end comes twice.
    let again = watcher.next_event(Duration::from_secs(3)).await;
    assert!(
        again.is_err() || !again.as_ref().is_ok_and(|e| e.data.contains("/c")),
        "an end came twice: {again:?}"
    );
    assert!(inactive.values().all(|&n| n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_events_are_paced_and_a_subscription_past_the_patience_is_refused() {
    let hub = HubProcess::spawn(
        BIN,
        &[
            "--jwt-key",
            KEY,
            "--anonymous",
            "--subscriptions",
            "--subscription-event-rate",
            "10",
        ],
    );
    let c = reqwest::Client::new();
    wait_ready(&c, &hub).await;
    // Two topics: four events, within the burst of ten.
    let small = c
        .get(format!("{}?topic=a&topic=b", hub.mercure_url()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(small.status(), 200);
    // A hundred topics: 200 events, 20 s at ten a second, past the 10 s patience.
    let query: Vec<String> = (0..100).map(|t| format!("topic=t{t}")).collect();
    let big = c
        .get(format!("{}?{}", hub.mercure_url(), query.join("&")))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(big.status(), 503);
    assert!(big.headers().contains_key("retry-after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_failing_over_under_load_loses_nothing_silently() {
    failover_under_load(&["--redis-partitions", "3"]).await;
}

/// The same with partitions sharing hash slots: each node reads two partitions per slot over one
/// connection, through the failover and the crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_failing_over_under_load_with_shared_slots_loses_nothing_silently() {
    failover_under_load(&["--redis-partitions", "6", "--redis-partition-slots", "3"]).await;
}

/// Two nodes over a 3-master cluster with replicas, `partitioning` on top of the common flags:
/// a graceful failover, then a master killed, under publishing; every acknowledged update reaches
/// every follower, or it was told.
async fn failover_under_load(partitioning: &[&str]) {
    let mut cluster = quicksilver_testkit::RedisCluster::start_with_replicas(3, 1);
    let seeds = cluster.urls().join(",");
    let mut extra = vec!["--redis-cluster"];
    extra.extend_from_slice(partitioning);
    extra.extend_from_slice(&["--redis-timeout", "2s", "--history-size", "100000"]);
    let hubs: Vec<HubProcess> = (0..2).map(|_| node(&seeds, &extra)).collect();
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    for hub in &hubs {
        wait_ready(&c, hub).await;
    }
    let urls: Vec<String> = hubs.iter().map(HubProcess::mercure_url).collect();
    let mut followers = Vec::new();
    for i in 0..4 {
        followers.push(
            Follower::start(
                urls.clone(),
                i % 2,
                "topic=https%3A%2F%2Fex.com%2Ft%2F%7Bn%7D",
            )
            .await,
        );
    }
    let token = mercure_token(KEY, &["*"], &[], None);
    let acked = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let publishing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let publisher = {
        let (c, urls, token, acked, publishing) = (
            c.clone(),
            urls.clone(),
            token.clone(),
            acked.clone(),
            publishing.clone(),
        );
        tokio::spawn(async move {
            let mut seq = 0u64;
            while publishing.load(std::sync::atomic::Ordering::Relaxed) {
                seq += 1;
                let topic = format!("https://ex.com/t/{}", seq % 6);
                let status = c
                    .post(&urls[seq as usize % 2])
                    .bearer_auth(&token)
                    .form(&[("topic", topic.as_str()), ("id", &seq.to_string())])
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16());
                if status == 200 {
                    acked.lock().push(seq);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // Each phase lasts until enough more publishes were acknowledged, not a
    // fixed time: a busy machine publishes slower, and the test is about what
    // happens to acknowledged updates, not how many there are.
    let acked_since = |from: u64, topic: u64| {
        acked
            .lock()
            .iter()
            .filter(|&&seq| seq > from && seq % 6 == topic)
            .count()
    };
    let every_topic_acked = async |from: u64, phase: &str| {
        let what = format!("twenty acknowledged publishes to each topic {phase}");
        wait_until(&what, Duration::from_secs(90), async || {
            (0..6).all(|topic| acked_since(from, topic) >= 20)
        })
        .await;
    };
    let last_acked = || acked.lock().last().copied().unwrap_or(0);
    every_topic_acked(0, "before the failover").await;
    // A graceful failover: a replica takes over its master's slots.
    let replica = cluster.replicas()[0];
    // The command only starts the failover, and Redis gives it up silently when the replica does
    // not catch up with its paused master within its own timeout (a busy machine): asked again
    // until it is done, since the crash below must find it finished (a master killed while its
    // replica takes over from it would leave its slots to nobody).
    let mut attempts = 0;
    while !cluster.masters().contains(&replica) {
        attempts += 1;
        assert!(
            attempts <= 6,
            "the replica never took over its master's slots"
        );
        let _: String = cluster.nodes()[replica]
            .query(&["CLUSTER", "FAILOVER"])
            .unwrap_or_else(|e| panic!("failover: {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && !cluster.masters().contains(&replica) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    wait_until(
        "the cluster to be whole after the failover",
        Duration::from_secs(60),
        async || cluster.is_whole(),
    )
    .await;
    every_topic_acked(last_acked(), "after the failover").await;
    // A crash: a master dies; its replica is promoted once the cluster sees it
    // gone. Every topic (so every partition) publishes again only after that.
    // A master that did not just change hands, and so has a replica that follows it.
    let victim = cluster
        .masters()
        .into_iter()
        .find(|&m| m != replica && cluster.has_online_replica(m))
        .unwrap_or_else(|| panic!("no other master with a replica"));
    cluster.nodes_mut()[victim].kill();
    every_topic_acked(last_acked(), "after the crash").await;
    publishing.store(false, std::sync::atomic::Ordering::Relaxed);
    publisher.await.unwrap_or_else(|e| panic!("{e}"));
    let acked = acked.lock().clone();
    // Every follower gets every acknowledged update, or was told it may have missed some.
    let settle = Instant::now() + Duration::from_secs(30);
    while Instant::now() < settle
        && !followers.iter().all(|f| {
            let got: std::collections::HashSet<u64> = f.received().into_iter().collect();
            acked.iter().all(|a| got.contains(a))
        })
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut summary = Vec::new();
    for f in followers {
        let Followed {
            received: got,
            told,
            ..
        } = f.stop().await;
        let set: std::collections::HashSet<u64> = got.iter().copied().collect();
        let missing = acked.iter().filter(|a| !set.contains(a)).count();
        let duplicates = got.len() - set.len();
        summary.push(format!(
            "acknowledged {}, delivered {}, missing {missing}, duplicates {duplicates}, told {told}",
            acked.len(),
            set.len()
        ));
        assert!(
            missing == 0 || told > 0,
            "{missing} acknowledged updates missing and the subscriber was never told"
        );
    }
    eprintln!("failover under load:\n{}", summary.join("\n"));
}
