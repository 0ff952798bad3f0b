//! One revocation ([`Revocation`]) and the node's copy of all of them ([`RevocationSet`]), which
//! every request's token is checked against.
//!
//! The copy is an immutable [`RevocationIndex`] behind an [`ArcSwap`]: a check is one atomic load,
//! and when no revocation is in force (the usual case) nothing more; otherwise one hash lookup by
//! the token's `jti` and one by its `sub`. Only the syncer writes, by building a new index and
//! swapping it in, so a check never waits for a change.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use quicksilver_auth::{Identity, MAX_CLAIM_BYTES};
use serde::{Deserialize, Serialize};

/// Longest `reason` kept with a revocation, in bytes.
pub const MAX_REASON_BYTES: usize = 256;

/// One revocation: every token with this `jti`, or every token of this `sub` issued before
/// `before`, optionally only those of the issuer `iss`. Kept until `exp`, when every token it
/// covers has expired. This is both the stored document and what the admin endpoint lists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    /// The token id revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The subject whose tokens are revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Only tokens of this issuer (`iss`); none: of any issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// For a subject: tokens issued (`iat`) before this time (seconds since the Unix epoch) are
    /// revoked; a token without `iat` is revoked too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
    /// When the revocation lapses (seconds since the Unix epoch).
    pub exp: u64,
    /// When it was made (or last widened).
    pub created: u64,
    /// Why, for the operators who list it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What a revocation names: a token id or a subject, and the issuer it is limited to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// A token id.
    TokenId(&'a str),
    /// A subject.
    Subject(&'a str),
}

/// The key of the revocation of `target` (with `issuer`): unique per token id or subject and
/// issuer. The issuer's length comes first so that no two pairs share a key.
pub fn key_of(target: Target<'_>, issuer: Option<&str>) -> String {
    let (kind, value) = match target {
        Target::TokenId(v) => ("jti", v),
        Target::Subject(v) => ("sub", v),
    };
    let issuer = issuer.unwrap_or("");
    format!("{kind}:{}:{issuer}{value}", issuer.len())
}

impl Revocation {
    /// What it names.
    pub fn target(&self) -> Option<Target<'_>> {
        match (&self.jti, &self.sub) {
            (Some(jti), None) => Some(Target::TokenId(jti)),
            (None, Some(sub)) => Some(Target::Subject(sub)),
            _ => None,
        }
    }

    /// Its key in the store (see [`key_of`]).
    pub fn key(&self) -> Option<String> {
        self.target().map(|t| key_of(t, self.iss.as_deref()))
    }

    /// Checks what a client sent: one target, values a token could carry, `before` only for a
    /// subject. Messages are for the client.
    pub fn validate(&self) -> Result<(), String> {
        let target = self
            .target()
            .ok_or("name exactly one of \"jti\" and \"sub\"")?;
        let (name, value) = match target {
            Target::TokenId(v) => ("jti", v),
            Target::Subject(v) => ("sub", v),
        };
        // The hub keeps no claim longer than this, so a longer one could never match.
        for (name, value) in [(name, Some(value)), ("iss", self.iss.as_deref())] {
            if let Some(value) = value {
                if value.is_empty() || value.len() > MAX_CLAIM_BYTES {
                    return Err(format!("\"{name}\" must hold 1 to {MAX_CLAIM_BYTES} bytes"));
                }
            }
        }
        if matches!(target, Target::TokenId(_)) && self.before.is_some() {
            return Err("\"before\" applies to a subject (\"sub\") only".into());
        }
        if self
            .reason
            .as_ref()
            .is_some_and(|r| r.len() > MAX_REASON_BYTES)
        {
            return Err(format!(
                "\"reason\" must hold at most {MAX_REASON_BYTES} bytes"
            ));
        }
        Ok(())
    }

    /// This revocation widened by `older`, one of the same key already in force: the later
    /// `before` and `exp` win, so revoking again never lifts anything.
    pub fn merged_with(mut self, older: &Revocation) -> Self {
        self.exp = self.exp.max(older.exp);
        self.before = self.before.max(older.before);
        if self.reason.is_none() {
            self.reason.clone_from(&older.reason);
        }
        self
    }
}

