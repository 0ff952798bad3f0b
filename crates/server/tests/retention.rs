//! Retention per topic with real processes: two `quicksilver` nodes sharing a real `redis-server`,
//! their `[[retention]]` rules in the configuration file. A busy topic with a short window never
//! trims a quiet topic with a long one; a window of length 0 replays nothing; a subscriber whose
//! id fell out of its topic's window is told `earliest`; windows hold on the other node, after a
//! node restarts, and after a reload (`SIGHUP`) that keeps open streams.

use std::path::Path;
use std::time::Duration;

use quicksilver_testkit::hub::{encode_form, metric, publish, HubProcess};
use quicksilver_testkit::redis::RedisServer;
use quicksilver_testkit::sse::{SseClient, SseStream};
use quicksilver_testkit::token::publisher_token;
use quicksilver_testkit::{http_client, poll_until, TEST_JWT_KEY};

const BIN: &str = env!("CARGO_BIN_EXE_quicksilver");
const WAIT: Duration = Duration::from_secs(10);

const DOC: &str = "https://example.com/documents/1";
const BUSY: &str = "https://example.com/busy/1";
const TELEMETRY: &str = "https://example.com/telemetry/device/7";

/// Documents keep 500 for an hour, busy topics `busy` updates, telemetry none; the rest 20.
fn rules(busy: usize) -> String {
    format!(
        r#"
[[retention]]
topics = ["https://example.com/documents/{{id}}"]
length = 500
max_age = "1h"

[[retention]]
topics = ["https://example.com/busy/{{id}}"]
length = {busy}

[[retention]]
topics = ["https://example.com/telemetry/{{+rest}}"]
length = 0
"#
    )
}

fn node(redis: &str, config: &Path) -> HubProcess {
    HubProcess::spawn(
        BIN,
        &[
            "--config",
            config.to_str().expect("utf-8 path"),
            "--jwt-key",
            TEST_JWT_KEY,
            "--anonymous",
            "--transport",
            "redis",
            "--redis-url",
            redis,
            "--history-size",
            "20",
            "--redis-timeout",
            "500ms",
        ],
    )
}

