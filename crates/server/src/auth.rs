//! The bridge between HTTP requests and the auth crate: which verifiers, which extraction rules,
//! and who the hub is for this request.
//!
//! Publishers and subscribers may use different keys, so the [`Authenticator`] holds one
//! [`Verifier`] per role. Each accepts current access tokens (`typ: at+jwt`) from the trusted
//! issuers (`--issuer`, `issuer` blocks) and, unless `--legacy false`, pre-standardization tokens
//! verified with the role's key (or the JWK Set of a `*_jwks_url` directive). A request goes
//! through the auth crate's one entry, [`Verifier::authenticate`], which finds its token (the
//! `Authorization` header, then (legacy only) the `authorization` query parameter, then the access
//! token cookie, then (legacy only) the legacy cookie) and verifies it.
//! A token naming an unknown `kid` nudges the JWK Set refresh ([`crate::jwks`]).
//!
//! The audience a current token must name is the hub's resource identifier: `--resource-identifier`
//! when set, else derived from the request ([`RequestIdentity`]). What a request says of the hub's
//! address is client input: `Host` is the client's, and `X-Forwarded-Host` / `-Proto` are believed
//! only from `--trusted-proxies` (any client can send them). With `--public-url`, only the listed
//! origins are served (421 otherwise), so a token minted for another hub of the same issuer cannot
//! be replayed here by naming that hub in `Host`.
//!
//! Failures become [`HubError::Auth`]; how they are answered (status, `WWW-Authenticate: Bearer`
//! challenge, the pre-standardization answers kept for legacy requests) is decided in
//! [`crate::error`].

use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, Method};
use quicksilver_auth::{
    protected_resource_metadata_url, AccessTokenOptions, AccessTokenVerifier, AuthError,
    Authenticated, CredentialConfig, Generation, HubIdentity, KeySpec, PublishOrigins,
    RequestParts, TokenCacheStats, TokenRejection, TokenVerifier, TrustedIssuer, Verifier,
    VerifierOptions,
};
use quicksilver_protocol::SelectorStore;

use crate::client::{Peer, TrustedProxies};
use crate::config::{Config, IssuerSpec, RoleKeys};
use crate::error::{AuthRefusal, HubError};
use crate::jwks::JwksSource;
use crate::policies::revocation::RevocationSet;
use crate::HUB_PATH;

/// Token verifiers, extraction rules and the hub's identity settings.
pub struct Authenticator {
    publishers: Option<Verifier>,
    subscribers: Verifier,
    store: Arc<SelectorStore>,
    resource_identifier: Option<String>,
    /// The origins served (`--public-url`; empty: any), lowercase `scheme://host[:port]`.
    public_origins: Vec<String>,
    trusted_proxies: TrustedProxies,
    /// The scheme the hub's own listener serves: `https` with `--tls-cert`, else `http`.
    listener_scheme: &'static str,
    authorization_servers: Vec<String>,
    access_token_cookie: String,
    jwks: Vec<JwksSource>,
    /// Revoked tokens, refused after verification (see [`crate::policies::revocation`]).
    revocations: Option<Arc<RevocationSet>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("resource_identifier", &self.resource_identifier)
            .finish_non_exhaustive()
    }
}

/// Who the hub is for one request: the audience current tokens must name, and the hub URL that
/// relative URL patterns and subscription topics resolve against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestIdentity {
    /// The resource identifier (token `aud`).
    pub resource: String,
    /// The hub's absolute URL, e.g. `https://hub.example.com/.well-known/mercure`.
    pub hub_url: String,
}

impl RequestIdentity {
    /// As the auth crate wants it.
    pub fn as_hub(&self) -> HubIdentity<'_> {
        HubIdentity {
            resource: &self.resource,
            hub_url: Some(&self.hub_url),
        }
    }

    /// The protected resource metadata URL for this identity, when the resource identifier is an
    /// absolute HTTP(S) URL.
    pub fn metadata_url(&self) -> Option<String> {
        protected_resource_metadata_url(&self.resource)
    }
}

