//! `QUERY /.well-known/mercure`: a subscription whose parameters travel in the body, merged with the
//! URL's (every matcher of either; the URL's `last_event_id` over the body's, the `Last-Event-ID`
//! header over both), bounded like a publish body, allowed by CORS; every other unknown method is
//! `405`. And a token about to expire keeps its connection until it does.

use std::time::Duration;

use quicksilver_testkit::token::{mercure_token, now, publisher_token};
use quicksilver_testkit::TEST_JWT_KEY;
use quicksilver_testkit::{http_client, publish, spawn_hub, HubRouter, SseClient, SHORT, WAIT};

const FORM: &str = "application/x-www-form-urlencoded";

/// Opens a `QUERY` subscription on `url` with `body` and extra `headers`.
async fn query(url: &str, body: &str, headers: &[(&str, &str)]) -> quicksilver_testkit::SseStream {
    let mut all = vec![("Content-Type", FORM)];
    all.extend_from_slice(headers);
    SseClient::new()
        .open_with(
            reqwest::Method::from_bytes(b"QUERY").unwrap(),
            url,
            &all,
            body.to_string(),
        )
        .await
        .expect("a QUERY subscription")
}

#[tokio::test]
async fn query_subscribes_with_the_body_merged_with_the_url() {
    let hub = spawn_hub(&["--anonymous"]).await;
    let c = http_client();
    // One matcher in the URL, two in the body (both generations).
    let mut es = query(
        &format!("{}?match=https://example.com/a", hub.mercure_url()),
        "match_urlpattern=https%3A%2F%2Fexample.com%2Fbooks%2F%3Aid&topic=https%3A%2F%2Fexample.com%2Fusers%2F%7Bid%7D",
        &[],
    )
    .await;
    assert_eq!(es.status(), 200);
    assert_eq!(es.header("content-type"), Some("text/event-stream"));
    for topic in [
        "https://example.com/a",
        "https://example.com/books/1",
        "https://example.com/users/2",
        "https://example.com/unrelated",
    ] {
        let (status, _) = publish(
            &c,
            hub.url(),
            &publisher_token(),
            &[("topic", topic), ("data", topic)],
        )
        .await;
        assert_eq!(status, 200);
    }
    let data = es.data(3, WAIT).await.expect("three updates");
    assert_eq!(
        data,
        vec![
            "https://example.com/a",
            "https://example.com/books/1",
            "https://example.com/users/2"
        ]
    );
    es.assert_no_event(SHORT).await;
}

#[tokio::test]
async fn the_url_cursor_wins_over_the_body_and_the_header_over_both() {
    let hub = spawn_hub(&["--anonymous"]).await;
    let c = http_client();
    for id in ["one", "two", "three"] {
        let (status, _) = publish(
            &c,
            hub.url(),
            &publisher_token(),
            &[("topic", "t"), ("id", id), ("data", id)],
        )
        .await;
        assert_eq!(status, 200);
    }
    // The body alone carries the cursor: replay after it.
    let mut es = query(&hub.mercure_url(), "match=t&last_event_id=one", &[]).await;
    assert_eq!(es.header("mercure-last-event-id"), Some("one"));
    assert_eq!(es.ids(2, WAIT).await.unwrap(), vec!["two", "three"]);
    // URL and body: the URL's.
    let mut es = query(
        &format!("{}?last_event_id=two", hub.mercure_url()),
        "match=t&last_event_id=one",
        &[],
    )
    .await;
    assert_eq!(es.ids(1, WAIT).await.unwrap(), vec!["three"]);
    // The header over both.
    let mut es = query(
        &format!("{}?last_event_id=two", hub.mercure_url()),
        "match=t&last_event_id=one",
        &[("Last-Event-ID", "earliest")],
    )
    .await;
    assert_eq!(es.ids(3, WAIT).await.unwrap(), vec!["one", "two", "three"]);
    // A cursor sent empty replays nothing but is answered, `earliest`.
    for (url, headers) in [
        (hub.mercure_url() + "?match=t", vec![("Last-Event-ID", "")]),
        (hub.mercure_url() + "?match=t&last_event_id=", vec![]),
    ] {
        let mut es = SseClient::subscribe(&url, &headers).await;
        assert_eq!(
            es.header("mercure-last-event-id"),
            Some("earliest"),
            "{url}"
        );
        es.assert_no_event(SHORT).await;
    }
    let es = SseClient::subscribe(&(hub.mercure_url() + "?match=t"), &[]).await;
    assert_eq!(
        es.header("mercure-last-event-id"),
        None,
        "no cursor asked, none told"
    );
}

