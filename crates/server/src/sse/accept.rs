//! The accept loop: one task per TCP connection, each closable on its own.
//!
//! A connection's request head is read here with a small buffer and classified by
//! [`super::head`]. A plain HTTP/1.1 subscription is answered by the router as usual, but its
//! response is written by [`StreamWriter`], chunk by chunk, without hyper's two 8 KiB
//! per-connection buffers, which would otherwise stay allocated for the whole life of an idle
//! stream. When that response ends and the connection is kept alive, the next request head is read
//! the same way, so a load balancer that reuses its upstream connections gets every subscription
//! lean, not only the first. The first request that is not a lean subscription hands the
//! connection to hyper for the rest of its life, replaying the bytes already read through
//! [`Rewind`].
//!
//! A subscriber whose client stopped reading must be dropped: a stalled client would otherwise
//! keep its socket, the bytes written to it and its queued updates for as long as it likes. Each
//! subscriber stream carries its own [`CutOff`] in its response. The lean writer watches it while a
//! write is blocked; on a connection served by hyper, the connection task watches the cut-off of
//! the HTTP/1 stream hyper is writing (one stream at a time there, so ending the connection ends
//! only that stream). HTTP/2 streams share their connection, so a cut-off never ends the
//! connection: the stream ends the next time hyper polls its body, and until then holds at most
//! what hyper buffers for one stream.
//!
//! A connection must send a complete request head within the header read timeout
//! (`--header-read-timeout`), or it is closed: otherwise a client trickling its headers a byte at a
//! time, or connecting and sending nothing (slowloris), holds a socket, a task and a read buffer for
//! as long as it likes, and a few thousand of them exhaust the file descriptors normal clients need.
//! Heads read here are read under that timeout, the first one and every later one of a kept-alive
//! connection (so an idle kept-alive connection is closed after it too). hyper enforces it on the
//! HTTP/1 request heads it reads (it needs a timer for that: [`TokioTimer`]); a connection handed
//! to hyper is also bounded until hyper calls the service, because before that it sits in the
//! HTTP/1-or-HTTP/2 detection, which has no timeout of its own, and an HTTP/2 client could send its
//! preface and then no request.
//!
//! The listener is bound with a large backlog so a reconnection storm (thousands of clients of a
//! dead node arriving at once) waits in the kernel's queue instead of being dropped and retried
//! after the SYN timeout.

use std::future::Future;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use bytes::{Buf, Bytes};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use quicksilver_fanout::CutOff;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::head::{self, Framing, Head};
use super::writer::StreamWriter;

/// Pending connections the kernel may queue for `accept` (capped by `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 65_535;

/// First size of the buffer a request head is read into; it doubles up to
/// [`head::MAX_HEAD_BYTES`]. Most subscription heads fit.
const HEAD_BUFFER: usize = 1024;

/// Binds `addr` with a large accept backlog.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The accept loop's metrics.
#[derive(Clone, Debug, Default)]
pub struct ConnectionMetrics {
    /// Open connections.
    pub open: Gauge,
    /// Requests answered on the lean path.
    pub lean_requests: Counter,
}

/// What every connection task shares.
struct ServeContext {
    app: Router,
    builder: auto::Builder<TokioExecutor>,
    /// How long a client may take to send a request head (`None`: no limit).
    header_read_timeout: Option<Duration>,
    /// Cancelled when the server stops: hyper connections finish their request and close, lean
    /// connections close once their response ends (the drain has ended the streams by then).
    shutdown: CancellationToken,
    lean_requests: Counter,
}

/// Serves `app` on `listener` until `stop` resolves, then lets open connections finish for at most
/// `grace`. A connection that does not send a complete request head within `header_read_timeout`
/// (`None`: no limit) is closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    stop: impl Future<Output = ()>,
    grace: Duration,
    metrics: ConnectionMetrics,
    header_read_timeout: Option<Duration>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let shared = Arc::new(ServeContext {
        app,
        builder,
        header_read_timeout,
        shutdown: CancellationToken::new(),
        lean_requests: metrics.lean_requests,
    });
    let tracker = TaskTracker::new();
    tokio::pin!(stop);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors or a transient error: do not spin on it.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // Updates are small and latency matters more than packet count: no Nagle delay.
        let _ = stream.set_nodelay(true);
        let open = metrics.open.clone();
        open.inc();
        let shared = shared.clone();
        tracker.spawn(async move {
            connection(stream, &shared).await;
            open.dec();
        });
    }
    drop(listener);
    shared.shutdown.cancel();
    tracker.close();
    tokio::select! {
        () = tracker.wait() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!("connections still open after the shutdown grace period");
        }
    }
}

