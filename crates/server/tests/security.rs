//! Security over HTTP: legacy-generation JWT attacks (`alg: none`, HS/RS confusion, wrong key,
//! validity window, oversized tokens), the cookie CSRF origin check, CORS answering listed origins
//! only, and private updates never reaching a subscriber without a matching grant — live, on
//! replay, and across two nodes sharing one Redis.
//!
//! (The current protocol's `at+jwt` audience/issuer/type checks are tested in the auth crate; their
//! HTTP wiring is tested where it is built.)

mod common;

use std::time::Duration;

use common::*;
use quicksilver_testkit::hub::HubProcess;
use quicksilver_testkit::redis::RedisServer;
use quicksilver_testkit::sse::{SseClient, SseStream};
use quicksilver_testkit::token::{TEST_RSA_PRIVATE_PEM, TEST_RSA_PUBLIC_PEM};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_quicksilver");
const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

/// Unpadded base64url, for hand-made tokens.
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
        }
    }
    out
}

/// A token with any header and claims and a given signature part.
fn forged(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

fn everything() -> Value {
    json!({"mercure": {"publish": ["*"], "subscribe": ["*"]}})
}

fn hs256(secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("sign")
}

/// Status of a publish with `headers` and a body `topic=a`, and of a subscription with the same
/// headers.
async fn publish_and_subscribe_status(
    c: &reqwest::Client,
    hub: &TestHub,
    headers: &[(&str, &str)],
) -> (u16, u16) {
    let mut post = c.post(hub.hub_url()).header(FORM.0, FORM.1).body("topic=a");
    let mut get = c.get(format!("{}?topic=a", hub.hub_url()));
    for (k, v) in headers {
        post = post.header(*k, *v);
        get = get.header(*k, *v);
    }
    let published = post.send().await.expect("publish").status().as_u16();
    let subscribed = get.send().await.expect("subscribe").status().as_u16();
    (published, subscribed)
}

async fn bearer_status(c: &reqwest::Client, hub: &TestHub, token: &str) -> (u16, u16) {
    let auth = format!("Bearer {token}");
    publish_and_subscribe_status(c, hub, &[("Authorization", &auth)]).await
}

#[tokio::test]
async fn forged_expired_and_foreign_tokens_are_refused() {
    let hub = TestHub::start(&[]).await;
    let c = client();
    let valid = hs256(KEY.as_bytes(), &everything());
    let signature = valid.rsplit('.').next().expect("signature");

    // A token without exp is valid (the reference hub's tokens have none).
    assert_eq!(bearer_status(&c, &hub, &valid).await, (200, 200));

    let refused = [
        (
            "alg none, no signature",
            forged(&json!({"alg": "none", "typ": "JWT"}), &everything(), ""),
        ),
        (
            "alg None, a valid token's signature kept",
            forged(&json!({"alg": "None"}), &everything(), signature),
        ),
        (
            "alg nOnE",
            forged(&json!({"alg": "nOnE", "typ": "JWT"}), &everything(), ""),
        ),
        (
            "claims swapped under a valid signature",
            forged(
                &json!({"alg": "HS256", "typ": "JWT"}),
                &json!({"mercure": {"publish": ["*"], "subscribe": ["*"]}, "x": 1}),
                signature,
            ),
        ),
        (
            "HS384 with the right key",
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384),
                &everything(),
                &jsonwebtoken::EncodingKey::from_secret(KEY.as_bytes()),
            )
            .expect("sign"),
        ),
        (
            "wrong key",
            hs256(b"!ChangeThisMercureHubJWTSecretKey?", &everything()),
        ),
        (
            "expired",
            hs256(
                KEY.as_bytes(),
                &json!({"mercure": {"publish": ["*"], "subscribe": ["*"]}, "exp": now() - 120}),
            ),
        ),
        (
            "not yet valid",
            hs256(
                KEY.as_bytes(),
                &json!({"mercure": {"publish": ["*"], "subscribe": ["*"]}, "nbf": now() + 3600}),
            ),
        ),
        (
            "exp not a number",
            hs256(
                KEY.as_bytes(),
                &json!({"mercure": {"publish": ["*"], "subscribe": ["*"]}, "exp": "never"}),
            ),
        ),
        (
            "two parts",
            "eyJhbGciOiJIUzI1NiJ9.eyJtZXJjdXJlIjp7fX0".into(),
        ),
        ("not base64", "!!!.???.***".into()),
    ];
    for (what, token) in &refused {
        assert_eq!(bearer_status(&c, &hub, token).await, (401, 401), "{what}");
        // Wherever it is carried.
        let query = format!("{}?topic=a&authorization={}", hub.hub_url(), enc(token));
        let status = c.get(&query).send().await.expect("get").status();
        assert_eq!(status, 401, "{what} in the query");
        let cookie = format!("mercureAuthorization={token}");
        let status = c
            .get(format!("{}?topic=a", hub.hub_url()))
            .header("Cookie", &cookie)
            .send()
            .await
            .expect("get")
            .status();
        assert_eq!(status, 401, "{what} in the cookie");
    }
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused_by_an_rs256_hub() {
    let hub = TestHub::start(&[
        "--publisher-jwt-key",
        TEST_RSA_PUBLIC_PEM,
        "--publisher-jwt-alg",
        "RS256",
        "--subscriber-jwt-key",
        TEST_RSA_PUBLIC_PEM,
        "--subscriber-jwt-alg",
        "RS256",
    ])
    .await;
    let c = client();
    let genuine = quicksilver_testkit::token::sign_rs256(TEST_RSA_PRIVATE_PEM, &everything());
    assert_eq!(bearer_status(&c, &hub, &genuine).await, (200, 200));
    // The classic confusion: the public key (which attackers know) used as an HMAC secret.
    for secret in [
        TEST_RSA_PUBLIC_PEM.as_bytes(),
        TEST_RSA_PUBLIC_PEM.trim_end().as_bytes(),
    ] {
        let confused = hs256(secret, &everything());
        assert_eq!(bearer_status(&c, &hub, &confused).await, (401, 401));
    }
    // And a token signed with the shared --jwt-key the test hub also has: the role keys win.
    let shared = hs256(KEY.as_bytes(), &everything());
    assert_eq!(bearer_status(&c, &hub, &shared).await, (401, 401));
}

