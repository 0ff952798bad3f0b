//! The accept loop: one task per TCP connection, each closable on its own.
//!
//! axum's `serve` cannot drop one particular connection, and a subscriber that stopped reading
//! must be dropped: hyper only polls a response body when the socket can take more bytes, so a
//! stalled client would keep its socket, hyper's buffers and its queued updates for as long as it
//! likes. Every connection therefore gets a [`ConnectionCloser`] (a cancellation token, put in the
//! request's extensions); the fan-out cancels it when it cuts the subscriber off, and the
//! connection's task then drops the connection at once.
//!
//! The listener is bound with a large backlog so a reconnection storm (thousands of clients of a
//! dead node arriving at once) waits in the kernel's queue instead of being dropped and retried
//! after the SYN timeout.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
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
/// `grace`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    stop: impl Future<Output = ()>,
    grace: Duration,
    open_connections: Gauge,
) {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
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
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
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
