//! The accept loop: one task per TCP connection, each closable on its own.
//!
//! axum's `serve` cannot drop one particular connection, and a subscriber that stopped reading
//! must be dropped: hyper only polls a response body when the socket can take more bytes, so a
//! stalled client would keep its socket, hyper's buffers and its queued updates for as long as it
//! likes. Every connection therefore gets a [`ConnectionCloser`] (a cancellation token, put in the
//! request's extensions); the fan-out cancels it when it cuts the subscriber off, and the
//! connection's task then drops the connection at once.
//!
//! A connection's first request head is read here with a small buffer. A plain HTTP/1.1
//! subscription (see [`crate::lean`]) is answered by the router as usual, but its response is
//! written here, chunk by chunk, without hyper's two 8 KiB per-connection buffers, which would
//! otherwise stay allocated for the whole life of an idle stream. The connection then goes on with
//! hyper for any later request. Every other connection is handed to hyper at once, replaying the
//! bytes already read through [`Rewind`].
//!
//! A connection must send a complete request head within the header read timeout
//! (`--header-read-timeout`), or it is closed: otherwise a client trickling its headers a byte at a
//! time, or connecting and sending nothing (slowloris), holds a socket, a task and a read buffer for
//! as long as it likes, and a few thousand of them exhaust the file descriptors normal clients need.
//! The first head is read here under that timeout. hyper enforces it on the HTTP/1 request heads it
//! reads (it needs a timer for that: [`TokioTimer`]); a connection handed to hyper is also bounded
//! until hyper calls the service, because before that it sits in the HTTP/1-or-HTTP/2 detection,
//! which has no timeout of its own, and an HTTP/2 client could send its preface and then no request.
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
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::lean::{self, Framing, Head};

/// Pending connections the kernel may queue for `accept` (capped by `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;

/// First size of the buffer a request head is read into; it doubles up to
/// [`lean::MAX_HEAD_BYTES`]. Most subscription heads fit.
const HEAD_BUFFER: usize = 1024;

/// Closes the connection a request arrived on (found in the request's extensions).
#[derive(Clone, Debug)]
pub struct ConnectionCloser(pub CancellationToken);

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

/// What every connection task shares.
struct Shared {
    app: Router,
    builder: auto::Builder<TokioExecutor>,
    /// How long a client may take to send a request head (`None`: no limit).
    header_read_timeout: Option<Duration>,
    /// Cancelled when the server stops: hyper connections finish their request and close, lean
    /// streams close once their response ends (the drain has ended the streams by then).
    shutdown: CancellationToken,
}

