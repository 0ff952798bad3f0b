//! JWT verification and Mercure authorization grants, for both generations of the protocol: the
//! current specification's access tokens (`typ: at+jwt`, `authorization_details`, trusted issuers,
//! audience) and the pre-standardization tokens (the `mercure` claim).
//!
//! One entry, [`Verifier::authenticate`]: a request enters as its parts ([`RequestParts`]: method,
//! headers, the token-carrying query values) and leaves as [`Authenticated`] — its [`Grants`], what
//! the bearer may publish and which private updates it may receive ([`Access`]) — or as an
//! [`AuthFailure`]: an [`AuthError`] whose text is safe to show the client, and the generation of
//! the token presented. How a failure is answered over HTTP is the server's business. Nothing here
//! performs I/O (JWK Sets arrive as bytes fetched by the server), keeps a token (the token cache
//! keeps digests), or prints one:
//! every type that could hold a token or key implements `Debug` by hand.
//!
//! A hub accepting both generations builds one [`Verifier`] per role:
//!
//! ```
//! use std::time::SystemTime;
//!
//! use http::{HeaderMap, Method};
//! use quicksilver_auth::{
//!     AccessTokenOptions, AccessTokenVerifier, AuthError, CredentialConfig, Generation,
//!     HubIdentity, KeySpec, RequestParts, TokenVerifier, TrustedIssuer, Verifier,
//!     VerifierOptions,
//! };
//! use quicksilver_protocol::SelectorStore;
//!
//! let secret = "!ChangeThisMercureHubJWTSecretKey!";
//! let issuer = TrustedIssuer::new("https://localhost", KeySpec::new(secret, "HS256")?)?;
//! let current = AccessTokenVerifier::new([issuer], AccessTokenOptions::default())?;
//! let legacy = TokenVerifier::new(KeySpec::new(secret, "HS256")?, VerifierOptions::default());
//! let publishers = Verifier::new(current, Some(legacy), CredentialConfig::default());
//!
//! let store = SelectorStore::default();
//! let hub = HubIdentity::new("https://localhost/.well-known/mercure");
//! let (method, headers) = (Method::POST, HeaderMap::new());
//!
//! // No token anywhere: anonymous, the caller decides whether that is allowed.
//! let request = RequestParts::new(&method, &headers, None);
//! let found = publishers.authenticate(&store, &request, &hub, SystemTime::now())?;
//! assert!(found.is_none());
//!
//! // A legacy query token too short to be one: refused before anything is decoded.
//! let request = RequestParts::new(&method, &headers, Some("authorization=x"));
//! let failure = publishers
//!     .authenticate(&store, &request, &hub, SystemTime::now())
//!     .unwrap_err();
//! assert_eq!(failure.error, AuthError::InvalidAuthorizationQuery);
//! assert_eq!(failure.generation, None::<Generation>);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//! - [`generation`]: [`Generation`] and [`Verifier`], the one entry, which finds a request's
//!   token, tells the generations apart and verifies each with its own rules.
//! - [`cache`]: the verified tokens a [`Verifier`] remembers (by digest, never the token), used
//!   while their validity window holds and their keys were not replaced.
//! - [`extract`]: where a request carries its token ([`RequestParts`], [`CredentialConfig`]), in
//!   one order for both generations.
//! - [`origin`]: [`PublishOrigins`], the CSRF check for publishing with a cookie.
//! - [`access`]: [`AccessTokenVerifier`], the current generation's token validation.
//! - [`admin`]: [`AdminVerifier`], the tokens of the hub's administration endpoints.
//! - [`issuer`]: [`TrustedIssuer`], an issuer identifier bound to its keys and allowed algorithms.
//! - [`jwks`]: [`KeySet`] (read from JWK Set bytes or built from configured keys) and
//!   [`SharedKeySet`], through which the server rotates an issuer's keys.
//! - [`details`]: the current generation's `authorization_details` claim, turned into grants.
//! - [`key`]: [`KeySpec`], a configured key and its single algorithm, checked at start-up.
//! - [`verifier`]: [`TokenVerifier`], the legacy generation's signature (one configured key or a
//!   JWK Set), algorithm and validity-window checks.
//! - [`claims`]: the legacy `mercure` claim, turned into grants.
//! - [`grants`]: [`Grants`] and the two checks, [`can_publish`] and [`Access::allows`] (the
//!   private-update check the fan-out applies).
//! - [`metadata`]: the protected resource metadata document and its URL.
//! - [`error`]: [`AuthError`], why a request was refused, and [`AuthFailure`].

pub mod access;
pub mod admin;
pub mod cache;
pub mod claims;
pub mod details;
pub mod error;
pub mod extract;
pub mod generation;
pub mod grants;
pub mod identity;
pub mod issuer;
pub mod jwks;
mod jws;
pub mod key;
pub mod metadata;
pub mod origin;
pub mod verifier;

pub use access::{AccessTokenOptions, AccessTokenVerifier, HubIdentity, VerifiedAccessToken};
pub use admin::AdminVerifier;
pub use cache::{TokenCacheStats, MAX_CACHED_TOKEN_BYTES};
pub use details::{DetailLimits, AUTHORIZATION_DETAIL_TYPE};
pub use error::{AuthError, AuthFailure, TokenRejection};
pub use extract::{
    CredentialConfig, RequestParts, TokenSource, DEFAULT_ACCESS_TOKEN_COOKIE, DEFAULT_COOKIE_NAME,
    MIN_TOKEN_LEN,
};
pub use generation::{token_generation, Generation, Verifier};
pub use grants::{can_publish, Access, Grants};
pub use identity::{Identity, MAX_CLAIM_BYTES};
pub use issuer::{IssuerError, IssuerKeys, TrustedIssuer, DEFAULT_ASYMMETRIC_ALGORITHMS};
pub use jwks::{JwksError, KeyKind, KeySet, SharedKeySet, SkippedKey};
pub use jws::{is_access_token_type, ACCESS_TOKEN_TYPE};
pub use key::{KeyError, KeySpec, DEFAULT_ALGORITHM};
pub use metadata::{protected_resource_metadata_url, ProtectedResourceMetadata};
pub use origin::{OriginError, PublishOrigins};
pub use verifier::{
    KeySetError, TokenVerifier, VerifierOptions, DEFAULT_MAX_SELECTORS_PER_CLAIM,
    DEFAULT_MAX_TOKEN_BYTES,
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
