//! The parent's side of a run, from the first hub reading to the report.
//!
//! Order of events: read the hubs (`/proc`, metrics) → start the workers and wait until every
//! subscriber is connected or failed → tell the workers publishing starts, and publish for
//! warm-up + duration (resume storms: drop connections or kill a hub on the way) → send the
//! manifest and wait for the workers' reports (each waits at most the drain timeout) → read the
//! hubs again → build the report. Every wait is bounded. A progress line goes to stderr every
//! second, fed by the workers' progress events and the publish book.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::time::{sleep_until, Instant};

use crate::clock::{own_cpu, unix_micros};
use crate::control::{Accounting, Command, WorkerResult};
use crate::latency::LatencyHistogram;
use crate::metrics::{self, Scrape};
use crate::procstat::{self, ProcessSample};
use crate::publisher::{self, PublishBook};
use crate::report::{
    ConnectSummary, DeliverySummary, HarnessSummary, HubSummary, PublishSummary, Report,
    ResumeSummary, TimelinePoint,
};
use crate::scenario::RunSetup;
use crate::subscriber::lock;
use crate::workers::WorkerPool;

/// Delay between telling workers to go and the first update, so `Go` reaches them first.
const GO_LEAD: Duration = Duration::from_millis(100);
/// Slack on top of computed waits for worker answers.
const WORKER_SLACK: Duration = Duration::from_secs(30);
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the progress line shows.
#[derive(Debug, Default)]
struct Phase {
    name: &'static str,
}

