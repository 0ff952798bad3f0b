//! One subscriber: an SSE connection over a minimal HTTP/1.1 client ([`crate::http1`]), its receipt
//! accounting, and its reconnections.
//!
//! Each subscriber is one Tokio task that reads its socket and its directives in the same
//! `select!`, so it costs one task, one socket and one read buffer, nothing more. Updates enter as
//! body data decoded in place, go through the [`SseParser`] and the [`UpdateHeader`] scanner into one
//! [`SequenceTracker`] per (lane, topic) and into the worker's shared [`DeliveryRecorder`]. When a
//! connection ends without being asked to, the subscriber reconnects with `Last-Event-ID` after a
//! short jittered back-off, like an `EventSource` would; a resume order makes it drop the
//! connection and reconnect at once. The task ends on the `stop` directive (or when its first
//! connection fails) and returns a [`SubscriberReport`].

use std::collections::HashMap;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::header::{ACCEPT, AUTHORIZATION, CACHE_CONTROL, COOKIE, HOST};
use http::{Request, StatusCode};
use tokio::sync::watch;
use tokio::time::{sleep, Instant};

use crate::cli::{AuthMode, HubKind};
use crate::clock::unix_micros;
use crate::directive::{Directive, ResumeOrder};
use crate::header::UpdateHeader;
use crate::http1::{Decoded, Http1Stream};
use crate::manifest::{sequence_key, IndexedManifest, SequenceEntry};
use crate::nchan;
use crate::net::{self, Endpoint};
use crate::plan::{Plan, ScenarioKind, SubscriberPlan, TopicSet};
use crate::sse::SseParser;
use crate::tracker::SequenceTracker;
use crate::worker::WorkerShared;

/// Upper bound on connections one subscriber opens in a run (a safety net for a hub that
/// accepts and immediately closes).
const MAX_SESSIONS: u32 = 10_000;

/// What one subscriber saw, handed back when its task ends.
#[derive(Debug)]
pub(crate) struct SubscriberReport {
    pub(crate) spec: SubscriberPlan,
    /// Why the first connection failed (the subscriber then took no part in the run).
    pub(crate) connect_error: Option<String>,
    pub(crate) trackers: HashMap<u64, SequenceTracker>,
    /// Events whose data was not one of our headers.
    pub(crate) foreign: u64,
    /// Connections opened after the first.
    pub(crate) reconnects: u32,
    /// Connections that ended without being asked to.
    pub(crate) disconnects: u32,
    /// Reconnections that failed before their preamble.
    pub(crate) reconnect_failures: u32,
    /// Time from the resume order until this subscriber had every update settled at that moment
    /// and a first update published after it (so it is live again, not just fed from before).
    pub(crate) catchup_us: Option<u64>,
    /// Whether a resume order reached it.
    pub(crate) resumed: bool,
}

/// How one connection ended.
enum SessionEnd {
    /// Before the preamble arrived.
    Failed(String),
    /// The stream ended or broke after the preamble.
    Closed,
    /// A resume order asked to drop it.
    Dropped,
    /// The worker asked to stop.
    Stopped,
}

/// The state of one subscriber task.
pub(crate) struct Subscriber {
    spec: SubscriberPlan,
    plan: Arc<Plan>,
    sub_endpoints: Arc<Vec<Endpoint>>,
    resume_endpoints: Arc<Vec<Endpoint>>,
    shared: Arc<WorkerShared>,
    directive: watch::Receiver<Directive>,
    parser: SseParser,
    trackers: HashMap<u64, SequenceTracker>,
    batch: Vec<UpdateHeader>,
    foreign: u64,
    reconnects: u32,
    disconnects: u32,
    reconnect_failures: u32,
    finish: Option<Arc<IndexedManifest>>,
    finished: bool,
    resume: Option<Arc<ResumeOrder>>,
    /// A resume order is waiting for a new connection before catching up can count.
    needs_session: bool,
    /// An update published after the resume order arrived (the subscription is live again).
    live_since_order: bool,
    catchup_us: Option<u64>,
}