/// Serves one connection: its subscriptions on the lean path, and from the first request that is
/// not one, everything through hyper.
///
/// The task's own state is what an idle stream costs, so everything that is only needed on the way
/// in (reading the head under its timeout, routing, encoding the response head) runs in boxed
/// futures freed before the stream starts, and the stream itself is written by [`StreamWriter`], a
/// hand-written future of a few words.
async fn connection(mut stream: TcpStream, shared: &ServeContext) {
    let mut read = Vec::new();
    loop {
        let Some(next) = Box::pin(next_head(&mut stream, read, shared.header_read_timeout)).await
        else {
            return;
        };
        let (request, rest) = match next {
            NextRequest::Lean { request, rest } => (request, rest),
            NextRequest::Hyper(read) => {
                // Boxed so that a lean stream's task does not carry room for hyper's state.
                Box::pin(serve_hyper(Rewind::new(stream, read), shared)).await;
                return;
            }
        };
        let keep_alive = match Box::pin(respond(&mut stream, shared, request)).await {
            Ok(Answer::Done { keep_alive }) => keep_alive,
            Ok(Answer::Stream {
                head,
                body,
                cut_off,
                keep_alive,
            }) => {
                StreamWriter::new(&mut stream, head, body, cut_off)
                    .await
                    .is_ok()
                    && keep_alive
            }
            Err(_) => false,
        };
        if !keep_alive || shared.shutdown.is_cancelled() {
            let _ = stream.shutdown().await;
            return;
        }
        read = rest;
    }
}

/// Reads the next request head, within `timeout` when there is one; `read` holds bytes of it read
/// earlier (pipelined after the previous request). `None` when the client left or took too long.
async fn next_head(
    stream: &mut TcpStream,
    read: Vec<u8>,
    timeout: Option<Duration>,
) -> Option<NextRequest> {
    match timeout {
        Some(limit) => match tokio::time::timeout(limit, read_head(stream, read)).await {
            Ok(head) => head,
            Err(_) => {
                tracing::debug!("closing a connection that sent no complete request in time");
                None
            }
        },
        None => read_head(stream, read).await,
    }
}

/// A request head, as read by [`read_head`].
enum NextRequest {
    /// A request for the lean path, and whatever the client sent after its head.
    Lean {
        request: Box<http::Request<()>>,
        rest: Vec<u8>,
    },
    /// For hyper, with every byte read so far.
    Hyper(Bytes),
}

