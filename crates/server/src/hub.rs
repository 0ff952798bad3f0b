//! The hub: the state every request handler shares.
//!
//! A [`Hub`] is a cheap handle (one `Arc`) to the transport, the local fan-out, the selector cache,
//! the token verifiers and the settings. [`Hub::start`] wires them: it starts the fan-out's shard
//! tasks and the transport's reader, whose updates flow into the fan-out through `FanoutSink`.
//! Those tasks live as long as the runtime; on shutdown, [`Hub::drain`] stops new work and closes
//! the local subscriptions a few at a time so their streams end, then [`Hub::close`] publishes the
//! last subscription events.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::Authenticator;
use async_trait::async_trait;
use quicksilver_fanout::{Fanout, FanoutConfig, ReplayBudget};
use quicksilver_protocol::{Envelope, PublishLimits, SelectorStore, SubscribeLimits};
use quicksilver_transport::limits::redis::LimiterOptions;
use quicksilver_transport::{Gap, Window};
use quicksilver_transport::{
    Limiter, MemoryLimiter, MemoryRegistry, MemoryRevocations, MemoryTransport, RedisConfig,
    RedisTransport, RegistryOptions, RevocationStore, SubscriptionRegistry, Transport, UpdateSink,
};

use crate::client::{ClientCounts, TrustedProxies};
use crate::config::{Config, TransportKind};
use crate::metrics::Metrics;
use crate::playground::PlaygroundSigner;
use crate::policies::limits::Limits;
use crate::policies::revocation::{RevocationSet, Revocations};
use crate::policies::{Policies, PolicyCell};
use crate::subscriptions::Subscriptions;

/// The longest a new subscription waits for its events' turn (`--subscription-event-rate`)
/// before it is refused with `503`.
const SUBSCRIPTION_EVENT_PATIENCE: Duration = Duration::from_secs(10);

/// Bytes a Redis stream entry may take beyond the update's own fields (format, timestamps, trace
/// context).
const ENTRY_FRAMING: usize = 4 * 1024;

/// The transport and the cluster-wide state kept beside it: the subscription registry, the
/// limiter's counters and the revocations.
type TransportParts = (
    Arc<dyn Transport>,
    Arc<dyn SubscriptionRegistry>,
    Arc<dyn Limiter>,
    Arc<dyn RevocationStore>,
);

/// Settings the handlers read on every request, resolved once from the [`Config`].
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// Whether subscribers without a token are accepted.
    pub anonymous: bool,
    /// Heartbeat interval on idle streams (`None`: none).
    pub heartbeat: Option<Duration>,
    /// Maximum connection life (`None`: unlimited).
    pub write_timeout: Option<Duration>,
    /// Publish form limits.
    pub publish_limits: PublishLimits,
    /// Subscription query limits.
    pub subscribe_limits: SubscribeLimits,
    /// Bytes one subscription's own compiled selectors may take.
    pub max_subscription_selector_memory: usize,
    /// Maximum publish body size in bytes.
    pub max_body_size: usize,
    /// Maximum number of TCP connections on this node.
    pub max_connections: usize,
    /// Maximum number of subscribers on this node.
    pub max_subscribers: usize,
    /// Time over which streams are closed when draining.
    pub drain_window: Duration,
    /// `retry:` sent to clients whose stream is closed by a drain.
    pub drain_retry: Duration,
    /// Whether subscription events and the subscription API are on.
    pub subscriptions: bool,
    /// Subscriptions one subscription API response lists at most.
    pub subscriptions_page_size: usize,
    /// Whether the development playground is on (`--playground`).
    pub playground: bool,
    /// Time a connection has to send a complete request head (`None`: unlimited).
    pub header_read_timeout: Option<Duration>,
    /// Time a connection without a request in progress is kept (`None`: forever).
    pub idle_timeout: Option<Duration>,
    /// How long a connection's writes may stay blocked (the dispatch timeout; `None`: forever).
    pub write_stall_timeout: Option<Duration>,
    /// Proxies whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: TrustedProxies,
    /// Streams one HTTP/2 connection may carry at once.
    pub http2_max_streams: u32,
    /// HTTP/2 ping interval and timeout (`None`: no pings).
    pub http2_keep_alive: Option<Duration>,
}

