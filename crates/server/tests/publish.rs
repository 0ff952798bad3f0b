//! Publishing: the answers of the README's status table (through the router, no socket needed), the
//! event id answer, the exeLearning flow, health, shutdown and metrics over real HTTP.

use std::time::Duration;

use axum::body::Body;
use quicksilver_testkit::token::{now, publisher_token};
use quicksilver_testkit::{
    http_client, hub::metric, mercure_token, publish, spawn_hub, HubRouter, SseClient,
    TEST_JWT_KEY, UNREACHABLE_REDIS, WAIT,
};

const FORM: &str = "application/x-www-form-urlencoded";

#[tokio::test]
async fn publish_answers_the_event_id_as_plain_text() {
    let hub = spawn_hub(&[]).await;
    let r = http_client()
        .post(hub.mercure_url())
        .bearer_auth(publisher_token())
        .header("Content-Type", FORM)
        .body("topic=a&id=urn%3Auuid%3A0b6d5a41-6a0c-4d5e-a5ab-3d1f3f7f5c11&data=%7B%7D")
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(
        r.text().await.expect("body"),
        "urn:uuid:0b6d5a41-6a0c-4d5e-a5ab-3d1f3f7f5c11"
    );
}

/// A row of the publish table: (status, when, Authorization, Content-Type, body, what the reason
/// names).
type Row<'a> = (u16, &'a str, Option<&'a str>, &'a str, &'a str, &'a str);

/// The README's table of publish answers, a row per case. The 408 row needs a paused clock and has its
/// own test below.
#[tokio::test]
async fn publish_answers_follow_the_status_table() {
    let hub = HubRouter::new(&[
        "--max-body-size",
        "2048",
        "--max-topics-per-update",
        "3",
        "--max-selector-length",
        "64",
    ]);
    let bearer = |publish: &[&str], subscribe: &[&str], exp: Option<i64>| {
        format!(
            "Bearer {}",
            mercure_token(TEST_JWT_KEY, publish, subscribe, exp)
        )
    };
    let publisher = bearer(&["*"], &[], None);
    let expired = bearer(&["*"], &[], Some(now() - 10));
    let books = bearer(&["https://ex.com/books/{id}"], &[], None);
    let subscriber = bearer(&[], &["*"], None);
    let big_body = format!("topic=a&data={}", "x".repeat(4096));
    let long_topic = format!("topic={}", "a".repeat(100));
    let json = "application/json";
    #[rustfmt::skip]
    let cases: &[Row] = &[
        (200, "stored: the token covers every topic", Some(&books), FORM, "topic=https%3A%2F%2Fex.com%2Fbooks%2F1", ""),
        (400, "no topic", Some(&publisher), FORM, "data=x", "topic"),
        (400, "a control character in an id", Some(&publisher), FORM, "topic=a&id=a%0Ab", "id"),
        (400, "a control character in a type", Some(&publisher), FORM, "topic=a&type=a%0Db", "type"),
        (400, "a control character in a topic", Some(&publisher), FORM, "topic=a%0Ab", "topic"),
        (400, "id `earliest`", Some(&publisher), FORM, "topic=a&id=earliest", "id"),
        (400, "an id starting with `#`", Some(&publisher), FORM, "topic=a&id=%23x", "id"),
        (400, "a non-integer retry", Some(&publisher), FORM, "topic=a&retry=soon", "retry"),
        (400, "data not UTF-8", Some(&publisher), FORM, "topic=a&data=%FF", "UTF-8"),
        (400, "type `mercure`", Some(&publisher), FORM, "topic=a&type=mercure", "type"),
        (400, "topic `*` (reserved)", Some(&publisher), FORM, "topic=*", "reserved"),
        (400, "a topic under /.well-known/mercure (reserved)", Some(&publisher), FORM, "topic=%2F.well-known%2Fmercure%2Fsubscriptions%2Fx", "reserved"),
        (401, "no token", None, FORM, "topic=a", ""),
        (401, "an invalid token", Some("Bearer nope"), FORM, "topic=a", ""),
        (401, "an expired token", Some(&expired), FORM, "topic=a", ""),
        (403, "a topic no publish selector matches", Some(&books), FORM, "topic=https%3A%2F%2Fex.com%2Fbooks%2F1&topic=other", ""),
        (403, "a valid token without publish selectors", Some(&subscriber), FORM, "topic=a", ""),
        (413, "a body over --max-body-size", Some(&publisher), FORM, &big_body, ""),
        (413, "more than --max-topics-per-update topics", Some(&publisher), FORM, "topic=a&topic=b&topic=c&topic=d", ""),
        (413, "a field over --max-selector-length", Some(&publisher), FORM, &long_topic, ""),
        (415, "another content type", Some(&publisher), json, "{}", ""),
    ];
    for (status, when, authorization, content_type, body, reason) in cases {
        let mut headers = vec![("Content-Type", *content_type)];
        if let Some(authorization) = authorization {
            headers.push(("Authorization", authorization));
        }
        let answer = hub.publish(&headers, body.to_string()).await;
        assert_eq!(answer.status, *status, "{when}: {}", answer.body);
        assert!(answer.body.contains(reason), "{when}: {}", answer.body);
    }

    // 503: the transport could not store the update.
    let unstored = HubRouter::new(&UNREACHABLE_REDIS);
    let answer = unstored
        .publish(&[("Authorization", &publisher)], "topic=a")
        .await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.header("retry-after"), Some("1"));
}