#[tokio::test]
async fn oversized_tokens_get_a_clear_4xx() {
    let hub = TestHub::start(&[]).await;
    let c = client();
    let claims = json!({
        "mercure": {"publish": ["*"], "subscribe": ["*"]},
        "padding": "p".repeat(24 * 1024),
    });
    let big = hs256(KEY.as_bytes(), &claims);
    let (published, subscribed) = bearer_status(&c, &hub, &big).await;
    for status in [published, subscribed] {
        assert!(
            [400, 401, 413, 431].contains(&status),
            "32 KiB token: {status}"
        );
    }
    let huge = format!("Bearer {}", "a".repeat(1024 * 1024));
    let (published, subscribed) =
        publish_and_subscribe_status(&c, &hub, &[("Authorization", &huge)]).await;
    assert_eq!((published, subscribed), (431, 431), "1 MiB header");
    let query = format!("{}?topic=a&authorization={}", hub.hub_url(), big);
    let status = c.get(&query).send().await.expect("get").status().as_u16();
    assert!(
        [400, 401, 413, 414, 431].contains(&status),
        "32 KiB query token: {status}"
    );
    let cookie = format!("mercureAuthorization={big}");
    let (_, subscribed) = publish_and_subscribe_status(&c, &hub, &[("Cookie", &cookie)]).await;
    assert!(
        [400, 401, 413, 431].contains(&subscribed),
        "32 KiB cookie: {subscribed}"
    );
}

#[tokio::test]
async fn query_tokens_follow_the_legacy_rules_for_publishing() {
    // The pre-standardization protocol (and the reference hub) accepts the `authorization` query
    // parameter for publishing too; only current-generation access tokens are refused in URLs.
    let hub = TestHub::start(&[]).await;
    let c = client();
    let url = format!(
        "{}?authorization={}",
        hub.hub_url(),
        enc(&publisher_token())
    );
    let status = c
        .post(&url)
        .header(FORM.0, FORM.1)
        .body("topic=a")
        .send()
        .await
        .expect("publish")
        .status();
    assert_eq!(status, 200);
    // An expired or forged query token is refused for publishing as it is for subscribing.
    let expired = token(&["*"], &[], Some(now() - 60));
    let url = format!("{}?authorization={}", hub.hub_url(), enc(&expired));
    let status = c
        .post(&url)
        .header(FORM.0, FORM.1)
        .body("topic=a")
        .send()
        .await
        .expect("publish")
        .status();
    assert_eq!(status, 401);
}