/// Reads until a request head is complete (or shown to be one for hyper), starting with the bytes
/// in `buf`. `None` when the client left first.
async fn read_head(stream: &mut TcpStream, mut buf: Vec<u8>) -> Option<NextRequest> {
    if buf.is_empty() {
        // A client that connected (or kept its connection) but sends nothing yet costs no buffer.
        stream.readable().await.ok()?;
    }
    loop {
        match head::classify(&buf, crate::HUB_PATH) {
            Head::Partial => {}
            Head::Lean { request, consumed } => {
                let rest = buf.get(consumed..).unwrap_or_default().to_vec();
                return Some(NextRequest::Lean { request, rest });
            }
            Head::Hyper => return Some(NextRequest::Hyper(buf.into())),
        }
        if buf.len() == buf.capacity() {
            if buf.len() >= head::MAX_HEAD_BYTES {
                return Some(NextRequest::Hyper(buf.into()));
            }
            buf.reserve(buf.capacity().max(HEAD_BUFFER));
        }
        match tokio::io::AsyncReadExt::read_buf(stream, &mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// What answering a lean request left to do.
enum Answer {
    /// The response was written; whether the connection may serve another request.
    Done { keep_alive: bool },
    /// A streamed response: its encoded head, its body and (for a subscriber stream) its
    /// cut-off, for [`StreamWriter`].
    Stream {
        head: Vec<u8>,
        body: axum::body::Body,
        cut_off: Option<CutOff>,
        keep_alive: bool,
    },
}

/// Answers a lean request through the router. A response of known length (an error, a redirect) is
/// written here; a streamed one is handed back to be written by [`StreamWriter`].
async fn respond(
    stream: &mut TcpStream,
    shared: &ServeContext,
    request: Box<http::Request<()>>,
) -> std::io::Result<Answer> {
    shared.lean_requests.inc();
    let (parts, ()) = (*request).into_parts();
    let request = http::Request::from_parts(parts, axum::body::Body::empty());
    // Boxed: the router's future is large and only needed until the response exists; inline, it
    // would stay part of this connection's task for the whole life of the stream.
    let response = match Box::pin(shared.app.clone().oneshot(request)).await {
        Ok(response) => response,
        Err(infallible) => match infallible {},
    };
    let EncodedResponse {
        mut head,
        framing,
        keep_alive,
        cut_off,
        mut body,
    } = head_of(response);
    match framing {
        Framing::None => {
            stream.write_all(&head).await?;
        }
        Framing::Length(len) => {
            // A short answer (an error): collected, then written with its head in one go.
            let mut written = 0u64;
            while let Some(frame) =
                std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            {
                let Ok(data) = frame.map_err(std::io::Error::other)?.into_data() else {
                    continue;
                };
                written += data.len() as u64;
                head.extend_from_slice(&data);
            }
            stream.write_all(&head).await?;
            if written != len {
                // The body and its announced length disagree: the connection cannot go on.
                return Ok(Answer::Done { keep_alive: false });
            }
        }
        Framing::Chunked => {
            return Ok(Answer::Stream {
                head,
                body,
                cut_off,
                keep_alive,
            });
        }
    }
    stream.flush().await?;
    Ok(Answer::Done { keep_alive })
}

/// A response split into its encoded head and its body.
struct EncodedResponse {
    head: Vec<u8>,
    framing: Framing,
    keep_alive: bool,
    cut_off: Option<CutOff>,
    body: axum::body::Body,
}

/// Encodes `response`'s head. Not `async` on purpose: the response's header map is dropped here
/// rather than kept in the connection task's state for as long as the stream lasts.
fn head_of(response: axum::response::Response) -> EncodedResponse {
    let (parts, body) = response.into_parts();
    let exact = body.size_hint().exact();
    let framing = head::framing(parts.status, &parts.headers, exact);
    let mut encoded = Vec::with_capacity(256);
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    head::encode_head(&mut encoded, parts.status, &parts.headers, framing, &date);
    EncodedResponse {
        head: encoded,
        framing,
        keep_alive: !head::closes_connection(&parts.headers),
        cut_off: parts.extensions.get::<CutOff>().cloned(),
        body,
    }
}

/// Serves the rest of a connection with hyper (HTTP/1 or HTTP/2, with upgrades).
async fn serve_hyper(io: Rewind, shared: &ServeContext) {
    let app = shared.app.clone();
    // Cancelled when hyper has read a request head (it calls the service then).
    let started = CancellationToken::new();
    let first_request = started.clone();
    // The cut-off of the HTTP/1 subscriber stream hyper is writing, if any (see the module docs).
    let watched: Arc<Mutex<Option<CutOff>>> = Arc::default();
    let watch = watched.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        first_request.cancel();
        let http1 = request.version() < http::Version::HTTP_2;
        let watch = watch.clone();
        let response = app.clone().oneshot(request);
        async move {
            let response = response.await?;
            if http1 {
                *watch.lock() = response.extensions().get::<CutOff>().cloned();
            }
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    // Boxed: the connection task's future stays small while it serves a lean stream.
    let mut connection = Box::pin(
        shared
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service),
    );
    tokio::select! {
        _ = connection.as_mut() => return,
        () = no_request_within(&started, shared.header_read_timeout) => {
            tracing::debug!("closing a connection that sent no complete request in time");
            return;
        }
        // The subscriber stream written here was cut off by the fan-out: drop the connection.
        () = cut_off(&watched) => return,
        () = shared.shutdown.cancelled() => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

/// Resolves once the watched stream is cut off. With nothing watched it registers no waker: it is
/// polled again with the rest of the connection task, which is woken by whatever hyper waits on,
/// and a stream once watched is woken by its cut-off.
fn cut_off(watched: &Mutex<Option<CutOff>>) -> impl Future<Output = ()> + '_ {
    std::future::poll_fn(move |cx| match &*watched.lock() {
        Some(cut_off) => cut_off.poll_cut_off(cx),
        None => Poll::Pending,
    })
}

/// Resolves if `started` is not cancelled within `timeout`; never resolves otherwise (or without a
/// timeout).
async fn no_request_within(started: &CancellationToken, timeout: Option<Duration>) {
    if let Some(timeout) = timeout {
        if tokio::time::timeout(timeout, started.cancelled())
            .await
            .is_err()
        {
            return;
        }
    }
    std::future::pending::<()>().await
}

/// A TCP stream that first yields bytes already read from it, so hyper parses the connection from
/// its start.
struct Rewind {
    prefix: Bytes,
    inner: TcpStream,
}

impl Rewind {
    fn new(inner: TcpStream, prefix: Bytes) -> Self {
        Self { prefix, inner }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::routing::get;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

    use super::*;

    async fn answer() -> &'static str {
        "ok"
    }

    /// Reads one response with a `content-length` body and returns the body.
    async fn read_response(reader: &mut BufReader<TcpStream>) -> String {
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.unwrap_or_default();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await.unwrap_or_default();
        String::from_utf8(body).unwrap_or_default()
    }

    #[tokio::test]
    async fn every_subscription_of_a_kept_alive_connection_is_lean_until_another_request() {
        let app = Router::new().route(crate::HUB_PATH, get(answer).post(answer));
        let metrics = ConnectionMetrics::default();
        let listener = bind("127.0.0.1:0".parse().unwrap_or(([127, 0, 0, 1], 0).into()))
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            app,
            async move {
                let _ = stopped.await;
            },
            Duration::from_secs(1),
            metrics.clone(),
            Some(Duration::from_secs(5)),
        ));
        let socket = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut reader = BufReader::new(socket);
        let get = "GET /.well-known/mercure?topic=a HTTP/1.1\r\nHost: hub\r\n\r\n";
        let post = "POST /.well-known/mercure HTTP/1.1\r\nHost: hub\r\nContent-Length: 0\r\n\r\n";
        let mut lean = Vec::new();
        for request in [get, get, post, get] {
            reader
                .get_mut()
                .write_all(request.as_bytes())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(read_response(&mut reader).await, "ok");
            lean.push(metrics.lean_requests.get());
        }
        // Two subscriptions in a row on one connection are both lean; the first other request
        // hands the connection to hyper for good.
        assert_eq!(lean, [1, 2, 2, 2]);
        let _ = stop.send(());
        let _ = server.await;
    }
}
