//! End-to-end runs against the in-process [`crate::test_hub`]: a clean broadcast, injected loss
//! and duplication, and a resume storm served from history.

use clap::Parser;

use crate::cli::Cli;
use crate::report::{Report, Verdict};
use crate::scenario;
use crate::test_hub::{self, Faults};

async fn run(faults: Faults, args: &[&str]) -> (Report, Verdict) {
    let hub = test_hub::spawn(faults).await;
    let mut all = vec!["lt"];
    all.extend_from_slice(args);
    all.extend_from_slice(&[
        "--sub-url",
        &hub.url,
        "--jwt-key",
        "k",
        "-q",
        "--drain-timeout",
        "3s",
    ]);
    let setup =
        scenario::build(Cli::try_parse_from(all).expect("arguments").command).expect("setup");
    let mut report = super::execute(setup).await.expect("run");
    let verdict = report.judge(false);
    (report, verdict)
}

const BROADCAST: &[&str] = &[
    "broadcast",
    "--subscribers",
    "20",
    "--rate",
    "50",
    "--duration",
    "1",
];

#[tokio::test]
async fn clean_broadcast_accounts_every_delivery() {
    let (report, verdict) = run(Faults::default(), BROADCAST).await;
    let a = &report.delivery.accounting;
    assert_eq!(verdict, Verdict::Clean, "{}", report.summary());
    assert_eq!(report.connect.connected, 20);
    assert_eq!(report.publish.acked, 50);
    assert_eq!((a.expected, a.received, a.lost), (1000, 1000, 0));
    assert_eq!(report.delivery.deliveries, 1000);
    assert!(report.delivery.drained);
    assert!(report.delivery.latency.count == 1000 && report.delivery.latency.max_ms > 0.0);
    assert!(!report.timeline.is_empty());
}

#[tokio::test]
async fn a_dropped_update_is_loss() {
    let faults = Faults {
        drop_for_first: Some(10),
        ..Faults::default()
    };
    let (report, verdict) = run(faults, BROADCAST).await;
    let a = &report.delivery.accounting;
    assert_eq!(verdict, Verdict::Loss);
    assert_eq!((a.lost, a.subscribers_with_loss, a.duplicated), (1, 1, 0));
    assert!(report.summary().contains("LOSS DETECTED"));
    assert!(!report.delivery.drained);
}

#[tokio::test]
async fn a_duplicated_update_is_detected() {
    let faults = Faults {
        duplicate_for_first: Some(7),
        ..Faults::default()
    };
    let (report, verdict) = run(faults, BROADCAST).await;
    let a = &report.delivery.accounting;
    assert_eq!(verdict, Verdict::Loss);
    assert_eq!((a.lost, a.duplicated, a.out_of_order), (0, 1, 0));
}

#[tokio::test]
async fn resume_storm_catches_up_from_history() {
    let args = [
        "resume-storm",
        "--subscribers",
        "20",
        "--rate",
        "50",
        "--duration",
        "2",
        "--disconnect-after",
        "1",
    ];
    let (report, verdict) = run(Faults::default(), &args).await;
    assert_eq!(verdict, Verdict::Clean, "{}", report.summary());
    let resume = report.resume.as_ref().expect("resume section");
    assert_eq!((resume.caught_up, resume.not_caught_up), (20, 0));
    assert_eq!(report.delivery.accounting.reconnects, 20);
    assert_eq!(report.delivery.accounting.lost, 0);
}