/// Builds the authenticator; refuses bad keys (e.g. a PEM key with an HMAC algorithm), bad issuer
/// specifications and unreadable `file://` JWK Sets, so a misconfigured hub does not start. Remote
/// JWK Sets are fetched in the background ([`crate::jwks`]).
pub fn authenticator(config: &Config, store: Arc<SelectorStore>) -> anyhow::Result<Authenticator> {
    let key = |role: &str, key: Option<(&str, &str)>| -> anyhow::Result<Option<KeySpec>> {
        key.map(|(key, alg)| {
            KeySpec::new(key, alg).map_err(|e| anyhow::anyhow!("invalid {role} JWT key: {e}"))
        })
        .transpose()
    };
    let publisher_key = key("publisher", config.publisher_key())?;
    let subscriber_key = key("subscriber", config.subscriber_key())?;

    // `--issuer` values (the hub's keys or one JWK Set for both roles), then the `issuer` blocks of
    // MERCURE_EXTRA_DIRECTIVES (keys per role): together, the trusted issuers.
    let mut issuers = config
        .issuers
        .iter()
        .map(|s| IssuerSpec::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("invalid --issuer: {e}"))?;
    issuers.extend(config.issuer_blocks.iter().cloned());
    let mut jwks: Vec<JwksSource> = Vec::new();
    let mut jwks_uris: Vec<&str> = Vec::new();
    let mut publisher_issuers = Vec::new();
    let mut subscriber_issuers = Vec::new();
    for issuer in &issuers {
        let uses_configured = [&issuer.publisher, &issuer.subscriber]
            .into_iter()
            .all(|k| matches!(k, RoleKeys::Configured));
        if uses_configured && publisher_key.is_none() && subscriber_key.is_none() {
            anyhow::bail!(
                "--issuer {} has neither a jwks_uri nor a publisher/subscriber JWT key",
                issuer.id
            );
        }
        for (role, role_keys, configured, trusted_issuers) in [
            (
                "publisher",
                &issuer.publisher,
                &publisher_key,
                &mut publisher_issuers,
            ),
            (
                "subscriber",
                &issuer.subscriber,
                &subscriber_key,
                &mut subscriber_issuers,
            ),
        ] {
            let invalid = |e: &dyn std::fmt::Display| {
                anyhow::anyhow!("invalid issuer {} ({role}): {e}", issuer.id)
            };
            let (keys, algorithms): (quicksilver_auth::IssuerKeys, &[String]) = match role_keys {
                RoleKeys::Refused => continue,
                RoleKeys::Configured => match configured {
                    Some(key) => (key.clone().into(), &issuer.algorithms),
                    None => continue,
                },
                RoleKeys::Jwt { key, algorithm } => (
                    KeySpec::new(key, algorithm)
                        .map_err(|e| invalid(&e))?
                        .into(),
                    &[],
                ),
                RoleKeys::Jwks { uri, algorithms } => {
                    // One source per set, however many roles and issuers name it.
                    let index = match jwks_uris.iter().position(|u| *u == uri.as_str()) {
                        Some(index) => index,
                        None => {
                            jwks.push(JwksSource::open(&issuer.id, uri, config.jwks_refresh)?);
                            jwks_uris.push(uri);
                            jwks.len() - 1
                        }
                    };
                    let source = &jwks[index];
                    let algorithms = if algorithms.is_empty() {
                        &issuer.algorithms
                    } else {
                        algorithms
                    };
                    (source.keys().into(), algorithms)
                }
            };
            let trusted = TrustedIssuer::new(&issuer.id, keys).map_err(|e| invalid(&e))?;
            let trusted = if algorithms.is_empty() {
                trusted
            } else {
                trusted
                    .with_algorithms(algorithms)
                    .map_err(|e| invalid(&e))?
            };
            trusted_issuers.push(trusted);
        }
    }

    let publish_origins = PublishOrigins::new(&config.publish_origins)
        .map_err(|e| anyhow::anyhow!("invalid --publish-origins: {e}"))?;
    let credentials = CredentialConfig {
        cookie_name: config.access_token_cookie.clone(),
        legacy_cookie_name: config.cookie_name.clone(),
        publish_origins,
    };
    // A role's pre-standardization tokens are verified with its key, or with the JWK Set of the
    // reference's 0.x `*_jwks_url` directives (which, as there, takes precedence over the key).
    let mut sets: [Option<TokenVerifier>; 2] = [None, None];
    let roles = [
        ("publisher", config.legacy_jwks.publisher.as_deref()),
        ("subscriber", config.legacy_jwks.subscriber.as_deref()),
    ];
    for (slot, (role, uri)) in sets.iter_mut().zip(roles) {
        let Some(uri) = uri.filter(|_| config.legacy) else {
            continue;
        };
        let index = match jwks_uris.iter().position(|u| *u == uri) {
            Some(index) => index,
            None => {
                let label = format!("(pre-standardization {role}s)");
                jwks.push(JwksSource::open(&label, uri, config.jwks_refresh)?);
                jwks_uris.push(uri);
                jwks.len() - 1
            }
        };
        *slot = Some(
            TokenVerifier::with_key_set(jwks[index].keys(), &[], VerifierOptions::default())
                .map_err(|e| anyhow::anyhow!("{role} JWK Set {uri}: {e}"))?,
        );
    }
    let [publisher_set, subscriber_set] = sets;
    // With legacy on but no key for a role, no legacy token can be valid; a verifier with a random
    // secret keeps the legacy extraction rules (query parameter, legacy cookie) for that role while
    // refusing every such token for its signature.
    let legacy_verifier = |key: Option<KeySpec>,
                           set: Option<TokenVerifier>|
     -> anyhow::Result<Option<TokenVerifier>> {
        if !config.legacy {
            return Ok(None);
        }
        if set.is_some() {
            return Ok(set);
        }
        let spec = match key {
            Some(spec) => spec,
            None => unverifiable_key()?,
        };
        Ok(Some(TokenVerifier::new(spec, VerifierOptions::default())))
    };
    let verifier = |issuers: Vec<TrustedIssuer>,
                    legacy_key: Option<KeySpec>,
                    legacy_set: Option<TokenVerifier>|
     -> anyhow::Result<Verifier> {
        let current = AccessTokenVerifier::new(issuers, AccessTokenOptions::default())
            .map_err(|e| anyhow::anyhow!("invalid --issuer: {e}"))?;
        Ok(Verifier::new(
            current,
            legacy_verifier(legacy_key, legacy_set)?,
            credentials.clone(),
        )
        .with_token_cache(config.token_cache_size))
    };
    // Without any publisher key nor issuer, publishing is refused outright (clearer than "invalid
    // token"); subscribers then may only be anonymous, and a presented token is refused.
    let publishers =
        if publisher_issuers.is_empty() && publisher_key.is_none() && publisher_set.is_none() {
            None
        } else {
            Some(verifier(publisher_issuers, publisher_key, publisher_set)?)
        };
    let subscribers = verifier(subscriber_issuers, subscriber_key, subscriber_set)?;
    if publishers.is_none() {
        tracing::warn!("no publisher JWT key nor issuer configured (MERCURE_PUBLISHER_JWT_KEY, --issuer): every publish will be refused");
    }
    Ok(Authenticator {
        publishers,
        subscribers,
        store,
        resource_identifier: config.resource_identifier.clone(),
        public_origins: config.public_url.clone(),
        trusted_proxies: TrustedProxies::new(config.trusted_proxies.clone()),
        listener_scheme: if config.tls_cert.is_some() {
            "https"
        } else {
            "http"
        },
        authorization_servers: issuers
            .iter()
            .filter(|i| i.authorization_server)
            .map(|i| i.id.clone())
            .collect(),
        access_token_cookie: config.access_token_cookie.clone(),
        jwks,
        revocations: None,
    })
}