/// Handle to the hub's shared state.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    transport: Arc<dyn Transport>,
    fanout: Fanout,
    selectors: Arc<SelectorStore>,
    auth: Authenticator,
    settings: HubSettings,
    metrics: Metrics,
    shutting_down: AtomicBool,
    /// Set once the transport has been ready (its readers positioned on their streams).
    started: AtomicBool,
    subscriptions: Option<Arc<Subscriptions>>,
    last_event: Arc<LastEvent>,
    /// Connections and streams held per client address (`--max-connections-per-client`).
    clients: Arc<ClientCounts>,
    /// Replay batches in flight (`--max-replay-buffer`).
    replay_budget: Arc<ReplayBudget>,
    /// Subscriptions compiling selectors off the reactor at once, one per core: the rest wait.
    compiling: Arc<tokio::sync::Semaphore>,
    playground: Option<PlaygroundSigner>,
    /// The limiter behind rate limits and connection caps, and its decision counters.
    limits: Limits,
    /// Rate limits, caps, revocation and retention rules in force (reloaded on `SIGHUP`).
    policies: Arc<PolicyCell>,
    /// Revoked tokens: the node's copy, its syncer and the admin endpoint's settings.
    revocations: Arc<Revocations>,
}

/// The id of the last update this node's reader handed to the fan-out: the reconciliation cursor
/// of the subscription API.
/// The update itself is kept (its id is read only when asked for), not a copy of its id: setting it
/// is then a reference count, not an allocation, per update.
#[derive(Default)]
struct LastEvent(std::sync::Mutex<Option<Arc<Envelope>>>);

impl LastEvent {
    fn set(&self, envelope: &Arc<Envelope>) {
        let previous = {
            let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
            last.replace(envelope.clone())
        };
        // The previous update may be the last reference to it: freed outside the lock.
        drop(previous);
    }

    fn get(&self) -> Option<String> {
        let last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        last.as_ref().map(|envelope| envelope.update.id.clone())
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("transport", &self.inner.transport.name())
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

/// Hands what the transport reader reads to the local fan-out, noting the last event id.
struct FanoutSink {
    fanout: Fanout,
    last_event: Arc<LastEvent>,
}

#[async_trait]
impl UpdateSink for FanoutSink {
    async fn deliver(&self, envelope: Arc<Envelope>) {
        self.last_event.set(&envelope);
        self.fanout.dispatch(envelope).await;
    }

    /// Updates were lost before this node read them. Which topics they had is unknown (trimming
    /// leaves no trace), and in partitioned mode an update reaches subscribers of its alternate
    /// topics through its canonical topic's partition, so every local stream is ended: each client
    /// resumes with its last event id and the history lookup tells it (`earliest`) if it missed
    /// something. Streams end after what was read before the loss and before anything after it.
    async fn gap(&self, gap: Gap) {
        let streams = self.fanout.subscriber_count();
        tracing::warn!(
            partition = gap.partition,
            cause = gap.cause.as_str(),
            missed = gap.missed,
            streams,
            "ending every local stream after a loss in the transport"
        );
        self.fanout.interrupt_all().await;
    }
}

/// Puts the retention rules of the policies in force on `transport` now (before any publish), and
/// again after every change of the policies (a reload), until the policies are dropped. `default`
/// is the global history, which rules leave open fields to.
fn keep_retention_in_force(
    policies: &Arc<PolicyCell>,
    transport: Arc<dyn Transport>,
    default: Window,
) {
    transport.set_retention(policies.current().retention.resolve(default));
    let mut changes = policies.changes();
    let policies = Arc::downgrade(policies);
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            let Some(cell) = policies.upgrade() else {
                break;
            };
            let retention = cell.current().retention.resolve(default);
            tracing::info!(
                classes = retention.classes().len(),
                "retention rules in force for updates published from now on"
            );
            transport.set_retention(retention);
        }
    });
}

