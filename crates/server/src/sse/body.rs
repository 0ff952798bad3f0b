//! The SSE response body of one subscriber: replay, then live updates, heartbeats, and an end.
//!
//! [`SubscriberStream`] is polled by its writer ([`super::writer`], or hyper) whenever the
//! connection can take more bytes. It first yields the preamble comment (so headers and the
//! stream's start reach the client at once), then the replayed history, then live updates from the
//! subscriber's queue; a live update the history already covered is skipped ([`Resume`] decides).
//! Updates already waiting are batched into one write. When the stream is idle a heartbeat comment
//! is sent; when the connection reaches its maximum life, or the fan-out cut the subscriber off,
//! the body ends and the client reconnects with its last event id.
//!
//! The stream holds no timer: times are millisecond stamps on the fan-out's clock, and when it
//! waits it sets an alarm for its next heartbeat or its end, which its shard's tick rings (see
//! `quicksilver_fanout`'s "Timers without timers"). An idle subscriber thus costs no timer entry.
//!
//! As a response ([`IntoResponse`]) it carries the SSE headers, and its subscriber's [`CutOff`] in
//! the response's extensions, where the writer of the stream finds it (and, through it, the
//! fan-out's direct way to the socket). Once
//! its history is sent it tells the fan-out so ([`Subscriber::set_live_only`]): from then on, while
//! the writer has nothing to write, the shard writes live updates to the socket itself, and this
//! body sees only the updates that did not go out that way.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue, StatusCode};
use http_body::{Body, Frame, SizeHint};
use quicksilver_fanout::clock::{millis, now_ms};
use quicksilver_fanout::{CutOff, Resume, Subscriber};
use quicksilver_protocol::{sse, Envelope};

use crate::metrics::LatencyHistogram;

/// At most this many bytes are gathered into one write.
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// Why a stream ended, for the connection-closed log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// Still open (the client went away if the body is dropped in this state).
    ClientGone,
    /// The subscriber fell too far behind and was cut off.
    TooSlow,
    /// The maximum connection life was reached.
    WriteTimeout,
    /// The hub closed the subscription (shutdown or drain).
    Closed,
    /// Updates the subscriber may have matched were lost before this node read them: it must
    /// reconnect with its last event id to be told (see `Fanout::interrupt_all`).
    Interrupted,
    /// The token that authenticated the stream was revoked (see `Fanout::revoke`): the client
    /// reconnecting with it is refused.
    Revoked,
}

/// The body of a subscription response.
///
/// Every idle subscriber holds one, so it is kept small: times are `u32` milliseconds where they
/// can be, and the stream's end (its maximum life or its token's expiry) lives in the
/// subscriber's shared state, where the blocked-writer check reads it too.
pub struct SubscriberStream {
    /// The preamble was sent.
    started: bool,
    ended: Option<EndReason>,
    /// Heartbeat interval in milliseconds (0: none).
    heartbeat_ms: u32,
    /// Sent as `retry:` (milliseconds) just before the stream ends because the hub closed or
    /// interrupted it; encoded only then, so an idle stream holds no frame for it. `u32::MAX`:
    /// none.
    closing_retry: u32,
    /// When something was last written ([`now_ms`]).
    last_write_ms: u64,
    /// History to send first, and what it covered; `None` when the subscriber asked for none or
    /// once it is done (boxed: an idle stream without history should not carry room for it).
    resume: Option<Box<Resume>>,
    subscriber: Subscriber,
    /// Accept-to-write latency of live updates, when measured.
    latency: Option<LatencyHistogram>,
    on_end: Option<Box<dyn FnOnce(EndReason) + Send>>,
}

