//! The current specification beside the pre-standardization generation: access tokens (`at+jwt`,
//! issuer, audience, `authorization_details`), the access token cookie, error responses with
//! `WWW-Authenticate` (a table through the router, no socket needed), `match`/`match_urlpattern`,
//! `last_event_id` and `Mercure-Last-Event-ID`, JWK Sets with rotation, discovery and the debug page.

use quicksilver_testkit::hub::encode_form;
use quicksilver_testkit::token::{
    access_claims, access_token, authorization_detail, now, oct_jwk, publisher_token,
    AUTHORIZATION_DETAIL_TYPE,
};
use quicksilver_testkit::{
    http_client, mercure_token, poll_until, publish, spawn_hub, Answer, HubRouter, InProcessHub,
    SseClient, SHORT, TEST_JWT_KEY, WAIT,
};
use serde_json::{json, Value};

const ISSUER: &str = "https://issuer.example";
const RESOURCE: &str = "https://hub.example/.well-known/mercure";
const METADATA: &str = "resource_metadata=\"https://hub.example/.well-known/oauth-protected-resource/.well-known/mercure\"";

/// An access token of [`ISSUER`] for `audience`, signed with the test key, granting `actions` on `topics`.
fn token_for(audience: &str, actions: &[&str], topics: Value) -> String {
    let details = json!([authorization_detail(actions, topics)]);
    access_token(
        TEST_JWT_KEY,
        None,
        &access_claims(ISSUER, audience, details),
    )
}

/// A token of the configured issuer for `audience` granting everything.
fn all_access(audience: &str) -> String {
    token_for(
        audience,
        &["publish", "subscribe"],
        json!([{ "match": "*" }]),
    )
}

/// An access token of [`ISSUER`] for [`RESOURCE`] allowing `publish` on everything, with `claims`
/// changed as given (`Value::Null` removes a claim).
fn publisher_with(key: &str, changes: Value) -> String {
    let mut claims = access_claims(
        ISSUER,
        RESOURCE,
        json!([authorization_detail(&["publish"], json!([{"match": "*"}]))]),
    );
    for (name, value) in changes.as_object().expect("an object of changes") {
        match value {
            Value::Null => claims.as_object_mut().expect("claims").remove(name),
            value => claims
                .as_object_mut()
                .expect("claims")
                .insert(name.clone(), value.clone()),
        };
    }
    access_token(key, None, &claims)
}

/// The flags of a hub trusting [`ISSUER`] with [`RESOURCE`] as its identity, then `extra`.
fn current_hub<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--issuer", ISSUER, "--resource-identifier", RESOURCE];
    args.extend_from_slice(extra);
    args
}

/// Posts `fields` as a form with `Authorization: Bearer token` (none if empty) and `headers`.
async fn post(
    hub: &InProcessHub,
    token: &str,
    headers: &[(&str, &str)],
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = http_client()
        .post(hub.mercure_url())
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(encode_form(fields));
    if !token.is_empty() {
        request = request.bearer_auth(token);
    }
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    request.send().await.expect("publish")
}

/// The hub's protected resource metadata document.
async fn metadata(hub: &InProcessHub) -> Value {
    http_client()
        .get(format!(
            "{}/.well-known/oauth-protected-resource/.well-known/mercure",
            hub.url()
        ))
        .send()
        .await
        .expect("metadata")
        .json()
        .await
        .expect("a JSON document")
}

#[tokio::test]
async fn access_tokens_publish_beside_legacy_tokens() {
    let hub = spawn_hub(&current_hub(&["--anonymous"])).await;
    let mut sse = SseClient::subscribe(&format!("{}?match=a", hub.mercure_url()), &[]).await;

    let fields = [("topic", "a"), ("data", "hi"), ("id", "id-[\"x\"]")];
    let r = post(&hub, &all_access(RESOURCE), &[], &fields).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .expect("ASCII")
        .starts_with("text/plain"));
    assert_eq!(r.text().await.expect("body"), "id-[\"x\"]");
    let e = sse.next_event(WAIT).await.expect("event");
    assert_eq!(
        (e.id.as_deref(), e.data.as_str()),
        (Some("id-[\"x\"]"), "hi")
    );

    // Legacy tokens keep working side by side.
    let form = [("topic", "a"), ("data", "old")];
    let (status, _) = publish(&http_client(), hub.url(), &publisher_token(), &form).await;
    assert_eq!(status, 200);
    let e = sse
        .next_event(WAIT)
        .await
        .expect("legacy publish delivered");
    assert_eq!(e.data, "old");
}

