//! Quicksilver's server: the HTTP face of the hub and the `quicksilver` binary's machinery.
//!
//! This is the only crate that knows all the others. Requests come in through axum routes,
//! are authenticated with [`quicksilver_auth`], parsed with [`quicksilver_protocol`], stored through
//! a [`quicksilver_transport`] and delivered by the [`quicksilver_fanout`] to subscriber streams.
//!
//! # Layout
//! - [`config`]: every flag and environment variable, with defaults; in their own files below it,
//!   the configuration file, the reference hub's environment (`MERCURE_EXTRA_DIRECTIVES`,
//!   `SERVER_NAME`, its image's command line) and trusted issuers (`--issuer`).
//! - [`hub`]: the shared state and the wiring of transport reader → fan-out.
//! - [`auth`]: the bridge from HTTP requests to the auth crate's one entry
//!   ([`quicksilver_auth::Verifier::authenticate`]), and the hub's identity (resource identifier)
//!   for each request; [`jwks`] keeps issuers' JWK Sets current.
//! - [`discovery`]: the protected resource metadata document and the hub's `Link` header.
//! - [`debugger`]: the page at `/.well-known/mercure/debug/` for trying the hub from a browser;
//!   [`playground`]: its development-only companion (a prefilled token, echo endpoints).
//! - [`publish`] and [`subscribe`]: the two Mercure endpoints; [`ids`]: the random `urn:uuid:`
//!   identifiers they give updates and subscribers.
//! - [`sse`]: the subscriber's way out: the accept loop and connection tasks, the lean HTTP/1.1
//!   path, the stream writer and a subscriber's SSE response body.
//! - [`tls`]: the listener's certificate (`--tls-cert`, `--tls-key`), reloaded when its files
//!   change, and ALPN (HTTP/2 for browsers that reach a node directly).
//! - [`subscriptions`]: subscription events and the subscription API, cluster-wide.
//! - [`client`]: who a request comes from (the peer, or behind `--trusted-proxies` the forwarded
//!   address) and how many connections each client address holds.
//! - [`policies`]: rate limits, per-subject caps, revocation and retention rules from the
//!   configuration file's policy tables, reloaded on `SIGHUP`.
//! - [`cors`]: cross-origin rules for browser publishers and subscribers.
//! - [`metrics`]: the Prometheus metrics and `GET /metrics`.
//! - [`telemetry`]: the log subscriber and OpenTelemetry trace export (off unless configured).
//! - [`error`]: request failures and their HTTP answers, among them the status and
//!   `WWW-Authenticate` challenge of every authentication failure.
//! - [`healthcheck`]: `quicksilver healthcheck`, the container runtime's probe of a running hub.
//! - [`token`]: `quicksilver token`, which mints tokens in either generation.
//! - [`revoke`]: `quicksilver revoke`, which revokes tokens on a running hub (or lists or lifts
//!   revocations) through its admin endpoint.
//! - [`serve`] (this file): the router, the listener and graceful shutdown.

pub mod auth;
pub mod client;
pub mod config;
pub mod cors;
pub mod debugger;
pub mod discovery;
pub mod error;
pub mod healthcheck;
pub mod hub;
pub mod ids;
pub mod jwks;
pub mod metrics;
pub mod playground;
pub mod policies;
pub mod publish;
pub mod revoke;
pub mod sse;
pub mod subscribe;
pub mod subscriptions;
pub mod telemetry;
pub mod tls;
pub mod token;

use std::future::Future;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::get;
use axum::Router;
use http::StatusCode;
use tokio::net::TcpListener;

pub use config::Config;
pub use hub::Hub;

/// The path of the Mercure endpoint.
pub const HUB_PATH: &str = "/.well-known/mercure";

/// How long shutdown waits, after the drain, for connections to finish before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Builds the router for `hub`.
pub fn router(hub: Hub, config: &Config) -> anyhow::Result<Router> {
    let mercure = get(subscribe::subscribe)
        .post(publish::publish)
        // QUERY (subscribe with a body) and the 405 of every other method.
        .fallback(subscribe::other_method)
        .layer(DefaultBodyLimit::max(hub.settings().max_body_size));
    let mut router = Router::new()
        .route(HUB_PATH, mercure)
        .route(discovery::METADATA_PATH, get(discovery::metadata))
        .route(
            "/.well-known/mercure/subscriptions",
            get(subscriptions::api::subscriptions),
        )
        .route(
            "/.well-known/mercure/subscriptions/{*rest}",
            get(subscriptions::api::subscriptions),
        )
        // Answers 404 while revocation is off (no admin key), like any path the hub does not serve.
        .route(
            policies::revocation::admin::PATH,
            get(policies::revocation::admin::list)
                .post(policies::revocation::admin::revoke)
                .delete(policies::revocation::admin::lift),
        );
    if config.debug_page {
        router = router
            .route(debugger::PATH, get(debugger::page))
            .route(debugger::CONFIG_PATH, get(debugger::config))
            .route(
                debugger::PATH.trim_end_matches('/'),
                get(debugger::redirect),
            )
            .route("/", get(debugger::redirect));
    }
    if config.playground {
        router = router
            .route(playground::TOKEN_PATH, get(playground::token))
            .route(
                &format!("{}{{*resource}}", playground::ECHO_PREFIX),
                get(playground::echo),
            );
    }
    if config.metrics_addr.is_none() {
        // With a listener of their own (`--metrics-addr`), the internal endpoints are only
        // there: what the public port answers is the hub, and probes and scrapes are not held up
        // by its limits or its accept queue during a reconnection storm.
        router = router
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics::metrics));
    }
    Ok(router
        .layer(axum::middleware::from_fn_with_state(
            hub.clone(),
            metrics::count_responses,
        ))
        .layer(cors::layer(&config.cors_origins)?)
        .with_state(hub))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(hub): State<Hub>) -> (StatusCode, &'static str) {
    if hub.is_ready() {
        (StatusCode::OK, "ready\n")
    } else if hub.is_shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "transport unavailable\n")
    }
}

