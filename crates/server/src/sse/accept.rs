//! The accept loop: one task per TCP connection, each closable on its own.
//!
//! A connection's request head is read here with a small buffer and classified by
//! [`super::head`]. A plain HTTP/1.1 subscription is answered by the router as usual, but its
//! response is written by [`StreamWriter`], chunk by chunk, without hyper's two 8 KiB
//! per-connection buffers, which would otherwise stay allocated for the whole life of an idle
//! stream. When that response ends and the connection is kept alive, the next request head is read
//! the same way, so a load balancer that reuses its upstream connections gets every subscription
//! lean, not only the first. A plain HTTP/1.1 publish (a `POST` of the hub path with a
//! `Content-Length` body within `--max-body-size`) is lean too: its body is read here, from what
//! came with the head and then the socket, and it is answered by [`crate::publish::LeanPublish`]
//! without hyper or the router, alike to the router's answer (written after one yield, so the
//! answers of a burst of publishes leave back to back); the connection then goes on with its
//! next request, pipelined bytes included. The first request that is neither (chunked bodies,
//! `Expect`, `Connection: close`, upgrades, HTTP/1.0 and HTTP/2, other paths) hands the
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
//! # TLS
//! With `--tls-cert` every connection first completes a TLS handshake ([`crate::tls`]), under the
//! same header read timeout as its first request head (the two share one deadline: a client that
//! connects and never finishes its handshake is closed like one that never sends a head). A
//! client whose first byte is a letter speaks plain HTTP to this port: it is answered `400` in
//! plain text rather than with a TLS alert it cannot read. After the handshake, a session that
//! agreed on HTTP/2 by ALPN goes to hyper; any other is served as a plain connection is, the lean
//! path included, over [`TlsSocket`]. Every limit below applies before the handshake (the counts)
//! or after it (timeouts, stalls) alike; a refused connection is answered inside a handshake that
//! offers HTTP/1.1 only, so the client can read the canned answer.
//!
//! The listener is bound with a large backlog so a reconnection storm (thousands of clients of a
//! dead node arriving at once) waits in the kernel's queue instead of being dropped and retried
//! after the SYN timeout.
//!
//! # Limits
//! Every connection holds a file descriptor, so the loop bounds them: beyond `--max-connections`
//! (and, per client address, `--max-connections-per-client`; see [`crate::client`]) a new
//! connection is answered at once with a canned `503` (`429` for one address over its share) and
//! `Retry-After`, then closed, instead of failing `accept` once the process runs out of
//! descriptors; the metrics listener, apart from this one, keeps answering `/healthz`, `/readyz`
//! and `/metrics`. A hyper-served connection with no request in progress for `--idle-timeout` is
//! closed (HTTP/2 included, which hyper otherwise keeps forever), HTTP/2 connections are pinged
//! (`--http2-keep-alive`) and carry at most `--http2-max-streams` streams, each with a bounded
//! send buffer. A connection whose writes stay blocked for longer than the dispatch timeout (a
//! client that pipelines requests and never reads the answers, or an HTTP/2 client that stopped
//! reading altogether) is closed too: its socket accepted nothing for that long.

use std::future::Future;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::metrics::LatencyHistogram;
use axum::Router;
use bytes::{Buf, Bytes};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use quicksilver_fanout::{now_ms, CutOff};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::head::{self, Framing, Head};
use super::tls::TlsSocket;
use super::writer::{LeanSocket, SharedSocket, Socket, StreamWriter};
use crate::client::{ClientCounts, ClientSlot, Peer, TrustedProxies};
use crate::publish::{BodyState, LeanPublish, SocketBody};
use crate::tls::Tls;

/// Pending connections the kernel may queue for `accept` (capped by `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 65_535;

/// First size of the buffer a request head is read into; it doubles up to
/// [`head::MAX_HEAD_BYTES`]. Most subscription heads fit.
const HEAD_BUFFER: usize = 1024;

/// Room a kept-alive connection keeps for its next head after a publish (a publisher's heads and
/// small bodies fit; hyper would keep 16 KiB).
const KEPT_READ_BUFFER: usize = 4 * HEAD_BUFFER;

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
    /// Connections refused because the node held `--max-connections`.
    pub refused: Counter,
    /// Connections refused because their client address held `--max-connections-per-client`.
    pub refused_per_client: Counter,
    /// Connections closed because their writes stayed blocked past the limit.
    pub write_stalls: Counter,
    /// Connections closed after `--idle-timeout` without a request in progress.
    pub idle_closed: Counter,
    /// Accept-to-write latency of live updates the fan-out writes to lean sockets directly.
    pub delivery_latency: Option<LatencyHistogram>,
    /// The TLS listener's handshakes and certificate reloads.
    pub tls: crate::tls::TlsMetrics,
}

