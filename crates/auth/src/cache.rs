//! Remembered verifications: a bounded cache of tokens already verified, so that a token presented
//! again and again — an application's back end publishing every update with one token, a browser
//! reconnecting with the same cookie — is verified once rather than on every request.
//!
//! [`crate::Verifier::authenticate`] looks a token up after extracting it (so the extraction rules
//! and the CSRF origin check run on every request) and before reading its header. What is
//! remembered is the outcome of a *successful* verification only — grants, generation, issuer,
//! subject — with the token's validity window. A refused token is verified in full every time, as
//! before (and its unknown `kid` still nudges the key refresh).
//!
//! An entry is keyed by the SHA-256 digest of the token and of the hub identity it was verified
//! for (the audience and the base URL both shape the outcome), so the cache never holds a token,
//! and two different tokens cannot share an entry. An entry is used only while:
//! - its validity window holds at the time of the request: `exp` and `nbf`, with the leeway of the
//!   verifier that admitted it, checked exactly as on a full verification;
//! - none of the key sets the verifier reads was replaced since: a refetched JWK Set may have
//!   dropped the key that signed it. Each entry carries the replacement count read *before* its
//!   verification, so a swap during a verification also retires what it produced.
//!
//! Bounded: at most `capacity` entries (quick_cache evicts the least useful first), and tokens
//! longer than [`MAX_CACHED_TOKEN_BYTES`] never enter (their grants could be large). Hits and
//! misses are counted ([`TokenCacheStats`]).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use ring::digest::{Context, SHA256};

use crate::access::HubIdentity;
use crate::generation::Generation;
use crate::grants::Grants;
use crate::jwks::SharedKeySet;
use crate::verifier::Validity;

/// Tokens longer than this are verified every time and never remembered: real tokens are a few
/// hundred bytes, and an entry's grants grow with its token.
pub const MAX_CACHED_TOKEN_BYTES: usize = 4096;

/// A digest of a token and the hub identity it was verified for.
type Digest = [u8; 32];

/// A successful verification, as remembered.
#[derive(Clone)]
pub(crate) struct Verified {
    pub(crate) grants: Grants,
    pub(crate) generation: Generation,
    pub(crate) issuer: Option<String>,
    pub(crate) subject: Option<String>,
    pub(crate) validity: Validity,
}

/// An entry: the verification and the key sets' replacement count it was made under.
#[derive(Clone)]
struct Entry {
    verified: std::sync::Arc<Verified>,
    key_epoch: u64,
}

/// Counts of a [`TokenCache`]'s lookups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenCacheStats {
    /// Tokens found, still valid, and used without verification.
    pub hits: u64,
    /// Tokens verified in full (absent, expired, verified under keys since replaced, or too long
    /// to be remembered).
    pub misses: u64,
    /// Entries held now.
    pub entries: u64,
}

/// The verified tokens of one verifier (one role).
pub(crate) struct TokenCache {
    entries: quick_cache::sync::Cache<Digest, Entry>,
    /// The key sets whose replacement invalidates every entry.
    key_sets: Vec<SharedKeySet>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("capacity", &self.entries.capacity())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// A looked-up token: its digest (to remember it under after verifying it), or `None` when it is
/// not to be remembered; and the key epoch read before verification.
pub(crate) struct Lookup {
    digest: Option<Digest>,
    key_epoch: u64,
}

impl TokenCache {
    /// A cache of at most `capacity` (≥ 1) entries, invalidated when one of `key_sets` is
    /// replaced.
    pub(crate) fn new(capacity: usize, key_sets: Vec<SharedKeySet>) -> Self {
        Self {
            entries: quick_cache::sync::Cache::new(capacity.max(1)),
            key_sets,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The remembered verification of `token` for `hub`, if it may be used at `now`; otherwise
    /// what [`TokenCache::remember`] needs once the token is verified.
    pub(crate) fn find(
        &self,
        token: &str,
        hub: &HubIdentity<'_>,
        now: SystemTime,
    ) -> Result<std::sync::Arc<Verified>, Lookup> {
        let key_epoch = self.key_epoch();
        if token.len() > MAX_CACHED_TOKEN_BYTES {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return Err(Lookup {
                digest: None,
                key_epoch,
            });
        }
        let digest = digest(token, hub);
        if let Some(entry) = self.entries.get(&digest) {
            if entry.key_epoch == key_epoch && entry.verified.validity.check(now).is_ok() {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(entry.verified);
            }
            // Expired, or admitted by keys that may be gone: verified again, and replaced below
            // when it still passes.
            self.entries.remove(&digest);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        Err(Lookup {
            digest: Some(digest),
            key_epoch,
        })
    }

    /// Remembers a successful verification of the token looked up as `lookup`.
    pub(crate) fn remember(&self, lookup: Lookup, verified: std::sync::Arc<Verified>) {
        if let Some(digest) = lookup.digest {
            self.entries.insert(
                digest,
                Entry {
                    verified,
                    key_epoch: lookup.key_epoch,
                },
            );
        }
    }

    /// Lookups so far and the entries held.
    pub(crate) fn stats(&self) -> TokenCacheStats {
        TokenCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.entries.len() as u64,
        }
    }

    /// The sum of the key sets' replacement counts: it changes whenever one of them is replaced.
    fn key_epoch(&self) -> u64 {
        self.key_sets
            .iter()
            .map(SharedKeySet::replacements)
            .fold(0, u64::wrapping_add)
    }
}

/// SHA-256 of the token and the hub identity, each length-prefixed so that no two different
/// inputs read the same.
fn digest(token: &str, hub: &HubIdentity<'_>) -> Digest {
    let mut context = Context::new(&SHA256);
    let mut field = |bytes: &[u8]| {
        context.update(&(bytes.len() as u64).to_le_bytes());
        context.update(bytes);
    };
    field(token.as_bytes());
    field(hub.resource.as_bytes());
    match hub.hub_url {
        Some(url) => {
            field(b"\x01");
            field(url.as_bytes());
        }
        None => field(b"\x00"),
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_separate_tokens_and_identities() {
        let hub = HubIdentity {
            resource: "https://a.example/.well-known/mercure",
            hub_url: Some("https://a.example/.well-known/mercure"),
        };
        let other_audience = HubIdentity {
            resource: "https://b.example/.well-known/mercure",
            ..hub
        };
        let no_url = HubIdentity {
            hub_url: None,
            ..hub
        };
        let d = digest("aaa.bbb.ccc", &hub);
        assert_eq!(d, digest("aaa.bbb.ccc", &hub));
        assert_ne!(d, digest("aaa.bbb.ccd", &hub));
        assert_ne!(d, digest("aaa.bbb.ccc", &other_audience));
        assert_ne!(d, digest("aaa.bbb.ccc", &no_url));
        // Moving bytes from one field to the next changes the digest (length prefixes).
        let split = HubIdentity {
            resource: "xy",
            hub_url: None,
        };
        let moved = HubIdentity {
            resource: "y",
            hub_url: None,
        };
        assert_ne!(digest("ab", &split), digest("abx", &moved));
    }
}