/// A bound, not yet running hub server: [`Server::bind`] then [`Server::run`]. Tests bind to
/// `127.0.0.1:0` and read [`Server::local_addr`].
pub struct Server {
    hub: Hub,
    app: Router,
    publish: std::sync::Arc<publish::LeanPublish>,
    listener: TcpListener,
    tls: Option<tls::Tls>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("hub", &self.hub)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Builds the hub (starting its background tasks) and binds the listener (and the separate
    /// metrics listener, when configured).
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        for notice in &config.notices {
            match notice.level {
                config::NoticeLevel::Info => tracing::info!("{}", notice.message),
                config::NoticeLevel::Warn => tracing::warn!("{}", notice.message),
            }
        }
        let hub = Hub::start(config)?;
        if let Some(addr) = config.metrics_addr {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for metrics: {e}"))?;
            let metrics_app = Router::new()
                .route("/metrics", get(metrics::metrics))
                .route("/healthz", get(healthz))
                .route("/readyz", get(readyz))
                .with_state(hub.clone());
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, metrics_app).await {
                    tracing::error!(error = %e, "metrics listener stopped");
                }
            });
        }
        let app = router(hub.clone(), config)?;
        // The router's CORS rules, for the publishes answered outside it.
        let publish = publish::LeanPublish::new(hub.clone(), &cors::layer(&config.cors_origins)?);
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => {
                let metrics = hub.metrics().connection.tls.clone();
                Some(tls::Tls::load(cert, key, metrics)?)
            }
            _ => None,
        };
        let listener = sse::accept::bind(config.listen)
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        Ok(Self {
            hub,
            app,
            publish: std::sync::Arc::new(publish),
            listener,
            tls,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Whether the listener serves TLS (`https://`).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The hub this server serves.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Serves until `shutdown` resolves, then stops taking subscribers, ends the open streams and
    /// waits (bounded) for connections to close.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Server {
            hub,
            app,
            publish,
            listener,
            tls,
        } = self;
        // Reads the certificate files again while the server runs.
        let reloading = tls.clone().map(|tls| tokio::spawn(tls.watch()));
        let policy_reloads = tokio::spawn(hub.policy_cell().clone().reload_on_hangup());
        let connection_metrics = hub.metrics().connection.clone();
        let settings = hub.settings();
        let options = sse::accept::ServeOptions {
            grace: SHUTDOWN_GRACE,
            header_read_timeout: settings.header_read_timeout,
            write_stall_timeout: settings.write_stall_timeout,
            idle_timeout: settings.idle_timeout,
            max_connections: settings.max_connections,
            client_counts: hub.clients().clone(),
            trusted_proxies: settings.trusted_proxies.clone(),
            http2_max_streams: settings.http2_max_streams,
            http2_keep_alive: settings.http2_keep_alive,
            tls,
            publish: Some(publish),
        };
        let closing = hub.clone();
        let stop = async move {
            shutdown.await;
            hub.drain().await;
        };
        sse::accept::serve(listener, app, stop, connection_metrics, options).await;
        if let Some(reloading) = reloading {
            reloading.abort();
        }
        policy_reloads.abort();
        closing.close().await;
        tracing::info!("hub stopped");
        Ok(())
    }
}

/// Runs the hub of `config` until `shutdown` resolves. Prints `quicksilver listening on
/// http://ADDR` (`https://` with `--tls-cert`) on standard output once bound (scripts and tests
/// wait for that line).
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let server = Server::bind(&config).await?;
    let addr = server.local_addr()?;
    let scheme = if server.is_tls() { "https" } else { "http" };
    println!("quicksilver listening on {scheme}://{addr}");
    tracing::info!(%addr, transport = server.hub().transport().name(), "hub started");
    server.run(shutdown).await
}
