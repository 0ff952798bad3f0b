//! Subscribing over real HTTP: selectors, headers, private updates, history and replay-then-live.

mod common;

use common::*;

#[tokio::test]
async fn stream_opens_at_once_with_the_right_headers() {
    let hub = TestHub::start(&["--anonymous"]).await;
    let c = client();
    let mut sse = Sse::connect(&c, &format!("{}?topic=a", hub.hub_url()), &[]).await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.headers["content-type"], "text/event-stream");
    assert_eq!(
        sse.headers["cache-control"],
        "private, no-cache, no-store, must-revalidate, max-age=0"
    );
    assert_eq!(sse.headers["x-accel-buffering"], "no");
    assert!(!sse.headers.contains_key("last-event-id"));
    // The preamble comment arrives before any update exists.
    assert_eq!(
        sse.next_item(WAIT).await,
        Some(Item::Comment(String::new()))
    );
}

#[tokio::test]
async fn exact_wildcard_and_template_selectors() {
    let hub = TestHub::start(&["--anonymous"]).await;
    let c = client();
    let url = |q: &str| format!("{}?{q}", hub.hub_url());
    let mut exact = Sse::connect(&c, &url("topic=https%3A%2F%2Fex.com%2Fbooks%2F1"), &[]).await;
    let mut all = Sse::connect(&c, &url("topic=*"), &[]).await;
    let mut tpl = Sse::connect(
        &c,
        &url("topic=https%3A%2F%2Fex.com%2Fbooks%2F%7Bid%7D"),
        &[],
    )
    .await;
    let mut other = Sse::connect(
        &c,
        &url("topic=https%3A%2F%2Fex.com%2Fauthors%2F%7Bid%7D&topic=nope"),
        &[],
    )
    .await;

    let token = publisher_token();
    let (status, id) = publish(
        &c,
        &hub,
        &token,
        &[("topic", "https://ex.com/books/1"), ("data", "one")],
    )
    .await;
    assert_eq!(status, 200);
    assert!(id.starts_with("urn:uuid:"), "{id}");
    let (status, _) = publish(
        &c,
        &hub,
        &token,
        &[
            ("topic", "https://ex.com/books/2/chapters"),
            ("data", "two"),
        ],
    )
    .await;
    assert_eq!(status, 200);

    let e = exact.next_event(WAIT).await.unwrap();
    assert_eq!(
        (e.id.as_deref(), e.data.as_str()),
        (Some(id.as_str()), "one")
    );
    assert_eq!(all.next_event(WAIT).await.unwrap().data, "one");
    assert_eq!(all.next_event(WAIT).await.unwrap().data, "two");
    assert_eq!(tpl.next_event(WAIT).await.unwrap().data, "one");
    assert_eq!(
        tpl.next_event(SHORT).await,
        None,
        "{{id}} does not match across a slash"
    );
    assert_eq!(other.next_event(SHORT).await, None);
    assert_eq!(exact.next_event(SHORT).await, None);
}

