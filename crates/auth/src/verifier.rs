//! Token verification: signature, algorithm, validity window, then the grant claims.
//!
//! A [`TokenVerifier`] is built once per role (publisher, subscriber) from a [`KeySpec`] and
//! [`VerifierOptions`] — or, as the reference hub's 0.x `*_jwks_url` settings allow, from a JWK Set
//! ([`TokenVerifier::with_key_set`]). [`TokenVerifier::verify`] takes the compact JWS string and
//! returns [`Grants`]; it does no I/O. In order:
//! 1. tokens longer than [`VerifierOptions::max_token_bytes`] are refused before decoding;
//! 2. the header's `alg` must be the configured algorithm (with a JWK Set: one of the allowed
//!    algorithms, the asymmetric ones by default, and the key the `kid` names) — so `none`, and an
//!    RS256 token offered to an HS256 hub keyed with the RSA public key, fail — and the signature
//!    must verify;
//! 3. `exp` and `nbf` are checked *when present*: tokens without `exp` are valid (browser tokens
//!    minted by Symfony often have none), as on the reference hub;
//! 4. the claims become [`Grants`] ([`crate::claims`]).
//!
//! No audience or issuer checks in this generation.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use quicksilver_protocol::SelectorStore;

use crate::claims::MercureClaims;
use crate::error::{AuthError, TokenRejection};
use crate::grants::Grants;
use crate::issuer::DEFAULT_ASYMMETRIC_ALGORITHMS;
use crate::jwks::SharedKeySet;
use crate::key::KeySpec;

/// Default for [`VerifierOptions::max_token_bytes`]: 16 KiB, far above any real token (a token
/// with a thousand short selectors stays under it) and small enough that a hostile one costs
/// little to refuse.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Default for [`VerifierOptions::max_selectors_per_claim`]: the reference hub's limit
/// (`maxClaimMatchers`), so every token it accepts is accepted here.
pub const DEFAULT_MAX_SELECTORS_PER_CLAIM: usize = 1000;

/// Limits and tolerances of token verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierOptions {
    /// Clock skew tolerated on `exp` and `nbf` (default 0).
    pub leeway: Duration,
    /// Longest token accepted, in bytes (default [`DEFAULT_MAX_TOKEN_BYTES`]).
    pub max_token_bytes: usize,
    /// Most selectors accepted in each of the publish and subscribe claims (default
    /// [`DEFAULT_MAX_SELECTORS_PER_CLAIM`]).
    pub max_selectors_per_claim: usize,
}

impl Default for VerifierOptions {
    fn default() -> Self {
        Self {
            leeway: Duration::ZERO,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            max_selectors_per_claim: DEFAULT_MAX_SELECTORS_PER_CLAIM,
        }
    }
}

/// Verifies tokens for one role with one key and algorithm, or with a JWK Set.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: Keys,
    options: VerifierOptions,
}

/// Where a [`TokenVerifier`]'s keys come from.
#[derive(Clone)]
enum Keys {
    /// One configured key, and the validation pinned to its algorithm (boxed: it is several times
    /// the size of the other variant).
    Static {
        key: KeySpec,
        validation: Box<Validation>,
    },
    /// A JWK Set the server keeps current, and the algorithms accepted from it.
    Set {
        keys: SharedKeySet,
        algorithms: Vec<Algorithm>,
    },
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TokenVerifier");
        match &self.keys {
            Keys::Static { key, .. } => d.field("key", key),
            Keys::Set { keys, algorithms } => d.field("keys", keys).field("algorithms", algorithms),
        };
        d.field("options", &self.options).finish_non_exhaustive()
    }
}

/// Why a key set verifier could not be built.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum KeySetError {
    /// An algorithm name is unknown.
    #[error("unknown algorithm {0:?}")]
    UnknownAlgorithm(String),
    /// No algorithm is allowed.
    #[error("no algorithm is allowed")]
    NoAlgorithms,
}

impl TokenVerifier {
    /// A verifier accepting tokens signed with `key`'s algorithm only.
    pub fn new(key: KeySpec, options: VerifierOptions) -> Self {
        let validation = Box::new(validation(key.algorithm()));
        Self {
            keys: Keys::Static { key, validation },
            options,
        }
    }

