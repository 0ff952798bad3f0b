//! Publishing over real HTTP: status codes, reasons, limits, CORS and the cookie CSRF check.

mod common;

use common::*;

async fn post(
    c: &reqwest::Client,
    hub: &TestHub,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut req = c.post(hub.hub_url()).body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

#[tokio::test]
async fn publish_answers_the_event_id_as_plain_text() {
    let hub = TestHub::start(&[]).await;
    let c = client();
    let auth = format!("Bearer {}", publisher_token());
    let r = c
        .post(hub.hub_url())
        .header("Authorization", &auth)
        .header(FORM.0, FORM.1)
        .body("topic=a&id=urn%3Auuid%3A0b6d5a41-6a0c-4d5e-a5ab-3d1f3f7f5c11&data=%7B%7D")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(
        r.text().await.unwrap(),
        "urn:uuid:0b6d5a41-6a0c-4d5e-a5ab-3d1f3f7f5c11"
    );
}

#[tokio::test]
async fn publish_errors() {
    let hub = TestHub::start(&["--max-body-size", "2048", "--max-topics-per-update", "3"]).await;
    let c = client();
    let auth = format!("Bearer {}", publisher_token());
    let ok = [("Authorization", auth.as_str()), FORM];

    // 401: no token, bad token, expired token, token for another key.
    assert_eq!(post(&c, &hub, &[FORM], "topic=a").await.0, 401);
    assert_eq!(
        post(
            &c,
            &hub,
            &[("Authorization", "Bearer nope"), FORM],
            "topic=a"
        )
        .await
        .0,
        401
    );
    let expired = format!("Bearer {}", token(&["*"], &[], Some(now() - 10)));
    assert_eq!(
        post(
            &c,
            &hub,
            &[("Authorization", expired.as_str()), FORM],
            "topic=a"
        )
        .await
        .0,
        401
    );
    // 403: the token does not cover every topic.
    let limited = format!(
        "Bearer {}",
        token(&["https://ex.com/books/{id}"], &[], None)
    );
    let lim = [("Authorization", limited.as_str()), FORM];
    assert_eq!(
        post(&c, &hub, &lim, "topic=https%3A%2F%2Fex.com%2Fbooks%2F1")
            .await
            .0,
        200
    );
    assert_eq!(
        post(
            &c,
            &hub,
            &lim,
            "topic=https%3A%2F%2Fex.com%2Fbooks%2F1&topic=other"
        )
        .await
        .0,
        403
    );
    let none = format!("Bearer {}", token(&[], &["*"], None));
    assert_eq!(
        post(
            &c,
            &hub,
            &[("Authorization", none.as_str()), FORM],
            "topic=a"
        )
        .await
        .0,
        403
    );

    // 400 with a reason.
    for (body, reason) in [
        ("data=x", "topic"),
        ("topic=a&id=a%0Ab", "id"),
        ("topic=a&type=a%0Db", "type"),
        ("topic=a%0Ab", "topic"),
        ("topic=a&id=earliest", "id"),
        ("topic=a&id=%23x", "id"),
        ("topic=a&retry=soon", "retry"),
        ("topic=a&data=%FF", "UTF-8"),
        ("topic=a&type=mercure", "type"),
        ("topic=*", "reserved"),
        (
            "topic=%2F.well-known%2Fmercure%2Fsubscriptions%2Fx",
            "reserved",
        ),
    ] {
        let (status, text) = post(&c, &hub, &ok, body).await;
        assert_eq!(status, 400, "{body}");
        assert!(text.contains(reason), "{body}: {text}");
    }
    // 413: body, topic count.
    assert_eq!(
        post(&c, &hub, &ok, &format!("topic=a&data={}", "x".repeat(4096)))
            .await
            .0,
        413
    );
    assert_eq!(
        post(&c, &hub, &ok, "topic=a&topic=b&topic=c&topic=d")
            .await
            .0,
        413
    );
    // 415: not a form.
    assert_eq!(
        post(
            &c,
            &hub,
            &[
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/json")
            ],
            "{}"
        )
        .await
        .0,
        415
    );
}

#[tokio::test]
async fn cookie_publishing_checks_the_origin() {
    let hub = TestHub::start(&["--publish-origins", "https://app.example.com"]).await;
    let c = client();
    let cookie = format!("mercureAuthorization={}", publisher_token());
    let with = |origin: Option<(&'static str, &'static str)>| {
        let mut h = vec![("Cookie", cookie.clone()), (FORM.0, FORM.1.to_string())];
        if let Some((k, v)) = origin {
            h.push((k, v.to_string()));
        }
        h
    };
    let send = |h: Vec<(&'static str, String)>| {
        let c = c.clone();
        let url = hub.hub_url();
        async move {
            let mut req = c.post(url).body("topic=a");
            for (k, v) in h {
                req = req.header(k, v);
            }
            req.send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(
        send(with(Some(("Origin", "https://app.example.com")))).await,
        200
    );
    assert_eq!(
        send(with(Some(("Referer", "https://app.example.com/page?x=1")))).await,
        200
    );
    assert_eq!(
        send(with(Some(("Origin", "https://evil.example")))).await,
        401
    );
    assert_eq!(send(with(None)).await, 401);
}

#[tokio::test]
async fn cors_preflight_and_headers_for_configured_origins_only() {
    let hub = TestHub::start(&["--cors-origins", "https://app.example.com"]).await;
    let c = client();
    let r = c
        .request(reqwest::Method::OPTIONS, hub.hub_url())
        .header("Origin", "https://app.example.com")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert!(h["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    assert!(h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase()
        .contains("authorization"));

    let r = c
        .request(reqwest::Method::OPTIONS, hub.hub_url())
        .header("Origin", "https://evil.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));

    // The actual POST from the allowed origin carries the CORS headers too.
    let r = c
        .post(hub.hub_url())
        .header("Origin", "https://app.example.com")
        .bearer_auth(publisher_token())
        .header(FORM.0, FORM.1)
        .body("topic=a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
}

#[tokio::test]
async fn exelearning_flow_works_unchanged() {
    // One HS256 token without exp granting everything, used both to publish from the browser and to
    // subscribe with the token and the last event id in the query string.
    let hub = TestHub::start(&["--cors-origins", "https://exe.example.com"]).await;
    let c = client();
    let jwt = token(&["*"], &["*"], None);
    let session = "20251122abcdef";
    let first = "3f0c2b8e-8a4e-4f0a-9a57-9b1f7f3c2d10";
    let r = c
        .post(hub.hub_url())
        .header("Origin", "https://exe.example.com")
        .bearer_auth(&jwt)
        .header(FORM.0, FORM.1)
        .body(format!(
            "topic={session}&id={first}&data=%7B%22action%22%3A%22edit%22%7D"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), first);
    let second = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a";
    let (status, _) = publish(
        &c,
        &hub,
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
        hub.hub_url()
    );
    let mut es = Sse::connect(&c, &url, &[("Origin", "https://exe.example.com")]).await;
    assert_eq!(es.status, 200);
    assert_eq!(
        es.headers["access-control-allow-origin"],
        "https://exe.example.com"
    );
    let e = es.next_event(WAIT).await.unwrap();
    assert_eq!(
        (e.id.as_deref(), e.data.as_str()),
        (Some(second), "{\"n\":2}")
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let hub = TestHub::start(&[]).await;
    let c = client();
    assert_eq!(
        c.get(format!("{}/healthz", hub.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("{}/readyz", hub.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn shutdown_ends_open_streams() {
    let hub = TestHub::start(&["--anonymous"]).await;
    let c = client();
    let mut sse = Sse::connect(&c, &format!("{}?topic=t", hub.hub_url()), &[]).await;
    assert!(sse.next_item(WAIT).await.is_some());
    let stopping = tokio::spawn(hub.shutdown());
    assert!(sse.ended_within(WAIT).await);
    stopping.await.unwrap();
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let hub = TestHub::start(&["--anonymous"]).await;
    let c = client();
    let mut a = Sse::connect(
        &c,
        &format!(
            "{}?topic=t&topic=https%3A%2F%2Fex.com%2F%7Bx%7D",
            hub.hub_url()
        ),
        &[],
    )
    .await;
    let mut b = Sse::connect(&c, &format!("{}?topic=*", hub.hub_url()), &[]).await;
    for i in 0..3 {
        assert_eq!(
            publish(
                &c,
                &hub,
                &publisher_token(),
                &[("topic", "t"), ("id", &i.to_string())]
            )
            .await
            .0,
            200
        );
    }
    for s in [&mut a, &mut b] {
        for _ in 0..3 {
            s.next_event(WAIT).await.unwrap();
        }
    }
    let mut replay = Sse::connect(
        &c,
        &format!("{}?topic=t", hub.hub_url()),
        &[("Last-Event-ID", "0")],
    )
    .await;
    replay.next_event(WAIT).await.unwrap();
    assert_eq!(
        c.post(hub.hub_url())
            .body("topic=t")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    let text = c
        .get(format!("{}/metrics", hub.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "quicksilver_subscribers 3",
        "quicksilver_subscriptions{kind=\"exact\"} 2",
        "quicksilver_subscriptions{kind=\"wildcard\"} 1",
        "quicksilver_subscriptions{kind=\"template\"} 1",
        "quicksilver_updates_published_total 3",
        "quicksilver_updates_delivered_total 6",
        "quicksilver_updates_replayed_total 2",
        "quicksilver_slow_subscriber_disconnections_total 0",
        "quicksilver_transport_ready 1",
        "quicksilver_history_cache_hits_total 1",
        "quicksilver_history_cache_misses_total 0",
        "quicksilver_publish_duration_seconds_count 3",
        "quicksilver_delivery_latency_seconds_count 6",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(text.contains("quicksilver_http_responses_total{route=\"/.well-known/mercure\",method=\"POST\",status=\"401\"} 1"), "{text}");
}
