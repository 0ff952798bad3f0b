//! `--io-uring`: the fan-out sends each update's direct writes with one io_uring submission per
//! shard. Every subscriber still gets every update once and in order, through full sockets
//! (partial sends, `EAGAIN`) and back to the direct way; a slow subscriber is still cut off. Where
//! the kernel refuses io_uring the hub says so in its metrics and writes one at a time, and these
//! tests check the delivery all the same.

use std::time::Duration;

use quicksilver_testkit::hub::metric;
use quicksilver_testkit::token::publisher_token;
use quicksilver_testkit::{http_client, publish, spawn_hub, wait_until, SseClient, SHORT, WAIT};

/// Whether the hub at `url` sends through io_uring: its shards say so, or say they could not.
async fn ring_in_use(c: &reqwest::Client, url: &str) -> bool {
    let shards = metric(c, url, "quicksilver_io_uring_shards")
        .await
        .unwrap_or(0.0);
    let fallbacks = metric(c, url, "quicksilver_io_uring_fallbacks_total")
        .await
        .unwrap_or(0.0);
    assert!(
        shards > 0.0 || fallbacks > 0.0,
        "--io-uring given: the shards use it or say they could not"
    );
    shards > 0.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_gets_every_update_once_and_in_order_through_full_sockets() {
    let hub = spawn_hub(&["--anonymous", "--io-uring", "--shards", "2"]).await;
    let c = http_client();
    let in_use = ring_in_use(&c, hub.url()).await;
    let url = format!("{}?topic=t", hub.mercure_url());
    let mut subscribers = Vec::new();
    for _ in 0..6 {
        subscribers.push(SseClient::subscribe(&url, &[]).await);
    }
    // Small updates (the direct way, a whole send each) and large ones (sockets fill: partial
    // sends and EAGAIN hand the rest to the writers, which open the way again once drained).
    let total = 240;
    let large = "x".repeat(48 * 1024);
    let readers: Vec<_> = subscribers
        .into_iter()
        .map(|mut sse| {
            tokio::spawn(async move {
                for i in 1..=total {
                    let e = sse.next_event(WAIT).await.expect("an update was missed");
                    assert_eq!(e.id, Some(i.to_string()), "out of order or duplicated");
                }
                sse.assert_no_event(SHORT).await;
            })
        })
        .collect();
    let p = publisher_token();
    for i in 1..=total {
        let id = i.to_string();
        let data = if i % 3 == 0 { large.as_str() } else { "small" };
        let form = [("topic", "t"), ("id", id.as_str()), ("data", data)];
        assert_eq!(publish(&c, hub.url(), &p, &form).await.0, 200);
        if i % 40 == 0 {
            // Let the writers drain, so the direct way opens again between bursts.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for reader in readers {
        reader.await.expect("a subscriber");
    }
    let direct = metric(&c, hub.url(), "quicksilver_updates_written_directly_total")
        .await
        .unwrap_or(0.0);
    assert!(direct > 0.0, "no update went the direct way");
    if in_use {
        let sent = metric(&c, hub.url(), "quicksilver_io_uring_sends_total")
            .await
            .unwrap_or(0.0);
        assert!(sent > 0.0, "nothing went through the ring");
        assert_eq!(
            metric(&c, hub.url(), "quicksilver_io_uring_fallbacks_total").await,
            Some(0.0),
            "the ring failed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_is_still_cut_off_while_a_fast_one_keeps_receiving() {
    let hub = spawn_hub(&[
        "--anonymous",
        "--io-uring",
        "--subscriber-queue",
        "8",
        "--history-size",
        "10",
    ])
    .await;
    let c = http_client();
    ring_in_use(&c, hub.url()).await;
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
    wait_until("the slow subscriber to be cut off", WAIT, async || {
        metric(
            &c,
            hub.url(),
            "quicksilver_slow_subscriber_disconnections_total",
        )
        .await
            == Some(1.0)
    })
    .await;
    let mut got = 0;
    while slow.next_event(Duration::from_secs(2)).await.is_ok() {
        got += 1;
    }
    assert!(
        got < total,
        "the slow subscriber should have been cut off (got {got})"
    );
}
