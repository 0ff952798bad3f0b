//! One `--issuer` value, `ID [jwks_uri=URL] [alg=NAME]… [authorization_server]`: a trusted issuer
//! of access tokens and where its keys come from. Parsed when the authenticator is built
//! ([`crate::auth::authenticator`]), so a bad value refuses to start the hub, naming the issuer.

/// One `--issuer` value: `ID [jwks_uri=URL] [authorization_server]`, whitespace-separated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerSpec {
    /// The `iss` value.
    pub id: String,
    /// The issuer's JWK Set, instead of the configured publisher/subscriber keys.
    pub jwks_uri: Option<String>,
    /// Advertise the issuer as an authorization server in the protected resource metadata.
    pub authorization_server: bool,
    /// `alg=NAME` (repeatable): the algorithms accepted from this issuer; default: the
    /// configured key's algorithm, or for a JWK Set the asymmetric ones (HMAC keys in a JWK Set
    /// need `alg=HS256` or similar).
    pub algorithms: Vec<String>,
}

impl IssuerSpec {
    /// Parses one `--issuer` value.
    pub fn parse(value: &str) -> Result<Self, String> {
        let mut parts = value.split_whitespace();
        let id = parts
            .next()
            .ok_or_else(|| "an issuer identifier is required".to_string())?;
        let mut spec = IssuerSpec {
            id: id.to_string(),
            jwks_uri: None,
            authorization_server: false,
            algorithms: Vec::new(),
        };
        for part in parts {
            match part.split_once('=') {
                Some(("jwks_uri", uri)) if !uri.is_empty() && spec.jwks_uri.is_none() => {
                    spec.jwks_uri = Some(uri.to_string())
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
        Ok(spec)
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
        assert_eq!(b.jwks_uri.as_deref(), Some("file:///etc/jwks.json"));
        assert!(b.authorization_server);
        assert_eq!(b.algorithms, vec!["HS256"]);
        let a = IssuerSpec::parse(&c.issuers[0]).unwrap();
        assert_eq!((a.jwks_uri, a.authorization_server), (None, false));
        assert!(IssuerSpec::parse("").is_err());
        assert!(IssuerSpec::parse("https://a jwks=x").is_err());
        assert!(IssuerSpec::parse("https://a jwks_uri=").is_err());
    }
}