/// What an answer's `WWW-Authenticate` challenge must be.
#[derive(Debug, Clone, Copy)]
enum Challenge {
    /// Exactly `Bearer` and the metadata pointer: no error code (no token was presented).
    Bare,
    /// `Bearer`, this error code and the metadata pointer.
    Error(&'static str),
    /// Not checked (a legacy-generation answer).
    Any,
}

/// Checks `answer` against one row of the error-response table.
fn check(when: &str, answer: &Answer, status: u16, challenge: Challenge) {
    assert_eq!(answer.status, status, "{when}: {}", answer.body);
    let header = answer.header("www-authenticate").unwrap_or_default();
    match challenge {
        Challenge::Bare => assert_eq!(header, format!("Bearer {METADATA}"), "{when}"),
        Challenge::Error(code) => {
            assert!(header.starts_with("Bearer "), "{when}: {header}");
            assert!(
                header.contains(&format!("error=\"{code}\"")),
                "{when}: {header}"
            );
            assert!(header.contains(METADATA), "{when}: {header}");
        }
        Challenge::Any => {}
    }
    // The reason for a refusal is logged, never told.
    let body = &answer.body;
    assert!(
        !body.contains("aud") && !body.contains("expired") && !body.contains("issuer"),
        "{when}: the reason is not disclosed: {body}"
    );
}

/// A row of the error-response table: (status, challenge, when, hub, method, target, Authorization,
/// Cookie, body).
type Row<'a> = (
    u16,
    Challenge,
    &'a str,
    &'a HubRouter,
    &'a str,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    &'a str,
);

/// The specification's error responses, a row per case, on a hub with both generations and on one
/// with the pre-standardization generation switched off.
#[tokio::test]
async fn failures_follow_the_error_responses() {
    let both = HubRouter::new(&current_hub(&["--anonymous"]));
    let current_only = HubRouter::new(&current_hub(&["--legacy", "false"]));
    let bearer = |token: &str| format!("Bearer {token}");
    let publish_all = json!([{"match": "*"}]);
    let narrow = bearer(&token_for(
        RESOURCE,
        &["publish"],
        json!([{"match": "https://example.com/:id", "match_type": "urlpattern"}]),
    ));
    let wrong_audience = bearer(&all_access("https://other.example/.well-known/mercure"));
    let untrusted_issuer = bearer(&publisher_with(
        TEST_JWT_KEY,
        json!({"iss": "https://evil.example", "exp": now() + 60}),
    ));
    let expired = bearer(&publisher_with(TEST_JWT_KEY, json!({"exp": now() - 60})));
    let no_exp = bearer(&publisher_with(TEST_JWT_KEY, json!({"exp": null})));
    let wrong_key = bearer(&publisher_with(
        "another-secret-of-enough-length-for-hs256!",
        json!({}),
    ));
    let malformed_detail = bearer(&publisher_with(
        TEST_JWT_KEY,
        json!({"authorization_details": [{"type": AUTHORIZATION_DETAIL_TYPE, "actions": [5], "topics": publish_all}]}),
    ));
    let unknown_action = bearer(&token_for(RESOURCE, &["delete"], publish_all.clone()));
    let legacy = bearer(&publisher_token());
    let good = all_access(RESOURCE);
    let legacy_subscriber = mercure_token(TEST_JWT_KEY, &[], &["*"], None);
    let post_with_token_in_url = format!("/.well-known/mercure?authorization={good}");
    let get_with_token_in_url = format!("/.well-known/mercure?match=a&access_token={good}");
    let get_with_legacy_query =
        format!("/.well-known/mercure?topic=a&authorization={legacy_subscriber}");
    let legacy_cookie = format!("mercureAuthorization={legacy_subscriber}");
    let (post, get) = ("POST", "GET");
    let to_a = "topic=a&data=x";
    #[rustfmt::skip]
    let cases: &[Row] = &[
        (401, Challenge::Error("invalid_token"), "wrong audience", &both, post, "/.well-known/mercure", Some(&wrong_audience), None, to_a),
        (401, Challenge::Error("invalid_token"), "untrusted issuer", &both, post, "/.well-known/mercure", Some(&untrusted_issuer), None, to_a),
        (401, Challenge::Error("invalid_token"), "expired", &both, post, "/.well-known/mercure", Some(&expired), None, to_a),
        (401, Challenge::Error("invalid_token"), "no exp", &both, post, "/.well-known/mercure", Some(&no_exp), None, to_a),
        (401, Challenge::Error("invalid_token"), "wrong key", &both, post, "/.well-known/mercure", Some(&wrong_key), None, to_a),
        (401, Challenge::Error("invalid_token"), "malformed detail", &both, post, "/.well-known/mercure", Some(&malformed_detail), None, to_a),
        (403, Challenge::Any, "an action the hub does not know grants nothing", &both, post, "/.well-known/mercure", Some(&unknown_action), None, to_a),
        (401, Challenge::Bare, "no token at all", &both, post, "/.well-known/mercure", None, None, to_a),
        (403, Challenge::Error("insufficient_scope"), "a valid token without the right", &both, post, "/.well-known/mercure", Some(&narrow), None, "topic=https%3A%2F%2Fexample.com%2Fother%2F1&data=x"),
        (200, Challenge::Any, "the URL pattern grant allows its topics", &both, post, "/.well-known/mercure", Some(&narrow), None, "topic=https%3A%2F%2Fexample.com%2F1&data=x"),
        (400, Challenge::Error("invalid_request"), "a current token in the URL, legacy on", &both, post, &post_with_token_in_url, None, None, to_a),
        (400, Challenge::Any, "a current token in a subscription's URL", &both, get, &get_with_token_in_url, None, None, ""),
        (401, Challenge::Error("invalid_token"), "legacy off: a legacy token is refused for its typ", &current_only, post, "/.well-known/mercure", Some(&legacy), None, to_a),
        (400, Challenge::Any, "legacy off: the legacy query parameter is a token in the URL", &current_only, get, &get_with_legacy_query, None, None, ""),
        (401, Challenge::Bare, "legacy off: the legacy cookie is not read", &current_only, get, "/.well-known/mercure?match=a", None, Some(&legacy_cookie), ""),
    ];
    for (status, challenge, when, hub, method, target, authorization, cookie, body) in cases {
        let mut headers = Vec::new();
        if let Some(authorization) = authorization {
            headers.push(("Authorization", *authorization));
        }
        if let Some(cookie) = cookie {
            headers.push(("Cookie", *cookie));
        }
        let answer = match *method {
            "POST" => hub.post(target, &headers, body.to_string()).await,
            _ => hub.get(target, &headers).await,
        };
        check(when, &answer, *status, *challenge);
    }
}