impl Hub {
    /// Builds the hub from its configuration and starts its background tasks on the current runtime.
    pub fn start(config: &Config) -> anyhow::Result<Self> {
        let selectors = Arc::new(SelectorStore::default().with_budget(config.max_selector_memory));
        // Checked on every authenticated request; kept current by the revocation syncer.
        let revoked = Arc::new(RevocationSet::default());
        let auth = crate::auth::authenticator(config, selectors.clone())?
            .with_revocations(revoked.clone());
        let fanout = Fanout::start(
            &FanoutConfig {
                shards: config
                    .shards
                    .unwrap_or_else(|| FanoutConfig::default().shards),
                subscriber_queue: config.subscriber_queue,
                dispatch_timeout: (!config.dispatch_timeout.is_zero())
                    .then_some(config.dispatch_timeout),
                alarm_tick: alarm_tick(config),
                io_uring: config.io_uring,
                ..FanoutConfig::default()
            },
            selectors.clone(),
        );
        let registry_options = RegistryOptions {
            lease_ttl: config.subscription_lease,
            ..RegistryOptions::default()
        };
        let (transport, registry, limiter, revocation_store): TransportParts =
            match config.transport {
                TransportKind::Memory => (
                    Arc::new(MemoryTransport::with_event_history(
                        config.history_size,
                        config.subscription_event_history,
                    )),
                    Arc::new(MemoryRegistry::new()),
                    Arc::new(MemoryLimiter::new(config.rate_limit_entries)),
                    Arc::new(MemoryRevocations::new()),
                ),
                TransportKind::Redis => {
                    let redis = RedisTransport::new(RedisConfig {
                        urls: config.redis_url.clone(),
                        cluster: config.redis_cluster,
                        stream_key_prefix: config.redis_key_prefix.clone(),
                        partitions: config.redis_partitions,
                        partition_slots: config.redis_partition_slots,
                        reader_partitions: config.redis_reader_partitions,
                        partition_hash: config.redis_partition_hash.into(),
                        history_size: config.history_size,
                        event_history: config.subscription_event_history,
                        history_max_age: (!config.history_max_age.is_zero())
                            .then_some(config.history_max_age),
                        tail_cache_size: config.history_cache_size,
                        pool_size: config.redis_pool_size,
                        command_timeout: config.redis_timeout,
                        resume_margin: config.redis_resume_margin,
                        batch_window: config.redis_batch_window,
                        // A stored update is its decoded form plus a little framing; the form's
                        // encoded body bounds the decoded one.
                        max_entry_bytes: config.max_body_size.saturating_add(ENTRY_FRAMING),
                        read_budget: config.redis_read_budget,
                        history_max_bytes: config.history_max_bytes,
                        max_history_scans: config.redis_max_history_scans,
                        tls_ca_file: config.redis_tls_ca.clone(),
                        // A node reads only the partitions its subscribers may match.
                        read_on_interest: true,
                        ..RedisConfig::default()
                    })
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                    let registry = redis.subscription_registry(registry_options);
                    // Connection counts share the subscription lease's length: a dead node's
                    // connections stop counting when its subscriptions are reaped.
                    let limiter = redis.limiter(LimiterOptions {
                        lease_ttl: config.subscription_lease,
                        ..LimiterOptions::default()
                    });
                    let revocations = redis.revocation_store();
                    (Arc::new(redis), registry, limiter, revocations)
                }
            };
        let last_event = Arc::new(LastEvent::default());
        transport.start_reader(Arc::new(FanoutSink {
            fanout: fanout.clone(),
            last_event: last_event.clone(),
        }));
        let subscriptions = config.subscriptions.then(|| {
            Arc::new(Subscriptions::start(
                registry,
                transport.clone(),
                crate::subscriptions::EventPace::new(
                    config.subscription_event_rate,
                    SUBSCRIPTION_EVENT_PATIENCE,
                ),
            ))
        });
        let non_zero = |d: Duration| (!d.is_zero()).then_some(d);
        let max_connections = match config.max_connections {
            0 => default_max_connections(),
            n => n,
        };
        let settings = HubSettings {
            playground: config.playground,
            anonymous: config.anonymous,
            heartbeat: non_zero(config.heartbeat),
            write_timeout: non_zero(config.write_timeout),
            publish_limits: PublishLimits {
                max_topics: config.max_topics_per_update,
                max_field_len: config.max_selector_length,
            },
            subscribe_limits: SubscribeLimits {
                max_matchers: config.max_selectors,
                max_pattern_len: config.max_selector_length,
            },
            max_subscription_selector_memory: config.max_subscription_selector_memory,
            max_body_size: config.max_body_size,
            max_connections,
            max_subscribers: match config.max_subscribers {
                0 => max_connections,
                n => n.min(max_connections),
            },
            drain_window: config.drain_window,
            drain_retry: config.drain_retry,
            subscriptions: config.subscriptions,
            subscriptions_page_size: config.subscriptions_page_size.max(1),
            header_read_timeout: non_zero(config.header_read_timeout),
            idle_timeout: non_zero(config.idle_timeout),
            write_stall_timeout: non_zero(config.dispatch_timeout),
            trusted_proxies: TrustedProxies::new(config.trusted_proxies.clone()),
            http2_max_streams: config.http2_max_streams.max(1),
            http2_keep_alive: non_zero(config.http2_keep_alive),
        };
        let replay_budget = ReplayBudget::new(config.max_replay_buffer);
        let limits = Limits::new(limiter);
        let policies = Arc::new(PolicyCell::load(config.config.as_deref())?);
        keep_retention_in_force(
            &policies,
            transport.clone(),
            Window {
                length: config.history_size,
                max_age: non_zero(config.history_max_age),
            },
        );
        let revocations = Revocations::start(
            config,
            &policies.current().revocation,
            revoked,
            revocation_store,
            fanout.clone(),
        )?;
        revocations.follow_reloads(&policies);
        let mut metrics = Metrics::new(
            fanout.clone(),
            transport.clone(),
            subscriptions.as_ref().map(|s| s.registry_handle()),
            replay_budget.clone(),
            selectors.clone(),
            auth.token_caches(),
            &policies,
        );
        limits.register_metrics(metrics.registry_mut());
        revocations.register_metrics(metrics.registry_mut());
        Ok(Self {
            inner: Arc::new(HubInner {
                metrics,
                transport,
                fanout,
                selectors,
                auth,
                settings,
                shutting_down: AtomicBool::new(false),
                started: AtomicBool::new(false),
                subscriptions,
                last_event,
                clients: ClientCounts::new(config.max_connections_per_client),
                replay_budget,
                compiling: Arc::new(tokio::sync::Semaphore::new(
                    std::thread::available_parallelism().map_or(2, |n| n.get()),
                )),
                playground: PlaygroundSigner::from_config(config),
                limits,
                policies,
                revocations,
            }),
        })
    }

