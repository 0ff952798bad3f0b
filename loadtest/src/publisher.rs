//! The publisher: sequential lanes that POST updates on a fixed schedule, and the book of what
//! was acknowledged.
//!
//! A lane sends its k-th update at `start + phase + k / rate` (an absolute schedule, so a late
//! send is followed by on-time ones rather than shifting everything after it) and waits for each
//! answer before the next, so the order of a lane's updates at the hub is the order it sent them.
//! Lanes share one pooled HTTP/1 client. Every answer is written into the [`PublishBook`]: the
//! (lane, topic) sequences with their failures (the manifest subscribers are judged against),
//! round-trip latency and a per-second count. A lane moves to the next `--pub-url` after a
//! connection error, so publishing survives a killed node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::{sleep_until, timeout, Instant};

use crate::cli::HubKind;
use crate::clock::unix_micros;
use crate::header::UpdateHeader;
use crate::latency::LatencyHistogram;
use crate::manifest::{sequence_key, Manifest, SequenceEntry};
use crate::nchan;
use crate::subscriber::lock;

/// A send later than this behind its schedule counts as late.
const LATE: Duration = Duration::from_millis(10);

/// One sequential publisher.
#[derive(Clone, Debug)]
pub(crate) struct Lane {
    /// Topics (indices) the lane cycles through.
    pub(crate) topics: Vec<u32>,
    /// Updates per second.
    pub(crate) rate: f64,
    /// Offset of the lane's first update from the start.
    pub(crate) phase: Duration,
    /// Index into [`PublishPlan::tokens`].
    pub(crate) token: usize,
}

/// What the publisher does.
#[derive(Clone, Debug)]
pub(crate) struct PublishPlan {
    pub(crate) pub_urls: Vec<String>,
    pub(crate) topics: Arc<Vec<String>>,
    pub(crate) lanes: Vec<Lane>,
    pub(crate) payload_bytes: usize,
    pub(crate) private: bool,
    /// Publisher JWTs.
    pub(crate) tokens: Vec<String>,
    pub(crate) request_timeout: Duration,
    /// Protocol of the hub (how publish requests are built).
    pub(crate) hub: HubKind,
}

impl PublishPlan {
    /// Updates per second, all lanes together.
    pub(crate) fn total_rate(&self) -> f64 {
        self.lanes.iter().map(|l| l.rate).sum()
    }
}

/// The record of everything published.
#[derive(Debug)]
pub(crate) struct PublishBook {
    entries: HashMap<u64, SequenceEntry>,
    pub(crate) latency: LatencyHistogram,
    pub(crate) attempted: u64,
    pub(crate) acked: u64,
    pub(crate) failed: u64,
    /// A few distinct error messages.
    pub(crate) errors: Vec<String>,
    /// Updates sent in each second since the start.
    pub(crate) per_second: Vec<u64>,
    /// Sends later than [`LATE`] behind schedule, and the worst lag.
    pub(crate) late: u64,
    pub(crate) max_lag: Duration,
    /// Time from the start to the last answer, once publishing is over.
    pub(crate) finished: Option<Duration>,
}

impl Default for PublishBook {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            latency: LatencyHistogram::new(3),
            attempted: 0,
            acked: 0,
            failed: 0,
            errors: Vec::new(),
            per_second: Vec::new(),
            late: 0,
            max_lag: Duration::ZERO,
            finished: None,
        }
    }
}

impl PublishBook {
    /// The settled sequences so far (or all of them once publishing is over).
    pub(crate) fn manifest(&self) -> Manifest {
        let mut entries: Vec<SequenceEntry> = self.entries.values().cloned().collect();
        entries.sort_by_key(|e| (e.lane, e.topic));
        Manifest { entries }
    }

    fn settle(&mut self, lane: u32, topic: u32, seq: u64, outcome: Result<Duration, String>) {
        let entry = self
            .entries
            .entry(sequence_key(lane, topic))
            .or_insert_with(|| SequenceEntry {
                lane,
                topic,
                ..SequenceEntry::default()
            });
        entry.published = entry.published.max(seq + 1);
        match outcome {
            Ok(rtt) => {
                self.acked += 1;
                self.latency.record(rtt.as_micros() as u64);
            }
            Err(e) => {
                entry.failed.push(seq);
                self.failed += 1;
                if self.errors.len() < 5 && !self.errors.contains(&e) {
                    self.errors.push(e);
                }
            }
        }
    }
}

/// Publishes `plan` from `start` for `length` on a thread of its own, so that pacing and round
/// trips are not queued behind subscriber work sharing the parent's runtime; the thread ends when
/// every lane has had its last answer.
pub(crate) fn spawn(
    plan: Arc<PublishPlan>,
    book: Arc<Mutex<PublishBook>>,
    start: Instant,
    length: Duration,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("publisher".to_owned())
        .spawn(move || runtime.block_on(run(plan, book, start, length)))
}

