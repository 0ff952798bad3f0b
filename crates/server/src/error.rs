//! Every error a request can end with, and its HTTP answer, in one place.
//!
//! Handlers return [`HubError`]; its [`IntoResponse`] picks the status and writes a short reason as
//! `text/plain`. Reasons never contain a token or key.
//!
//! # Authentication failures
//!
//! [`HubError::Auth`] holds the auth crate's [`AuthError`] and what its answer depends on
//! ([`AuthRefusal`]); the status and the `WWW-Authenticate: Bearer` challenge are decided here and
//! nowhere else. The current specification ("Error Responses", after RFC 6750 §3) puts the OAuth
//! error code in the challenge, never in the body; every answer carries the challenge, naming the
//! protected resource metadata (RFC 9728 `resource_metadata`) when the hub's resource identifier
//! is an HTTP(S) URL.
//!
//! | failure                                                    | status | legacy request | `error`              |
//! |------------------------------------------------------------|--------|----------------|----------------------|
//! | no token where one is required                             | 401    | 401            | none (bare challenge)|
//! | a malformed `Authorization` header or `authorization`      | 400    | 401            | `invalid_request`    |
//! | parameter; a cookie publish failing the CSRF origin check  |        |                |                      |
//! | a token in the URL                                         | 400    | 400            | `invalid_request`    |
//! | the token fails validation, or its authorization details  | 401    | 401            | `invalid_token`      |
//! | are malformed or over the limits                           |        |                |                      |
//! | a valid token does not grant the operation                 | 403    | 403            | `insufficient_scope` |
//!
//! A *legacy request* is one the pre-standardization hub could have received: the legacy
//! generation is on and the request presented no current (`at+jwt`) token. It keeps that hub's
//! answer, `401` for every authentication failure, so existing clients see exactly what they saw
//! before; the failures that generation never had (a token in the URL) keep their current answer.
//!
//! Every `invalid_token` gets the same description and body: the specification asks hubs not to
//! disclose *why* a token was refused (signature, expiry, audience…); the precise [`AuthError`] is
//! logged at debug level. The cookie-publish origin failures are `invalid_request`: the token is
//! never inspected, the way it was presented is what is refused.

use std::fmt;

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use quicksilver_auth::{AuthError, Generation};
use thiserror::Error;

/// A request's failure.
#[derive(Debug, Error)]
pub enum HubError {
    /// Malformed request (400).
    #[error("{0}")]
    BadRequest(String),
    /// An authentication or authorization failure, answered with its status and a
    /// `WWW-Authenticate: Bearer` challenge (see the module's table).
    #[error("{0}")]
    Auth(AuthRefusal),
    /// Over a size limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// No such resource (404).
    #[error("{0}")]
    NotFound(String),
    /// The request (its body) did not arrive in time (408).
    #[error("{0}")]
    Timeout(String),
    /// Wrong content type (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The transport cannot store or read now, or the node is at one of its limits; retry later
    /// (503 with `Retry-After`).
    #[error("{0}")]
    Unavailable(String),
    /// The request names an origin this hub does not serve (421).
    #[error("{0}")]
    Misdirected(String),
    /// The client holds its share of a limit (429 with `Retry-After`).
    #[error("{0}")]
    TooManyRequests(String),
    /// The hub holds as much of something as it may (507): revocations at `--max-revocations`.
    #[error("{0}")]
    InsufficientStorage(String),
    /// Over a rate limit or a connection cap of the policies (429 with `Retry-After`: the wait in
    /// whole seconds, rounded up).
    #[error("{message}")]
    Limited {
        /// What the client is told.
        message: String,
        /// How long until the request would be allowed (as far as the hub can tell).
        retry_after: std::time::Duration,
    },
}

