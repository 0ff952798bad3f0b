//! The Redis limiter against real `redis-server` processes (each test its own, on a free port),
//! each limiter on its own transport as on its own node: a rate's burst is shared by the cluster
//! and refills, rate keys expire when idle, connection caps hold across nodes and free up when a
//! connection closes, when a node says goodbye and when a dead node's lease expires; counts are
//! written again after Redis loses them; it all works on a 3-master Redis Cluster.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use quicksilver_testkit::{wait_until, RedisCluster, RedisServer};
use quicksilver_transport::limits::redis::LimiterOptions;
use quicksilver_transport::{
    Admission, CapExceeded, ConnectionCap, ConnectionSlot, Limiter, Rate, RateDecision,
    RedisConfig, RedisLimiter, RedisTransport, TransportError,
};

/// Upper bound on any single test.
const TEST_LIMIT: Duration = Duration::from_secs(60);
/// Upper bound on waiting for something that should happen promptly.
const WAIT: Duration = Duration::from_secs(15);
/// Short leases so deaths are noticed quickly.
const LEASE: Duration = Duration::from_millis(600);

async fn bounded<F: Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_LIMIT, test)
        .await
        .expect("test exceeded its time limit");
}

/// A limiter with its own transport (as on its own node).
fn node(urls: &[String], id: &str) -> (RedisTransport, Arc<RedisLimiter>) {
    let transport = RedisTransport::new(RedisConfig {
        urls: urls.to_vec(),
        command_timeout: Duration::from_millis(500),
        ..RedisConfig::default()
    })
    .expect("valid config");
    let limiter = transport.limiter(LimiterOptions {
        node_id: id.into(),
        lease_ttl: LEASE,
    });
    (transport, limiter)
}

fn per_second(n: u64, burst: u32) -> Rate {
    Rate {
        interval: Duration::from_micros(1_000_000 / n),
        burst,
    }
}

async fn admit(
    limiter: &dyn Limiter,
    key: &str,
    matchers: u32,
    cap: ConnectionCap,
) -> ConnectionSlot {
    match limiter.acquire(key, matchers, cap).await {
        Ok(Admission::Admitted(slot)) => slot,
        other => panic!("expected an admission for {key}, got {other:?}"),
    }
}

/// Connections a test keeps open while it waits for a place.
#[derive(Default)]
struct Kept(std::sync::Mutex<Vec<ConnectionSlot>>);

impl Kept {
    /// Whether `limiter` admitted a connection (then kept open).
    async fn admit(
        &self,
        limiter: &dyn Limiter,
        key: &str,
        matchers: u32,
        cap: ConnectionCap,
    ) -> bool {
        match limiter.acquire(key, matchers, cap).await {
            Ok(Admission::Admitted(slot)) => {
                self.0.lock().unwrap().push(slot);
                true
            }
            _ => false,
        }
    }
}

