//! The current specification over real HTTP, beside the pre-standardization generation: access
//! tokens (`at+jwt`, issuer, audience, `authorization_details`), the access token cookie, error
//! responses with `WWW-Authenticate`, `match`/`match_urlpattern`, `last_event_id` and
//! `Mercure-Last-Event-ID`, JWK Sets with rotation, discovery and the debug page.

mod common;

use common::*;
use serde_json::{json, Value};

const ISSUER: &str = "https://issuer.example";
const RESOURCE: &str = "https://hub.example/.well-known/mercure";
const DETAIL: &str = "https://mercure.rocks/authorization-detail";

/// An `at+jwt` access token signed with `key` (and `kid` when given).
fn access_token_with(key: &str, kid: Option<&str>, claims: Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
    )
    .unwrap()
}

fn claims(aud: &str, details: Value) -> Value {
    json!({
        "iss": ISSUER,
        "aud": aud,
        "exp": now() + 3600,
        "sub": "user-1",
        "authorization_details": details,
    })
}

fn grant(actions: &[&str], topics: Value) -> Value {
    json!({ "type": DETAIL, "actions": actions, "topics": topics })
}

/// A token of the configured issuer for `aud` granting everything.
fn all_access(aud: &str) -> String {
    access_token_with(
        KEY,
        None,
        claims(
            aud,
            json!([grant(&["publish", "subscribe"], json!([{ "match": "*" }]))]),
        ),
    )
}

async fn start() -> TestHub {
    TestHub::start(&[
        "--issuer",
        ISSUER,
        "--resource-identifier",
        RESOURCE,
        "--anonymous",
    ])
    .await
}

async fn post(
    c: &reqwest::Client,
    hub: &TestHub,
    headers: &[(&str, &str)],
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = c
        .post(hub.hub_url())
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded_pairs(fields));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    request.send().await.unwrap()
}

