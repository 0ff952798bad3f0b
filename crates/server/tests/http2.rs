//! HTTP/2 subscribers: several streams share one connection, so one stalled stream must not end
//! the others.

use std::time::Duration;

use quicksilver_testkit::{
    hub::metric, mercure_token, publish, spawn_hub, SseClient, TEST_JWT_KEY, WAIT,
};

#[tokio::test]
async fn a_stalled_stream_is_cut_off_without_ending_the_other_streams_of_its_connection() {
    let server = spawn_hub(&["--anonymous", "--subscriber-queue", "8"]).await;
    let base = server.url().to_string();
    let hub = server.mercure_url();

    // One HTTP/2 connection (prior knowledge, h2c) with a small per-stream window, so a stream
    // whose body is not read stops taking data after 64 KiB.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .http2_adaptive_window(false)
        .http2_initial_stream_window_size(65_535)
        .http2_initial_connection_window_size(16 << 20)
        .build()
        .unwrap_or_else(|e| panic!("client: {e}"));
    let sse = SseClient::with_http_client(h2.clone());
    let mut reading = sse
        .open(&format!("{hub}?topic=t"), &[])
        .await
        .unwrap_or_else(|e| panic!("subscribe: {e}"));
    let stalled = h2
        .get(format!("{hub}?topic=t"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("subscribe: {e}"));
    assert_eq!(stalled.status(), 200);
    assert_eq!(stalled.version(), reqwest::Version::HTTP_2);

    let publisher = reqwest::Client::new();
    let token = mercure_token(TEST_JWT_KEY, &["*"], &[], None);
    let data = "x".repeat(4096);
    // 64 KiB fill the stalled stream's window, a little more sits in the server's send buffer,
    // and 8 more updates fill its queue: well before 200 it is cut off.
    for i in 0..200 {
        let id = format!("u{i}");
        let (status, _) = publish(
            &publisher,
            &hub,
            &token,
            &[("topic", "t"), ("id", &id), ("data", &data)],
        )
        .await;
        assert_eq!(status, 200);
        let event = reading
            .next_event(WAIT)
            .await
            .unwrap_or_else(|e| panic!("update {i} on the reading stream: {e}"));
        assert_eq!(event.id.as_deref(), Some(id.as_str()));
    }
    assert_eq!(
        metric(
            &publisher,
            &base,
            "quicksilver_slow_subscriber_disconnections_total"
        )
        .await,
        Some(1.0),
        "the stalled stream was not cut off"
    );
    // The connection is still up: the reading stream goes on, and a new stream opens on it.
    let (status, _) = publish(
        &publisher,
        &hub,
        &token,
        &[("topic", "t"), ("id", "after"), ("data", "x")],
    )
    .await;
    assert_eq!(status, 200);
    let event = reading
        .next_event(WAIT)
        .await
        .unwrap_or_else(|e| panic!("after the cut-off: {e}"));
    assert_eq!(event.id.as_deref(), Some("after"));
    let again = h2
        .get(format!("{base}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.status(), 200);
    drop(stalled);
    server.shutdown().await;
}
