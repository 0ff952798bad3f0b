//! The debugger at `/.well-known/mercure/debug/` (safe in production: static, no token) and the
//! development-only playground (`--playground`): a minted all-access token the hub itself accepts,
//! in both generations, and the echo endpoints under `/playground/`.

use quicksilver_testkit::{http_client, publish, spawn_hub, HubRouter, SseClient, WAIT};
use serde_json::{json, Value};

#[tokio::test]
async fn the_debugger_is_served_under_the_hub_path_and_adapts_to_the_hub() {
    let router = HubRouter::new(&["--subscriptions"]);
    let page = router.get("/.well-known/mercure/debug/", &[]).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page
        .header("content-security-policy")
        .is_some_and(|csp| csp.contains("frame-ancestors 'none'")));
    assert!(page.body.contains("config.json"));
    for old in ["/", "/.well-known/mercure/debug"] {
        let r = router.get(old, &[]).await;
        assert_eq!(r.status, 303, "{old}");
        assert_eq!(r.header("location"), Some("/.well-known/mercure/debug/"));
    }
    let config = router
        .get("/.well-known/mercure/debug/config.json", &[])
        .await;
    assert_eq!(config.status, 200);
    assert_eq!(config.header("cache-control"), Some("no-store"));
    let config: Value = serde_json::from_str(&config.body).unwrap();
    assert_eq!(
        config,
        json!({
            "playground": false,
            "anonymous": false,
            "subscriptions": true,
            "cookieName": "__Secure-mercure_access_token",
        })
    );
    // Without the playground there is no token to fetch and nothing echoed.
    assert_eq!(
        router
            .get("/.well-known/mercure/debug/playground-token", &[])
            .await
            .status,
        404
    );
    assert_eq!(router.get("/playground/book.jsonld", &[]).await.status, 404);

    let off = HubRouter::new(&["--debug-page", "false"]);
    for path in [
        "/",
        "/.well-known/mercure/debug/",
        "/.well-known/mercure/debug/config.json",
    ] {
        assert_eq!(off.get(path, &[]).await.status, 404, "{path}");
    }
}

#[tokio::test]
async fn the_playground_token_is_accepted_by_the_hub() {
    // An issuer with the hub's secret: an access token for the request's own resource identifier.
    let hub = spawn_hub(&["--playground", "--issuer", "https://localhost"]).await;
    let c = http_client();
    let config: Value = c
        .get(format!(
            "{}/.well-known/mercure/debug/config.json",
            hub.url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        config,
        json!({"playground": true, "anonymous": true, "subscriptions": true, "cookieName": "mercure_access_token"})
    );
    let token = c
        .get(format!(
            "{}/.well-known/mercure/debug/playground-token",
            hub.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(token.headers()["cache-control"], "no-store");
    let token = token.text().await.unwrap();
    let mut es = SseClient::subscribe(
        &format!("{}?match=secret", hub.mercure_url()),
        &[("Authorization", &format!("Bearer {token}"))],
    )
    .await;
    let (status, _) = publish(
        &c,
        hub.url(),
        &token,
        &[("topic", "secret"), ("data", "x"), ("private", "on")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(es.next_event(WAIT).await.unwrap().data, "x");

    // No issuer: a pre-standardization token signed with the subscriber key.
    let legacy = spawn_hub(&["--playground"]).await;
    let token = c
        .get(format!(
            "{}/.well-known/mercure/debug/playground-token",
            legacy.url()
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (status, body) = publish(&c, legacy.url(), &token, &[("topic", "t"), ("data", "y")]).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn playground_echo_endpoints_link_the_hub_and_set_the_cookie() {
    let router = HubRouter::new(&["--playground"]);
    let r = router
        .get(
            "/playground/books/1.jsonld?body=%7B%22title%22%3A1%7D&jwt=abc",
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "{\"title\":1}");
    assert_eq!(r.header("content-type"), Some("application/ld+json"));
    let links: Vec<&str> = r
        .headers
        .get_all("link")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(
        links,
        vec![
            "</.well-known/mercure>; rel=\"mercure\"; cookie-name=\"mercure_access_token\"",
            "</playground/books/1.jsonld?body=%7B%22title%22%3A1%7D&jwt=abc>; rel=\"self\"",
        ]
    );
    assert_eq!(
        r.header("set-cookie"),
        Some("mercure_access_token=abc; Path=/.well-known/mercure; SameSite=Strict")
    );
    assert!(r
        .header("content-security-policy")
        .is_some_and(|csp| csp.starts_with("sandbox")));
    let r = router.get("/playground/x", &[]).await;
    assert!(r
        .header("set-cookie")
        .is_some_and(|c| c.contains("Expires=Thu, 01 Jan 1970")));
    // The root leads to the debugger.
    assert_eq!(
        router.get("/", &[]).await.header("location"),
        Some("/.well-known/mercure/debug/")
    );
}