/// Publishes `plan` from `start` for `length`; returns when every lane has had its last answer.
async fn run(
    plan: Arc<PublishPlan>,
    book: Arc<Mutex<PublishBook>>,
    start: Instant,
    length: Duration,
) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(plan.request_timeout));
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector);
    let lanes: Vec<_> = (0..plan.lanes.len())
        .map(|l| {
            tokio::spawn(run_lane(
                plan.clone(),
                l as u32,
                client.clone(),
                book.clone(),
                start,
                length,
            ))
        })
        .collect();
    for lane in lanes {
        let _ = lane.await;
    }
    lock(&book).finished = Some(start.elapsed());
}

/// One lane's schedule; see the module docs.
async fn run_lane(
    plan: Arc<PublishPlan>,
    lane_index: u32,
    client: Client<HttpConnector, Full<Bytes>>,
    book: Arc<Mutex<PublishBook>>,
    start: Instant,
    length: Duration,
) {
    let lane = &plan.lanes[lane_index as usize];
    if lane.rate <= 0.0 || lane.topics.is_empty() {
        return;
    }
    let auth = format!("Bearer {}", plan.tokens[lane.token]);
    let mut url = lane_index as usize % plan.pub_urls.len();
    // Sequence numbers count per topic: a lane's topic cycle may visit a topic more than once.
    let mut seqs: HashMap<u32, u64> = HashMap::new();
    for k in 0u64.. {
        let offset = lane.phase.as_secs_f64() + k as f64 / lane.rate;
        // The epsilon keeps rounding (phase + k / rate) from adding an update at the very end.
        if offset >= length.as_secs_f64() - 1e-9 {
            break;
        }
        let due = start + Duration::from_secs_f64(offset);
        sleep_until(due).await;
        let lag = Instant::now().saturating_duration_since(due);
        let topic = lane.topics[(k % lane.topics.len() as u64) as usize];
        let next = seqs.entry(topic).or_insert(0);
        let seq = *next;
        *next += 1;
        let header = UpdateHeader {
            seq,
            t_us: unix_micros(),
            lane: lane_index,
            topic,
        };
        let request = match plan.hub {
            HubKind::Mercure => mercure_request(&plan, url, &auth, topic, &header),
            HubKind::Nchan => nchan::publish_request(
                &plan.pub_urls[url],
                &plan.topics[topic as usize],
                header.encode(plan.payload_bytes),
            ),
        };
        let sent = Instant::now();
        let second = sent.saturating_duration_since(start).as_secs() as usize;
        let outcome = match request {
            Ok(request) => match timeout(plan.request_timeout, publish(&client, request)).await {
                Ok(Ok(())) => Ok(sent.elapsed()),
                Ok(Err(PublishError::Connection(e))) => {
                    url = (url + 1) % plan.pub_urls.len();
                    Err(e)
                }
                Ok(Err(PublishError::Refused(e))) => Err(e),
                Err(_) => Err(format!("no answer within {:?}", plan.request_timeout)),
            },
            Err(e) => Err(format!("request: {e}")),
        };
        let mut book = lock(&book);
        book.attempted += 1;
        if book.per_second.len() <= second {
            book.per_second.resize(second + 1, 0);
        }
        book.per_second[second] += 1;
        if lag > LATE {
            book.late += 1;
        }
        book.max_lag = book.max_lag.max(lag);
        book.settle(lane_index, topic, seq, outcome);
    }
}

/// A Mercure publish: the form with topic, data (and `private`), bearer token.
fn mercure_request(
    plan: &PublishPlan,
    url: usize,
    auth: &str,
    topic: u32,
    header: &UpdateHeader,
) -> Result<Request<Full<Bytes>>, http::Error> {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("topic", &plan.topics[topic as usize]);
    form.append_pair("data", &header.encode(plan.payload_bytes));
    if plan.private {
        form.append_pair("private", "on");
    }
    Request::post(plan.pub_urls[url].as_str())
        .header(AUTHORIZATION, auth)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(form.finish())))
}

enum PublishError {
    /// The hub could not be reached (try another node).
    Connection(String),
    /// The hub answered with an error.
    Refused(String),
}

async fn publish(
    client: &Client<HttpConnector, Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Result<(), PublishError> {
    let response = client
        .request(request)
        .await
        .map_err(|e| PublishError::Connection(format!("publish: {e}")))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| PublishError::Connection(format!("publish answer: {e}")))?
        .to_bytes();
    // Mercure answers 200; nchan 201 or 202 (message queued, with or without subscribers).
    if status.is_success() {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)])
            .trim()
            .to_owned();
        Err(PublishError::Refused(format!("HTTP {status}: {text}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn book_builds_manifest_with_failures() {
        let mut book = PublishBook::default();
        book.settle(0, 1, 0, Ok(Duration::from_millis(1)));
        book.settle(0, 1, 1, Err("HTTP 500".into()));
        book.settle(0, 1, 2, Ok(Duration::from_millis(1)));
        book.settle(1, 1, 0, Err("HTTP 500".into()));
        let m = book.manifest();
        assert_eq!(m.entries.len(), 2);
        assert_eq!(m.entries[0].published, 3);
        assert_eq!(m.entries[0].failed, vec![1]);
        assert_eq!((book.acked, book.failed, book.errors.len()), (2, 2, 1));
    }
}