impl Subscriber {
    pub(crate) fn new(
        spec: SubscriberPlan,
        plan: Arc<Plan>,
        sub_endpoints: Arc<Vec<Endpoint>>,
        resume_endpoints: Arc<Vec<Endpoint>>,
        shared: Arc<WorkerShared>,
        directive: watch::Receiver<Directive>,
    ) -> Self {
        Self {
            spec,
            plan,
            sub_endpoints,
            resume_endpoints,
            shared,
            directive,
            parser: SseParser::default(),
            trackers: HashMap::new(),
            batch: Vec::new(),
            foreign: 0,
            reconnects: 0,
            disconnects: 0,
            reconnect_failures: 0,
            finish: None,
            finished: false,
            resume: None,
            needs_session: false,
            live_since_order: false,
            catchup_us: None,
        }
    }

    /// Runs the subscriber until the worker stops it; see the module docs.
    pub(crate) async fn run(mut self) -> SubscriberReport {
        let first = self.sub_endpoints[self.spec.index % self.sub_endpoints.len()].clone();
        let mut end = self.session(&first, true).await;
        if let SessionEnd::Failed(error) = end {
            self.shared.note_connect_failure(&error);
            return self.report(Some(error));
        }
        let mut failures: u32 = 0;
        while self.reconnects < MAX_SESSIONS {
            match end {
                SessionEnd::Stopped => break,
                SessionEnd::Dropped => failures = 0,
                SessionEnd::Closed | SessionEnd::Failed(_) => {
                    if matches!(end, SessionEnd::Closed) {
                        self.disconnects += 1;
                        failures = 0;
                    } else {
                        failures += 1;
                    }
                    if let SessionEnd::Failed(error) = &end {
                        self.reconnect_failures += 1;
                        self.shared.note_reconnect_failure(error);
                    }
                    // Jittered exponential back-off, 50 ms to 2 s, cut short by a stop.
                    let base = 50u64 << failures.min(5);
                    let wait = Duration::from_millis(base.min(2000) + fastrand::u64(0..=base / 2));
                    if self.wait_or_stop(wait).await {
                        break;
                    }
                }
            }
            self.reconnects += 1;
            self.shared.reconnects.fetch_add(1, Ordering::Relaxed);
            let endpoint = self.reconnect_endpoint(failures);
            end = self.session(&endpoint, false).await;
        }
        self.report(None)
    }

    /// Where to reconnect: the resume URLs in resume storms (rotating on failures), otherwise
    /// the subscriber's own URL.
    fn reconnect_endpoint(&self, failures: u32) -> Endpoint {
        let i = self.spec.index;
        if self.plan.scenario == ScenarioKind::ResumeStorm || self.resume.is_some() {
            let eps = &self.resume_endpoints;
            eps[(i + failures as usize) % eps.len()].clone()
        } else {
            self.sub_endpoints[i % self.sub_endpoints.len()].clone()
        }
    }

