//! JWT verification and Mercure authorization grants (pre-standardization `mercure` claim).
//!
//! A request enters as its parts (headers, method, the `authorization` query values) and leaves as
//! [`Grants`] — what the bearer may publish and which private updates it may receive — or as an
//! [`AuthError`] whose text is safe to show the client. Nothing here performs I/O, keeps a token,
//! or prints one: every type that could hold a token or key implements `Debug` by hand.
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
//! - [`key`]: [`KeySpec`], a verification key and its single algorithm, checked at start-up.
//! - [`verifier`]: [`TokenVerifier`], signature, algorithm and validity-window checks.
//! - [`claims`]: the pre-standardization `mercure` claim, turned into grants. (The standardized
//!   `authorization_details` generation will sit beside it and produce the same [`Grants`].)
//! - [`grants`]: [`Grants`] and the two checks, [`can_publish`] and [`can_subscribe_to`].
//! - [`extract`]: [`extract_token`], where a request carries its token, in the reference hub's order.
//! - [`origin`]: [`PublishOrigins`], the CSRF check for publishing with a cookie.
//! - [`error`]: [`AuthError`] and its HTTP status.

pub mod claims;
pub mod error;
pub mod extract;
pub mod grants;
pub mod key;
pub mod origin;
pub mod verifier;

use http::{HeaderMap, Method};
use quicksilver_protocol::SelectorStore;

pub use error::{AuthError, TokenRejection};
pub use extract::{
    extract_token, ExtractConfig, ExtractedToken, TokenSource, DEFAULT_COOKIE_NAME, MIN_TOKEN_LEN,
};
pub use grants::{can_publish, can_subscribe_to, Grants};
pub use key::{KeyError, KeySpec, DEFAULT_ALGORITHM};
pub use origin::{OriginError, PublishOrigins};
pub use verifier::{
    TokenVerifier, VerifierOptions, DEFAULT_MAX_SELECTORS_PER_CLAIM, DEFAULT_MAX_TOKEN_BYTES,
};

/// A verified request: its grants and where its token was.
#[derive(Clone, Debug)]
pub struct Authenticated {
    /// What the token allows.
    pub grants: Grants,
    /// Where the token was found.
    pub source: TokenSource,
}

/// Extracts the request's token ([`extract_token`]) and verifies it with `verifier`.
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
    }))
}