/// An HMAC key nobody knows: verifies nothing.
fn unverifiable_key() -> anyhow::Result<KeySpec> {
    let secret: String = (0..48).map(|_| fastrand::alphanumeric()).collect();
    KeySpec::new(&secret, "HS256").map_err(|e| anyhow::anyhow!("{e}"))
}

impl Authenticator {
    /// Refuses the tokens `revocations` holds, on every request, after verification.
    pub fn with_revocations(mut self, revocations: Arc<RevocationSet>) -> Self {
        self.revocations = Some(revocations);
        self
    }

    /// The hub's identity for a request with these headers, from `peer`; `421` when the request
    /// names an origin outside `--public-url`.
    pub fn identity(
        &self,
        headers: &HeaderMap,
        peer: Option<Peer>,
    ) -> Result<RequestIdentity, HubError> {
        let forwarded = self.trusted_proxies.trusts(peer);
        let origin = request_origin(headers, forwarded, self.listener_scheme);
        if !self.public_origins.is_empty()
            && !self
                .public_origins
                .iter()
                .any(|o| o.eq_ignore_ascii_case(&origin))
        {
            return Err(HubError::Misdirected(format!(
                "this hub does not serve {origin}"
            )));
        }
        let mut derived = origin;
        derived.push_str(HUB_PATH);
        Ok(match &self.resource_identifier {
            Some(resource) => RequestIdentity {
                resource: resource.clone(),
                // A configured identifier that is the hub's URL is also the base of relative
                // patterns; any other (e.g. a URN) leaves the request-derived URL as the base.
                hub_url: if resource.ends_with(HUB_PATH) {
                    resource.clone()
                } else {
                    derived
                },
            },
            None => RequestIdentity {
                resource: derived.clone(),
                hub_url: derived,
            },
        })
    }

