//! Tokens of the hub's administration endpoints (revocations): signed with a key of their own,
//! never the publisher's or the subscriber's, and granting one thing only.
//!
//! An admin token is a JWT signed with the admin key's one algorithm, with an `exp` (required: an
//! admin token should live minutes, `quicksilver revoke` mints one per call) and a `scope` claim
//! (space-separated, as in RFC 9068 access tokens) naming what it may administer, e.g.
//! `{"scope":"revocations","exp":1765000000}`. The `scope` requirement means that even a key
//! shared by mistake with some other signer does not make that signer's tokens admin tokens.
//!
//! [`AdminVerifier::verify`] takes the compact token and the scope the endpoint needs and answers
//! like the other verifiers: [`AuthError::InvalidToken`] for a token that fails verification,
//! [`AuthError::NotAllowed`] for a valid token without the scope. Nothing here performs I/O.

use std::time::{Duration, SystemTime};

use jsonwebtoken::Validation;
use serde::Deserialize;

use crate::error::{AuthError, TokenRejection};
use crate::key::KeySpec;
use crate::verifier::{check_validity_window, rejection, DEFAULT_MAX_TOKEN_BYTES};

/// Clock difference tolerated between the machine minting an admin token and the hub.
pub const ADMIN_LEEWAY: Duration = Duration::from_secs(5);

/// Verifies admin tokens (see the module docs).
#[derive(Clone, Debug)]
pub struct AdminVerifier {
    key: KeySpec,
    validation: Validation,
}

/// The claims an admin token is read for.
#[derive(Deserialize)]
struct AdminClaims {
    exp: Option<f64>,
    #[serde(default)]
    nbf: Option<f64>,
    #[serde(default)]
    scope: Option<String>,
}

impl AdminVerifier {
    /// A verifier for tokens signed with `key`.
    pub fn new(key: KeySpec) -> Self {
        let mut validation = Validation::new(key.algorithm());
        // The window is checked below against the caller's clock, with the reference boundaries.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        Self { key, validation }
    }

    /// Checks that `token` is an admin token valid at `now` whose `scope` names `scope`.
    pub fn verify(&self, token: &str, scope: &str, now: SystemTime) -> Result<(), AuthError> {
        if token.len() > DEFAULT_MAX_TOKEN_BYTES {
            return Err(AuthError::TokenTooLong {
                max: DEFAULT_MAX_TOKEN_BYTES,
            });
        }
        let claims =
            jsonwebtoken::decode::<AdminClaims>(token, self.key.decoding_key(), &self.validation)
                .map_err(|e| rejection(e.kind()))?
                .claims;
        let Some(exp) = claims.exp else {
            return Err(TokenRejection::MissingExpiry.into());
        };
        check_validity_window(Some(exp), claims.nbf, now, ADMIN_LEEWAY)?;
        let granted = claims
            .scope
            .as_deref()
            .is_some_and(|s| s.split(' ').any(|s| s == scope));
        if !granted {
            return Err(AuthError::NotAllowed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;
    use std::time::UNIX_EPOCH;

    const KEY: &str = "an admin key, not the publisher's";
    const NOW: u64 = 1_700_000_000;

    fn token(key: &str, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(key.as_bytes()),
        )
        .unwrap()
    }

    fn verify(token: &str) -> Result<(), AuthError> {
        let verifier = AdminVerifier::new(KeySpec::new(KEY, "HS256").unwrap());
        verifier.verify(token, "revocations", UNIX_EPOCH + Duration::from_secs(NOW))
    }

    #[test]
    fn an_admin_token_needs_the_key_an_expiry_and_the_scope() {
        let exp = NOW + 60;
        assert_eq!(
            verify(&token(
                KEY,
                json!({"scope": "other revocations", "exp": exp})
            )),
            Ok(())
        );
        assert_eq!(
            verify(&token(
                "another key",
                json!({"scope": "revocations", "exp": exp})
            )),
            Err(AuthError::InvalidToken(TokenRejection::Signature))
        );
        assert_eq!(
            verify(&token(KEY, json!({"scope": "revocations"}))),
            Err(AuthError::InvalidToken(TokenRejection::MissingExpiry))
        );
        assert_eq!(
            verify(&token(
                KEY,
                json!({"scope": "revocations", "exp": NOW - 60})
            )),
            Err(AuthError::InvalidToken(TokenRejection::Expired))
        );
        // A Mercure token signed with the same key still grants no administration.
        assert_eq!(
            verify(&token(
                KEY,
                json!({"mercure": {"publish": ["*"]}, "exp": exp})
            )),
            Err(AuthError::NotAllowed)
        );
        assert_eq!(
            verify(&token(KEY, json!({"scope": "revocationsx", "exp": exp}))),
            Err(AuthError::NotAllowed)
        );
        assert_eq!(
            verify("not.a.token"),
            Err(AuthError::InvalidToken(TokenRejection::Malformed))
        );
    }
}
