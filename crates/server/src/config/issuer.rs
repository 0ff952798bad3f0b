//! A trusted issuer of access tokens and where each role's keys come from ([`IssuerSpec`]): from
//! one `--issuer` value, `ID [jwks_uri=URL] [alg=NAME]… [authorization_server]`, parsed when the
//! authenticator is built ([`crate::auth::authenticator`]) so a bad value refuses to start the
//! hub, naming the issuer; or from an `issuer` block of `MERCURE_EXTRA_DIRECTIVES`
//! ([`super::directives`]).

/// A trusted issuer of access tokens and where each role's keys come from: one `--issuer` value
/// (`ID [jwks_uri=URL] [alg=NAME]… [authorization_server]`, whitespace-separated), or an `issuer`
/// block of `MERCURE_EXTRA_DIRECTIVES`, which binds keys per role.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuerSpec {
    /// The `iss` value.
    pub id: String,
    /// Advertise the issuer as an authorization server in the protected resource metadata.
    pub authorization_server: bool,
    /// How publishers' tokens of this issuer are verified.
    pub publisher: RoleKeys,
    /// How subscribers' tokens of this issuer are verified.
    pub subscriber: RoleKeys,
    /// `alg=NAME` (repeatable): the algorithms accepted from this issuer with the hub's own keys or
    /// a JWK Set without algorithms of its own; default: the configured key's algorithm, or for a
    /// JWK Set the asymmetric ones (HMAC keys in a JWK Set need `alg=HS256` or similar).
    pub algorithms: Vec<String>,
}

/// Where one role's keys for an issuer come from.
#[derive(Clone, PartialEq, Eq)]
pub enum RoleKeys {
    /// The hub's key for the role (`--publisher-jwt-key`, `--subscriber-jwt-key`, `--jwt-key`).
    Configured,
    /// A key of the issuer's own (an HMAC secret or a PEM public key) and its algorithm.
    Jwt {
        /// The key.
        key: String,
        /// Its algorithm.
        algorithm: String,
    },
    /// A JWK Set (`https://`, `http://` or `file://`), refreshed every `--jwks-refresh`.
    Jwks {
        /// Where the set is.
        uri: String,
        /// The algorithms accepted (empty: the asymmetric ones, or `alg=` of the issuer).
        algorithms: Vec<String>,
    },
    /// None: this role refuses the issuer's tokens.
    Refused,
}

// By hand: a key must never reach a log line.
impl std::fmt::Debug for RoleKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RoleKeys::Configured => f.write_str("Configured"),
            RoleKeys::Jwt { algorithm, .. } => f
                .debug_struct("Jwt")
                .field("algorithm", algorithm)
                .finish_non_exhaustive(),
            RoleKeys::Jwks { uri, algorithms } => f
                .debug_struct("Jwks")
                .field("uri", uri)
                .field("algorithms", algorithms)
                .finish(),
            RoleKeys::Refused => f.write_str("Refused"),
        }
    }
}

impl std::fmt::Debug for IssuerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerSpec")
            .field("id", &self.id)
            .field("authorization_server", &self.authorization_server)
            .field("publisher", &self.publisher)
            .field("subscriber", &self.subscriber)
            .field("algorithms", &self.algorithms)
            .finish()
    }
}

impl IssuerSpec {
    /// Parses one `--issuer` value: both roles use the hub's keys, or both the JWK Set.
    pub fn parse(value: &str) -> Result<Self, String> {
        let mut parts = value.split_whitespace();
        let id = parts
            .next()
            .ok_or_else(|| "an issuer identifier is required".to_string())?;
        let mut spec = IssuerSpec {
            id: id.to_string(),
            authorization_server: false,
            publisher: RoleKeys::Configured,
            subscriber: RoleKeys::Configured,
            algorithms: Vec::new(),
        };
        let mut jwks_uri = None;
        for part in parts {
            match part.split_once('=') {
                Some(("jwks_uri", uri)) if !uri.is_empty() && jwks_uri.is_none() => {
                    jwks_uri = Some(uri.to_string())
                }
                Some(("alg", alg)) if !alg.is_empty() => spec.algorithms.push(alg.to_string()),
                None if part == "authorization_server" => spec.authorization_server = true,
                _ => {
                    return Err(format!(
                        "issuer {id}: unexpected {part:?} (expected `jwks_uri=URL`, `alg=NAME` or `authorization_server`)"
                    ))
                }
            }
        }
        if let Some(uri) = jwks_uri {
            let keys = RoleKeys::Jwks {
                uri,
                algorithms: Vec::new(),
            };
            spec.publisher = keys.clone();
            spec.subscriber = keys;
        }
        Ok(spec)
    }

    /// The JWK Set URL of either role, when one has a set.
    pub fn jwks_uri(&self) -> Option<&str> {
        [&self.publisher, &self.subscriber]
            .into_iter()
            .find_map(|keys| match keys {
                RoleKeys::Jwks { uri, .. } => Some(uri.as_str()),
                _ => None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn issuer_specs() {
        let c = Config::from_args([
            "quicksilver",
            "--issuer",
            "https://a.example",
            "--issuer",
            "https://b.example jwks_uri=file:///etc/jwks.json authorization_server alg=HS256,https://c.example",
            "--resource-identifier",
            "https://hub.example/.well-known/mercure",
            "--legacy",
            "false",
        ])
        .unwrap();
        assert_eq!(c.issuers.len(), 3);
        assert!(!c.legacy);
        let b = IssuerSpec::parse(&c.issuers[1]).unwrap();
        assert_eq!(b.id, "https://b.example");
        assert_eq!(b.jwks_uri(), Some("file:///etc/jwks.json"));
        assert_eq!(b.publisher, b.subscriber);
        assert!(b.authorization_server);
        assert_eq!(b.algorithms, vec!["HS256"]);
        let a = IssuerSpec::parse(&c.issuers[0]).unwrap();
        assert_eq!((a.jwks_uri(), a.authorization_server), (None, false));
        assert_eq!(a.publisher, RoleKeys::Configured);
        assert!(IssuerSpec::parse("").is_err());
        assert!(IssuerSpec::parse("https://a jwks=x").is_err());
        assert!(IssuerSpec::parse("https://a jwks_uri=").is_err());
    }
}
