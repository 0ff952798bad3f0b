//! The real `quicksilver` executable: start-up, SIGTERM drain and exit, refusal of bad settings.

use std::time::Duration;

use quicksilver_testkit::hub::HubProcess;
use quicksilver_testkit::sse::SseClient;
use quicksilver_testkit::token::publisher_token;
use quicksilver_testkit::{http_client, poll_until, TEST_JWT_KEY, WAIT};

const BIN: &str = env!("CARGO_BIN_EXE_quicksilver");

#[tokio::test]
async fn sigterm_drains_streams_with_a_retry_hint_and_exits_cleanly() {
    let mut hub = HubProcess::spawn(
        BIN,
        &[
            "--jwt-key",
            TEST_JWT_KEY,
            "--anonymous",
            "--drain-window",
            "1s",
            "--drain-retry",
            "250ms",
        ],
    );
    let c = http_client();
    let sse = SseClient::new();
    let mut streams = Vec::new();
    for _ in 0..20 {
        streams.push(
            sse.open(&format!("{}?topic=t", hub.mercure_url()), &[])
                .await
                .unwrap(),
        );
    }
    let token = publisher_token();
    let (status, _) = quicksilver_testkit::hub::publish(
        &c,
        hub.url(),
        &token,
        &[("topic", "t"), ("id", "before")],
    )
    .await;
    assert_eq!(status, 200);
    for s in &mut streams {
        assert_eq!(
            s.next_event(Duration::from_secs(5))
                .await
                .unwrap()
                .id
                .as_deref(),
            Some("before")
        );
    }

    hub.sigterm();
    // Not ready any more, while the streams are being closed over the drain window (the signal
    // takes a moment to arrive: poll until /readyz stops answering 200; it must then say 503, not
    // be gone already).
    let readyz = format!("{}/readyz", hub.url());
    let mut answer = None;
    poll_until(WAIT, async || {
        answer = c.get(&readyz).send().await.ok().map(|r| r.status());
        answer != Some(reqwest::StatusCode::OK)
    })
    .await;
    assert_eq!(
        answer,
        Some(reqwest::StatusCode::SERVICE_UNAVAILABLE),
        "/readyz turned 503 while draining"
    );
    for s in &mut streams {
        assert!(
            s.closed_within(Duration::from_secs(5)).await,
            "stream closed by the drain"
        );
        assert_eq!(s.retry(), Some(250), "told to reconnect promptly");
    }
    let status = hub
        .wait_exit(Duration::from_secs(15))
        .expect("exits after draining");
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn refuses_to_start_with_a_pem_key_and_an_hmac_algorithm() {
    let pem = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n";
    let err = HubProcess::try_spawn(
        BIN,
        &["--publisher-jwt-key", pem, "--publisher-jwt-alg", "HS256"],
        &[],
    );
    assert!(err.is_err(), "a PEM key paired with HS256 must be refused");
}

#[test]
fn help_lists_every_setting() {
    let out = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--transport",
        "--redis-url",
        "--publisher-jwt-key",
        "--subscriber-jwt-key",
        "--anonymous",
        "--cors-origins",
        "--publish-origins",
        "--history-size",
        "--heartbeat",
        "--write-timeout",
        "--drain-window",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
    assert!(text.contains("MERCURE_PUBLISHER_JWT_KEY") && text.contains("QUICKSILVER_LISTEN"));
}
