//! JWT verification and Mercure authorization grants, for both generations of the protocol: the
//! current specification's access tokens (`typ: at+jwt`, `authorization_details`, trusted issuers,
//! audience) and the pre-standardization tokens (the `mercure` claim).
//!
//! A request enters as its parts (headers, method, the token-carrying query values) and leaves as
//! [`Grants`] — what the bearer may publish and which private updates it may receive — or as an
//! [`AuthError`] whose text is safe to show the client, and which renders as the specification's
//! `WWW-Authenticate: Bearer` challenge ([`BearerChallenge`]). Nothing here performs I/O (JWK Sets
//! arrive as bytes fetched by the server), keeps a token, or prints one: every type that could hold
//! a token or key implements `Debug` by hand.
//!
//! A hub accepting both generations builds one [`Verifier`] per role:
//!
//! ```
//! use http::{HeaderMap, Method};
//! use quicksilver_auth::{
//!     AccessTokenOptions, AccessTokenVerifier, CredentialConfig, HubIdentity, KeySpec,
//!     TokenVerifier, TrustedIssuer, UrlTokens, Verifier, VerifierOptions,
//! };
//! use quicksilver_protocol::SelectorStore;
//!
//! let secret = "!ChangeThisMercureHubJWTSecretKey!";
//! let issuer = TrustedIssuer::new("https://localhost", KeySpec::new(secret, "HS256")?)?;
//! let current = AccessTokenVerifier::new([issuer], AccessTokenOptions::default())?;
//! let legacy = TokenVerifier::new(KeySpec::new(secret, "HS256")?, VerifierOptions::default());
//! let publishers = Verifier::new(current, Some(legacy), CredentialConfig::default());
//!
//! let hub = HubIdentity::new("https://localhost/.well-known/mercure");
//! let found = publishers.authenticate(
//!     &SelectorStore::default(),
//!     &HeaderMap::new(),
//!     &Method::POST,
//!     &UrlTokens::from_query(Some("authorization=x")),
//!     &hub,
//! );
//! // A legacy query token is too short here: 400 invalid_request.
//! assert_eq!(found.unwrap_err().bearer_challenge().status(), 400);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A hub knowing legacy tokens only can keep using [`TokenVerifier`] and [`authenticate`]:
//!
//! ```
//! use http::{HeaderMap, Method};
//! use quicksilver_auth::{authenticate, can_publish, ExtractConfig, KeySpec, TokenVerifier, VerifierOptions};
//! use quicksilver_protocol::SelectorStore;
//!
//! let verifier = TokenVerifier::new(KeySpec::new("!ChangeThisMercureHubJWTSecretKey!", "HS256")?, VerifierOptions::default());
//! let store = SelectorStore::default();
//! let headers = HeaderMap::new();
//! // No token anywhere: anonymous, the caller decides whether that is allowed.
//! let found = authenticate(&verifier, &store, &headers, &Method::POST, &[], &ExtractConfig::default())?;
//! assert!(found.is_none());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//! - [`generation`]: [`Generation`] and [`Verifier`], which tells the generations apart and
//!   verifies each with its own rules.
//! - [`access`]: [`AccessTokenVerifier`], the current generation's token validation.
//! - [`issuer`]: [`TrustedIssuer`], an issuer identifier bound to its keys and allowed algorithms.
//! - [`jwks`]: [`KeySet`] (read from JWK Set bytes or built from configured keys) and
//!   [`SharedKeySet`], through which the server rotates an issuer's keys.
//! - [`details`]: the current generation's `authorization_details` claim, turned into grants.
//! - [`key`]: [`KeySpec`], a configured key and its single algorithm, checked at start-up.
//! - [`verifier`]: [`TokenVerifier`], the legacy generation's signature, algorithm and
//!   validity-window checks.
//! - [`claims`]: the legacy `mercure` claim, turned into grants.
//! - [`grants`]: [`Grants`] and the two checks, [`can_publish`] and [`Access::allows`] (the
//!   private-update check the fan-out applies).
//! - [`extract`]: where a request carries its token: [`extract_credentials`] (both generations)
//!   and [`extract_token`] (legacy only, the reference hub's order).
//! - [`origin`]: [`PublishOrigins`], the CSRF check for publishing with a cookie.
//! - [`bearer`]: [`BearerChallenge`], the current specification's status codes and
//!   `WWW-Authenticate` header.
//! - [`metadata`]: the protected resource metadata document and its URL.
//! - [`error`]: [`AuthError`] and its HTTP status.

pub mod access;
pub mod bearer;
pub mod claims;
pub mod details;
pub mod error;
pub mod extract;
pub mod generation;
pub mod grants;
pub mod issuer;
pub mod jwks;
mod jws;
pub mod key;
pub mod metadata;
pub mod origin;
pub mod verifier;

use http::{HeaderMap, Method};
use quicksilver_protocol::SelectorStore;

pub use access::{AccessTokenOptions, AccessTokenVerifier, HubIdentity, VerifiedAccessToken};
pub use bearer::{BearerChallenge, BearerErrorCode};
pub use details::{DetailLimits, AUTHORIZATION_DETAIL_TYPE};
pub use error::{AuthError, TokenRejection};
pub use extract::{
    extract_credentials, extract_token, CredentialConfig, ExtractConfig, ExtractedToken,
    TokenSource, UrlTokens, DEFAULT_ACCESS_TOKEN_COOKIE, DEFAULT_COOKIE_NAME, MIN_TOKEN_LEN,
};
pub use generation::{token_generation, Generation, Verifier};
pub use grants::{can_publish, Access, Grants};
pub use issuer::{IssuerError, IssuerKeys, TrustedIssuer, DEFAULT_ASYMMETRIC_ALGORITHMS};
pub use jwks::{JwksError, KeyKind, KeySet, SharedKeySet, SkippedKey};
pub use jws::{is_access_token_type, ACCESS_TOKEN_TYPE};
pub use key::{KeyError, KeySpec, DEFAULT_ALGORITHM};
pub use metadata::{protected_resource_metadata_url, ProtectedResourceMetadata};
pub use origin::{OriginError, PublishOrigins};
pub use verifier::{
    TokenVerifier, VerifierOptions, DEFAULT_MAX_SELECTORS_PER_CLAIM, DEFAULT_MAX_TOKEN_BYTES,
};

/// A verified request: its grants, where its token was, and which generation it belongs to.
#[derive(Clone, Debug)]
pub struct Authenticated {
    /// What the token allows.
    pub grants: Grants,
    /// Where the token was found.
    pub source: TokenSource,
    /// The token's generation.
    pub generation: Generation,
    /// The trusted issuer (`iss`) of a current token; `None` for legacy tokens.
    pub issuer: Option<String>,
    /// The `sub` claim of a current token, when present; `None` for legacy tokens.
    pub subject: Option<String>,
}

/// Extracts the request's token ([`extract_token`]) and verifies it with `verifier`, for a hub
/// knowing legacy tokens only (see [`Verifier::authenticate`] for both generations).
/// `Ok(None)` means the request carries no token at all.
pub fn authenticate(
    verifier: &TokenVerifier,
    store: &SelectorStore,
    headers: &HeaderMap,
    method: &Method,
    query_authorization: &[String],
    config: &ExtractConfig,
) -> Result<Option<Authenticated>, AuthError> {
    let Some(found) = extract_token(headers, method, query_authorization, config)? else {
        return Ok(None);
    };
    let grants = verifier.verify(store, found.token)?;
    Ok(Some(Authenticated {
        grants,
        source: found.source,
        generation: Generation::Legacy,
        issuer: None,
        subject: None,
    }))
}
