//! JWTs for publishers and subscribers, minted from `--jwt-key` / `--jwt-private-key-file` or
//! taken as given with `--jwt`.
//!
//! Claims are the Mercure ones: `{"mercure":{"publish":[…],"subscribe":[…]}}` plus an expiry a
//! day away, so a long run never outlives its tokens.

use std::path::Path;
use std::str::FromStr;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::clock::unix_micros;

/// Why no token could be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenError {
    #[error("unknown JWT algorithm `{0}`")]
    Algorithm(String),
    #[error("cannot read the private key file {0}: {1}")]
    KeyFile(String, std::io::Error),
    #[error("invalid key for {0:?}: {1}")]
    Key(Algorithm, jsonwebtoken::errors::Error),
    #[error("{0:?} needs a PEM private key (--jwt-private-key-file)")]
    NeedsPrivateKey(Algorithm),
    #[error("signing the JWT: {0}")]
    Sign(jsonwebtoken::errors::Error),
    #[error("publishing needs a token: give --jwt-key, --jwt-private-key-file or --jwt")]
    Missing,
}

/// Where tokens come from.
pub(crate) enum TokenSource {
    /// Sign our own.
    Mint {
        key: EncodingKey,
        algorithm: Algorithm,
    },
    /// Use this one for everything.
    Fixed(String),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Mint { algorithm, .. } => write!(f, "Mint({algorithm:?})"),
            Self::Fixed(_) => f.write_str("Fixed(..)"),
        }
    }
}

impl TokenSource {
    /// Builds the source from the command-line options.
    pub(crate) fn new(
        jwt: Option<&str>,
        secret: Option<&str>,
        algorithm: &str,
        private_key_file: Option<&Path>,
    ) -> Result<Self, TokenError> {
        if let Some(jwt) = jwt {
            return Ok(Self::Fixed(jwt.to_owned()));
        }
        let algorithm = Algorithm::from_str(algorithm)
            .map_err(|_| TokenError::Algorithm(algorithm.to_owned()))?;
        let key = match (algorithm, private_key_file, secret) {
            (Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512, _, Some(secret)) => {
                EncodingKey::from_secret(secret.as_bytes())
            }
            (Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512, _, None) => {
                return Err(TokenError::Missing)
            }
            (_, None, _) => return Err(TokenError::NeedsPrivateKey(algorithm)),
            (_, Some(path), _) => {
                let pem = std::fs::read(path)
                    .map_err(|e| TokenError::KeyFile(path.display().to_string(), e))?;
                let parsed = match algorithm {
                    Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
                    Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
                    _ => EncodingKey::from_rsa_pem(&pem),
                };
                parsed.map_err(|e| TokenError::Key(algorithm, e))?
            }
        };
        Ok(Self::Mint { key, algorithm })
    }

    /// A token allowing `publish` and `subscribe` topic selectors.
    pub(crate) fn token(&self, publish: &[&str], subscribe: &[&str]) -> Result<String, TokenError> {
        self.token_of(publish, subscribe, None)
    }

    /// [`TokenSource::token`] of user `subject`, with its own `jti` and an `iat` (a fixed token
    /// is returned as it is).
    pub(crate) fn token_of(
        &self,
        publish: &[&str],
        subscribe: &[&str],
        subject: Option<&str>,
    ) -> Result<String, TokenError> {
        match self {
            Self::Fixed(jwt) => Ok(jwt.clone()),
            Self::Mint { key, algorithm } => {
                let now = unix_micros() / 1_000_000;
                let mut claims = json!({
                    "mercure": { "publish": publish, "subscribe": subscribe },
                    "exp": now + 24 * 3600,
                });
                if let Some(subject) = subject {
                    claims["sub"] = json!(subject);
                    claims["jti"] = json!(format!("{subject}-token"));
                    claims["iat"] = json!(now);
                }
                jsonwebtoken::encode(&Header::new(*algorithm), &claims, key)
                    .map_err(TokenError::Sign)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    #[test]
    fn mints_hs256_with_mercure_claims() {
        let source = TokenSource::new(None, Some("secret"), "HS256", None).unwrap();
        let token = source
            .token(&["*"], &["https://example.com/docs/1"])
            .unwrap();
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &DecodingKey::from_secret(b"secret"),
            &Validation::new(Algorithm::HS256),
        )
        .unwrap();
        assert_eq!(data.claims["mercure"]["publish"][0], "*");
        assert_eq!(
            data.claims["mercure"]["subscribe"][0],
            "https://example.com/docs/1"
        );
    }

    #[test]
    fn refuses_what_it_cannot_sign() {
        assert!(matches!(
            TokenSource::new(None, None, "HS256", None),
            Err(TokenError::Missing)
        ));
        assert!(matches!(
            TokenSource::new(None, Some("k"), "RS256", None),
            Err(TokenError::NeedsPrivateKey(_))
        ));
        assert!(TokenSource::new(None, None, "XX1", None).is_err());
        assert!(matches!(
            TokenSource::new(Some("given"), None, "HS256", None)
                .unwrap()
                .token(&[], &[])
                .as_deref(),
            Ok("given")
        ));
    }
}
