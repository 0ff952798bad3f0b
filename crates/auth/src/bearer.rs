//! The current specification's error responses: status codes and `WWW-Authenticate: Bearer`.
//!
//! The specification ("Error Responses") follows RFC 6750 §3: the OAuth error code travels as
//! the `error` parameter of a `Bearer` challenge, never in the body, and every `401` or `403`
//! carries the challenge, which should name the protected resource metadata (RFC 9728
//! `resource_metadata`). The mapping, from an [`AuthError`] to a [`BearerChallenge`]:
//!
//! | failure                                                        | status | `error`              |
//! |----------------------------------------------------------------|--------|----------------------|
//! | no token where one is required ([`AuthError::MissingToken`])   | 401    | none (bare challenge)|
//! | the token's presentation is malformed: a bad `Authorization`   | 400    | `invalid_request`    |
//! | header, a token in the URL, a cookie publish failing the CSRF  |        |                      |
//! | origin check                                                   |        |                      |
//! | the token fails validation, or its authorization details are   | 401    | `invalid_token`      |
//! | malformed or over the limits                                   |        |                      |
//! | a valid token does not grant the operation ([`AuthError::NotAllowed`]) | 403 | `insufficient_scope` |
//!
//! Every `invalid_token` gets the same description: the specification asks hubs not to disclose
//! *why* a token was refused (bad signature, expired, wrong audience…); the precise reason is the
//! [`AuthError`]'s `Display`, for the hub's logs.
//!
//! The cookie-publish origin failures are `invalid_request`, as on the reference hub: the token is
//! never inspected, the way it was presented is what is refused.
//!
//! Rendering is pure: the server passes the realm (optional, RFC 6750 allows it) and the metadata
//! URL ([`crate::metadata::protected_resource_metadata_url`]) and sets the header it gets back.

use http::{HeaderValue, StatusCode};

use crate::error::AuthError;

/// An RFC 6750 §3.1 error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BearerErrorCode {
    /// The request, or the way it presents its token, is malformed: `400 Bad Request`.
    InvalidRequest,
    /// The token is expired, forged, malformed or otherwise invalid: `401 Unauthorized`.
    InvalidToken,
    /// The token is valid but does not grant the operation: `403 Forbidden`.
    InsufficientScope,
}

impl BearerErrorCode {
    /// The code as written in the challenge (`invalid_request`, …).
    pub fn as_str(&self) -> &'static str {
        match self {
            BearerErrorCode::InvalidRequest => "invalid_request",
            BearerErrorCode::InvalidToken => "invalid_token",
            BearerErrorCode::InsufficientScope => "insufficient_scope",
        }
    }

    /// The status RFC 6750 and the specification pair with the code.
    pub fn status(&self) -> StatusCode {
        match self {
            BearerErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
            BearerErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
            BearerErrorCode::InsufficientScope => StatusCode::FORBIDDEN,
        }
    }
}

/// What to answer an unauthenticated or unauthorized request: a status and the parts of its
/// `WWW-Authenticate: Bearer` challenge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BearerChallenge {
    code: Option<BearerErrorCode>,
    description: Option<&'static str>,
}

const INVALID_TOKEN: &str = "the access token is invalid";
const INSUFFICIENT_SCOPE: &str = "the access token does not grant this operation";

impl BearerChallenge {
    /// No token was presented and the operation needs one: `401` with a bare challenge (the
    /// specification forbids an error code here).
    pub fn missing_token() -> Self {
        Self {
            code: None,
            description: None,
        }
    }

    /// A valid token does not grant the operation: `403`, `insufficient_scope`.
    pub fn insufficient_scope() -> Self {
        Self {
            code: Some(BearerErrorCode::InsufficientScope),
            description: Some(INSUFFICIENT_SCOPE),
        }
    }