/// Runs `setup` and returns its report.
pub(crate) async fn execute(setup: RunSetup) -> anyhow::Result<Report> {
    let common = setup.common.clone();
    let started_unix_s = unix_micros() / 1_000_000;
    let cpu_at_start = own_cpu();
    let hubs_before: Vec<Result<ProcessSample, String>> = common
        .hub_pids
        .iter()
        .map(|&pid| procstat::sample(pid).map_err(|e| e.to_string()))
        .collect();
    let mut metrics_before: Vec<Result<Scrape, String>> = Vec::new();
    for url in &common.metrics_urls {
        metrics_before.push(metrics::scrape(url, SCRAPE_TIMEOUT).await);
    }

    let mut pool = WorkerPool::start(&setup.plan, common.processes).await?;
    let book = Arc::new(Mutex::new(PublishBook::default()));
    let phase = Arc::new(Mutex::new(Phase { name: "connecting" }));
    let rss_peaks = Arc::new(Mutex::new(vec![0u64; common.hub_pids.len()]));
    let progress_view = pool.progress_view();
    let ticker = tokio::spawn(tick(
        progress_view,
        book.clone(),
        phase.clone(),
        rss_peaks.clone(),
        common.hub_pids.clone(),
        setup.plan.subscribers as u64,
        common.quiet,
    ));

    // Connect.
    let connect_schedule = if common.connect_rate > 0.0 {
        Duration::from_secs_f64(setup.plan.subscribers as f64 / common.connect_rate)
    } else {
        Duration::ZERO
    };
    let ready = pool
        .wait_ready(connect_schedule + common.connect_timeout + WORKER_SLACK)
        .await
        .context("connecting subscribers")?;
    let mut connect_latency = LatencyHistogram::new(3);
    let mut connect = ConnectSummary::default();
    for r in &ready {
        connect.subscribers += r.subscribers;
        connect.connected += r.connected;
        connect.failed += r.failed;
        connect.time_to_connect_all_s = connect.time_to_connect_all_s.max(r.elapsed.as_secs_f64());
        connect_latency.merge(&r.latency);
        for e in &r.errors {
            if connect.errors.len() < 5 && !connect.errors.contains(e) {
                connect.errors.push(e.clone());
            }
        }
    }
    connect.latency = connect_latency.summary();
    if !common.quiet {
        eprintln!(
            "connected {}/{} subscribers in {:.2} s ({} failed)",
            connect.connected, connect.subscribers, connect.time_to_connect_all_s, connect.failed
        );
    }

    // Publish.
    lock(&phase).name = "publishing";
    let start = Instant::now() + GO_LEAD;
    let start_us = unix_micros() + GO_LEAD.as_micros() as u64;
    let measure_from_us = start_us + common.warmup.as_micros() as u64;
    pool.broadcast(Command::Go {
        start_us,
        measure_from_us,
    })
    .await;
    let publish_plan = Arc::new(setup.publish.clone());
    let publishing = publisher::spawn(
        publish_plan.clone(),
        book.clone(),
        start,
        setup.publish_length,
    )
    .context("starting the publisher thread")?;
    let publishing = tokio::task::spawn_blocking(move || publishing.join());
    let mut resume_summary = None;
    if let Some(resume) = &setup.resume {
        sleep_until(start + resume.after).await;
        let mut summary = ResumeSummary {
            at_s: resume.after.as_secs_f64(),
            killed_pid: resume.kill_pid,
            ..ResumeSummary::default()
        };
        if let Some(pid) = resume.kill_pid {
            summary.kill_error = kill(pid).err();
        }
        let manifest = lock(&book).manifest();
        lock(&phase).name = "resuming";
        pool.broadcast(Command::Resume {
            generation: 1,
            drop_connections: resume.kill_pid.is_none(),
            at_us: unix_micros(),
            manifest,
        })
        .await;
        resume_summary = Some(summary);
    }
    let publish_deadline =
        setup.publish_length + publish_plan.request_timeout + Duration::from_secs(5);
    if tokio::time::timeout(publish_deadline + GO_LEAD, publishing)
        .await
        .is_err()
    {
        eprintln!(
            "warning: publishing did not finish in time; unanswered updates count as never sent"
        );
    }

    // Drain and collect.
    lock(&phase).name = "draining";
    let manifest = lock(&book).manifest();
    pool.broadcast(Command::Finish {
        manifest,
        drain_timeout: common.drain_timeout,
    })
    .await;
    let results = pool
        .collect(common.drain_timeout + WORKER_SLACK)
        .await
        .context("collecting worker results")?;
    pool.shutdown().await;
    ticker.abort();

    let hubs_after: Vec<Result<ProcessSample, String>> = common
        .hub_pids
        .iter()
        .map(|&pid| procstat::sample(pid).map_err(|e| e.to_string()))
        .collect();
    let mut metrics_out = Vec::new();
    for (url, before) in common.metrics_urls.iter().zip(metrics_before) {
        let after = metrics::scrape(url, SCRAPE_TIMEOUT).await;
        metrics_out.push(metrics::delta(url, before, after));
    }

    let harness_cpu = (own_cpu().saturating_sub(cpu_at_start)).as_secs_f64()
        + results.iter().map(|r| r.cpu_seconds).sum::<f64>();
    let book = lock(&book);
    let publish = PublishSummary {
        lanes: publish_plan.lanes.len(),
        target_rate: publish_plan.total_rate(),
        attempted: book.attempted,
        acked: book.acked,
        failed: book.failed,
        // Over the time publishing really took (longer than planned if the hub was slow to answer).
        achieved_rate: match book.finished.unwrap_or(setup.publish_length).as_secs_f64() {
            t if t > 0.01 => book.attempted as f64 / t.max(setup.publish_length.as_secs_f64()),
            _ => book.attempted as f64,
        },
        latency: book.latency.summary(),
        late_sends: book.late,
        max_lag_ms: book.max_lag.as_secs_f64() * 1000.0,
        errors: book.errors.clone(),
    };
    let (delivery, timeline, catchup, caught) =
        merge_results(&results, &book.per_second, setup.duration);
    if let Some(r) = &mut resume_summary {
        r.caught_up = caught.0;
        r.not_caught_up = caught.1;
        r.catchup = catchup.summary();
        r.time_until_all_caught_up_s = r.catchup.max_ms / 1000.0;
    }
    let slow_consumers = (setup.plan.slow_fraction > 0.0).then(|| {
        let mut s = crate::control::SlowSummary::default();
        for r in &results {
            s.subscribers += r.slow.subscribers;
            s.connected += r.slow.connected;
            s.cut_off += r.slow.cut_off;
            s.kept_open += r.slow.kept_open;
            s.still_sending += r.slow.still_sending;
            s.drained_bytes += r.slow.drained_bytes;
        }
        s
    });
    let peaks = lock(&rss_peaks).clone();
    let hubs: Vec<HubSummary> = common
        .hub_pids
        .iter()
        .enumerate()
        .map(|(i, &pid)| hub_summary(pid, &hubs_before[i], &hubs_after[i], peaks[i]))
        .collect();
    let hub_cpu: Option<f64> = (!hubs.is_empty() && hubs.iter().all(|h| h.cpu_seconds.is_some()))
        .then(|| hubs.iter().filter_map(|h| h.cpu_seconds).sum());
    let deliveries_per_hub_cpu_second = hub_cpu
        .filter(|&c| c > 0.0)
        .map(|c| delivery.deliveries as f64 / c);
    let config = serde_json::json!({
        "sub_urls": common.sub_urls,
        "pub_urls": publish_plan.pub_urls,
        "subscribers": setup.plan.subscribers,
        "rate": publish_plan.total_rate(),
        "publishers": publish_plan.lanes.len(),
        "duration_s": setup.duration.as_secs_f64(),
        "warmup_s": common.warmup.as_secs_f64(),
        "drain_timeout_s": common.drain_timeout.as_secs_f64(),
        "payload_bytes": common.payload_bytes,
        "private": publish_plan.private,
        "auth": common.auth,
        "connect_rate": common.connect_rate,
        "source_ips": common.source_ips,
        "processes": common.processes,
        "hub_pids": common.hub_pids,
        "scenario": setup.parameters,
    });
    Ok(Report {
        scenario: setup.plan.scenario.name(),
        started_unix_s,
        config,
        connect,
        publish,
        delivery,
        resume: resume_summary,
        slow_consumers,
        harness: HarnessSummary {
            processes: common.processes,
            cpu_seconds: harness_cpu,
            peak_rss_kib: procstat::sample(std::process::id()).map_or(0, |s| s.hwm_kib)
                + results.iter().map(|r| r.peak_rss_kib).sum::<u64>(),
        },
        hubs,
        hub_cpu_seconds: hub_cpu,
        deliveries_per_hub_cpu_second,
        metrics: metrics_out,
        timeline,
        problems: Vec::new(),
        loss_detected: false,
    })
}

