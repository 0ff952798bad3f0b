//! Active subscriptions on one node, over real HTTP: subscription events in both generations'
//! shapes (private, `event: mercure` for the current one), and the subscription API (shapes,
//! `Link`, `ETag`/`If-None-Match`, 401/403/404). The cluster-wide registry and SIGKILL recovery
//! are in `cluster.rs`.

use quicksilver_testkit::hub::{encode_form, metric};
use quicksilver_testkit::token::{
    access_claims, access_token, mercure_claims, sign_hs256, AUTHORIZATION_DETAIL_TYPE,
};
use quicksilver_testkit::{
    http_client, mercure_token, spawn_hub, InProcessHub, SseClient, SseStream, SHORT, TEST_JWT_KEY,
    WAIT,
};
use serde_json::{json, Value};

const ISSUER: &str = "https://issuer.example";
const RESOURCE: &str = "https://hub.example/.well-known/mercure";

/// An access token of [`ISSUER`] for [`RESOURCE`] with these `authorization_details`.
fn current_token(details: Value) -> String {
    access_token(
        TEST_JWT_KEY,
        None,
        &access_claims(ISSUER, RESOURCE, details),
    )
}

/// A legacy token with a `mercure.payload`.
fn legacy_token_with_payload(subscribe: &[&str], payload: Value) -> String {
    let mut claims = mercure_claims(&[], subscribe, None);
    claims["mercure"]["payload"] = payload;
    sign_hs256(TEST_JWT_KEY, &claims)
}

async fn start() -> InProcessHub {
    spawn_hub(&[
        "--issuer",
        ISSUER,
        "--resource-identifier",
        RESOURCE,
        "--subscriptions",
        "--anonymous",
    ])
    .await
}