    /// A verifier accepting tokens signed by a key of `keys` (the one its `kid` names, or any when
    /// it names none) with one of `algorithms` (empty: [`DEFAULT_ASYMMETRIC_ALGORITHMS`]; HMAC
    /// keys of a set need their algorithm named here).
    pub fn with_key_set(
        keys: SharedKeySet,
        algorithms: &[&str],
        options: VerifierOptions,
    ) -> Result<Self, KeySetError> {
        let names = if algorithms.is_empty() {
            DEFAULT_ASYMMETRIC_ALGORITHMS
        } else {
            algorithms
        };
        let mut parsed = Vec::new();
        for name in names {
            let alg = name
                .parse::<Algorithm>()
                .map_err(|_| KeySetError::UnknownAlgorithm(name.to_string()))?;
            if !parsed.contains(&alg) {
                parsed.push(alg);
            }
        }
        if parsed.is_empty() {
            return Err(KeySetError::NoAlgorithms);
        }
        Ok(Self {
            keys: Keys::Set {
                keys,
                algorithms: parsed,
            },
            options,
        })
    }

    /// The configured key, when the verifier has one rather than a JWK Set.
    pub fn key(&self) -> Option<&KeySpec> {
        match &self.keys {
            Keys::Static { key, .. } => Some(key),
            Keys::Set { .. } => None,
        }
    }

    /// The options in use.
    pub fn options(&self) -> &VerifierOptions {
        &self.options
    }

    /// Verifies `token` now and returns its grants, compiling selectors through `store`.
    pub fn verify(&self, store: &SelectorStore, token: &str) -> Result<Grants, AuthError> {
        self.verify_at(store, token, SystemTime::now())
    }

    /// Verifies `token` as of `now`.
    pub fn verify_at(
        &self,
        store: &SelectorStore,
        token: &str,
        now: SystemTime,
    ) -> Result<Grants, AuthError> {
        self.verify_window_at(store, token, now)
            .map(|(grants, _)| grants)
    }

    /// Verifies `token` as of `now` and returns its grants with the validity window they hold in.
    pub(crate) fn verify_window_at(
        &self,
        store: &SelectorStore,
        token: &str,
        now: SystemTime,
    ) -> Result<(Grants, Validity), AuthError> {
        if token.len() > self.options.max_token_bytes {
            return Err(AuthError::TokenTooLong {
                max: self.options.max_token_bytes,
            });
        }
        // Decoded as a JSON object first, as access tokens are: serde would also fill
        // `MercureClaims` from a JSON array (by position), and would skip ignored members without
        // checking their UTF-8. A payload must be a JSON object (RFC 7519).
        let object = match &self.keys {
            Keys::Static { key, validation } => {
                jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                    token,
                    key.decoding_key(),
                    validation,
                )
                .map_err(|e| rejection(e.kind()))?
                .claims
            }
            Keys::Set { keys, algorithms } => {
                let header = crate::jws::header(token)?;
                let alg = header
                    .alg
                    .as_deref()
                    .and_then(|name| name.parse::<Algorithm>().ok())
                    .filter(|alg| algorithms.contains(alg))
                    .ok_or(TokenRejection::Algorithm)?;
                let set = keys.load();
                let candidates = set.candidates(header.kid.as_deref(), alg)?;
                let validation = validation(alg);
                let mut verified = None;
                for key in candidates {
                    match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                        token,
                        key.decoding_key(),
                        &validation,
                    ) {
                        Ok(data) => {
                            verified = Some(data.claims);
                            break;
                        }
                        // Only a bad signature moves on to the next key.
                        Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => continue,
                        Err(e) => return Err(rejection(e.kind()).into()),
                    }
                }
                verified.ok_or(TokenRejection::Signature)?
            }
        };
        let claims: MercureClaims = crate::jws::from_object(object)?;
        let validity = Validity {
            exp: claims.exp,
            nbf: claims.nbf,
            leeway: self.options.leeway,
        };
        validity.check(now)?;
        let grants = claims.into_grants(store, self.options.max_selectors_per_claim)?;
        Ok((grants, validity))
    }

    /// The JWK Set this verifier reads, if it has one rather than a configured key.
    pub(crate) fn key_set(&self) -> Option<&SharedKeySet> {
        match &self.keys {
            Keys::Static { .. } => None,
            Keys::Set { keys, .. } => Some(keys),
        }
    }
}

/// A verified token's validity window: its `exp` and `nbf` (seconds since the epoch) and the
/// leeway of the verifier that accepted it, so a remembered verification can be checked again
/// with exactly the rules that admitted it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Validity {
    pub(crate) exp: Option<f64>,
    pub(crate) nbf: Option<f64>,
    pub(crate) leeway: Duration,
}

impl Validity {
    /// Whether the window holds at `now` ([`check_validity_window`]).
    pub(crate) fn check(&self, now: SystemTime) -> Result<(), TokenRejection> {
        check_validity_window(self.exp, self.nbf, now, self.leeway)
    }
}

/// The signature check for `alg`. Time claims are checked here rather than by jsonwebtoken, which
/// skips an `exp` it cannot read as an integer (a fractional `exp` would then never expire).
fn validation(alg: Algorithm) -> Validation {
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation.leeway = 0;
    validation
}