impl SubscriberStream {
    /// A stream for `subscriber` that first sends what `resume` holds. `on_end` is called once when
    /// the stream ends or is dropped.
    pub fn new(
        subscriber: Subscriber,
        resume: Option<Resume>,
        heartbeat: Option<Duration>,
        max_life: Option<Duration>,
        on_end: impl FnOnce(EndReason) + Send + 'static,
    ) -> Self {
        let now = now_ms();
        let deadline_ms = max_life.map(|d| now.saturating_add(millis(d)));
        // Kept in the subscriber's shared state, so a writer blocked on a full socket ends then too.
        subscriber.set_deadline(deadline_ms.unwrap_or(0));
        let resume = resume.filter(|r| !r.is_done()).map(Box::new);
        if let Some(resume) = &resume {
            subscriber.skip_covered(resume.covered());
        }
        if resume.is_none() {
            subscriber.set_live_only();
        }
        Self {
            started: false,
            ended: None,
            heartbeat_ms: heartbeat.map_or(0, |d| u32::try_from(millis(d)).unwrap_or(u32::MAX)),
            closing_retry: u32::MAX,
            last_write_ms: now,
            resume,
            subscriber,
            latency: None,
            on_end: Some(Box::new(on_end)),
        }
    }

    /// Tells the client, when the hub closes the stream, to reconnect after `retry`.
    pub fn with_closing_retry(mut self, retry: Duration) -> Self {
        self.closing_retry = u32::try_from(retry.as_millis()).unwrap_or(u32::MAX - 1);
        self
    }

    /// Records, for every live update written, the time since its publishing node accepted it.
    pub fn with_latency(mut self, histogram: LatencyHistogram) -> Self {
        self.latency = Some(histogram);
        self
    }

    fn observe(&self, envelope: &Envelope, now_micros: u64) {
        if let Some(h) = &self.latency {
            observe_latency(h, envelope, now_micros);
        }
    }

    /// Whether a live update was already sent as history (and forgets the history once nothing
    /// of it is left to send or skip).
    fn already_replayed(&mut self, envelope: &Envelope) -> bool {
        let Some(resume) = &mut self.resume else {
            return false;
        };
        let covered = resume.covers(envelope);
        if resume.is_done() {
            self.resume = None;
            self.subscriber.set_live_only();
        }
        covered
    }

    /// The subscriber's cut-off, for the writer of this stream.
    pub fn cut_off(&self) -> CutOff {
        self.subscriber.cut_off()
    }

    fn end(
        &mut self,
        reason: EndReason,
    ) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        self.ended = Some(reason);
        if let Some(on_end) = self.on_end.take() {
            on_end(reason);
        }
        Poll::Ready(None)
    }

    /// When the idle stream must next wake up by itself: its next heartbeat or its end.
    fn next_alarm(&self) -> u64 {
        let heartbeat = (self.heartbeat_ms != 0).then(|| {
            self.last_write_ms
                .saturating_add(u64::from(self.heartbeat_ms))
        });
        match (heartbeat, self.subscriber.deadline()) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or(0),
        }
    }

    /// Gathers `first` and whatever else is queued (up to the batch limit) into one chunk.
    fn batch_live(&mut self, first: std::sync::Arc<Envelope>) -> Option<Bytes> {
        let mut chunk: Option<BytesMut> = None;
        let mut single: Option<Bytes> = None;
        let mut next = Some(first);
        let now = if self.latency.is_some() {
            quicksilver_transport::now_micros()
        } else {
            0
        };
        while let Some(envelope) = next.take() {
            if !self.already_replayed(&envelope) {
                self.observe(&envelope, now);
                match (&mut chunk, &single) {
                    (Some(buf), _) => buf.extend_from_slice(&envelope.frame),
                    (None, None) => single = Some(envelope.frame.clone()),
                    (None, Some(first)) => {
                        let mut buf =
                            BytesMut::with_capacity(first.len() + envelope.frame.len() * 4);
                        buf.extend_from_slice(first);
                        buf.extend_from_slice(&envelope.frame);
                        chunk = Some(buf);
                    }
                }
            }
            let size = chunk.as_ref().map_or(0, |b| b.len());
            if size < MAX_BATCH_BYTES {
                next = self.subscriber.try_recv();
            }
        }
        chunk.map(BytesMut::freeze).or(single)
    }
}

