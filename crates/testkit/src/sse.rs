//! A real SSE client for tests: a `GET` over `reqwest` whose body is read as a stream and parsed
//! incrementally by [`EventStreamParser`] (the `quicksilver-event-stream` crate: the HTML specification's
//! reading of an event stream, comments surfaced), so a test sees each event when the hub flushes it, not
//! when the response ends.
//!
//! [`SseClient::connect`] returns the response whatever its status (tests assert on 401s and 403s too),
//! [`SseClient::subscribe`] insists on a 200; [`SseStream`] then yields [`SseItem`]s. Every read takes a timeout: an absent event is reported as
//! [`SseError::Timeout`], never as a hung test. A timed-out read loses nothing: the stream stays usable and
//! the next read continues where the last one stopped.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use reqwest::header::HeaderMap;
use tokio::time::Instant;

pub use quicksilver_event_stream::{EventStreamParser, SseEvent, SseItem};

/// How long [`SseClient::connect`] waits for the response head.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a read from an [`SseStream`] returned no item.
#[derive(Debug, thiserror::Error)]
pub enum SseError {
    /// Nothing (or nothing of the kind asked for) arrived within the timeout; the stream is still open.
    #[error("no SSE item within {0:?}")]
    Timeout(Duration),
    /// The server ended the response; items still buffered have all been returned.
    #[error("the SSE stream was closed by the server")]
    Closed,
    /// The request failed, or the connection broke mid-body.
    #[error("SSE request failed: {0}")]
    Http(#[from] reqwest::Error),
}

/// Opens SSE streams; a thin handle to a `reqwest::Client` (cheap to clone, shares its connection pool).
#[derive(Debug, Clone)]
pub struct SseClient {
    http: reqwest::Client,
}

impl Default for SseClient {
    fn default() -> Self {
        Self::new()
    }
}

impl SseClient {
    /// A client with [`crate::http_client`]'s settings.
    pub fn new() -> Self {
        Self::with_http_client(crate::http_client())
    }

    /// A client over an existing `reqwest::Client` (for custom TLS, proxies, cookie stores, ...).
    pub fn with_http_client(http: reqwest::Client) -> Self {
        Self { http }
    }

    /// `GET url` with `headers` using a fresh client; see [`SseClient::open`].
    pub async fn connect(url: &str, headers: &[(&str, &str)]) -> Result<SseStream, SseError> {
        Self::new().open(url, headers).await
    }

    /// `GET url` with `headers` using a fresh client, for a test that expects a stream: panics, naming
    /// the URL, unless the hub answers 200 within [`CONNECT_TIMEOUT`].
    pub async fn subscribe(url: &str, headers: &[(&str, &str)]) -> SseStream {
        match Self::connect(url, headers).await {
            Ok(stream) if stream.status() == 200 => stream,
            Ok(stream) => {
                let status = stream.status();
                let body = stream.text(CONNECT_TIMEOUT).await.unwrap_or_default();
                panic!("subscribing to {url}: status {status}: {body}")
            }
            Err(e) => panic!("subscribing to {url}: {e}"),
        }
    }

    /// `GET url` with `headers` (e.g. `("Authorization", "Bearer ...")`, `("Last-Event-ID", id)`), waiting at
    /// most [`CONNECT_TIMEOUT`] for the response head. Any status is returned as a stream: check
    /// [`SseStream::status`] first.
    pub async fn open(&self, url: &str, headers: &[(&str, &str)]) -> Result<SseStream, SseError> {
        self.send(self.http.get(url), headers).await
    }

    /// `method url` with `headers` and `body`, as [`SseClient::open`]: for a subscription that sends
    /// its parameters in the body (`QUERY`).
    pub async fn open_with(
        &self,
        method: reqwest::Method,
        url: &str,
        headers: &[(&str, &str)],
        body: String,
    ) -> Result<SseStream, SseError> {
        self.send(self.http.request(method, url).body(body), headers)
            .await
    }

