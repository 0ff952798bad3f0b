//! Policies: who may do how much, which tokens are out of service, and how long each topic's
//! history is kept — read from the configuration file's policy tables and reloaded on `SIGHUP`.
//!
//! The configuration file (`--config FILE`, TOML) holds the hub's flags as keys and, beside them,
//! policy tables ([`TABLES`]): `[[rate_limit]]`, `[[connection_limit]]`, `[revocation]`,
//! `[[retention]]`. [`PolicyFile`] is what those tables say; [`Policies`] is the same, checked and
//! compiled, as request paths use it. The hub holds the current [`Policies`] in a
//! [`PolicyCell`]: a request takes the current value once ([`PolicyCell::current`], one atomic
//! load) and keeps it for its whole life, so a reload never changes the rules under a request.
//!
//! # Reload
//! On `SIGHUP` the file is read and compiled again ([`PolicyCell::reload`]). A file that cannot be
//! read or does not compile is refused with a log line and the
//! `quicksilver_policy_reload_failures_total` counter, and the policies in force stay. Flags are
//! not reloaded (they shape listeners and the transport); only the policy tables are. Open
//! connections are never dropped by a reload: new rules apply to what starts after it. Parts of
//! the hub that must act on a change (rather than read the current rules per request) watch
//! [`PolicyCell::changes`].
//!
//! # Whom a policy counts
//! [`Subject`] is the key a per-subject policy counts by: the token's `sub`, else its `jti`, else
//! the client's address (as `--trusted-proxies` lets the hub see it).

pub mod limits;
pub mod retention;
pub mod revocation;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use quicksilver_auth::Identity;
use serde::Deserialize;
use thiserror::Error;

/// The configuration file's keys that are policy tables rather than flags.
pub const TABLES: [&str; 4] = ["rate_limit", "connection_limit", "revocation", "retention"];

/// Why policies could not be loaded.
#[derive(Debug, Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The policy tables are not valid.
    #[error("invalid policies in {path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, naming the table and key.
        reason: String,
    },
}

/// The policy tables of the configuration file, as written. Every table is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// `[[rate_limit]]`: publish (and subscription request) rates (see [`limits`]).
    #[serde(default)]
    pub rate_limit: Vec<limits::RateLimitRule>,
    /// `[[connection_limit]]`: connections and matchers per subject (see [`limits`]).
    #[serde(default)]
    pub connection_limit: Vec<limits::ConnectionLimitRule>,
    /// `[revocation]`: the admin key and the bounds of revocation (see [`revocation`]).
    #[serde(default)]
    pub revocation: Option<revocation::RevocationTable>,
    /// `[[retention]]`: history windows per topic (see [`retention`]).
    #[serde(default)]
    pub retention: Vec<retention::RetentionTable>,
}

impl PolicyFile {
    /// Reads the policy tables of the TOML file at `path` (its other keys are flags, read by
    /// [`crate::config`]).
    pub fn read(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&text).map_err(|reason| PolicyError::Invalid {
            path: path.display().to_string(),
            reason,
        })
    }

    /// Parses the policy tables of a TOML document, ignoring its flag keys.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
        table.retain(|key, _| TABLES.contains(&key));
        PolicyFile::deserialize(toml::Value::Table(table)).map_err(|e| e.to_string())
    }
}

/// The policies in force, compiled for request paths.
#[derive(Debug, Default)]
pub struct Policies {
    /// Rate limits and connection caps.
    pub limits: limits::LimitRules,
    /// The `[revocation]` table, checked (see [`revocation`]).
    pub revocation: revocation::RevocationRules,
    /// History windows per topic (see [`retention`]).
    pub retention: retention::RetentionRules,
}

impl Policies {
    /// Checks and compiles what the file says.
    pub fn compile(file: PolicyFile) -> Result<Self, String> {
        let PolicyFile {
            rate_limit,
            connection_limit,
            revocation,
            retention,
        } = file;
        Ok(Self {
            limits: limits::LimitRules::compile(rate_limit, connection_limit)?,
            revocation: revocation::RevocationRules::compile(revocation)?,
            retention: retention::RetentionRules::compile(retention)?,
        })
    }
}

