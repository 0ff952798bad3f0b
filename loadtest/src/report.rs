//! The run's report: one serialisable document (the `--json-out` file) and its human summary.
//!
//! [`Report::verdict`] decides the exit status: any lost, duplicated or out-of-order update is a
//! `LOSS DETECTED` failure; connect and publish errors and subscribers that never caught up after
//! a resume are failures unless tolerated.

use serde::Serialize;

use crate::control::{Accounting, SlowSummary};
use crate::latency::LatencySummary;
use crate::metrics::MetricsDelta;

/// Everything measured in a run.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) scenario: &'static str,
    pub(crate) started_unix_s: u64,
    pub(crate) config: serde_json::Value,
    pub(crate) connect: ConnectSummary,
    pub(crate) publish: PublishSummary,
    pub(crate) delivery: DeliverySummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) resume: Option<ResumeSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) slow_consumers: Option<SlowSummary>,
    pub(crate) harness: HarnessSummary,
    pub(crate) hubs: Vec<HubSummary>,
    pub(crate) hub_cpu_seconds: Option<f64>,
    pub(crate) deliveries_per_hub_cpu_second: Option<f64>,
    pub(crate) metrics: Vec<MetricsDelta>,
    pub(crate) timeline: Vec<TimelinePoint>,
    /// Problems found; empty for a clean run.
    pub(crate) problems: Vec<String>,
    pub(crate) loss_detected: bool,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct ConnectSummary {
    pub(crate) subscribers: u64,
    pub(crate) connected: u64,
    pub(crate) failed: u64,
    /// Until the last subscriber had its preamble (or failed), slowest worker.
    pub(crate) time_to_connect_all_s: f64,
    /// Per subscriber, TCP connect to preamble.
    pub(crate) latency: LatencySummary,
    pub(crate) errors: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct PublishSummary {
    pub(crate) lanes: usize,
    pub(crate) target_rate: f64,
    pub(crate) attempted: u64,
    pub(crate) acked: u64,
    pub(crate) failed: u64,
    pub(crate) achieved_rate: f64,
    /// HTTP round trip of acknowledged publishes.
    pub(crate) latency: LatencySummary,
    /// Sends more than 10 ms behind schedule (the publisher could not keep up).
    pub(crate) late_sends: u64,
    pub(crate) max_lag_ms: f64,
    pub(crate) errors: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct DeliverySummary {
    #[serde(flatten)]
    pub(crate) accounting: Accounting,
    /// Every update received, warm-up included.
    pub(crate) deliveries: u64,
    /// Updates received that were published after the warm-up.
    pub(crate) measured_deliveries: u64,
    /// Measured deliveries per second of measured publishing.
    pub(crate) deliveries_per_second: f64,
    /// Whether every subscriber had everything before the drain timeout.
    pub(crate) drained: bool,
    /// Publish → receive, measured updates.
    pub(crate) latency: LatencySummary,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct ResumeSummary {
    pub(crate) at_s: f64,
    pub(crate) killed_pid: Option<u32>,
    pub(crate) kill_error: Option<String>,
    pub(crate) caught_up: u64,
    pub(crate) not_caught_up: u64,
    /// From the order until each subscriber had every update settled at that moment and one
    /// published after it.
    pub(crate) catchup: LatencySummary,
    /// Until the last subscriber caught up (the maximum above), seconds.
    pub(crate) time_until_all_caught_up_s: f64,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct HarnessSummary {
    pub(crate) processes: usize,
    pub(crate) cpu_seconds: f64,
    /// Peak RSS of the parent plus every worker process.
    pub(crate) peak_rss_kib: u64,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct HubSummary {
    pub(crate) pid: u32,
    pub(crate) cpu_seconds: Option<f64>,
    pub(crate) rss_before_kib: Option<u64>,
    pub(crate) rss_after_kib: Option<u64>,
    /// Highest RSS seen by the once-a-second sampler during the run.
    pub(crate) rss_peak_sampled_kib: Option<u64>,
    /// `VmHWM` at the end: the process's lifetime peak.
    pub(crate) hwm_kib: Option<u64>,
    pub(crate) error: Option<String>,
}

/// One second of the run.
#[derive(Debug, Default, Serialize, Clone)]
pub(crate) struct TimelinePoint {
    pub(crate) second: u32,
    pub(crate) published: u64,
    pub(crate) deliveries: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
}

/// How the run ended, for the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Clean,
    Errors,
    Loss,
}

impl Report {
    /// Fills `problems` and `loss_detected`; returns the verdict.
    pub(crate) fn judge(&mut self, tolerate_errors: bool) -> Verdict {
        let a = &self.delivery.accounting;
        let mut problems = Vec::new();
        self.loss_detected = a.lost + a.duplicated + a.out_of_order > 0;
        if self.loss_detected {
            problems.push(format!(
                "{} lost, {} duplicated, {} out of order ({} / {} / {} subscribers affected)",
                a.lost,
                a.duplicated,
                a.out_of_order,
                a.subscribers_with_loss,
                a.subscribers_with_duplicates,
                a.subscribers_out_of_order
            ));
        }
        if self.connect.failed > 0 {
            problems.push(format!(
                "{} subscribers failed to connect",
                self.connect.failed
            ));
        }
        if self.publish.failed > 0 {
            problems.push(format!("{} publishes failed", self.publish.failed));
        }
        if a.foreign > 0 {
            problems.push(format!(
                "{} foreign events (not from this harness)",
                a.foreign
            ));
        }
        if let Some(r) = &self.resume {
            if r.not_caught_up > 0 {
                problems.push(format!(
                    "{} subscribers never caught up after the resume",
                    r.not_caught_up
                ));
            }
        }
        if self.connect.connected == 0 {
            problems.push("no subscriber connected".to_owned());
        }
        self.problems = problems;
        if self.loss_detected {
            Verdict::Loss
        } else if !self.problems.is_empty() && !tolerate_errors {
            Verdict::Errors
        } else {
            Verdict::Clean
        }
    }

    /// The human summary.
    pub(crate) fn summary(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let lat = |l: &LatencySummary| {
            format!(
                "p50 {:.2} ms  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
                l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
            )
        };
        let c = &self.connect;
        let p = &self.publish;
        let d = &self.delivery;
        let a = &d.accounting;
        let _ = writeln!(o, "== quicksilver-loadtest {} ==", self.scenario);
        let _ = writeln!(
            o,
            "connect     {}/{} subscribers in {:.2} s, {} failed; per subscriber {}",
            c.connected,
            c.subscribers,
            c.time_to_connect_all_s,
            c.failed,
            lat(&c.latency)
        );
        let _ = writeln!(
            o,
            "publish     {} sent ({} acked, {} failed) at {:.1}/s (target {:.1}/s, {} lanes); round trip p50 {:.2} ms p99 {:.2} ms; {} late sends (max lag {:.1} ms)",
            p.attempted, p.acked, p.failed, p.achieved_rate, p.target_rate, p.lanes, p.latency.p50_ms, p.latency.p99_ms, p.late_sends, p.max_lag_ms
        );
        let _ = writeln!(
            o,
            "deliveries  {} total, {} measured, {:.0}/s; expected {}, received {}, lost {}, duplicated {}, out of order {}{}",
            d.deliveries,
            d.measured_deliveries,
            d.deliveries_per_second,
            a.expected,
            a.received,
            a.lost,
            a.duplicated,
            a.out_of_order,
            if d.drained { "" } else { " (drain timed out)" }
        );
        if a.unacked_delivered > 0 {
            let _ = writeln!(
                o,
                "            {} updates delivered although their publish failed",
                a.unacked_delivered
            );
        }
        if a.own_expected > 0 {
            let _ = writeln!(
                o,
                "own updates {} of {} received back by their editors",
                a.own_received, a.own_expected
            );
        }
        let _ = writeln!(o, "latency     {} (publish → receive)", lat(&d.latency));
        let _ = writeln!(
            o,
            "connections {} reconnects ({} failed and retried), {} ended by the hub",
            a.reconnects, a.reconnect_failures, a.disconnects
        );
        if a.reconnects > 0 {
            let spread: Vec<String> = a
                .subscribers_by_reconnects
                .iter()
                .map(|(reconnects, subscribers)| format!("{subscribers} × {reconnects}"))
                .collect();
            let _ = writeln!(
                o,
                "            reconnects per subscriber: {}",
                spread.join(", ")
            );
        }
        if let Some(r) = &self.resume {
            let _ = writeln!(
                o,
                "resume      at {:.1} s{}: {} caught up, {} not; all caught up after {:.3} s; catch-up {}",
                r.at_s,
                r.killed_pid.map(|p| format!(" (killed pid {p})")).unwrap_or_default(),
                r.caught_up,
                r.not_caught_up,
                r.time_until_all_caught_up_s,
                lat(&r.catchup)
            );
        }
        if let Some(s) = &self.slow_consumers {
            let _ = writeln!(
                o,
                "slow        {} slow consumers ({} connected): {} cut off by the hub, {} kept open, {} still sending after the drain; {:.1} MiB drained at the end",
                s.subscribers,
                s.connected,
                s.cut_off,
                s.kept_open,
                s.still_sending,
                s.drained_bytes as f64 / 1_048_576.0
            );
        }
        let _ = writeln!(
            o,
            "harness     {:.2} CPU-s over {} process(es), peak RSS {} MiB",
            self.harness.cpu_seconds,
            self.harness.processes,
            mib(Some(self.harness.peak_rss_kib))
        );
        for h in &self.hubs {
            match &h.error {
                Some(e) => {
                    let _ = writeln!(o, "hub {:>7} {e}", h.pid);
                }
                None => {
                    let _ = writeln!(
                        o,
                        "hub {:>7} {:.2} CPU-s, RSS {} → {} MiB (peak sampled {} MiB, lifetime peak {} MiB)",
                        h.pid,
                        h.cpu_seconds.unwrap_or(0.0),
                        mib(h.rss_before_kib),
                        mib(h.rss_after_kib),
                        mib(h.rss_peak_sampled_kib),
                        mib(h.hwm_kib)
                    );
                }
            }
        }
        if let Some(per) = self.deliveries_per_hub_cpu_second {
            let _ = writeln!(o, "efficiency  {per:.0} deliveries per hub CPU-second");
        }
        for m in &self.metrics {
            let _ = writeln!(
                o,
                "metrics     {}: {} series changed{}",
                m.url,
                m.delta.len(),
                m.error
                    .as_deref()
                    .map(|e| format!(" (error: {e})"))
                    .unwrap_or_default()
            );
        }
        for e in c
            .errors
            .iter()
            .map(|e| format!("connect error: {e}"))
            .chain(p.errors.iter().map(|e| format!("publish error: {e}")))
        {
            let _ = writeln!(o, "  {e}");
        }
        for e in &a.examples {
            let _ = writeln!(o, "  {e}");
        }
        for problem in &self.problems {
            let _ = writeln!(o, "PROBLEM: {problem}");
        }
        if self.loss_detected {
            let _ = writeln!(
                o,
                "!!!!!!!! LOSS DETECTED: {} lost, {} duplicated, {} out of order !!!!!!!!",
                a.lost, a.duplicated, a.out_of_order
            );
        }
        o
    }
}

fn mib(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.1}", k as f64 / 1024.0))
        .unwrap_or_else(|| "?".to_owned())
}
