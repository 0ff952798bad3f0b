//! Security: legacy-generation JWT attacks (`alg: none`, HS/RS confusion, wrong key, validity window,
//! oversized tokens), the cookie CSRF origin check, CORS answering listed origins only (tables through
//! the router, no socket needed), and private updates never reaching a subscriber without a matching
//! grant — live, on replay, and across two node processes sharing one Redis.
//!
//! (The current protocol's `at+jwt` audience/issuer/type checks are tested in the auth crate; their
//! HTTP wiring is tested in `current.rs`.)

use quicksilver_testkit::hub::{encode_form, is_ready, publish};
use quicksilver_testkit::redis::RedisServer;
use quicksilver_testkit::token::{
    forge, now, publisher_token, sign, sign_hs256, sign_rs256, Algorithm, EncodingKey,
    TEST_RSA_PRIVATE_PEM, TEST_RSA_PUBLIC_PEM,
};
use quicksilver_testkit::{
    http_client, mercure_token, spawn_hub, wait_until, HubProcess, HubRouter, InProcessHub,
    SseClient, SseStream, TEST_JWT_KEY, WAIT,
};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_quicksilver");
const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

fn everything() -> Value {
    json!({"mercure": {"publish": ["*"], "subscribe": ["*"]}})
}

/// The status of a publish (`topic=a`) and of a subscription (`?topic=a`), both with `headers`.
async fn statuses(hub: &HubRouter, headers: &[(&str, &str)]) -> (u16, u16) {
    let published = hub.publish(headers, "topic=a").await.status;
    let subscribed = hub
        .get("/.well-known/mercure?topic=a", headers)
        .await
        .status;
    (published, subscribed)
}

async fn bearer_statuses(hub: &HubRouter, token: &str) -> (u16, u16) {
    statuses(hub, &[("Authorization", &format!("Bearer {token}"))]).await
}