/// Checks `exp` and `nbf` (seconds since the epoch) against `now` with `leeway`, with the
/// reference hub's boundaries: a token is expired from the `exp` instant on, and valid from the
/// `nbf` instant on.
pub(crate) fn check_validity_window(
    exp: Option<f64>,
    nbf: Option<f64>,
    now: SystemTime,
    leeway: Duration,
) -> Result<(), TokenRejection> {
    let now = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    };
    let leeway = leeway.as_secs_f64();
    if exp.is_some_and(|exp| now - leeway >= exp) {
        return Err(TokenRejection::Expired);
    }
    if nbf.is_some_and(|nbf| now + leeway < nbf) {
        return Err(TokenRejection::NotYetValid);
    }
    Ok(())
}

/// `exp` as a time; `None` when it is beyond what `SystemTime` holds (it then never expires in
/// practice) or before the epoch (already refused as expired).
pub(crate) fn to_system_time(secs: f64) -> Option<SystemTime> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .and_then(|d| UNIX_EPOCH.checked_add(d))
}

pub(crate) fn rejection(kind: &ErrorKind) -> TokenRejection {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::Crypto(_) => TokenRejection::Signature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm => TokenRejection::Algorithm,
        ErrorKind::ExpiredSignature => TokenRejection::Expired,
        ErrorKind::ImmatureSignature => TokenRejection::NotYetValid,
        _ => TokenRejection::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: f64 = 1_700_000_000.0;

    fn at(secs: f64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs_f64(secs)
    }

    #[test]
    fn expiry_boundaries_follow_the_reference_hub() {
        let zero = Duration::ZERO;
        assert_eq!(check_validity_window(None, None, at(T), zero), Ok(()));
        assert_eq!(
            check_validity_window(Some(T + 1.0), None, at(T), zero),
            Ok(())
        );
        assert_eq!(
            check_validity_window(Some(T), None, at(T), zero),
            Err(TokenRejection::Expired)
        );
        assert_eq!(
            check_validity_window(Some(T - 0.5), None, at(T), zero),
            Err(TokenRejection::Expired)
        );
        assert_eq!(check_validity_window(None, Some(T), at(T), zero), Ok(()));
        assert_eq!(
            check_validity_window(None, Some(T + 1.0), at(T), zero),
            Err(TokenRejection::NotYetValid)
        );
    }

    #[test]
    fn leeway_widens_the_window() {
        let five = Duration::from_secs(5);
        assert_eq!(
            check_validity_window(Some(T - 4.0), Some(T + 4.0), at(T), five),
            Ok(())
        );
        assert_eq!(
            check_validity_window(Some(T - 5.0), None, at(T), five),
            Err(TokenRejection::Expired)
        );
        assert_eq!(
            check_validity_window(None, Some(T + 6.0), at(T), five),
            Err(TokenRejection::NotYetValid)
        );
    }

    #[test]
    fn odd_expiry_values_do_not_panic() {
        assert_eq!(to_system_time(-1.0), None);
        assert_eq!(to_system_time(1e300), None);
        assert_eq!(to_system_time(T), Some(at(T)));
    }

    fn mint(payload: &[u8]) -> String {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let key = jsonwebtoken::EncodingKey::from_secret(b"!ChangeThisMercureHubJWTSecretKey!");
        let sig =
            jsonwebtoken::crypto::sign(input.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
                .unwrap();
        format!("{input}.{sig}")
    }

    #[test]
    fn payload_must_be_a_json_object() {
        // Found by fuzzing: both were accepted, the array as `[exp, nbf, mercure]`.
        let v = TokenVerifier::new(
            KeySpec::new("!ChangeThisMercureHubJWTSecretKey!", "HS256").unwrap(),
            VerifierOptions::default(),
        );
        let store = SelectorStore::default();
        let array = mint(br#"[null, null, {"publish": ["*"]}]"#);
        assert_eq!(
            v.verify_at(&store, &array, at(T)).unwrap_err(),
            AuthError::InvalidToken(TokenRejection::Malformed)
        );
        let bad_utf8 = mint(b"{\"ignored\": \"\x90\", \"mercure\": {\"publish\": [\"*\"]}}");
        assert!(v.verify_at(&store, &bad_utf8, at(T)).is_err());
        let good = mint(br#"{"mercure": {"publish": ["*"]}}"#);
        assert!(v.verify_at(&store, &good, at(T)).unwrap().publish_all());
    }

    #[test]
    fn debug_shows_no_key_material() {
        let v = TokenVerifier::new(
            KeySpec::new("hunter2-hunter2", "HS256").unwrap(),
            VerifierOptions::default(),
        );
        let shown = format!("{v:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
