//! Prometheus metrics: what operators watch on every node, served at `GET /metrics`.
//!
//! Request-path measurements (publishes, replays, delivery latency, HTTP responses) are recorded
//! into `prometheus-client` metrics as they happen. Values other crates already count with atomics
//! (the fan-out's subscribers and deliveries, the transport's reader and cache counters) are read at
//! scrape time by [`HubCollector`], so the hot paths never pay twice. Every name starts with
//! `quicksilver_`; the README's metrics reference lists them.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use quicksilver_fanout::{Fanout, ReplayBudget};
use quicksilver_protocol::SelectorStore;
use quicksilver_transport::{SubscriptionRegistry, Transport};

mod latency;

pub use latency::LatencyHistogram;

use crate::auth::TokenCaches;
use crate::hub::Hub;
use crate::policies::PolicyCell;
use crate::sse::accept::ConnectionMetrics;

/// Labels of the HTTP responses counter. Every value comes from a closed set, so nothing a client
/// sends becomes a new time series: the route is one of the router's templates or `other`, the
/// method one the hub serves or `other`, the status one the hub chose.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResponseLabels {
    /// The matched route template (`/.well-known/mercure`, `/healthz`, …; `other` otherwise).
    pub route: String,
    /// The request method: one of [`METHODS`], else `other`.
    pub method: &'static str,
    /// The response status code.
    pub status: u16,
}

/// The methods counted under their own name; any other is counted as `other`.
pub const METHODS: [&str; 6] = ["GET", "HEAD", "POST", "OPTIONS", "QUERY", "DELETE"];

/// The label of `method`: its name if the hub serves it, else `other`.
fn method_label(method: &http::Method) -> &'static str {
    METHODS
        .into_iter()
        .find(|m| *m == method.as_str())
        .unwrap_or("other")
}

/// The metrics recorded on request paths.
pub struct Metrics {
    registry: Registry,
    /// Updates acknowledged to publishers.
    pub published: Counter,
    /// Updates sent from history to reconnecting subscribers.
    pub replayed: Counter,
    /// Time to store an update (the transport's publish), in seconds.
    pub publish_duration: Histogram,
    /// From acceptance by the publishing node to the write to a subscriber's connection, in seconds.
    pub delivery_latency: LatencyHistogram,
    /// HTTP responses by route, method and status.
    pub responses: Family<ResponseLabels, Counter>,
    /// Subscriptions refused because their selectors were over a memory budget.
    pub selectors_refused: Counter,
    /// The accept loop's connection metrics (open connections, lean requests, refusals, closes).
    pub connection: ConnectionMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Histogram buckets from 100 µs to about 6.5 s, doubling.
fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 17)
}

impl Metrics {
    /// Creates the metrics and registers them, with a collector reading `fanout` and `transport`.
    pub fn new(
        fanout: Fanout,
        transport: Arc<dyn Transport>,
        subscriptions: Option<Arc<dyn SubscriptionRegistry>>,
        replay_budget: Arc<ReplayBudget>,
        selectors: Arc<SelectorStore>,
        token_caches: TokenCaches,
        policies: &PolicyCell,
    ) -> Self {
        let mut registry = Registry::with_prefix("quicksilver");
        policies.register_metrics(&mut registry);
        let published = Counter::default();
        let replayed = Counter::default();
        let publish_duration = Histogram::new(latency_buckets());
        let delivery_latency = LatencyHistogram::default();
        let responses = Family::<ResponseLabels, Counter>::default();
        let connection = ConnectionMetrics {
            delivery_latency: Some(delivery_latency.clone()),
            ..ConnectionMetrics::default()
        };
        registry.register(
            "connections",
            "Open client connections on the main listener",
            connection.open.clone(),
        );
        registry.register(
            "lean_requests",
            "Requests answered on the lean HTTP/1.1 path, without hyper's per-connection buffers",
            connection.lean_requests.clone(),
        );
        let selectors_refused = Counter::default();
        registry.register(
            "selector_budget_refusals",
            "Subscriptions refused because their selectors would exceed --max-selector-memory (503) or --max-subscription-selector-memory (413)",
            selectors_refused.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections answered 503 because the node held --max-connections",
            connection.refused.clone(),
        );
        registry.register(
            "connections_refused_per_client",
            "Connections answered 429 because their client address held --max-connections-per-client",
            connection.refused_per_client.clone(),
        );
        registry.register(
            "connections_write_stalled",
            "Connections closed because their writes stayed blocked longer than the dispatch timeout",
            connection.write_stalls.clone(),
        );
        registry.register(
            "connections_idle_closed",
            "Connections closed after --idle-timeout without a request in progress",
            connection.idle_closed.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed (a client that is not TLS, or refused the certificate or protocols)",
            connection.tls.handshake_failures.clone(),
        );
        registry.register(
            "tls_handshake_timeouts",
            "Connections closed because their TLS handshake did not finish within --header-read-timeout",
            connection.tls.handshake_timeouts.clone(),
        );
        registry.register(
            "tls_plaintext_requests",
            "Plain-HTTP requests to the TLS listener, answered 400",
            connection.tls.plaintext_refused.clone(),
        );
        registry.register(
            "tls_certificate_reloads",
            "Certificates loaded again after --tls-cert or --tls-key changed",
            connection.tls.reloads.clone(),
        );
        registry.register(
            "tls_certificate_reload_failures",
            "Changed --tls-cert / --tls-key files that could not be used (the previous certificate stays)",
            connection.tls.reload_failures.clone(),
        );
        registry.register(
            "updates_published",
            "Updates acknowledged to publishers",
            published.clone(),
        );
        registry.register(
            "updates_replayed",
            "Updates sent from history to reconnecting subscribers",
            replayed.clone(),
        );
        registry.register(
            "publish_duration_seconds",
            "Time for the transport to store an update",
            publish_duration.clone(),
        );
        registry.register(
            "delivery_latency_seconds",
            "From acceptance by the publishing node to the write to a subscriber connection",
            delivery_latency.clone(),
        );
        registry.register(
            "http_responses",
            "HTTP responses by route, method and status",
            responses.clone(),
        );
        registry.register_collector(Box::new(HubCollector {
            fanout,
            transport,
            subscriptions,
            replay_budget,
            selectors,
            token_caches,
        }));
        Self {
            registry,
            published,
            replayed,
            publish_duration,
            delivery_latency,
            responses,
            connection,
            selectors_refused,
        }
    }

