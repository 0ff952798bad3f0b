//! Why a request was not authenticated, in words safe to send back to the client.
//!
//! Every failure of token extraction or verification is one [`AuthError`]. Its `Display` text is
//! short, static and never contains the token, a key, a claim value or a header value, so the server
//! may log it and show it to clients alike.
//!
//! Two status mappings exist, one per generation of the protocol:
//! - [`AuthError::status_hint`]: the pre-standardization reference hub's (`401` for almost
//!   everything), for deployments verifying legacy tokens only with [`crate::TokenVerifier`];
//! - [`AuthError::bearer_challenge`]: the current specification's "Error Responses" (`400`
//!   `invalid_request`, `401` `invalid_token` or bare, `403` `insufficient_scope`), rendered by
//!   [`crate::bearer`] as a `WWW-Authenticate: Bearer` header. A hub accepting current tokens (with
//!   [`crate::Verifier`]) answers every failure this way, whatever the token's generation.

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
    /// The URL carries a token: the RFC 6750 `access_token` query parameter (never accepted), the
    /// legacy `authorization` parameter while the legacy generation is off, or a current-generation
    /// access token in the legacy parameter. The current specification forbids tokens in URLs
    /// ("Presenting the Access Token"); the client is told so instead of being silently anonymous.
    #[error("access tokens must not be passed in the URL")]
    TokenInUrl,
    /// The `authorization_details` claim, or one of its Mercure authorization details, is
    /// malformed ("Authorization Details", "Topic Matcher List"). The reason is static text.
    #[error("invalid authorization_details claim: {0}")]
    InvalidAuthorizationDetails(&'static str),
}

impl AuthError {
    /// The HTTP status the reference hub answers for this failure: `401 Unauthorized` for all of
    /// them, including [`AuthError::OriginNotAllowed`] and [`AuthError::NotAllowed`] (a publish to
    /// a topic outside the grants). A server preferring `403` for the last two can match on them.
    ///
    /// The variants added with the current generation answer their [`AuthError::bearer_challenge`]
    /// status (there is no pre-standardization precedent for them).
    pub fn status_hint(&self) -> StatusCode {
        match self {
            AuthError::TokenInUrl | AuthError::InvalidAuthorizationDetails(_) => {
                self.bearer_challenge().status()
            }
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

    /// The current specification's answer to this failure: its status, `error` code and
    /// description, ready to render as a `WWW-Authenticate: Bearer` header.
    pub fn bearer_challenge(&self) -> crate::bearer::BearerChallenge {
        crate::bearer::BearerChallenge::for_error(self)
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
    /// An access token without the `exp` claim, which the current generation requires.
    #[error("the exp claim is required")]
    MissingExpiry,
    /// An access token whose `typ` header is not `at+jwt` (nor `application/at+jwt`).
    #[error("the typ header must be at+jwt")]
    Type,
    /// An access token whose `aud` claim does not name the hub's resource identifier.
    #[error("the aud claim does not name this hub")]
    Audience,
    /// An access token whose `iss` claim is missing or not one of the trusted issuers (for the
    /// endpoint's role).
    #[error("untrusted issuer")]
    Issuer,
    /// No trusted key of the token's issuer has the token's `kid`. A server fetching the issuer's
    /// JWK Set may take this as a hint to refetch it (rate-limited), as the set may have rotated.
    #[error("no trusted key matches the kid header")]
    UnknownKey,
    /// The token's header lists critical extensions (`crit`), none of which this hub understands,
    /// so RFC 7515 requires refusing it.
    #[error("unsupported critical header parameters")]
    CriticalHeader,
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
