//! Revocation: tokens taken out of service before they expire, on every node within a second.
//!
//! # How a revocation travels
//! An admin (`POST /.well-known/mercure/admin/revocations`, see [`admin`], or `quicksilver revoke`)
//! revokes a token id (`jti`), or every token of a subject (`sub`) issued before a time. The node
//! that takes the request stores it in the transport's revocation store
//! ([`quicksilver_transport::RevocationStore`]: Redis, or memory on a single node), merging it with
//! one of the same key. Every node runs a syncer ([`sync`]) that follows the store's changes
//! (polling every [`sync::POLL`], at once on this node after a write) and keeps the node's copy
//! ([`RevocationSet`]); a node that starts, or cannot tell what changed (Redis restarted, it fell
//! behind the log), reads the whole set again. Whenever revocations come into force the syncer
//! ends the local streams their tokens authenticated ([`quicksilver_fanout::Fanout::revoke`]);
//! the [`crate::auth::Authenticator`] refuses their tokens on every new request with the usual
//! `401 invalid_token`. A check costs no round trip: it reads the node's copy.
//!
//! Revocations lapse when the tokens they cover would have expired: at the `exp` given, else
//! [`RevocationSettings::max_token_lifetime`] after they were made (a subject's: after its `before`
//! time). The cluster holds at most [`RevocationSettings::max`] of them; beyond it a new one is
//! refused (`507`) and counted.
//!
//! # Settings
//! Flags (`--admin-jwt-key`, `--admin-jwt-alg`, `--max-revocations`, `--max-token-lifetime`) win;
//! the `[revocation]` table of the configuration file ([`RevocationTable`]) gives what they do not,
//! and is read again on `SIGHUP` (so an admin key kept in a file can be rotated). Without an admin
//! key revocation is off: the endpoint answers `404` and no syncer runs. A key set by a reload
//! turns it on; removing it closes the endpoint, while the revocations in force stay enforced
//! until they lapse. The admin key may not be the publisher's or the subscriber's.
//!
//! # Layout
//! - [`set`]: [`Revocation`], and the node's copy ([`RevocationSet`]) that checks read.
//! - [`sync`]: the task that keeps the copy current and ends revoked streams.
//! - [`admin`]: the admin endpoint.

pub mod admin;
pub mod set;
pub mod sync;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use quicksilver_auth::{AdminVerifier, Identity, KeySpec, DEFAULT_ALGORITHM};
use quicksilver_fanout::Fanout;
use quicksilver_transport::RevocationStore;
use serde::Deserialize;

use crate::config::{parse_duration, Config};
use crate::policies::PolicyCell;

pub use set::{key_of, unix_now, Revocation, RevocationIndex, RevocationSet, Target};

/// Default of [`RevocationSettings::max`].
pub const DEFAULT_MAX_REVOCATIONS: usize = 10_000;

/// Default of [`RevocationSettings::max_token_lifetime`].
pub const DEFAULT_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// The `[revocation]` table of the configuration file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationTable {
    /// The admin tokens' key (HMAC secret or PEM public key).
    pub admin_key: Option<String>,
    /// A file holding the admin key (read again on every reload).
    pub admin_key_file: Option<PathBuf>,
    /// The admin tokens' algorithm (default HS256).
    pub admin_alg: Option<String>,
    /// Revocations the cluster holds at most.
    pub max_revocations: Option<usize>,
    /// The longest a token lives (`24h`, …).
    pub max_token_lifetime: Option<String>,
}

/// The `[revocation]` table, checked: what the file sets, for what the flags do not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RevocationRules {
    /// The admin key and its algorithm.
    admin_key: Option<(String, String)>,
    max: Option<usize>,
    max_token_lifetime: Option<Duration>,
}

