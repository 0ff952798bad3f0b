//! Trusted verification keys of one issuer: a [`KeySet`], read from a JWK Set or built from
//! configured keys, and [`SharedKeySet`], the handle through which the server rotates it.
//!
//! The server fetches an issuer's JWK Set (RFC 7517) — from the authorization server's metadata
//! (RFC 8414) or a configured URL — and hands the bytes to [`KeySet::from_jwks`]. This crate never
//! fetches anything. Rotation is the server's refetch followed by [`SharedKeySet::replace`]: every
//! verification loads the current set once (an `Arc` clone under a read lock held for
//! nanoseconds), so a swap takes effect for the next token and never blocks or tears one being
//! verified. A token naming a `kid` the set does not have fails with
//! [`TokenRejection::UnknownKey`], which the server may take as a
//! hint to refetch early (rate-limited: unknown `kid`s are attacker-chosen).
//!
//! Keys that cannot be used are skipped, as RFC 7517 §5 asks, and reported in
//! [`KeySet::skipped`]: unknown `kty`, `use` other than `sig`, `key_ops` without `verify`, an
//! `alg` this hub does not implement, unsupported curves (only P-256, P-384 and Ed25519), RSA
//! moduli under 2048 bits, `oct` secrets under 256 bits, or malformed parameters. A set left
//! without any usable key is an error, so a bad refetch cannot replace a good set with nothing.
//!
//! Each key knows its type (and curve) and, when the JWK or the configuration says so, its one
//! algorithm; a token's `alg` is only ever tried with keys of the matching type, which is what
//! defeats algorithm confusion (an RSA public key used as an HMAC secret) whatever the allowlist.
//!
//! No key material is ever shown by `Debug`.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use parking_lot::RwLock;
use serde_json::Value;
use thiserror::Error;

use crate::error::TokenRejection;
use crate::key::KeySpec;

/// Why a JWK Set was refused as a whole.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwksError {
    /// Not JSON, or not an object with a `keys` array.
    #[error("not a JWK Set (a JSON object with a \"keys\" array)")]
    NotAJwkSet,
    /// No key of the set can verify tokens here.
    #[error("the JWK Set has no usable verification key ({skipped} skipped)")]
    NoUsableKeys {
        /// How many keys were skipped.
        skipped: usize,
    },
}

/// A key of a JWK Set that was skipped, and why (for the server's logs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedKey {
    /// Its position in the `keys` array.
    pub index: usize,
    /// Its `kid`, if it has one.
    pub kid: Option<String>,
    /// A short static reason.
    pub reason: &'static str,
}

/// The type (and curve) of a key, which decides the algorithms it may verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// A shared secret (`oct`): `HS256`, `HS384`, `HS512`.
    Hmac,
    /// An RSA public key: `RS*` and `PS*`.
    Rsa,
    /// An EC P-256 public key: `ES256`.
    EcP256,
    /// An EC P-384 public key: `ES384`.
    EcP384,
    /// An Ed25519 public key (`OKP`): `EdDSA`.
    Ed25519,
}

impl KeyKind {
    fn of_algorithm(alg: Algorithm) -> Self {
        match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => KeyKind::Hmac,
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => KeyKind::Rsa,
            Algorithm::ES256 => KeyKind::EcP256,
            Algorithm::ES384 => KeyKind::EcP384,
            Algorithm::EdDSA => KeyKind::Ed25519,
        }
    }
}

/// One trusted verification key.
#[derive(Clone)]
pub(crate) struct VerificationKey {
    kid: Option<String>,
    kind: KeyKind,
    /// The one algorithm this key is for, when pinned by its JWK `alg` or its configuration.
    algorithm: Option<Algorithm>,
    key: DecodingKey,
}

impl fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerificationKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl VerificationKey {
    fn can_verify(&self, alg: Algorithm) -> bool {
        KeyKind::of_algorithm(alg) == self.kind
            && match self.algorithm {
                Some(pinned) => pinned == alg,
                None => true,
            }
    }

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }
}