async fn send(c: &reqwest::Client, hub: &HubProcess, topic: &str, id: &str) {
    let (status, body) = publish(
        c,
        hub.url(),
        &publisher_token(),
        &[("topic", topic), ("id", id), ("data", id)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// A subscription to `selector` on `hub`, resuming after `last_event_id`.
async fn resume(hub: &HubProcess, selector: &str, last_event_id: &str) -> SseStream {
    let url = format!(
        "{}?{}",
        hub.mercure_url(),
        encode_form(&[("topic", selector)])
    );
    SseClient::new()
        .open(&url, &[("Last-Event-ID", last_event_id)])
        .await
        .expect("subscribe")
}

/// The ids `stream` receives until (and without) `marker`, which the caller publishes after
/// subscribing: what was replayed.
async fn replayed_until(stream: &mut SseStream, marker: &str) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let event = stream.next_event(WAIT).await.expect("event");
        let id = event.id.unwrap_or_default();
        if id == marker {
            return ids;
        }
        ids.push(id);
    }
}

/// What a resume of `selector` after `last_event_id` on `hub` replays, and the id it is told it
/// resumed after; `marker` is published (to `topic`) to end the replay.
async fn check(
    c: &reqwest::Client,
    hub: &HubProcess,
    selector: &str,
    last_event_id: &str,
    topic: &str,
    marker: &str,
) -> (String, Vec<String>) {
    let mut stream = resume(hub, selector, last_event_id).await;
    let anchor = stream.header("last-event-id").unwrap_or("").to_string();
    send(c, hub, topic, marker).await;
    (anchor, replayed_until(&mut stream, marker).await)
}

fn numbered(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_per_topic_hold_on_every_node_across_restarts_and_reloads() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hub.toml");
    std::fs::write(&config, rules(5)).unwrap();
    let mut a = node(&redis.url(), &config);
    let mut b = node(&redis.url(), &config);
    let c = http_client();

    for i in 0..10 {
        send(&c, &a, DOC, &format!("doc{i}")).await;
    }
    // Far more than a partition's stream keeps (about 1000 entries): the documents' history lives
    // in its own class.
    let busy = 1500;
    for i in 0..busy {
        send(&c, &b, BUSY, &format!("busy{i}")).await;
    }
    for i in 0..3 {
        send(&c, &b, TELEMETRY, &format!("tele{i}")).await;
    }

    // The documents' window on both nodes, by exact topic and by template.
    // (Each check's marker is a document update too: the next check replays it.)
    let mut docs = numbered("doc", 3..10);
    for (hub, selector, marker) in [
        (&a, DOC, "doc-marker-a"),
        (&b, "https://example.com/documents/{id}", "doc-marker-b"),
    ] {
        let (anchor, ids) = check(&c, hub, selector, "doc2", DOC, marker).await;
        assert_eq!(anchor, "doc2");
        assert_eq!(ids, docs);
        docs.push(marker.to_string());
    }
    // The busy topic keeps its own five: an older id is out of its window.
    let (anchor, ids) = check(&c, &a, BUSY, "busy10", BUSY, "busy-marker-1").await;
    assert_eq!((anchor.as_str(), ids.len()), ("earliest", 0));
    let recent = format!("busy{}", busy - 3);
    let (anchor, ids) = check(&c, &b, BUSY, &recent, BUSY, "busy-marker-2").await;
    assert_eq!(anchor, recent);
    let mut expected = numbered("busy", busy - 2..busy);
    expected.push("busy-marker-1".into());
    assert_eq!(ids, expected);
    // Telemetry keeps nothing.
    let (anchor, ids) = check(&c, &a, TELEMETRY, "earliest", TELEMETRY, "tele-marker").await;
    assert_eq!((anchor.as_str(), ids.len()), ("earliest", 0));
    let (anchor, _) = check(&c, &b, TELEMETRY, "tele2", TELEMETRY, "tele-marker-2").await;
    assert_eq!(anchor, "earliest");

    // The classes and what each node published in them.
    let url_b = b.url().to_string();
    assert_eq!(
        metric(&c, &url_b, "quicksilver_retention_classes").await,
        Some(4.0)
    );
    assert_eq!(
        metric(
            &c,
            &url_b,
            "quicksilver_retention_published_total{class=\"n5\"}"
        )
        .await,
        Some((busy + 1) as f64)
    );

    // A node restarted finds the windows in Redis (the markers above are documents too).
    a.kill();
    a.restart();
    let (anchor, ids) = check(&c, &a, DOC, "doc2", DOC, "doc-marker-restarted").await;
    assert_eq!(anchor, "doc2");
    assert_eq!(ids, docs);

    // A reload gives busy topics seven; a stream open across it goes on.
    let mut open = resume(&b, DOC, "earliest").await;
    std::fs::write(&config, rules(7)).unwrap();
    a.sighup();
    b.sighup();
    for hub in [&a, &b] {
        let url = hub.url().to_string();
        assert!(
            poll_until(WAIT, async || {
                metric(&c, &url, "quicksilver_policy_reloads_total").await == Some(1.0)
                    && metric(
                        &c,
                        &url,
                        "quicksilver_retention_published_total{class=\"n7\"}",
                    )
                    .await
                    .is_some()
            })
            .await,
            "reloaded, the new window in force"
        );
    }
    // (Node B reads them all before the check: what its reader has not read yet would come
    // live, after the history.)
    let mut watching = resume(&b, BUSY, "again-none").await;
    for i in 0..10 {
        send(&c, &a, BUSY, &format!("again{i}")).await;
    }
    while watching.next_event(WAIT).await.expect("live").id.as_deref() != Some("again9") {}
    let (_, ids) = check(&c, &b, BUSY, "earliest", BUSY, "busy-marker-3").await;
    assert_eq!(ids, numbered("again", 3..10));
    send(&c, &a, DOC, "after-reload").await;
    loop {
        let event = open
            .next_event(WAIT)
            .await
            .expect("the open stream goes on");
        if event.id.as_deref() == Some("after-reload") {
            break;
        }
    }
}