impl RevocationRules {
    /// Checks the table (reading the key file it names).
    pub fn compile(table: Option<RevocationTable>) -> Result<Self, String> {
        let Some(table) = table else {
            return Ok(Self::default());
        };
        let invalid = |what: &str| format!("[revocation] {what}");
        let key = match (table.admin_key, &table.admin_key_file) {
            (Some(_), Some(_)) => return Err(invalid("set admin_key or admin_key_file, not both")),
            (Some(key), None) => Some(key),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| invalid(&format!("admin_key_file {}: {e}", path.display())))?,
            ),
            (None, None) => None,
        };
        let admin_key = key
            .map(|key| {
                // A key file usually ends with a newline that is no part of an HMAC secret.
                let key = key.trim_end_matches(['\n', '\r']).to_string();
                let alg = table
                    .admin_alg
                    .clone()
                    .unwrap_or_else(|| DEFAULT_ALGORITHM.into());
                KeySpec::new(&key, &alg).map_err(|e| invalid(&format!("admin key: {e}")))?;
                Ok::<_, String>((key, alg))
            })
            .transpose()?;
        if table.max_revocations == Some(0) {
            return Err(invalid("max_revocations must be at least 1"));
        }
        let max_token_lifetime = table
            .max_token_lifetime
            .as_deref()
            .map(|d| parse_duration(d).map_err(|e| invalid(&format!("max_token_lifetime: {e}"))))
            .transpose()?;
        Ok(Self {
            admin_key,
            max: table.max_revocations,
            max_token_lifetime,
        })
    }
}

/// The revocation settings in force: the flags, then the `[revocation]` table, then defaults.
#[derive(Clone, Debug)]
pub struct RevocationSettings {
    /// Verifies admin tokens; `None`: revocation is off (the endpoint answers 404).
    pub admin: Option<AdminVerifier>,
    /// Revocations the cluster holds at most.
    pub max: usize,
    /// How long a revocation without `exp` is kept.
    pub max_token_lifetime: Duration,
}

/// The revocation flags, kept to be merged again with the table on every reload.
#[derive(Clone, Debug, Default)]
struct Flags {
    admin_key: Option<(String, String)>,
    max: Option<usize>,
    max_token_lifetime: Option<Duration>,
    /// The publisher and subscriber keys, which the admin key may not be.
    other_keys: Vec<String>,
}

impl Flags {
    fn of(config: &Config) -> Self {
        let admin_alg = config
            .admin_jwt_alg
            .clone()
            .unwrap_or_else(|| DEFAULT_ALGORITHM.into());
        Self {
            admin_key: config.admin_jwt_key.clone().map(|k| (k, admin_alg)),
            max: config.max_revocations,
            max_token_lifetime: config.max_token_lifetime,
            other_keys: [config.publisher_key(), config.subscriber_key()]
                .into_iter()
                .flatten()
                .map(|(key, _)| key.trim().to_string())
                .collect(),
        }
    }

    /// The settings of these flags over `rules`.
    fn settings(&self, rules: &RevocationRules) -> Result<RevocationSettings, String> {
        let admin = match self.admin_key.as_ref().or(rules.admin_key.as_ref()) {
            Some((key, alg)) => {
                if self.other_keys.iter().any(|k| k == key.trim()) {
                    return Err(
                        "the admin JWT key must not be the publisher or subscriber key: anyone \
                         holding a publisher or subscriber token's key could revoke tokens"
                            .into(),
                    );
                }
                let spec =
                    KeySpec::new(key, alg).map_err(|e| format!("invalid admin JWT key: {e}"))?;
                Some(AdminVerifier::new(spec))
            }
            None => None,
        };
        let max = self.max.or(rules.max).unwrap_or(DEFAULT_MAX_REVOCATIONS);
        if max == 0 {
            return Err("--max-revocations must be at least 1".into());
        }
        Ok(RevocationSettings {
            admin,
            max,
            max_token_lifetime: self
                .max_token_lifetime
                .or(rules.max_token_lifetime)
                .unwrap_or(DEFAULT_MAX_TOKEN_LIFETIME),
        })
    }
}

/// The revocation metrics.
#[derive(Clone, Debug, Default)]
pub struct RevocationMetrics {
    /// Revocations in force on this node.
    pub in_force: Gauge,
    /// Subscriber streams ended because their token was revoked.
    pub streams_closed: Counter,
    /// Revocations refused because the cluster held its maximum.
    pub over_limit: Counter,
    /// Failed reads of the revocation store (the node keeps its copy and retries).
    pub sync_errors: Counter,
    /// Times this node read the whole set (start, Redis restarted, fell behind the log).
    pub reloads: Counter,
}

/// Handle to the node's revocation machinery (see the module docs). Cheap to share; the syncer
/// task holds it weakly and ends when the hub is dropped.
pub struct Revocations {
    set: Arc<RevocationSet>,
    store: Arc<dyn RevocationStore>,
    fanout: Fanout,
    flags: Flags,
    settings: ArcSwap<RevocationSettings>,
    sync: sync::SyncControl,
    syncing: AtomicBool,
    metrics: RevocationMetrics,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations")
            .field("store", &self.store.name())
            .field("in_force", &self.set.len())
            .finish_non_exhaustive()
    }
}