/// How the accept loop bounds connections (see the module's "Limits").
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// After `stop`, how long open connections may take to finish.
    pub grace: Duration,
    /// How long a client may take to send a request head (`None`: no limit).
    pub header_read_timeout: Option<Duration>,
    /// A connection whose writes stay blocked this long is closed (`None`: no limit).
    pub write_stall_timeout: Option<Duration>,
    /// A hyper-served connection without a request in progress this long is closed (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Connections the node holds at most; more are answered `503`.
    pub max_connections: usize,
    /// Connections (and, through trusted proxies, streams) one client address holds at most.
    pub client_counts: Arc<ClientCounts>,
    /// Peers whose connections are counted by the client addresses they forward, not their own.
    pub trusted_proxies: TrustedProxies,
    /// Streams one HTTP/2 connection may carry at once.
    pub http2_max_streams: u32,
    /// Interval of HTTP/2 pings, and how long one may go unanswered (`None`: no pings).
    pub http2_keep_alive: Option<Duration>,
    /// Serve TLS only, with this certificate (`None`: plain HTTP).
    pub tls: Option<Tls>,
    /// Publish on the lean path too, to this hub (`None`: publishes go to hyper and the router).
    pub publish: Option<Arc<LeanPublish>>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(10),
            header_read_timeout: Some(Duration::from_secs(10)),
            write_stall_timeout: None,
            idle_timeout: None,
            max_connections: usize::MAX,
            client_counts: ClientCounts::new(0),
            trusted_proxies: TrustedProxies::default(),
            http2_max_streams: 100,
            http2_keep_alive: None,
            tls: None,
            publish: None,
        }
    }
}

/// Bytes hyper may buffer for one HTTP/2 stream that the client's flow control holds back: a
/// stream whose client stops granting window (hyper then stops polling its body) holds at most
/// this plus its own queue, and its connection's other streams go on.
const HTTP2_STREAM_SEND_BUFFER: usize = 64 * 1024;

/// hyper's HTTP/1 read buffer limit: room for a request head (see [`head::MAX_HEAD_BYTES`]) and
/// body chunks; pipelined requests beyond it wait in the socket, not in memory.
const HTTP1_READ_BUFFER: usize = 64 * 1024;

/// Refusals (a canned answer, then a brief wait for the client to read it) in progress at once;
/// beyond this, a refused connection is closed without an answer, so a flood cannot turn the
/// refusals themselves into held descriptors.
const MAX_REFUSALS_IN_FLIGHT: usize = 512;

/// What every connection task shares.
struct ServeContext {
    app: Router,
    builder: auto::Builder<TokioExecutor>,
    options: ServeOptions,
    /// Cancelled when the server stops: hyper connections finish their request and close, lean
    /// connections close once their response ends (the drain has ended the streams by then).
    shutdown: CancellationToken,
    metrics: ConnectionMetrics,
}

