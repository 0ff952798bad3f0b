//! A real browser: headless Chromium opens an `EventSource` with `withCredentials` on another
//! origin, authenticated by the `mercureAuthorization` cookie, and receives a private update.

use std::time::Duration;

use quicksilver_testkit::browser::{BrowserEventSource, EventSourceConfig};
use quicksilver_testkit::hub::{publish, HubProcess};
use quicksilver_testkit::token::mercure_token;

const KEY: &str = "!ChangeThisMercureHubJWTSecretKey!";

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
        &["--jwt-key", KEY, "--cors-origins", browser.page_origin()],
    );
    let subscriber_token = mercure_token(KEY, &[], &[topic], None);
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

    let publisher_token = mercure_token(KEY, &["*"], &[], None);
    let client = reqwest::Client::new();
    // Anonymous-looking public noise first would be fine too; the private update is what matters.
    let (status, id) = publish(
        &client,
        hub.url(),
        &publisher_token,
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
