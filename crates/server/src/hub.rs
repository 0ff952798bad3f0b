//! The hub: the state every request handler shares.
//!
//! A [`Hub`] is a cheap handle (one `Arc`) to the transport, the local fan-out, the selector cache,
//! the token verifiers and the settings. [`Hub::start`] wires them: it starts the fan-out's shard
//! tasks and the transport's reader, whose updates flow into the fan-out through [`FanoutSink`].
//! Those tasks live as long as the runtime; [`Hub::begin_shutdown`] stops new work and closes the
//! local subscriptions so their streams end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::Authenticator;
use async_trait::async_trait;
use quicksilver_fanout::{Fanout, FanoutConfig};
use quicksilver_protocol::{Envelope, PublishLimits, SelectorStore, SubscribeLimits};
use quicksilver_transport::{MemoryTransport, Transport, UpdateSink};

use crate::config::Config;

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
    /// Maximum publish body size in bytes.
    pub max_body_size: usize,
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
    shutting_down: AtomicBool,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("transport", &self.inner.transport.name())
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

/// Hands what the transport reader reads to the local fan-out.
struct FanoutSink(Fanout);

#[async_trait]
impl UpdateSink for FanoutSink {
    async fn deliver(&self, envelope: Arc<Envelope>) {
        self.0.dispatch(envelope).await;
    }
}

impl Hub {
    /// Builds the hub from its configuration and starts its background tasks on the current runtime.
    pub fn start(config: &Config) -> anyhow::Result<Self> {
        let selectors = Arc::new(SelectorStore::default());
        let auth = crate::auth::authenticator(config, selectors.clone())?;
        let fanout = Fanout::start(
            &FanoutConfig {
                shards: config
                    .shards
                    .unwrap_or_else(|| FanoutConfig::default().shards),
                subscriber_queue: config.subscriber_queue,
                ..FanoutConfig::default()
            },
            selectors.clone(),
        );
        let transport: Arc<dyn Transport> = Arc::new(MemoryTransport::new(config.history_size));
        transport.start_reader(Arc::new(FanoutSink(fanout.clone())));
        let non_zero = |d: Duration| (!d.is_zero()).then_some(d);
        let settings = HubSettings {
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
            max_body_size: config.max_body_size,
        };
        Ok(Self {
            inner: Arc::new(HubInner {
                transport,
                fanout,
                selectors,
                auth,
                settings,
                shutting_down: AtomicBool::new(false),
            }),
        })
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

    /// The resolved settings.
    pub fn settings(&self) -> &HubSettings {
        &self.inner.settings
    }

    /// Whether the hub is shutting down (no new subscribers).
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Relaxed)
    }

    /// Whether the hub can serve: transport ready and not shutting down.
    pub fn is_ready(&self) -> bool {
        !self.is_shutting_down() && self.inner.transport.is_ready()
    }

    /// Stops accepting subscribers and ends the local streams (after what they already queued).
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Relaxed);
        self.inner.fanout.close_all();
    }
}
