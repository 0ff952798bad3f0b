//! Current-generation access tokens: JWT access tokens (RFC 9068) validated as the specification's
//! "Token Validation" section says, then read as Mercure authorization details.
//!
//! An [`AccessTokenVerifier`] is built once per role (publishers, subscribers) from the
//! [`TrustedIssuer`]s of that role. [`AccessTokenVerifier::verify`] takes the compact JWS and the
//! hub's identity for this request ([`HubIdentity`]: the resource identifier tokens must name in
//! `aud`, configured or derived by the server from the request) and returns a
//! [`VerifiedAccessToken`]. No I/O: keys are already in memory ([`crate::jwks`]). In order:
//!
//! 1. tokens longer than [`AccessTokenOptions::max_token_bytes`] are refused before decoding;
//! 2. the header's `typ` must be `at+jwt` or `application/at+jwt`, case-insensitively (so an
//!    OpenID Connect ID token, or a legacy token, is not taken for an access token); a `crit`
//!    header is refused (no extension is understood here);
//! 3. the unverified `iss` selects the trusted issuer — unknown or missing is refused — and only
//!    that issuer's keys are tried;
//! 4. the header's `alg` must be on that issuer's allowlist (`none` never is), and is tried only
//!    with keys of its type, narrowed by `kid` when the token names one ([`crate::KeySet`]); the
//!    signature must verify with one of them. Key material in the token (`jwk`, `jku`, `x5u`,
//!    `x5c`) is never read;
//! 5. `exp` is required and enforced, `nbf` enforced when present, with
//!    [`AccessTokenOptions::leeway`]; `iat` must be a number when present but is not checked
//!    against the clock (the specification does not ask for it, and `exp` bounds the token);
//! 6. `aud` (a string or an array of strings) must contain the resource identifier exactly;
//! 7. `authorization_details` become [`Grants`] ([`crate::details`]).
//!
//! `sub`, `client_id` and `jti` are issuer obligations the hub does not enforce (the
//! specification's conformance tests use tokens without them); `sub`, when present, must be a
//! string and is returned for subscription event identifiers.
//!
//! Every failure is an [`AuthError`] the server answers `401 invalid_token` without saying why;
//! the precise [`TokenRejection`] is for logs.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use quicksilver_protocol::SelectorStore;
use serde::Deserialize;
use serde_json::Value;

use crate::details::{self, DetailLimits};
use crate::error::{AuthError, TokenRejection};
use crate::grants::Grants;
use crate::identity::{self, Identity};
use crate::issuer::{IssuerError, IssuerKeys, TrustedIssuer};
use crate::jwks::SharedKeySet;
use crate::jws;
use crate::verifier::{rejection, to_system_time, Validity, DEFAULT_MAX_TOKEN_BYTES};

/// Who the hub is, for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HubIdentity<'a> {
    /// The resource identifier tokens must carry in `aud` (recommended: the hub's canonical URL,
    /// e.g. `https://hub.example.com/.well-known/mercure`).
    pub resource: &'a str,
    /// The hub's URL, the base of relative URL patterns; `None` falls back to the protocol
    /// crate's placeholder base, so relative patterns then only match relative topics.
    pub hub_url: Option<&'a str>,
}

impl<'a> HubIdentity<'a> {
    /// The usual case: the resource identifier is the hub URL.
    pub fn new(hub_url: &'a str) -> Self {
        Self {
            resource: hub_url,
            hub_url: Some(hub_url),
        }
    }
}

/// Limits and tolerances of access-token verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessTokenOptions {
    /// Clock skew tolerated on `exp` and `nbf` (default 0).
    pub leeway: Duration,
    /// Longest token accepted, in bytes (default [`DEFAULT_MAX_TOKEN_BYTES`]).
    pub max_token_bytes: usize,
    /// Limits on the authorization details.
    pub details: DetailLimits,
}

impl Default for AccessTokenOptions {
    fn default() -> Self {
        Self {
            leeway: Duration::ZERO,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            details: DetailLimits::default(),
        }
    }
}

/// A verified access token: its grants and who it names.
#[derive(Clone, Debug)]
pub struct VerifiedAccessToken {
    /// What the token allows (with its expiry).
    pub grants: Grants,
    /// The trusted issuer that signed it (`iss`).
    pub issuer: String,
    /// The `sub` claim, when present.
    pub subject: Option<String>,
}

/// The claims read from a verified access token. Other claims are ignored.
#[derive(Deserialize)]
struct AccessClaims {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    nbf: Option<f64>,
    /// A non-numeric `iat` makes the token malformed.
    #[serde(default)]
    iat: Option<f64>,
    #[serde(default)]
    sub: Option<String>,
    /// Read for the hub's policies (revocation by token id); not required.
    #[serde(default, deserialize_with = "crate::identity::lenient_string")]
    jti: Option<String>,
    /// The token's plan, for the hub's policies.
    #[serde(default, deserialize_with = "crate::identity::lenient_string")]
    quota: Option<String>,
    #[serde(default)]
    authorization_details: Option<Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, resource: &str) -> bool {
        match self {
            Audience::One(aud) => aud == resource,
            Audience::Many(auds) => auds.iter().any(|aud| aud == resource),
        }
    }
}

/// Verifies current-generation access tokens for one role.
#[derive(Clone)]
pub struct AccessTokenVerifier {
    issuers: HashMap<String, TrustedIssuer>,
    options: AccessTokenOptions,
}

impl fmt::Debug for AccessTokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessTokenVerifier")
            .field("issuers", &self.issuers.values().collect::<Vec<_>>())
            .field("options", &self.options)
            .finish()
    }
}

