//! Subscribing over real HTTP: selectors, headers, private updates, history and replay-then-live; the
//! refusals (status table through the router, no socket needed).

use std::time::Duration;

use quicksilver_testkit::hub::metric;
use quicksilver_testkit::token::{now, publisher_token, sign_hs256};
use quicksilver_testkit::{
    http_client, mercure_token, publish, spawn_hub, wait_until, HubRouter, SseClient, SseItem,
    SseStream, SHORT, TEST_JWT_KEY, WAIT,
};

/// A token whose subscribe grants are `subscribe`.
fn subscriber(subscribe: &[&str]) -> String {
    mercure_token(TEST_JWT_KEY, &[], subscribe, None)
}

/// The ids of the next `n` events.
async fn ids(stream: &mut SseStream, n: usize) -> Vec<String> {
    let events = stream.events(n, WAIT).await.expect("events");
    events
        .into_iter()
        .map(|e| e.id.unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn stream_opens_at_once_with_the_right_headers() {
    let hub = spawn_hub(&["--anonymous"]).await;
    let mut sse = SseClient::subscribe(&format!("{}?topic=a", hub.mercure_url()), &[]).await;
    assert_eq!(sse.header("content-type"), Some("text/event-stream"));
    assert_eq!(
        sse.header("cache-control"),
        Some("private, no-cache, no-store, must-revalidate, max-age=0")
    );
    assert_eq!(sse.header("x-accel-buffering"), Some("no"));
    assert_eq!(sse.header("last-event-id"), None);
    // The preamble comment arrives before any update exists.
    assert_eq!(
        sse.next_item(WAIT).await.expect("the preamble"),
        SseItem::Comment(String::new())
    );
}

#[tokio::test]
async fn exact_wildcard_and_template_selectors() {
    let hub = spawn_hub(&["--anonymous"]).await;
    let c = http_client();
    let url = |q: &str| format!("{}?{q}", hub.mercure_url());
    let mut exact = SseClient::subscribe(&url("topic=https%3A%2F%2Fex.com%2Fbooks%2F1"), &[]).await;
    let mut all = SseClient::subscribe(&url("topic=*"), &[]).await;
    let mut tpl =
        SseClient::subscribe(&url("topic=https%3A%2F%2Fex.com%2Fbooks%2F%7Bid%7D"), &[]).await;
    let mut other = SseClient::subscribe(
        &url("topic=https%3A%2F%2Fex.com%2Fauthors%2F%7Bid%7D&topic=nope"),
        &[],
    )
    .await;

    let token = publisher_token();
    let (status, id) = publish(
        &c,
        hub.url(),
        &token,
        &[("topic", "https://ex.com/books/1"), ("data", "one")],
    )
    .await;
    assert_eq!(status, 200);
    assert!(id.starts_with("urn:uuid:"), "{id}");
    let (status, _) = publish(
        &c,
        hub.url(),
        &token,
        &[
            ("topic", "https://ex.com/books/2/chapters"),
            ("data", "two"),
        ],
    )
    .await;
    assert_eq!(status, 200);

    let e = exact.next_event(WAIT).await.expect("one");
    assert_eq!(
        (e.id.as_deref(), e.data.as_str()),
        (Some(id.as_str()), "one")
    );
    assert_eq!(all.data(2, WAIT).await.expect("both"), ["one", "two"]);
    assert_eq!(tpl.next_event(WAIT).await.expect("one").data, "one");
    // {id} does not match across a slash.
    tpl.assert_no_event(SHORT).await;
    other.assert_no_event(SHORT).await;
    exact.assert_no_event(SHORT).await;
}

#[tokio::test]
async fn alternate_topics_multiline_data_type_and_retry() {
    let hub = spawn_hub(&["--anonymous"]).await;
    let mut sse = SseClient::subscribe(&format!("{}?topic=alt", hub.mercure_url()), &[]).await;
    let (status, _) = publish(
        &http_client(),
        hub.url(),
        &publisher_token(),
        &[
            ("topic", "canonical"),
            ("topic", "alt"),
            ("data", "l1\nl2\r\nl3"),
            ("id", "my-id"),
            ("type", "edit"),
            ("retry", "1500"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let e = sse.next_event(WAIT).await.expect("the update");
    assert_eq!(e.id.as_deref(), Some("my-id"));
    assert_eq!(e.event_type, "edit");
    assert_eq!(e.retry, Some(1500));
    assert_eq!(e.data, "l1\nl2\nl3");
}

#[tokio::test]
async fn private_updates_follow_the_subscribe_grants_for_every_token_location() {
    let hub = spawn_hub(&["--anonymous"]).await;
    let c = http_client();
    let topic_q = format!(
        "{}?topic=https%3A%2F%2Fex.com%2Fdocs%2F%7Bid%7D",
        hub.mercure_url()
    );
    let granted = subscriber(&["https://ex.com/docs/{id}"]);
    let wrong = subscriber(&["https://ex.com/other/{id}"]);

    let mut anonymous = SseClient::subscribe(&topic_q, &[]).await;
    let mut by_header =
        SseClient::subscribe(&topic_q, &[("Authorization", &format!("Bearer {granted}"))]).await;
    let mut by_query =
        SseClient::subscribe(&format!("{topic_q}&authorization={granted}"), &[]).await;
    let mut by_cookie = SseClient::subscribe(
        &topic_q,
        &[(
            "Cookie",
            &format!("other=1; mercureAuthorization={granted}"),
        )],
    )
    .await;
    let mut wrong_grant =
        SseClient::subscribe(&topic_q, &[("Authorization", &format!("Bearer {wrong}"))]).await;

    let p = publisher_token();
    for form in [
        [
            ("topic", "https://ex.com/docs/1"),
            ("data", "secret"),
            ("private", "on"),
        ]
        .as_slice(),
        &[("topic", "https://ex.com/docs/1"), ("data", "public")],
    ] {
        assert_eq!(publish(&c, hub.url(), &p, form).await.0, 200);
    }

    for s in [&mut by_header, &mut by_query, &mut by_cookie] {
        assert_eq!(s.data(2, WAIT).await.expect("both"), ["secret", "public"]);
    }
    for s in [&mut anonymous, &mut wrong_grant] {
        assert_eq!(s.next_event(WAIT).await.expect("public").data, "public");
    }
}

/// A row of the subscription table: (status, when, hub, target, Authorization).
type Row<'a> = (u16, &'a str, &'a HubRouter, &'a str, Option<&'a str>);

/// The refusals of a subscription (and the answers around them), a row per case, on a hub with anonymous
/// subscribers off and on.
#[tokio::test]
async fn subscribe_answers_follow_the_status_table() {
    let hub = HubRouter::new(&[]);
    let anonymous = HubRouter::new(&["--anonymous"]);
    let bearer = |token: &str| format!("Bearer {token}");
    let expired = bearer(&mercure_token(TEST_JWT_KEY, &[], &["*"], Some(now() - 60)));
    let other_key = bearer(&sign_hs256(
        "another key entirely",
        &serde_json::json!({"mercure": {"subscribe": ["*"]}}),
    ));
    let no_exp = bearer(&subscriber(&["*"]));
    let invalid_in_query = "/.well-known/mercure?topic=a&authorization=not.a.valid-token-at-all-but-long-enough-to-pass";
    #[rustfmt::skip]
    let cases: &[Row] = &[
        (200, "a token without exp is valid", &hub, "/.well-known/mercure?topic=a", Some(&no_exp)),
        (400, "no matcher", &hub, "/.well-known/mercure", Some(&no_exp)),
        (400, "another match* parameter", &anonymous, "/.well-known/mercure?topic=a&match_other=b", None),
        (400, "a control character in a selector", &anonymous, "/.well-known/mercure?topic=a%0Ab", None),
        (400, "an invalid URI template", &anonymous, "/.well-known/mercure?topic=%7Bunclosed", None),
        (401, "no token, anonymous subscribers off", &hub, "/.well-known/mercure?topic=a", None),
        (401, "an invalid token in the query", &hub, invalid_in_query, None),
        (401, "an expired token", &hub, "/.well-known/mercure?topic=a", Some(&expired)),
        (401, "a token signed with another key", &hub, "/.well-known/mercure?topic=a", Some(&other_key)),
        (401, "an invalid token, even with anonymous subscribers on", &anonymous, "/.well-known/mercure?topic=a", Some(&expired)),
    ];
    for (status, when, hub, target, authorization) in cases {
        let headers: Vec<(&str, &str)> = authorization
            .iter()
            .map(|a| ("Authorization", *a))
            .collect();
        let answer = hub.get(target, &headers).await;
        assert_eq!(answer.status, *status, "{when}: {}", answer.body);
    }
}

#[tokio::test]
async fn history_replays_after_the_last_event_id_by_header_query_and_earliest() {
    let hub = spawn_hub(&["--anonymous", "--history-size", "5"]).await;
    let c = http_client();
    let p = publisher_token();
    for i in 1..=7 {
        let id = format!("id-{i}");
        let topic = if i == 4 { "other" } else { "t" };
        let form = [("topic", topic), ("id", &id), ("data", &id)];
        assert_eq!(publish(&c, hub.url(), &p, &form).await.0, 200);
    }
    // History holds id-3..id-7.
    let url = format!("{}?topic=t", hub.mercure_url());
    let mut by_header = SseClient::subscribe(&url, &[("Last-Event-ID", "id-3")]).await;
    assert_eq!(by_header.header("last-event-id"), Some("id-3"));
    assert_eq!(by_header.header("mercure-last-event-id"), Some("id-3"));
    assert_eq!(ids(&mut by_header, 3).await, ["id-5", "id-6", "id-7"]);
    let mut by_query = SseClient::subscribe(&format!("{url}&lastEventID=id-5"), &[]).await;
    assert_eq!(by_query.header("last-event-id"), Some("id-5"));
    assert_eq!(ids(&mut by_query, 2).await, ["id-6", "id-7"]);
    // The header wins over the query parameter.
    let mut both = SseClient::subscribe(
        &format!("{url}&lastEventID=id-3"),
        &[("Last-Event-ID", "id-6")],
    )
    .await;
    assert_eq!(ids(&mut both, 1).await, ["id-7"]);

    let mut earliest = SseClient::subscribe(&format!("{url}&lastEventID=earliest"), &[]).await;
    assert_eq!(earliest.header("last-event-id"), Some("earliest"));
    assert_eq!(
        ids(&mut earliest, 4).await,
        ["id-3", "id-5", "id-6", "id-7"]
    );
    // Evicted (id-1) or unknown: nothing replayed, answered `earliest`.
    for gone in ["id-1", "never-published"] {
        let mut s = SseClient::subscribe(&url, &[("Last-Event-ID", gone)]).await;
        assert_eq!(s.header("last-event-id"), Some("earliest"));
        s.assert_no_event(SHORT).await;
    }
    // Then live updates continue after the replay.
    let form = [("topic", "t"), ("id", "id-8")];
    assert_eq!(publish(&c, hub.url(), &p, &form).await.0, 200);
    for s in [&mut by_header, &mut by_query, &mut both, &mut earliest] {
        assert_eq!(ids(s, 1).await, ["id-8"]);
    }
}

#[tokio::test]
async fn a_non_ascii_last_event_id_header_resumes_like_any_other() {
    // Publishers may choose any id; browsers send it back as UTF-8 bytes in `Last-Event-ID`.
    let hub = spawn_hub(&["--anonymous"]).await;
    let c = http_client();
    let p = publisher_token();
    for id in ["urn:é-1", "urn:é-2", "urn:é-3"] {
        let form = [("topic", "t"), ("id", id), ("data", id)];
        assert_eq!(publish(&c, hub.url(), &p, &form).await.0, 200);
    }
    let url = format!("{}?topic=t", hub.mercure_url());
    let mut s = SseClient::subscribe(&url, &[("Last-Event-ID", "urn:é-1")]).await;
    assert_eq!(s.header("last-event-id"), Some("urn:é-1"));
    assert_eq!(ids(&mut s, 2).await, ["urn:é-2", "urn:é-3"]);
    s.assert_no_event(SHORT).await;
}

#[tokio::test]
async fn private_updates_are_filtered_on_replay_too() {
    let hub = spawn_hub(&["--anonymous"]).await;
    let c = http_client();
    let p = publisher_token();
    for form in [
        [("topic", "t"), ("id", "a")].as_slice(),
        &[("topic", "t"), ("id", "secret"), ("private", "")],
        &[("topic", "t"), ("id", "b")],
    ] {
        assert_eq!(publish(&c, hub.url(), &p, form).await.0, 200);
    }
    let url = format!("{}?topic=t&lastEventID=a", hub.mercure_url());
    let mut anon = SseClient::subscribe(&url, &[]).await;
    assert_eq!(ids(&mut anon, 1).await, ["b"]);
    let t = subscriber(&["t"]);
    let mut granted =
        SseClient::subscribe(&url, &[("Authorization", &format!("Bearer {t}"))]).await;
    assert_eq!(ids(&mut granted, 2).await, ["secret", "b"]);
}

#[tokio::test]
async fn no_gap_and_no_duplicate_between_replay_and_live_under_concurrent_publishing() {
    let hub = spawn_hub(&["--anonymous", "--history-size", "100000"]).await;
    let c = http_client();
    let p = publisher_token();
    publish(&c, hub.url(), &p, &[("topic", "t"), ("id", "0")]).await;
    let total = 600;
    let publisher = {
        let (c, url, p) = (c.clone(), hub.url().to_owned(), p.clone());
        tokio::spawn(async move {
            for i in 1..=total {
                let id = i.to_string();
                let (status, _) = publish(&c, &url, &p, &[("topic", "t"), ("id", &id)]).await;
                assert_eq!(status, 200);
            }
        })
    };
    // Subscribers join at various moments while updates flow, each resuming from the first id.
    let mut subs = Vec::new();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(15)).await;
        subs.push(
            SseClient::subscribe(
                &format!("{}?topic=t", hub.mercure_url()),
                &[("Last-Event-ID", "0")],
            )
            .await,
        );
    }
    publisher.await.expect("publisher");
    let all: Vec<String> = (1..=total).map(|i| i.to_string()).collect();
    for s in &mut subs {
        assert_eq!(
            ids(s, total).await,
            all,
            "an update is missing or out of order"
        );
        // No duplicate after the last update.
        s.assert_no_event(SHORT).await;
    }
}

#[tokio::test]
async fn heartbeats_arrive_on_idle_streams() {
    let hub = spawn_hub(&["--anonymous", "--heartbeat", "100ms"]).await;
    let mut sse = SseClient::subscribe(&format!("{}?topic=t", hub.mercure_url()), &[]).await;
    for _ in 0..4 {
        match sse.next_item(WAIT).await {
            Ok(SseItem::Comment(_)) => {}
            other => panic!("expected a heartbeat, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn connections_end_after_the_write_timeout() {
    let hub = spawn_hub(&["--anonymous", "--write-timeout", "300ms"]).await;
    let mut sse = SseClient::subscribe(&format!("{}?topic=t", hub.mercure_url()), &[]).await;
    assert!(sse.closed_within(WAIT).await);
}

#[tokio::test]
async fn a_slow_subscriber_is_cut_off_while_a_fast_one_keeps_receiving() {
    let hub = spawn_hub(&[
        "--anonymous",
        "--subscriber-queue",
        "8",
        "--history-size",
        "10",
    ])
    .await;
    let c = http_client();
    let url = format!("{}?topic=t", hub.mercure_url());
    let mut slow = SseClient::subscribe(&url, &[]).await;
    let mut fast = SseClient::subscribe(&url, &[]).await;
    let p = publisher_token();
    let data = "x".repeat(64 * 1024);
    let total = 300; // ~19 MiB: far more than socket buffers hold
    let reader = tokio::spawn(async move {
        for i in 1..=total {
            let e = fast
                .next_event(WAIT)
                .await
                .expect("fast subscriber missed an update");
            assert_eq!(e.id, Some(i.to_string()));
        }
    });
    for i in 1..=total {
        let id = i.to_string();
        let form = [("topic", "t"), ("id", &id), ("data", &data)];
        assert_eq!(publish(&c, hub.url(), &p, &form).await.0, 200);
    }
    reader.await.expect("fast reader");
    // Cut off, its connection is closed at once, although the client never read: the hub keeps
    // neither its socket nor its queue waiting for it. The fast subscriber is gone too; what remains
    // is the metrics request's own connection.
    wait_until(
        "the slow subscriber's connection to be released",
        WAIT,
        async || {
            metric(&c, hub.url(), "quicksilver_connections").await == Some(1.0)
                && metric(
                    &c,
                    hub.url(),
                    "quicksilver_slow_subscriber_disconnections_total",
                )
                .await
                    == Some(1.0)
        },
    )
    .await;
    // The slow one gets what was buffered, then its stream ends: it was cut off, not waited for.
    let mut got = 0;
    while slow.next_event(Duration::from_secs(2)).await.is_ok() {
        got += 1;
    }
    assert!(
        got < total,
        "the slow subscriber should have been cut off (got {got})"
    );
}

#[tokio::test]
async fn subscribers_beyond_the_node_limit_are_refused_with_503() {
    let hub = spawn_hub(&["--anonymous", "--max-subscribers", "2"]).await;
    let c = http_client();
    let url = format!("{}?topic=t", hub.mercure_url());
    let _a = SseClient::subscribe(&url, &[]).await;
    let b = SseClient::subscribe(&url, &[]).await;
    let third = c.get(&url).send().await.expect("an answer");
    assert_eq!(third.status(), 503);
    assert!(third.headers().contains_key("retry-after"));
    drop(b);
    // A place frees up once a subscriber leaves.
    wait_until("a place to free up", WAIT, async || {
        c.get(&url).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
}

#[tokio::test]
async fn a_token_expiry_ends_the_connection() {
    let hub = spawn_hub(&[]).await;
    let soon = mercure_token(TEST_JWT_KEY, &[], &["*"], Some(now() + 2));
    let mut sse = SseClient::subscribe(
        &format!("{}?topic=t", hub.mercure_url()),
        &[("Authorization", &format!("Bearer {soon}"))],
    )
    .await;
    assert!(sse.closed_within(Duration::from_secs(6)).await);
}

#[tokio::test]
async fn metrics_on_a_separate_listener_and_only_there() {
    let port = quicksilver_testkit::free_port();
    let addr = format!("127.0.0.1:{port}");
    let hub = spawn_hub(&["--metrics-addr", &addr]).await;
    let c = http_client();
    let subscribers = metric(&c, &format!("http://{addr}"), "quicksilver_subscribers").await;
    assert_eq!(subscribers, Some(0.0));
    for path in ["/healthz", "/readyz"] {
        let own = c
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .expect("an answer");
        assert_eq!(own.status(), 200, "{path} on the metrics listener");
    }
    // The public port answers the hub, not its internals.
    for path in ["/metrics", "/healthz", "/readyz"] {
        let public = c
            .get(format!("{}{path}", hub.url()))
            .send()
            .await
            .expect("an answer");
        assert_eq!(public.status(), 404, "{path} on the main port");
    }
}
