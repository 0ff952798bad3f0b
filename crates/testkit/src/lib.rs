//! Test support for Quicksilver's integration tests: real processes on free ports, a real SSE client and a
//! JWT minter. Other crates take it as a dev-dependency only; nothing in the hub links it.
//!
//! # Layout
//!
//! - [`token`] signs JWTs with the `mercure` claim (HS256 from a shared secret, RS256 from a PEM key; test
//!   RSA keys ship in `fixtures/`).
//! - [`sse`] is an SSE client over a streaming `reqwest` response, with an incremental parser that follows the
//!   HTML specification's interpretation of `text/event-stream`, and surfaces comments so tests can see the
//!   hub's opening `:` and its heartbeats.
//! - [`hub`] runs the `quicksilver` binary as a child process on a free port, keeps its output for
//!   diagnostics, and signals it (SIGTERM, SIGKILL); [`hub::publish`] posts an update.
//! - [`redis`] runs `redis-server` processes (single, with AOF, cluster-enabled) in temporary directories on
//!   free ports, and forms a Redis Cluster from several of them.
//! - [`browser`] drives `tests/browser/eventsource-cookie.mjs`: headless Chromium opening an `EventSource`
//!   with the `mercureAuthorization` cookie against a hub on another origin.
//!
//! # Rules this crate keeps
//!
//! Every wait is bounded by a timeout; every child process it starts is killed when its handle drops (so a
//! failing test leaves nothing running); ports come from the OS, never from a fixed list; there is no global
//! state shared between tests.

use std::net::TcpListener;
use std::time::Duration;

pub mod browser;
pub mod hub;
pub mod redis;
pub mod sse;
pub mod token;

pub use hub::{publish, HubProcess};
pub use redis::{RedisCluster, RedisServer};
pub use sse::{SseClient, SseEvent, SseItem, SseStream};
pub use token::mercure_token;

/// A generous bound for something that should happen promptly (a delivery, a connection), sized for a loaded
/// 2-core CI machine rather than for a fast laptop.
pub const WAIT: Duration = Duration::from_secs(10);

/// How long to watch for something that must *not* happen (an update that should not be delivered).
pub const SHORT: Duration = Duration::from_millis(300);

/// A TCP port on 127.0.0.1 that was free a moment ago: the OS picks it for a listener that is then closed.
///
/// Another process may take the port before the caller binds it, so callers that start a server on it retry
/// with a new port when the bind fails (as [`RedisServer`] does). Prefer letting a server bind `127.0.0.1:0`
/// itself and report its port, as [`HubProcess`] does.
pub fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("the OS should hand out a free port on 127.0.0.1")
}

/// An HTTP client for tests: no idle connection pooling (each request gets its own connection, so a test
/// never reuses a connection a previous hub closed) and a connect timeout.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("a reqwest client with default TLS-less settings builds")
}
