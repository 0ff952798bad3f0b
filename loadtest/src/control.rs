//! The conversation between the parent and its workers: commands down, events up.
//!
//! In-process workers exchange these values over Tokio channels; worker processes exchange the
//! same values as JSON lines, commands on their stdin and events on their stdout (stderr stays
//! free for diagnostics). A worker whose stdin closes takes it as an abort, so no worker outlives
//! its parent.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::latency::HistogramWire;
use crate::manifest::Manifest;
use crate::plan::Plan;
use crate::recorder::SecondWire;

/// What a worker is given at start: the plan and which share of the subscribers it drives.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct WorkerSpec {
    pub(crate) plan: Plan,
    pub(crate) shard: usize,
    pub(crate) shards: usize,
}

/// Parent → worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub(crate) enum Command {
    /// Publishing starts at `start_us`; updates published from `measure_from_us` on are measured.
    Go { start_us: u64, measure_from_us: u64 },
    /// Reconnect everyone (or expect connections to break) and catch up to `manifest`.
    Resume {
        generation: u32,
        drop_connections: bool,
        at_us: u64,
        manifest: Manifest,
    },
    /// Publishing is over: wait up to `drain_timeout` for everything in `manifest`, then report.
    Finish {
        manifest: Manifest,
        drain_timeout: Duration,
    },
    /// Stop at once without a report.
    Abort,
}

/// Worker → parent.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum Event {
    /// Every subscriber connected (or failed to).
    Ready(ConnectReport),
    /// Once a second.
    Progress(Progress),
    /// The final report.
    Result(Box<WorkerResult>),
    /// The worker could not run.
    Failed { message: String },
}

/// How connecting went.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct ConnectReport {
    pub(crate) subscribers: u64,
    pub(crate) connected: u64,
    pub(crate) failed: u64,
    /// From the first connection attempt until the last subscriber was connected or failed.
    pub(crate) elapsed: Duration,
    /// Per-subscriber time from TCP connect to preamble.
    pub(crate) latency: HistogramWire,
    /// A few distinct error messages.
    pub(crate) errors: Vec<String>,
}

/// A worker's counters, sent every second.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Progress {
    pub(crate) open: i64,
    pub(crate) connected: u64,
    pub(crate) failed: u64,
    pub(crate) delivered: u64,
    pub(crate) reconnects: u64,
    /// Subscribers still missing updates after `Finish`.
    pub(crate) incomplete: i64,
    /// Subscribers not yet caught up after `Resume`.
    pub(crate) catching_up: i64,
    /// p99 latency of the last complete second.
    pub(crate) p99_ms: Option<f64>,
}

/// Subscriber accounting summed over a group of subscribers.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Accounting {
    pub(crate) subscribers: u64,
    pub(crate) expected: u64,
    pub(crate) received: u64,
    pub(crate) lost: u64,
    pub(crate) duplicated: u64,
    pub(crate) out_of_order: u64,
    /// Updates whose publish failed but that were delivered anyway (not an error).
    pub(crate) unacked_delivered: u64,
    /// Events that did not carry our header.
    pub(crate) foreign: u64,
    pub(crate) subscribers_with_loss: u64,
    pub(crate) subscribers_with_duplicates: u64,
    pub(crate) subscribers_out_of_order: u64,
    /// Own updates expected and received (collab editors).
    pub(crate) own_expected: u64,
    pub(crate) own_received: u64,
    pub(crate) reconnects: u64,
    /// Connections the hub ended without being asked to.
    pub(crate) disconnects: u64,
    /// Reconnections that failed (refused, timed out, an error status) and were retried.
    #[serde(default)]
    pub(crate) reconnect_failures: u64,
    /// Subscribers by the number of connections they opened after their first (how often each
    /// client had to move: a rolling update should move each one once). Read back through
    /// [`number_keys`]: inside the internally tagged [`Event`], serde cannot read a map's number
    /// keys back from JSON's string keys by itself.
    #[serde(default, deserialize_with = "number_keys")]
    pub(crate) subscribers_by_reconnects: BTreeMap<u64, u64>,
    /// A few subscribers with problems, described.
    pub(crate) examples: Vec<String>,
}

/// A JSON object of counts whose keys are numbers written as strings (`{"0": 7}`).
fn number_keys<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<u64, u64>, D::Error> {
    BTreeMap::<String, u64>::deserialize(deserializer)?
        .into_iter()
        .map(|(key, count)| {
            key.parse()
                .map(|key| (key, count))
                .map_err(|_| serde::de::Error::custom(format!("{key:?} is not a count")))
        })
        .collect()
}

