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
//! Failures should be answered with [`AuthError::bearer_challenge`] (the current specification's
//! error responses) for both generations, since the hub as a whole follows the current
//! specification; [`AuthError::status_hint`] remains for hubs that only know legacy tokens.

use std::time::SystemTime;

use http::{HeaderMap, Method};
use quicksilver_protocol::SelectorStore;

use crate::access::{AccessTokenVerifier, HubIdentity};
use crate::error::{AuthError, TokenRejection};
use crate::extract::{
    extract_credentials, CredentialConfig, ExtractedToken, TokenSource, UrlTokens,
};
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
        }
    }

    /// Whether legacy tokens are accepted.
    pub fn legacy_enabled(&self) -> bool {
        self.legacy.is_some()
    }

    /// The current-generation verifier.
    pub fn current(&self) -> &AccessTokenVerifier {
        &self.current
    }

    /// The legacy verifier, when legacy tokens are accepted.
    pub fn legacy(&self) -> Option<&TokenVerifier> {
        self.legacy.as_ref()
    }

    /// Where tokens are looked for.
    pub fn config(&self) -> &CredentialConfig {
        &self.config
    }

    /// Finds the request's token ([`extract_credentials`] with this verifier's settings).
    pub fn extract<'a>(
        &self,
        headers: &'a HeaderMap,
        method: &Method,
        url: &'a UrlTokens,
    ) -> Result<Option<ExtractedToken<'a>>, AuthError> {
        extract_credentials(headers, method, url, &self.config, self.legacy_enabled())
    }

    /// Verifies a found token now.
    pub fn verify(
        &self,
        store: &SelectorStore,
        found: ExtractedToken<'_>,
        hub: &HubIdentity<'_>,
    ) -> Result<Authenticated, AuthError> {
        self.verify_at(store, found, hub, SystemTime::now())
    }

    /// Verifies a found token as of `now`, with its generation's rules.
    pub fn verify_at(
        &self,
        store: &SelectorStore,
        found: ExtractedToken<'_>,
        hub: &HubIdentity<'_>,
        now: SystemTime,
    ) -> Result<Authenticated, AuthError> {
        match (token_generation(found.token), &self.legacy) {
            (Generation::Legacy, Some(legacy)) => {
                let grants = legacy.verify_at(store, found.token, now).map_err(|e| {
                    // An access token whose issuer forgot `typ` fails here with a signature or
                    // key error; name the real mistake for the operator's logs instead.
                    if jws::has_claim(found.token, "authorization_details") {
                        AuthError::InvalidToken(TokenRejection::Type)
                    } else {
                        e
                    }
                })?;
                Ok(Authenticated {
                    grants,
                    source: found.source,
                    generation: Generation::Legacy,
                    issuer: None,
                    subject: None,
                })
            }
            (Generation::Current, _) if found.source == TokenSource::Query => {
                Err(AuthError::TokenInUrl)
            }
            // Current tokens, and with legacy off every token (refused for its `typ`).
            _ => {
                let verified = self.current.verify_at(store, found.token, hub, now)?;
                Ok(Authenticated {
                    grants: verified.grants,
                    source: found.source,
                    generation: Generation::Current,
                    issuer: Some(verified.issuer),
                    subject: verified.subject,
                })
            }
        }
    }

    /// Extracts and verifies the request's token now. `Ok(None)`: no token at all; the caller
    /// decides whether that is allowed (if not, answer [`crate::BearerChallenge::missing_token`]).
    pub fn authenticate(
        &self,
        store: &SelectorStore,
        headers: &HeaderMap,
        method: &Method,
        url: &UrlTokens,
        hub: &HubIdentity<'_>,
    ) -> Result<Option<Authenticated>, AuthError> {
        self.authenticate_at(store, headers, method, url, hub, SystemTime::now())
    }

    /// [`Verifier::authenticate`] as of `now`.
    pub fn authenticate_at(
        &self,
        store: &SelectorStore,
        headers: &HeaderMap,
        method: &Method,
        url: &UrlTokens,
        hub: &HubIdentity<'_>,
        now: SystemTime,
    ) -> Result<Option<Authenticated>, AuthError> {
        match self.extract(headers, method, url)? {
            Some(found) => self.verify_at(store, found, hub, now).map(Some),
            None => Ok(None),
        }
    }
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
