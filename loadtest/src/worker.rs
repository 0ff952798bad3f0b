//! A worker: drives one share of the subscribers through the phases of a run.
//!
//! Phases: open the subscribers on a fixed connect schedule and wait until each is connected or
//! failed (bounded by the connect timeout) → report `Ready` → on `Go`, start measuring → on
//! `Resume`, order everyone to reconnect and catch up → on `Finish`, wait until every subscriber
//! has every acknowledged update or the drain timeout passes → stop all subscriber tasks, judge
//! their receipts against the manifest and report. A worker runs either inside the parent (one
//! process) or as a child process (see [`crate::control`]); it behaves the same in both.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, Instant};

use crate::clock::{own_cpu, unix_micros};
use crate::control::{
    Accounting, Command, ConnectReport, Event, Progress, SlowSummary, WorkerResult, WorkerSpec,
};
use crate::directive::{Directive, ResumeOrder};
use crate::latency::LatencyHistogram;
use crate::manifest::{sequence_key, IndexedManifest, SequenceEntry};
use crate::net;
use crate::plan::TopicSet;
use crate::recorder::DeliveryRecorder;
use crate::slow_subscriber::{self, DrainOutcome, SlowReport};
use crate::subscriber::{lock, Subscriber, SubscriberReport};
use crate::tracker::SequenceTracker;

/// Extra time, beyond the connect timeout, for the last connections to settle.
const CONNECT_SLACK: Duration = Duration::from_secs(5);
/// How long stopped subscriber tasks get to hand back their reports.
const COLLECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Counters and recorders shared by a worker and its subscriber tasks.
#[derive(Debug)]
pub(crate) struct WorkerShared {
    pub(crate) recorder: Mutex<DeliveryRecorder>,
    pub(crate) connect_latency: Mutex<LatencyHistogram>,
    /// Regular subscribers whose first connection got its preamble.
    pub(crate) connected: AtomicU64,
    /// Slow consumers that got their preamble.
    pub(crate) slow_connected: AtomicU64,
    /// Subscribers (of either kind) whose first connection failed.
    pub(crate) connect_failed: AtomicU64,
    /// Connections currently open (regular subscribers).
    pub(crate) open: AtomicI64,
    pub(crate) delivered: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    /// Subscribers still missing updates after `Finish`.
    pub(crate) incomplete: AtomicI64,
    /// Subscribers not yet caught up after `Resume`.
    pub(crate) catching_up: AtomicI64,
    /// A few distinct first-connection errors.
    pub(crate) connect_errors: Mutex<Vec<String>>,
    /// A few distinct reconnection errors.
    pub(crate) reconnect_errors: Mutex<Vec<String>>,
}

impl WorkerShared {
    /// Counts a subscriber whose first connection failed.
    pub(crate) fn note_connect_failure(&self, error: &str) {
        self.connect_failed.fetch_add(1, Ordering::Relaxed);
        note_error(&mut lock(&self.connect_errors), error);
    }

    /// Remembers why a reconnection failed (the subscriber counts it and retries).
    pub(crate) fn note_reconnect_failure(&self, error: &str) {
        note_error(&mut lock(&self.reconnect_errors), error);
    }
}

impl Default for WorkerShared {
    fn default() -> Self {
        Self {
            recorder: Mutex::default(),
            connect_latency: Mutex::new(LatencyHistogram::new(3)),
            connected: AtomicU64::new(0),
            slow_connected: AtomicU64::new(0),
            connect_failed: AtomicU64::new(0),
            open: AtomicI64::new(0),
            delivered: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            incomplete: AtomicI64::new(0),
            catching_up: AtomicI64::new(0),
            connect_errors: Mutex::default(),
            reconnect_errors: Mutex::default(),
        }
    }
}

