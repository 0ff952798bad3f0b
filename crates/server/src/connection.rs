//! The accept loop: one task per TCP connection, each closable on its own.
//!
//! axum's `serve` cannot drop one particular connection, and a subscriber that stopped reading
//! must be dropped: hyper only polls a response body when the socket can take more bytes, so a
//! stalled client would keep its socket, hyper's buffers and its queued updates for as long as it
//! likes. Every connection therefore gets a [`ConnectionCloser`] (a cancellation token, put in the
//! request's extensions); the fan-out cancels it when it cuts the subscriber off, and the
//! connection's task then drops the connection at once.
//!
//! A connection must send a complete request head within the header read timeout
//! (`--header-read-timeout`), or it is closed: otherwise a client trickling its headers a byte at a
//! time, or connecting and sending nothing (slowloris), holds a socket, a task and a read buffer for
//! as long as it likes, and a few thousand of them exhaust the file descriptors normal clients need.
//! hyper enforces the timeout on HTTP/1 request heads (it needs a timer for that: [`TokioTimer`]);
//! the first request of a connection is bounded here too, because before hyper sees it the
//! connection sits in the HTTP/1-or-HTTP/2 detection, which has no timeout of its own, and an
//! HTTP/2 client could send its preface and then no request at all.
//!
//! The listener is bound with a large backlog so a reconnection storm (thousands of clients of a
//! dead node arriving at once) waits in the kernel's queue instead of being dropped and retried
//! after the SYN timeout.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Pending connections the kernel may queue for `accept` (capped by `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;

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
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder.http2().timer(TokioTimer::new());
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
        let app = app.clone();
        let extension = ConnectionCloser(closer.clone());
        // Cancelled when the first request head has been read (hyper calls the service then).
        let started = CancellationToken::new();
        let first_request = started.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            first_request.cancel();
            request.extensions_mut().insert(extension.clone());
            app.clone().oneshot(request)
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        let open = open_connections.clone();
        open.inc();
        tokio::spawn(async move {
            tokio::select! {
                _ = connection => {}
                () = closer.cancelled() => {}
                () = no_request_within(&started, header_read_timeout) => {
                    tracing::debug!("closing a connection that sent no complete request in time");
                }
            }
            open.dec();
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!("connections still open after the shutdown grace period");
        }
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
