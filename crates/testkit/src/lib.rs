//! Test support for Quicksilver's integration tests: hubs in the test's process and as child processes,
//! `redis-server` processes, a real SSE client, JWT minting and one way to wait. Other crates take it as a
//! dev-dependency only; nothing in the hub links it.
//!
//! # Layout
//!
//! - `in_process` (feature `in-process`): `spawn_hub` runs a hub on the test's runtime on a free port and
//!   returns its address and a shutdown handle; `HubRouter` calls the hub's router without a socket, for
//!   tests of status codes and headers.
//! - [`hub`] runs the `quicksilver` binary as a child process on a free port, keeps its output for
//!   diagnostics, and signals it (SIGTERM, SIGKILL); [`publish`] posts an update to any hub over HTTP and
//!   [`hub::metric`] reads one of its metrics.
//! - [`sse`] is an SSE client over a streaming `reqwest` response, parsed by the `quicksilver-event-stream`
//!   crate (the HTML specification's reading of an event stream, comments surfaced so tests can see the
//!   hub's opening `:` and its heartbeats).
//! - [`token`] signs JWTs: `mercure`-claim tokens (HS256 from a shared secret, RS256 from a PEM key; test RSA
//!   keys ship in `fixtures/`), `at+jwt` access tokens with `authorization_details`, and hand-forged ones.
//! - [`redis`] runs `redis-server` processes (single, with AOF, cluster-enabled, TLS with ACL users) in
//!   temporary directories on free ports, forms a Redis Cluster from several of them, and talks to them
//!   with the `redis` crate.
//! - [`follower`]: a subscriber that reconnects across a cluster's nodes with `Last-Event-ID`, as a
//!   browser does, and records what it received, how often it reconnected and how often it was told
//!   (`earliest`) that it may have missed updates.
//! - [`tls`]: a certificate authority made in the test, server certificates it signs, their PEM files
//!   (replaced as a renewal does) and HTTPS clients that trust it, for hubs serving TLS themselves.
//! - [`browser`] drives `tests/browser/eventsource-cookie.mjs`: headless Chromium opening an `EventSource`
//!   with the `mercureAuthorization` cookie against a hub on another origin.
//! - This file: [`wait_until`] and [`poll_until`] (the one way to wait for a condition), the [`update`]
//!   constructor, free ports, the test HTTP client and the standard waits [`WAIT`] and [`SHORT`].
//!
//! # Why the test kit depends on the server
//!
//! An in-process hub needs the server's `Config`, `Server` and router. Cargo allows the test kit to depend
//! on the server while the server dev-depends on the test kit: the server's integration tests then link one
//! copy of the server crate, so `spawn_hub` is one call with the hub's own command line and no glue in
//! the tests. Taking the server's start function generically instead would have kept the test kit below
//! the server, but every server test would again carry an adapter of its own, which is what this crate
//! replaces. The dependency sits behind the `in-process` feature, which only the server's tests turn on,
//! so the crates below the server (the transport's tests use [`RedisServer`]) use the rest of the kit
//! without building the server or forming a dependency cycle through their own crate.
//!
//! # Rules this crate keeps
//!
//! Every wait is bounded by a timeout; every child process it starts is killed when its handle drops (so a
//! failing test leaves nothing running); ports come from the OS, never from a fixed list; there is no global
//! state shared between tests.

use std::net::TcpListener;
use std::time::Duration;

use quicksilver_protocol::Update;

pub mod browser;
pub mod follower;
pub mod hub;
#[cfg(feature = "in-process")]
pub mod in_process;
pub mod redis;
pub mod sse;
pub mod tls;
pub mod token;

pub use follower::{Followed, Follower};
pub use hub::{publish, HubProcess};
#[cfg(feature = "in-process")]
pub use in_process::{spawn_hub, Answer, HubRouter, InProcessHub};
pub use redis::{RedisCluster, RedisServer};
pub use sse::{SseClient, SseEvent, SseItem, SseStream};
pub use tls::{CertificateFiles, TestCa};
pub use token::{mercure_token, TEST_JWT_KEY};

/// A generous bound for something that should happen promptly (a delivery, a connection), sized for a loaded
/// 2-core CI machine rather than for a fast laptop.
pub const WAIT: Duration = Duration::from_secs(10);

/// How long to watch for something that must *not* happen (an update that should not be delivered).
pub const SHORT: Duration = Duration::from_millis(300);

/// Flags of a hub whose transport can never store: Redis on port 1, where nothing listens, with a short
/// timeout. Its publishes are answered 503.
pub const UNREACHABLE_REDIS: [&str; 6] = [
    "--transport",
    "redis",
    "--redis-url",
    "redis://127.0.0.1:1",
    "--redis-timeout",
    "200ms",
];

/// How often [`poll_until`] checks its condition.
pub const POLL: Duration = Duration::from_millis(20);

/// Checks `condition` at once and then every [`POLL`] until it holds, for at most `timeout`; whether it
/// held. The clock is Tokio's, so a test on a paused clock advances it instead of sleeping.
pub async fn poll_until(timeout: Duration, mut condition: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`poll_until`] that panics, naming `what` was waited for, when `condition` does not hold within
/// `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, condition: impl AsyncFnMut() -> bool) {
    assert!(
        poll_until(timeout, condition).await,
        "timed out after {timeout:?} waiting for {what}"
    );
}

/// A public update `id` on `topics` (the first canonical) carrying `data`, without type or retry. Set the
/// rest with struct update syntax: `Update { private: true, ..update("a", &["t"], "x") }`.
pub fn update(id: &str, topics: &[&str], data: &str) -> Update {
    Update {
        id: id.to_owned(),
        topics: topics.iter().map(|t| t.to_string()).collect(),
        data: data.to_owned(),
        private: false,
        event_type: None,
        retry: None,
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn poll_until_checks_until_the_condition_holds_or_time_is_up() {
        let mut checks = 0;
        assert!(
            poll_until(WAIT, async || {
                checks += 1;
                checks == 3
            })
            .await
        );
        assert_eq!(checks, 3, "checked at once, then every POLL");
        let started = tokio::time::Instant::now();
        assert!(!poll_until(Duration::from_secs(1), async || false).await);
        assert!(started.elapsed() >= Duration::from_secs(1));
        assert!(started.elapsed() < Duration::from_secs(1) + 2 * POLL);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "timed out after 1s waiting for the impossible")]
    async fn wait_until_names_what_never_happened() {
        wait_until("the impossible", Duration::from_secs(1), async || false).await;
    }
}