/// Serves `app` on `listener` until `stop` resolves, then lets open connections finish for at most
/// `grace`. A connection that does not send a complete request head within `header_read_timeout`
/// (`None`: no limit) is closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    stop: impl Future<Output = ()>,
    grace: Duration,
    open_connections: Gauge,
    header_read_timeout: Option<Duration>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let shared = Arc::new(Shared {
        app,
        builder,
        header_read_timeout,
        shutdown: CancellationToken::new(),
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
        let closer = CancellationToken::new();
        let open = open_connections.clone();
        open.inc();
        let shared = shared.clone();
        tracker.spawn(async move {
            tokio::select! {
                () = connection(stream, &shared, closer.clone()) => {}
                () = closer.cancelled() => {}
            }
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

/// Serves one connection: its first request on the lean path when it can, everything else through
/// hyper.
async fn connection(mut stream: TcpStream, shared: &Shared, closer: CancellationToken) {
    let head = match shared.header_read_timeout {
        Some(limit) => match tokio::time::timeout(limit, read_head(&mut stream)).await {
            Ok(head) => head,
            Err(_) => {
                tracing::debug!("closing a connection that sent no complete request in time");
                return;
            }
        },
        None => read_head(&mut stream).await,
    };
    let Some(head) = head else {
        return;
    };
    let rest = match head {
        FirstRequest::Lean { request, rest } => {
            match respond(&mut stream, shared, *request, &closer).await {
                Ok(true) if !shared.shutdown.is_cancelled() => rest,
                _ => {
                    let _ = stream.shutdown().await;
                    return;
                }
            }
        }
        FirstRequest::Hyper(read) => read,
    };
    // Boxed so that a lean stream's task does not carry room for hyper's state.
    Box::pin(serve_hyper(Rewind::new(stream, rest), shared, closer)).await;
}

/// The start of a connection, as read by [`read_head`].
enum FirstRequest {
    /// A request for the lean path, and whatever the client sent after its head.
    Lean {
        request: Box<http::Request<()>>,
        rest: Bytes,
    },
    /// For hyper, with every byte read so far.
    Hyper(Bytes),
}

/// Reads until a request head is complete (or shown to be one for hyper). `None` when the client
/// left first.
async fn read_head(stream: &mut TcpStream) -> Option<FirstRequest> {
    // A client that connected but sends nothing yet costs no buffer.
    stream.readable().await.ok()?;
    let mut buf: Vec<u8> = Vec::with_capacity(HEAD_BUFFER);
    loop {
        if buf.len() == buf.capacity() {
            if buf.len() >= lean::MAX_HEAD_BYTES {
                return Some(FirstRequest::Hyper(buf.into()));
            }
            buf.reserve(buf.capacity());
        }
        match tokio::io::AsyncReadExt::read_buf(stream, &mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        match lean::classify(&buf, crate::HUB_PATH) {
            Head::Partial => {}
            Head::Lean { request, consumed } => {
                let rest = lean::leftover(&buf, consumed);
                return Some(FirstRequest::Lean { request, rest });
            }
            Head::Hyper => return Some(FirstRequest::Hyper(buf.into())),
        }
    }
}

/// Answers a lean request through the router and writes the response. `Ok(true)` when the
/// connection may serve another request.
async fn respond(
    stream: &mut TcpStream,
    shared: &Shared,
    request: http::Request<()>,
    closer: &CancellationToken,
) -> std::io::Result<bool> {
    let (parts, ()) = request.into_parts();
    let mut request = http::Request::from_parts(parts, axum::body::Body::empty());
    request
        .extensions_mut()
        .insert(ConnectionCloser(closer.clone()));
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
                return Ok(false);
            }
        }
        Framing::Chunked => {
            head_then_stream(stream, head, body).await?;
        }
    }
    stream.flush().await?;
    Ok(keep_alive)
}

/// A response split into its encoded head and its body.
struct EncodedResponse {
    head: Vec<u8>,
    framing: Framing,
    keep_alive: bool,
    body: axum::body::Body,
}

/// Encodes `response`'s head. Not `async` on purpose: the response's header map is dropped here
/// rather than kept in the connection task's state for as long as the stream lasts.
fn head_of(response: axum::response::Response) -> EncodedResponse {
    let (parts, body) = response.into_parts();
    let exact = body.size_hint().exact();
    let framing = lean::framing(parts.status, &parts.headers, exact);
    let mut head = Vec::with_capacity(256);
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    lean::encode_head(&mut head, parts.status, &parts.headers, framing, &date);
    EncodedResponse {
        head,
        framing,
        keep_alive: !lean::closes_connection(&parts.headers),
        body,
    }
}

/// Writes `head`, then every data frame of `body` as one chunk, until the body ends (then the last
/// chunk) or the client goes away (an error). While waiting for the next frame it watches the
/// socket, so a client that closes its end is noticed at once, as hyper notices it.
async fn head_then_stream(
    stream: &mut TcpStream,
    head: Vec<u8>,
    mut body: axum::body::Body,
) -> std::io::Result<()> {
    // The head goes out with the first frame when that is ready at once (the preamble is), in one
    // write. Polling with a no-op waker is harmless: the next poll registers the real one.
    let first = {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        Pin::new(&mut body).poll_frame(&mut cx)
    };
    match first {
        Poll::Ready(frame) => {
            if write_frame(stream, &head, frame).await? {
                return Ok(());
            }
        }
        Poll::Pending => stream.write_all(&head).await?,
    }
    drop(head);
    // Set once the client sent bytes (a next request): stop watching for EOF then, as hyper does;
    // the bytes stay in the socket for whoever serves the connection after this response.
    let mut client_spoke = false;
    loop {
        let frame = tokio::select! {
            frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)) => frame,
            gone = client_gone(stream), if !client_spoke => {
                if gone {
                    return Err(std::io::ErrorKind::ConnectionAborted.into());
                }
                client_spoke = true;
                continue;
            }
        };
        if write_frame(stream, &[], frame).await? {
            return Ok(());
        }
    }
}

/// Writes `prefix` and one body frame as a chunk (or the last chunk when the body ended, which
/// returns `true`).
async fn write_frame(
    stream: &mut TcpStream,
    prefix: &[u8],
    frame: Option<Result<http_body::Frame<Bytes>, axum::Error>>,
) -> std::io::Result<bool> {
    let Some(frame) = frame else {
        write_all_vectored(stream, [prefix, lean::LAST_CHUNK, &[], &[]]).await?;
        return Ok(true);
    };
    // Trailers are not sent (hyper sends them only to clients that asked for them).
    let data = frame
        .map_err(std::io::Error::other)?
        .into_data()
        .unwrap_or_default();
    if data.is_empty() {
        write_all_vectored(stream, [prefix, &[], &[], &[]]).await?;
    } else {
        let size = lean::chunk_header(data.len());
        write_all_vectored(stream, [prefix, size.as_bytes(), &data, lean::CHUNK_END]).await?;
    }
    Ok(false)
}

/// Waits until the idle client either closed its end (`true`) or sent something (`false`). Bytes
/// sent are only peeked, never taken.
async fn client_gone(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    !matches!(stream.peek(&mut probe).await, Ok(n) if n > 0)
}

/// Writes all of `parts` (empty ones are fine) with as few system calls as the socket allows.
async fn write_all_vectored(stream: &mut TcpStream, mut parts: [&[u8]; 4]) -> std::io::Result<()> {
    let mut first = 0;
    loop {
        while first < parts.len() && parts[first].is_empty() {
            first += 1;
        }
        if first == parts.len() {
            return Ok(());
        }
        let slices = parts.map(IoSlice::new);
        let mut n = stream.write_vectored(&slices[first..]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let take = n.min(parts[first].len());
            parts[first] = &parts[first][take..];
            n -= take;
            if parts[first].is_empty() {
                first += 1;
            }
        }
    }
}

/// Serves the rest of a connection with hyper (HTTP/1 or HTTP/2, with upgrades).
async fn serve_hyper(io: Rewind, shared: &Shared, closer: CancellationToken) {
    let app = shared.app.clone();
    let extension = ConnectionCloser(closer);
    // Cancelled when hyper has read a request head (it calls the service then).
    let started = CancellationToken::new();
    let first_request = started.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        first_request.cancel();
        request.extensions_mut().insert(extension.clone());
        app.clone().oneshot(request)
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
        () = shared.shutdown.cancelled() => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
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