impl IntoResponse for HubError {
    fn into_response(self) -> Response {
        let status = match &self {
            HubError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HubError::Auth(refusal) => refusal.answer().status(refusal.legacy),
            HubError::NotFound(_) => StatusCode::NOT_FOUND,
            HubError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            HubError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            HubError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            HubError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            HubError::TooManyRequests(_) | HubError::Limited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            HubError::Misdirected(_) => StatusCode::MISDIRECTED_REQUEST,
            HubError::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
        };
        let mut response = (status, format!("{self}\n")).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let HubError::Auth(refusal) = &self {
            headers.insert(header::WWW_AUTHENTICATE, refusal.challenge());
        }
        if let HubError::Limited { retry_after, .. } = &self {
            let seconds = crate::policies::limits::retry_after_seconds(*retry_after);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        } else if status == StatusCode::SERVICE_UNAVAILABLE
            || status == StatusCode::TOO_MANY_REQUESTS
        {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// An authentication or authorization failure and what its answer depends on: why, whether the
/// request is a legacy one, what to tell the client, and the metadata URL its challenge names.
#[derive(Debug)]
pub struct AuthRefusal {
    error: AuthError,
    legacy: bool,
    reason: Option<&'static str>,
    resource_metadata: Option<String>,
}

impl AuthRefusal {
    /// A refusal for `error`. `generation` is the presented token's, when one was read;
    /// `legacy_enabled` whether the hub accepts pre-standardization tokens (together they say
    /// whether this is a legacy request, see the module docs); `resource_metadata` the protected
    /// resource metadata URL the challenge names.
    pub fn new(
        error: AuthError,
        generation: Option<Generation>,
        legacy_enabled: bool,
        resource_metadata: Option<String>,
    ) -> Self {
        Self {
            error,
            legacy: legacy_enabled && generation != Some(Generation::Current),
            reason: None,
            resource_metadata,
        }
    }

    /// Tells the client `reason` instead of the error's own text (unless the failure is an
    /// `invalid_token`, whose reason is never disclosed).
    pub fn with_reason(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }

    /// The answer the module's table gives `self.error`.
    fn answer(&self) -> Answer {
        let invalid_request = |description, legacy: StatusCode| Answer {
            current: StatusCode::BAD_REQUEST,
            legacy,
            challenge: Some((BearerError::InvalidRequest, description)),
        };
        let invalid_token = Answer {
            current: StatusCode::UNAUTHORIZED,
            legacy: StatusCode::UNAUTHORIZED,
            challenge: Some((BearerError::InvalidToken, "the access token is invalid")),
        };
        let reference_hub = StatusCode::UNAUTHORIZED;
        match &self.error {
            AuthError::MissingToken => Answer {
                current: StatusCode::UNAUTHORIZED,
                legacy: StatusCode::UNAUTHORIZED,
                challenge: None,
            },
            // A valid token lacking the right is 403 in both generations (as the hub always did).
            AuthError::NotAllowed => Answer {
                current: StatusCode::FORBIDDEN,
                legacy: StatusCode::FORBIDDEN,
                challenge: Some((
                    BearerError::InsufficientScope,
                    "the access token does not grant this operation",
                )),
            },
            AuthError::InvalidAuthorizationHeader => invalid_request(
                "the Authorization header must hold one Bearer token",
                reference_hub,
            ),
            AuthError::InvalidAuthorizationQuery => {
                invalid_request("invalid authorization query parameter", reference_hub)
            }
            AuthError::MissingOrigin => invalid_request(
                "an Origin or Referer header is required with cookie authorization",
                reference_hub,
            ),
            AuthError::InvalidReferer => invalid_request("invalid Referer header", reference_hub),
            AuthError::OriginNotAllowed => invalid_request(
                "origin not allowed to publish with cookie authorization",
                reference_hub,
            ),
            // No pre-standardization precedent: answered as the current specification says.
            AuthError::TokenInUrl => invalid_request(
                "access tokens must not be passed in the URL",
                StatusCode::BAD_REQUEST,
            ),
            AuthError::TokenTooLong { .. }
            | AuthError::InvalidToken(_)
            | AuthError::TooManySelectors { .. }
            | AuthError::InvalidAuthorizationDetails(_) => invalid_token,
        }
    }

    /// The `WWW-Authenticate` value: `Bearer`, then the `error` code and `error_description`
    /// when the failure has them, then `resource_metadata` when known, e.g.
    /// `Bearer error="invalid_token", error_description="the access token is invalid",
    /// resource_metadata="https://hub.example.com/.well-known/oauth-protected-resource/.well-known/mercure"`.
    fn challenge(&self) -> HeaderValue {
        let mut out = String::from("Bearer");
        let mut separator = " ";
        let mut param = |name: &str, value: &str| {
            out.push_str(separator);
            separator = ", ";
            out.push_str(name);
            out.push_str("=\"");
            quote_into(&mut out, value);
            out.push('"');
        };
        if let Some((code, description)) = self.answer().challenge {
            param("error", code.as_str());
            param("error_description", description);
        }
        if let Some(url) = &self.resource_metadata {
            param("resource_metadata", url);
        }
        // `quote_into` only emits visible ASCII and spaces, which a header value always accepts;
        // the fallback is unreachable but keeps this function total.
        HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
    }
}

impl fmt::Display for AuthRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.answer().challenge, self.reason) {
            // Why a token was refused is not disclosed to the client; the debug log has it.
            (Some((BearerError::InvalidToken, description)), _) => f.write_str(description),
            (_, Some(reason)) => f.write_str(reason),
            (_, None) => self.error.fmt(f),
        }
    }
}