    /// Sleeps for `wait` unless stopped first; true when stopped.
    async fn wait_or_stop(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return false,
                changed = self.directive.changed() => {
                    if changed.is_err() || self.apply_directive().is_some() {
                        return true;
                    }
                }
            }
        }
    }

    /// One connection, from TCP connect to its end.
    async fn session(&mut self, endpoint: &Endpoint, first: bool) -> SessionEnd {
        if let Some(end) = self.apply_directive() {
            return end;
        }
        let begun = Instant::now();
        let timeout = self.plan.connect_timeout;
        let source = (!self.plan.source_ips.is_empty())
            .then(|| self.plan.source_ips[self.spec.index % self.plan.source_ips.len()]);
        let tcp = match net::connect(endpoint.addr, source, None, timeout).await {
            Ok(tcp) => tcp,
            Err(e) => return SessionEnd::Failed(e.to_string()),
        };
        let request = match self.request(endpoint) {
            Ok(r) => r,
            Err(e) => return SessionEnd::Failed(format!("request: {e}")),
        };
        let preamble_deadline = sleep(timeout.saturating_sub(begun.elapsed()));
        let mut preamble_deadline = pin!(preamble_deadline);
        let opened = tokio::select! {
            r = Http1Stream::open(tcp, &request) => r,
            _ = &mut preamble_deadline => return SessionEnd::Failed("no response in time".to_owned()),
        };
        let mut stream = match opened {
            Ok(s) => s,
            Err(e) => return SessionEnd::Failed(format!("request: {e}")),
        };
        if stream.status != StatusCode::OK {
            return SessionEnd::Failed(format!("HTTP {}", stream.status));
        }
        self.parser.reset_stream();
        let mut open = false;
        // One wait for the next directive for the whole session, not one per read (creating and
        // dropping a watch's `changed()` future was a measurable part of the harness's own CPU).
        let mut change = Box::pin(next_change(self.directive.clone()));
        let end = loop {
            // Bytes that came with the head are decoded before the first read.
            let decoded = stream.decode(|data| {
                if !open {
                    open = true;
                    self.on_open(first, begun);
                }
                self.on_chunk(data);
            });
            match decoded {
                Ok(Decoded::Open) => {}
                Ok(Decoded::Ended) if open => break SessionEnd::Closed,
                Ok(Decoded::Ended) => {
                    break SessionEnd::Failed("stream ended before the preamble".to_owned())
                }
                Err(_) if open => break SessionEnd::Closed,
                Err(e) => break SessionEnd::Failed(format!("body: {e}")),
            }
            tokio::select! {
                biased;
                (directive, changed) = &mut change => {
                    if !changed {
                        break SessionEnd::Stopped;
                    }
                    if let Some(end) = self.apply_directive() {
                        break end;
                    }
                    change = Box::pin(next_change(directive));
                }
                read = stream.fill() => {
                    if let Err(e) = read {
                        break if open {
                            SessionEnd::Closed
                        } else {
                            SessionEnd::Failed(format!("body: {e}"))
                        };
                    }
                }
                _ = &mut preamble_deadline, if !open => {
                    break SessionEnd::Failed("no preamble in time".to_owned());
                }
            }
        };
        if open {
            self.shared.open.fetch_sub(1, Ordering::Relaxed);
        }
        end
    }

    /// The subscription request for `endpoint`.
    fn request(&self, endpoint: &Endpoint) -> Result<Request<()>, http::Error> {
        subscribe_request(
            &self.plan,
            &self.spec,
            endpoint,
            self.parser.last_event_id(),
        )
    }

    /// The preamble arrived: the subscription is live.
    fn on_open(&mut self, first: bool, begun: Instant) {
        self.shared.open.fetch_add(1, Ordering::Relaxed);
        if first {
            let micros = begun.elapsed().as_micros() as u64;
            lock(&self.shared.connect_latency).record(micros);
            self.shared.connected.fetch_add(1, Ordering::Relaxed);
        }
        self.needs_session = false;
        self.check_targets();
    }

    /// Parses and accounts one body chunk.
    fn on_chunk(&mut self, data: &[u8]) {
        let mut batch = std::mem::take(&mut self.batch);
        let mut foreign = 0;
        self.parser
            .feed(data, |event| match UpdateHeader::parse(event.data) {
                Some(h) => batch.push(h),
                None => foreign += 1,
            });
        self.foreign += foreign;
        if !batch.is_empty() {
            let now = unix_micros();
            for h in &batch {
                self.trackers
                    .entry(sequence_key(h.lane, h.topic))
                    .or_default()
                    .record(h.seq);
            }
            if let Some(order) = &self.resume {
                self.live_since_order |= batch.iter().any(|h| h.t_us >= order.at_us);
            }
            {
                let mut recorder = lock(&self.shared.recorder);
                for h in &batch {
                    recorder.record(h.t_us, now);
                }
            }
            self.shared
                .delivered
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            batch.clear();
            self.check_targets();
        }
        self.batch = batch;
    }

    /// Takes in the latest directive; `Some` when the current connection must end.
    fn apply_directive(&mut self) -> Option<SessionEnd> {
        let directive = self.directive.borrow_and_update().clone();
        if directive.stop {
            return Some(SessionEnd::Stopped);
        }
        if self.finish.is_none() {
            if let Some(finish) = directive.finish {
                self.finish = Some(finish);
                self.check_targets();
            }
        }
        if let Some(order) = directive.resume {
            let new = self
                .resume
                .as_ref()
                .is_none_or(|r| r.generation != order.generation);
            if new {
                self.needs_session = order.drop_connections;
                self.live_since_order = false;
                self.catchup_us = None;
                let drop = order.drop_connections;
                self.resume = Some(order);
                if drop {
                    return Some(SessionEnd::Dropped);
                }
                self.check_targets();
            }
        }
        None
    }

    /// Reports completion (publishing over, everything received) and catch-up (resume order
    /// fulfilled) to the worker, once each.
    fn check_targets(&mut self) {
        if !self.finished {
            if let Some(finish) = &self.finish {
                if self.has_everything(finish) {
                    self.finished = true;
                    self.shared.incomplete.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        if self.catchup_us.is_none() && !self.needs_session && self.live_since_order {
            if let Some(order) = &self.resume {
                if self.has_everything(&order.targets) {
                    self.catchup_us = Some(unix_micros().saturating_sub(order.at_us));
                    self.shared.catching_up.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Whether every acknowledged update of `manifest` on this subscriber's topics arrived.
    fn has_everything(&self, manifest: &IndexedManifest) -> bool {
        let complete = |e: &SequenceEntry| match self.trackers.get(&sequence_key(e.lane, e.topic)) {
            Some(t) => t.is_complete(e.published, &e.failed),
            None => e.published == e.failed.len() as u64,
        };
        match self.spec.topics {
            TopicSet::One(topic) => manifest.topic(topic).all(complete),
            TopicSet::All => manifest.entries.iter().all(complete),
        }
    }

    fn report(self, connect_error: Option<String>) -> SubscriberReport {
        SubscriberReport {
            spec: self.spec,
            connect_error,
            trackers: self.trackers,
            foreign: self.foreign,
            reconnects: self.reconnects,
            disconnects: self.disconnects,
            reconnect_failures: self.reconnect_failures,
            catchup_us: self.catchup_us,
            resumed: self.resume.is_some(),
        }
    }
}

/// Locks a mutex, ignoring poisoning: the data are counters, still meaningful after a panic
/// elsewhere.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits for the next directive on a clone of the subscriber's receiver and hands the clone back;
/// `false` when the worker is gone.
async fn next_change(
    mut directive: watch::Receiver<Directive>,
) -> (watch::Receiver<Directive>, bool) {
    let changed = directive.changed().await.is_ok();
    (directive, changed)
}

/// The `GET` that subscribes `spec` at `endpoint` (shared with slow consumers).
pub(crate) fn subscribe_request(
    plan: &Plan,
    spec: &SubscriberPlan,
    endpoint: &Endpoint,
    last_event_id: Option<&str>,
) -> Result<Request<()>, http::Error> {
    let token = spec.token.map(|t| plan.tokens[t].as_str());
    let mut params: Vec<(&str, &str)> = spec
        .selectors
        .iter()
        .map(|s| ("topic", s.as_str()))
        .collect();
    if let (AuthMode::Query, Some(token)) = (plan.auth, token) {
        params.push(("authorization", token));
    }
    let path = match plan.hub {
        HubKind::Mercure => endpoint.path_with_query(params),
        // One channel per subscriber: nchan scenarios select one exact topic each.
        HubKind::Nchan => nchan::subscribe_path(
            &endpoint.path,
            spec.selectors.first().map_or("", |s| s.as_str()),
        ),
    };
    let mut builder = Request::get(path)
        .header(HOST, &endpoint.host)
        .header(ACCEPT, "text/event-stream")
        .header(CACHE_CONTROL, "no-cache");
    match (plan.auth, token) {
        (AuthMode::Header, Some(token)) => {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        (AuthMode::Cookie, Some(token)) => {
            builder = builder.header(COOKIE, format!("mercureAuthorization={token}"));
        }
        _ => {}
    }
    if let Some(id) = last_event_id {
        builder = builder.header("last-event-id", id);
    }
    builder.body(())
}
