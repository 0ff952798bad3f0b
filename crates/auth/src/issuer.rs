//! Trusted issuers: each issuer identifier bound to its own keys and algorithm allowlist.
//!
//! The specification ("Token Validation") requires every trusted key to be associated with the
//! issuer it belongs to — an authorization server's issuer identifier, or the stable identifier a
//! self-issuing publisher chose — and a token to be verified only with the keys of *its* `iss`,
//! never a pool spanning issuers, so that one trusted issuer cannot mint tokens in another's name.
//! A [`TrustedIssuer`] is that binding; [`crate::AccessTokenVerifier`] holds one per issuer
//! identifier for one role (publishers or subscribers, which should use different keys).
//!
//! The algorithm allowlist is explicit and never comes from the token. By default it is the
//! algorithms the configured keys are pinned to, plus — for keys that are not pinned (JWK Set
//! entries without `alg`) and for sets that rotate — [`DEFAULT_ASYMMETRIC_ALGORITHMS`]. HMAC
//! algorithms are only ever allowed for configured secrets or by an explicit
//! [`TrustedIssuer::with_algorithms`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use jsonwebtoken::Algorithm;
use thiserror::Error;

use crate::jwks::{KeySet, SharedKeySet};
use crate::key::KeySpec;

/// The allowlist used for keys not pinned to one algorithm: the asymmetric algorithms this hub
/// implements (the specification recommends at least `EdDSA`, `ES256` and `RS256`). HMAC is left
/// out so a public key can never be taken for a shared secret.
pub const DEFAULT_ASYMMETRIC_ALGORITHMS: &[&str] = &[
    "EdDSA", "ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
];

/// Why an issuer could not be configured.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IssuerError {
    /// The issuer identifier is empty.
    #[error("the issuer identifier is empty")]
    EmptyIdentifier,
    /// The algorithm allowlist is empty.
    #[error("issuer {0:?} has no allowed algorithm")]
    NoAlgorithms(String),
    /// An algorithm name is unknown (names are case-sensitive; `none` is never accepted).
    #[error("issuer {issuer:?}: unknown JWT algorithm {name:?}")]
    UnknownAlgorithm {
        /// The issuer.
        issuer: String,
        /// The name given.
        name: String,
    },
    /// Two issuers of one role have the same identifier.
    #[error("issuer {0:?} is configured twice")]
    Duplicate(String),
}

/// Where an issuer's keys come from.
#[derive(Clone, Debug)]
pub enum IssuerKeys {
    /// Keys fixed at start-up (configured secrets and PEM keys, or a JWK Set read once).
    Fixed(Arc<KeySet>),
    /// A set the server replaces when it refetches the issuer's JWK Set.
    Shared(SharedKeySet),
}

impl IssuerKeys {
    /// The keys to verify one token with.
    pub(crate) fn load(&self) -> Arc<KeySet> {
        match self {
            IssuerKeys::Fixed(set) => Arc::clone(set),
            IssuerKeys::Shared(shared) => shared.load(),
        }
    }
}

impl From<KeySpec> for IssuerKeys {
    fn from(spec: KeySpec) -> Self {
        IssuerKeys::Fixed(Arc::new(KeySet::from_key(spec)))
    }
}

impl From<KeySet> for IssuerKeys {
    fn from(set: KeySet) -> Self {
        IssuerKeys::Fixed(Arc::new(set))
    }
}

impl From<SharedKeySet> for IssuerKeys {
    fn from(shared: SharedKeySet) -> Self {
        IssuerKeys::Shared(shared)
    }
}

/// An issuer identifier (the exact `iss` value) with its keys and allowed algorithms.
#[derive(Clone)]
pub struct TrustedIssuer {
    identifier: String,
    keys: IssuerKeys,
    algorithms: Vec<Algorithm>,
}

impl fmt::Debug for TrustedIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustedIssuer")
            .field("identifier", &self.identifier)
            .field("keys", &self.keys)
            .field("algorithms", &self.algorithms)
            .finish()
    }
}