/// The trusted keys of one issuer.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: Vec<VerificationKey>,
    skipped: Vec<SkippedKey>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field("keys", &self.keys)
            .field("skipped", &self.skipped.len())
            .finish()
    }
}

impl KeySet {
    /// An empty set, to fill with [`KeySet::with_key`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A set holding one configured key (an HMAC secret or a PEM public key, pinned to its
    /// algorithm), with no `kid`: it is tried for every token of its algorithm.
    pub fn from_key(spec: KeySpec) -> Self {
        Self::new().with_key(None, spec)
    }

    /// Adds a configured key, optionally with the `kid` tokens name it by.
    pub fn with_key(mut self, kid: Option<&str>, spec: KeySpec) -> Self {
        self.keys.push(VerificationKey {
            kid: kid.map(str::to_string),
            kind: KeyKind::of_algorithm(spec.algorithm()),
            algorithm: Some(spec.algorithm()),
            key: spec.decoding_key().clone(),
        });
        self
    }

    /// Reads a JWK Set document (RFC 7517 §5), skipping keys that cannot be used (see the module
    /// documentation) and refusing a set with none left.
    pub fn from_jwks(json: &[u8]) -> Result<Self, JwksError> {
        let doc: Value = serde_json::from_slice(json).map_err(|_| JwksError::NotAJwkSet)?;
        let Some(Value::Array(entries)) = doc.get("keys") else {
            return Err(JwksError::NotAJwkSet);
        };
        let mut set = Self::new();
        for (index, entry) in entries.iter().enumerate() {
            match parse_jwk(entry) {
                Ok(key) => set.keys.push(key),
                Err(reason) => set.skipped.push(SkippedKey {
                    index,
                    kid: entry.get("kid").and_then(Value::as_str).map(str::to_string),
                    reason,
                }),
            }
        }
        if set.keys.is_empty() {
            return Err(JwksError::NoUsableKeys {
                skipped: set.skipped.len(),
            });
        }
        Ok(set)
    }

    /// How many usable keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no usable key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The `kid` and type of each usable key, in order.
    pub fn keys(&self) -> impl Iterator<Item = (Option<&str>, KeyKind)> {
        self.keys.iter().map(|k| (k.kid.as_deref(), k.kind))
    }

    /// Each key's pinned algorithm (`None`: any of its type).
    pub(crate) fn pinned_algorithms(&self) -> impl Iterator<Item = Option<Algorithm>> + '_ {
        self.keys.iter().map(|k| k.algorithm)
    }

    /// The keys of the JWK Set that were skipped, and why.
    pub fn skipped(&self) -> &[SkippedKey] {
        &self.skipped
    }

    /// The keys to try for a token signed with `alg` and naming `kid`.
    ///
    /// With a `kid`, only keys with that `kid` — and keys configured without one — are
    /// candidates: none is [`TokenRejection::UnknownKey`]. Without a `kid`, every key is. Then
    /// only keys of `alg`'s type (and pinned to `alg`, when pinned) remain: none is
    /// [`TokenRejection::Algorithm`].
    pub(crate) fn candidates(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Vec<&VerificationKey>, TokenRejection> {
        let named: Vec<_> = self
            .keys
            .iter()
            .filter(|k| match (kid, k.kid.as_deref()) {
                (Some(wanted), Some(have)) => wanted == have,
                _ => true,
            })
            .collect();
        if named.is_empty() {
            return Err(TokenRejection::UnknownKey);
        }
        let usable: Vec<_> = named.into_iter().filter(|k| k.can_verify(alg)).collect();
        if usable.is_empty() {
            return Err(TokenRejection::Algorithm);
        }
        Ok(usable)
    }
}

/// An issuer's key set that the server may replace at any time (after refetching its JWK Set).
/// Clones share the same set.
#[derive(Clone)]
pub struct SharedKeySet(Arc<SharedSlot>);