impl Accounting {
    /// Adds `other` into `self` (keeping at most 10 examples).
    pub(crate) fn add(&mut self, other: &Accounting) {
        self.subscribers += other.subscribers;
        self.expected += other.expected;
        self.received += other.received;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.out_of_order += other.out_of_order;
        self.unacked_delivered += other.unacked_delivered;
        self.foreign += other.foreign;
        self.subscribers_with_loss += other.subscribers_with_loss;
        self.subscribers_with_duplicates += other.subscribers_with_duplicates;
        self.subscribers_out_of_order += other.subscribers_out_of_order;
        self.own_expected += other.own_expected;
        self.own_received += other.own_received;
        self.reconnects += other.reconnects;
        self.disconnects += other.disconnects;
        self.reconnect_failures += other.reconnect_failures;
        for (reconnects, subscribers) in &other.subscribers_by_reconnects {
            *self
                .subscribers_by_reconnects
                .entry(*reconnects)
                .or_default() += subscribers;
        }
        for e in &other.examples {
            if self.examples.len() < 10 {
                self.examples.push(e.clone());
            }
        }
    }
}

/// What slow consumers experienced.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct SlowSummary {
    pub(crate) subscribers: u64,
    pub(crate) connected: u64,
    /// Cut off by the hub by the end of the run (response ended or connection closed): the
    /// expected treatment once they fall far enough behind.
    pub(crate) cut_off: u64,
    /// Still subscribed at the end, nothing more to send once drained.
    pub(crate) kept_open: u64,
    /// Still receiving when the final drain gave up.
    pub(crate) still_sending: u64,
    /// Bytes read from them after the run: what the hub and the kernels had buffered.
    pub(crate) drained_bytes: u64,
}

/// A worker's final report.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct WorkerResult {
    pub(crate) accounting: Accounting,
    pub(crate) slow: SlowSummary,
    pub(crate) deliveries: u64,
    pub(crate) measured_deliveries: u64,
    pub(crate) latency: HistogramWire,
    pub(crate) timeline: Vec<SecondWire>,
    /// Catch-up times after a resume order.
    pub(crate) catchup: HistogramWire,
    pub(crate) caught_up: u64,
    pub(crate) not_caught_up: u64,
    /// Whether the drain ended because everything arrived (not by timeout).
    pub(crate) drained: bool,
    /// CPU this worker process used (0 for in-process workers: the parent counts itself).
    pub(crate) cpu_seconds: f64,
    /// Peak RSS of this worker process (0 for in-process workers).
    pub(crate) peak_rss_kib: u64,
}

/// Runs this process as a worker: the spec comes as the first stdin line, then commands; events
/// go to stdout.
pub(crate) async fn serve_stdio() -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let first = lines
        .next_line()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no worker spec on stdin"))?;
    let spec: WorkerSpec = serde_json::from_str(&first)?;
    let (command_tx, command_rx) = mpsc::channel(16);
    let (event_tx, mut event_rx) = mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        loop {
            let command = match lines.next_line().await {
                Ok(Some(line)) => match serde_json::from_str::<Command>(&line) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("worker: bad command: {e}");
                        continue;
                    }
                },
                // Parent gone: abort.
                Ok(None) | Err(_) => Command::Abort,
            };
            let abort = matches!(command, Command::Abort);
            if command_tx.send(command).await.is_err() || abort {
                break;
            }
        }
    });
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(event) = event_rx.recv().await {
            let mut line = serde_json::to_vec(&event)?;
            line.push(b'\n');
            stdout.write_all(&line).await?;
            stdout.flush().await?;
        }
        anyhow::Ok(())
    });
    let outcome = crate::worker::run(spec, command_rx, event_tx, true).await;
    writer.await??;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_result_survives_the_trip_to_the_parent() {
        let result = WorkerResult {
            accounting: Accounting {
                subscribers_by_reconnects: [(0, 7), (2, 1)].into(),
                ..Accounting::default()
            },
            ..WorkerResult::default()
        };
        let line = serde_json::to_string(&Event::Result(Box::new(result))).unwrap();
        let Event::Result(back) = serde_json::from_str(&line).unwrap() else {
            panic!("not a result: {line}");
        };
        assert_eq!(
            back.accounting.subscribers_by_reconnects,
            [(0, 7), (2, 1)].into()
        );
    }
}