    /// The challenge answering `error` (see the module's table).
    pub fn for_error(error: &AuthError) -> Self {
        let request = |description| Self {
            code: Some(BearerErrorCode::InvalidRequest),
            description: Some(description),
        };
        match error {
            AuthError::MissingToken => Self::missing_token(),
            AuthError::NotAllowed => Self::insufficient_scope(),
            AuthError::InvalidAuthorizationHeader => {
                request("the Authorization header must hold one Bearer token")
            }
            AuthError::InvalidAuthorizationQuery => {
                request("invalid authorization query parameter")
            }
            AuthError::TokenInUrl => request("access tokens must not be passed in the URL"),
            AuthError::MissingOrigin => {
                request("an Origin or Referer header is required with cookie authorization")
            }
            AuthError::InvalidReferer => request("invalid Referer header"),
            AuthError::OriginNotAllowed => {
                request("origin not allowed to publish with cookie authorization")
            }
            AuthError::TokenTooLong { .. }
            | AuthError::InvalidToken(_)
            | AuthError::TooManySelectors { .. }
            | AuthError::InvalidAuthorizationDetails(_) => Self {
                code: Some(BearerErrorCode::InvalidToken),
                description: Some(INVALID_TOKEN),
            },
        }
    }

    /// The `error` code; `None` for the bare challenge.
    pub fn code(&self) -> Option<BearerErrorCode> {
        self.code
    }