    /// Issuers advertised as authorization servers.
    pub fn authorization_servers(&self) -> &[String] {
        &self.authorization_servers
    }

    /// The access token cookie's name.
    pub fn access_token_cookie(&self) -> &str {
        &self.access_token_cookie
    }

    /// A handle reading the verified-token caches' counts (for the metrics).
    pub fn token_caches(&self) -> TokenCaches {
        TokenCaches {
            publishers: self.publishers.clone(),
            subscribers: self.subscribers.clone(),
        }
    }

    /// Whether pre-standardization tokens are accepted.
    pub fn legacy_enabled(&self) -> bool {
        self.subscribers.legacy_enabled()
    }

    /// Authenticates a publisher: a valid token is required. `query` is the raw query string.
    pub fn publisher(
        &self,
        method: &Method,
        headers: &HeaderMap,
        query: Option<&str>,
        identity: &RequestIdentity,
    ) -> Result<Authenticated, HubError> {
        let Some(verifier) = &self.publishers else {
            return Err(self.token_required(identity, "publishing is not configured on this hub"));
        };
        let request = RequestParts::new(method, headers, query);
        self.authenticate(verifier, &request, identity)?
            .ok_or_else(|| self.token_required(identity, "a publisher token is required"))
    }

    /// Authenticates a subscriber: `Ok(None)` when the request has no token at all. `query` is
    /// the raw query string.
    pub fn subscriber(
        &self,
        method: &Method,
        headers: &HeaderMap,
        query: Option<&str>,
        identity: &RequestIdentity,
    ) -> Result<Option<Authenticated>, HubError> {
        let request = RequestParts::new(method, headers, query);
        self.authenticate(&self.subscribers, &request, identity)
    }

    fn authenticate(
        &self,
        verifier: &Verifier,
        request: &RequestParts<'_>,
        identity: &RequestIdentity,
    ) -> Result<Option<Authenticated>, HubError> {
        let authenticated = verifier
            .authenticate(&self.store, request, &identity.as_hub(), SystemTime::now())
            .map_err(|failure| {
                if failure.unknown_key() {
                    // The issuer may have rotated its keys since the last fetch.
                    self.jwks.iter().for_each(JwksSource::nudge);
                }
                HubError::Auth(self.refusal(failure.error, failure.generation, identity))
            })?;
        // Checked on every request, cached verifications included: a revoked token is refused
        // like any invalid one (the reason is not disclosed).
        if let (Some(revocations), Some(found)) = (&self.revocations, &authenticated) {
            if revocations.covers(found.grants.identity()) {
                return Err(self.revoked(identity, Some(found.generation)));
            }
        }
        Ok(authenticated)
    }

    /// Whether a token naming `identity` is revoked now.
    pub fn is_revoked(&self, identity: &quicksilver_auth::Identity) -> bool {
        self.revocations
            .as_ref()
            .is_some_and(|r| r.covers(identity))
    }

    /// A request's token is valid but its grants do not allow what it asks for.
    pub fn forbidden(&self, identity: &RequestIdentity, reason: &'static str) -> HubError {
        HubError::Auth(
            self.refusal(AuthError::NotAllowed, None, identity)
                .with_reason(reason),
        )
    }

    /// A request whose token was revoked (refused like any invalid token), counted.
    pub fn revoked(&self, identity: &RequestIdentity, generation: Option<Generation>) -> HubError {
        if let Some(revocations) = &self.revocations {
            revocations.refused.inc();
        }
        HubError::Auth(self.refusal(
            AuthError::InvalidToken(TokenRejection::Revoked),
            generation,
            identity,
        ))
    }

    /// A request without a token where one is required.
    pub fn token_required(&self, identity: &RequestIdentity, reason: &'static str) -> HubError {
        HubError::Auth(
            self.refusal(AuthError::MissingToken, None, identity)
                .with_reason(reason),
        )
    }

    /// `error` as a refusal to answer (see [`crate::error`]). `generation` is the presented
    /// token's, when one was read.
    fn refusal(
        &self,
        error: AuthError,
        generation: Option<Generation>,
        identity: &RequestIdentity,
    ) -> AuthRefusal {
        tracing::debug!(error = %error, "authentication failed");
        AuthRefusal::new(
            error,
            generation,
            self.legacy_enabled(),
            identity.metadata_url(),
        )
    }
}