/// Subscribes to `pairs` (form-encoded into the query) with `headers`; the hub must answer 200.
async fn subscribe(
    hub: &InProcessHub,
    pairs: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> SseStream {
    let url = format!("{}?{}", hub.mercure_url(), encode_form(pairs));
    SseClient::subscribe(&url, headers).await
}

async fn get(
    c: &reqwest::Client,
    url: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut r = c.get(url).bearer_auth(token);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.expect("an answer")
}

#[tokio::test]
async fn legacy_subscription_events_and_api() {
    let hub = start().await;
    let c = http_client();
    let watcher_token = mercure_token(
        TEST_JWT_KEY,
        &[],
        &[
            "/.well-known/mercure/subscriptions",
            "/.well-known/mercure/subscriptions/{topic}",
            "/.well-known/mercure/subscriptions/{topic}/{subscriber}",
        ],
        None,
    );
    let watched = [(
        "topic",
        "/.well-known/mercure/subscriptions/{topic}/{subscriber}",
    )];
    let mut watcher = subscribe(
        &hub,
        &watched,
        &[("Authorization", &format!("Bearer {watcher_token}"))],
    )
    .await;
    // An anonymous subscriber to the same topics never sees these private events.
    let mut anonymous = subscribe(&hub, &watched, &[]).await;
    // The watcher's own subscription is announced first.
    let own = watcher
        .next_event(WAIT)
        .await
        .expect("own subscription event");
    let own: Value = serde_json::from_str(&own.data).unwrap();
    assert_eq!(
        own["topic"],
        "/.well-known/mercure/subscriptions/{topic}/{subscriber}"
    );
    // The anonymous subscriber's subscription too.
    watcher
        .next_event(WAIT)
        .await
        .expect("anonymous subscription event");

    let subscriber_token = legacy_token_with_payload(
        &["https://example.com/books/{id}"],
        json!({"user": "alice"}),
    );
    let book_selector = "https://example.com/books/{id}";
    let subscriber = subscribe(
        &hub,
        &[("topic", book_selector)],
        &[("Authorization", &format!("Bearer {subscriber_token}"))],
    )
    .await;
    assert_eq!(subscriber.status(), 200);
    let e = watcher.next_event(WAIT).await.expect("subscription event");
    assert_eq!(
        e.event_type, "message",
        "legacy events have the default type"
    );
    let doc: Value = serde_json::from_str(&e.data).unwrap();
    assert_eq!(doc["@context"], "https://mercure.rocks/");
    assert_eq!(doc["type"], "Subscription");
    assert_eq!(doc["topic"], book_selector);
    assert_eq!(doc["active"], true);
    assert_eq!(doc["payload"], json!({"user": "alice"}));
    let subscriber_id = doc["subscriber"].as_str().unwrap().to_string();
    assert!(subscriber_id.starts_with("urn:uuid:"));
    let id = doc["id"].as_str().unwrap().to_string();
    assert_eq!(
        id,
        format!(
            "/.well-known/mercure/subscriptions/https%3A%2F%2Fexample.com%2Fbooks%2F%7Bid%7D/{}",
            enc_unreserved(&subscriber_id)
        )
    );

    // The API, in the legacy shape.
    let api = format!("{}/.well-known/mercure/subscriptions", hub.url());
    let r = get(&c, &api, &watcher_token, &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/ld+json");
    assert_eq!(
        r.headers()["link"],
        "</.well-known/mercure>; rel=\"mercure\""
    );
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let all: Value = r.json().await.unwrap();
    assert_eq!(all["type"], "Subscriptions");
    assert_eq!(all["@context"], "https://mercure.rocks/");
    assert_eq!(
        format!("\"{}\"", all["lastEventID"].as_str().unwrap()),
        etag
    );
    let subs = all["subscriptions"].as_array().unwrap();
    assert_eq!(subs.len(), 3, "{all}");
    assert!(subs.iter().any(|s| s["id"] == id.as_str()));

    let r = get(&c, &api, &watcher_token, &[("If-None-Match", &etag)]).await;
    assert_eq!(r.status(), 304);

    let r = get(&c, &format!("{}{}", hub.url(), id), &watcher_token, &[]).await;
    assert_eq!(r.status(), 200);
    let one: Value = r.json().await.unwrap();
    assert_eq!(one["id"], id.as_str());
    assert!(one["lastEventID"].is_string());

    let collection = format!(
        "{}/.well-known/mercure/subscriptions/{}",
        hub.url(),
        enc_unreserved(book_selector)
    );
    let r = get(&c, &collection, &watcher_token, &[]).await;
    assert_eq!(r.status(), 200);
    let col: Value = r.json().await.unwrap();
    assert_eq!(col["subscriptions"].as_array().unwrap().len(), 1);

    // A token without a matching grant: 403; none: 401.
    let r = get(
        &c,
        &api,
        &mercure_token(TEST_JWT_KEY, &[], &["https://example.com/books/{id}"], None),
        &[],
    )
    .await;
    assert_eq!(r.status(), 403);
    let r = c.get(&api).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // The subscriber leaves: its inactive event, and the API forgets it.
    drop(subscriber);
    let e = watcher.next_event(WAIT).await.expect("inactive event");
    let doc: Value = serde_json::from_str(&e.data).unwrap();
    assert_eq!(
        (doc["id"].as_str(), doc["active"].as_bool()),
        (Some(id.as_str()), Some(false))
    );
    let r = get(&c, &format!("{}{}", hub.url(), id), &watcher_token, &[]).await;
    assert_eq!(r.status(), 404);
    let r = get(&c, &api, &watcher_token, &[("If-None-Match", &etag)]).await;
    assert_eq!(
        r.status(),
        200,
        "the cursor moved: the cached list is stale"
    );

    // Private events stay private.
    anonymous.assert_no_event(SHORT).await;
}

#[tokio::test]
async fn current_subscription_events_and_api() {
    let hub = start().await;
    let c = http_client();
    let pattern = "/.well-known/mercure/subscriptions/:match_type/:match/:subscriber";
    let watcher_token = current_token(json!([{
        "type": AUTHORIZATION_DETAIL_TYPE,
        "actions": ["subscribe"],
        "topics": [{"match": "/.well-known/mercure/subscriptions/*", "match_type": "urlpattern"},
                   {"match": "/.well-known/mercure/subscriptions", "match_type": "exact"}],
    }]));
    let mut watcher = subscribe(
        &hub,
        &[("match_urlpattern", pattern)],
        &[("Authorization", &format!("Bearer {watcher_token}"))],
    )
    .await;
    assert_eq!(watcher.status(), 200);
    let own = watcher.next_event(WAIT).await.expect("own event");
    assert_eq!(own.event_type, "mercure");

    let subscriber_token = current_token(json!([{
        "type": AUTHORIZATION_DETAIL_TYPE, "actions": ["subscribe"],
        "topics": [{"match": "https://example.com/:id", "match_type": "urlpattern"}],
        "payload": {"user": "bob"},
    }]));
    let subscriber = subscribe(
        &hub,
        &[("match", "https://example.com/a-topic")],
        &[("Authorization", &format!("Bearer {subscriber_token}"))],
    )
    .await;
    assert_eq!(subscriber.status(), 200);
    let e = watcher.next_event(WAIT).await.expect("subscription event");
    assert_eq!(e.event_type, "mercure");
    let doc: Value = serde_json::from_str(&e.data).unwrap();
    assert_eq!(doc["type"], "subscription");
    assert_eq!(doc["match_type"], "exact");
    assert_eq!(doc["match"], "https://example.com/a-topic");
    assert_eq!(doc["active"], true);
    assert_eq!(doc["payload"], json!({"user": "bob"}));
    assert!(doc.get("@context").is_none());
    let subscriber_id = doc["subscriber"].as_str().unwrap().to_string();
    let id = doc["id"].as_str().unwrap().to_string();
    assert_eq!(
        id,
        format!(
            "/.well-known/mercure/subscriptions/exact/https%3A%2F%2Fexample.com%2Fa-topic/{}",
            enc_unreserved(&subscriber_id)
        )
    );
    assert_eq!(
        e.id.as_deref().map(|i| i.starts_with("urn:uuid:")),
        Some(true)
    );

    let api = format!("{}/.well-known/mercure/subscriptions", hub.url());
    let r = get(&c, &api, &watcher_token, &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let link = r.headers()["link"].to_str().unwrap().to_string();
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert!(
        link.starts_with("</.well-known/mercure>; rel=\"mercure\"; last-event-id=\""),
        "{link}"
    );
    assert!(
        link.ends_with("; type=\"mercure\"; content-type=\"application/json\""),
        "{link}"
    );
    assert!(link.contains(etag.trim_matches('"')), "{link} vs {etag}");
    assert_eq!(r.headers()["cache-control"], "must-revalidate");
    let all: Value = r.json().await.unwrap();
    assert_eq!(all["type"], "subscriptions");
    assert_eq!(all["id"], "/.well-known/mercure/subscriptions");
    assert!(all.get("lastEventID").is_none());
    let ids: Vec<&str> = all["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{all}");
    assert!(ids.contains(&id.as_str()));

    let r = get(&c, &format!("{}{}", hub.url(), id), &watcher_token, &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        doc,
        "the single document is the event's"
    );
    let r = get(
        &c,
        &format!(
            "{api}/exact/{}",
            enc_unreserved("https://example.com/a-topic")
        ),
        &watcher_token,
        &[],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["subscriptions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let r = get(
        &c,
        &format!("{api}/exact/nope/urn%3Auuid%3Ax"),
        &watcher_token,
        &[],
    )
    .await;
    assert_eq!(r.status(), 404);
    // An unknown matcher type is a malformed request, as on the reference hub.
    let r = get(&c, &format!("{api}/regex/x"), &watcher_token, &[]).await;
    assert_eq!(r.status(), 400);

    assert_eq!(
        metric(&c, hub.url(), "quicksilver_active_subscriptions").await,
        Some(2.0)
    );

    // The subscriber's own token does not cover the subscriptions namespace.
    let r = get(&c, &api, &subscriber_token, &[]).await;
    assert_eq!(r.status(), 403);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("insufficient_scope"));

    drop(subscriber);
    let e = watcher.next_event(WAIT).await.expect("inactive event");
    let doc: Value = serde_json::from_str(&e.data).unwrap();
    assert_eq!(doc["active"], false);
    assert_eq!(doc["id"], id.as_str());
    assert_eq!(
        get(&c, &format!("{}{}", hub.url(), id), &watcher_token, &[])
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn without_the_setting_there_are_no_events_and_no_api() {
    let hub = spawn_hub(&["--anonymous"]).await;
    let c = http_client();
    let watcher = mercure_token(TEST_JWT_KEY, &[], &["*"], None);
    let mut sse = subscribe(
        &hub,
        &[("topic", "*")],
        &[("Authorization", &format!("Bearer {watcher}"))],
    )
    .await;
    let _other = subscribe(&hub, &[("topic", "a")], &[]).await;
    sse.assert_no_event(SHORT).await;
    let r = get(
        &c,
        &format!("{}/.well-known/mercure/subscriptions", hub.url()),
        &watcher,
        &[],
    )
    .await;
    assert_eq!(r.status(), 404);
}

/// Percent-encodes all but the unreserved characters, as subscription topics do.
fn enc_unreserved(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}
