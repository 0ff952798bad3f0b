//! JWK Sets of trusted issuers (`--issuer ID jwks_uri=URL`): fetched, kept current, shared with the
//! verifiers.
//!
//! A [`JwksSource`] owns one issuer's [`SharedKeySet`]; the verifiers hold clones of it and read
//! the current set on every token. A background task fetches the set again every
//! `--jwks-refresh`, and sooner when a token names a `kid` the set does not have
//! ([`JwksSource::nudge`], at most every [`MIN_REFETCH`]), so an issuer rotating its keys is
//! followed without a restart. A failed fetch keeps the previous set (tokens signed with a key
//! that is still valid keep working) and is retried.
//!
//! `file://` sets are read once at start-up, where an unreadable or invalid file refuses to start
//! the hub, and then re-read like remote ones (a mounted Kubernetes secret changes in place).
//! Remote sets are fetched in the background from the start: until the first fetch succeeds, the
//! issuer's tokens are refused as signed with an unknown key. A set is read up to
//! [`MAX_JWKS_BYTES`] and no further (a remote set chunk by chunk, whatever length it announces),
//! and a fetch never follows a redirect from `https` to `http`.

use std::sync::Arc;
use std::time::Duration;

use quicksilver_auth::{KeySet, SharedKeySet};
use tokio::sync::Notify;

/// The shortest time between two fetches triggered by unknown `kid`s: a flood of forged tokens
/// must not turn into a flood of requests to the issuer.
pub const MIN_REFETCH: Duration = Duration::from_secs(10);

/// The largest JWK Set accepted, in bytes.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Redirects followed when fetching a JWK Set.
const MAX_REDIRECTS: usize = 5;

/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// One issuer's JWK Set and the task keeping it current (see the module docs).
#[derive(Debug)]
pub struct JwksSource {
    keys: SharedKeySet,
    nudge: Arc<Notify>,
}

impl JwksSource {
    /// Opens the set at `uri` for `issuer` and starts its refresh task on the current runtime.
    pub fn open(issuer: &str, uri: &str, refresh: Duration) -> anyhow::Result<Self> {
        let location = Location::parse(uri).ok_or_else(|| {
            anyhow::anyhow!(
                "issuer {issuer}: unsupported jwks_uri {uri:?} (https://, http:// or file://)"
            )
        })?;
        let initial = match &location {
            Location::File(path) => {
                let bytes = std::fs::read(path).map_err(|e| {
                    anyhow::anyhow!("issuer {issuer}: cannot read {}: {e}", path.display())
                })?;
                KeySet::from_jwks(&bytes)
                    .map_err(|e| anyhow::anyhow!("issuer {issuer}: {}: {e}", path.display()))?
            }
            Location::Http(_) => KeySet::new(),
        };
        let keys = SharedKeySet::new(initial);
        let nudge = Arc::new(Notify::new());
        let task = Refresher {
            issuer: issuer.to_string(),
            location,
            keys: keys.clone(),
            nudge: nudge.clone(),
            refresh: refresh.max(Duration::from_secs(1)),
        };
        tokio::spawn(task.run());
        Ok(Self { keys, nudge })
    }

    /// The shared set, for the verifiers.
    pub fn keys(&self) -> SharedKeySet {
        self.keys.clone()
    }

    /// Asks for an early fetch (a token named an unknown `kid`).
    pub fn nudge(&self) {
        self.nudge.notify_one();
    }
}

/// Where a set lives.
#[derive(Debug, Clone)]
enum Location {
    File(std::path::PathBuf),
    Http(String),
}

impl Location {
    fn parse(uri: &str) -> Option<Self> {
        let url = url::Url::parse(uri).ok()?;
        match url.scheme() {
            "file" => url.to_file_path().ok().map(Location::File),
            "https" | "http" => Some(Location::Http(uri.to_string())),
            _ => None,
        }
    }
}

struct Refresher {
    issuer: String,
    location: Location,
    keys: SharedKeySet,
    nudge: Arc<Notify>,
    refresh: Duration,
}

impl Refresher {
    async fn run(self) {
        let client = match reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(no_downgrade())
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(issuer = %self.issuer, error = %e, "cannot build the JWKS HTTP client");
                return;
            }
        };
        // A remote set is fetched at once; a file was just read.
        let mut fetch_now = matches!(self.location, Location::Http(_));
        loop {
            if fetch_now {
                let next = match self.fetch(&client).await {
                    Ok(set) => {
                        tracing::info!(issuer = %self.issuer, keys = set.len(), "JWK Set loaded");
                        self.keys.replace(set);
                        self.refresh
                    }
                    Err(e) => {
                        tracing::warn!(issuer = %self.issuer, error = %e, "JWK Set fetch failed; keeping the previous keys");
                        MIN_REFETCH.min(self.refresh)
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(next) => {}
                    _ = self.nudged() => {}
                }
            } else {
                tokio::select! {
                    _ = tokio::time::sleep(self.refresh) => {}
                    _ = self.nudged() => {}
                }
            }
            fetch_now = true;
        }
    }

    /// Resolves on a nudge, but never sooner than [`MIN_REFETCH`] after the previous fetch.
    async fn nudged(&self) {
        tokio::time::sleep(MIN_REFETCH).await;
        self.nudge.notified().await;
    }

    async fn fetch(&self, client: &reqwest::Client) -> anyhow::Result<KeySet> {
        let bytes = match &self.location {
            Location::File(path) => {
                let file = tokio::fs::File::open(path).await?;
                let mut bytes = Vec::new();
                // One byte more than allowed tells an oversized file from one of the limit's size.
                tokio::io::AsyncReadExt::read_to_end(
                    &mut tokio::io::AsyncReadExt::take(file, MAX_JWKS_BYTES as u64 + 1),
                    &mut bytes,
                )
                .await?;
                if bytes.len() > MAX_JWKS_BYTES {
                    anyhow::bail!("JWK Set larger than {MAX_JWKS_BYTES} bytes");
                }
                bytes
            }
            Location::Http(url) => {
                let mut response = client.get(url).send().await?.error_for_status()?;
                if response
                    .content_length()
                    .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
                {
                    anyhow::bail!("JWK Set larger than {MAX_JWKS_BYTES} bytes");
                }
                // Read chunk by chunk and stopped at the limit: a server that announces no length
                // (or lies about it) cannot make the hub hold more.
                let mut body = Vec::new();
                while let Some(chunk) = response.chunk().await? {
                    if body.len() + chunk.len() > MAX_JWKS_BYTES {
                        anyhow::bail!("JWK Set larger than {MAX_JWKS_BYTES} bytes");
                    }
                    body.extend_from_slice(&chunk);
                }
                body
            }
        };
        Ok(KeySet::from_jwks(&bytes)?)
    }
}

/// Follows at most a few redirects, and never from `https` to `http`: keys fetched over TLS must
/// not be swapped for keys anyone on the path could forge.
fn no_downgrade() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let downgrade = attempt.url().scheme() == "http"
            && attempt.previous().iter().any(|u| u.scheme() == "https");
        if downgrade {
            attempt.error("refusing a redirect from https to http")
        } else if attempt.previous().len() >= MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    })
}