    /// The limiter behind rate limits and connection caps.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The policies in force now (take once per request and keep).
    pub fn policies(&self) -> Arc<Policies> {
        self.inner.policies.current()
    }

    /// The revocation machinery, when revocation is on (an admin key is configured).
    pub fn revocations(&self) -> Option<&Arc<Revocations>> {
        let revocations = &self.inner.revocations;
        revocations
            .settings()
            .admin
            .is_some()
            .then_some(revocations)
    }

    /// The revocation machinery, on or off.
    pub fn revocation(&self) -> &Arc<Revocations> {
        &self.inner.revocations
    }

    /// The cell holding the policies: reload, watch changes.
    pub fn policy_cell(&self) -> &Arc<PolicyCell> {
        &self.inner.policies
    }

    /// The transport.
    pub fn transport(&self) -> &dyn Transport {
        &*self.inner.transport
    }

    /// The local fan-out.
    pub fn fanout(&self) -> &Fanout {
        &self.inner.fanout
    }

    /// The node's selector cache.
    pub fn selectors(&self) -> &SelectorStore {
        &self.inner.selectors
    }

    /// The token verifiers.
    pub fn auth(&self) -> &Authenticator {
        &self.inner.auth
    }

    /// Connections and streams held per client address.
    pub fn clients(&self) -> &Arc<ClientCounts> {
        &self.inner.clients
    }

    /// Permits to compile selectors off the reactor (one per core).
    pub fn compiling(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.inner.compiling
    }

