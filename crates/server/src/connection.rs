//! The accept loop: one task per TCP connection, each closable on its own.
//!
//! axum's `serve` cannot drop one particular connection, and a subscriber that stopped reading
//! must be dropped: hyper only polls a response body when the socket can take more bytes, so a
//! stalled client would keep its socket, hyper's buffers and its queued updates for as long as it
//! likes. Every connection therefore gets a [`ConnectionCloser`] (a cancellation token, put in the
//! request's extensions); the fan-out cancels it when it cuts the subscriber off, and the
//! connection's task then drops the connection at once. The token is only watched where a stalled
//! client can block the task: by hyper's connection, and by a lean stream's writer while a write
//! is blocked (watching it on every poll of every stream would cost a lock per delivery).
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
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::lean::{self, Framing, Head};

/// Pending connections the kernel may queue for `accept` (capped by `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 65_535;

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
            connection(stream, &shared, closer).await;
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
///
/// The task's own state is what an idle stream costs, so everything that is only needed on the way
/// in (reading the head under its timeout, routing, encoding the response head) runs in boxed
/// futures freed before the stream starts, and the stream itself is written by [`StreamWriter`], a
/// hand-written future of a few words.
async fn connection(mut stream: TcpStream, shared: &Shared, closer: CancellationToken) {
    let Some(head) = Box::pin(first_head(&mut stream, shared.header_read_timeout)).await else {
        return;
    };
    let rest = match head {
        FirstRequest::Lean { request, rest } => {
            let answer = Box::pin(respond(&mut stream, shared, request, &closer)).await;
            let keep_alive = match answer {
                Ok(Answer::Done { keep_alive }) => keep_alive,
                Ok(Answer::Stream {
                    head,
                    body,
                    keep_alive,
                }) => {
                    StreamWriter::new(&mut stream, head, body, &closer)
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
            rest
        }
        FirstRequest::Hyper(read) => read,
    };
    // Boxed so that a lean stream's task does not carry room for hyper's state.
    Box::pin(serve_hyper(Rewind::new(stream, rest), shared, closer)).await;
}

/// Reads the first request head, within `timeout` when there is one.
async fn first_head(stream: &mut TcpStream, timeout: Option<Duration>) -> Option<FirstRequest> {
    match timeout {
        Some(limit) => match tokio::time::timeout(limit, read_head(stream)).await {
            Ok(head) => head,
            Err(_) => {
                tracing::debug!("closing a connection that sent no complete request in time");
                None
            }
        },
        None => read_head(stream).await,
    }
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

/// What answering a lean request left to do.
enum Answer {
    /// The response was written; whether the connection may serve another request.
    Done { keep_alive: bool },
    /// A streamed response: its encoded head and its body, for [`StreamWriter`].
    Stream {
        head: Vec<u8>,
        body: axum::body::Body,
        keep_alive: bool,
    },
}

/// Answers a lean request through the router. A response of known length (an error, a redirect) is
/// written here; a streamed one is handed back to be written by [`StreamWriter`].
async fn respond(
    stream: &mut TcpStream,
    shared: &Shared,
    request: Box<http::Request<()>>,
    closer: &CancellationToken,
) -> std::io::Result<Answer> {
    let (parts, ()) = (*request).into_parts();
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
                return Ok(Answer::Done { keep_alive: false });
            }
        }
        Framing::Chunked => {
            return Ok(Answer::Stream {
                head,
                body,
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

/// Writes a streamed response: `head`, then every data frame of the body as one chunk, until the
/// body ends (then the last chunk) or the client goes away (an error). While waiting for the next
/// frame it watches the socket, so a client that closes its end is noticed at once, as hyper
/// notices it.
///
/// A hand-written future rather than an `async fn`: it is what every idle subscriber's task holds
/// for as long as the stream lasts, and an `async fn`'s state keeps room for every local of every
/// await point.
struct StreamWriter<'a> {
    stream: &'a mut TcpStream,
    /// Cancelled when the fan-out cuts the subscriber off.
    closer: &'a CancellationToken,
    /// Watches `closer` while a write is blocked (created only then: a client that reads costs
    /// nothing here).
    cut_off: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    body: axum::body::Body,
    /// What is still to be written.
    out: Unsent,
    /// The body ended: once the last chunk is written, the response is complete.
    ended: bool,
    /// Set once the client sent bytes (a next request): stop watching for EOF then, as hyper does;
    /// the bytes stay in the socket for whoever serves the connection after this response.
    client_spoke: bool,
}

/// The bytes a [`StreamWriter`] has yet to write, in order: the response head (until written),
/// then the current chunk's size line, data and end, each advanced as bytes go out.
struct Unsent {
    head: Vec<u8>,
    size: lean::ChunkHeader,
    size_written: usize,
    data: Bytes,
    tail: &'static [u8],
}

impl Unsent {
    fn size_left(&self) -> &[u8] {
        self.size
            .as_bytes()
            .get(self.size_written..)
            .unwrap_or_default()
    }

    /// Whether no chunk is waiting (the head may be).
    fn chunk_done(&self) -> bool {
        self.size_left().is_empty() && self.data.is_empty() && self.tail.is_empty()
    }

    fn is_empty(&self) -> bool {
        self.head.is_empty() && self.chunk_done()
    }

    /// Queues `data` as one chunk.
    fn set_chunk(&mut self, data: Bytes) {
        self.size = lean::chunk_header(data.len());
        self.size_written = 0;
        self.data = data;
        self.tail = lean::CHUNK_END;
    }

    /// The parts still to write, empty ones included.
    fn slices(&self) -> [IoSlice<'_>; 4] {
        [
            IoSlice::new(&self.head),
            IoSlice::new(self.size_left()),
            IoSlice::new(&self.data),
            IoSlice::new(self.tail),
        ]
    }

    /// Drops the first `n` bytes.
    fn advance(&mut self, mut n: usize) {
        let take = n.min(self.head.len());
        if take == self.head.len() {
            // Freed: an idle stream keeps no head buffer.
            self.head = Vec::new();
        } else {
            self.head.drain(..take);
        }
        n -= take;
        let take = n.min(self.size_left().len());
        self.size_written += take;
        n -= take;
        let take = n.min(self.data.len());
        self.data.advance(take);
        n -= take;
        self.tail = &self.tail[n.min(self.tail.len())..];
    }
}

impl<'a> StreamWriter<'a> {
    fn new(
        stream: &'a mut TcpStream,
        head: Vec<u8>,
        body: axum::body::Body,
        closer: &'a CancellationToken,
    ) -> Self {
        Self {
            stream,
            closer,
            cut_off: None,
            body,
            out: Unsent {
                head,
                size: lean::chunk_header(0),
                size_written: usize::MAX,
                data: Bytes::new(),
                tail: &[],
            },
            ended: false,
            client_spoke: false,
        }
    }

    /// Takes the next body frame as the chunk to write (or the last chunk when the body ended).
    fn poll_next_chunk(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        loop {
            match std::task::ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(frame) => {
                    // Trailers are not sent (hyper sends them only to clients that asked for them).
                    let Ok(data) = frame.map_err(std::io::Error::other)?.into_data() else {
                        continue;
                    };
                    if !data.is_empty() {
                        self.out.set_chunk(data);
                        return Poll::Ready(Ok(()));
                    }
                }
                None => {
                    self.ended = true;
                    self.out.tail = lean::LAST_CHUNK;
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }

    /// Writes what is unsent, with as few system calls as the socket allows.
    fn poll_write_unsent(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.out.is_empty() {
            let slices = self.out.slices();
            let first = slices.iter().position(|s| !s.is_empty()).unwrap_or(0);
            match Pin::new(&mut *self.stream).poll_write_vectored(cx, &slices[first..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(n)) => self.out.advance(n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // The client is not reading. If the fan-out cuts it off meanwhile (its queue
                    // filled up), drop the connection at once instead of waiting for the client to
                    // read again: the socket and its unsent bytes would stay for as long as it likes.
                    let closer = self.closer;
                    let cut_off = self
                        .cut_off
                        .get_or_insert_with(|| Box::pin(closer.clone().cancelled_owned()));
                    if cut_off.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(std::io::ErrorKind::ConnectionAborted.into()));
                    }
                    return Poll::Pending;
                }
            }
        }
        self.cut_off = None;
        Poll::Ready(Ok(()))
    }

    /// Whether the idle client closed its end (`Ready(true)`) or sent something (`Ready(false)`).
    /// Bytes sent are only peeked, never taken.
    fn poll_client_gone(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut probe = [0u8; 1];
        let mut buf = ReadBuf::new(&mut probe);
        match self.stream.poll_peek(cx, &mut buf) {
            Poll::Ready(Ok(n)) => Poll::Ready(n == 0),
            Poll::Ready(Err(_)) => Poll::Ready(true),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Future for StreamWriter<'_> {
    type Output = std::io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            if this.out.chunk_done() {
                if this.ended {
                    // The last chunk (and everything before it) is written.
                    return Poll::Ready(Ok(()));
                }
                // The head goes out with the first frame when that is ready at once (the
                // preamble is), in one write; otherwise alone.
                if this.poll_next_chunk(cx)?.is_pending() && this.out.is_empty() {
                    if !this.client_spoke {
                        match this.poll_client_gone(cx) {
                            Poll::Ready(true) => {
                                return Poll::Ready(Err(
                                    std::io::ErrorKind::ConnectionAborted.into()
                                ))
                            }
                            Poll::Ready(false) => this.client_spoke = true,
                            Poll::Pending => {}
                        }
                    }
                    return Poll::Pending;
                }
            }
            std::task::ready!(this.poll_write_unsent(cx))?;
        }
    }
}

/// Serves the rest of a connection with hyper (HTTP/1 or HTTP/2, with upgrades).
async fn serve_hyper(io: Rewind, shared: &Shared, closer: CancellationToken) {
    let app = shared.app.clone();
    let extension = ConnectionCloser(closer.clone());
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
        // A subscriber served here was cut off by the fan-out: drop the connection at once.
        () = closer.cancelled() => return,
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