/// 408: a body that does not arrive within 30 s, on Tokio's paused clock.
#[tokio::test(start_paused = true)]
async fn a_body_that_does_not_arrive_is_answered_408() {
    let hub = HubRouter::new(&[]);
    let never = futures_util::stream::pending::<Result<Vec<u8>, std::io::Error>>();
    let authorization = format!("Bearer {}", publisher_token());
    let started = tokio::time::Instant::now();
    let answer = hub
        .publish(
            &[("Authorization", &authorization)],
            Body::from_stream(never),
        )
        .await;
    assert_eq!(answer.status, 408, "{}", answer.body);
    assert!(started.elapsed() >= Duration::from_secs(30));
}

#[tokio::test]
async fn exelearning_flow_works_unchanged() {
    // One HS256 token without exp granting everything, used both to publish from the browser and to
    // subscribe with the token and the last event id in the query string.
    let hub = spawn_hub(&["--cors-origins", "https://exe.example.com"]).await;
    let c = http_client();
    let jwt = mercure_token(TEST_JWT_KEY, &["*"], &["*"], None);
    let session = "20251122abcdef";
    let first = "3f0c2b8e-8a4e-4f0a-9a57-9b1f7f3c2d10";
    let r = c
        .post(hub.mercure_url())
        .header("Origin", "https://exe.example.com")
        .bearer_auth(&jwt)
        .header("Content-Type", FORM)
        .body(format!(
            "topic={session}&id={first}&data=%7B%22action%22%3A%22edit%22%7D"
        ))
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), first);
    let second = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a";
    let (status, _) = publish(
        &c,
        hub.url(),
        &jwt,
        &[
            ("topic", session),
            ("id", second),
            ("data", "{\"n\":2}"),
            ("private", "on"),
        ],
    )
    .await;
    assert_eq!(status, 200);

    let url = format!(
        "{}?topic={session}&authorization={jwt}&lastEventID={first}",
        hub.mercure_url()
    );
    let mut es = SseClient::connect(&url, &[("Origin", "https://exe.example.com")])
        .await
        .expect("subscribe");
    assert_eq!(es.status(), 200);
    assert_eq!(
        es.header("access-control-allow-origin"),
        Some("https://exe.example.com")
    );
    let e = es.next_event(WAIT).await.expect("the private update");
    assert_eq!(
        (e.id.as_deref(), e.data.as_str()),
        (Some(second), "{\"n\":2}")
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let hub = spawn_hub(&[]).await;
    let c = http_client();
    for probe in ["healthz", "readyz"] {
        let r = c.get(format!("{}/{probe}", hub.url())).send().await;
        assert_eq!(r.expect(probe).status(), 200, "{probe}");
    }
}