#[tokio::test]
async fn audience_is_derived_from_the_request_when_not_configured() {
    // The test client stands for the TLS-terminating proxy: its forwarded headers are believed.
    let hub = spawn_hub(&[
        "--issuer",
        ISSUER,
        "--anonymous",
        "--trusted-proxies",
        "127.0.0.1",
    ])
    .await;
    // reqwest sends `Host: 127.0.0.1:PORT`.
    let derived = hub.mercure_url();
    let fields = [("topic", "a"), ("data", "x")];
    let r = post(&hub, &all_access(&derived), &[], &fields).await;
    assert_eq!(r.status(), 200);
    let r = post(&hub, &all_access(RESOURCE), &[], &fields).await;
    assert_eq!(r.status(), 401);
    // Behind a TLS-terminating proxy the public URL is what counts.
    let proxied = [
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "hub.example"),
    ];
    let r = post(&hub, &all_access(RESOURCE), &proxied, &fields).await;
    assert_eq!(r.status(), 200);
    assert_eq!(metadata(&hub).await["resource"], derived);
}

#[tokio::test]
async fn private_updates_with_cookie_and_url_pattern_grants() {
    let hub = spawn_hub(&current_hub(&[])).await;
    let reader = token_for(
        RESOURCE,
        &["subscribe"],
        json!([{"match": "https://example.com/books/:id", "match_type": "urlpattern"}]),
    );
    let url = format!(
        "{}?{}",
        hub.mercure_url(),
        encode_form(&[("match_urlpattern", "https://example.com/:kind/:id")])
    );
    let cookie = format!("__Secure-mercure_access_token={reader}");
    let mut sse = SseClient::subscribe(&url, &[("Cookie", &cookie)]).await;
    let publisher = all_access(RESOURCE);
    for (topic, data) in [
        ("https://example.com/authors/1", "private author"),
        ("https://example.com/books/1", "private book"),
    ] {
        let fields = [("topic", topic), ("data", data), ("private", "on")];
        assert_eq!(post(&hub, &publisher, &[], &fields).await.status(), 200);
    }
    let e = sse
        .next_event(WAIT)
        .await
        .expect("the granted private update");
    assert_eq!(e.data, "private book");
    sse.assert_no_event(SHORT).await;

    // Without a token, anonymous is off: 401 with a bare challenge.
    let r = http_client().get(&url).send().await.expect("an answer");
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().expect("ASCII");
    assert!(
        challenge.starts_with("Bearer resource_metadata="),
        "{challenge}"
    );
}

