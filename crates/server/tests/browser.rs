//! A real browser: headless Chromium opens an `EventSource` with `withCredentials` on another
//! origin, authenticated by a cookie, and receives a private update — with the pre-standardization
//! `mercureAuthorization` cookie and legacy token, and with the current protocol's
//! `__Secure-mercure_access_token` cookie and an `at+jwt` access token.

use std::time::Duration;

use quicksilver_testkit::browser::{BrowserEventSource, EventSourceConfig};
use quicksilver_testkit::hub::{publish, HubProcess};
use quicksilver_testkit::token::{
    access_claims, access_token, authorization_detail, mercure_token, publisher_token,
};
use quicksilver_testkit::TEST_JWT_KEY;

#[tokio::test]
async fn chromium_eventsource_with_the_cookie_receives_a_private_update() {
    if let Err(why) = quicksilver_testkit::browser::available() {
        panic!("browser test prerequisites missing ({why}); run scripts/install-test-deps.sh");
    }
    let topic = "https://example.com/books/1";
    let mut browser = BrowserEventSource::launch()
        .await
        .expect("node and chromium start");
    let hub = HubProcess::spawn(
        env!("CARGO_BIN_EXE_quicksilver"),
        &[
            "--jwt-key",
            TEST_JWT_KEY,
            "--cors-origins",
            browser.page_origin(),
        ],
    );
    let subscriber_token = mercure_token(TEST_JWT_KEY, &[], &[topic], None);
    browser
        .open(&EventSourceConfig::new(hub.url(), &subscriber_token, topic))
        .expect("configuration sent to the page");
    browser
        .wait_ready(Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "EventSource did not open: {e}\nhub log:\n{}",
                hub.stderr_lines().join("\n")
            )
        });

    let publisher = publisher_token();
    let client = reqwest::Client::new();
    // Anonymous-looking public noise first would be fine too; the private update is what matters.
    let (status, id) = publish(
        &client,
        hub.url(),
        &publisher,
        &[
            ("topic", topic),
            ("data", "secret for the cookie holder"),
            ("private", "on"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let message = browser
        .wait_message(Duration::from_secs(15))
        .await
        .expect("the page received the update");
    assert_eq!(message.data, "secret for the cookie holder");
    assert_eq!(message.last_event_id, id);
}

#[tokio::test]
async fn chromium_eventsource_with_the_access_token_cookie_receives_a_private_update() {
    if let Err(why) = quicksilver_testkit::browser::available() {
        panic!("browser test prerequisites missing ({why}); run scripts/install-test-deps.sh");
    }
    let topic = "https://example.com/books/2";
    let mut browser = BrowserEventSource::launch()
        .await
        .expect("node and chromium start");
    let hub = HubProcess::spawn(
        env!("CARGO_BIN_EXE_quicksilver"),
        &[
            "--jwt-key",
            TEST_JWT_KEY,
            "--issuer",
            "https://issuer.example",
            "--cors-origins",
            browser.page_origin(),
        ],
    );
    // The audience is derived from the request: the browser reaches the hub as 127.0.0.1:PORT.
    let audience = format!("{}/.well-known/mercure", hub.url());
    let access_token = |actions: &[&str], pattern: &str| {
        let topics = serde_json::json!([{"match": pattern, "match_type": "urlpattern"}]);
        let details = serde_json::json!([authorization_detail(actions, topics)]);
        access_token(
            TEST_JWT_KEY,
            None,
            &access_claims("https://issuer.example", &audience, details),
        )
    };
    let mut config = EventSourceConfig::new(
        hub.url(),
        &access_token(&["subscribe"], "https://example.com/books/:id"),
        topic,
    );
    config.cookie_name = "__Secure-mercure_access_token".into();
    config.matcher = "match".into();
    browser
        .open(&config)
        .expect("configuration sent to the page");
    browser
        .wait_ready(Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "EventSource did not open: {e}\nhub log:\n{}",
                hub.stderr_lines().join("\n")
            )
        });
    let (status, id) = publish(
        &reqwest::Client::new(),
        hub.url(),
        &access_token(&["publish"], "https://example.com/*"),
        &[
            ("topic", topic),
            ("data", "secret for the access token holder"),
            ("private", "on"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let message = browser
        .wait_message(Duration::from_secs(15))
        .await
        .expect("the page received the update");
    assert_eq!(message.data, "secret for the access token holder");
    assert_eq!(message.last_event_id, id);
}