/// What one kind of failure is answered: its status for current and for legacy requests, and the
/// `error` code and description of its challenge (`None`: a bare challenge).
struct Answer {
    current: StatusCode,
    legacy: StatusCode,
    challenge: Option<(BearerError, &'static str)>,
}

impl Answer {
    fn status(&self, legacy: bool) -> StatusCode {
        if legacy {
            self.legacy
        } else {
            self.current
        }
    }
}

/// An RFC 6750 §3.1 error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BearerError {
    /// The request, or the way it presents its token, is malformed.
    InvalidRequest,
    /// The token is expired, forged, malformed or otherwise invalid.
    InvalidToken,
    /// The token is valid but does not grant the operation.
    InsufficientScope,
}

impl BearerError {
    fn as_str(self) -> &'static str {
        match self {
            BearerError::InvalidRequest => "invalid_request",
            BearerError::InvalidToken => "invalid_token",
            BearerError::InsufficientScope => "insufficient_scope",
        }
    }
}

/// Appends `value` as the inside of an HTTP quoted string: characters a header cannot carry
/// (controls, non-ASCII) are dropped, and `"` and `\` are escaped, so any configured resource
/// identifier yields a valid header.
fn quote_into(out: &mut String, value: &str) {
    for c in value.chars().filter(|c| matches!(c, ' '..='~')) {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quicksilver_auth::TokenRejection;

    const METADATA: &str =
        "https://hub.example.com/.well-known/oauth-protected-resource/.well-known/mercure";

    /// Status, `WWW-Authenticate` and body of `refusal`'s response.
    async fn answered(refusal: AuthRefusal) -> (StatusCode, String, String) {
        let response = HubError::Auth(refusal).into_response();
        let status = response.status();
        let challenge = response.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .to_string();
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        (status, challenge, String::from_utf8(body.to_vec()).unwrap())
    }

    fn refusal(error: AuthError, generation: Option<Generation>, legacy: bool) -> AuthRefusal {
        AuthRefusal::new(error, generation, legacy, Some(METADATA.to_string()))
    }

    const INVALID_TOKEN: &str =
        "Bearer error=\"invalid_token\", error_description=\"the access token is invalid\"";

    /// Every failure, with its status for a current request and for a legacy one, and its
    /// challenge (before `resource_metadata`): the module's table, row by row.
    fn table() -> Vec<(AuthError, u16, u16, String)> {
        let request =
            |d: &str| format!("Bearer error=\"invalid_request\", error_description=\"{d}\"");
        let invalid_token = || INVALID_TOKEN.to_string();
        vec![
            (AuthError::MissingToken, 401, 401, "Bearer".to_string()),
            (
                AuthError::InvalidAuthorizationHeader,
                400,
                401,
                request("the Authorization header must hold one Bearer token"),
            ),
            (
                AuthError::InvalidAuthorizationQuery,
                400,
                401,
                request("invalid authorization query parameter"),
            ),
            (
                AuthError::MissingOrigin,
                400,
                401,
                request("an Origin or Referer header is required with cookie authorization"),
            ),
            (
                AuthError::InvalidReferer,
                400,
                401,
                request("invalid Referer header"),
            ),
            (
                AuthError::OriginNotAllowed,
                400,
                401,
                request("origin not allowed to publish with cookie authorization"),
            ),
            (
                AuthError::TokenInUrl,
                400,
                400,
                request("access tokens must not be passed in the URL"),
            ),
            (
                AuthError::TokenTooLong { max: 1 },
                401,
                401,
                invalid_token(),
            ),
            (
                AuthError::InvalidToken(TokenRejection::Signature),
                401,
                401,
                invalid_token(),
            ),
            (
                AuthError::InvalidToken(TokenRejection::Expired),
                401,
                401,
                invalid_token(),
            ),
            (
                AuthError::InvalidToken(TokenRejection::Audience),
                401,
                401,
                invalid_token(),
            ),
            (
                AuthError::InvalidToken(TokenRejection::UnknownKey),
                401,
                401,
                invalid_token(),
            ),
            (
                AuthError::TooManySelectors {
                    claim: "authorization_details",
                    max: 1,
                },
                401,
                401,
                invalid_token(),
            ),
            (
                AuthError::InvalidAuthorizationDetails("x"),
                401,
                401,
                invalid_token(),
            ),
            (
                AuthError::NotAllowed,
                403,
                403,
                "Bearer error=\"insufficient_scope\", \
                 error_description=\"the access token does not grant this operation\""
                    .to_string(),
            ),
        ]
    }

    #[tokio::test]
    async fn every_failure_is_answered_as_the_table_says() {
        for (error, current, legacy, challenge) in table() {
            let with_metadata = format!("{challenge}, resource_metadata=\"{METADATA}\"")
                .replacen("Bearer, ", "Bearer ", 1);
            // Legacy off: every request follows the current specification.
            for generation in [None, Some(Generation::Legacy), Some(Generation::Current)] {
                let (status, header, _) = answered(refusal(error.clone(), generation, false)).await;
                assert_eq!(status.as_u16(), current, "{error}, legacy off");
                assert_eq!(header, with_metadata, "{error}");
            }
            // Legacy on: a current token gets the current answer...
            let (status, header, _) =
                answered(refusal(error.clone(), Some(Generation::Current), true)).await;
            assert_eq!(status.as_u16(), current, "{error}, current token");
            assert_eq!(header, with_metadata, "{error}");
            // ...anything else the pre-standardization one, with the same challenge.
            for generation in [None, Some(Generation::Legacy)] {
                let (status, header, _) = answered(refusal(error.clone(), generation, true)).await;
                assert_eq!(status.as_u16(), legacy, "{error}, legacy request");
                assert_eq!(header, with_metadata, "{error}");
            }
        }
    }

    #[tokio::test]
    async fn bodies_never_say_why_a_token_was_refused() {
        for (error, _, _, challenge) in table() {
            let (_, _, body) = answered(refusal(error.clone(), None, false)).await;
            let (_, _, told) =
                answered(refusal(error.clone(), None, false).with_reason("told")).await;
            if challenge == INVALID_TOKEN {
                assert_eq!(body, "the access token is invalid\n", "{error}");
                assert_eq!(told, "the access token is invalid\n", "{error}");
            } else {
                assert_eq!(body, format!("{error}\n"));
                assert_eq!(told, "told\n", "{error}");
            }
        }
    }

    #[test]
    fn descriptions_use_only_the_characters_rfc_6750_allows() {
        for (error, ..) in table() {
            if let Some((_, d)) = refusal(error, None, false).answer().challenge {
                assert!(
                    d.bytes()
                        .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E)),
                    "{d:?}"
                );
            }
        }
    }

    #[test]
    fn odd_metadata_urls_still_make_a_valid_header() {
        let odd = AuthRefusal::new(
            AuthError::MissingToken,
            None,
            false,
            Some("https://h/\"q\" \\ é\r\n\u{7f}m".to_string()),
        );
        assert_eq!(
            odd.challenge(),
            r#"Bearer resource_metadata="https://h/\"q\" \\ m""#
        );
        let none = AuthRefusal::new(AuthError::MissingToken, None, false, None);
        assert_eq!(none.challenge(), "Bearer");
    }
}
