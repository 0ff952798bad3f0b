//! The playground (`--playground`): INSECURE, for development only.
//!
//! It adds two things to the debugger ([`crate::debugger`]):
//! - `GET /.well-known/mercure/debug/playground-token`: a freshly minted token granting publish
//!   and subscribe on every topic, which the debug page prefills. It is an access token of the
//!   first trusted issuer whose subscriber key is an HMAC secret the hub holds (audience: the
//!   resource identifier of the request), else a pre-standardization token signed with the
//!   subscriber key; publishing is granted when the publisher key is the same secret. A hub with
//!   no such secret has no token to give (`404`).
//! - `GET /playground/…`: echo endpoints for trying discovery and cookie authorization from a
//!   browser: the response body is the `body` query parameter, its content type follows the path's
//!   extension, it links the hub (`rel="mercure"`) and itself (`rel="self"`), and it sets the
//!   access token cookie to the `jwt` query parameter (or removes it). The paths sit outside the
//!   hub's reserved namespace, so they are valid topics. Responses are sandboxed by their content
//!   security policy, so an echoed page runs no script.

use std::time::SystemTime;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use serde::Deserialize;

use crate::client::Peer;
use crate::config::{Config, RoleKeys};
use crate::hub::Hub;
use crate::token::{mint, TokenArgs};
use crate::HUB_PATH;

/// The token endpoint, beside the debugger.
pub const TOKEN_PATH: &str = "/.well-known/mercure/debug/playground-token";

/// The echo endpoints' prefix.
pub const ECHO_PREFIX: &str = "/playground/";

/// How the playground signs the token it hands out: worked out once from the configuration.
#[derive(Clone)]
pub struct PlaygroundSigner {
    /// The issuer of an access token; `None`: a pre-standardization token.
    issuer: Option<String>,
    key: String,
    algorithm: String,
    /// The publisher key is the same secret, so the token may grant publishing too.
    publish: bool,
}

// By hand: the key stays out of logs.
impl std::fmt::Debug for PlaygroundSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlaygroundSigner")
            .field("issuer", &self.issuer)
            .field("algorithm", &self.algorithm)
            .field("publish", &self.publish)
            .finish_non_exhaustive()
    }
}

impl PlaygroundSigner {
    /// The signer for `config`, when the playground is on and a subscriber key is an HMAC secret.
    pub fn from_config(config: &Config) -> Option<Self> {
        if !config.playground {
            return None;
        }
        let hmac = |key: &str, alg: &str| -> bool {
            alg.starts_with("HS") && !key.trim_start().starts_with("-----BEGIN") && !key.is_empty()
        };
        let configured_subscriber = config.subscriber_key().filter(|(k, a)| hmac(k, a));
        let configured_publisher = config.publisher_key().filter(|(k, a)| hmac(k, a));
        let issuers = config
            .issuers
            .iter()
            .filter_map(|s| crate::config::IssuerSpec::parse(s).ok())
            .chain(config.issuer_blocks.iter().cloned());
        for issuer in issuers {
            let role_key = |keys: &RoleKeys, configured: Option<(&str, &str)>| match keys {
                RoleKeys::Jwt { key, algorithm } if hmac(key, algorithm) => {
                    Some((key.clone(), algorithm.clone()))
                }
                RoleKeys::Configured => configured.map(|(k, a)| (k.to_string(), a.to_string())),
                _ => None,
            };
            let Some((key, algorithm)) = role_key(&issuer.subscriber, configured_subscriber) else {
                continue;
            };
            let publish =
                role_key(&issuer.publisher, configured_publisher).is_some_and(|(k, _)| k == key);
            return Some(Self {
                issuer: Some(issuer.id),
                key,
                algorithm,
                publish,
            });
        }
        let (key, algorithm) = configured_subscriber.filter(|_| config.legacy)?;
        Some(Self {
            issuer: None,
            publish: configured_publisher.is_some_and(|(k, _)| k == key),
            key: key.to_string(),
            algorithm: algorithm.to_string(),
        })
    }

