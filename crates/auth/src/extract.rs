//! Token extraction: where a request carries its token, for a hub accepting current access tokens
//! and, unless switched off, legacy (pre-standardization) ones.
//!
//! The current specification ("Presenting the Access Token") accepts the `Authorization` header
//! and a cookie (recommended name [`DEFAULT_ACCESS_TOKEN_COOKIE`]) and never a token in the URL;
//! the legacy generation also reads the `authorization` query parameter and its own cookie, in the
//! reference hub's order. A token's generation is only known later, from its header
//! ([`crate::generation`]), so one order serves both:
//!
//! 1. The RFC 6750 `access_token` query parameter is refused in every mode
//!    ([`AuthError::TokenInUrl`], `400 invalid_request`): no generation ever accepted it, and a
//!    client sending it expects it to work, so it is told rather than left anonymous.
//! 2. The legacy `authorization` query parameter:
//!    - legacy **off**: present at all (whatever else the request carries) → refused with
//!      [`AuthError::TokenInUrl`];
//!    - legacy **on**: used when there is no `Authorization` header, ignored when there is one,
//!      [`AuthError::InvalidAuthorizationQuery`] when repeated or too short — a broken parameter
//!      never falls back to a cookie. A token found there must then turn out to be a *legacy*
//!      token: a current (`at+jwt`) token from the URL is refused with [`AuthError::TokenInUrl`] at
//!      verification.
//! 3. An `Authorization` header wins over everything else. It must be a single header reading
//!    `Bearer <token>` (scheme case-insensitive, as RFC 9110 says) with a token of plausible
//!    length, else the request is refused — a broken header never falls back to the query or a
//!    cookie. A cookie next to it is ignored, as the specification requires (cookies are ambient).
//! 4. Else the cookie named [`CredentialConfig::cookie_name`]; when legacy is on and that cookie
//!    is absent, the legacy cookie ([`CredentialConfig::legacy_cookie_name`]) — either cookie may
//!    carry either generation, which eases migrating one of them at a time. A state-changing
//!    request (a publish) authenticated by cookie must pass the CSRF check of [`PublishOrigins`]:
//!    its `Origin` header, or failing that the origin of its `Referer`, must be allowed.
//! 5. Else no token: `Ok(None)`, and the caller decides whether anonymity is allowed.
//!
//! `extract` is a pure function of the request parts ([`RequestParts`]); it does not verify the
//! token. It is reached through [`crate::Verifier::authenticate`], the crate's one entry.

use std::fmt;

use http::{header, HeaderMap, Method};

use crate::error::AuthError;
use crate::origin::{referer_origin, PublishOrigins};

/// The default authorization cookie name, as on the reference hub before 1.0.
pub const DEFAULT_COOKIE_NAME: &str = "mercureAuthorization";

/// The cookie name the current specification recommends. The `__Secure-` prefix makes browsers
/// refuse it over plain HTTP, so local development without TLS needs another name.
pub const DEFAULT_ACCESS_TOKEN_COOKIE: &str = "__Secure-mercure_access_token";

/// The shortest plausible compact JWS (a minimal header, two dots, and some claims and signature),
/// as on the reference hub: shorter values are refused without trying to decode them.
pub const MIN_TOKEN_LEN: usize = 41;

const BEARER: &str = "Bearer ";

/// Where the token was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenSource {
    /// `Authorization: Bearer …`.
    Header,
    /// The `authorization` query parameter.
    Query,
    /// The authorization cookie.
    Cookie,
}

impl TokenSource {
    /// A short lowercase name for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            TokenSource::Header => "header",
            TokenSource::Query => "query",
            TokenSource::Cookie => "cookie",
        }
    }
}

/// The parts of a request that may carry a token: its method (a cookie-authenticated publish must
/// pass the origin check), its headers (`Authorization`, `Cookie`, `Origin`, `Referer`) and its
/// query's token parameters. `Debug` leaves the headers out (they may hold a token).
#[derive(Clone)]
pub struct RequestParts<'a> {
    method: &'a Method,
    headers: &'a HeaderMap,
    url: UrlTokens,
}

impl<'a> RequestParts<'a> {
    /// The parts of a request with this method, these headers and this raw query string (`a=1&b=2`,
    /// without `?`).
    pub fn new(method: &'a Method, headers: &'a HeaderMap, query: Option<&str>) -> Self {
        Self {
            method,
            headers,
            url: UrlTokens::from_query(query),
        }
    }
}