#[tokio::test]
async fn cookie_publishes_need_an_allowed_origin() {
    let hub = TestHub::start(&[
        "--publish-origins",
        "https://app.example.com https://*.example.org",
    ])
    .await;
    let c = client();
    let cookie = format!("mercureAuthorization={}", publisher_token());
    let cases: &[(&[(&str, &str)], u16)] = &[
        (&[("Origin", "https://app.example.com")], 200),
        (&[("Origin", "https://APP.example.com")], 200),
        (&[("Origin", "https://news.example.org")], 200),
        (&[("Origin", "https://evil.example")], 401),
        (&[("Origin", "null")], 401),
        (&[("Origin", "http://app.example.com")], 401),
        (&[("Origin", "https://app.example.com.evil.net")], 401),
        (&[("Origin", "https://app.example.com:8443")], 401),
        (&[("Origin", "https://evilexample.org")], 401),
        (&[("Origin", "https://example.org")], 401),
        (
            &[("Referer", "https://evil.example/https://app.example.com")],
            401,
        ),
        (&[("Referer", "not a url")], 401),
        // The Origin header decides when both are present.
        (
            &[
                ("Origin", "https://evil.example"),
                ("Referer", "https://app.example.com/page"),
            ],
            401,
        ),
        (&[], 401),
    ];
    for (headers, expected) in cases {
        let mut request = c
            .post(hub.hub_url())
            .header("Cookie", &cookie)
            .header(FORM.0, FORM.1)
            .body("topic=a");
        for (k, v) in *headers {
            request = request.header(*k, *v);
        }
        let status = request.send().await.expect("publish").status().as_u16();
        assert_eq!(status, *expected, "cookie publish with {headers:?}");
    }
    // A bearer token is not a CSRF vector: its origin does not matter.
    let status = c
        .post(hub.hub_url())
        .bearer_auth(publisher_token())
        .header("Origin", "https://evil.example")
        .header(FORM.0, FORM.1)
        .body("topic=a")
        .send()
        .await
        .expect("publish")
        .status();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn cors_answers_listed_origins_only() {
    let hub = TestHub::start(&["--cors-origins", "https://app.example.com", "--anonymous"]).await;
    let c = client();
    let preflight = |origin: &'static str, method: &'static str, headers: &'static str| {
        c.request(reqwest::Method::OPTIONS, hub.hub_url())
            .header("Origin", origin)
            .header("Access-Control-Request-Method", method)
            .header("Access-Control-Request-Headers", headers)
            .send()
    };
    for (method, headers) in [
        ("POST", "authorization,content-type"),
        ("GET", "last-event-id"),
    ] {
        let r = preflight("https://app.example.com", method, headers)
            .await
            .expect("preflight");
        assert!(r.status().is_success(), "{method} preflight");
        assert_eq!(
            r.headers()["access-control-allow-origin"],
            "https://app.example.com"
        );
        assert_eq!(r.headers()["access-control-allow-credentials"], "true");
        for origin in [
            "https://evil.example",
            "https://app.example.com.evil.net",
            "http://app.example.com",
            "null",
        ] {
            let r = preflight(origin, method, headers).await.expect("preflight");
            assert!(
                !r.headers().contains_key("access-control-allow-origin"),
                "{method} preflight from {origin}: {:?}",
                r.headers()
            );
        }
    }
    // Actual requests: a subscription from an unlisted origin gets no CORS headers (the browser
    // withholds the stream from the page), a listed one gets its origin, never `*`.
    for (origin, allowed) in [
        ("https://app.example.com", true),
        ("https://evil.example", false),
    ] {
        let r = c
            .get(format!("{}?topic=a", hub.hub_url()))
            .header("Origin", origin)
            .send()
            .await
            .expect("subscribe");
        assert_eq!(r.status(), 200);
        let acao = r
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap_or("").to_string());
        assert_eq!(acao, allowed.then(|| origin.to_string()), "from {origin}");
    }
}

/// A subscriber of the cross-node test: who, its subscribe grants (`None`: anonymous), and whether
/// it may see the private updates `private-1` and `private-2`.
type Case = (&'static str, Option<Vec<&'static str>>, [bool; 2]);

/// Reads events until the one with id `last`; returns the ids read, in order.
async fn ids_until(stream: &mut SseStream, last: &str) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let event = stream
            .next_event(Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("waiting for {last} after {ids:?}: {e}"));
        let id = event.id.unwrap_or_default();
        if id == last {
            return ids;
        }
        ids.push(id);
    }
}

