//! Rate limits and connection caps (`[[rate_limit]]`, `[[connection_limit]]`) with real processes:
//! `quicksilver` nodes sharing a real `redis-server`, each reading its rules from a configuration
//! file, and a single node on the memory transport.
//!
//! What a client sees is checked: `429` with `Retry-After` over a limit, nothing stored for a
//! refused publish, a limit shared by every node, a connection count that goes down when a
//! connection closes, when its node shuts down and when its node dies (lease expiry), and rules
//! changed by `SIGHUP` without dropping open streams.

use std::path::{Path, PathBuf};
use std::time::Duration;

use quicksilver_testkit::hub::{metric, HubProcess};
use quicksilver_testkit::redis::RedisServer;
use quicksilver_testkit::sse::{SseClient, SseStream};
use quicksilver_testkit::token::{mercure_claims, sign_hs256};
use quicksilver_testkit::{poll_until, wait_until, TEST_JWT_KEY};
use rustix::process::{kill_process, Pid, Signal};

const BIN: &str = env!("CARGO_BIN_EXE_quicksilver");

/// Upper bound on waiting for something that should happen promptly.
const WAIT: Duration = Duration::from_secs(20);

/// A configuration file in its own temporary directory.
struct ConfigFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl ConfigFile {
    fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("hub.toml");
        std::fs::write(&path, text).expect("config file written");
        Self { _dir: dir, path }
    }

    fn path(&self) -> &str {
        self.path.to_str().expect("UTF-8 path")
    }

    fn rewrite(&self, text: &str) {
        std::fs::write(&self.path, text).expect("config file written");
    }
}

/// A node on `redis_url` reading `config`; `extra` flags last.
fn redis_node(redis_url: &str, config: &Path, extra: &[&str]) -> HubProcess {
    let mut args = vec![
        "--jwt-key",
        TEST_JWT_KEY,
        "--anonymous",
        "--transport",
        "redis",
        "--redis-url",
        redis_url,
        "--redis-timeout",
        "500ms",
        "--config",
        config.to_str().expect("UTF-8 path"),
    ];
    args.extend_from_slice(extra);
    HubProcess::spawn(BIN, &args)
}

/// A token for `sub` that may publish and subscribe everywhere, with `quota` when given.
fn token(sub: &str, quota: Option<&str>) -> String {
    let mut claims = mercure_claims(&["*"], &["*"], None);
    claims["sub"] = sub.into();
    if let Some(quota) = quota {
        claims["quota"] = quota.into();
    }
    sign_hs256(TEST_JWT_KEY, &claims)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// The answer to a publish: status, `Retry-After`, body.
struct Answer {
    status: u16,
    retry_after: Option<u64>,
    body: String,
}

async fn publish_from(
    c: &reqwest::Client,
    hub: &HubProcess,
    token: &str,
    id: &str,
    forwarded_for: Option<&str>,
) -> Answer {
    let mut request = c
        .post(hub.mercure_url())
        .bearer_auth(token)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("topic=t&id={id}&data={id}"));
    if let Some(address) = forwarded_for {
        request = request.header("X-Forwarded-For", address);
    }
    let response = request.send().await.expect("publish answered");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = response.text().await.unwrap_or_default();
    Answer {
        status,
        retry_after,
        body,
    }
}

async fn publish(c: &reqwest::Client, hub: &HubProcess, token: &str, id: &str) -> Answer {
    publish_from(c, hub, token, id, None).await
}

/// Opens a subscription to `topics` on `hub` with `token` (none: anonymous), any status.
async fn open(hub: &HubProcess, token: Option<&str>, topics: &[&str]) -> SseStream {
    let query: Vec<String> = topics.iter().map(|t| format!("topic={t}")).collect();
    let url = format!("{}?{}", hub.mercure_url(), query.join("&"));
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| vec![("Authorization", b)])
        .unwrap_or_default();
    SseClient::new()
        .open(&url, &headers)
        .await
        .unwrap_or_else(|e| panic!("subscribing to {url}: {e}"))
}

/// A subscription that must be accepted.
async fn subscribed(hub: &HubProcess, token: Option<&str>, topics: &[&str]) -> SseStream {
    let stream = open(hub, token, topics).await;
    assert_eq!(stream.status(), 200, "subscription accepted");
    stream
}