#[tokio::test]
async fn last_event_id_query_and_response_header() {
    let hub = spawn_hub(&current_hub(&["--anonymous"])).await;
    let publisher = all_access(RESOURCE);
    for id in ["one", "two", "three"] {
        let fields = [("topic", "t"), ("data", id), ("id", id)];
        assert_eq!(post(&hub, &publisher, &[], &fields).await.status(), 200);
    }
    let url = format!("{}?match=t&last_event_id=one", hub.mercure_url());
    let mut sse = SseClient::subscribe(&url, &[]).await;
    assert_eq!(sse.header("mercure-last-event-id"), Some("one"));
    assert_eq!(
        sse.data(2, WAIT).await.expect("two replayed"),
        ["two", "three"]
    );
    // The header beats the query; an unknown id is answered `earliest`.
    let sse = SseClient::subscribe(&url, &[("Last-Event-ID", "nope")]).await;
    assert_eq!(sse.header("mercure-last-event-id"), Some("earliest"));
}

#[tokio::test]
async fn jwk_set_from_a_file_with_rotation() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("jwks.json");
    let secret_a = "first-secret-0123456789-abcdefghijklmnop";
    let secret_b = "second-secret-0123456789-abcdefghijklmno";
    let write_set = |kid: &str, secret: &str| {
        std::fs::write(&path, json!({"keys": [oct_jwk(kid, secret)]}).to_string())
            .expect("write the JWK Set");
    };
    write_set("a", secret_a);
    let issuer = format!(
        "{ISSUER} jwks_uri=file://{} alg=HS256 authorization_server",
        path.display()
    );
    let hub = spawn_hub(&[
        "--issuer",
        &issuer,
        "--resource-identifier",
        RESOURCE,
        "--jwks-refresh",
        "1s",
    ])
    .await;
    let details = json!([authorization_detail(&["publish"], json!([{"match": "*"}]))]);
    let claims = access_claims(ISSUER, RESOURCE, details);
    let signed_a = access_token(secret_a, Some("a"), &claims);
    let signed_b = access_token(secret_b, Some("b"), &claims);
    let fields = [("topic", "a"), ("data", "x")];
    let status = async |token: &str| post(&hub, token, &[], &fields).await.status().as_u16();
    assert_eq!(status(&signed_a).await, 200);
    assert_eq!(status(&signed_b).await, 401);

    // The issuer rotates: key b replaces key a.
    write_set("b", secret_b);
    assert!(
        poll_until(WAIT, async || status(&signed_b).await == 200).await,
        "the new key is picked up"
    );
    assert_eq!(status(&signed_a).await, 401, "the retired key is dropped");

    assert_eq!(
        metadata(&hub).await["authorization_servers"],
        json!([ISSUER])
    );
}

#[tokio::test]
async fn discovery_metadata_and_debug_page() {
    let hub = spawn_hub(&current_hub(&["--subscriptions"])).await;
    let c = http_client();
    let r = c
        .get(format!(
            "{}/.well-known/oauth-protected-resource/.well-known/mercure",
            hub.url()
        ))
        .send()
        .await
        .expect("metadata");
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .expect("ASCII")
        .starts_with("application/json"));
    let meta: Value = r.json().await.expect("a JSON document");
    assert_eq!(
        meta,
        json!({
            "resource": RESOURCE,
            "authorization_details_types_supported": [AUTHORIZATION_DETAIL_TYPE],
            "bearer_methods_supported": ["header"],
            "mercure_cookie": "__Secure-mercure_access_token",
            "mercure_subscriptions": true,
        })
    );
    // The debugger lives under the hub's path; `/` leads there.
    let r = c.get(format!("{}/", hub.url())).send().await.expect("page");
    assert_eq!(r.status(), 200);
    assert_eq!(r.url().path(), "/.well-known/mercure/debug/");
    assert!(r.headers()["content-type"]
        .to_str()
        .expect("ASCII")
        .starts_with("text/html"));
    assert!(r
        .text()
        .await
        .expect("body")
        .contains("/.well-known/mercure"));

    let off = spawn_hub(&["--debug-page", "false"]).await;
    let r = c
        .get(format!("{}/", off.url()))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 404);
}