async fn wait_ready(c: &reqwest::Client, hub: &HubProcess) {
    for _ in 0..200 {
        if let Ok(r) = c.get(format!("{}/readyz", hub.url())).send().await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never became ready", hub.url());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_updates_need_a_grant_live_on_replay_and_across_nodes() {
    if !RedisServer::available() {
        panic!("redis-server is required (scripts/install-test-deps.sh)");
    }
    let redis = RedisServer::start();
    let args = [
        "--transport",
        "redis",
        "--redis-url",
        &redis.url(),
        "--jwt-key",
        KEY,
        "--anonymous",
    ];
    let a = HubProcess::spawn(BIN, &args);
    let b = HubProcess::spawn(BIN, &args);
    let c = client();
    wait_ready(&c, &a).await;
    wait_ready(&c, &b).await;

    let selectors = "topic=https%3A%2F%2Fex.com%2Fbooks%2F%7Bid%7D";
    // (who, subscribe grants or None for anonymous, sees the private updates to books/1 and to
    // books/2 whose alternate topic is alt/2)
    let subscribers: Vec<Case> = vec![
        ("anonymous", None, [false, false]),
        ("no grant", Some(vec![]), [false, false]),
        (
            "other topic",
            Some(vec!["https://ex.com/authors/{id}"]),
            [false, false],
        ),
        (
            "near miss",
            Some(vec!["https://ex.com/books/1/"]),
            [false, false],
        ),
        (
            "exact grant",
            Some(vec!["https://ex.com/books/1"]),
            [true, false],
        ),
        (
            "template grant",
            Some(vec!["https://ex.com/books/{id}"]),
            [true, true],
        ),
        (
            "alternate topic grant",
            Some(vec!["https://ex.com/alt/2"]),
            [false, true],
        ),
        ("all", Some(vec!["*"]), [true, true]),
    ];
    let subscriber_tokens: Vec<Option<String>> = subscribers
        .iter()
        .map(|(_, grants, _)| grants.as_ref().map(|g| token(&[], g, None)))
        .collect();
    let open = |hub: &HubProcess, token: &Option<String>, last_event_id: Option<&'static str>| {
        let url = format!("{}?{selectors}", hub.mercure_url());
        let token = token.clone();
        async move {
            let mut headers = Vec::new();
            let auth = token.map(|t| format!("Bearer {t}"));
            if let Some(auth) = &auth {
                headers.push(("Authorization", auth.as_str()));
            }
            if let Some(id) = last_event_id {
                headers.push(("Last-Event-ID", id));
            }
            let stream = SseClient::new().open(&url, &headers).await.expect("open");
            assert_eq!(stream.status(), 200);
            stream
        }
    };
    // Live: subscribers on node B, updates published on node A.
    let mut live = Vec::new();
    for t in &subscriber_tokens {
        live.push(open(&b, t, None).await);
    }
    let p = publisher_token();
    let updates: [&[(&str, &str)]; 4] = [
        &[
            ("topic", "https://ex.com/books/1"),
            ("id", "private-1"),
            ("private", "on"),
        ],
        &[
            ("topic", "https://ex.com/books/2"),
            ("topic", "https://ex.com/alt/2"),
            ("id", "private-2"),
            ("private", "on"),
        ],
        &[
            ("topic", "https://ex.com/authors/1"),
            ("id", "private-elsewhere"),
            ("private", "on"),
        ],
        &[("topic", "https://ex.com/books/3"), ("id", "public-end")],
    ];
    for form in updates {
        let (status, _) = quicksilver_testkit::hub::publish(&c, a.url(), &p, form).await;
        assert_eq!(status, 200);
    }
    let expected = |sees: [bool; 2]| -> Vec<String> {
        ["private-1", "private-2"]
            .iter()
            .zip(sees)
            .filter(|(_, s)| *s)
            .map(|(id, _)| id.to_string())
            .collect()
    };
    for ((who, _, sees), stream) in subscribers.iter().zip(live.iter_mut()) {
        assert_eq!(
            ids_until(stream, "public-end").await,
            expected(*sees),
            "live on the other node: {who}"
        );
    }
    // Replay, on both nodes.
    for node in [&a, &b] {
        for ((who, _, sees), t) in subscribers.iter().zip(&subscriber_tokens) {
            let mut replay = open(node, t, Some("earliest")).await;
            assert_eq!(
                ids_until(&mut replay, "public-end").await,
                expected(*sees),
                "replay on {}: {who}",
                node.url()
            );
        }
    }
}