    /// The bound on replay batches in flight, shared by every resuming subscriber.
    pub fn replay_budget(&self) -> &Arc<ReplayBudget> {
        &self.inner.replay_budget
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The resolved settings.
    pub fn settings(&self) -> &HubSettings {
        &self.inner.settings
    }

    /// How the playground signs its token, when it is on and has a key to sign with.
    pub fn playground_signer(&self) -> Option<&PlaygroundSigner> {
        self.inner.playground.as_ref()
    }

    /// The active-subscriptions machinery, when `--subscriptions` is on.
    pub fn subscriptions(&self) -> Option<&Arc<Subscriptions>> {
        self.inner.subscriptions.as_ref()
    }

    /// The id of the last update this node dispatched, if any since it started.
    pub fn last_event_id(&self) -> Option<String> {
        self.inner.last_event.get()
    }

    /// Whether the hub is shutting down (no new subscribers).
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Relaxed)
    }

    /// Whether the transport has been ready at least once since the hub started. Until then its
    /// readers have not found their place in the streams: an update stored before that place is
    /// history, not live, so a subscriber accepted earlier (without a last event id) could miss it.
    pub fn has_started(&self) -> bool {
        if self.inner.started.load(Ordering::Relaxed) {
            return true;
        }
        let ready = self.inner.transport.is_ready();
        if ready {
            self.inner.started.store(true, Ordering::Relaxed);
        }
        ready
    }

    /// Waits, up to `max`, for [`Hub::has_started`]; `false` if the transport is still not ready.
    pub async fn wait_started(&self, max: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + max;
        while !self.has_started() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Whether the hub can serve: transport ready and not shutting down.
    pub fn is_ready(&self) -> bool {
        !self.is_shutting_down() && self.inner.transport.is_ready()
    }

    /// Starts draining: `/readyz` turns 503 and new subscribers are refused at once; the open
    /// streams are then closed a few at a time over the drain window (each is told to reconnect
    /// promptly with `retry:`). Resolves when every local stream is closed.
    pub async fn drain(&self) {
        self.inner.shutting_down.store(true, Ordering::Relaxed);
        let fanout = &self.inner.fanout;
        let total = fanout.subscriber_count();
        let window = self.inner.settings.drain_window;
        tracing::info!(subscribers = total, window = ?window, "draining: closing subscriber streams");
        const TICK: Duration = Duration::from_millis(100);
        let ticks = (window.as_millis() / TICK.as_millis()).max(1) as usize;
        let per_tick = total.div_ceil(ticks).max(1);
        let mut interval = tokio::time::interval(TICK);
        for _ in 0..ticks {
            interval.tick().await;
            if fanout.close_some(per_tick) == 0 && fanout.subscriber_count() == 0 {
                break;
            }
        }
        // Whatever connected in between (none should) is closed now.
        fanout.close_all();
    }

    /// After the drain: publishes the last subscription events and leaves the registry, and
    /// takes this node's connections out of the cluster's connection counts.
    pub async fn close(&self) {
        if let Some(subscriptions) = &self.inner.subscriptions {
            subscriptions.close().await;
        }
        self.inner.limits.limiter().close().await;
    }
}

/// 95% of the open-file limit (`Max open files` in `/proc/self/limits`): each connection holds one
/// socket, and the rest is kept for Redis connections, the listeners, refusals and files.
fn default_max_connections() -> usize {
    let limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(3)
                        .and_then(|v| v.parse::<usize>().ok())
                })
        })
        .unwrap_or(20_000);
    limit - limit / 20
}

/// The fan-out's alarm tick: a second, or a quarter of the heartbeat or of the maximum connection
/// life when either is shorter, so neither drifts by more than a quarter of itself (and never below
/// 10 ms). Token expiries are honoured to within the tick.
fn alarm_tick(config: &Config) -> Duration {
    [config.heartbeat, config.write_timeout]
        .into_iter()
        .filter(|d| !d.is_zero())
        .map(|d| d / 4)
        .fold(Duration::from_secs(1), Duration::min)
        .max(Duration::from_millis(10))
}