/// Runs a worker until it has reported its result or was aborted. `own_process` says whether
/// this process is the worker alone (then its CPU time is reported).
pub(crate) async fn run(
    spec: WorkerSpec,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    own_process: bool,
) -> anyhow::Result<()> {
    let plan = Arc::new(spec.plan);
    let resume_urls = if plan.resume_urls.is_empty() {
        &plan.sub_urls
    } else {
        &plan.resume_urls
    };
    let endpoints =
        net::endpoints(&plan.sub_urls).and_then(|s| Ok((s, net::endpoints(resume_urls)?)));
    let (sub_endpoints, resume_endpoints) = match endpoints {
        Ok((s, r)) if !s.is_empty() && !r.is_empty() => (Arc::new(s), Arc::new(r)),
        Ok(_) => anyhow::bail!("no subscriber URL"),
        Err(e) => {
            let _ = events
                .send(Event::Failed {
                    message: e.to_string(),
                })
                .await;
            return Err(e.into());
        }
    };
    let shared = Arc::new(WorkerShared::default());
    let (directive_tx, directive_rx) = watch::channel(Directive::default());
    let progress = tokio::spawn(report_progress(shared.clone(), events.clone()));

    // Connect phase: a fixed schedule (subscriber j at start + j / rate), not sleeps that drift.
    let indices: Vec<usize> = plan.shard(spec.shard, spec.shards).collect();
    let rate = plan.connect_rate / spec.shards.max(1) as f64;
    let started = Instant::now();
    let mut regular: Vec<JoinHandle<SubscriberReport>> = Vec::new();
    let mut slow: Vec<JoinHandle<SlowReport>> = Vec::new();
    for (j, &i) in indices.iter().enumerate() {
        if rate > 0.0 {
            sleep_until(started + Duration::from_secs_f64(j as f64 / rate)).await;
        } else if j % 256 == 255 {
            tokio::task::yield_now().await;
        }
        if matches!(commands.try_recv(), Ok(Command::Abort)) {
            abort_all(&directive_tx, &regular, &slow, &progress);
            return Ok(());
        }
        let sub = plan.subscriber(i);
        if sub.slow {
            slow.push(tokio::spawn(slow_subscriber::run(
                sub,
                plan.clone(),
                sub_endpoints.clone(),
                shared.clone(),
                directive_rx.clone(),
            )));
        } else {
            let s = Subscriber::new(
                sub,
                plan.clone(),
                sub_endpoints.clone(),
                resume_endpoints.clone(),
                shared.clone(),
                directive_rx.clone(),
            );
            regular.push(tokio::spawn(s.run()));
        }
    }
    let total = indices.len() as u64;
    let settle_deadline = Instant::now() + plan.connect_timeout + CONNECT_SLACK;
    loop {
        let settled = shared.connected.load(Ordering::Relaxed)
            + shared.slow_connected.load(Ordering::Relaxed)
            + shared.connect_failed.load(Ordering::Relaxed);
        if settled >= total || Instant::now() >= settle_deadline {
            break;
        }
        if matches!(commands.try_recv(), Ok(Command::Abort)) {
            abort_all(&directive_tx, &regular, &slow, &progress);
            return Ok(());
        }
        sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    let ready = ConnectReport {
        subscribers: total,
        connected: shared.connected.load(Ordering::Relaxed)
            + shared.slow_connected.load(Ordering::Relaxed),
        failed: shared.connect_failed.load(Ordering::Relaxed),
        elapsed,
        latency: lock(&shared.connect_latency).to_wire(),
        errors: lock(&shared.connect_errors).clone(),
    };
    // Fresh counters first, so the parent's progress line is current when publishing starts.
    let _ = events.send(Event::Progress(progress_of(&shared))).await;
    if events.send(Event::Ready(ready)).await.is_err() {
        abort_all(&directive_tx, &regular, &slow, &progress);
        return Ok(());
    }

    let mut drained = false;
    let manifest = loop {
        match commands.recv().await {
            None | Some(Command::Abort) => {
                abort_all(&directive_tx, &regular, &slow, &progress);
                return Ok(());
            }
            Some(Command::Go {
                start_us,
                measure_from_us,
            }) => lock(&shared.recorder).start(start_us, measure_from_us),
            Some(Command::Resume {
                generation,
                drop_connections,
                at_us,
                manifest,
            }) => {
                let live = shared.connected.load(Ordering::Relaxed) as i64;
                shared.catching_up.store(live, Ordering::Relaxed);
                let order = Arc::new(ResumeOrder {
                    generation,
                    drop_connections,
                    at_us,
                    targets: IndexedManifest::new(manifest),
                });
                directive_tx.send_modify(|d| d.resume = Some(order));
            }
            Some(Command::Finish {
                manifest,
                drain_timeout,
            }) => {
                let manifest = Arc::new(IndexedManifest::new(manifest));
                let live = shared.connected.load(Ordering::Relaxed) as i64;
                shared.incomplete.store(live, Ordering::Relaxed);
                directive_tx.send_modify(|d| d.finish = Some(manifest.clone()));
                let deadline = Instant::now() + drain_timeout;
                while Instant::now() < deadline {
                    if shared.incomplete.load(Ordering::Relaxed) <= 0 {
                        drained = true;
                        break;
                    }
                    if matches!(commands.try_recv(), Ok(Command::Abort)) {
                        abort_all(&directive_tx, &regular, &slow, &progress);
                        return Ok(());
                    }
                    sleep(Duration::from_millis(20)).await;
                }
                break manifest;
            }
        }
    };

    directive_tx.send_modify(|d| d.stop = true);
    let deadline = Instant::now() + COLLECT_TIMEOUT;
    let mut result = WorkerResult {
        drained,
        ..WorkerResult::default()
    };
    let mut catchup = LatencyHistogram::new(3);
    for handle in regular {
        let abort = handle.abort_handle();
        let Ok(Ok(report)) = tokio::time::timeout_at(deadline, handle).await else {
            abort.abort();
            continue;
        };
        if report.connect_error.is_some() {
            continue;
        }
        result.accounting.add(&judge(&report, &manifest));
        if report.resumed {
            match report.catchup_us {
                Some(us) => {
                    catchup.record(us);
                    result.caught_up += 1;
                }
                None => result.not_caught_up += 1,
            }
        }
    }
    for handle in slow {
        result.slow.subscribers += 1;
        let abort = handle.abort_handle();
        let Ok(Ok(report)) = tokio::time::timeout_at(deadline, handle).await else {
            abort.abort();
            continue;
        };
        summarise_slow(&mut result.slow, &report);
    }
    progress.abort();
    {
        let recorder = lock(&shared.recorder);
        result.deliveries = recorder.deliveries;
        result.measured_deliveries = recorder.measured;
        result.latency = recorder.latency().to_wire();
        result.timeline = recorder.timeline_wire();
    }
    result.catchup = catchup.to_wire();
    let connect_errors = lock(&shared.connect_errors).clone();
    let reconnect_errors = lock(&shared.reconnect_errors).clone();
    let errors = connect_errors
        .iter()
        .map(|e| format!("connect error: {e}"))
        .chain(
            reconnect_errors
                .iter()
                .map(|e| format!("reconnect error: {e}")),
        );
    let room = 10usize.saturating_sub(result.accounting.examples.len());
    result.accounting.examples.extend(errors.take(room));
    if own_process {
        result.cpu_seconds = own_cpu().as_secs_f64();
        result.peak_rss_kib = crate::procstat::sample(std::process::id()).map_or(0, |s| s.hwm_kib);
    }
    events.send(Event::Result(Box::new(result))).await?;
    Ok(())
}

/// Keeps up to five distinct error messages.
fn note_error(errors: &mut Vec<String>, error: &str) {
    if errors.len() < 5 && !errors.iter().any(|e| e == error) {
        errors.push(error.to_owned());
    }
}

fn summarise_slow(summary: &mut SlowSummary, report: &SlowReport) {
    if report.connect_error.is_some() {
        return;
    }
    summary.connected += 1;
    match report.outcome {
        DrainOutcome::CutOff => summary.cut_off += 1,
        DrainOutcome::KeptOpen => summary.kept_open += 1,
        DrainOutcome::StillSending => summary.still_sending += 1,
    }
    summary.drained_bytes += report.drained_bytes;
}

/// Judges one subscriber's receipts against the final manifest.
pub(crate) fn judge(report: &SubscriberReport, manifest: &IndexedManifest) -> Accounting {
    let mut a = Accounting {
        subscribers: 1,
        foreign: report.foreign,
        reconnects: u64::from(report.reconnects),
        disconnects: u64::from(report.disconnects),
        reconnect_failures: u64::from(report.reconnect_failures),
        subscribers_by_reconnects: [(u64::from(report.reconnects), 1)].into(),
        ..Accounting::default()
    };
    let mut judge_entry = |e: &SequenceEntry| {
        let outcome = match report.trackers.get(&sequence_key(e.lane, e.topic)) {
            Some(t) => t.outcome(e.published, &e.failed),
            None => SequenceTracker::nothing(e.published, &e.failed),
        };
        a.expected += outcome.expected;
        a.received += outcome.received;
        a.lost += outcome.lost;
        a.unacked_delivered += outcome.unacked_delivered;
        if report.spec.own_lane == Some(e.lane) {
            a.own_expected += outcome.expected;
            a.own_received += outcome.received;
        }
    };
    match report.spec.topics {
        TopicSet::One(topic) => manifest.topic(topic).for_each(&mut judge_entry),
        TopicSet::All => manifest.entries.iter().for_each(&mut judge_entry),
    }
    for t in report.trackers.values() {
        a.duplicated += t.duplicated;
        a.out_of_order += t.out_of_order;
    }
    a.subscribers_with_loss = u64::from(a.lost > 0);
    a.subscribers_with_duplicates = u64::from(a.duplicated > 0);
    a.subscribers_out_of_order = u64::from(a.out_of_order > 0);
    if a.lost + a.duplicated + a.out_of_order > 0 {
        a.examples.push(format!(
            "subscriber {}: expected {}, received {}, lost {}, duplicated {}, out of order {}, \
             reconnects {}, hub disconnects {}",
            report.spec.index,
            a.expected,
            a.received,
            a.lost,
            a.duplicated,
            a.out_of_order,
            a.reconnects,
            a.disconnects
        ));
    }
    a
}

/// Stops everything without a report.
fn abort_all(
    directive: &watch::Sender<Directive>,
    regular: &[JoinHandle<SubscriberReport>],
    slow: &[JoinHandle<SlowReport>],
    progress: &JoinHandle<()>,
) {
    directive.send_modify(|d| d.stop = true);
    regular.iter().for_each(JoinHandle::abort);
    slow.iter().for_each(JoinHandle::abort);
    progress.abort();
}

/// Sends the worker's counters every second until the parent stops listening.
async fn report_progress(shared: Arc<WorkerShared>, events: mpsc::Sender<Event>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if events
            .send(Event::Progress(progress_of(&shared)))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// A snapshot of the worker's counters.
fn progress_of(shared: &WorkerShared) -> Progress {
    Progress {
        open: shared.open.load(Ordering::Relaxed),
        connected: shared.connected.load(Ordering::Relaxed)
            + shared.slow_connected.load(Ordering::Relaxed),
        failed: shared.connect_failed.load(Ordering::Relaxed),
        delivered: shared.delivered.load(Ordering::Relaxed),
        reconnects: shared.reconnects.load(Ordering::Relaxed),
        incomplete: shared.incomplete.load(Ordering::Relaxed),
        catching_up: shared.catching_up.load(Ordering::Relaxed),
        p99_ms: lock(&shared.recorder).last_second_p99_ms(unix_micros()),
    }
}