/// One revocation as checks read it.
#[derive(Debug)]
struct Rule {
    issuer: Option<Box<str>>,
    /// Tokens issued before this (seconds) are covered; `f64::INFINITY` for a token id.
    before: f64,
    exp: u64,
}

impl Rule {
    fn covers(&self, issuer: Option<&str>, issued_at: Option<f64>, now: u64) -> bool {
        self.exp > now
            && self.issuer.as_deref().is_none_or(|i| Some(i) == issuer)
            // A token without `iat` cannot show it was issued after: covered.
            && issued_at.is_none_or(|iat| iat < self.before)
    }
}

/// Revocations compiled for checks: by token id and by subject.
#[derive(Debug, Default)]
pub struct RevocationIndex {
    by_jti: HashMap<Box<str>, Vec<Rule>>,
    by_sub: HashMap<Box<str>, Vec<Rule>>,
    /// The earliest `exp` (`u64::MAX` when empty).
    next_expiry: u64,
    len: usize,
}

impl RevocationIndex {
    /// The index of `revocations` (those without a valid target are skipped).
    pub fn new<'a>(revocations: impl IntoIterator<Item = &'a Revocation>) -> Self {
        let mut index = Self {
            next_expiry: u64::MAX,
            ..Self::default()
        };
        for r in revocations {
            let (map, value, before) = match r.target() {
                Some(Target::TokenId(v)) => (&mut index.by_jti, v, f64::INFINITY),
                Some(Target::Subject(v)) => (&mut index.by_sub, v, r.before.unwrap_or(0) as f64),
                None => continue,
            };
            map.entry(value.into()).or_default().push(Rule {
                issuer: r.iss.as_deref().map(Into::into),
                before,
                exp: r.exp,
            });
            index.next_expiry = index.next_expiry.min(r.exp);
            index.len += 1;
        }
        index
    }

    /// Whether a token naming `identity` is revoked at `now` (seconds since the Unix epoch).
    pub fn covers(&self, identity: &Identity, now: u64) -> bool {
        self.covers_then(identity, || now)
    }

    /// [`RevocationIndex::covers`], reading the clock (`now`) only when a revocation names the
    /// token: most tokens are named by none, and their check is two hash lookups.
    fn covers_then(&self, identity: &Identity, now: impl FnOnce() -> u64) -> bool {
        if self.len == 0 {
            return false;
        }
        let jti_rules = identity
            .token_id
            .as_deref()
            .and_then(|jti| self.by_jti.get(jti));
        let sub_rules = identity
            .subject
            .as_deref()
            .and_then(|sub| self.by_sub.get(sub));
        if jti_rules.is_none() && sub_rules.is_none() {
            return false;
        }
        let now = now();
        let issuer = identity.issuer.as_deref();
        if jti_rules.is_some_and(|rules| rules.iter().any(|r| r.covers(issuer, None, now))) {
            return true;
        }
        sub_rules.is_some_and(|rules| {
            let issued_at = identity.issued_at.map(|t| {
                t.duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64())
            });
            rules.iter().any(|r| r.covers(issuer, issued_at, now))
        })
    }

    /// How many revocations it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The earliest time one of them lapses (`u64::MAX` when empty).
    pub fn next_expiry(&self) -> u64 {
        self.next_expiry
    }
}

/// The node's copy of the revocations in force, with what it refused.
#[derive(Debug, Default)]
pub struct RevocationSet {
    index: ArcSwap<RevocationIndex>,
    /// The revocations in force, by key, for listing (only the syncer writes it).
    listed: ArcSwap<BTreeMap<String, Revocation>>,
    /// Requests refused because their token was revoked.
    pub refused: Counter,
}

impl RevocationSet {
    /// Whether a token naming `identity` is revoked now. Costs one atomic load when nothing is
    /// revoked.
    pub fn covers(&self, identity: &Identity) -> bool {
        let index = self.index.load();
        !index.is_empty() && index.covers_then(identity, unix_now)
    }