impl AccessTokenVerifier {
    /// A verifier trusting `issuers` (none: every token is refused as from an untrusted issuer,
    /// for a role nobody may take). Two issuers with one identifier are refused.
    pub fn new(
        issuers: impl IntoIterator<Item = TrustedIssuer>,
        options: AccessTokenOptions,
    ) -> Result<Self, IssuerError> {
        let mut map = HashMap::new();
        for issuer in issuers {
            let id = issuer.identifier().to_string();
            if map.insert(id.clone(), issuer).is_some() {
                return Err(IssuerError::Duplicate(id));
            }
        }
        Ok(Self {
            issuers: map,
            options,
        })
    }

    /// The trusted issuers (in no particular order).
    pub fn issuers(&self) -> impl Iterator<Item = &TrustedIssuer> {
        self.issuers.values()
    }

    /// The options in use.
    pub fn options(&self) -> &AccessTokenOptions {
        &self.options
    }

    /// Verifies `token` now.
    pub fn verify(
        &self,
        store: &SelectorStore,
        token: &str,
        hub: &HubIdentity<'_>,
    ) -> Result<VerifiedAccessToken, AuthError> {
        self.verify_at(store, token, hub, SystemTime::now())
    }

    /// Verifies `token` as of `now` (see the module documentation for the steps).
    pub fn verify_at(
        &self,
        store: &SelectorStore,
        token: &str,
        hub: &HubIdentity<'_>,
        now: SystemTime,
    ) -> Result<VerifiedAccessToken, AuthError> {
        self.verify_window_at(store, token, hub, now)
            .map(|(verified, _)| verified)
    }

    /// The JWK Sets the server may replace under this verifier (the trusted issuers' shared sets).
    pub(crate) fn key_sets(&self) -> impl Iterator<Item = &SharedKeySet> {
        self.issuers
            .values()
            .filter_map(|issuer| match issuer.keys() {
                IssuerKeys::Shared(shared) => Some(shared),
                IssuerKeys::Fixed(_) => None,
            })
    }

    /// Verifies `token` as of `now` and returns it with the validity window it holds in.
    pub(crate) fn verify_window_at(
        &self,
        store: &SelectorStore,
        token: &str,
        hub: &HubIdentity<'_>,
        now: SystemTime,
    ) -> Result<(VerifiedAccessToken, Validity), AuthError> {
        if token.len() > self.options.max_token_bytes {
            return Err(AuthError::TokenTooLong {
                max: self.options.max_token_bytes,
            });
        }

        let header = jws::header(token)?;
        if !header.typ.as_deref().is_some_and(jws::is_access_token_type) {
            return Err(TokenRejection::Type.into());
        }
        if header.crit.is_some() {
            return Err(TokenRejection::CriticalHeader.into());
        }
        let alg = header
            .alg
            .as_deref()
            .and_then(|name| Algorithm::from_str(name).ok())
            .ok_or(TokenRejection::Algorithm)?;

        let issuer = jws::unverified_issuer(token)?
            .and_then(|iss| self.issuers.get(&iss))
            .ok_or(TokenRejection::Issuer)?;
        if !issuer.algorithms().contains(&alg) {
            return Err(TokenRejection::Algorithm.into());
        }

        let keys = issuer.keys().load();
        let claims = verify_signature(token, alg, keys.candidates(header.kid.as_deref(), alg)?)?;

        // Both reads decode the same signed payload, so this cannot differ from the issuer chosen
        // above; it stays as a guard should the selection ever change.
        if claims.iss.as_deref() != Some(issuer.identifier()) {
            return Err(TokenRejection::Issuer.into());
        }
        let exp = claims.exp.ok_or(TokenRejection::MissingExpiry)?;
        let validity = Validity {
            exp: Some(exp),
            nbf: claims.nbf,
            leeway: self.options.leeway,
        };
        validity.check(now)?;
        let audience_ok = !hub.resource.is_empty()
            && claims
                .aud
                .as_ref()
                .is_some_and(|aud| aud.contains(hub.resource));
        if !audience_ok {
            return Err(TokenRejection::Audience.into());
        }

        let expires_at = to_system_time(exp);
        let identity = Identity {
            issuer: Some(Arc::from(issuer.identifier())),
            subject: claims.sub.as_deref().and_then(identity::kept_str),
            token_id: claims.jti.as_deref().and_then(identity::kept_str),
            issued_at: claims.iat.and_then(to_system_time),
            expires_at,
            quota: claims.quota.as_deref().and_then(identity::kept_str),
        };
        let grants = details::into_grants(
            claims.authorization_details.as_ref(),
            store,
            hub.hub_url,
            &self.options.details,
        )?
        .with_expires_at(expires_at)
        .with_identity(identity);
        let verified = VerifiedAccessToken {
            grants,
            issuer: issuer.identifier().to_string(),
            subject: claims.sub,
        };
        Ok((verified, validity))
    }
}

/// Checks the signature with each candidate key in turn and returns the claims of the first that
/// verifies. Only a bad signature moves on to the next key; any other failure is final.
fn verify_signature(
    token: &str,
    alg: Algorithm,
    candidates: Vec<&crate::jwks::VerificationKey>,
) -> Result<AccessClaims, TokenRejection> {
    let mut validation = Validation::new(alg);
    // Registered claims are checked by the caller, with the specification's rules.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation.leeway = 0;
    for key in candidates {
        // Decoded as a map first: serde would also fill `AccessClaims` from a JSON array.
        match jsonwebtoken::decode::<serde_json::Map<String, Value>>(
            token,
            key.decoding_key(),
            &validation,
        ) {
            Ok(data) => return jws::from_object(data.claims),
            Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => continue,
            Err(e) => return Err(rejection(e.kind())),
        }
    }
    Err(TokenRejection::Signature)
}
