//! Verification keys: a key string and an algorithm name, checked once at start-up.
//!
//! HMAC algorithms (`HS256`, the default, `HS384`, `HS512`) use the key's bytes as the shared
//! secret. Asymmetric algorithms (`RS*`, `PS*`, `ES256`, `ES384`, `EdDSA`) need a PEM-encoded public
//! key of the matching type. Pairings that can only be a mistake are refused with a [`KeyError`] so
//! the server refuses to start rather than reject (or worse, accept) tokens later: a PEM key used as
//! an HMAC secret (the classic algorithm-confusion setup), a non-PEM key with an asymmetric
//! algorithm, a private key where the public one belongs, an empty key, an unknown algorithm.
//!
//! A [`KeySpec`] never shows its key material: its `Debug` output names the algorithm only.

use std::fmt;
use std::str::FromStr;

use jsonwebtoken::{Algorithm, DecodingKey};
use thiserror::Error;

/// The algorithm used when none is configured, as on the reference hub.
pub const DEFAULT_ALGORITHM: &str = "HS256";

/// Why a key and algorithm pair was refused. Never contains key material.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The key is empty.
    #[error("the JWT key is empty")]
    Empty,
    /// The algorithm name is not one of the supported ones (names are case-sensitive).
    #[error(
        "unknown JWT algorithm {0:?} (expected one of HS256, HS384, HS512, RS256, RS384, RS512, \
         PS256, PS384, PS512, ES256, ES384, EdDSA)"
    )]
    UnknownAlgorithm(String),
    /// A PEM key was paired with an HMAC algorithm: it would be used as a shared secret, which is
    /// never what was meant and lets anyone holding the public key forge tokens.
    #[error("the JWT key is a PEM key but the algorithm {0} is HMAC; use an asymmetric algorithm")]
    PemWithHmac(&'static str),
    /// An asymmetric algorithm was paired with a key that is not PEM.
    #[error("the algorithm {0} needs a PEM-encoded public key")]
    NotPem(&'static str),
    /// A private key was given where the public key belongs.
    #[error("the JWT key is a private key; configure the matching public key")]
    PrivateKey,
    /// The PEM could not be read as a public key of the algorithm's type.
    #[error("the JWT key is not a valid PEM public key for {0}")]
    InvalidPublicKey(&'static str),
}

/// A verification key with the one algorithm tokens must be signed with.
#[derive(Clone)]
pub struct KeySpec {
    algorithm: Algorithm,
    key: DecodingKey,
}

impl fmt::Debug for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySpec")
            .field("algorithm", &algorithm_name(self.algorithm))
            .finish_non_exhaustive()
    }
}

impl KeySpec {
    /// Checks and loads `key` for `algorithm` (an empty name means [`DEFAULT_ALGORITHM`]).
    pub fn new(key: impl AsRef<[u8]>, algorithm: &str) -> Result<Self, KeyError> {
        let key = key.as_ref();
        let name = if algorithm.is_empty() {
            DEFAULT_ALGORITHM
        } else {
            algorithm
        };
        let algorithm =
            Algorithm::from_str(name).map_err(|_| KeyError::UnknownAlgorithm(name.to_string()))?;
        let name = algorithm_name(algorithm);
        if key.iter().all(u8::is_ascii_whitespace) {
            return Err(KeyError::Empty);
        }
        let is_pem = trim_ascii_start(key).starts_with(b"-----BEGIN");
        let decoding = match algorithm {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                if is_pem {
                    return Err(KeyError::PemWithHmac(name));
                }
                Ok(DecodingKey::from_secret(key))
            }
            _ if !is_pem => return Err(KeyError::NotPem(name)),
            // jsonwebtoken would load some private keys as if they were public ones and then fail
            // every verification; say what is wrong instead.
            _ if contains(key, b"PRIVATE KEY-----") => return Err(KeyError::PrivateKey),
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => DecodingKey::from_rsa_pem(key),
            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(key),
            Algorithm::EdDSA => DecodingKey::from_ed_pem(key),
        }
        .map_err(|_| KeyError::InvalidPublicKey(name))?;
        Ok(Self {
            algorithm,
            key: decoding,
        })
    }

    /// The algorithm tokens must be signed with.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The algorithm's name as written in a JWT header (`HS256`, `EdDSA`, …).
    pub fn algorithm_name(&self) -> &'static str {
        algorithm_name(self.algorithm)
    }

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }
}

fn algorithm_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
    }
}

fn trim_ascii_start(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    &b[start..]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_PUBLIC: &str = include_str!("../tests/fixtures/rsa_public.pem");
    const RSA_PRIVATE: &str = include_str!("../tests/fixtures/rsa_private.pem");
    const EC_PUBLIC: &str = include_str!("../tests/fixtures/ec_public.pem");
    const ED_PUBLIC: &str = include_str!("../tests/fixtures/ed25519_public.pem");

    #[test]
    fn hmac_is_the_default() {
        let k = KeySpec::new("!ChangeThisMercureHubJWTSecretKey!", "").unwrap();
        assert_eq!(k.algorithm(), Algorithm::HS256);
        assert_eq!(k.algorithm_name(), "HS256");
    }

    #[test]
    fn every_supported_algorithm_loads_its_key_type() {
        for alg in ["HS256", "HS384", "HS512"] {
            KeySpec::new("secret", alg).unwrap();
        }
        for alg in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"] {
            KeySpec::new(RSA_PUBLIC, alg).unwrap();
        }
        for alg in ["ES256", "ES384"] {
            KeySpec::new(EC_PUBLIC, alg).unwrap();
        }
        KeySpec::new(ED_PUBLIC, "EdDSA").unwrap();
    }

    #[test]
    fn refuses_mistaken_pairings() {
        assert_eq!(
            KeySpec::new(RSA_PUBLIC, "HS256").unwrap_err(),
            KeyError::PemWithHmac("HS256")
        );
        assert_eq!(
            KeySpec::new("secret", "RS256").unwrap_err(),
            KeyError::NotPem("RS256")
        );
        assert_eq!(KeySpec::new("", "HS256").unwrap_err(), KeyError::Empty);
        assert_eq!(KeySpec::new("  \n", "RS256").unwrap_err(), KeyError::Empty);
        assert_eq!(
            KeySpec::new("secret", "none").unwrap_err(),
            KeyError::UnknownAlgorithm("none".into())
        );
        assert_eq!(
            KeySpec::new("secret", "hs256").unwrap_err(),
            KeyError::UnknownAlgorithm("hs256".into())
        );
        assert_eq!(
            KeySpec::new(RSA_PRIVATE, "RS256").unwrap_err(),
            KeyError::PrivateKey
        );
        assert_eq!(
            KeySpec::new(EC_PUBLIC, "RS256").unwrap_err(),
            KeyError::InvalidPublicKey("RS256")
        );
        assert_eq!(
            KeySpec::new(RSA_PUBLIC, "ES256").unwrap_err(),
            KeyError::InvalidPublicKey("ES256")
        );
        assert_eq!(
            KeySpec::new(
                "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n",
                "EdDSA"
            )
            .unwrap_err(),
            KeyError::InvalidPublicKey("EdDSA")
        );
    }

    #[test]
    fn debug_never_shows_the_key() {
        let k = KeySpec::new("super-secret-value", "HS512").unwrap();
        let shown = format!("{k:?}");
        assert!(!shown.contains("super-secret-value"), "{shown}");
        assert!(shown.contains("HS512"), "{shown}");
    }
}