/// Records in `histogram` how long `envelope` took from its acceptance by the publishing node to
/// `now_micros`, when its acceptance time is known. Both ways out (this body, and the fan-out's
/// direct writes) measure the same way.
pub(super) fn observe_latency(histogram: &LatencyHistogram, envelope: &Envelope, now_micros: u64) {
    if envelope.accepted_at_micros > 0 {
        histogram.observe_micros(now_micros.saturating_sub(envelope.accepted_at_micros));
    }
}

impl Drop for SubscriberStream {
    fn drop(&mut self) {
        if let Some(on_end) = self.on_end.take() {
            // A stream dropped before it ended was given up by its writer (or the client left).
            let reason = self.ended.unwrap_or(if self.subscriber.was_cut_off() {
                EndReason::TooSlow
            } else if self.subscriber.was_revoked() {
                EndReason::Revoked
            } else if self.subscriber.deadline().is_some_and(|at| now_ms() >= at) {
                EndReason::WriteTimeout
            } else {
                EndReason::ClientGone
            });
            on_end(reason);
        }
    }
}

impl Body for SubscriberStream {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if this.ended.is_some() {
            return Poll::Ready(None);
        }
        if !this.started {
            this.started = true;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                sse::STREAM_PREAMBLE,
            )))));
        }
        if let Some(batch) = this
            .resume
            .as_mut()
            .and_then(|r| r.next_batch(MAX_BATCH_BYTES))
        {
            this.last_write_ms = now_ms();
            return Poll::Ready(Some(Ok(Frame::data(batch))));
        }
        let now = now_ms();
        if this
            .subscriber
            .deadline()
            .is_some_and(|deadline| now >= deadline)
        {
            return this.end(EndReason::WriteTimeout);
        }
        loop {
            match this.subscriber.poll_recv(cx) {
                Poll::Ready(Some(envelope)) => {
                    if let Some(chunk) = this.batch_live(envelope) {
                        this.last_write_ms = now;
                        return Poll::Ready(Some(Ok(Frame::data(chunk))));
                    }
                    // Everything taken was already replayed: look again.
                }
                Poll::Ready(None) => {
                    if this.subscriber.was_cut_off() {
                        return this.end(EndReason::TooSlow);
                    }
                    // No reconnection hint: the token is refused from now on.
                    if this.subscriber.was_revoked() {
                        return this.end(EndReason::Revoked);
                    }
                    let retry = std::mem::replace(&mut this.closing_retry, u32::MAX);
                    if retry != u32::MAX {
                        // Polled again after this frame: the queue is still closed, so it ends then.
                        return Poll::Ready(Some(Ok(Frame::data(sse::encode_retry(u64::from(
                            retry,
                        ))))));
                    }
                    if this.subscriber.was_interrupted() {
                        return this.end(EndReason::Interrupted);
                    }
                    return this.end(EndReason::Closed);
                }
                Poll::Pending => break,
            }
        }
        if this.heartbeat_ms != 0
            && now
                >= this
                    .last_write_ms
                    .saturating_add(u64::from(this.heartbeat_ms))
        {
            this.last_write_ms = now;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(sse::HEARTBEAT)))));
        }
        // The waker is registered with the queue (by `poll_recv` above), which the alarm wakes.
        this.subscriber.set_alarm(this.next_alarm());
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl IntoResponse for SubscriberStream {
    /// A `200 text/event-stream` response that no cache or proxy holds back, with the subscriber's
    /// [`CutOff`] in its extensions for the stream's writer.
    fn into_response(self) -> Response {
        let cut_off = self.cut_off();
        let mut response = (StatusCode::OK, axum::body::Body::new(self)).into_response();
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-cache, no-store, must-revalidate, max-age=0"),
        );
        h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        h.insert(header::EXPIRES, HeaderValue::from_static("0"));
        // nginx and other proxies would otherwise buffer the stream.
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
        response.extensions_mut().insert(cut_off);
        response
    }
}

#[cfg(test)]
mod tests;
