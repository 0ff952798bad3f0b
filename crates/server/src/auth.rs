//! The bridge between HTTP requests and the auth crate: which verifier, which extraction rules,
//! and how grants become a subscriber's private [`Access`].
//!
//! Publishers and subscribers may use different keys, so the [`Authenticator`] holds one verifier
//! for each, plus the extraction rules (cookie name, publish origins) both share. A missing
//! publisher token is `401`; a missing subscriber token is left to the caller (anonymous mode).

use http::{HeaderMap, Method};
use quicksilver_auth::{
    authenticate, AuthError, ExtractConfig, Grants, KeySpec, PublishOrigins, TokenVerifier,
    VerifierOptions,
};
use quicksilver_fanout::Access;
use quicksilver_protocol::SelectorStore;

use crate::config::Config;
use crate::error::HubError;

/// Token verifiers and extraction rules.
pub struct Authenticator {
    publisher: Option<TokenVerifier>,
    subscriber: Option<TokenVerifier>,
    extract: ExtractConfig,
    store: std::sync::Arc<SelectorStore>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

/// Builds the authenticator; refuses bad keys (e.g. a PEM key with an HMAC algorithm) so a
/// misconfigured hub does not start.
pub fn authenticator(
    config: &Config,
    store: std::sync::Arc<SelectorStore>,
) -> anyhow::Result<Authenticator> {
    let verifier =
        |role: &str, key: Option<(&str, &str)>| -> anyhow::Result<Option<TokenVerifier>> {
            key.map(|(key, alg)| {
                KeySpec::new(key, alg)
                    .map(|spec| TokenVerifier::new(spec, VerifierOptions::default()))
                    .map_err(|e| anyhow::anyhow!("invalid {role} JWT key: {e}"))
            })
            .transpose()
        };
    let publisher = verifier("publisher", config.publisher_key())?;
    let subscriber = verifier("subscriber", config.subscriber_key())?;
    if publisher.is_none() {
        tracing::warn!("no publisher JWT key configured (MERCURE_PUBLISHER_JWT_KEY): every publish will be refused");
    }
    let publish_origins = PublishOrigins::new(&config.publish_origins)
        .map_err(|e| anyhow::anyhow!("invalid --publish-origins: {e}"))?;
    Ok(Authenticator {
        publisher,
        subscriber,
        extract: ExtractConfig {
            cookie_name: config.cookie_name.clone(),
            publish_origins,
        },
        store,
    })
}

impl Authenticator {
    /// Authenticates a publisher: a valid token is required.
    pub fn publisher(
        &self,
        method: &Method,
        headers: &HeaderMap,
        query_tokens: &[String],
    ) -> Result<Grants, HubError> {
        let Some(verifier) = &self.publisher else {
            return Err(HubError::Unauthorized(
                "publishing is not configured on this hub".into(),
            ));
        };
        match authenticate(
            verifier,
            &self.store,
            headers,
            method,
            query_tokens,
            &self.extract,
        ) {
            Ok(Some(found)) => Ok(found.grants),
            Ok(None) => Err(HubError::Unauthorized(
                "a publisher token is required".into(),
            )),
            Err(e) => Err(unauthorized(e)),
        }
    }

    /// Authenticates a subscriber: `Ok(None)` when the request has no token at all.
    pub fn subscriber(
        &self,
        method: &Method,
        headers: &HeaderMap,
        query_tokens: &[String],
    ) -> Result<Option<Grants>, HubError> {
        let found = match &self.subscriber {
            Some(verifier) => authenticate(
                verifier,
                &self.store,
                headers,
                method,
                query_tokens,
                &self.extract,
            ),
            // Without a subscriber key no token can be valid; a request without one is anonymous.
            None => quicksilver_auth::extract_token(headers, method, query_tokens, &self.extract)
                .and_then(|t| match t {
                    Some(_) => Err(AuthError::InvalidToken(
                        quicksilver_auth::TokenRejection::Signature,
                    )),
                    None => Ok(None),
                }),
        };
        found.map(|f| f.map(|f| f.grants)).map_err(unauthorized)
    }
}

fn unauthorized(e: AuthError) -> HubError {
    tracing::debug!(error = %e, "authentication failed");
    HubError::Unauthorized(e.to_string())
}

/// The private access the subscribe grants give.
pub fn access(grants: &Grants) -> Access {
    if grants.subscribe_all() {
        Access::All
    } else {
        Access::from_selectors(grants.subscribe().to_vec())
    }
}
