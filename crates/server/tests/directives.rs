//! `MERCURE_EXTRA_DIRECTIVES` (given as `--extra-directives`, the same setting) changes what the hub
//! does, directive by directive, over HTTP. How each directive maps to a setting, its syntax and its
//! errors are unit-tested beside the parser (`config/directives/tests.rs`); here, the behaviour.

use std::time::Duration;

use quicksilver_testkit::token::{
    access_claims, access_token, authorization_detail, mercure_claims, sign_hs256,
};
use quicksilver_testkit::{http_client, publish, spawn_hub, HubRouter, SseClient, SHORT, WAIT};
use serde_json::json;

const FORM: &str = "application/x-www-form-urlencoded";

fn hub(directives: &str) -> HubRouter {
    HubRouter::new(&["--extra-directives", directives])
}

#[tokio::test]
async fn anonymous_lets_subscribers_in_without_a_token() {
    assert_eq!(
        hub("")
            .get("/.well-known/mercure?topic=a", &[])
            .await
            .status,
        401
    );
    assert_eq!(
        hub("anonymous")
            .get("/.well-known/mercure?topic=a", &[])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn cors_origins_answers_the_apps_preflight() {
    let router = hub("cors_origins http://127.0.0.1:8000 https://admin.example.com");
    for (origin, allowed) in [
        ("http://127.0.0.1:8000", true),
        ("https://admin.example.com", true),
        ("https://evil.example", false),
    ] {
        let r = router
            .send(
                http::Request::builder()
                    .method(http::Method::OPTIONS)
                    .uri("/.well-known/mercure")
                    .header("Origin", origin)
                    .header("Access-Control-Request-Method", "POST")
                    .header("Access-Control-Request-Headers", "authorization")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(
            r.header("access-control-allow-origin") == Some(origin),
            allowed,
            "{origin}"
        );
    }
}

#[tokio::test]
async fn publish_origins_admits_cookie_publishers_from_wildcard_origins() {
    let router = hub("publish_origins https://*.example.com");
    let cookie = format!(
        "mercureAuthorization={}",
        sign_hs256(
            quicksilver_testkit::TEST_JWT_KEY,
            &mercure_claims(&["*"], &[], None)
        )
    );
    for (origin, status) in [
        ("https://app.example.com", 200),
        ("https://example.org", 401),
    ] {
        let r = router
            .publish(
                &[
                    ("Cookie", &cookie),
                    ("Origin", origin),
                    ("Content-Type", FORM),
                ],
                "topic=a&data=b",
            )
            .await;
        assert_eq!(r.status, status, "{origin}: {}", r.body);
    }
}

#[tokio::test]
async fn cookie_name_names_the_access_token_cookie() {
    let router = hub("cookie_name mercure_access_token");
    let token = sign_hs256(
        quicksilver_testkit::TEST_JWT_KEY,
        &mercure_claims(&[], &["*"], None),
    );
    let r = router
        .get(
            "/.well-known/mercure?topic=a",
            &[("Cookie", &format!("mercure_access_token={token}"))],
        )
        .await;
    assert_eq!(r.status, 200);
    let metadata = router
        .get(
            "/.well-known/oauth-protected-resource/.well-known/mercure",
            &[],
        )
        .await;
    assert!(
        metadata
            .body
            .contains("\"mercure_cookie\":\"mercure_access_token\""),
        "{}",
        metadata.body
    );
}

#[tokio::test]
async fn issuer_blocks_bind_keys_per_role() {
    let resource = "https://hub.example.com/.well-known/mercure";
    let router = HubRouter::new(&[
        "--resource-identifier",
        resource,
        "--extra-directives",
        "issuer https://app.example.com {\n\
         \tauthorization_server\n\
         \tpublisher {\n\t\tjwt publisher-secret-0123456789 HS256\n\t}\n\
         \tsubscriber {\n\t\tjwt subscriber-secret-0123456789\n\t}\n\
         }",
    ]);
    let details = json!([authorization_detail(
        &["publish", "subscribe"],
        json!([{"match": "*"}])
    )]);
    let claims = access_claims("https://app.example.com", resource, details);
    let signed_by = |key: &str| format!("Bearer {}", access_token(key, None, &claims));
    let publish = async |bearer: String| {
        router
            .publish(
                &[("Authorization", &bearer), ("Content-Type", FORM)],
                "topic=a&data=b",
            )
            .await
            .status
    };
    assert_eq!(publish(signed_by("publisher-secret-0123456789")).await, 200);
    assert_eq!(
        publish(signed_by("subscriber-secret-0123456789")).await,
        401
    );
    let subscribe = async |bearer: String| {
        router
            .get(
                "/.well-known/mercure?match=a",
                &[("Authorization", &bearer)],
            )
            .await
            .status
    };
    assert_eq!(
        subscribe(signed_by("subscriber-secret-0123456789")).await,
        200
    );
    assert_eq!(
        subscribe(signed_by("publisher-secret-0123456789")).await,
        401
    );
    let metadata = router
        .get(
            "/.well-known/oauth-protected-resource/.well-known/mercure",
            &[],
        )
        .await;
    assert!(
        metadata
            .body
            .contains("\"authorization_servers\":[\"https://app.example.com\"]"),
        "{}",
        metadata.body
    );
}

#[tokio::test]
async fn publisher_jwt_and_subscriber_jwt_set_the_legacy_keys() {
    let router = HubRouter::new(&[
        "--extra-directives",
        "publisher_jwt pub-key-0123456789abcdef\nsubscriber_jwt sub-key-0123456789abcdef HS512",
        "--jwt-key",
        "unused-0123456789abcdef",
    ]);
    let publisher = sign_hs256(
        "pub-key-0123456789abcdef",
        &mercure_claims(&["*"], &[], None),
    );
    let r = router
        .publish(
            &[
                ("Authorization", &format!("Bearer {publisher}")),
                ("Content-Type", FORM),
            ],
            "topic=a&data=b",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let hs512 = quicksilver_testkit::token::sign(
        quicksilver_testkit::token::Algorithm::HS512,
        &quicksilver_testkit::token::EncodingKey::from_secret(b"sub-key-0123456789abcdef"),
        &mercure_claims(&[], &["*"], None),
    );
    let r = router
        .get(
            "/.well-known/mercure?topic=a",
            &[("Authorization", &format!("Bearer {hs512}"))],
        )
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn resource_identifier_is_the_audience() {
    let resource = "https://hub.example.com/.well-known/mercure";
    let router = HubRouter::new(&[
        "--issuer",
        "https://app.example.com",
        "--extra-directives",
        &format!("resource_identifier {resource}"),
    ]);
    let details = json!([authorization_detail(&["publish"], json!([{"match": "*"}]))]);
    for (audience, status) in [
        (resource, 200),
        ("http://localhost/.well-known/mercure", 401),
    ] {
        let token = access_token(
            quicksilver_testkit::TEST_JWT_KEY,
            None,
            &access_claims("https://app.example.com", audience, details.clone()),
        );
        let r = router
            .publish(
                &[
                    ("Authorization", &format!("Bearer {token}")),
                    ("Content-Type", FORM),
                ],
                "topic=a&data=b",
            )
            .await;
        assert_eq!(r.status, status, "{audience}");
    }
}

#[tokio::test]
async fn max_request_body_size_bounds_publish_bodies() {
    let router = hub("max_request_body_size 1KB");
    let token = sign_hs256(
        quicksilver_testkit::TEST_JWT_KEY,
        &mercure_claims(&["*"], &[], None),
    );
    let bearer = format!("Bearer {token}");
    let small = router
        .publish(
            &[("Authorization", &bearer), ("Content-Type", FORM)],
            format!("topic=a&data={}", "x".repeat(900)),
        )
        .await;
    assert_eq!(small.status, 200);
    let large = router
        .publish(
            &[("Authorization", &bearer), ("Content-Type", FORM)],
            format!("topic=a&data={}", "x".repeat(1001)),
        )
        .await;
    assert_eq!(large.status, 413);
}

#[tokio::test]
async fn subscriptions_turns_the_api_on() {
    let token = sign_hs256(
        quicksilver_testkit::TEST_JWT_KEY,
        &mercure_claims(&[], &["*"], None),
    );
    let bearer = format!("Bearer {token}");
    for (directives, status) in [("", 404), ("subscriptions", 200)] {
        let r = hub(directives)
            .get(
                "/.well-known/mercure/subscriptions",
                &[("Authorization", &bearer)],
            )
            .await;
        assert_eq!(r.status, status, "{directives:?}");
    }
}

#[tokio::test]
async fn heartbeat_sets_the_heartbeat_interval() {
    let hub = spawn_hub(&["--anonymous", "--extra-directives", "heartbeat 200ms"]).await;
    let mut es = SseClient::subscribe(&format!("{}?topic=a", hub.mercure_url()), &[]).await;
    es.next_comment(WAIT).await.expect("the opening comment");
    es.next_comment(Duration::from_secs(3))
        .await
        .expect("a heartbeat");
}

#[tokio::test]
async fn write_timeout_ends_connections() {
    let hub = spawn_hub(&["--anonymous", "--extra-directives", "write_timeout 1s"]).await;
    let mut es = SseClient::subscribe(&format!("{}?topic=a", hub.mercure_url()), &[]).await;
    assert!(es.closed_within(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn transport_sets_the_history_kept() {
    let c = http_client();
    let token = sign_hs256(
        quicksilver_testkit::TEST_JWT_KEY,
        &mercure_claims(&["*"], &[], None),
    );
    for (directives, replayed) in [("transport bolt {\n\tsize 2\n}", 2), ("transport local", 0)] {
        let hub = spawn_hub(&["--anonymous", "--extra-directives", directives]).await;
        for id in ["one", "two", "three"] {
            let (status, _) = publish(
                &c,
                hub.url(),
                &token,
                &[("topic", "a"), ("id", id), ("data", id)],
            )
            .await;
            assert_eq!(status, 200);
        }
        let mut es = SseClient::subscribe(
            &format!("{}?topic=a&lastEventID=earliest", hub.mercure_url()),
            &[],
        )
        .await;
        let ids = es.ids(replayed, WAIT).await.expect("the replay");
        assert_eq!(ids.len(), replayed, "{directives:?}");
        es.assert_no_event(SHORT).await;
    }
}

#[tokio::test]
async fn publisher_jwks_url_verifies_legacy_tokens_with_a_jwk_set() {
    // The auth crate's test-only keys: a JWK Set of their public halves, and the EC private key.
    const JWKS: &str = include_str!("../../auth/tests/fixtures/jwks.json");
    const EC_PRIVATE: &str = include_str!("../../auth/tests/fixtures/ec_private.pem");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, JWKS).unwrap();
    let router = HubRouter::new(&[
        "--extra-directives",
        &format!("publisher_jwks_url file://{}", file.display()),
    ]);
    let sign = |alg, key: &quicksilver_testkit::token::EncodingKey, kid: &str| {
        let mut header = quicksilver_testkit::token::Header::new(alg);
        header.kid = Some(kid.into());
        quicksilver_testkit::token::sign_with_header(
            &header,
            key,
            &mercure_claims(&["*"], &[], None),
        )
    };
    let es256 = sign(
        quicksilver_testkit::token::Algorithm::ES256,
        &quicksilver_testkit::token::EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
        "ec-1",
    );
    let publish = async |token: &str| {
        router
            .publish(
                &[
                    ("Authorization", &format!("Bearer {token}")),
                    ("Content-Type", FORM),
                ],
                "topic=a&data=b",
            )
            .await
            .status
    };
    assert_eq!(publish(&es256).await, 200);
    // The set's HMAC key is not an allowed algorithm, and the hub's own key no longer applies.
    let oct = sign(
        quicksilver_testkit::token::Algorithm::HS256,
        &quicksilver_testkit::token::EncodingKey::from_secret(b"unused"),
        "oct-1",
    );
    assert_eq!(publish(&oct).await, 401);
    let with_the_key = sign_hs256(
        quicksilver_testkit::TEST_JWT_KEY,
        &mercure_claims(&["*"], &[], None),
    );
    assert_eq!(publish(&with_the_key).await, 401);
}
