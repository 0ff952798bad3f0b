//! Why a request was not authenticated, in words safe to send back to the client.
//!
//! Every failure of token extraction or verification is one [`AuthError`]. Its `Display` text is
//! short, static and never contains the token, a key, a claim value or a header value, so the server
//! may log it and show it to clients alike. [`AuthError::status_hint`] is the one place that says
//! which HTTP status a failure deserves.

use http::StatusCode;
use thiserror::Error;

/// A request could not be authenticated.
///
/// The reference hub answers `401 Unauthorized` to every one of these, including a cookie-based
/// publish from an origin that is not allowed (it does not tell a forged-origin attempt apart from a
/// bad token); [`AuthError::status_hint`] follows it.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// More than one `Authorization` header, a scheme other than `Bearer`, a value too short to
    /// hold a token, or bytes that are not visible ASCII.
    #[error("invalid \"Authorization\" HTTP header")]
    InvalidAuthorizationHeader,
    /// More than one `authorization` query parameter, or one too short to hold a token.
    #[error("invalid \"authorization\" query parameter")]
    InvalidAuthorizationQuery,
    /// A cookie-authenticated request with a state-changing method carried neither `Origin` nor
    /// `Referer`, so the cross-site request forgery check cannot run.
    #[error(
        "an \"Origin\" or a \"Referer\" HTTP header is required with the cookie authorization mechanism"
    )]
    MissingOrigin,
    /// The `Referer` header (used when `Origin` is absent) is not an absolute URL with a host.
    #[error("invalid \"Referer\" HTTP header")]
    InvalidReferer,
    /// A cookie-authenticated request came from an origin outside the publish origins.
    #[error("origin not allowed to post updates")]
    OriginNotAllowed,
    /// No token was presented where one is required (the server decides where; extraction
    /// itself reports a missing token as `Ok(None)`).
    #[error("missing token")]
    MissingToken,
    /// The token is longer than the verifier accepts; refused before any decoding.
    #[error("token longer than {max} bytes")]
    TokenTooLong {
        /// The limit, in bytes.
        max: usize,
    },
    /// The token failed verification.
    #[error("invalid JWT: {0}")]
    InvalidToken(TokenRejection),
    /// A grant claim lists more selectors than allowed.
    #[error("too many selectors in the \"{claim}\" claim (at most {max})")]
    TooManySelectors {
        /// The claim, e.g. `mercure.publish`.
        claim: &'static str,
        /// The limit.
        max: usize,
    },
    /// The token is valid but its grants do not cover what the request asks for (the server
    /// raises it after [`crate::can_publish`] says no).
    #[error("the token does not allow this operation")]
    NotAllowed,
}

impl AuthError {
    /// The HTTP status the reference hub answers for this failure: `401 Unauthorized` for all of
    /// them, including [`AuthError::OriginNotAllowed`] and [`AuthError::NotAllowed`] (a publish to
    /// a topic outside the grants). A server preferring `403` for the last two can match on them.
    pub fn status_hint(&self) -> StatusCode {
        match self {
            AuthError::InvalidAuthorizationHeader
            | AuthError::InvalidAuthorizationQuery
            | AuthError::MissingOrigin
            | AuthError::InvalidReferer
            | AuthError::OriginNotAllowed
            | AuthError::MissingToken
            | AuthError::TokenTooLong { .. }
            | AuthError::InvalidToken(_)
            | AuthError::TooManySelectors { .. }
            | AuthError::NotAllowed => StatusCode::UNAUTHORIZED,
        }
    }
}

/// Why a token failed verification. Deliberately coarse: the underlying library errors are not
/// kept, as some of them quote parts of the decoded claims.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenRejection {
    /// Not a compact JWS, bad base64url, bad JSON, or claims of the wrong shape.
    #[error("malformed token")]
    Malformed,
    /// Signed with another algorithm than the configured one (including `none`).
    #[error("unexpected signing algorithm")]
    Algorithm,
    /// The signature does not verify with the configured key.
    #[error("signature verification failed")]
    Signature,
    /// The `exp` claim is in the past.
    #[error("token expired")]
    Expired,
    /// The `nbf` claim is in the future.
    #[error("token not valid yet")]
    NotYetValid,
}

impl From<TokenRejection> for AuthError {
    fn from(r: TokenRejection) -> Self {
        AuthError::InvalidToken(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_401_like_the_reference_hub() {
        let all = [
            AuthError::InvalidAuthorizationHeader,
            AuthError::InvalidAuthorizationQuery,
            AuthError::MissingOrigin,
            AuthError::InvalidReferer,
            AuthError::OriginNotAllowed,
            AuthError::MissingToken,
            AuthError::TokenTooLong { max: 1 },
            AuthError::InvalidToken(TokenRejection::Expired),
            AuthError::TooManySelectors {
                claim: "mercure.publish",
                max: 1,
            },
            AuthError::NotAllowed,
        ];
        for e in all {
            assert_eq!(e.status_hint(), StatusCode::UNAUTHORIZED, "{e}");
        }
    }

    #[test]
    fn messages_are_short_and_static() {
        assert_eq!(
            AuthError::InvalidToken(TokenRejection::Signature).to_string(),
            "invalid JWT: signature verification failed"
        );
        assert_eq!(
            AuthError::OriginNotAllowed.to_string(),
            "origin not allowed to post updates"
        );
    }
}