    /// The `error_description`, a short static text.
    pub fn description(&self) -> Option<&'static str> {
        self.description
    }

    /// The response status: the code's, or `401` for the bare challenge.
    pub fn status(&self) -> StatusCode {
        self.code
            .map_or(StatusCode::UNAUTHORIZED, |code| code.status())
    }

    /// The `WWW-Authenticate` value: `Bearer` then, when given or known, `realm`, `error`,
    /// `error_description` and `resource_metadata`, e.g.
    /// `Bearer error="invalid_token", error_description="the access token is invalid",
    /// resource_metadata="https://hub.example.com/.well-known/oauth-protected-resource/.well-known/mercure"`.
    ///
    /// Values are written as quoted strings; characters a header cannot carry (controls,
    /// non-ASCII) are dropped, and `"` and `\` are escaped, so any configured realm or URL yields a
    /// valid header.
    pub fn render(&self, realm: Option<&str>, resource_metadata: Option<&str>) -> String {
        let mut out = String::from("Bearer");
        let mut separator = " ";
        let mut param = |name: &str, value: &str| {
            out.push_str(separator);
            separator = ", ";
            out.push_str(name);
            out.push_str("=\"");
            for c in value.chars().filter(|c| matches!(c, ' '..='~')) {
                if matches!(c, '"' | '\\') {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        };
        if let Some(realm) = realm {
            param("realm", realm);
        }
        if let Some(code) = self.code {
            param("error", code.as_str());
        }
        if let Some(description) = self.description {
            param("error_description", description);
        }
        if let Some(url) = resource_metadata {
            param("resource_metadata", url);
        }
        out
    }

    /// [`BearerChallenge::render`] as a header value.
    pub fn header_value(
        &self,
        realm: Option<&str>,
        resource_metadata: Option<&str>,
    ) -> HeaderValue {
        // `render` only emits visible ASCII and spaces, which a header value always accepts; the
        // fallback is unreachable but keeps this function total.
        HeaderValue::from_str(&self.render(realm, resource_metadata))
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
    }
}

impl From<&AuthError> for BearerChallenge {
    fn from(error: &AuthError) -> Self {
        Self::for_error(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TokenRejection;

    const METADATA: &str =
        "https://hub.example.com/.well-known/oauth-protected-resource/.well-known/mercure";

    #[test]
    fn missing_token_is_a_bare_401_challenge() {
        let c = BearerChallenge::for_error(&AuthError::MissingToken);
        assert_eq!(c, BearerChallenge::missing_token());
        assert_eq!(c.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(c.code(), None);
        assert_eq!(c.render(None, None), "Bearer");
        assert_eq!(
            c.render(None, Some(METADATA)),
            format!("Bearer resource_metadata=\"{METADATA}\"")
        );
    }

    #[test]
    fn every_token_defect_is_the_same_invalid_token() {
        let defects = [
            AuthError::TokenTooLong { max: 1 },
            AuthError::InvalidToken(TokenRejection::Signature),
            AuthError::InvalidToken(TokenRejection::Expired),
            AuthError::InvalidToken(TokenRejection::NotYetValid),
            AuthError::InvalidToken(TokenRejection::MissingExpiry),
            AuthError::InvalidToken(TokenRejection::Type),
            AuthError::InvalidToken(TokenRejection::Audience),
            AuthError::InvalidToken(TokenRejection::Issuer),
            AuthError::InvalidToken(TokenRejection::UnknownKey),
            AuthError::InvalidToken(TokenRejection::Algorithm),
            AuthError::InvalidToken(TokenRejection::Malformed),
            AuthError::InvalidToken(TokenRejection::CriticalHeader),
            AuthError::TooManySelectors {
                claim: "authorization_details",
                max: 1,
            },
            AuthError::InvalidAuthorizationDetails("x"),
        ];
        let want =
            "Bearer error=\"invalid_token\", error_description=\"the access token is invalid\"";
        for e in defects {
            let c = e.bearer_challenge();
            assert_eq!(c.status(), StatusCode::UNAUTHORIZED, "{e}");
            assert_eq!(c.code(), Some(BearerErrorCode::InvalidToken), "{e}");
            // The reason is not disclosed to the client.
            assert_eq!(c.render(None, None), want, "{e}");
            assert_eq!(e.status_hint(), StatusCode::UNAUTHORIZED, "{e}");
        }
    }

    #[test]
    fn presentation_errors_are_invalid_request() {
        for e in [
            AuthError::InvalidAuthorizationHeader,
            AuthError::InvalidAuthorizationQuery,
            AuthError::TokenInUrl,
            AuthError::MissingOrigin,
            AuthError::InvalidReferer,
            AuthError::OriginNotAllowed,
        ] {
            let c = e.bearer_challenge();
            assert_eq!(c.status(), StatusCode::BAD_REQUEST, "{e}");
            assert_eq!(c.code(), Some(BearerErrorCode::InvalidRequest), "{e}");
            let rendered = c.render(None, Some(METADATA));
            assert!(
                rendered.starts_with("Bearer error=\"invalid_request\", error_description=\""),
                "{rendered}"
            );
            assert!(rendered.ends_with(&format!(", resource_metadata=\"{METADATA}\"")));
        }
        assert_eq!(
            AuthError::TokenInUrl.bearer_challenge().render(None, None),
            "Bearer error=\"invalid_request\", error_description=\"access tokens must not be passed in the URL\""
        );
        assert_eq!(AuthError::TokenInUrl.status_hint(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn not_allowed_is_403_insufficient_scope() {
        let c = AuthError::NotAllowed.bearer_challenge();
        assert_eq!(c, BearerChallenge::insufficient_scope());
        assert_eq!(c.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            c.render(Some("mercure"), Some(METADATA)),
            format!(
                "Bearer realm=\"mercure\", error=\"insufficient_scope\", \
                 error_description=\"the access token does not grant this operation\", \
                 resource_metadata=\"{METADATA}\""
            )
        );
    }

    #[test]
    fn descriptions_use_only_the_characters_rfc_6750_allows() {
        let all = [
            AuthError::InvalidAuthorizationHeader,
            AuthError::InvalidAuthorizationQuery,
            AuthError::TokenInUrl,
            AuthError::MissingOrigin,
            AuthError::InvalidReferer,
            AuthError::OriginNotAllowed,
            AuthError::InvalidToken(TokenRejection::Expired),
            AuthError::NotAllowed,
        ];
        for e in all {
            let d = e.bearer_challenge().description().unwrap_or_default();
            assert!(
                d.bytes()
                    .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E)),
                "{d:?}"
            );
        }
    }

    #[test]
    fn odd_parameter_values_still_make_a_valid_header() {
        let c = BearerChallenge::missing_token();
        let rendered = c.render(Some("a \"q\" \\ é\r\nx"), None);
        assert_eq!(rendered, r#"Bearer realm="a \"q\" \\ x""#);
        let v = c.header_value(Some("r\u{0}"), Some("https://h/\u{7f}m"));
        assert_eq!(v, "Bearer realm=\"r\", resource_metadata=\"https://h/m\"");
    }
}