/// Counters of the policy reloads.
#[derive(Clone, Debug, Default)]
pub struct PolicyMetrics {
    /// Reloads that put new policies in force.
    pub reloads: Counter,
    /// Reloads refused (the file could not be read or compiled; the policies in force stay).
    pub reload_failures: Counter,
}

/// The policies in force on this node, swapped whole on reload.
pub struct PolicyCell {
    current: ArcSwap<Policies>,
    /// The configuration file they come from (`None`: no file, nothing to reload).
    path: Option<PathBuf>,
    changes: tokio::sync::watch::Sender<u64>,
    metrics: PolicyMetrics,
}

impl std::fmt::Debug for PolicyCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyCell")
            .field("path", &self.path)
            .field("current", &self.current.load())
            .finish_non_exhaustive()
    }
}

impl PolicyCell {
    /// Loads the policies of the configuration file at `path` (`None`: no policies).
    pub fn load(path: Option<&Path>) -> Result<Self, PolicyError> {
        let policies = match path {
            Some(path) => compile(path)?,
            None => Policies::default(),
        };
        Ok(Self::with(policies, path.map(Path::to_path_buf)))
    }

    /// A cell holding `policies`, reloading from `path`.
    pub fn with(policies: Policies, path: Option<PathBuf>) -> Self {
        Self {
            current: ArcSwap::from_pointee(policies),
            path,
            changes: tokio::sync::watch::Sender::new(0),
            metrics: PolicyMetrics::default(),
        }
    }

    /// The policies in force now. Take it once per request and keep it.
    pub fn current(&self) -> Arc<Policies> {
        self.current.load_full()
    }

    /// Reads the file again and puts its policies in force. `Ok(false)`: there is no file.
    /// On error the policies in force stay.
    pub fn reload(&self) -> Result<bool, PolicyError> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        match compile(path) {
            Ok(policies) => {
                self.replace(policies);
                self.metrics.reloads.inc();
                Ok(true)
            }
            Err(e) => {
                self.metrics.reload_failures.inc();
                Err(e)
            }
        }
    }

    /// Puts `policies` in force and tells the watchers.
    pub fn replace(&self, policies: Policies) {
        self.current.store(Arc::new(policies));
        self.changes.send_modify(|generation| *generation += 1);
    }

    /// A receiver that sees a new value after each change of the policies in force.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The reload counters.
    pub fn metrics(&self) -> &PolicyMetrics {
        &self.metrics
    }

    /// Registers the policy metrics.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "policy_reloads",
            "Reloads of the configuration file's policy tables that put new policies in force",
            self.metrics.reloads.clone(),
        );
        registry.register(
            "policy_reload_failures",
            "Reloads refused because the configuration file could not be read or its policies did not compile (the previous policies stay)",
            self.metrics.reload_failures.clone(),
        );
    }

    /// Reloads on every `SIGHUP` until the task is dropped (logging each outcome).
    pub async fn reload_on_hangup(self: Arc<Self>) {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut hangups = match signal(SignalKind::hangup()) {
                Ok(hangups) => hangups,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGHUP: policies will not reload");
                    return;
                }
            };
            while hangups.recv().await.is_some() {
                match self.reload() {
                    Ok(true) => tracing::info!("policies reloaded"),
                    Ok(false) => tracing::info!("SIGHUP: no configuration file, nothing to reload"),
                    Err(e) => {
                        tracing::error!(error = %e, "policies not reloaded: the previous ones stay")
                    }
                }
            }
        }
    }
}

fn compile(path: &Path) -> Result<Policies, PolicyError> {
    Policies::compile(PolicyFile::read(path)?).map_err(|reason| PolicyError::Invalid {
        path: path.display().to_string(),
        reason,
    })
}

