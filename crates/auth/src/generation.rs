//! Both token generations side by side: which one a token belongs to, and the [`Verifier`] that
//! applies the matching rules.
//!
//! A deployment accepts current access tokens always and legacy (pre-standardization) tokens by
//! default; switching legacy off leaves a hub that follows the current specification only. The
//! generation is read from the token's protected header, before any signature check:
//!
//! - `typ` is `at+jwt` or `application/at+jwt` (any case) → [`Generation::Current`], verified by
//!   [`AccessTokenVerifier`] — never by the legacy verifier, whatever else the token holds;
//! - anything else → [`Generation::Legacy`] when legacy is on, verified by [`TokenVerifier`];
//!   when legacy is off it goes to the current verifier, which refuses it for its `typ`
//!   (`401 invalid_token`).
//!
//! Picking by `typ` is safe although `typ` is not yet verified: it only chooses which rules and
//! keys apply, and each generation's verifier checks its own signature with its own keys. A token
//! cannot borrow the other generation's rules to pass: a legacy token relabelled `at+jwt` lacks
//! `iss`/`aud`/`exp` and the issuer's signature; an access token without `typ` is verified as a
//! legacy token and, carrying no `mercure` claim, grants nothing.
//!
//! With legacy on, an access token lacking `typ` is thus verified as a legacy token; when that
//! fails and the token carries `authorization_details`, the error names the missing `typ`
//! ([`TokenRejection::Type`]) rather than the legacy verifier's complaint, for the operator.
//!
//! Generation-specific rules beyond verification: a current token is refused when it came from
//! the URL ([`AuthError::TokenInUrl`]; see [`crate::extract`] for the whole extraction order),
//! and the result says which generation and carrier were used ([`Authenticated`]) so the server
//! can, for instance, count legacy use before switching it off.
//!
//! [`Verifier::authenticate`] is the crate's one entry: a request's parts in, [`Authenticated`]
//! (or no token at all) out, or an [`AuthFailure`] carrying what the server needs to answer it —
//! the reason, and the generation of the token presented (read once per request, here). How the
//! failure is answered (status, `WWW-Authenticate`) is the server's decision.

use std::sync::Arc;
use std::time::SystemTime;

use quicksilver_protocol::SelectorStore;

use crate::access::{AccessTokenVerifier, HubIdentity};
use crate::cache::{TokenCache, TokenCacheStats, Verified};
use crate::error::{AuthError, AuthFailure, TokenRejection};
use crate::extract::{extract, CredentialConfig, ExtractedToken, RequestParts, TokenSource};
use crate::jws;
use crate::verifier::TokenVerifier;
use crate::Authenticated;

/// The generation of the protocol a token belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Generation {
    /// A pre-standardization token: any signed JWT, grants in the `mercure` claim.
    Legacy,
    /// A current access token: `typ: at+jwt`, grants in `authorization_details`.
    Current,
}

impl Generation {
    /// A short lowercase name for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Generation::Legacy => "legacy",
            Generation::Current => "current",
        }
    }
}

/// The generation `token` claims by its header: [`Generation::Current`] for a `typ` of `at+jwt`,
/// [`Generation::Legacy`] for anything else, including a header that cannot be read.
pub fn token_generation(token: &str) -> Generation {
    match jws::header(token) {
        Ok(h) if h.typ.as_deref().is_some_and(jws::is_access_token_type) => Generation::Current,
        _ => Generation::Legacy,
    }
}

/// Verifies the tokens of one role (publishers or subscribers) of both generations.
#[derive(Clone, Debug)]
pub struct Verifier {
    current: AccessTokenVerifier,
    legacy: Option<TokenVerifier>,
    config: CredentialConfig,
    /// Verified tokens remembered ([`Verifier::with_token_cache`]); clones share it.
    cache: Option<Arc<TokenCache>>,
}

impl Verifier {
    /// A verifier for current tokens, and legacy tokens when `legacy` is given (`None` switches
    /// the legacy generation off: its query parameter and cookie are then not read either).
    pub fn new(
        current: AccessTokenVerifier,
        legacy: Option<TokenVerifier>,
        config: CredentialConfig,
    ) -> Self {
        Self {
            current,
            legacy,
            config,
            cache: None,
        }
    }

    /// Remembers up to `capacity` verified tokens ([`crate::cache`]); `0` verifies every token
    /// every time.
    pub fn with_token_cache(mut self, capacity: usize) -> Self {
        self.cache = (capacity > 0).then(|| {
            let key_sets = self
                .current
                .key_sets()
                .chain(self.legacy.as_ref().and_then(TokenVerifier::key_set))
                .cloned()
                .collect();
            Arc::new(TokenCache::new(capacity, key_sets))
        });
        self
    }

    /// The token cache's counts, when it has one.
    pub fn token_cache_stats(&self) -> Option<TokenCacheStats> {
        self.cache.as_ref().map(|cache| cache.stats())
    }