impl fmt::Debug for RequestParts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestParts")
            .field("method", self.method)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Token-carrying parameters of a request's URL, as decoded query values. `Debug` hides them.
#[derive(Clone, Default, PartialEq, Eq)]
struct UrlTokens {
    /// The values of the legacy `authorization` parameter.
    authorization: Vec<String>,
    /// Whether the RFC 6750 `access_token` parameter is present (its value is never used).
    has_access_token: bool,
}

impl fmt::Debug for UrlTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UrlTokens")
            .field("authorization", &self.authorization.len())
            .field("has_access_token", &self.has_access_token)
            .finish()
    }
}

impl UrlTokens {
    /// Reads a raw query string (`a=1&b=2`, without `?`). A query that is not valid UTF-8 once
    /// decoded yields nothing here; the server refuses it when parsing the rest of the query.
    fn from_query(query: Option<&str>) -> Self {
        let mut out = Self::default();
        let Some(Ok(pairs)) = query.map(|q| quicksilver_protocol::form::parse_pairs(q.as_bytes()))
        else {
            return out;
        };
        for (name, value) in pairs {
            match name.as_str() {
                "authorization" => out.authorization.push(value),
                "access_token" => out.has_access_token = true,
                _ => {}
            }
        }
        out
    }
}

/// Where tokens are looked for: the cookie names and the origins allowed to publish with a cookie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialConfig {
    /// The cookie read first (default [`DEFAULT_ACCESS_TOKEN_COOKIE`]).
    pub cookie_name: String,
    /// The cookie read when the first is absent and the legacy generation is on (default
    /// [`DEFAULT_COOKIE_NAME`]).
    pub legacy_cookie_name: String,
    /// Origins allowed to publish with a cookie.
    pub publish_origins: PublishOrigins,
}

impl Default for CredentialConfig {
    fn default() -> Self {
        Self {
            cookie_name: DEFAULT_ACCESS_TOKEN_COOKIE.to_string(),
            legacy_cookie_name: DEFAULT_COOKIE_NAME.to_string(),
            publish_origins: PublishOrigins::default(),
        }
    }
}

/// A token found in a request, not yet verified. Its `Debug` output hides the token.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExtractedToken<'a> {
    /// The compact JWS.
    pub(crate) token: &'a str,
    /// Where it was found.
    pub(crate) source: TokenSource,
}

impl fmt::Debug for ExtractedToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExtractedToken")
            .field("token", &format_args!("<{} bytes>", self.token.len()))
            .field("source", &self.source)
            .finish()
    }
}

/// Finds the request's token, reading the legacy carriers when `legacy_enabled` (the rules are in
/// the module documentation).
pub(crate) fn extract<'a>(
    request: &'a RequestParts<'_>,
    config: &CredentialConfig,
    legacy_enabled: bool,
) -> Result<Option<ExtractedToken<'a>>, AuthError> {
    let RequestParts {
        method,
        headers,
        url,
    } = request;
    if url.has_access_token || (!legacy_enabled && !url.authorization.is_empty()) {
        return Err(AuthError::TokenInUrl);
    }

    let mut authorization = headers.get_all(header::AUTHORIZATION).iter();
    if let Some(value) = authorization.next() {
        if authorization.next().is_some() {
            return Err(AuthError::InvalidAuthorizationHeader);
        }
        let value = value
            .to_str()
            .map_err(|_| AuthError::InvalidAuthorizationHeader)?;
        let token = bearer_token(value).ok_or(AuthError::InvalidAuthorizationHeader)?;
        return Ok(Some(ExtractedToken {
            token,
            source: TokenSource::Header,
        }));
    }

    // Only reached with legacy on: the parameter was refused above otherwise.
    if !url.authorization.is_empty() {
        return match url.authorization.as_slice() {
            [token] if token.len() >= MIN_TOKEN_LEN => Ok(Some(ExtractedToken {
                token,
                source: TokenSource::Query,
            })),
            _ => Err(AuthError::InvalidAuthorizationQuery),
        };
    }

    let found = cookie(headers, &config.cookie_name).or_else(|| {
        legacy_enabled
            .then(|| cookie(headers, &config.legacy_cookie_name))
            .flatten()
    });
    let Some(token) = found else {
        return Ok(None);
    };
    if !is_safe(method) {
        check_origin(headers, &config.publish_origins)?;
    }
    Ok(Some(ExtractedToken {
        token,
        source: TokenSource::Cookie,
    }))
}