/// The key a per-subject policy counts by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    /// The token's `sub`.
    Subject(Arc<str>),
    /// The token's `jti` (a token without `sub`).
    TokenId(Arc<str>),
    /// The client's address (no token, or a token naming neither).
    Address(IpAddr),
}

impl Subject {
    /// Whom a request counts as: its token's identity when it has one, else its client address.
    pub fn of(identity: Option<&Identity>, client: IpAddr) -> Self {
        match identity {
            Some(Identity {
                subject: Some(sub), ..
            }) => Subject::Subject(sub.clone()),
            Some(Identity {
                token_id: Some(jti),
                ..
            }) => Subject::TokenId(jti.clone()),
            _ => Subject::Address(client),
        }
    }

    /// A stable text key for shared state (Redis keys, map keys): the kind, a colon, the value.
    /// Values are bounded by [`quicksilver_auth::MAX_CLAIM_BYTES`].
    pub fn key(&self) -> String {
        match self {
            Subject::Subject(s) => format!("sub:{s}"),
            Subject::TokenId(j) => format!("jti:{j}"),
            Subject::Address(ip) => format!("ip:{ip}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's worked example is a file the hub takes as it is (its key file put aside).
    #[test]
    fn the_readme_example_compiles() {
        let readme = include_str!("../../../README.md");
        let example = readme
            .split("**A worked example**")
            .nth(1)
            .and_then(|rest| rest.split("```toml\n").nth(1))
            .and_then(|rest| rest.split("```").next())
            .expect("the README has its worked example");
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("admin-key");
        std::fs::write(&key, "a-secret-for-admin-tokens-only-0123456789\n").unwrap();
        let example = example.replace("/run/secrets/quicksilver-admin-key", key.to_str().unwrap());
        let file = PolicyFile::parse(&example).unwrap();
        assert_eq!(file.rate_limit.len(), 3);
        assert_eq!(file.connection_limit.len(), 2);
        assert_eq!(file.retention.len(), 2);
        assert!(file.revocation.is_some());
        Policies::compile(file).unwrap();
    }

    #[test]
    fn flag_keys_are_not_policies_and_unknown_tables_are_not_read_here() {
        let file = PolicyFile::parse("transport = \"memory\"\nanonymous = true\n").unwrap();
        assert!(file.rate_limit.is_empty() && file.connection_limit.is_empty());
        assert!(file.revocation.is_none());
        assert!(file.retention.is_empty());
        assert!(PolicyFile::parse("this is not toml").is_err());
    }

    #[test]
    fn subject_prefers_sub_then_jti_then_address() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut id = Identity {
            subject: Some("alice".into()),
            token_id: Some("t-1".into()),
            ..Identity::default()
        };
        assert_eq!(Subject::of(Some(&id), ip).key(), "sub:alice");
        id.subject = None;
        assert_eq!(Subject::of(Some(&id), ip).key(), "jti:t-1");
        id.token_id = None;
        assert_eq!(Subject::of(Some(&id), ip).key(), "ip:192.0.2.1");
        assert_eq!(Subject::of(None, ip), Subject::Address(ip));
    }

    #[test]
    fn reload_keeps_the_old_policies_when_the_file_is_bad() {
        let dir = std::env::temp_dir().join(format!("qs-policies-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hub.toml");
        std::fs::write(&path, "anonymous = true\n").unwrap();
        let cell = PolicyCell::load(Some(&path)).unwrap();
        let mut changes = cell.changes();
        assert!(cell.reload().unwrap());
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        std::fs::write(&path, "[[nonsense").unwrap();
        assert!(cell.reload().is_err());
        assert!(!changes.has_changed().unwrap());
        assert_eq!(cell.metrics().reloads.get(), 1);
        assert_eq!(cell.metrics().reload_failures.get(), 1);
        assert!(!PolicyCell::load(None).unwrap().reload().unwrap());
        std::fs::remove_dir_all(&dir).ok();
    }
}