/// The current set, and how many times it was replaced: remembered verifications
/// ([`crate::cache`]) compare that count to know whether the keys that admitted a token may
/// since have gone.
struct SharedSlot {
    set: RwLock<Arc<KeySet>>,
    replaced: AtomicU64,
}

impl fmt::Debug for SharedKeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SharedKeySet").field(&self.load()).finish()
    }
}

impl SharedKeySet {
    /// A handle on `set`.
    pub fn new(set: KeySet) -> Self {
        Self(Arc::new(SharedSlot {
            set: RwLock::new(Arc::new(set)),
            replaced: AtomicU64::new(0),
        }))
    }

    /// The current set. Verification loads it once per token.
    pub fn load(&self) -> Arc<KeySet> {
        Arc::clone(&self.0.set.read())
    }

    /// Swaps in `set` for every later verification and returns the previous one.
    pub fn replace(&self, set: KeySet) -> Arc<KeySet> {
        let previous = std::mem::replace(&mut *self.0.set.write(), Arc::new(set));
        // After the swap: a verification that reads the new count also sees the new set.
        self.0.replaced.fetch_add(1, Ordering::Release);
        previous
    }

    /// How many times the set was replaced.
    pub fn replacements(&self) -> u64 {
        self.0.replaced.load(Ordering::Acquire)
    }
}

/// The smallest RSA modulus accepted (RFC 7518 §3.3: 2048 bits or larger).
const MIN_RSA_MODULUS_BYTES: usize = 256;
/// The smallest `oct` secret accepted (RFC 7518 §3.2: at least the hash size, 256 bits for HS256).
const MIN_HMAC_SECRET_BYTES: usize = 32;