/// Sums the workers' results and builds the timeline.
fn merge_results(
    results: &[WorkerResult],
    published_per_second: &[u64],
    duration: Duration,
) -> (
    DeliverySummary,
    Vec<TimelinePoint>,
    LatencyHistogram,
    (u64, u64),
) {
    let mut accounting = Accounting::default();
    let mut latency = LatencyHistogram::new(3);
    let mut catchup = LatencyHistogram::new(3);
    let mut seconds: Vec<(u64, LatencyHistogram)> = Vec::new();
    let (mut deliveries, mut measured, mut caught, mut not_caught) = (0, 0, 0, 0);
    let mut drained = true;
    for r in results {
        accounting.add(&r.accounting);
        latency.merge(&r.latency);
        catchup.merge(&r.catchup);
        deliveries += r.deliveries;
        measured += r.measured_deliveries;
        caught += r.caught_up;
        not_caught += r.not_caught_up;
        drained &= r.drained;
        for s in &r.timeline {
            let i = s.second as usize;
            if seconds.len() <= i {
                seconds.resize_with(i + 1, || (0, LatencyHistogram::new(2)));
            }
            seconds[i].0 += s.deliveries;
            seconds[i].1.merge(&s.latency);
        }
    }
    let len = seconds.len().max(published_per_second.len());
    let timeline = (0..len)
        .map(|i| {
            let (count, hist) = seconds
                .get(i)
                .map(|(c, h)| (*c, h.summary()))
                .unwrap_or_default();
            TimelinePoint {
                second: i as u32,
                published: published_per_second.get(i).copied().unwrap_or(0),
                deliveries: count,
                p50_ms: hist.p50_ms,
                p99_ms: hist.p99_ms,
                p999_ms: hist.p999_ms,
                max_ms: hist.max_ms,
            }
        })
        .collect();
    let per_second = if duration.as_secs_f64() > 0.0 {
        measured as f64 / duration.as_secs_f64()
    } else {
        0.0
    };
    let delivery = DeliverySummary {
        accounting,
        deliveries,
        measured_deliveries: measured,
        deliveries_per_second: per_second,
        drained,
        latency: latency.summary(),
    };
    (delivery, timeline, catchup, (caught, not_caught))
}