    async fn send(
        &self,
        mut request: reqwest::RequestBuilder,
        headers: &[(&str, &str)],
    ) -> Result<SseStream, SseError> {
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = match tokio::time::timeout(CONNECT_TIMEOUT, request.send()).await {
            Ok(response) => response?,
            Err(_) => return Err(SseError::Timeout(CONNECT_TIMEOUT)),
        };
        Ok(SseStream {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.bytes_stream().boxed(),
            parser: EventStreamParser::new(),
            ready: VecDeque::new(),
            ended: false,
        })
    }
}

/// An open SSE response: its status and headers, and the items parsed from its body so far.
pub struct SseStream {
    status: u16,
    headers: HeaderMap,
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    parser: EventStreamParser,
    /// Items parsed but not yet returned (one chunk can complete several).
    ready: VecDeque<SseItem>,
    /// The body ended or failed; nothing more will be parsed.
    ended: bool,
}

impl std::fmt::Debug for SseStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseStream")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("ready", &self.ready)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl SseStream {
    /// The response status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The response headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// One response header as text, if present and UTF-8 (a header may carry UTF-8 bytes, e.g. a
    /// `Last-Event-ID` echoing a non-ASCII id).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
    }

    /// The stream's last event ID (the latest `id` field), as an `EventSource` would resend it.
    pub fn last_event_id(&self) -> &str {
        self.parser.last_event_id()
    }

    /// The reconnection time from the latest `retry` field, in milliseconds.
    pub fn retry(&self) -> Option<u64> {
        self.parser.reconnection_time()
    }

    /// The next event or comment, waiting at most `timeout`.
    pub async fn next_item(&mut self, timeout: Duration) -> Result<SseItem, SseError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Ok(item);
            }
            if self.ended {
                return Err(SseError::Closed);
            }
            // `StreamExt::next` is cancel-safe: a chunk is either returned or left in the body.
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return Err(SseError::Timeout(timeout)),
                Ok(Some(Ok(chunk))) => self.parser.feed(&chunk, &mut self.ready),
                Ok(None) => self.ended = true,
                Ok(Some(Err(e))) => {
                    self.ended = true;
                    return Err(SseError::Http(e));
                }
            }
        }
    }

    /// The next event, skipping comments, waiting at most `timeout` in all.
    pub async fn next_event(&mut self, timeout: Duration) -> Result<SseEvent, SseError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_item(left).await {
                Ok(SseItem::Event(event)) => return Ok(event),
                Ok(SseItem::Comment(_)) => continue,
                Err(SseError::Timeout(_)) => return Err(SseError::Timeout(timeout)),
                Err(e) => return Err(e),
            }
        }
    }

    /// The next comment, skipping events (which are dropped), waiting at most `timeout` in all.
    pub async fn next_comment(&mut self, timeout: Duration) -> Result<String, SseError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_item(left).await {
                Ok(SseItem::Comment(comment)) => return Ok(comment),
                Ok(SseItem::Event(_)) => continue,
                Err(SseError::Timeout(_)) => return Err(SseError::Timeout(timeout)),
                Err(e) => return Err(e),
            }
        }
    }

    /// Exactly `n` events (comments skipped), all within `timeout`.
    pub async fn events(&mut self, n: usize, timeout: Duration) -> Result<Vec<SseEvent>, SseError> {
        let deadline = Instant::now() + timeout;
        let mut events = Vec::with_capacity(n);
        while events.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left).await {
                Ok(event) => events.push(event),
                Err(SseError::Timeout(_)) => return Err(SseError::Timeout(timeout)),
                Err(e) => return Err(e),
            }
        }
        Ok(events)
    }

    /// The `id` fields of exactly `n` events (`""` for an event without one), all within `timeout`.
    pub async fn ids(&mut self, n: usize, timeout: Duration) -> Result<Vec<String>, SseError> {
        let events = self.events(n, timeout).await?;
        Ok(events
            .into_iter()
            .map(|e| e.id.unwrap_or_default())
            .collect())
    }

    /// The data of exactly `n` events, all within `timeout`.
    pub async fn data(&mut self, n: usize, timeout: Duration) -> Result<Vec<String>, SseError> {
        let events = self.events(n, timeout).await?;
        Ok(events.into_iter().map(|e| e.data).collect())
    }

    /// Panics if an event arrives within `within`; comments are ignored. Returns normally on timeout or
    /// when the stream ends.
    pub async fn assert_no_event(&mut self, within: Duration) {
        if let Ok(event) = self.next_event(within).await {
            panic!("expected no SSE event within {within:?}, got {event:?}");
        }
    }

    /// Whether the server ends the response within `timeout`. Items arriving meanwhile stay buffered for
    /// later reads.
    pub async fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.ended {
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return false,
                Ok(Some(Ok(chunk))) => self.parser.feed(&chunk, &mut self.ready),
                Ok(None) | Ok(Some(Err(_))) => self.ended = true,
            }
        }
        true
    }

    /// The rest of the body as text (for error responses), waiting at most `timeout` for it to end. Bytes
    /// already parsed into items are not included.
    pub async fn text(mut self, timeout: Duration) -> Result<String, SseError> {
        let deadline = Instant::now() + timeout;
        let mut body = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return Err(SseError::Timeout(timeout)),
                Ok(Some(Ok(chunk))) => body.extend_from_slice(&chunk),
                Ok(Some(Err(e))) => return Err(SseError::Http(e)),
                Ok(None) => return Ok(String::from_utf8_lossy(&body).into_owned()),
            }
        }
    }
}