fn parse_jwk(jwk: &Value) -> Result<VerificationKey, &'static str> {
    let field = |name: &str| -> Result<Option<&str>, &'static str> {
        match jwk.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err("a member has the wrong type"),
        }
    };
    let required = |name: &str| field(name)?.ok_or("a required member is missing");
    let bytes = |name: &str| -> Result<Vec<u8>, &'static str> {
        URL_SAFE_NO_PAD
            .decode(required(name)?)
            .map_err(|_| "a member is not base64url")
    };

    if !jwk.is_object() {
        return Err("not a JSON object");
    }
    if field("use")?.is_some_and(|u| u != "sig") {
        return Err("not a signature key (use)");
    }
    if let Some(ops) = jwk.get("key_ops") {
        let verify = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op == "verify"));
        if !verify {
            return Err("not a verification key (key_ops)");
        }
    }
    let algorithm = field("alg")?
        .map(|name| Algorithm::from_str(name).map_err(|_| "unsupported alg"))
        .transpose()?;
    let kid = field("kid")?.map(str::to_string);

    let (kind, key) = match required("kty")? {
        "RSA" => {
            let n = bytes("n")?;
            let e = bytes("e")?;
            let significant = n.iter().skip_while(|b| **b == 0).count();
            if significant < MIN_RSA_MODULUS_BYTES {
                return Err("RSA modulus shorter than 2048 bits");
            }
            if e.is_empty() {
                return Err("empty RSA exponent");
            }
            (KeyKind::Rsa, DecodingKey::from_rsa_raw_components(&n, &e))
        }
        "EC" => {
            let (kind, len) = match required("crv")? {
                "P-256" => (KeyKind::EcP256, 32),
                "P-384" => (KeyKind::EcP384, 48),
                _ => return Err("unsupported EC curve"),
            };
            if bytes("x")?.len() != len || bytes("y")?.len() != len {
                return Err("EC coordinates of the wrong length");
            }
            let key = DecodingKey::from_ec_components(required("x")?, required("y")?)
                .map_err(|_| "invalid EC key")?;
            (kind, key)
        }
        "OKP" => {
            if required("crv")? != "Ed25519" {
                return Err("unsupported OKP curve");
            }
            if bytes("x")?.len() != 32 {
                return Err("Ed25519 key of the wrong length");
            }
            let key = DecodingKey::from_ed_components(required("x")?)
                .map_err(|_| "invalid Ed25519 key")?;
            (KeyKind::Ed25519, key)
        }
        "oct" => {
            let k = bytes("k")?;
            if k.len() < MIN_HMAC_SECRET_BYTES {
                return Err("oct secret shorter than 256 bits");
            }
            (KeyKind::Hmac, DecodingKey::from_secret(&k))
        }
        _ => return Err("unsupported kty"),
    };
    if algorithm.is_some_and(|alg| KeyKind::of_algorithm(alg) != kind) {
        return Err("alg does not fit the key type");
    }
    Ok(VerificationKey {
        kid,
        kind,
        algorithm,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const JWKS: &str = include_str!("../tests/fixtures/jwks.json");

    fn fixture(kid: &str) -> Value {
        let doc: Value = serde_json::from_str(JWKS).unwrap();
        doc["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid)
            .cloned()
            .unwrap()
    }

    fn set(keys: Vec<Value>) -> Result<KeySet, JwksError> {
        KeySet::from_jwks(json!({ "keys": keys }).to_string().as_bytes())
    }

    #[test]
    fn reads_every_supported_key_type() {
        let s = KeySet::from_jwks(JWKS.as_bytes()).unwrap();
        let kinds: Vec<_> = s.keys().collect();
        assert!(kinds.contains(&(Some("rsa-1"), KeyKind::Rsa)));
        assert!(kinds.contains(&(Some("rsa-2"), KeyKind::Rsa)));
        assert!(kinds.contains(&(Some("ec-1"), KeyKind::EcP256)));
        assert!(kinds.contains(&(Some("ed-1"), KeyKind::Ed25519)));
        assert!(kinds.contains(&(Some("oct-1"), KeyKind::Hmac)));
        assert!(s.skipped().is_empty(), "{:?}", s.skipped());
    }

    #[test]
    fn unusable_keys_are_skipped_with_a_reason() {
        let mut rsa = fixture("rsa-1");
        rsa["use"] = json!("enc");
        let mut ops = fixture("ec-1");
        ops["key_ops"] = json!(["sign"]);
        let mut ed448 = fixture("ed-1");
        ed448["crv"] = json!("Ed448");
        let mut wrong_alg = fixture("rsa-2");
        wrong_alg["alg"] = json!("ES256");
        let short_oct = json!({"kty": "oct", "kid": "short", "k": URL_SAFE_NO_PAD.encode("short")});
        let s = set(vec![
            rsa,
            ops,
            ed448,
            wrong_alg,
            short_oct,
            json!({"kty": "RSA", "kid": "small", "n": "AQAB", "e": "AQAB"}),
            json!({"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"}),
            json!({"kty": "RSA", "alg": "RSA-OAEP", "n": "x", "e": "AQAB"}),
            json!({"kty": "weird"}),
            json!("not an object"),
            json!({"kty": 1}),
            fixture("ed-1"),
        ])
        .unwrap();
        assert_eq!(s.len(), 1);
        let reasons: Vec<_> = s.skipped().iter().map(|k| (k.index, k.reason)).collect();
        assert_eq!(
            reasons,
            [
                (0, "not a signature key (use)"),
                (1, "not a verification key (key_ops)"),
                (2, "unsupported OKP curve"),
                (3, "alg does not fit the key type"),
                (4, "oct secret shorter than 256 bits"),
                (5, "RSA modulus shorter than 2048 bits"),
                (6, "unsupported EC curve"),
                (7, "unsupported alg"),
                (8, "unsupported kty"),
                (9, "not a JSON object"),
                (10, "a member has the wrong type"),
            ]
        );
        assert_eq!(s.skipped()[0].kid.as_deref(), Some("rsa-1"));
    }

    #[test]
    fn a_set_without_usable_keys_is_refused() {
        assert_eq!(
            set(vec![json!({"kty": "weird"})]).unwrap_err(),
            JwksError::NoUsableKeys { skipped: 1 }
        );
        assert_eq!(
            set(vec![]).unwrap_err(),
            JwksError::NoUsableKeys { skipped: 0 }
        );
        for bad in ["", "[]", "{}", r#"{"keys": {}}"#, "not json"] {
            assert_eq!(
                KeySet::from_jwks(bad.as_bytes()).unwrap_err(),
                JwksError::NotAJwkSet,
                "{bad}"
            );
        }
    }

    #[test]
    fn candidates_follow_kid_then_key_type() {
        let s = set(vec![fixture("rsa-1"), fixture("rsa-2"), fixture("ec-1")]).unwrap();
        let kids = |kid, alg| {
            s.candidates(kid, alg)
                .map(|c| c.iter().map(|k| k.kid.clone().unwrap()).collect::<Vec<_>>())
        };
        assert_eq!(kids(Some("rsa-2"), Algorithm::RS256).unwrap(), ["rsa-2"]);
        assert_eq!(kids(None, Algorithm::RS256).unwrap(), ["rsa-1", "rsa-2"]);
        assert_eq!(kids(None, Algorithm::ES256).unwrap(), ["ec-1"]);
        assert_eq!(
            kids(Some("nope"), Algorithm::RS256),
            Err(TokenRejection::UnknownKey)
        );
        // The kid exists, but an RSA key never verifies HMAC or EC signatures.
        assert_eq!(
            kids(Some("rsa-1"), Algorithm::HS256),
            Err(TokenRejection::Algorithm)
        );
        assert_eq!(
            kids(Some("rsa-1"), Algorithm::ES256),
            Err(TokenRejection::Algorithm)
        );
        assert_eq!(kids(None, Algorithm::EdDSA), Err(TokenRejection::Algorithm));
    }

    #[test]
    fn configured_keys_are_pinned_to_their_algorithm() {
        let s =
            KeySet::from_key(KeySpec::new("0123456789abcdef0123456789abcdef", "HS256").unwrap());
        assert_eq!(
            s.candidates(Some("any"), Algorithm::HS256).unwrap().len(),
            1
        );
        assert_eq!(
            s.candidates(None, Algorithm::HS512).unwrap_err(),
            TokenRejection::Algorithm
        );
        let s = s.with_key(
            Some("b"),
            KeySpec::new("another-secret-another-secret-!!", "HS512").unwrap(),
        );
        // A kid-less configured key stays a candidate; a named one only for its kid.
        assert_eq!(
            s.candidates(Some("a"), Algorithm::HS512).unwrap_err(),
            TokenRejection::Algorithm
        );
        assert_eq!(s.candidates(Some("b"), Algorithm::HS512).unwrap().len(), 1);
    }

    #[test]
    fn replace_swaps_the_set_for_later_loads() {
        let shared = SharedKeySet::new(set(vec![fixture("rsa-1")]).unwrap());
        let before = shared.load();
        let old = shared.replace(set(vec![fixture("rsa-2")]).unwrap());
        assert!(Arc::ptr_eq(&before, &old));
        let kids: Vec<_> = shared
            .load()
            .keys()
            .map(|(kid, _)| kid.map(str::to_string))
            .collect();
        assert_eq!(kids, [Some("rsa-2".to_string())]);
        // A loaded set is a snapshot: it still has the old key.
        assert_eq!(before.keys().next().unwrap().0, Some("rsa-1"));
    }

    #[test]
    fn debug_shows_no_key_material() {
        let s = KeySet::from_jwks(JWKS.as_bytes()).unwrap();
        let shown = format!("{:?}", SharedKeySet::new(s));
        assert!(shown.contains("rsa-1"), "{shown}");
        let oct = fixture("oct-1");
        assert!(!shown.contains(oct["k"].as_str().unwrap()), "{shown}");
        let rsa = fixture("rsa-1");
        assert!(
            !shown.contains(&rsa["n"].as_str().unwrap()[..16]),
            "{shown}"
        );
    }
}