#[tokio::test]
async fn forged_expired_and_foreign_tokens_are_refused() {
    let hub = HubRouter::new(&[]);
    let valid = sign_hs256(TEST_JWT_KEY, &everything());
    let signature = valid.rsplit('.').next().expect("signature");

    // A token without exp is valid (the reference hub's tokens have none).
    assert_eq!(bearer_statuses(&hub, &valid).await, (200, 200));

    let with = |extra: Value| {
        let mut claims = everything();
        for (k, v) in extra.as_object().expect("an object") {
            claims[k] = v.clone();
        }
        sign_hs256(TEST_JWT_KEY, &claims)
    };
    #[rustfmt::skip]
    let refused = [
        ("alg none, no signature", forge(&json!({"alg": "none", "typ": "JWT"}), &everything(), "")),
        ("alg None, a valid token's signature kept", forge(&json!({"alg": "None"}), &everything(), signature)),
        ("alg nOnE", forge(&json!({"alg": "nOnE", "typ": "JWT"}), &everything(), "")),
        (
            "claims swapped under a valid signature",
            forge(&json!({"alg": "HS256", "typ": "JWT"}), &json!({"mercure": {"publish": ["*"], "subscribe": ["*"]}, "x": 1}), signature),
        ),
        ("HS384 with the right key", sign(Algorithm::HS384, &EncodingKey::from_secret(TEST_JWT_KEY.as_bytes()), &everything())),
        ("wrong key", sign_hs256("!ChangeThisMercureHubJWTSecretKey?", &everything())),
        ("expired", with(json!({"exp": now() - 120}))),
        ("not yet valid", with(json!({"nbf": now() + 3600}))),
        ("exp not a number", with(json!({"exp": "never"}))),
        ("two parts", "eyJhbGciOiJIUzI1NiJ9.eyJtZXJjdXJlIjp7fX0".into()),
        ("not base64", "!!!.???.***".into()),
    ];
    for (what, token) in &refused {
        assert_eq!(bearer_statuses(&hub, token).await, (401, 401), "{what}");
        // Wherever it is carried.
        let query = encode_form(&[("topic", "a"), ("authorization", token)]);
        let answer = hub.get(&format!("/.well-known/mercure?{query}"), &[]).await;
        assert_eq!(answer.status, 401, "{what} in the query");
        let cookie = format!("mercureAuthorization={token}");
        let answer = hub
            .get("/.well-known/mercure?topic=a", &[("Cookie", &cookie)])
            .await;
        assert_eq!(answer.status, 401, "{what} in the cookie");
    }
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused_by_an_rs256_hub() {
    let hub = HubRouter::new(&[
        "--publisher-jwt-key",
        TEST_RSA_PUBLIC_PEM,
        "--publisher-jwt-alg",
        "RS256",
        "--subscriber-jwt-key",
        TEST_RSA_PUBLIC_PEM,
        "--subscriber-jwt-alg",
        "RS256",
    ]);
    let genuine = sign_rs256(TEST_RSA_PRIVATE_PEM, &everything());
    assert_eq!(bearer_statuses(&hub, &genuine).await, (200, 200));
    // The classic confusion: the public key (which attackers know) used as an HMAC secret.
    for secret in [TEST_RSA_PUBLIC_PEM, TEST_RSA_PUBLIC_PEM.trim_end()] {
        let confused = sign_hs256(secret, &everything());
        assert_eq!(bearer_statuses(&hub, &confused).await, (401, 401));
    }
    // And a token signed with the shared --jwt-key the test hub also has: the role keys win.
    let shared = sign_hs256(TEST_JWT_KEY, &everything());
    assert_eq!(bearer_statuses(&hub, &shared).await, (401, 401));
}

/// The status of a publish and of a subscription over real HTTP (header limits live in the HTTP layer,
/// below the router).
async fn statuses_over_http(hub: &InProcessHub, headers: &[(&str, &str)]) -> (u16, u16) {
    let c = http_client();
    let mut post = c
        .post(hub.mercure_url())
        .header(FORM.0, FORM.1)
        .body("topic=a");
    let mut get = c.get(format!("{}?topic=a", hub.mercure_url()));
    for (k, v) in headers {
        post = post.header(*k, *v);
        get = get.header(*k, *v);
    }
    let published = post.send().await.expect("publish").status().as_u16();
    let subscribed = get.send().await.expect("subscribe").status().as_u16();
    (published, subscribed)
}

#[tokio::test]
async fn oversized_tokens_get_a_clear_4xx() {
    let hub = spawn_hub(&[]).await;
    let claims = json!({
        "mercure": {"publish": ["*"], "subscribe": ["*"]},
        "padding": "p".repeat(24 * 1024),
    });
    let big = sign_hs256(TEST_JWT_KEY, &claims);
    let auth = format!("Bearer {big}");
    let (published, subscribed) = statuses_over_http(&hub, &[("Authorization", &auth)]).await;
    for status in [published, subscribed] {
        assert!(
            [400, 401, 413, 431].contains(&status),
            "32 KiB token: {status}"
        );
    }
    let huge = format!("Bearer {}", "a".repeat(1024 * 1024));
    let (published, subscribed) = statuses_over_http(&hub, &[("Authorization", &huge)]).await;
    assert_eq!((published, subscribed), (431, 431), "1 MiB header");
    let query = format!("{}?topic=a&authorization={}", hub.mercure_url(), big);
    let status = http_client()
        .get(&query)
        .send()
        .await
        .expect("get")
        .status()
        .as_u16();
    assert!(
        [400, 401, 413, 414, 431].contains(&status),
        "32 KiB query token: {status}"
    );
    let cookie = format!("mercureAuthorization={big}");
    let (_, subscribed) = statuses_over_http(&hub, &[("Cookie", &cookie)]).await;
    assert!(
        [400, 401, 413, 431].contains(&subscribed),
        "32 KiB cookie: {subscribed}"
    );
}

#[tokio::test]
async fn query_tokens_follow_the_legacy_rules_for_publishing() {
    // The pre-standardization protocol (and the reference hub) accepts the `authorization` query
    // parameter for publishing too; only current-generation access tokens are refused in URLs. An
    // expired or forged query token is refused for publishing as it is for subscribing.
    let hub = HubRouter::new(&[]);
    let expired = mercure_token(TEST_JWT_KEY, &["*"], &[], Some(now() - 60));
    for (token, status) in [(publisher_token(), 200), (expired, 401)] {
        let target = format!(
            "/.well-known/mercure?{}",
            encode_form(&[("authorization", &token)])
        );
        let answer = hub.post(&target, &[], "topic=a").await;
        assert_eq!(answer.status, status, "{}", answer.body);
    }
}

#[tokio::test]
async fn cookie_publishes_need_an_allowed_origin() {
    let hub = HubRouter::new(&[
        "--publish-origins",
        "https://app.example.com https://*.example.org",
    ]);
    let cookie = format!("mercureAuthorization={}", publisher_token());
    // (status, the request's origin headers)
    #[rustfmt::skip]
    let cases: &[(u16, &[(&str, &str)])] = &[
        (200, &[("Origin", "https://app.example.com")]),
        (200, &[("Origin", "https://APP.example.com")]),
        (200, &[("Origin", "https://news.example.org")]),
        (200, &[("Referer", "https://app.example.com/page?x=1")]),
        (401, &[("Origin", "https://evil.example")]),
        (401, &[("Origin", "null")]),
        (401, &[("Origin", "http://app.example.com")]),
        (401, &[("Origin", "https://app.example.com.evil.net")]),
        (401, &[("Origin", "https://app.example.com:8443")]),
        (401, &[("Origin", "https://evilexample.org")]),
        (401, &[("Origin", "https://example.org")]),
        (401, &[("Referer", "https://evil.example/https://app.example.com")]),
        (401, &[("Referer", "not a url")]),
        // The Origin header decides when both are present.
        (401, &[("Origin", "https://evil.example"), ("Referer", "https://app.example.com/page")]),
        (401, &[]),
    ];
    for (expected, origin) in cases {
        let mut headers = vec![("Cookie", cookie.as_str())];
        headers.extend_from_slice(origin);
        let answer = hub.publish(&headers, "topic=a").await;
        assert_eq!(answer.status, *expected, "cookie publish with {origin:?}");
    }
    // A bearer token is not a CSRF vector: its origin does not matter.
    let bearer = format!("Bearer {}", publisher_token());
    let answer = hub
        .publish(
            &[
                ("Authorization", &bearer),
                ("Origin", "https://evil.example"),
            ],
            "topic=a",
        )
        .await;
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn cors_answers_listed_origins_only() {
    let hub = HubRouter::new(&["--cors-origins", "https://app.example.com", "--anonymous"]);
    let preflight = |origin: &'static str, method: &'static str, headers: &'static str| {
        let request = http::Request::options("/.well-known/mercure")
            .header("Origin", origin)
            .header("Access-Control-Request-Method", method)
            .header("Access-Control-Request-Headers", headers)
            .body(axum::body::Body::empty())
            .expect("a preflight");
        hub.send(request)
    };
    for (method, headers) in [
        ("POST", "authorization,content-type"),
        ("GET", "last-event-id"),
    ] {
        let r = preflight("https://app.example.com", method, headers).await;
        assert!((200..300).contains(&r.status), "{method} preflight");
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("https://app.example.com")
        );
        assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
        let methods = r.header("access-control-allow-methods").unwrap_or_default();
        assert!(methods.contains(method), "{method} preflight: {methods}");
        let allowed = r
            .header("access-control-allow-headers")
            .unwrap_or_default()
            .to_lowercase();
        for header in headers.split(',') {
            assert!(allowed.contains(header), "{method} preflight: {allowed}");
        }
        for origin in [
            "https://evil.example",
            "https://app.example.com.evil.net",
            "http://app.example.com",
            "null",
        ] {
            let r = preflight(origin, method, headers).await;
            assert_eq!(
                r.header("access-control-allow-origin"),
                None,
                "{method} preflight from {origin}: {:?}",
                r.headers
            );
        }
    }
    // Actual requests: a subscription from an unlisted origin gets no CORS headers (the browser
    // withholds the stream from the page), a listed one gets its origin, never `*`; so does a publish.
    for (origin, allowed) in [
        ("https://app.example.com", true),
        ("https://evil.example", false),
    ] {
        let r = hub
            .get("/.well-known/mercure?topic=a", &[("Origin", origin)])
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("access-control-allow-origin"),
            allowed.then_some(origin),
            "from {origin}"
        );
    }
    let bearer = format!("Bearer {}", publisher_token());
    let r = hub
        .publish(
            &[
                ("Origin", "https://app.example.com"),
                ("Authorization", &bearer),
            ],
            "topic=a",
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
}