#[tokio::test]
async fn query_answers_like_get_and_its_body_is_bounded() {
    let router = HubRouter::new(&["--max-body-size", "512"]);
    let send = |target: &str, body: String, headers: &[(&str, &str)]| {
        let mut request = http::Request::builder()
            .method(http::Method::from_bytes(b"QUERY").unwrap())
            .uri(target)
            .header("Content-Type", FORM);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        router.send(request.body(axum::body::Body::from(body)).unwrap())
    };
    let r = send("/.well-known/mercure", "match=a".into(), &[]).await;
    assert_eq!(r.status, 401, "a subscriber needs a token, as with GET");
    let token = mercure_token(TEST_JWT_KEY, &[], &["*"], None);
    let bearer = format!("Bearer {token}");
    let r = send(
        "/.well-known/mercure",
        "match=a".into(),
        &[("Authorization", &bearer)],
    )
    .await;
    assert_eq!(r.status, 200);
    let r = send(
        "/.well-known/mercure",
        "".into(),
        &[("Authorization", &bearer)],
    )
    .await;
    assert_eq!(r.status, 400, "no matcher in either: {}", r.body);
    let r = send(
        "/.well-known/mercure",
        "match_typo=a".into(),
        &[("Authorization", &bearer)],
    )
    .await;
    assert_eq!(r.status, 400);
    let r = send(
        "/.well-known/mercure",
        format!("match={}", "a".repeat(600)),
        &[("Authorization", &bearer)],
    )
    .await;
    assert_eq!(r.status, 413, "over --max-body-size");
    // A token in the body is not read.
    let r = send(
        "/.well-known/mercure",
        format!("match=a&authorization={token}"),
        &[],
    )
    .await;
    assert_eq!(r.status, 401);

    // Other methods: 405 with the methods the hub URL takes.
    let r = router
        .send(
            http::Request::builder()
                .method(http::Method::PUT)
                .uri("/.well-known/mercure")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET,HEAD,POST,QUERY"));
}

#[tokio::test]
async fn cors_allows_query() {
    let router = HubRouter::new(&["--cors-origins", "https://app.example.com", "--anonymous"]);
    let r = router
        .send(
            http::Request::builder()
                .method(http::Method::OPTIONS)
                .uri("/.well-known/mercure")
                .header("Origin", "https://app.example.com")
                .header("Access-Control-Request-Method", "QUERY")
                .header(
                    "Access-Control-Request-Headers",
                    "content-type, last-event-id",
                )
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 200);
    let methods = r.header("access-control-allow-methods").unwrap_or_default();
    assert!(methods.contains("QUERY"), "{methods}");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    // Responses let scripts read the Link header (the subscription API's cursor) and the cursors.
    let r = router
        .get(
            "/.well-known/mercure/subscriptions",
            &[("Origin", "https://app.example.com")],
        )
        .await;
    let exposed = r
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    for header in ["link", "last-event-id", "mercure-last-event-id"] {
        assert!(exposed.contains(header), "{exposed}");
    }
}

#[tokio::test]
async fn a_cookie_query_from_another_origin_is_a_read_not_a_forgery() {
    // Cookie-authenticated writes must come from --publish-origins; a QUERY only reads.
    let hub = spawn_hub(&["--cors-origins", "https://app.example.com"]).await;
    let token = mercure_token(TEST_JWT_KEY, &[], &["*"], None);
    let es = query(
        &hub.mercure_url(),
        "match=a",
        &[
            ("Origin", "https://app.example.com"),
            ("Cookie", &format!("mercureAuthorization={token}")),
        ],
    )
    .await;
    assert_eq!(es.status(), 200);
}

#[tokio::test]
async fn a_token_about_to_expire_is_served_until_it_expires() {
    // A dispatch timeout far longer than what is left of the token must not close the connection
    // at once (the reference hub did until 1.0.0-alpha.1).
    let hub = spawn_hub(&["--dispatch-timeout", "60s"]).await;
    let soon = mercure_token(TEST_JWT_KEY, &[], &["*"], Some(now() + 3));
    let mut es = SseClient::subscribe(
        &format!("{}?topic=t", hub.mercure_url()),
        &[("Authorization", &format!("Bearer {soon}"))],
    )
    .await;
    let (status, _) = publish(
        &http_client(),
        hub.url(),
        &publisher_token(),
        &[("topic", "t"), ("data", "still here")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        es.next_event(WAIT).await.expect("an update").data,
        "still here"
    );
    assert!(
        es.closed_within(Duration::from_secs(8)).await,
        "closed at expiry"
    );
}