    /// A token granting everything (publishing when allowed) for a hub whose resource identifier
    /// is `resource`.
    pub fn token(&self, resource: &str) -> Result<String, crate::token::TokenError> {
        let everything = vec!["*".to_string()];
        let args = TokenArgs {
            publish: if self.publish {
                everything.clone()
            } else {
                Vec::new()
            },
            subscribe: everything,
            issuer: self.issuer.clone(),
            audience: Some(resource.to_string()),
            alg: Some(self.algorithm.clone()),
            payload: Some(r#"{"playground": true}"#.into()),
            legacy: self.issuer.is_none(),
            // Long-lived, as a development token is.
            dev: true,
            ..TokenArgs::default()
        };
        mint(&args, self.key.as_bytes(), SystemTime::now()).map(|m| m.token)
    }
}

/// `GET /.well-known/mercure/debug/playground-token`.
pub async fn token(
    State(hub): State<Hub>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
) -> Response {
    let Some(signer) = hub.playground_signer() else {
        return (
            StatusCode::NOT_FOUND,
            "the hub holds no HMAC subscriber key to sign a playground token with: paste one, or mint one with `quicksilver token`\n",
        )
            .into_response();
    };
    let identity = match hub.auth().identity(&headers, peer.map(|Extension(p)| p)) {
        Ok(identity) => identity,
        Err(e) => return e.into_response(),
    };
    match signer.token(&identity.resource) {
        Ok(token) => {
            let mut response = token.into_response();
            let h = response.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "the playground token could not be minted");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The echo endpoints' query parameters.
#[derive(Debug, Deserialize)]
pub struct EchoQuery {
    /// The response body.
    #[serde(default)]
    body: String,
    /// The token to set in the access token cookie (absent or empty: remove it).
    #[serde(default)]
    jwt: String,
}

/// `GET /playground/…`.
pub async fn echo(
    State(hub): State<Hub>,
    peer: Option<Extension<Peer>>,
    uri: Uri,
    headers: HeaderMap,
    query: Result<Query<EchoQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return (StatusCode::BAD_REQUEST, "invalid query string\n").into_response();
    };
    let cookie_name = hub.auth().access_token_cookie();
    let identity = match hub.auth().identity(&headers, peer.map(|Extension(p)| p)) {
        Ok(identity) => identity,
        Err(e) => return e.into_response(),
    };
    let https = identity.hub_url.starts_with("https://");
    let mut response = query.body.into_response();
    let h = response.headers_mut();
    let hub_link = if cookie_name == crate::config::DEFAULT_ACCESS_TOKEN_COOKIE {
        format!("<{HUB_PATH}>; rel=\"mercure\"")
    } else {
        format!("<{HUB_PATH}>; rel=\"mercure\"; cookie-name=\"{cookie_name}\"")
    };
    let self_link = format!("<{uri}>; rel=\"self\"");
    for link in [hub_link, self_link] {
        if let Ok(value) = HeaderValue::from_str(&link) {
            h.append(header::LINK, value);
        }
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(uri.path())),
    );
    // Whatever is echoed runs no script and loads nothing.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // `__Secure-` cookies need `Secure`, which browsers honour over HTTPS only.
    let secure = https || cookie_name.starts_with("__Secure-");
    let mut cookie = format!(
        "{cookie_name}={}; Path={HUB_PATH}; SameSite=Strict",
        query.jwt
    );
    if secure {
        cookie.push_str("; Secure");
    }
    if https {
        cookie.push_str("; HttpOnly");
    }
    if query.jwt.is_empty() {
        cookie.push_str("; Expires=Thu, 01 Jan 1970 00:00:00 GMT");
    }
    match HeaderValue::from_str(&cookie) {
        Ok(value) => {
            h.insert(header::SET_COOKIE, value);
        }
        Err(_) => {
            return (
                StatusCode::BAD_REQUEST,
                "the jwt parameter cannot be a cookie\n",
            )
                .into_response()
        }
    }
    response
}

/// The content type of an echoed resource, by its extension.
fn content_type(path: &str) -> &'static str {
    let extension = path
        .rsplit('/')
        .next()
        .and_then(|name| name.rsplit_once('.'))
        .map(|(_, ext)| ext.to_ascii_lowercase());
    match extension.as_deref() {
        Some("jsonld") => "application/ld+json",
        Some("json") => "application/json",
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("xml") => "application/xml",
        Some("csv") => "text/csv; charset=utf-8",
        _ => "text/plain; charset=utf-8",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(args: &[&str]) -> Option<PlaygroundSigner> {
        let mut argv = vec!["quicksilver", "--playground"];
        argv.extend_from_slice(args);
        PlaygroundSigner::from_config(&Config::from_args(argv).unwrap())
    }

    #[test]
    fn the_token_comes_from_an_issuer_with_a_secret_else_from_the_legacy_key() {
        let s = signer(&["--jwt-key", "k", "--issuer", "https://app.example"]).unwrap();
        assert_eq!(s.issuer.as_deref(), Some("https://app.example"));
        assert!(s.publish);
        let s = signer(&["--publisher-jwt-key", "p", "--subscriber-jwt-key", "s"]).unwrap();
        assert_eq!((s.issuer, s.publish), (None, false));
        assert!(signer(&["--jwt-key", "k", "--legacy", "false"]).is_none());
        let s = signer(&[]).unwrap();
        assert_eq!(
            s.key,
            crate::config::DEV_KEY,
            "the development key when none is set"
        );
        assert!(
            PlaygroundSigner::from_config(&Config::from_args(["quicksilver"]).unwrap()).is_none()
        );
    }

    #[test]
    fn content_types_follow_extensions() {
        assert_eq!(
            content_type("/playground/book.jsonld"),
            "application/ld+json"
        );
        assert_eq!(content_type("/playground/a.JSON"), "application/json");
        assert_eq!(
            content_type("/playground/x.y/z"),
            "text/plain; charset=utf-8"
        );
    }
}
