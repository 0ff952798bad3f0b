//! The Redis transport over TLS (`rediss://`) with an ACL user, against a real TLS-only
//! `redis-server` whose certificate is signed by a CA generated for the test: publish and subscribe
//! through the hub binary work, and a wrong password, or a CA the hub was not given, leave the hub
//! not ready with the reason in its log.

use std::time::Duration;

use quicksilver_testkit::hub::{is_ready, publish, HubProcess};
use quicksilver_testkit::redis::{query_url, RedisOptions, RedisServer};
use quicksilver_testkit::sse::SseClient;
use quicksilver_testkit::token::publisher_token;
use quicksilver_testkit::{http_client, poll_until, TEST_JWT_KEY};

const BIN: &str = env!("CARGO_BIN_EXE_quicksilver");
const USER: &str = "quicksilver";
const PASSWORD: &str = "s3cret-acl-password";

fn tls_redis() -> RedisServer {
    RedisServer::start_with(RedisOptions {
        tls: true,
        acl_users: vec![(USER.into(), PASSWORD.into())],
        default_user_off: true,
        ..RedisOptions::default()
    })
}

fn hub(redis_url: &str, extra: &[&str]) -> HubProcess {
    let mut args = vec![
        "--transport",
        "redis",
        "--redis-url",
        redis_url,
        "--jwt-key",
        TEST_JWT_KEY,
        "--anonymous",
        "--redis-timeout",
        "1s",
    ];
    args.extend_from_slice(extra);
    HubProcess::spawn(BIN, &args)
}

async fn becomes_ready(hub: &HubProcess, within: Duration) -> bool {
    let c = http_client();
    poll_until(within, async || is_ready(&c, hub.url()).await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_subscribe_over_tls_with_an_acl_user() {
    let redis = tls_redis();
    // The server really refuses plain clients.
    let plaintext = format!("redis://127.0.0.1:{}", redis.port());
    assert!(
        query_url::<String>(&plaintext, &["PING"]).is_err(),
        "no plaintext port"
    );
    let ca = redis.tls_ca_file().expect("CA file");
    let ca = ca.to_str().expect("utf-8 path");
    let url = redis.url_with_user(USER, PASSWORD);
    let a = hub(&url, &["--redis-tls-ca", ca]);
    let b = hub(&url, &["--redis-tls-ca", ca]);
    assert!(
        becomes_ready(&a, Duration::from_secs(20)).await,
        "node a ready"
    );
    assert!(
        becomes_ready(&b, Duration::from_secs(20)).await,
        "node b ready"
    );

    let mut stream = SseClient::new()
        .open(&format!("{}?topic=t", b.mercure_url()), &[])
        .await
        .expect("subscribe");
    assert_eq!(stream.status(), 200);
    let c = http_client();
    let token = publisher_token();
    let (status, _) = publish(&c, a.url(), &token, &[("topic", "t"), ("id", "over-tls")]).await;
    assert_eq!(status, 200);
    let event = stream
        .next_event(Duration::from_secs(10))
        .await
        .expect("delivered through Redis");
    assert_eq!(event.id.as_deref(), Some("over-tls"));
    // Stored in Redis by the ACL user, over TLS.
    let length: i64 = redis
        .query(&["XLEN", "quicksilver:updates"])
        .expect("XLEN over TLS");
    assert_eq!(length, 1);
    // Nothing of the password in the hub's output.
    let logged: Vec<String> = a.output();
    assert!(!logged.iter().any(|l| l.contains(PASSWORD)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_or_an_unknown_ca_leaves_the_hub_not_ready() {
    let redis = tls_redis();
    let ca = redis.tls_ca_file().expect("CA file");
    let ca = ca.to_str().expect("utf-8 path");

    let wrong_password = hub(&redis.url_with_user(USER, "wrong"), &["--redis-tls-ca", ca]);
    // Without the CA the server's certificate cannot be verified against the system roots.
    let unknown_ca = hub(&redis.url_with_user(USER, PASSWORD), &[]);
    // Plaintext to a TLS port.
    let plaintext = hub(
        &format!("redis://{USER}:{PASSWORD}@127.0.0.1:{}", redis.port()),
        &[],
    );
    for node in [&wrong_password, &unknown_ca, &plaintext] {
        assert!(
            !becomes_ready(node, Duration::from_secs(4)).await,
            "{} must not be ready",
            node.url()
        );
        // Publishing is refused with 503, never acknowledged.
        let c = http_client();
        let token = publisher_token();
        let (status, _) = publish(&c, node.url(), &token, &[("topic", "t")]).await;
        assert_eq!(status, 503);
    }
    let reason = |node: &HubProcess, needles: &[&str]| {
        let lines: Vec<String> = node.output();
        assert!(
            lines
                .iter()
                .any(|l| needles.iter().any(|n| l.to_lowercase().contains(n))),
            "expected one of {needles:?} in:\n{}",
            lines.join("\n")
        );
        assert!(
            !lines.iter().any(|l| l.contains(PASSWORD)),
            "password logged"
        );
    };
    reason(&wrong_password, &["authentication failed", "wrongpass"]);
    reason(&unknown_ca, &["certificate", "unknownissuer", "tls"]);

    // A CA file that does not exist stops the hub at start, naming it.
    let missing = HubProcess::try_spawn(
        BIN,
        &[
            "--transport",
            "redis",
            "--redis-url",
            &redis.url_with_user(USER, PASSWORD),
            "--redis-tls-ca",
            "/nonexistent/ca.pem",
        ],
        &[],
    );
    let message = match missing {
        Ok(_) => panic!("the hub started with a missing CA file"),
        Err(e) => e.to_string(),
    };
    assert!(message.contains("/nonexistent/ca.pem"), "{message}");

    // `#insecure` skips verification (for development only): the hub is ready without the CA.
    let insecure = hub(
        &format!("{}#insecure", redis.url_with_user(USER, PASSWORD)),
        &[],
    );
    assert!(becomes_ready(&insecure, Duration::from_secs(20)).await);
}