fn challenge(r: &reqwest::Response) -> String {
    r.headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// The hub's protected resource metadata document.
async fn metadata(c: &reqwest::Client, hub: &TestHub) -> Value {
    c.get(format!(
        "{}/.well-known/oauth-protected-resource/.well-known/mercure",
        hub.url
    ))
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap()
}

const METADATA: &str = "resource_metadata=\"https://hub.example/.well-known/oauth-protected-resource/.well-known/mercure\"";

#[tokio::test]
async fn access_tokens_publish_and_failures_follow_error_responses() {
    let hub = start().await;
    let c = client();
    let mut sse = Sse::connect(&c, &format!("{}?match=a", hub.hub_url()), &[]).await;
    assert_eq!(sse.status, 200);

    let good = all_access(RESOURCE);
    let r = post(
        &c,
        &hub,
        &[("Authorization", &format!("Bearer {good}"))],
        &[("topic", "a"), ("data", "hi"), ("id", "id-[\"x\"]")],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(r.text().await.unwrap(), "id-[\"x\"]");
    let e = sse.next_event(WAIT).await.expect("event");
    assert_eq!(
        (e.id.as_deref(), e.data.as_str()),
        (Some("id-[\"x\"]"), "hi")
    );

    // Every refused token: 401 invalid_token, the same description, the metadata pointer.
    let refused = [
        (
            "wrong audience",
            all_access("https://other.example/.well-known/mercure"),
        ),
        (
            "untrusted issuer",
            access_token_with(
                KEY,
                None,
                json!({"iss": "https://evil.example", "aud": RESOURCE, "exp": now() + 60,
                       "authorization_details": [grant(&["publish"], json!([{"match": "*"}]))]}),
            ),
        ),
        (
            "expired",
            access_token_with(
                KEY,
                None,
                json!({"iss": ISSUER, "aud": RESOURCE, "exp": now() - 60,
                       "authorization_details": [grant(&["publish"], json!([{"match": "*"}]))]}),
            ),
        ),
        (
            "no exp",
            access_token_with(
                KEY,
                None,
                json!({"iss": ISSUER, "aud": RESOURCE,
                       "authorization_details": [grant(&["publish"], json!([{"match": "*"}]))]}),
            ),
        ),
        (
            "wrong key",
            access_token_with(
                "another-secret-of-enough-length-for-hs256!",
                None,
                claims(
                    RESOURCE,
                    json!([grant(&["publish"], json!([{"match": "*"}]))]),
                ),
            ),
        ),
        (
            "malformed detail",
            access_token_with(
                KEY,
                None,
                claims(
                    RESOURCE,
                    json!([{"type": DETAIL, "actions": [5], "topics": [{"match": "*"}]}]),
                ),
            ),
        ),
    ];
    for (name, token) in refused {
        let r = post(
            &c,
            &hub,
            &[("Authorization", &format!("Bearer {token}"))],
            &[("topic", "a"), ("data", "x")],
        )
        .await;
        assert_eq!(r.status(), 401, "{name}");
        let ch = challenge(&r);
        assert!(ch.starts_with("Bearer "), "{name}: {ch}");
        assert!(ch.contains("error=\"invalid_token\""), "{name}: {ch}");
        assert!(ch.contains(METADATA), "{name}: {ch}");
        let body = r.text().await.unwrap();
        assert!(
            !body.contains("aud") && !body.contains("expired") && !body.contains("issuer"),
            "{name}: the reason is not disclosed: {body}"
        );
    }

    // An action the hub does not know grants nothing but is no error: 403.
    let unknown = access_token_with(
        KEY,
        None,
        claims(
            RESOURCE,
            json!([grant(&["delete"], json!([{"match": "*"}]))]),
        ),
    );
    let r = post(
        &c,
        &hub,
        &[("Authorization", &format!("Bearer {unknown}"))],
        &[("topic", "a"), ("data", "x")],
    )
    .await;
    assert_eq!(r.status(), 403);

    // No token at all: a bare challenge.
    let r = post(&c, &hub, &[], &[("topic", "a"), ("data", "x")]).await;
    assert_eq!(r.status(), 401);
    assert_eq!(challenge(&r), format!("Bearer {METADATA}"));

    // A valid token without the right: 403 insufficient_scope.
    let narrow = access_token_with(
        KEY,
        None,
        claims(
            RESOURCE,
            json!([grant(
                &["publish"],
                json!([{"match": "https://example.com/:id", "match_type": "urlpattern"}])
            )]),
        ),
    );
    let auth = format!("Bearer {narrow}");
    let r = post(
        &c,
        &hub,
        &[("Authorization", &auth)],
        &[("topic", "https://example.com/other/1"), ("data", "x")],
    )
    .await;
    assert_eq!(r.status(), 403);
    assert!(challenge(&r).contains("error=\"insufficient_scope\""));
    let r = post(
        &c,
        &hub,
        &[("Authorization", &auth)],
        &[("topic", "https://example.com/1"), ("data", "x")],
    )
    .await;
    assert_eq!(r.status(), 200, "the URL pattern grant allows its topics");

    // A current token in the URL is refused (400 invalid_request), even with legacy on.
    let r = c
        .post(format!("{}?authorization={good}", hub.hub_url()))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("topic=a&data=x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(challenge(&r).contains("error=\"invalid_request\""));
    let r = c
        .get(format!("{}?match=a&access_token={good}", hub.hub_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Legacy tokens keep working side by side, with the pre-standardization status codes.
    let (status, _) = publish(
        &c,
        &hub,
        &publisher_token(),
        &[("topic", "a"), ("data", "old")],
    )
    .await;
    assert_eq!(status, 200);
    let e = sse
        .next_event(WAIT)
        .await
        .expect("legacy publish delivered");
    assert_eq!(e.data, "old");
}

#[tokio::test]
async fn audience_is_derived_from_the_request_when_not_configured() {
    // The test client stands for the TLS-terminating proxy: its forwarded headers are believed.
    let hub = TestHub::start(&[
        "--issuer",
        ISSUER,
        "--anonymous",
        "--trusted-proxies",
        "127.0.0.1",
    ])
    .await;
    let c = client();
    // reqwest sends `Host: 127.0.0.1:PORT`.
    let derived = hub.hub_url();
    let r = post(
        &c,
        &hub,
        &[("Authorization", &format!("Bearer {}", all_access(&derived)))],
        &[("topic", "a"), ("data", "x")],
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = post(
        &c,
        &hub,
        &[("Authorization", &format!("Bearer {}", all_access(RESOURCE)))],
        &[("topic", "a"), ("data", "x")],
    )
    .await;
    assert_eq!(r.status(), 401);
    // Behind a TLS-terminating proxy the public URL is what counts.
    let r = post(
        &c,
        &hub,
        &[
            ("Authorization", &format!("Bearer {}", all_access(RESOURCE))),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "hub.example"),
        ],
        &[("topic", "a"), ("data", "x")],
    )
    .await;
    assert_eq!(r.status(), 200);
    let meta: Value = metadata(&c, &hub).await;
    assert_eq!(meta["resource"], derived);
}

#[tokio::test]
async fn private_updates_with_cookie_and_url_pattern_grants() {
    let hub = TestHub::start(&["--issuer", ISSUER, "--resource-identifier", RESOURCE]).await;
    let c = client();
    let reader = access_token_with(
        KEY,
        None,
        claims(
            RESOURCE,
            json!([grant(
                &["subscribe"],
                json!([{"match": "https://example.com/books/:id", "match_type": "urlpattern"}])
            )]),
        ),
    );
    let url = format!(
        "{}?match_urlpattern={}",
        hub.hub_url(),
        enc("https://example.com/:kind/:id")
    );
    let cookie = format!("__Secure-mercure_access_token={reader}");
    let mut sse = Sse::connect(&c, &url, &[("Cookie", &cookie)]).await;
    assert_eq!(sse.status, 200);
    let publisher = format!("Bearer {}", all_access(RESOURCE));
    for (topic, data) in [
        ("https://example.com/authors/1", "private author"),
        ("https://example.com/books/1", "private book"),
    ] {
        let r = post(
            &c,
            &hub,
            &[("Authorization", &publisher)],
            &[("topic", topic), ("data", data), ("private", "on")],
        )
        .await;
        assert_eq!(r.status(), 200);
    }
    let e = sse
        .next_event(WAIT)
        .await
        .expect("the granted private update");
    assert_eq!(e.data, "private book");
    assert!(sse.next_event(SHORT).await.is_none());

    // Without a token, anonymous is off: 401 with a bare challenge.
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(challenge(&r).starts_with("Bearer resource_metadata="));
}

#[tokio::test]
async fn legacy_can_be_switched_off() {
    let hub = TestHub::start(&[
        "--issuer",
        ISSUER,
        "--resource-identifier",
        RESOURCE,
        "--legacy",
        "false",
    ])
    .await;
    let c = client();
    // A legacy token is refused for its typ, with the current status code.
    let r = post(
        &c,
        &hub,
        &[("Authorization", &format!("Bearer {}", publisher_token()))],
        &[("topic", "a"), ("data", "x")],
    )
    .await;
    assert_eq!(r.status(), 401);
    assert!(challenge(&r).contains("invalid_token"));
    // The legacy query parameter is a token in the URL.
    let r = c
        .get(format!(
            "{}?topic=a&authorization={}",
            hub.hub_url(),
            token(&[], &["*"], None)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // The legacy cookie is not read: no token, 401 bare.
    let r = c
        .get(format!("{}?match=a", hub.hub_url()))
        .header(
            "Cookie",
            format!("mercureAuthorization={}", token(&[], &["*"], None)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(!challenge(&r).contains("error="));
}

#[tokio::test]
async fn last_event_id_query_and_response_header() {
    let hub = start().await;
    let c = client();
    let auth = format!("Bearer {}", all_access(RESOURCE));
    for id in ["one", "two", "three"] {
        let r = post(
            &c,
            &hub,
            &[("Authorization", &auth)],
            &[("topic", "t"), ("data", id), ("id", id)],
        )
        .await;
        assert_eq!(r.status(), 200);
    }
    let mut sse = Sse::connect(
        &c,
        &format!("{}?match=t&last_event_id=one", hub.hub_url()),
        &[],
    )
    .await;
    assert_eq!(sse.headers["mercure-last-event-id"], "one");
    assert_eq!(sse.next_event(WAIT).await.unwrap().data, "two");
    assert_eq!(sse.next_event(WAIT).await.unwrap().data, "three");
    // The header beats the query; an unknown id is answered `earliest`.
    let sse = Sse::connect(
        &c,
        &format!("{}?match=t&last_event_id=one", hub.hub_url()),
        &[("Last-Event-ID", "nope")],
    )
    .await;
    assert_eq!(sse.headers["mercure-last-event-id"], "earliest");
}

#[tokio::test]
async fn jwk_set_from_a_file_with_rotation() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let secret_a = "first-secret-0123456789-abcdefghijklmnop";
    let secret_b = "second-secret-0123456789-abcdefghijklmno";
    let jwk = |kid: &str, secret: &str| {
        json!({"kty": "oct", "kid": kid, "alg": "HS256",
               "k": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)})
    };
    std::fs::write(&path, json!({"keys": [jwk("a", secret_a)]}).to_string()).unwrap();
    let issuer = format!(
        "{ISSUER} jwks_uri=file://{} alg=HS256 authorization_server",
        path.display()
    );
    let hub = TestHub::start(&[
        "--issuer",
        &issuer,
        "--resource-identifier",
        RESOURCE,
        "--jwks-refresh",
        "1s",
    ])
    .await;
    let c = client();
    let details = json!([grant(&["publish"], json!([{"match": "*"}]))]);
    let signed_a = access_token_with(secret_a, Some("a"), claims(RESOURCE, details.clone()));
    let signed_b = access_token_with(secret_b, Some("b"), claims(RESOURCE, details));
    let try_publish = |token: String| {
        let c = c.clone();
        let hub_url = hub.hub_url();
        async move {
            c.post(hub_url)
                .header("Authorization", format!("Bearer {token}"))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body("topic=a&data=x")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(try_publish(signed_a.clone()).await, 200);
    assert_eq!(try_publish(signed_b.clone()).await, 401);

    // The issuer rotates: key b replaces key a.
    std::fs::write(&path, json!({"keys": [jwk("b", secret_b)]}).to_string()).unwrap();
    let mut rotated = false;
    for _ in 0..100 {
        if try_publish(signed_b.clone()).await == 200 {
            rotated = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(rotated, "the new key is picked up");
    assert_eq!(
        try_publish(signed_a).await,
        401,
        "the retired key is dropped"
    );

    let meta: Value = metadata(&c, &hub).await;
    assert_eq!(meta["authorization_servers"], json!([ISSUER]));
}

#[tokio::test]
async fn discovery_metadata_and_debug_page() {
    let hub = TestHub::start(&[
        "--issuer",
        ISSUER,
        "--resource-identifier",
        RESOURCE,
        "--subscriptions",
    ])
    .await;
    let c = client();
    let r = c
        .get(format!(
            "{}/.well-known/oauth-protected-resource/.well-known/mercure",
            hub.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let meta: Value = r.json().await.unwrap();
    assert_eq!(
        meta,
        json!({
            "resource": RESOURCE,
            "authorization_details_types_supported": [DETAIL],
            "bearer_methods_supported": ["header"],
            "mercure_cookie": "__Secure-mercure_access_token",
            "mercure_subscriptions": true,
        })
    );
    let r = c.get(format!("{}/", hub.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(r.text().await.unwrap().contains("/.well-known/mercure"));

    let off = TestHub::start(&["--debug-page", "false"]).await;
    let r = c.get(format!("{}/", off.url)).send().await.unwrap();
    assert_eq!(r.status(), 404);
}