    /// The registry, for parts of the hub that register their own metrics when the hub is built.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Reads the fan-out's and the transport's own counters at scrape time.
struct HubCollector {
    fanout: Fanout,
    transport: Arc<dyn Transport>,
    subscriptions: Option<Arc<dyn SubscriptionRegistry>>,
    replay_budget: Arc<ReplayBudget>,
    selectors: Arc<SelectorStore>,
    token_caches: TokenCaches,
}

impl std::fmt::Debug for HubCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubCollector")
            .field("transport", &self.transport.name())
            .finish_non_exhaustive()
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> std::fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for HubCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let s = self.fanout.stats();
        let load = |a: &std::sync::atomic::AtomicI64| a.load(Ordering::Relaxed);
        let token_caches = self.token_caches.stats();
        for (name, help, value) in [
            (
                "token_cache_hits",
                "Tokens found in the verified-token cache and used without verifying them again",
                (|s: &quicksilver_auth::TokenCacheStats| s.hits) as fn(&_) -> u64,
            ),
            (
                "token_cache_misses",
                "Tokens verified in full (not in the verified-token cache, expired, or under replaced keys)",
                |s| s.misses,
            ),
        ] {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (role, stats) in &token_caches {
                let labels = [("role", *role)];
                ConstCounter::new(value(stats)).encode(family.encode_family(&labels)?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "token_cache_entries",
                "Verified tokens remembered (bounded by --token-cache-size per role)",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for (role, stats) in &token_caches {
                let labels = [("role", *role)];
                ConstGauge::new(stats.entries as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        gauge(
            &mut encoder,
            "subscribers",
            "Subscribers connected to this node",
            load(&s.subscribers),
        )?;
        {
            let metric_name = "subscriptions";
            let mut family = encoder.encode_descriptor(
                metric_name,
                "Registered topic selectors by matcher kind",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for (kind, value) in [
                ("exact", load(&s.matchers_exact)),
                ("wildcard", load(&s.matchers_wildcard)),
                ("template", load(&s.matchers_template)),
                ("urlpattern", load(&s.matchers_urlpattern)),
            ] {
                let labels = [("kind", kind)];
                ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        counter(
            &mut encoder,
            "updates_delivered",
            "Updates handed to subscribers (one per subscriber per update)",
            s.delivered.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "updates_written_directly",
            "Of the updates delivered, those the fan-out wrote to the subscriber's socket itself, without waking its stream",
            s.written_directly.load(Ordering::Relaxed),
        )?;
        gauge(
            &mut encoder,
            "io_uring_shards",
            "Fan-out shards sending their direct writes through io_uring (--io-uring)",
            s.ring_shards.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "io_uring_sends",
            "Direct writes to subscriber sockets sent through a shard's io_uring submissions",
            s.ring_sends.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "io_uring_fallbacks",
            "Fan-out shards that asked for io_uring and could not have it, or lost it: they write one at a time",
            s.ring_fallbacks.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "slow_subscriber_disconnections",
            "Subscribers cut off because their queue was full",
            s.lagged_disconnects.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "stalled_writer_disconnections",
            "Subscribers cut off because their writes stayed blocked longer than the dispatch timeout (also counted as slow)",
            s.stalled_disconnects.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "gap_disconnections",
            "Subscriber streams ended because updates were lost before this node read them",
            s.gap_disconnects.load(Ordering::Relaxed),
        )?;
        gauge(
            &mut encoder,
            "selector_memory_bytes",
            "Estimated memory of the live compiled topic selectors (bounded by --max-selector-memory)",
            self.selectors.memory_used() as i64,
        )?;
        gauge(
            &mut encoder,
            "replay_buffer_bytes",
            "Bytes of replay batches held now (bounded by --max-replay-buffer)",
            self.replay_budget.used() as i64,
        )?;
        counter(
            &mut encoder,
            "replay_unbatched_frames",
            "History frames replayed one at a time because --max-replay-buffer was spent",
            self.replay_budget.unbatched(),
        )?;
        let t = self.transport.stats();
        gauge(
            &mut encoder,
            "transport_ready",
            "1 when the transport can store and read updates",
            i64::from(self.transport.is_ready()),
        )?;
        gauge(
            &mut encoder,
            "transport_reader_lag_entries",
            "Stream entries stored but not yet read by this node",
            t.reader_lag as i64,
        )?;
        gauge(
            &mut encoder,
            "transport_partitions_read",
            "Partitions (streams of updates) this node reads now: those its subscribers may match",
            t.partitions_read as i64,
        )?;
        gauge(
            &mut encoder,
            "transport_reader_connections",
            "Connections this node's readers hold to the transport (one per group of partitions read together)",
            t.reader_connections as i64,
        )?;
        counter(
            &mut encoder,
            "transport_append_round_trips",
            "Round trips that carried publishes to the transport's store (concurrent publishes to one partition share one)",
            t.append_round_trips,
        )?;
        counter(
            &mut encoder,
            "transport_appends",
            "Publishes' appends carried by those round trips",
            t.appends,
        )?;
        counter(
            &mut encoder,
            "transport_reader_reconnects",
            "Reader reconnections to the transport",
            t.reader_reconnects,
        )?;
        counter(
            &mut encoder,
            "transport_errors",
            "Errors talking to the transport's store (Redis)",
            t.errors,
        )?;
        counter(
            &mut encoder,
            "history_cache_hits",
            "History requests answered from memory",
            t.history_cache_hits,
        )?;
        counter(
            &mut encoder,
            "history_cache_misses",
            "History requests that scanned the store",
            t.history_cache_misses,
        )?;
        counter(
            &mut encoder,
            "transport_epoch_changes",
            "Streams found recreated (history lost)",
            t.epoch_changes,
        )?;
        counter(
            &mut encoder,
            "transport_gaps",
            "Times this node's reader found updates lost before it read them (trimmed, recreated, rolled back)",
            t.gaps,
        )?;
        counter(
            &mut encoder,
            "transport_missed_entries",
            "Updates lost before this node's reader read them, as far as they could be counted",
            t.missed_entries,
        )?;
        let classes = self.transport.retention_stats();
        gauge(
            &mut encoder,
            "retention_classes",
            "Retention classes in force: the global history and each distinct window of the [[retention]] rules",
            classes.len() as i64,
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "retention_published",
                "Updates this node published per retention class (each class an update's topics belong to; per partition copy)",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for stats in &classes {
                let labels = [("class", &*stats.class)];
                ConstCounter::new(stats.stored).encode(family.encode_family(&labels)?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "retention_held",
                "Updates per retention class this node holds in memory (in-memory history, or tail caches of the Redis history)",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for stats in &classes {
                let labels = [("class", &*stats.class)];
                ConstGauge::new(stats.held as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        if let Some(registry) = &self.subscriptions {
            let r = registry.stats();
            gauge(
                &mut encoder,
                "active_subscriptions",
                "Subscriptions this node holds in the cluster registry (--subscriptions)",
                r.local_records as i64,
            )?;
            counter(
                &mut encoder,
                "subscriptions_reaped",
                "Subscriptions of dead nodes this node ended",
                r.orphans_reaped,
            )?;
            counter(
                &mut encoder,
                "subscription_registry_errors",
                "Failed subscription registry operations",
                r.errors,
            )?;
        }
        Ok(())
    }
}

/// `GET /metrics`.
pub async fn metrics(State(hub): State<Hub>) -> Response {
    match hub.metrics().encode() {
        Ok(text) => {
            let mut response = text.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Middleware counting responses by route, method and status.
pub async fn count_responses(State(hub): State<Hub>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_string(), |p| p.as_str().to_string());
    let method = request.method().clone();
    let response = next.run(request).await;
    count_response(&hub, route, &method, response.status());
    response
}

/// Counts one response to `method` on `route`: by [`count_responses`] for the router, and by the
/// lean publish path (see [`crate::publish`]) for the requests it answers outside it.
pub fn count_response(hub: &Hub, route: String, method: &http::Method, status: StatusCode) {
    response_counter(hub, route, method, status).inc();
}

/// The counter of responses to `method` on `route` with `status` (created at its first use), for
/// a caller that keeps it rather than looking it up for every response.
pub fn response_counter(
    hub: &Hub,
    route: String,
    method: &http::Method,
    status: StatusCode,
) -> Counter {
    hub.metrics()
        .responses
        .get_or_create(&ResponseLabels {
            route,
            method: method_label(method),
            status: status.as_u16(),
        })
        .clone()
}
