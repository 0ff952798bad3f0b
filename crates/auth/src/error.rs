//! Why a request was not authenticated, in words safe to send back to the client.
//!
//! Every failure of token extraction or verification is one [`AuthError`]. Its `Display` text is
//! short, static and never contains the token, a key, a claim value or a header value, so the server
//! may log it and show it to clients alike. [`crate::Verifier::authenticate`] returns it inside an
//! [`AuthFailure`], with the generation of the token presented.
//!
//! What to answer (the HTTP status, the `WWW-Authenticate: Bearer` challenge, and the
//! pre-standardization answers kept for legacy tokens) is decided by the server, in one place, from
//! the [`AuthError`] and that generation: this crate only says what went wrong.

use thiserror::Error;

use crate::generation::Generation;

/// A request could not be authenticated.
///
/// Not `#[non_exhaustive]`: the server matches every variant to decide its answer, so a new
/// variant must get one there.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
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

/// A request that failed authentication: why, and the generation of the token it presented.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{error}")]
pub struct AuthFailure {
    /// Why.
    pub error: AuthError,
    /// The generation the presented token claims by its header ([`crate::token_generation`]);
    /// `None` when the request was refused before a token was read (a malformed `Authorization`
    /// header, a token in the URL, a failed origin check).
    pub generation: Option<Generation>,
}

impl AuthFailure {
    /// Whether the token names a `kid` that none of its issuer's keys has: the issuer may have
    /// rotated its keys since they were last fetched, so a server fetching JWK Sets should fetch
    /// again (rate-limited: forged tokens can name any `kid`).
    pub fn unknown_key(&self) -> bool {
        self.error == AuthError::InvalidToken(TokenRejection::UnknownKey)
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
    /// JWK Set may take this as a hint to refetch it (rate-limited), as the set may have rotated
    /// ([`AuthFailure::unknown_key`]).
    #[error("no trusted key matches the kid header")]
    UnknownKey,
    /// The token's header lists critical extensions (`crit`), none of which this hub understands,
    /// so RFC 7515 requires refusing it.
    #[error("unsupported critical header parameters")]
    CriticalHeader,
    /// The token is valid but was revoked (by its `jti`, or by its subject and issue time): the
    /// server's revocation list, checked after verification, says so.
    #[error("token revoked")]
    Revoked,
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