    /// Puts `revocations` in force (the syncer's whole copy).
    pub fn replace(&self, revocations: BTreeMap<String, Revocation>) {
        self.index
            .store(Arc::new(RevocationIndex::new(revocations.values())));
        self.listed.store(Arc::new(revocations));
    }

    /// The revocations in force, by key.
    pub fn listed(&self) -> Arc<BTreeMap<String, Revocation>> {
        self.listed.load_full()
    }

    /// How many are in force.
    pub fn len(&self) -> usize {
        self.index.load().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn identity(
        iss: Option<&str>,
        sub: Option<&str>,
        jti: Option<&str>,
        iat: Option<u64>,
    ) -> Identity {
        Identity {
            issuer: iss.map(Into::into),
            subject: sub.map(Into::into),
            token_id: jti.map(Into::into),
            issued_at: iat.map(|s| UNIX_EPOCH + Duration::from_secs(s)),
            ..Identity::default()
        }
    }

    fn jti(value: &str, iss: Option<&str>, exp: u64) -> Revocation {
        Revocation {
            jti: Some(value.into()),
            sub: None,
            iss: iss.map(Into::into),
            before: None,
            exp,
            created: 0,
            reason: None,
        }
    }

    fn sub(value: &str, before: u64, exp: u64) -> Revocation {
        Revocation {
            jti: None,
            sub: Some(value.into()),
            iss: None,
            before: Some(before),
            exp,
            created: 0,
            reason: None,
        }
    }

    #[test]
    fn a_token_is_covered_by_its_id_or_by_its_subject_before_a_time() {
        let revocations = [
            jti("t1", None, 1_000),
            jti("t2", Some("https://a.example"), 1_000),
            sub("alice", 500, 1_000),
        ];
        let index = RevocationIndex::new(&revocations);
        let now = 100;
        assert!(index.covers(&identity(None, None, Some("t1"), None), now));
        assert!(!index.covers(&identity(None, None, Some("t9"), None), now));
        // Limited to an issuer.
        assert!(index.covers(
            &identity(Some("https://a.example"), None, Some("t2"), None),
            now
        ));
        assert!(!index.covers(
            &identity(Some("https://b.example"), None, Some("t2"), None),
            now
        ));
        assert!(!index.covers(&identity(None, None, Some("t2"), None), now));
        // A subject's tokens issued before the time; those after are spared; without iat, covered.
        assert!(index.covers(&identity(None, Some("alice"), None, Some(499)), now));
        assert!(!index.covers(&identity(None, Some("alice"), None, Some(500)), now));
        assert!(index.covers(&identity(None, Some("alice"), None, None), now));
        assert!(!index.covers(&identity(None, Some("bob"), None, Some(1)), now));
        // A token naming a revoked jti is covered whatever its subject.
        assert!(index.covers(&identity(None, Some("bob"), Some("t1"), Some(900)), now));
        // Lapsed revocations cover nothing.
        assert!(!index.covers(&identity(None, None, Some("t1"), None), 1_000));
        assert_eq!(index.next_expiry(), 1_000);
        assert!(!RevocationIndex::new(&[]).covers(&identity(None, None, Some("t1"), None), now));
    }

    #[test]
    fn keys_validation_and_merging() {
        assert_eq!(key_of(Target::TokenId("x"), None), "jti:0:x");
        assert_eq!(key_of(Target::Subject("b:c"), Some("a")), "sub:1:ab:c");
        assert_ne!(
            key_of(Target::Subject("c"), Some("ab")),
            key_of(Target::Subject("bc"), Some("a"))
        );
        let mut r = jti("t", None, 10);
        assert!(r.validate().is_ok());
        r.sub = Some("s".into());
        assert!(r.validate().is_err(), "both jti and sub");
        let mut r = jti("t", None, 10);
        r.before = Some(5);
        assert!(r.validate().is_err(), "before on a jti");
        let r = jti(&"x".repeat(MAX_CLAIM_BYTES + 1), None, 10);
        assert!(r.validate().is_err(), "a jti the hub would never keep");

        let older = sub("s", 500, 2_000);
        let newer = sub("s", 400, 1_000).merged_with(&older);
        assert_eq!((newer.before, newer.exp), (Some(500), 2_000));
    }
}