async fn refused(
    limiter: &dyn Limiter,
    key: &str,
    matchers: u32,
    cap: ConnectionCap,
) -> Option<CapExceeded> {
    match limiter.acquire(key, matchers, cap).await {
        Ok(Admission::Refused(which)) => Some(which),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_used_on_one_node_is_refused_on_another_and_refills() {
    let server = RedisServer::start();
    let urls = vec![server.url()];
    bounded(async {
        let (_ta, a) = node(&urls, "a");
        let (_tb, b) = node(&urls, "b");
        // One event every 400 ms, bursts of 5.
        let rate = Rate {
            interval: Duration::from_millis(400),
            burst: 5,
        };
        for _ in 0..5 {
            assert_eq!(
                a.check_rate("r:s:alice", rate).await.unwrap(),
                RateDecision::Allowed
            );
        }
        let RateDecision::Limited { retry_after } = b.check_rate("r:s:alice", rate).await.unwrap()
        else {
            panic!("the burst used on a is used up on b");
        };
        assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_millis(400));
        // Asked again before the wait is over, b answers by itself: no round trip.
        let calls = |server: &RedisServer| -> u64 {
            let info: String = server.query(&["INFO", "commandstats"]).unwrap();
            info.lines()
                .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
                .and_then(|l| l.split(',').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        let before = calls(&server);
        assert!(matches!(
            b.check_rate("r:s:alice", rate).await.unwrap(),
            RateDecision::Limited { .. }
        ));
        assert_eq!(calls(&server), before);
        assert_eq!(b.stats().local_refusals, 1);
        // Another key, its own burst.
        assert_eq!(
            b.check_rate("r:s:bob", rate).await.unwrap(),
            RateDecision::Allowed
        );
        // The key lives no longer than it takes to go idle (five intervals).
        let ttl: i64 = server.query(&["PTTL", &a.rate_key("r:s:alice")]).unwrap();
        assert!(ttl > 0 && ttl <= 2_000, "PTTL {ttl}");
        // Refills at the sustained rate: one more after `retry_after`, on either node.
        tokio::time::sleep(retry_after).await;
        wait_until("the rate refills", WAIT, async || {
            b.check_rate("r:s:alice", rate).await.unwrap() == RateDecision::Allowed
        })
        .await;
        assert!(matches!(
            a.check_rate("r:s:alice", rate).await.unwrap(),
            RateDecision::Limited { .. }
        ));
        // Idle keys vanish from Redis.
        wait_until("idle rate keys expire", WAIT, async || {
            server
                .query::<i64>(&["EXISTS", &a.rate_key("r:s:alice")])
                .unwrap()
                == 0
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_hold_across_nodes_and_free_up() {
    let server = RedisServer::start();
    let urls = vec![server.url()];
    bounded(async {
        let (_ta, a) = node(&urls, "a");
        let (_tb, b) = node(&urls, "b");
        let (tc, c) = node(&urls, "c");
        let kept = Kept::default();
        let cap = ConnectionCap {
            max_connections: Some(3),
            max_matchers: Some(10),
        };
        let a1 = admit(a.as_ref(), "s:alice", 2, cap).await;
        let a2 = admit(a.as_ref(), "s:alice", 2, cap).await;
        let c1 = admit(c.as_ref(), "s:alice", 2, cap).await;
        assert_eq!(
            refused(b.as_ref(), "s:alice", 1, cap).await,
            Some(CapExceeded::Connections)
        );
        // Another key is not affected.
        let _bob = admit(b.as_ref(), "s:bob", 1, cap).await;

        // One closes on a: b may open one.
        drop(a1);
        wait_until("a's closed connection stops counting", WAIT, async || {
            kept.admit(b.as_ref(), "s:alice", 2, cap).await
        })
        .await;
        // Now 3 connections (a2, c1, the forgotten one on b) holding 6 matchers.
        assert_eq!(
            refused(a.as_ref(), "s:alice", 1, cap).await,
            Some(CapExceeded::Connections)
        );

        // c dies without a goodbye: its connection counts until its lease expires.
        std::mem::forget(c1);
        drop(c);
        drop(tc);
        wait_until(
            "the dead node's connections stop counting",
            WAIT,
            async || kept.admit(a.as_ref(), "s:alice", 1, cap).await,
        )
        .await;

        // a says goodbye: a2 and the one forgotten on a stop counting at once.
        a.close().await;
        let b1 = admit(b.as_ref(), "s:alice", 2, cap).await;
        let _b2 = admit(b.as_ref(), "s:alice", 2, cap).await;
        assert_eq!(
            refused(b.as_ref(), "s:alice", 1, cap).await,
            Some(CapExceeded::Connections)
        );
        drop(a2);
        assert!(matches!(
            a.acquire("s:alice", 1, cap).await,
            Err(TransportError::Closed)
        ));
        drop(b1);
        // The dead node's counts are swept away.
        wait_until("the dead node is swept", WAIT, async || {
            server
                .query::<i64>(&["EXISTS", "{quicksilver:limits}:node:c"])
                .unwrap()
                == 0
                && server
                    .query::<i64>(&["SISMEMBER", "{quicksilver:limits}:nodes", "c"])
                    .unwrap()
                    == 0
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matchers_are_capped_cluster_wide() {
    let server = RedisServer::start();
    let urls = vec![server.url()];
    bounded(async {
        let (_ta, a) = node(&urls, "a");
        let (_tb, b) = node(&urls, "b");
        let kept = Kept::default();
        let cap = ConnectionCap {
            max_connections: None,
            max_matchers: Some(5),
        };
        let a1 = admit(a.as_ref(), "s:alice", 3, cap).await;
        assert_eq!(
            refused(b.as_ref(), "s:alice", 3, cap).await,
            Some(CapExceeded::Matchers)
        );
        let b1 = admit(b.as_ref(), "s:alice", 2, cap).await;
        assert_eq!(
            refused(a.as_ref(), "s:alice", 1, cap).await,
            Some(CapExceeded::Matchers)
        );
        drop(a1);
        wait_until("matchers given back", WAIT, async || {
            kept.admit(b.as_ref(), "s:alice", 3, cap).await
        })
        .await;
        drop(b1);
        // Fields that reach zero are dropped: the hash only holds keys with connections.
        wait_until("the freed key's fields are gone", WAIT, async || {
            let fields: Vec<String> = server
                .query(&["HKEYS", "{quicksilver:limits}:node:a"])
                .unwrap();
            fields.is_empty()
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_are_written_again_after_redis_loses_them() {
    let mut server = RedisServer::start();
    let urls = vec![server.url()];
    let (_ta, a) = node(&urls, "a");
    let (_tb, b) = node(&urls, "b");
    let cap = ConnectionCap {
        max_connections: Some(2),
        max_matchers: None,
    };
    let _a1 = admit(a.as_ref(), "s:alice", 1, cap).await;
    let _a2 = admit(a.as_ref(), "s:alice", 1, cap).await;
    // Redis restarts without persistence: every count is gone.
    server.restart();
    bounded(async {
        wait_until("a writes its counts again", WAIT, async || {
            a.stats().reregistrations >= 1
        })
        .await;
        wait_until("b sees a's connections again", WAIT, async || {
            refused(b.as_ref(), "s:alice", 1, cap).await == Some(CapExceeded::Connections)
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_is_an_error_not_a_decision() {
    let (_t, limiter) = node(&["redis://127.0.0.1:1".to_string()], "a");
    bounded(async {
        assert!(matches!(
            limiter.check_rate("r:s:alice", per_second(10, 1)).await,
            Err(TransportError::Unavailable(_))
        ));
        assert!(matches!(
            limiter
                .acquire("s:alice", 1, ConnectionCap::default())
                .await,
            Err(TransportError::Unavailable(_))
        ));
        assert!(limiter.stats().errors >= 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_on_a_three_master_cluster() {
    let cluster = RedisCluster::start(3);
    let urls = cluster.urls();
    bounded(async {
        let (_ta, a) = node(&urls, "a");
        let (_tb, b) = node(&urls, "b");
        let rate = per_second(1, 2);
        // Keys of many slots: every master runs the script.
        for i in 0..20 {
            let key = format!("r:s:user-{i}");
            assert_eq!(
                a.check_rate(&key, rate).await.unwrap(),
                RateDecision::Allowed
            );
            assert_eq!(
                b.check_rate(&key, rate).await.unwrap(),
                RateDecision::Allowed
            );
            assert!(matches!(
                a.check_rate(&key, rate).await.unwrap(),
                RateDecision::Limited { .. }
            ));
        }
        let kept = Kept::default();
        let cap = ConnectionCap {
            max_connections: Some(1),
            max_matchers: None,
        };
        let a1 = admit(a.as_ref(), "s:alice", 1, cap).await;
        assert_eq!(
            refused(b.as_ref(), "s:alice", 1, cap).await,
            Some(CapExceeded::Connections)
        );
        drop(a1);
        wait_until("the connection is given back", WAIT, async || {
            kept.admit(b.as_ref(), "s:alice", 1, cap).await
        })
        .await;
    })
    .await;
}