/// Serves `app` on `listener` until `stop` resolves, then lets open connections finish for at most
/// `options.grace`, within the limits of `options`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    stop: impl Future<Output = ()>,
    metrics: ConnectionMetrics,
    options: ServeOptions,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(HTTP1_READ_BUFFER);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(options.http2_max_streams)
        .max_send_buf_size(HTTP2_STREAM_SEND_BUFFER)
        .keep_alive_interval(options.http2_keep_alive)
        .keep_alive_timeout(options.http2_keep_alive.unwrap_or(Duration::from_secs(20)));
    let grace = options.grace;
    let shared = Arc::new(ServeContext {
        app,
        builder,
        options,
        shutdown: CancellationToken::new(),
        metrics,
    });
    let refusals = Arc::new(tokio::sync::Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    let tracker = TaskTracker::new();
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
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
        let open = &shared.metrics.open;
        if usize::try_from(open.get()).unwrap_or(0) >= shared.options.max_connections {
            shared.metrics.refused.inc();
            refuse(stream, &refusals, REFUSED_FULL, &shared.options.tls);
            continue;
        }
        // Behind a trusted proxy the peer speaks for many clients: they are counted per stream
        // by the subscribe handler instead.
        let slot = if shared.options.trusted_proxies.contains(peer.ip()) {
            None
        } else {
            match shared.options.client_counts.acquire(peer.ip()) {
                Some(slot) => Some(slot),
                None => {
                    shared.metrics.refused_per_client.inc();
                    refuse(stream, &refusals, REFUSED_CLIENT, &shared.options.tls);
                    continue;
                }
            }
        };
        // Updates are small and latency matters more than packet count: no Nagle delay.
        let _ = stream.set_nodelay(true);
        open.inc();
        // Released however the task ends.
        let held = Held {
            open: open.clone(),
            _slot: slot,
        };
        let shared = shared.clone();
        // Two kinds of task, so a plain connection's task keeps no room for a TLS session.
        if shared.options.tls.is_none() {
            let first_head = shared.options.header_read_timeout;
            // Shared with the shard of whichever subscriber it carries (direct writes).
            let latency = shared.metrics.delivery_latency.clone();
            let socket = SharedSocket(LeanSocket::new(stream, latency));
            tracker.spawn(connection(socket, Peer(peer), shared, first_head, held));
        } else {
            // Boxed: the handshake's state.
            tracker.spawn(Box::pin(tls_connection(stream, Peer(peer), shared, held)));
        }
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

/// What an open connection holds until its task ends: its place in the open-connection count and,
/// when counted per client address, its client's slot.
struct Held {
    open: Gauge,
    _slot: Option<ClientSlot>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// A refusal: its status line, its reason, and whether to retry after a second.
#[derive(Clone, Copy)]
struct Refusal(&'static str, &'static str, bool);

/// The answer to a connection refused because the node is full.
const REFUSED_FULL: Refusal = Refusal(
    "503 Service Unavailable",
    "this node holds its maximum number of connections, retry on another\n",
    true,
);

/// The answer to a connection refused because its client address holds its share.
const REFUSED_CLIENT: Refusal = Refusal(
    "429 Too Many Requests",
    "too many connections from this client address\n",
    true,
);

/// The answer to a plain-HTTP request on the TLS listener.
const REFUSED_PLAINTEXT: Refusal = Refusal(
    "400 Bad Request",
    "this port serves HTTPS only: use https://\n",
    false,
);

impl Refusal {
    fn encode(self) -> Vec<u8> {
        let Refusal(status, reason, retry) = self;
        let retry = if retry { "retry-after: 1\r\n" } else { "" };
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\n{retry}\
             connection: close\r\ncontent-length: {}\r\n\r\n{reason}",
            reason.len()
        )
        .into_bytes()
    }
}

/// How long a refused connection may take to send its request head (and, on the TLS listener,
/// to finish its handshake first), and then to read the answer.
const REFUSAL_WAIT: Duration = Duration::from_secs(1);

/// Answers a refused connection with `answer` and closes it (see [`answer_and_close`]), on the
/// TLS listener after a handshake (bounded by [`REFUSAL_WAIT`]): a TLS client reads an answer only
/// inside a session. At most [`MAX_REFUSALS_IN_FLIGHT`] at once.
fn refuse(
    stream: TcpStream,
    refusals: &Arc<tokio::sync::Semaphore>,
    answer: Refusal,
    tls: &Option<Tls>,
) {
    let Ok(permit) = refusals.clone().try_acquire_owned() else {
        return;
    };
    let tls = tls.clone();
    tokio::spawn(async move {
        match tls {
            None => answer_and_close(stream, answer).await,
            Some(tls) => {
                let handshake =
                    tokio::time::timeout(REFUSAL_WAIT, tls.refusal_acceptor().accept(stream));
                if let Ok(Ok(session)) = handshake.await {
                    answer_and_close(TlsSocket::new(session), answer).await;
                }
            }
        }
        drop(permit);
    });
}

/// Answers `answer` to a connection and closes it: the request head is awaited (briefly, and
/// into a small buffer) so HTTP clients see an answer to their request, the answer goes out with
/// one write (a new socket's send buffer takes it whole), then the write side is closed and what
/// else the client sent is read and dropped for a moment, so that closing does not reset the
/// connection before the client read the answer.
async fn answer_and_close<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, answer: Refusal) {
    let mut buf = [0u8; 2048];
    let mut seen = 0usize;
    let mut tail = [0u8; 4];
    let _ = tokio::time::timeout(REFUSAL_WAIT, async {
        loop {
            match tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    // Only the last four bytes matter to find the head's end.
                    for &b in &buf[..n] {
                        tail = [tail[1], tail[2], tail[3], b];
                        if &tail == b"\r\n\r\n" {
                            return;
                        }
                    }
                    seen += n;
                    if seen >= head::MAX_HEAD_BYTES {
                        return;
                    }
                }
            }
        }
    })
    .await;
    let written = tokio::time::timeout(REFUSAL_WAIT, async {
        stream.write_all(&answer.encode()).await?;
        stream.shutdown().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        return;
    }
    let _ = tokio::time::timeout(REFUSAL_WAIT, async {
        while let Ok(n) = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// The first byte of a TLS record that carries a handshake message (a client hello starts so).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// How a TLS connection's handshake ended.
enum Handshake {
    /// A session, ready for requests.
    Done(TlsSocket),
    /// The client sent plain HTTP.
    Plaintext(TcpStream),
    /// The client left, or the handshake failed.
    Failed,
}

/// Runs a new connection's TLS handshake. A client whose first byte is a letter speaks plain HTTP
/// to this port: it is handed back to be answered in plain text rather than with a TLS alert it
/// cannot read.
async fn handshake(stream: TcpStream, tls: &Tls) -> Handshake {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(1..) => {}
        // Left without a word (a TCP health check): nothing failed.
        Ok(0) | Err(_) => return Handshake::Failed,
    }
    if first[0] != TLS_HANDSHAKE_RECORD && first[0].is_ascii_alphabetic() {
        return Handshake::Plaintext(stream);
    }
    match tls.acceptor().accept(stream).await {
        Ok(session) => Handshake::Done(TlsSocket::new(session)),
        Err(e) => {
            tls.metrics().handshake_failures.inc();
            tracing::debug!(error = %e, "TLS handshake failed");
            Handshake::Failed
        }
    }
}

/// Serves one connection of the TLS listener: the handshake, then, by the protocol agreed by
/// ALPN, HTTP/2 through hyper or HTTP/1.1 as [`connection`] serves plain ones.
///
/// The handshake counts against the header read timeout: a client that opens a connection and
/// never finishes its handshake holds a socket and a task exactly like one that never sends its
/// head, so the handshake and the first request head share one deadline.
async fn tls_connection(stream: TcpStream, peer: Peer, shared: Arc<ServeContext>, held: Held) {
    let Some(tls) = &shared.options.tls else {
        return;
    };
    let limit = shared.options.header_read_timeout;
    let started = tokio::time::Instant::now();
    // Boxed: the handshake's state is freed once it is done.
    let shaken = match limit {
        Some(limit) => match tokio::time::timeout(limit, Box::pin(handshake(stream, tls))).await {
            Ok(shaken) => shaken,
            Err(_) => {
                tls.metrics().handshake_timeouts.inc();
                tracing::debug!("closing a connection whose TLS handshake did not finish in time");
                return;
            }
        },
        None => Box::pin(handshake(stream, tls)).await,
    };
    let socket = match shaken {
        Handshake::Done(socket) => socket,
        Handshake::Plaintext(stream) => {
            tls.metrics().plaintext_refused.inc();
            answer_and_close(stream, REFUSED_PLAINTEXT).await;
            return;
        }
        Handshake::Failed => return,
    };
    let first_head = limit.map(|limit| limit.saturating_sub(started.elapsed()));
    if socket.alpn_protocol() == Some(crate::tls::ALPN_H2) {
        let io = Rewind::new(socket, Bytes::new());
        Box::pin(serve_hyper(io, peer, &shared, first_head)).await;
    } else {
        connection(socket, peer, shared.clone(), first_head, held).await;
    }
}

/// What a connection is served over: a TCP stream, or a TLS session on one ([`TlsSocket`]).
trait ClientSocket: Socket + AsyncRead + Send + 'static {}

impl<S: Socket + AsyncRead + Send + 'static> ClientSocket for S {}

/// Serves one connection: its subscriptions on the lean path, and from the first request that is
/// not one, everything through hyper.
///
/// The task's own state is what an idle stream costs, so everything that is only needed on the way
/// in (reading the head under its timeout, routing, encoding the response head) runs in boxed
/// futures freed before the stream starts, and the stream itself is written by [`StreamWriter`], a
/// hand-written future of a few words.
#[allow(clippy::manual_async_fn)] // On purpose: see the first comment.
fn connection<S: ClientSocket>(
    mut stream: S,
    peer: Peer,
    shared: Arc<ServeContext>,
    first_head: Option<Duration>,
    held: Held,
) -> impl Future<Output = ()> + Send {
    // Not an `async fn`: its arguments would be moved into locals and kept twice in the task's
    // state (once where the call left them); an `async move` block keeps what it captures once.
    async move {
        let _held = held;
        let shared = &*shared;
        let mut read = Vec::new();
        let mut kept_alive = false;
        loop {
            // Everything up to the stream runs in one boxed future, freed before the stream
            // starts: only the writer and this loop's few locals stay while it lasts.
            let next = Box::pin(next_streams(
                &mut stream,
                peer,
                shared,
                std::mem::take(&mut read),
                if kept_alive {
                    head_timeout(shared)
                } else {
                    first_head
                },
            ))
            .await;
            let keep_alive = match next {
                Next::Close => return,
                Next::Hyper(prefix, request_within) => {
                    // Boxed so that a lean stream's task does not carry room for hyper's state.
                    let io = Rewind::new(stream, prefix);
                    Box::pin(serve_hyper(io, peer, shared, request_within)).await;
                    return;
                }
                Next::Answered { keep_alive, rest } => {
                    read = rest;
                    keep_alive
                }
                Next::Stream(mut stream_out) => {
                    let keep_alive = stream_out.keep_alive;
                    read = std::mem::take(&mut stream_out.rest);
                    (*stream_out).writer(&mut stream).await.is_ok() && keep_alive
                }
            };
            if !keep_alive || shared.shutdown.is_cancelled() {
                let _ = stream.shutdown().await;
                return;
            }
            kept_alive = true;
        }
    }
}

/// A kept-alive connection's next head is due within the header read timeout, and within the
/// idle timeout too, when that is shorter.
fn head_timeout(shared: &ServeContext) -> Option<Duration> {
    match (
        shared.options.header_read_timeout,
        shared.options.idle_timeout,
    ) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What a lean connection does after its next request head (see [`next_stream`]).
enum Next {
    /// The client left, took too long, or the connection cannot go on.
    Close,
    /// A request for hyper, with the bytes read so far and the time hyper has for its head.
    Hyper(Bytes, Option<Duration>),
    /// The request was answered in full; what the client sent after it.
    Answered { keep_alive: bool, rest: Vec<u8> },
    /// A streamed response to write.
    Stream(Box<StreamOut>),
}

/// A streamed response ready for [`StreamWriter`], and what the client sent after its request.
struct StreamOut {
    head: Vec<u8>,
    body: axum::body::Body,
    cut_off: Option<CutOff>,
    keep_alive: bool,
    rest: Vec<u8>,
}

impl StreamOut {
    /// The writer of this response to `stream`. A socket the fan-out can write to is lent to the
    /// subscriber's shard while the stream lasts; the subscriber's end (with the writer's) takes
    /// it back.
    fn writer<S: ClientSocket>(self, stream: &mut S) -> StreamWriter<'_, S> {
        let Self {
            head,
            body,
            cut_off,
            ..
        } = self;
        let direct = match (&cut_off, stream.direct_sink()) {
            (Some(cut_off), Some(sink)) => {
                cut_off.direct_writes().attach(sink);
                true
            }
            _ => false,
        };
        StreamWriter::new(stream, head, body, cut_off, direct)
    }
}

/// Answers requests one after another as [`next_stream`] does, for as long as each is answered in
/// full and the connection is kept alive (a publisher's requests, mostly), in one future: a
/// kept-alive publisher's connection allocates it once, not once per request.
async fn next_streams<S: ClientSocket>(
    stream: &mut S,
    peer: Peer,
    shared: &ServeContext,
    mut read: Vec<u8>,
    mut timeout: Option<Duration>,
) -> Next {
    loop {
        match next_stream(stream, peer, shared, read, timeout).await {
            Next::Answered {
                keep_alive: true,
                rest,
            } if !shared.shutdown.is_cancelled() => {
                read = rest;
                timeout = head_timeout(shared);
            }
            next => return next,
        }
    }
}

/// Reads the next request head within `timeout` (`read` holds bytes of it read earlier, pipelined
/// after the previous request) and answers it: in full, or up to the stream [`StreamWriter`]
/// writes.
async fn next_stream<S: ClientSocket>(
    stream: &mut S,
    peer: Peer,
    shared: &ServeContext,
    read: Vec<u8>,
    timeout: Option<Duration>,
) -> Next {
    let max_publish = shared.options.publish.as_ref().map(|p| p.max_body());
    let (mut request, rest, body_len) = match next_head(stream, read, timeout, max_publish).await {
        None => return Next::Close,
        Some(NextRequest::Lean {
            request,
            rest,
            body_len,
        }) => (request, rest, body_len),
        Some(NextRequest::Hyper(read)) => return Next::Hyper(read, timeout),
    };
    if let (&http::Method::POST, Some(publish)) = (request.method(), &shared.options.publish) {
        shared.metrics.lean_requests.inc();
        return match answer_publish(stream, peer, shared, publish, &request, body_len, rest).await {
            Ok((keep_alive, rest)) => Next::Answered { keep_alive, rest },
            Err(_) => Next::Close,
        };
    }
    request.extensions_mut().insert(peer);
    match respond(stream, shared, request).await {
        Ok(Answer::Done { keep_alive }) => Next::Answered { keep_alive, rest },
        Ok(Answer::Stream {
            head,
            body,
            cut_off,
            keep_alive,
        }) => Next::Stream(Box::new(StreamOut {
            head,
            body,
            cut_off,
            keep_alive,
            rest,
        })),
        Err(_) => Next::Close,
    }
}

/// Reads the next request head, within `timeout` when there is one; `read` holds bytes of it read
/// earlier (pipelined after the previous request). `None` when the client left or took too long.
async fn next_head<S: ClientSocket>(
    stream: &mut S,
    read: Vec<u8>,
    timeout: Option<Duration>,
    max_publish: Option<u64>,
) -> Option<NextRequest> {
    match timeout {
        Some(limit) => {
            match tokio::time::timeout(limit, read_head(stream, read, max_publish)).await {
                Ok(head) => head,
                Err(_) => {
                    tracing::debug!("closing a connection that sent no complete request in time");
                    None
                }
            }
        }
        None => read_head(stream, read, max_publish).await,
    }
}

/// A request head, as read by [`read_head`].
enum NextRequest {
    /// A request for the lean path, the length of its body, and whatever the client sent after
    /// its head (the body first).
    Lean {
        request: Box<http::Request<()>>,
        rest: Vec<u8>,
        body_len: u64,
    },
    /// For hyper, with every byte read so far.
    Hyper(Bytes),
}

/// Reads until a request head is complete (or shown to be one for hyper), starting with the bytes
/// in `buf`; a publish of at most `max_publish` bytes is lean too. `None` when the client left first.
async fn read_head<S: ClientSocket>(
    stream: &mut S,
    mut buf: Vec<u8>,
    max_publish: Option<u64>,
) -> Option<NextRequest> {
    if buf.capacity() == 0 {
        // A client that connected (or kept its connection) but sends nothing yet costs no buffer.
        // (After a publish, the buffer is kept for the next one: a publisher sends one after
        // another, and reading at once saves a system call per publish.)
        let mut probe = [0u8; 1];
        std::future::poll_fn(|cx| stream.poll_peek(cx, &mut ReadBuf::new(&mut probe)))
            .await
            .ok()?;
    }
    loop {
        match head::classify(&buf, crate::HUB_PATH, max_publish) {
            Head::Partial => {}
            Head::Lean {
                request,
                consumed,
                body_len,
            } => {
                let rest = if request.method() == http::Method::POST {
                    // The buffer goes on, for the body and what follows it: no copy.
                    buf.drain(..consumed);
                    buf
                } else {
                    // A subscription keeps what follows while its stream lasts: only that (most
                    // often nothing, so no allocation), not the head's buffer.
                    buf.get(consumed..).unwrap_or_default().to_vec()
                };
                return Some(NextRequest::Lean {
                    request,
                    rest,
                    body_len,
                });
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
async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    shared: &ServeContext,
    request: Box<http::Request<()>>,
) -> std::io::Result<Answer> {
    shared.metrics.lean_requests.inc();
    let (parts, ()) = (*request).into_parts();
    let request = http::Request::from_parts(parts, axum::body::Body::empty());
    // Boxed: the router's future is large and only needed until the response exists; inline, it
    // would stay part of this connection's task for the whole life of the stream.
    let response = match Box::pin(shared.app.clone().oneshot(request)).await {
        Ok(response) => response,
        Err(infallible) => match infallible {},
    };
    write_response(stream, response).await
}

/// Writes a response of known length (an error, a redirect, a publish's answer) in full, or only
/// its head for a streamed one, whose body is handed back to be written by [`StreamWriter`].
async fn write_response<S: AsyncWrite + Unpin>(
    stream: &mut S,
    response: axum::response::Response,
) -> std::io::Result<Answer> {
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

/// Publishes on the lean path: reads the body (once the publisher is let through, see
/// [`crate::publish`]) from `rest`, then the socket, and writes the answer. Returns whether the
/// connection can serve another request and what the client sent after this one.
async fn answer_publish<S: ClientSocket>(
    stream: &mut S,
    peer: Peer,
    shared: &ServeContext,
    publish: &LeanPublish,
    request: &http::Request<()>,
    body_len: u64,
    mut rest: Vec<u8>,
) -> std::io::Result<(bool, Vec<u8>)> {
    // Within the body limit (a usize) by the head's classification.
    let len = usize::try_from(body_len).map_err(std::io::Error::other)?;
    let mut body = SocketBody {
        socket: &mut *stream,
        buffered: &mut rest,
        len,
        state: BodyState::Unread,
    };
    // Not boxed: this runs in the connection's boxed future (see [`next_streams`]), which a
    // stream's task does not keep.
    let response = publish.answer(peer, request, &mut body).await;
    let mut keep_alive = match body.state {
        BodyState::Read => true,
        // Refused before its body was read: the connection goes on only past a body already
        // here; one still on its way would have to be read for nothing.
        BodyState::Unread if rest.len() >= len => {
            rest.drain(..len);
            true
        }
        BodyState::Unread | BodyState::Broken => false,
    };
    // Kept for the next head (a publisher sends one after another), unless a large body grew it:
    // an idle kept-alive connection holds no more than a head's room.
    if rest.capacity() > KEPT_READ_BUFFER {
        rest.shrink_to(KEPT_READ_BUFFER.max(rest.len()));
    }
    // The answer waits until the other connections that are ready have published too: the
    // answers (and the deliveries, see the memory transport's reader) of a burst of publishes
    // then leave back to back, and the clients' threads wake once for them.
    tokio::task::yield_now().await;
    // A client that sends requests and reads no answers blocks this write: bounded as hyper's are.
    let written = match shared.options.write_stall_timeout {
        Some(limit) => match tokio::time::timeout(limit, write_response(stream, response)).await {
            Ok(written) => written?,
            Err(_) => {
                shared.metrics.write_stalls.inc();
                tracing::debug!("closing a connection whose writes stayed blocked");
                return Err(std::io::ErrorKind::TimedOut.into());
            }
        },
        None => write_response(stream, response).await?,
    };
    match written {
        Answer::Done { keep_alive: go_on } => keep_alive &= go_on,
        // A publish's answer always has a length: never streamed.
        Answer::Stream { .. } => keep_alive = false,
    }
    Ok((keep_alive, rest))
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
    head::with_date(|date| {
        head::encode_head(&mut encoded, parts.status, &parts.headers, framing, date);
    });
    EncodedResponse {
        head: encoded,
        framing,
        keep_alive: !head::closes_connection(&parts.headers),
        cut_off: parts.extensions.get::<CutOff>().cloned(),
        body,
    }
}

/// Serves the rest of a connection with hyper (HTTP/1 or HTTP/2, with upgrades); hyper must have
/// a request head within `request_within`.
async fn serve_hyper<S: ClientSocket>(
    io: Rewind<S>,
    peer: Peer,
    shared: &ServeContext,
    request_within: Option<Duration>,
) {
    let app = shared.app.clone();
    // Cancelled when hyper has read a request head (it calls the service then).
    let started = CancellationToken::new();
    let first_request = started.clone();
    // The cut-off of the HTTP/1 subscriber stream hyper is writing, if any (see the module docs).
    let watched: Arc<Mutex<Option<CutOff>>> = Arc::default();
    let watch = watched.clone();
    let stall = io.stall.clone();
    let active = Arc::new(Active::default());
    let in_progress = active.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        first_request.cancel();
        request.extensions_mut().insert(peer);
        let http1 = request.version() < http::Version::HTTP_2;
        let watch = watch.clone();
        let request_guard = in_progress.begin();
        let response = app.clone().oneshot(request);
        async move {
            let response = response.await?;
            if http1 {
                *watch.lock() = response.extensions().get::<CutOff>().cloned();
            }
            // The request stays in progress until its response body is done with.
            let response = response.map(|body| {
                axum::body::Body::new(InProgress {
                    body,
                    _guard: request_guard,
                })
            });
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
        () = no_request_within(&started, request_within) => {
            tracing::debug!("closing a connection that sent no complete request in time");
            return;
        }
        // The subscriber stream written here must end (cut off, stalled, or past its deadline):
        // drop the connection.
        () = cut_off(&watched, &stall) => return,
        () = stalled(&stall, shared.options.write_stall_timeout) => {
            shared.metrics.write_stalls.inc();
            tracing::debug!("closing a connection whose writes stayed blocked");
            return;
        }
        () = idle(&active, shared.options.idle_timeout) => {
            shared.metrics.idle_closed.inc();
            tracing::debug!("closing an idle connection");
            // Told to go away (HTTP/2: GOAWAY), but not waited for long: a graceful HTTP/2 close
            // waits for the client to answer a ping, which a hostile client never does.
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(IDLE_CLOSE_GRACE, connection).await;
            return;
        }
        () = shared.shutdown.cancelled() => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

/// How long an idle connection told to go away may take to close before it is dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Requests in progress on one hyper connection, for its idle timeout.
#[derive(Default)]
struct Active {
    count: std::sync::atomic::AtomicUsize,
    /// Notified when the count goes to or from zero.
    changed: Notify,
}

impl Active {
    fn begin(self: &Arc<Self>) -> ActiveGuard {
        if self.count.fetch_add(1, std::sync::atomic::Ordering::AcqRel) == 0 {
            self.changed.notify_waiters();
        }
        ActiveGuard(self.clone())
    }
}

/// One request in progress; dropped with its response body.
struct ActiveGuard(Arc<Active>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if self
            .0
            .count
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel)
            == 1
        {
            self.0.changed.notify_waiters();
        }
    }
}

/// A response body that keeps its request counted as in progress until it is dropped.
struct InProgress {
    body: axum::body::Body,
    _guard: ActiveGuard,
}

impl http_body::Body for InProgress {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Resolves once the connection has had no request in progress for `timeout` (never without one).
async fn idle(active: &Active, timeout: Option<Duration>) {
    let Some(timeout) = timeout else {
        return std::future::pending().await;
    };
    loop {
        let changed = active.changed.notified();
        tokio::pin!(changed);
        // Registered before the count is read, so a change in between is not missed.
        changed.as_mut().enable();
        if active.count.load(std::sync::atomic::Ordering::Acquire) == 0 {
            tokio::select! {
                () = tokio::time::sleep(timeout) => return,
                () = changed => {}
            }
        } else {
            changed.await;
        }
    }
}

/// Resolves once the watched stream must end (see [`CutOff::poll_cut_off`]; `stall` says whether
/// hyper's write is blocked). With nothing watched it registers no waker: it is polled again with
/// the rest of the connection task, which is woken by whatever hyper waits on, and a stream once
/// watched is woken by its cut-off or its alarm.
fn cut_off<'a>(
    watched: &'a Mutex<Option<CutOff>>,
    stall: &'a WriteStall,
) -> impl Future<Output = ()> + 'a {
    std::future::poll_fn(move |cx| match &*watched.lock() {
        Some(cut_off) => cut_off.poll_cut_off(cx, stall.since_ms()).map(|_| ()),
        None => Poll::Pending,
    })
}

/// Resolves once a write has stayed blocked for `limit` (never without one).
async fn stalled(stall: &WriteStall, limit: Option<Duration>) {
    let Some(limit) = limit else {
        return std::future::pending().await;
    };
    let limit_ms = quicksilver_fanout::clock::millis(limit);
    loop {
        let since = stall.since_ms();
        if since == 0 {
            stall.blocked.notified().await;
            continue;
        }
        let blocked_for = now_ms().saturating_sub(since);
        if blocked_for >= limit_ms {
            return;
        }
        tokio::time::sleep(Duration::from_millis(limit_ms - blocked_for)).await;
    }
}

/// Whether a connection's writes are blocked, and since when, shared by its socket ([`Rewind`])
/// and the watchers of the connection task.
#[derive(Default)]
struct WriteStall {
    /// When the current write blocked ([`now_ms`]); 0 while writes go through.
    since_ms: std::sync::atomic::AtomicU64,
    /// Notified when a write blocks after going through.
    blocked: Notify,
}

impl WriteStall {
    fn since_ms(&self) -> u64 {
        self.since_ms.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records the outcome of a write.
    fn record<T>(&self, poll: Poll<T>) -> Poll<T> {
        use std::sync::atomic::Ordering;
        match poll {
            Poll::Pending => {
                if self.since_ms.load(Ordering::Relaxed) == 0 {
                    self.since_ms.store(now_ms(), Ordering::Relaxed);
                    self.blocked.notify_one();
                }
            }
            Poll::Ready(_) => self.since_ms.store(0, Ordering::Relaxed),
        }
        poll
    }
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

/// A connection's stream that first yields bytes already read from it, so hyper parses the
/// connection from its start, and that records whether its writes are blocked.
struct Rewind<S> {
    prefix: Bytes,
    inner: S,
    stall: Arc<WriteStall>,
}

impl<S> Rewind<S> {
    fn new(inner: S, prefix: Bytes) -> Self {
        Self {
            prefix,
            inner,
            stall: Arc::default(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
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

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.stall.record(poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.stall.record(poll)
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
            metrics.clone(),
            ServeOptions {
                grace: Duration::from_secs(1),
                header_read_timeout: Some(Duration::from_secs(5)),
                ..ServeOptions::default()
            },
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