impl Revocations {
    /// The revocation machinery of a hub configured by `config`, with the policies `rules` in
    /// force; `set` is the copy the authenticator checks. Starts the syncer when revocation is
    /// on. Refuses an admin key that is also the publisher or subscriber key.
    pub fn start(
        config: &Config,
        rules: &RevocationRules,
        set: Arc<RevocationSet>,
        store: Arc<dyn RevocationStore>,
        fanout: Fanout,
    ) -> anyhow::Result<Arc<Self>> {
        let flags = Flags::of(config);
        let settings = flags.settings(rules).map_err(|e| anyhow::anyhow!(e))?;
        let revocations = Arc::new(Self {
            set,
            store,
            fanout,
            flags,
            settings: ArcSwap::from_pointee(settings),
            sync: sync::SyncControl::default(),
            syncing: AtomicBool::new(false),
            metrics: RevocationMetrics::default(),
        });
        revocations.start_syncing();
        Ok(revocations)
    }

    /// Starts the syncer if revocation is on and it is not running yet.
    fn start_syncing(self: &Arc<Self>) {
        if self.settings.load().admin.is_some() && !self.syncing.swap(true, Ordering::AcqRel) {
            tokio::spawn(sync::run(Arc::downgrade(self)));
        }
    }

    /// Applies the `[revocation]` table of reloaded policies; on error the settings in force stay.
    pub fn apply(self: &Arc<Self>, rules: &RevocationRules) -> Result<(), String> {
        let settings = self.flags.settings(rules)?;
        self.settings.store(Arc::new(settings));
        self.start_syncing();
        Ok(())
    }

    /// Applies each reload of `cell`'s policies until the hub is dropped.
    pub fn follow_reloads(self: &Arc<Self>, cell: &Arc<PolicyCell>) {
        let mut changes = cell.changes();
        let (revocations, cell) = (Arc::downgrade(self), Arc::downgrade(cell));
        tokio::spawn(async move {
            // Ends when the cell (and its sender) is dropped with the hub.
            while changes.changed().await.is_ok() {
                let (Some(revocations), Some(cell)) = (revocations.upgrade(), cell.upgrade())
                else {
                    return;
                };
                if let Err(e) = revocations.apply(&cell.current().revocation) {
                    tracing::error!(error = %e, "revocation settings not reloaded: the previous ones stay");
                }
            }
        });
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<RevocationSettings> {
        self.settings.load_full()
    }

    /// The node's copy.
    pub fn set(&self) -> &Arc<RevocationSet> {
        &self.set
    }

    /// The store shared by the cluster.
    pub fn store(&self) -> &dyn RevocationStore {
        &*self.store
    }

    /// The metrics.
    pub fn metrics(&self) -> &RevocationMetrics {
        &self.metrics
    }

    /// Whether a token naming `identity` is revoked on this node now.
    pub fn covers(&self, identity: &Identity) -> bool {
        self.set.covers(identity)
    }

    /// Has the syncer read the store now and waits (up to `max`) until it has, so a change this
    /// node just stored is in force here when the call returns.
    pub async fn sync_now(&self, max: Duration) {
        self.sync.sync_now(max).await;
    }

    /// Registers the revocation metrics.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let m = &self.metrics;
        registry.register(
            "revocations",
            "Revocations in force on this node",
            m.in_force.clone(),
        );
        registry.register(
            "revoked_token_refusals",
            "Requests refused (401) because their token was revoked",
            self.set.refused.clone(),
        );
        registry.register(
            "revoked_disconnections",
            "Subscriber streams ended because the token that authenticated them was revoked",
            m.streams_closed.clone(),
        );
        registry.register(
            "revocations_over_limit",
            "Revocations refused (507) because the cluster held --max-revocations",
            m.over_limit.clone(),
        );
        registry.register(
            "revocation_sync_errors",
            "Failed reads of the revocation store (the node keeps its copy and retries)",
            m.sync_errors.clone(),
        );
        registry.register(
            "revocation_reloads",
            "Times this node read the whole revocation set (start, Redis restarted, fell behind)",
            m.reloads.clone(),
        );
    }
}

/// A weak handle, for tasks that must not keep the hub alive.
pub(crate) type WeakRevocations = Weak<Revocations>;