#[tokio::test]
async fn shutdown_ends_open_streams() {
    let hub = spawn_hub(&["--anonymous"]).await;
    let mut sse = SseClient::connect(&format!("{}?topic=t", hub.mercure_url()), &[])
        .await
        .expect("subscribe");
    sse.next_item(WAIT).await.expect("the preamble");
    let stopping = tokio::spawn(hub.shutdown());
    assert!(sse.closed_within(WAIT).await);
    stopping.await.expect("the hub stopped");
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let hub = spawn_hub(&["--anonymous"]).await;
    let c = http_client();
    let sse = SseClient::new();
    let url = |query: &str| format!("{}?{query}", hub.mercure_url());
    let mut a = sse
        .open(&url("topic=t&topic=https%3A%2F%2Fex.com%2F%7Bx%7D"), &[])
        .await
        .expect("subscribe");
    let mut b = sse.open(&url("topic=*"), &[]).await.expect("subscribe");
    let publisher = publisher_token();
    for i in 0..3 {
        let (status, _) = publish(
            &c,
            hub.url(),
            &publisher,
            &[("topic", "t"), ("id", &i.to_string())],
        )
        .await;
        assert_eq!(status, 200);
    }
    for s in [&mut a, &mut b] {
        s.events(3, WAIT).await.expect("three updates");
    }
    let mut replay = sse
        .open(&url("topic=t"), &[("Last-Event-ID", "0")])
        .await
        .expect("subscribe");
    replay.next_event(WAIT).await.expect("a replayed update");
    let (status, _) = publish(&c, hub.url(), "", &[("topic", "t")]).await;
    assert_eq!(status, 401);

    for (name, value) in [
        ("quicksilver_subscribers", 3.0),
        ("quicksilver_subscriptions{kind=\"exact\"}", 2.0),
        ("quicksilver_subscriptions{kind=\"wildcard\"}", 1.0),
        ("quicksilver_subscriptions{kind=\"template\"}", 1.0),
        ("quicksilver_updates_published_total", 3.0),
        ("quicksilver_updates_delivered_total", 6.0),
        ("quicksilver_updates_replayed_total", 2.0),
        ("quicksilver_slow_subscriber_disconnections_total", 0.0),
        ("quicksilver_transport_ready", 1.0),
        ("quicksilver_history_cache_hits_total", 1.0),
        ("quicksilver_history_cache_misses_total", 0.0),
        ("quicksilver_publish_duration_seconds_count", 3.0),
        ("quicksilver_delivery_latency_seconds_count", 6.0),
        (
            "quicksilver_http_responses_total{route=\"/.well-known/mercure\",method=\"POST\",status=\"401\"}",
            1.0,
        ),
    ] {
        assert_eq!(metric(&c, hub.url(), name).await, Some(value), "{name}");
    }
}

#[tokio::test]
async fn a_publisher_token_presented_again_is_taken_from_the_token_cache() {
    let c = http_client();
    let publisher = publisher_token();
    let hub = spawn_hub(&[]).await;
    for _ in 0..3 {
        let (status, _) = publish(&c, hub.url(), &publisher, &[("topic", "t")]).await;
        assert_eq!(status, 200);
    }
    // A forged token is verified (and refused) every time, never remembered.
    let (status, _) = publish(
        &c,
        hub.url(),
        &mercure_token("another-key-another-key-another-key", &["*"], &[], None),
        &[("topic", "t")],
    )
    .await;
    assert_eq!(status, 401);
    for (name, value) in [
        (
            "quicksilver_token_cache_hits_total{role=\"publisher\"}",
            2.0,
        ),
        (
            "quicksilver_token_cache_misses_total{role=\"publisher\"}",
            2.0,
        ),
        ("quicksilver_token_cache_entries{role=\"publisher\"}", 1.0),
    ] {
        assert_eq!(metric(&c, hub.url(), name).await, Some(value), "{name}");
    }

    let uncached = spawn_hub(&["--token-cache-size", "0"]).await;
    for _ in 0..2 {
        let (status, _) = publish(&c, uncached.url(), &publisher, &[("topic", "t")]).await;
        assert_eq!(status, 200);
    }
    assert_eq!(
        metric(
            &c,
            uncached.url(),
            "quicksilver_token_cache_hits_total{role=\"publisher\"}"
        )
        .await,
        None
    );
}