    /// Whether legacy tokens are accepted.
    pub fn legacy_enabled(&self) -> bool {
        self.legacy.is_some()
    }

    /// Authenticates a request as of `now`: finds its token ([`crate::extract`]) and verifies it
    /// with its generation's rules, compiling selectors through `store`. `Ok(None)`: the request
    /// carries no token at all; the caller decides whether that is allowed.
    pub fn authenticate(
        &self,
        store: &SelectorStore,
        request: &RequestParts<'_>,
        hub: &HubIdentity<'_>,
        now: SystemTime,
    ) -> Result<Option<Authenticated>, AuthFailure> {
        let found =
            extract(request, &self.config, self.legacy_enabled()).map_err(|error| AuthFailure {
                error,
                generation: None,
            })?;
        let Some(found) = found else {
            return Ok(None);
        };
        let source = found.source;
        let lookup = match &self.cache {
            Some(cache) => match cache.find(found.token, hub, now) {
                Ok(known) => {
                    return authenticated(&known, source)
                        .map(Some)
                        .map_err(|error| AuthFailure {
                            error,
                            generation: Some(known.generation),
                        })
                }
                Err(lookup) => Some(lookup),
            },
            None => None,
        };
        let generation = token_generation(found.token);
        let verified = self
            .verify(store, found, generation, hub, now)
            .map_err(|error| AuthFailure {
                error,
                generation: Some(generation),
            })?;
        let verified = Arc::new(verified);
        if let (Some(cache), Some(lookup)) = (&self.cache, lookup) {
            cache.remember(lookup, Arc::clone(&verified));
        }
        authenticated(&verified, source)
            .map(Some)
            .map_err(|error| AuthFailure {
                error,
                generation: Some(generation),
            })
    }

    /// Verifies a found token of `generation` with that generation's rules (the carrier's rules,
    /// which do not depend on the signature, are [`authenticated`]'s).
    fn verify(
        &self,
        store: &SelectorStore,
        found: ExtractedToken<'_>,
        generation: Generation,
        hub: &HubIdentity<'_>,
        now: SystemTime,
    ) -> Result<Verified, AuthError> {
        match (generation, &self.legacy) {
            (Generation::Legacy, Some(legacy)) => {
                let (grants, validity) =
                    legacy
                        .verify_window_at(store, found.token, now)
                        .map_err(|e| {
                            // An access token whose issuer forgot `typ` fails here with a signature or
                            // key error; name the real mistake for the operator's logs instead.
                            if jws::has_claim(found.token, "authorization_details") {
                                AuthError::InvalidToken(TokenRejection::Type)
                            } else {
                                e
                            }
                        })?;
                Ok(Verified {
                    grants,
                    generation: Generation::Legacy,
                    issuer: None,
                    subject: None,
                    validity,
                })
            }
            // Refused before anything is decoded: the carrier decides, whatever the signature.
            (Generation::Current, _) if found.source == TokenSource::Query => {
                Err(AuthError::TokenInUrl)
            }
            // Current tokens, and with legacy off every token (refused for its `typ`).
            _ => {
                let (verified, validity) =
                    self.current
                        .verify_window_at(store, found.token, hub, now)?;
                Ok(Verified {
                    grants: verified.grants,
                    generation: Generation::Current,
                    issuer: Some(verified.issuer),
                    subject: verified.subject,
                    validity,
                })
            }
        }
    }
}

/// A verified token as found at `source`: a current token is never accepted from the URL (checked
/// again here because a remembered verification may have been made for another carrier).
fn authenticated(verified: &Verified, source: TokenSource) -> Result<Authenticated, AuthError> {
    if verified.generation == Generation::Current && source == TokenSource::Query {
        return Err(AuthError::TokenInUrl);
    }
    Ok(Authenticated {
        grants: verified.grants.clone(),
        source,
        generation: verified.generation,
        issuer: verified.issuer.clone(),
        subject: verified.subject.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    fn token(header: &str) -> String {
        format!("{}.e30.sig", URL_SAFE_NO_PAD.encode(header))
    }

    #[test]
    fn generation_comes_from_typ() {
        assert_eq!(
            token_generation(&token(r#"{"alg":"HS256","typ":"at+jwt"}"#)),
            Generation::Current
        );
        assert_eq!(
            token_generation(&token(r#"{"alg":"ES256","typ":"application/AT+JWT"}"#)),
            Generation::Current
        );
        for legacy in [
            token(r#"{"alg":"HS256","typ":"JWT"}"#),
            token(r#"{"alg":"HS256"}"#),
            token(r#"{"alg":"HS256","typ":5}"#),
            "garbage".to_string(),
        ] {
            assert_eq!(token_generation(&legacy), Generation::Legacy, "{legacy}");
        }
        assert_eq!(Generation::Current.as_str(), "current");
    }
}