/// A subscriber of the cross-node test: who, its subscribe grants (`None`: anonymous), and whether
/// it may see the private updates `private-1` and `private-2`.
type Case = (&'static str, Option<Vec<&'static str>>, [bool; 2]);

/// Reads events until the one with id `last`; returns the ids read, in order.
async fn ids_until(stream: &mut SseStream, last: &str) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let event = stream
            .next_event(WAIT)
            .await
            .unwrap_or_else(|e| panic!("waiting for {last} after {ids:?}: {e}"));
        let id = event.id.unwrap_or_default();
        if id == last {
            return ids;
        }
        ids.push(id);
    }
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
        TEST_JWT_KEY,
        "--anonymous",
    ];
    let a = HubProcess::spawn(BIN, &args);
    let b = HubProcess::spawn(BIN, &args);
    let c = http_client();
    for node in [&a, &b] {
        wait_until("the node to be ready", WAIT, async || {
            is_ready(&c, node.url()).await
        })
        .await;
    }

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
        .map(|(_, grants, _)| {
            grants
                .as_ref()
                .map(|g| mercure_token(TEST_JWT_KEY, &[], g, None))
        })
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
            SseClient::subscribe(&url, &headers).await
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
        let (status, _) = publish(&c, a.url(), &p, form).await;
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