#[tokio::test]
async fn alternate_topics_multiline_data_type_and_retry() {
    let hub = TestHub::start(&["--anonymous"]).await;
    let c = client();
    let mut sse = Sse::connect(&c, &format!("{}?topic=alt", hub.hub_url()), &[]).await;
    let (status, _) = publish(
        &c,
        &hub,
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
    let e = sse.next_event(WAIT).await.unwrap();
    assert_eq!(e.id.as_deref(), Some("my-id"));
    assert_eq!(e.event.as_deref(), Some("edit"));
    assert_eq!(e.retry, Some(1500));
    assert_eq!(e.data, "l1\nl2\nl3");
}

#[tokio::test]
async fn private_updates_follow_the_subscribe_grants_for_every_token_location() {
    let hub = TestHub::start(&["--anonymous"]).await;
    let c = client();
    let topic_q = format!(
        "{}?topic=https%3A%2F%2Fex.com%2Fdocs%2F%7Bid%7D",
        hub.hub_url()
    );
    let granted = token(&[], &["https://ex.com/docs/{id}"], None);
    let wrong = token(&[], &["https://ex.com/other/{id}"], None);

    let mut anonymous = Sse::connect(&c, &topic_q, &[]).await;
    let mut by_header = Sse::connect(
        &c,
        &topic_q,
        &[("Authorization", &format!("Bearer {granted}"))],
    )
    .await;
    let mut by_query = Sse::connect(&c, &format!("{topic_q}&authorization={granted}"), &[]).await;
    let mut by_cookie = Sse::connect(
        &c,
        &topic_q,
        &[(
            "Cookie",
            &format!("other=1; mercureAuthorization={granted}"),
        )],
    )
    .await;
    let mut wrong_grant = Sse::connect(
        &c,
        &topic_q,
        &[("Authorization", &format!("Bearer {wrong}"))],
    )
    .await;
    for s in [&anonymous, &by_header, &by_query, &by_cookie, &wrong_grant] {
        assert_eq!(s.status, 200);
    }

    let p = publisher_token();
    assert_eq!(
        publish(
            &c,
            &hub,
            &p,
            &[
                ("topic", "https://ex.com/docs/1"),
                ("data", "secret"),
                ("private", "on")
            ]
        )
        .await
        .0,
        200
    );
    assert_eq!(
        publish(
            &c,
            &hub,
            &p,
            &[("topic", "https://ex.com/docs/1"), ("data", "public")]
        )
        .await
        .0,
        200
    );

    for s in [&mut by_header, &mut by_query, &mut by_cookie] {
        assert_eq!(s.next_event(WAIT).await.unwrap().data, "secret");
        assert_eq!(s.next_event(WAIT).await.unwrap().data, "public");
    }
    for s in [&mut anonymous, &mut wrong_grant] {
        assert_eq!(s.next_event(WAIT).await.unwrap().data, "public");
    }
}

#[tokio::test]
async fn subscriber_authentication_errors() {
    let hub = TestHub::start(&[]).await;
    let c = client();
    let url = format!("{}?topic=a", hub.hub_url());
    // No token and anonymous off.
    assert_eq!(c.get(&url).send().await.unwrap().status(), 401);
    // An invalid token is 401 wherever it is.
    assert_eq!(
        c.get(format!(
            "{url}&authorization=not.a.valid-token-at-all-but-long-enough-to-pass"
        ))
        .send()
        .await
        .unwrap()
        .status(),
        401
    );
    let expired = token(&[], &["*"], Some(now() - 60));
    assert_eq!(
        c.get(&url)
            .bearer_auth(&expired)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let other_key = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"mercure": {"subscribe": ["*"]}}),
        &jsonwebtoken::EncodingKey::from_secret(b"another key entirely"),
    )
    .unwrap();
    assert_eq!(
        c.get(&url)
            .bearer_auth(&other_key)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // A token without exp is valid.
    let resp = c
        .get(&url)
        .bearer_auth(token(&[], &["*"], None))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Missing topic.
    assert_eq!(
        c.get(hub.hub_url())
            .bearer_auth(token(&[], &["*"], None))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );

    let anon = TestHub::start(&["--anonymous"]).await;
    let url = format!("{}?topic=a", anon.hub_url());
    assert_eq!(
        c.get(&url)
            .bearer_auth(&expired)
            .send()
            .await
            .unwrap()
            .status(),
        401,
        "invalid token even in anonymous mode"
    );
    assert_eq!(
        c.get(format!("{}?topic=a%0Ab", anon.hub_url()))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        c.get(format!("{}?topic=%7Bunclosed", anon.hub_url()))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
}

#[tokio::test]
async fn history_replays_after_the_last_event_id_by_header_query_and_earliest() {
    let hub = TestHub::start(&["--anonymous", "--history-size", "5"]).await;
    let c = client();
    let p = publisher_token();
    for i in 1..=7 {
        let id = format!("id-{i}");
        let topic = if i == 4 { "other" } else { "t" };
        assert_eq!(
            publish(
                &c,
                &hub,
                &p,
                &[("topic", topic), ("id", &id), ("data", &id)]
            )
            .await
            .0,
            200
        );
    }
    // History holds id-3..id-7.
    let url = format!("{}?topic=t", hub.hub_url());
    let mut by_header = Sse::connect(&c, &url, &[("Last-Event-ID", "id-3")]).await;
    assert_eq!(by_header.headers["last-event-id"], "id-3");
    assert_eq!(by_header.headers["mercure-last-event-id"], "id-3");
    for want in ["id-5", "id-6", "id-7"] {
        assert_eq!(
            by_header.next_event(WAIT).await.unwrap().id.as_deref(),
            Some(want)
        );
    }
    let mut by_query = Sse::connect(&c, &format!("{url}&lastEventID=id-5"), &[]).await;
    assert_eq!(by_query.headers["last-event-id"], "id-5");
    for want in ["id-6", "id-7"] {
        assert_eq!(
            by_query.next_event(WAIT).await.unwrap().id.as_deref(),
            Some(want)
        );
    }
    // The header wins over the query parameter.
    let mut both = Sse::connect(
        &c,
        &format!("{url}&lastEventID=id-3"),
        &[("Last-Event-ID", "id-6")],
    )
    .await;
    assert_eq!(
        both.next_event(WAIT).await.unwrap().id.as_deref(),
        Some("id-7")
    );

    let mut earliest = Sse::connect(&c, &format!("{url}&lastEventID=earliest"), &[]).await;
    assert_eq!(earliest.headers["last-event-id"], "earliest");
    for want in ["id-3", "id-5", "id-6", "id-7"] {
        assert_eq!(
            earliest.next_event(WAIT).await.unwrap().id.as_deref(),
            Some(want)
        );
    }
    // Evicted (id-1) or unknown: nothing replayed, answered `earliest`.
    for gone in ["id-1", "never-published"] {
        let mut s = Sse::connect(&c, &url, &[("Last-Event-ID", gone)]).await;
        assert_eq!(s.headers["last-event-id"], "earliest");
        assert_eq!(s.next_event(SHORT).await, None);
    }
    // Then live updates continue after the replay.
    assert_eq!(
        publish(&c, &hub, &p, &[("topic", "t"), ("id", "id-8")])
            .await
            .0,
        200
    );
    for s in [&mut by_header, &mut by_query, &mut both, &mut earliest] {
        assert_eq!(
            s.next_event(WAIT).await.unwrap().id.as_deref(),
            Some("id-8")
        );
    }
}

#[tokio::test]
async fn a_non_ascii_last_event_id_header_resumes_like_any_other() {
    // Publishers may choose any id; browsers send it back as UTF-8 bytes in `Last-Event-ID`.
    let hub = TestHub::start(&["--anonymous"]).await;
    let c = client();
    let p = publisher_token();
    for id in ["urn:é-1", "urn:é-2", "urn:é-3"] {
        assert_eq!(
            publish(&c, &hub, &p, &[("topic", "t"), ("id", id), ("data", id)])
                .await
                .0,
            200
        );
    }
    let url = format!("{}?topic=t", hub.hub_url());
    let mut s = Sse::connect(&c, &url, &[("Last-Event-ID", "urn:é-1")]).await;
    assert_eq!(s.headers["last-event-id"], "urn:é-1");
    for want in ["urn:é-2", "urn:é-3"] {
        assert_eq!(s.next_event(WAIT).await.unwrap().id.as_deref(), Some(want));
    }
    assert_eq!(s.next_event(SHORT).await, None);
}

#[tokio::test]
async fn private_updates_are_filtered_on_replay_too() {
    let hub = TestHub::start(&["--anonymous"]).await;
    let c = client();
    let p = publisher_token();
    publish(&c, &hub, &p, &[("topic", "t"), ("id", "a")]).await;
    publish(
        &c,
        &hub,
        &p,
        &[("topic", "t"), ("id", "secret"), ("private", "")],
    )
    .await;
    publish(&c, &hub, &p, &[("topic", "t"), ("id", "b")]).await;
    let url = format!("{}?topic=t&lastEventID=a", hub.hub_url());
    let mut anon = Sse::connect(&c, &url, &[]).await;
    assert_eq!(
        anon.next_event(WAIT).await.unwrap().id.as_deref(),
        Some("b")
    );
    let t = token(&[], &["t"], None);
    let mut granted = Sse::connect(&c, &url, &[("Authorization", &format!("Bearer {t}"))]).await;
    assert_eq!(
        granted.next_event(WAIT).await.unwrap().id.as_deref(),
        Some("secret")
    );
    assert_eq!(
        granted.next_event(WAIT).await.unwrap().id.as_deref(),
        Some("b")
    );
}

#[tokio::test]
async fn no_gap_and_no_duplicate_between_replay_and_live_under_concurrent_publishing() {
    let hub = TestHub::start(&["--anonymous", "--history-size", "100000"]).await;
    let c = client();
    let p = publisher_token();
    publish(&c, &hub, &p, &[("topic", "t"), ("id", "0")]).await;
    let total = 600;
    let publisher = {
        let (c, url, p) = (c.clone(), hub.hub_url(), p.clone());
        tokio::spawn(async move {
            for i in 1..=total {
                let r = c
                    .post(&url)
                    .bearer_auth(&p)
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(format!("topic=t&id={i}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        })
    };
    // Subscribers join at various moments while updates flow, each resuming from the first id.
    let mut subs = Vec::new();
    for _ in 0..8 {
        tokio::time::sleep(std::time::Duration::from_millis(15)).await;
        subs.push(
            Sse::connect(
                &c,
                &format!("{}?topic=t", hub.hub_url()),
                &[("Last-Event-ID", "0")],
            )
            .await,
        );
    }
    publisher.await.unwrap();
    for s in &mut subs {
        for want in 1..=total {
            let e = s.next_event(WAIT).await.expect("an update is missing");
            assert_eq!(e.id, Some(want.to_string()));
        }
        assert_eq!(
            s.next_event(SHORT).await,
            None,
            "duplicate after the last update"
        );
    }
}

#[tokio::test]
async fn heartbeats_arrive_on_idle_streams() {
    let hub = TestHub::start(&["--anonymous", "--heartbeat", "100ms"]).await;
    let c = client();
    let mut sse = Sse::connect(&c, &format!("{}?topic=t", hub.hub_url()), &[]).await;
    let mut comments = 0;
    while comments < 4 {
        match sse.next_item(WAIT).await {
            Some(Item::Comment(_)) => comments += 1,
            other => panic!("expected a heartbeat, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn connections_end_after_the_write_timeout() {
    let hub = TestHub::start(&["--anonymous", "--write-timeout", "300ms"]).await;
    let c = client();
    let mut sse = Sse::connect(&c, &format!("{}?topic=t", hub.hub_url()), &[]).await;
    assert!(sse.ended_within(WAIT).await);
}

#[tokio::test]
async fn a_slow_subscriber_is_cut_off_while_a_fast_one_keeps_receiving() {
    let hub = TestHub::start(&[
        "--anonymous",
        "--subscriber-queue",
        "8",
        "--history-size",
        "10",
    ])
    .await;
    let c = client();
    let url = format!("{}?topic=t", hub.hub_url());
    let mut slow = Sse::connect(&c, &url, &[]).await;
    let mut fast = Sse::connect(&c, &url, &[]).await;
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
        let (status, _) = publish(
            &c,
            &hub,
            &p,
            &[("topic", "t"), ("id", &i.to_string()), ("data", &data)],
        )
        .await;
        assert_eq!(status, 200);
    }
    reader.await.unwrap();
    // Cut off, its connection is closed at once, although the client never read: the hub keeps
    // neither its socket nor its queue waiting for it.
    let metrics = format!("{}/metrics", hub.url);
    let mut released = false;
    for _ in 0..100 {
        let text = c.get(&metrics).send().await.unwrap().text().await.unwrap();
        // The fast subscriber is gone too; what remains is this metrics request's own connection.
        if text.contains("quicksilver_connections 1\n")
            && text.contains("quicksilver_slow_subscriber_disconnections_total 1\n")
        {
            released = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let text = c.get(&metrics).send().await.unwrap().text().await.unwrap();
    assert!(
        released,
        "the slow subscriber's connection was released:\n{text}"
    );
    // The slow one gets what was buffered, then its stream ends: it was cut off, not waited for.
    let mut got = 0;
    while slow
        .next_event(std::time::Duration::from_secs(2))
        .await
        .is_some()
    {
        got += 1;
    }
    assert!(
        got < total,
        "the slow subscriber should have been cut off (got {got})"
    );
}

#[tokio::test]
async fn subscribers_beyond_the_node_limit_are_refused_with_503() {
    let hub = TestHub::start(&["--anonymous", "--max-subscribers", "2"]).await;
    let c = client();
    let url = format!("{}?topic=t", hub.hub_url());
    let _a = Sse::connect(&c, &url, &[]).await;
    let b = Sse::connect(&c, &url, &[]).await;
    assert_eq!(b.status, 200);
    let third = c.get(&url).send().await.unwrap();
    assert_eq!(third.status(), 503);
    assert!(third.headers().contains_key("retry-after"));
    drop(b);
    // A place frees up once a subscriber leaves.
    let mut ok = false;
    for _ in 0..50 {
        if c.get(&url).send().await.unwrap().status() == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ok);
}

#[tokio::test]
async fn a_token_expiry_ends_the_connection() {
    let hub = TestHub::start(&[]).await;
    let c = client();
    let soon = token(&[], &["*"], Some(now() + 2));
    let mut sse = Sse::connect(
        &c,
        &format!("{}?topic=t", hub.hub_url()),
        &[("Authorization", &format!("Bearer {soon}"))],
    )
    .await;
    assert_eq!(sse.status, 200);
    assert!(sse.ended_within(std::time::Duration::from_secs(6)).await);
}

#[tokio::test]
async fn metrics_on_a_separate_listener() {
    let port = quicksilver_testkit::free_port();
    let addr = format!("127.0.0.1:{port}");
    let _hub = TestHub::start(&["--metrics-addr", &addr]).await;
    let text = client()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("quicksilver_subscribers 0"), "{text}");
}