impl TrustedIssuer {
    /// Trusts `identifier` with `keys` (a [`KeySpec`], a [`KeySet`] or a [`SharedKeySet`]) and the
    /// default allowlist (see the module documentation).
    pub fn new(identifier: &str, keys: impl Into<IssuerKeys>) -> Result<Self, IssuerError> {
        if identifier.is_empty() {
            return Err(IssuerError::EmptyIdentifier);
        }
        let keys = keys.into();
        let mut algorithms = Vec::new();
        let mut add_defaults = matches!(keys, IssuerKeys::Shared(_));
        if let IssuerKeys::Fixed(set) = &keys {
            for pinned in set.pinned_algorithms() {
                match pinned {
                    Some(alg) if !algorithms.contains(&alg) => algorithms.push(alg),
                    Some(_) => {}
                    None => add_defaults = true,
                }
            }
        }
        if add_defaults {
            for name in DEFAULT_ASYMMETRIC_ALGORITHMS {
                let alg = parse_algorithm(identifier, name)?;
                if !algorithms.contains(&alg) {
                    algorithms.push(alg);
                }
            }
        }
        if algorithms.is_empty() {
            return Err(IssuerError::NoAlgorithms(identifier.to_string()));
        }
        Ok(Self {
            identifier: identifier.to_string(),
            keys,
            algorithms,
        })
    }

    /// Replaces the allowlist with `names` (`HS256`, `ES256`, …). A key still verifies only the
    /// algorithms of its type (and its pinned one).
    pub fn with_algorithms<I, S>(mut self, names: I) -> Result<Self, IssuerError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut algorithms = Vec::new();
        for name in names {
            let alg = parse_algorithm(&self.identifier, name.as_ref())?;
            if !algorithms.contains(&alg) {
                algorithms.push(alg);
            }
        }
        if algorithms.is_empty() {
            return Err(IssuerError::NoAlgorithms(self.identifier));
        }
        self.algorithms = algorithms;
        Ok(self)
    }

    /// The issuer identifier.
    pub fn identifier(&self) -> &str {
        &self.identifier
    }

    /// The allowed algorithms.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }

    pub(crate) fn keys(&self) -> &IssuerKeys {
        &self.keys
    }
}

fn parse_algorithm(issuer: &str, name: &str) -> Result<Algorithm, IssuerError> {
    Algorithm::from_str(name).map_err(|_| IssuerError::UnknownAlgorithm {
        issuer: issuer.to_string(),
        name: name.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWKS: &str = include_str!("../tests/fixtures/jwks.json");

    #[test]
    fn allowlist_defaults() {
        let hs = TrustedIssuer::new(
            "https://localhost",
            KeySpec::new("!ChangeThisMercureHubJWTSecretKey!", "HS256").unwrap(),
        )
        .unwrap();
        assert_eq!(hs.algorithms(), [Algorithm::HS256]);
        assert_eq!(hs.identifier(), "https://localhost");

        // A JWK Set with unpinned keys gets the asymmetric defaults plus the pinned ones.
        let set = KeySet::from_jwks(JWKS.as_bytes()).unwrap();
        let fixed = TrustedIssuer::new("https://as.example.com", set.clone()).unwrap();
        assert!(
            fixed.algorithms().contains(&Algorithm::HS256),
            "oct-1 is pinned to HS256"
        );
        assert!(fixed.algorithms().contains(&Algorithm::EdDSA));

        let shared = TrustedIssuer::new("https://as.example.com", SharedKeySet::new(set)).unwrap();
        assert!(!shared.algorithms().contains(&Algorithm::HS256));
        assert_eq!(
            shared.algorithms().len(),
            DEFAULT_ASYMMETRIC_ALGORITHMS.len()
        );
    }

    #[test]
    fn explicit_allowlists() {
        let set = KeySet::from_jwks(JWKS.as_bytes()).unwrap();
        let i = TrustedIssuer::new("iss", set).unwrap();
        let i = i.with_algorithms(["ES256", "ES256", "RS256"]).unwrap();
        assert_eq!(i.algorithms(), [Algorithm::ES256, Algorithm::RS256]);
        assert_eq!(
            i.clone().with_algorithms(["none"]).unwrap_err(),
            IssuerError::UnknownAlgorithm {
                issuer: "iss".into(),
                name: "none".into()
            }
        );
        assert_eq!(
            i.with_algorithms(Vec::<String>::new()).unwrap_err(),
            IssuerError::NoAlgorithms("iss".into())
        );
        assert_eq!(
            TrustedIssuer::new("", KeySet::new()).unwrap_err(),
            IssuerError::EmptyIdentifier
        );
        assert_eq!(
            TrustedIssuer::new("iss", KeySet::new()).unwrap_err(),
            IssuerError::NoAlgorithms("iss".into())
        );
    }

    #[test]
    fn debug_shows_no_key_material() {
        let i =
            TrustedIssuer::new("iss", KeySpec::new("hunter2-hunter2", "HS256").unwrap()).unwrap();
        let shown = format!("{i:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("iss"), "{shown}");
    }
}