fn bearer_token(value: &str) -> Option<&str> {
    if value.len() < BEARER.len() + MIN_TOKEN_LEN {
        return None;
    }
    let (scheme, token) = value.split_at_checked(BEARER.len())?;
    scheme.eq_ignore_ascii_case(BEARER).then_some(token)
}

/// Methods that cannot change state, so cannot be abused through a forged cross-site request:
/// among them `QUERY`, a subscription whose parameters are in the body (safe by definition).
/// The reference hub checks POST only; every other state-changing method is held to the same rule
/// here, so a route added later cannot forget it.
fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) || method.as_str() == "QUERY"
}

fn check_origin(headers: &HeaderMap, allowed: &PublishOrigins) -> Result<(), AuthError> {
    let non_empty = |name| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("\u{fffd}"))
            .filter(|v| !v.is_empty())
    };
    let origin = match non_empty(header::ORIGIN) {
        Some(origin) => origin.to_string(),
        None => {
            let referer = non_empty(header::REFERER).ok_or(AuthError::MissingOrigin)?;
            if allowed.allows_any() {
                return Ok(());
            }
            referer_origin(referer).ok_or(AuthError::InvalidReferer)?
        }
    };
    if allowed.allows(&origin) {
        Ok(())
    } else {
        Err(AuthError::OriginNotAllowed)
    }
}

/// The value of the first well-formed cookie named `name` over all `Cookie` headers, with one
/// pair of surrounding double quotes removed. Malformed pairs are skipped, as browsers and the
/// reference hub do.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(n, _)| *n == name)
        .find_map(|(_, value)| {
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            value
                .bytes()
                .all(|b| (0x21..0x7f).contains(&b) && !matches!(b, b'"' | b',' | b';' | b'\\'))
                .then_some(value)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.eyJtZXJjdXJlIjp7fX0.c2lnbmF0dXJlLXNpZ25hdHVyZQ";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_needs_a_plausible_token() {
        assert_eq!(bearer_token(&format!("Bearer {TOKEN}")), Some(TOKEN));
        assert_eq!(bearer_token(&format!("bearer {TOKEN}")), Some(TOKEN));
        assert_eq!(bearer_token(&format!("Basic {TOKEN}")), None);
        assert_eq!(bearer_token(&format!("Bearer{TOKEN}")), None);
        assert_eq!(bearer_token("Bearer short"), None);
        assert_eq!(
            bearer_token("Bearér xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
            None
        );
    }

    #[test]
    fn cookie_parsing() {
        let h = headers(&[
            ("cookie", "a=1; mercureAuthorization=\"tok\"; b=2"),
            ("cookie", "mercureAuthorization=later"),
        ]);
        assert_eq!(cookie(&h, "mercureAuthorization"), Some("tok"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "missing"), None);
        assert_eq!(cookie(&h, "MercureAuthorization"), None);

        let h = headers(&[("cookie", "x=bad\\value; x=good")]);
        assert_eq!(cookie(&h, "x"), Some("good"));
        let h = headers(&[("cookie", "junk; x=")]);
        assert_eq!(cookie(&h, "x"), Some(""));
    }

    #[test]
    fn url_tokens_from_query() {
        let u = UrlTokens::from_query(Some(
            "match=x&authorization=a%2Bb&authorization=c&access_token",
        ));
        assert_eq!(u.authorization, ["a+b", "c"]);
        assert!(u.has_access_token);
        let none = UrlTokens::default();
        assert_eq!(
            UrlTokens::from_query(Some("match=urn:a&Authorization=x")),
            none
        );
        assert_eq!(UrlTokens::from_query(None), none);
        assert_eq!(UrlTokens::from_query(Some("authorization=%FF")), none);
        let shown = format!(
            "{:?}",
            UrlTokens::from_query(Some("authorization=secret-token"))
        );
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn debug_hides_the_token() {
        let t = ExtractedToken {
            token: TOKEN,
            source: TokenSource::Cookie,
        };
        let shown = format!("{t:?}");
        assert!(!shown.contains("eyJ"), "{shown}");
        assert!(shown.contains("Cookie"), "{shown}");
    }
}