/// The verifiers whose token caches ([`quicksilver_auth::cache`], `--token-cache-size`) the metrics
/// read at scrape time; they share their caches with the [`Authenticator`]'s.
#[derive(Clone, Debug)]
pub struct TokenCaches {
    publishers: Option<Verifier>,
    subscribers: Verifier,
}

impl TokenCaches {
    /// Each role's counts (`publisher`, `subscriber`), for the roles with a cache.
    pub fn stats(&self) -> Vec<(&'static str, TokenCacheStats)> {
        let publishers = self
            .publishers
            .as_ref()
            .and_then(Verifier::token_cache_stats);
        let subscribers = self.subscribers.token_cache_stats();
        [("publisher", publishers), ("subscriber", subscribers)]
            .into_iter()
            .filter_map(|(role, stats)| stats.map(|s| (role, s)))
            .collect()
    }
}

/// `SCHEME://HOST` of the request: the scheme from `X-Forwarded-Proto` (the hub itself serves
/// plain HTTP behind a TLS-terminating proxy) and the host from `X-Forwarded-Host` when the request
/// comes from a trusted proxy (`forwarded`), else the scheme of the hub's own listener
/// (`listener_scheme`: `http`, or `https` when it serves TLS) and `Host`. A missing or malformed
/// host gives `localhost`.
pub fn request_origin(headers: &HeaderMap, forwarded: bool, listener_scheme: &str) -> String {
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let scheme = match first("x-forwarded-proto").filter(|_| forwarded) {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        Some(_) => "http",
        None => listener_scheme,
    };
    let valid = |h: &&str| h.parse::<http::uri::Authority>().is_ok() && !h.contains('@');
    let host = first("x-forwarded-host")
        .filter(|_| forwarded)
        .filter(valid)
        .or_else(|| first("host").filter(valid))
        .unwrap_or("localhost");
    // One allocation, with room for the hub path the identity appends (see
    // [`Authenticator::identity`]): this runs for every request.
    let mut origin = String::with_capacity(scheme.len() + 3 + host.len() + HUB_PATH.len());
    origin.push_str(scheme);
    origin.push_str("://");
    origin.extend(host.chars().map(|c| c.to_ascii_lowercase()));
    origin
}

/// Parses a `--public-url` entry into the origin it names (`scheme://host[:port]`, lowercase,
/// without a default port).
pub fn parse_public_url(text: &str) -> Result<String, String> {
    let url = url::Url::parse(text.trim()).map_err(|e| format!("{text:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("{text:?} is not an http(s) URL"));
    }
    Ok(url.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origin_is_derived_from_forwarded_headers_of_trusted_proxies_only() {
        let mut h = HeaderMap::new();
        assert_eq!(request_origin(&h, true, "http"), "http://localhost");
        h.insert("host", "Hub.example.com:8080".parse().unwrap());
        assert_eq!(
            request_origin(&h, true, "http"),
            "http://hub.example.com:8080"
        );
        h.insert("x-forwarded-proto", "https, http".parse().unwrap());
        h.insert("x-forwarded-host", "public.example.com".parse().unwrap());
        assert_eq!(
            request_origin(&h, true, "http"),
            "https://public.example.com"
        );
        // From anyone else, forwarded headers are the client's word and are ignored.
        assert_eq!(
            request_origin(&h, false, "http"),
            "http://hub.example.com:8080"
        );
        // A hub serving TLS itself is reached over HTTPS, unless a trusted proxy says otherwise.
        assert_eq!(
            request_origin(&h, false, "https"),
            "https://hub.example.com:8080"
        );
        h.insert("x-forwarded-proto", "http".parse().unwrap());
        assert_eq!(
            request_origin(&h, true, "https"),
            "http://public.example.com"
        );
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        h.insert("x-forwarded-host", "evil.example/path".parse().unwrap());
        assert_eq!(
            request_origin(&h, true, "http"),
            "https://hub.example.com:8080",
            "a forwarded host that is not an authority is ignored"
        );
    }

    #[test]
    fn public_urls_are_origins() {
        assert_eq!(
            parse_public_url("https://Hub.Example.com:443/.well-known/mercure").unwrap(),
            "https://hub.example.com"
        );
        assert_eq!(
            parse_public_url("http://localhost:3000").unwrap(),
            "http://localhost:3000"
        );
        assert!(parse_public_url("hub.example.com").is_err());
        assert!(parse_public_url("ftp://hub.example.com").is_err());
    }
}