fn hub_summary(
    pid: u32,
    before: &Result<ProcessSample, String>,
    after: &Result<ProcessSample, String>,
    peak: u64,
) -> HubSummary {
    match (before, after) {
        (Ok(b), Ok(a)) => HubSummary {
            pid,
            cpu_seconds: Some(a.cpu_seconds - b.cpu_seconds),
            rss_before_kib: Some(b.rss_kib),
            rss_after_kib: Some(a.rss_kib),
            rss_peak_sampled_kib: Some(peak.max(a.rss_kib).max(b.rss_kib)),
            hwm_kib: Some(a.hwm_kib),
            error: None,
        },
        (Ok(b), Err(e)) => HubSummary {
            pid,
            rss_before_kib: Some(b.rss_kib),
            rss_peak_sampled_kib: Some(peak.max(b.rss_kib)),
            error: Some(format!("after the run: {e}")),
            ..HubSummary::default()
        },
        (Err(e), _) => HubSummary {
            pid,
            error: Some(format!("before the run: {e}")),
            ..HubSummary::default()
        },
    }
}

/// Sends SIGKILL to `pid`.
fn kill(pid: u32) -> Result<(), String> {
    let raw = i32::try_from(pid).map_err(|_| format!("pid {pid} out of range"))?;
    let pid = rustix::process::Pid::from_raw(raw).ok_or_else(|| format!("invalid pid {raw}"))?;
    rustix::process::kill_process(pid, rustix::process::Signal::KILL)
        .map_err(|e| format!("kill {raw}: {e}"))
}

/// Once a second: samples hub RSS and prints the progress line.
async fn tick(
    progress: crate::workers::ProgressView,
    book: Arc<Mutex<PublishBook>>,
    phase: Arc<Mutex<Phase>>,
    rss_peaks: Arc<Mutex<Vec<u64>>>,
    hub_pids: Vec<u32>,
    subscribers: u64,
    quiet: bool,
) {
    let began = Instant::now();
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut last_published, mut last_delivered) = (0u64, 0u64);
    loop {
        interval.tick().await;
        let mut rss = Vec::with_capacity(hub_pids.len());
        {
            let mut peaks = lock(&rss_peaks);
            for (i, &pid) in hub_pids.iter().enumerate() {
                if let Ok(s) = procstat::sample(pid) {
                    peaks[i] = peaks[i].max(s.rss_kib);
                    rss.push(format!("{:.0}MiB", s.rss_kib as f64 / 1024.0));
                } else {
                    rss.push("gone".to_owned());
                }
            }
        }
        if quiet {
            continue;
        }
        let p = progress.sum();
        let (published, failed) = {
            let b = lock(&book);
            (b.attempted, b.failed)
        };
        let name = lock(&phase).name;
        let mut line = format!(
            "[{:>4}s] {name:<10} conn {}/{} open {} fail {} | pub {} (+{}) err {} | deliv {} (+{}) p99 {} | reconn {}",
            began.elapsed().as_secs(),
            p.connected,
            subscribers,
            p.open,
            p.failed,
            published,
            published.saturating_sub(last_published),
            failed,
            p.delivered,
            p.delivered.saturating_sub(last_delivered),
            p.p99_ms.map(|v| format!("{v:.2}ms")).unwrap_or_else(|| "-".to_owned()),
            p.reconnects,
        );
        if name == "draining" {
            line.push_str(&format!(" | incomplete {}", p.incomplete));
        }
        if name == "resuming" || name == "draining" && p.catching_up > 0 {
            line.push_str(&format!(" | catching up {}", p.catching_up));
        }
        if !rss.is_empty() {
            line.push_str(&format!(" | hub rss {}", rss.join(",")));
        }
        eprintln!("{line}");
        last_published = published;
        last_delivered = p.delivered;
    }
}

#[cfg(test)]
mod tests;