fn retry_after(stream: &SseStream) -> Option<u64> {
    stream.header("retry-after").and_then(|v| v.parse().ok())
}

/// Every update id the hub still holds for topic `t` (a subscriber resuming from `earliest`).
async fn stored_ids(hub: &HubProcess) -> Vec<String> {
    let mut stream = SseClient::new()
        .open(
            &format!("{}?topic=t", hub.mercure_url()),
            &[("Last-Event-ID", "earliest")],
        )
        .await
        .expect("history subscription");
    let mut ids = Vec::new();
    while let Ok(event) = stream.next_event(Duration::from_millis(500)).await {
        ids.extend(event.id);
    }
    ids
}

async fn counter(c: &reqwest::Client, hub: &HubProcess, series: &str) -> f64 {
    metric(c, hub.url(), series).await.unwrap_or(0.0)
}

fn sighup(hub: &HubProcess) {
    let pid = Pid::from_raw(hub.pid() as i32).expect("a live pid");
    kill_process(pid, Signal::HUP).expect("SIGHUP sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subjects_burst_used_on_one_node_is_refused_on_another_until_it_refills() {
    let redis = RedisServer::start();
    // One publish every 8 s, bursts of 3 (gold: far more).
    let config = ConfigFile::new(
        r#"
        [[rate_limit]]
        name = "gold"
        quota = "gold"
        rate = "1000/s"
        [[rate_limit]]
        name = "publishers"
        rate = "1/8s"
        burst = 3
        "#,
    );
    let a = redis_node(&redis.url(), &config.path, &[]);
    let b = redis_node(&redis.url(), &config.path, &[]);
    let c = http();
    let alice = token("alice", None);
    for i in 0..3 {
        let answer = publish(&c, &a, &alice, &format!("a{i}")).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let refused = publish(&c, &b, &alice, "refused").await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    let wait = refused.retry_after.expect("Retry-After");
    assert!((1..=8).contains(&wait), "Retry-After: {wait}");
    assert!(refused.body.contains("publishers"), "{}", refused.body);
    assert_eq!(publish(&c, &a, &alice, "refused-too").await.status, 429);

    // Another subject has its own burst; a gold token its own rule.
    assert_eq!(publish(&c, &b, &token("bob", None), "b0").await.status, 200);
    let gold = token("alice", Some("gold"));
    for i in 0..10 {
        assert_eq!(publish(&c, &b, &gold, &format!("g{i}")).await.status, 200);
    }

    // Nothing refused was stored.
    let ids = stored_ids(&b).await;
    assert!(ids.contains(&"a2".to_string()), "{ids:?}");
    assert!(!ids.iter().any(|id| id.starts_with("refused")), "{ids:?}");

    // The rate refills: one more publish fits after Retry-After, on either node.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let c2 = c.clone();
    wait_until("the rate refills", WAIT, async || {
        publish(&c2, &b, &alice, "later").await.status == 200
    })
    .await;
    assert_eq!(publish(&c, &a, &alice, "too-soon").await.status, 429);

    let refusals = "quicksilver_rate_limited_total{rule=\"publishers\",what=\"publish\"}";
    assert!(counter(&c, &a, refusals).await >= 1.0);
    assert!(counter(&c, &b, refusals).await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_limits_count_every_client_of_one_address_together() {
    let redis = RedisServer::start();
    let config = ConfigFile::new(
        r#"
        [[rate_limit]]
        name = "anonymous"
        anonymous = true
        per = "address"
        rate = "1/min"
        burst = 2
        requests = ["subscribe"]
        [[rate_limit]]
        name = "per-address"
        per = "address"
        rate = "1/min"
        burst = 2
        "#,
    );
    // Requests come through a trusted proxy (127.0.0.1): the address is the forwarded one.
    let proxied = ["--trusted-proxies", "127.0.0.1/32"];
    let a = redis_node(&redis.url(), &config.path, &proxied);
    let b = redis_node(&redis.url(), &config.path, &proxied);
    let c = http();
    let from = |ip| Some(ip);
    // Two subjects from one address share its burst, on any node.
    assert_eq!(
        publish_from(&c, &a, &token("alice", None), "x1", from("203.0.113.7"))
            .await
            .status,
        200
    );
    assert_eq!(
        publish_from(&c, &b, &token("bob", None), "x2", from("203.0.113.7"))
            .await
            .status,
        200
    );
    let refused = publish_from(&c, &a, &token("carol", None), "x3", from("203.0.113.7")).await;
    assert_eq!(refused.status, 429);
    assert!(refused.retry_after.is_some_and(|s| (1..=60).contains(&s)));
    // Another address, its own burst; IPv6 counts by its /64.
    assert_eq!(
        publish_from(&c, &b, &token("carol", None), "x4", from("203.0.113.8"))
            .await
            .status,
        200
    );
    for (i, ip) in ["2001:db8::1", "2001:db8::2"].into_iter().enumerate() {
        let answer = publish_from(&c, &a, &token("dan", None), &format!("v{i}"), from(ip)).await;
        assert_eq!(answer.status, 200);
    }
    let same_64 = publish_from(&c, &b, &token("erin", None), "v2", from("2001:db8::ffff")).await;
    assert_eq!(same_64.status, 429);

    // Anonymous subscription requests by address: two, then 429 on either node.
    let sse = SseClient::new();
    let url = |hub: &HubProcess| format!("{}?topic=t", hub.mercure_url());
    let anonymous_from = [("X-Forwarded-For", "198.51.100.1")];
    let _s1 = sse.open(&url(&a), &anonymous_from).await.unwrap();
    let s2 = sse.open(&url(&b), &anonymous_from).await.unwrap();
    assert_eq!(s2.status(), 200);
    let s3 = sse.open(&url(&a), &anonymous_from).await.unwrap();
    assert_eq!(s3.status(), 429);
    assert!(retry_after(&s3).is_some());
    // Subscribers with a token do not match the anonymous rule (and no other rule counts them).
    let bearer = format!("Bearer {}", token("alice", None));
    for _ in 0..3 {
        let s = sse
            .open(
                &url(&b),
                &[
                    ("X-Forwarded-For", "198.51.100.1"),
                    ("Authorization", &bearer),
                ],
            )
            .await
            .unwrap();
        assert_eq!(s.status(), 200);
    }
    let series = "quicksilver_rate_limited_total{rule=\"anonymous\",what=\"subscribe\"}";
    assert_eq!(counter(&c, &a, series).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cap_holds_across_nodes_and_frees_up_when_connections_close_or_their_node_dies(
) {
    let redis = RedisServer::start();
    let config = ConfigFile::new(
        r#"
        [[connection_limit]]
        name = "default"
        max_connections = 2
        retry_after = "7s"
        "#,
    );
    // Short leases: a dead node's connections stop counting after a second.
    let lease = ["--subscription-lease", "1s"];
    let mut a = redis_node(&redis.url(), &config.path, &lease);
    let b = redis_node(&redis.url(), &config.path, &lease);
    let alice = token("alice", None);
    let a1 = subscribed(&a, Some(&alice), &["t"]).await;
    let a2 = subscribed(&a, Some(&alice), &["t"]).await;
    let refused = open(&b, Some(&alice), &["t"]).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(retry_after(&refused), Some(7));
    // Others are not affected, and the open streams still deliver.
    let _bob = subscribed(&b, Some(&token("bob", None)), &["t"]).await;
    let _anonymous = subscribed(&b, None, &["t"]).await;

    // One closes on A: B admits one.
    drop(a1);
    let mut on_b = None;
    wait_until("a closed connection stops counting", WAIT, async || {
        let stream = open(&b, Some(&alice), &["t"]).await;
        let admitted = stream.status() == 200;
        if admitted {
            on_b = Some(stream);
        }
        admitted
    })
    .await;
    assert_eq!(open(&b, Some(&alice), &["t"]).await.status(), 429);

    // A dies with a2 open: once its lease expires, its connection no longer counts.
    a.kill();
    drop(a2);
    let mut second_on_b = None;
    wait_until(
        "a dead node's connections stop counting",
        WAIT,
        async || {
            let stream = open(&b, Some(&alice), &["t"]).await;
            let admitted = stream.status() == 200;
            if admitted {
                second_on_b = Some(stream);
            }
            admitted
        },
    )
    .await;
    assert_eq!(open(&b, Some(&alice), &["t"]).await.status(), 429);
    let c = http();
    let series = "quicksilver_connection_limited_total{rule=\"default\",what=\"connections\"}";
    assert!(counter(&c, &b, series).await >= 3.0);
    // The streams admitted on B are live.
    let mut stream = on_b.expect("admitted");
    assert_eq!(publish(&c, &b, &alice, "live").await.status, 200);
    let event = stream.next_event(WAIT).await.expect("a live update");
    assert_eq!(event.id.as_deref(), Some("live"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_takes_its_connections_out_of_the_count_at_once() {
    let redis = RedisServer::start();
    let config = ConfigFile::new("[[connection_limit]]\nname = \"default\"\nmax_connections = 1\n");
    // A lease far longer than the wait: only the goodbye can free the count in time.
    let lease = ["--subscription-lease", "5m", "--drain-window", "100ms"];
    let mut a = redis_node(&redis.url(), &config.path, &lease);
    let b = redis_node(&redis.url(), &config.path, &lease);
    let alice = token("alice", None);
    let _held = subscribed(&a, Some(&alice), &["t"]).await;
    assert_eq!(open(&b, Some(&alice), &["t"]).await.status(), 429);
    a.terminate(WAIT).expect("a graceful exit");
    let admitted = poll_until(WAIT, async || {
        open(&b, Some(&alice), &["t"]).await.status() == 200
    })
    .await;
    assert!(admitted, "the shut-down node's connection still counts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matchers_are_capped_per_subject_across_nodes() {
    let redis = RedisServer::start();
    let config = ConfigFile::new("[[connection_limit]]\nname = \"selectors\"\nmax_matchers = 4\n");
    let a = redis_node(&redis.url(), &config.path, &[]);
    let b = redis_node(&redis.url(), &config.path, &[]);
    let alice = token("alice", None);
    let first = subscribed(&a, Some(&alice), &["t1", "t2", "t3"]).await;
    let refused = open(&b, Some(&alice), &["t4", "t5"]).await;
    assert_eq!(refused.status(), 429);
    let _fits = subscribed(&b, Some(&alice), &["t4"]).await;
    drop(first);
    let c = http();
    wait_until("matchers given back", WAIT, async || {
        open(&b, Some(&alice), &["t1", "t2", "t3"]).await.status() == 200
    })
    .await;
    // One refusal above, and any while the release was on its way.
    let series = "quicksilver_connection_limited_total{rule=\"selectors\",what=\"matchers\"}";
    assert!(counter(&c, &b, series).await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_transport_limits_rates_and_connections_in_process() {
    let config = ConfigFile::new(
        r#"
        [[rate_limit]]
        name = "publishers"
        rate = "1/4s"
        burst = 2
        [[connection_limit]]
        name = "default"
        anonymous = false
        max_connections = 1
        "#,
    );
    let hub = HubProcess::spawn(
        BIN,
        &[
            "--jwt-key",
            TEST_JWT_KEY,
            "--anonymous",
            "--config",
            config.path(),
        ],
    );
    let c = http();
    let alice = token("alice", None);
    assert_eq!(publish(&c, &hub, &alice, "m1").await.status, 200);
    assert_eq!(publish(&c, &hub, &alice, "m2").await.status, 200);
    let refused = publish(&c, &hub, &alice, "m3").await;
    assert_eq!(refused.status, 429);
    assert!(refused.retry_after.is_some_and(|s| (1..=4).contains(&s)));
    let c2 = c.clone();
    wait_until("the rate refills", WAIT, async || {
        publish(&c2, &hub, &alice, "m4").await.status == 200
    })
    .await;
    assert!(!stored_ids(&hub).await.contains(&"m3".to_string()));
    assert!(counter(&c, &hub, "quicksilver_rate_limit_entries").await >= 1.0);

    let held = subscribed(&hub, Some(&alice), &["t"]).await;
    assert_eq!(open(&hub, Some(&alice), &["t"]).await.status(), 429);
    // Anonymous subscribers match no rule here.
    let _anonymous = subscribed(&hub, None, &["t"]).await;
    assert_eq!(
        counter(&c, &hub, "quicksilver_limited_connections").await,
        1.0
    );
    drop(held);
    wait_until("the closed connection is given back", WAIT, async || {
        open(&hub, Some(&alice), &["t"]).await.status() == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_limits_without_dropping_connections() {
    let redis = RedisServer::start();
    let before = r#"
        [[rate_limit]]
        name = "publishers"
        rate = "1/min"
        burst = 1
        [[connection_limit]]
        name = "default"
        max_connections = 1
        "#;
    let config = ConfigFile::new(before);
    let a = redis_node(&redis.url(), &config.path, &[]);
    let b = redis_node(&redis.url(), &config.path, &[]);
    let c = http();
    let alice = token("alice", None);
    let mut held = subscribed(&a, Some(&alice), &["t"]).await;
    assert_eq!(open(&b, Some(&alice), &["t"]).await.status(), 429);
    assert_eq!(publish(&c, &b, &alice, "r1").await.status, 200);
    assert_eq!(publish(&c, &b, &alice, "r2").await.status, 429);

    config.rewrite(
        r#"
        [[rate_limit]]
        name = "publishers"
        rate = "100/s"
        [[connection_limit]]
        name = "default"
        max_connections = 3
        "#,
    );
    for hub in [&a, &b] {
        sighup(hub);
    }
    for hub in [&a, &b] {
        wait_until("the reload", WAIT, async || {
            counter(&c, hub, "quicksilver_policy_reloads_total").await >= 1.0
        })
        .await;
    }
    // The raised caps apply at once, counting the connection already open.
    let _b1 = subscribed(&b, Some(&alice), &["t"]).await;
    let _b2 = subscribed(&b, Some(&alice), &["t"]).await;
    assert_eq!(open(&a, Some(&alice), &["t"]).await.status(), 429);
    // The new rate too (one publish a minute is gone).
    for i in 0..5 {
        assert_eq!(publish(&c, &b, &alice, &format!("n{i}")).await.status, 200);
    }
    // The stream opened before the reload is still there and delivers.
    let event = held
        .next_event(WAIT)
        .await
        .expect("the held stream delivers");
    assert_eq!(event.id.as_deref(), Some("r1"));

    // A file that does not compile is refused; the rules in force stay.
    config.rewrite("[[connection_limit]]\nname = \"bad name\"\n");
    sighup(&a);
    wait_until("the refused reload", WAIT, async || {
        counter(&c, &a, "quicksilver_policy_reload_failures_total").await >= 1.0
    })
    .await;
    assert_eq!(open(&a, Some(&alice), &["t"]).await.status(), 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limiter_that_cannot_answer_allows_or_refuses_as_each_rule_says() {
    let redis = RedisServer::start();
    // A Redis user that may do everything but run scripts by digest: the transport works, every
    // limiter call fails.
    let _: String = redis
        .query(&[
            "ACL", "SETUSER", "nolimits", "on", ">secret", "~*", "&*", "+@all", "-evalsha",
        ])
        .expect("ACL user created");
    let config = ConfigFile::new(
        r#"
        [[rate_limit]]
        name = "strict"
        subject = "carol"
        rate = "100/s"
        on_error = "refuse"
        [[rate_limit]]
        name = "lenient"
        rate = "100/s"
        [[connection_limit]]
        name = "strict-connections"
        subject = "carol"
        max_connections = 10
        on_error = "refuse"
        [[connection_limit]]
        name = "connections"
        max_connections = 10
        "#,
    );
    let hub = redis_node(
        &redis.url_with_user("nolimits", "secret"),
        &config.path,
        &[],
    );
    let c = http();
    let alice = token("alice", None);
    let carol = token("carol", None);
    assert_eq!(publish(&c, &hub, &alice, "allowed").await.status, 200);
    let refused = publish(&c, &hub, &carol, "refused").await;
    assert_eq!(refused.status, 503);
    assert!(refused.retry_after.is_some());
    let _stream = subscribed(&hub, Some(&alice), &["t"]).await;
    assert_eq!(open(&hub, Some(&carol), &["t"]).await.status(), 503);
    for (series, want) in [
        (
            "quicksilver_rate_limit_errors_total{rule=\"lenient\",outcome=\"allowed\"}",
            1.0,
        ),
        (
            "quicksilver_rate_limit_errors_total{rule=\"strict\",outcome=\"refused\"}",
            1.0,
        ),
        (
            "quicksilver_connection_limit_errors_total{rule=\"connections\",outcome=\"allowed\"}",
            1.0,
        ),
        (
            "quicksilver_connection_limit_errors_total{rule=\"strict-connections\",outcome=\"refused\"}",
            1.0,
        ),
    ] {
        assert_eq!(counter(&c, &hub, series).await, want, "{series}");
    }
    assert!(counter(&c, &hub, "quicksilver_limiter_errors_total").await >= 4.0);
}
