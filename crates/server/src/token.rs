//! `quicksilver token`: mints a token the hub accepts, as the reference hub's `mercure-token`
//! command does, in either generation.
//!
//! By default it prints a current access token (RFC 9068: header `typ: at+jwt`; `iss`, `aud`,
//! `sub`, `client_id`, `iat`, `exp`, `jti`; an `authorization_details` entry per action, whose
//! topics are the `--publish`/`--subscribe` exact matchers and the `--*-urlpattern` URL patterns).
//! With `--legacy` it prints a pre-standardization token instead (the `mercure` claim with
//! `publish` and `subscribe` selectors, what Symfony apps and eXeLearning send). `--key` is the
//! signing key: an HMAC secret, or a PEM private key whose algorithm `--alg` must name (an HMAC
//! algorithm with a PEM key is refused: it would sign with the key's text as a shared secret).
//!
//! [`mint`] is also what the playground uses to prefill its token ([`crate::playground`]). The
//! command runs before the hub's configuration is read and never starts the async runtime.

use std::ffi::OsString;
use std::io::Read;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};

use crate::config::{parse_duration, DEV_KEY};

/// The first argument that selects this command instead of the hub (`mercure-token`, the
/// reference's name, works too).
pub const SUBCOMMAND: &str = "token";

/// The reference's name of the command, accepted as an alias.
pub const REFERENCE_SUBCOMMAND: &str = "mercure-token";

/// The `type` of Mercure authorization details.
pub const AUTHORIZATION_DETAIL_TYPE: &str = "https://mercure.rocks/authorization-detail";

/// `--dev`'s issuer: the reference's default trusted issuer.
pub const DEV_ISSUER: &str = "https://localhost";

/// `--dev`'s audience: the resource identifier of a hub served at `https://localhost`.
pub const DEV_AUDIENCE: &str = "https://localhost/.well-known/mercure";

/// `--dev`'s expiry, 2100-01-01: a development token that never needs minting again.
pub const DEV_EXPIRY: u64 = 4_102_444_800;

/// Mints a token for a Mercure hub and prints it on standard output.
#[derive(Parser, Clone, Debug, Default)]
#[command(
    name = "quicksilver-token",
    bin_name = "quicksilver token",
    version,
    max_term_width = 100,
    after_help = "Examples:\n  quicksilver token --dev\n  quicksilver token --issuer https://example.com --audience https://hub.example.com/.well-known/mercure \\\n      --key @publisher.pem --alg ES256 --publish https://example.com/books/1 \\\n      --subscribe-urlpattern 'https://example.com/books/:id'\n  quicksilver token --legacy --key \"$MERCURE_JWT_SECRET\" --ttl 0 --publish '*' --subscribe '*'"
)]
pub struct TokenArgs {
    /// Exact topic to grant publishing on (repeatable; `*` for every topic). With `--legacy`, a
    /// topic selector (exact, `*` or URI template).
    #[arg(long = "publish", value_name = "TOPIC")]
    pub publish: Vec<String>,

    /// URL pattern of topics to grant publishing on (repeatable).
    #[arg(long = "publish-urlpattern", value_name = "PATTERN")]
    pub publish_urlpattern: Vec<String>,

    /// Exact topic to grant subscribing to (repeatable; `*` for every topic). With `--legacy`, a
    /// topic selector.
    #[arg(long = "subscribe", value_name = "TOPIC")]
    pub subscribe: Vec<String>,

    /// URL pattern of topics to grant subscribing to (repeatable).
    #[arg(long = "subscribe-urlpattern", value_name = "PATTERN")]
    pub subscribe_urlpattern: Vec<String>,

    /// Signing key: an HMAC secret, `@FILE`, `@-` for standard input (one trailing newline is
    /// dropped), or a PEM private key (then `--alg` is required).
    #[arg(long, allow_hyphen_values = true, hide_env_values = true)]
    pub key: Option<String>,

    /// Signing algorithm (default HS256 for a secret; required for a PEM key).
    #[arg(long)]
    pub alg: Option<String>,

    /// `kid` header, for hubs trusting several keys of the issuer.
    #[arg(long)]
    pub kid: Option<String>,

    /// The issuer (`iss`), one the hub trusts (`--issuer` / `MERCURE_TRUSTED_ISSUERS`).
    #[arg(long, visible_alias = "iss")]
    pub issuer: Option<String>,

    /// The audience (`aud`): the hub's resource identifier, e.g.
    /// `https://hub.example.com/.well-known/mercure`.
    #[arg(long, visible_alias = "aud")]
    pub audience: Option<String>,

    /// The subject (`sub`; default: a random `urn:uuid:`).
    #[arg(long)]
    pub sub: Option<String>,

    /// The client (`client_id`; default: the issuer).
    #[arg(long)]
    pub client_id: Option<String>,

    /// Lifetime (`1h`, `15m`, …). `0` mints a token without `exp` (legacy tokens only: access
    /// tokens must expire).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,

    /// JSON object given to subscribers as their subscriptions' `payload`.
    #[arg(long)]
    pub payload: Option<String>,

    /// Mint a pre-standardization token (the `mercure` claim) instead of an access token.
    #[arg(long)]
    pub legacy: bool,

    /// Development token: issuer `https://localhost`, audience
    /// `https://localhost/.well-known/mercure`, key `$MERCURE_PUBLISHER_JWT_KEY` (else
    /// `$MERCURE_JWT_KEY`, else the well-known development key), valid until 2100, and
    /// `--publish '*' --subscribe '*'` when no grant is given.
    #[arg(long)]
    pub dev: bool,

    /// Also print the header and claims on standard error.
    #[arg(long)]
    pub pretty: bool,
}

/// Why no token was minted.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// A required setting is missing.
    #[error("{0}")]
    Missing(&'static str),
    /// A setting that cannot be used.
    #[error("{0}")]
    Invalid(String),
    /// The key could not be read.
    #[error("cannot read the key: {0}")]
    Read(std::io::Error),
    /// Signing failed (a key that does not suit the algorithm).
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// A minted token and what went into it.
#[derive(Debug)]
pub struct Minted {
    /// The compact JWS.
    pub token: String,
    /// Its header.
    pub header: Value,
    /// Its claims.
    pub claims: Value,
}

impl TokenArgs {
    /// Fills what `--dev` stands for, never overriding what was given.
    pub fn apply_dev_defaults(&mut self, env: &dyn Fn(&str) -> Option<String>) {
        if !self.dev {
            return;
        }
        if !self.legacy {
            self.issuer.get_or_insert_with(|| DEV_ISSUER.to_string());
            self.audience
                .get_or_insert_with(|| DEV_AUDIENCE.to_string());
        }
        if self.key.is_none() {
            self.key = Some(
                env("MERCURE_PUBLISHER_JWT_KEY")
                    .or_else(|| env("MERCURE_JWT_KEY"))
                    .filter(|k| !k.is_empty())
                    .unwrap_or_else(|| DEV_KEY.to_string()),
            );
        }
        let no_grant = self.publish.is_empty()
            && self.publish_urlpattern.is_empty()
            && self.subscribe.is_empty()
            && self.subscribe_urlpattern.is_empty();
        if no_grant {
            self.publish = vec!["*".into()];
            self.subscribe = vec!["*".into()];
        }
    }
}

/// Mints the token `args` describe, as of `now`. The key is taken as given (`@` files are read by
/// [`read_key`] first).
pub fn mint(args: &TokenArgs, key: &[u8], now: SystemTime) -> Result<Minted, TokenError> {
    let (algorithm, encoding_key) = signing_key(key, args.alg.as_deref())?;
    let payload = args
        .payload
        .as_deref()
        .map(|p| {
            serde_json::from_str::<Value>(p)
                .ok()
                .filter(Value::is_object)
                .ok_or_else(|| TokenError::Invalid("--payload must be a JSON object".into()))
        })
        .transpose()?;
    let now_secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let expiry = if args.dev {
        Some(DEV_EXPIRY)
    } else if args.ttl.is_zero() {
        None
    } else {
        Some(now_secs + args.ttl.as_secs().max(1))
    };
    let no_grant = args.publish.is_empty()
        && args.publish_urlpattern.is_empty()
        && args.subscribe.is_empty()
        && args.subscribe_urlpattern.is_empty();
    if no_grant {
        return Err(TokenError::Missing(
            "nothing to grant: give --publish, --subscribe, --publish-urlpattern or --subscribe-urlpattern (or --dev)",
        ));
    }
    let mut claims = Map::new();
    let typ;
    if args.legacy {
        if !args.publish_urlpattern.is_empty() || !args.subscribe_urlpattern.is_empty() {
            return Err(TokenError::Invalid(
                "--legacy tokens carry topic selectors (--publish, --subscribe), not URL patterns"
                    .into(),
            ));
        }
        let mut mercure = Map::new();
        mercure.insert("publish".into(), json!(args.publish));
        mercure.insert("subscribe".into(), json!(args.subscribe));
        if let Some(payload) = payload {
            mercure.insert("payload".into(), payload);
        }
        claims.insert("mercure".into(), Value::Object(mercure));
        for (name, value) in [
            ("iss", &args.issuer),
            ("aud", &args.audience),
            ("sub", &args.sub),
        ] {
            if let Some(value) = value {
                claims.insert(name.into(), json!(value));
            }
        }
        if let Some(exp) = expiry {
            claims.insert("iat".into(), json!(now_secs));
            claims.insert("exp".into(), json!(exp));
        }
        typ = "JWT";
    } else {
        let issuer = args
            .issuer
            .as_deref()
            .ok_or(TokenError::Missing("--issuer is required (or --dev)"))?;
        let audience = args
            .audience
            .as_deref()
            .ok_or(TokenError::Missing("--audience is required (or --dev)"))?;
        let exp = expiry.ok_or(TokenError::Invalid(
            "an access token must expire: --ttl 0 is for --legacy tokens".into(),
        ))?;
        let mut details = Vec::new();
        for (action, exact, patterns) in [
            ("publish", &args.publish, &args.publish_urlpattern),
            ("subscribe", &args.subscribe, &args.subscribe_urlpattern),
        ] {
            let topics: Vec<Value> = exact
                .iter()
                .map(|m| json!({ "match": m }))
                .chain(
                    patterns
                        .iter()
                        .map(|m| json!({ "match": m, "match_type": "urlpattern" })),
                )
                .collect();
            if topics.is_empty() {
                continue;
            }
            let mut detail = json!({
                "type": AUTHORIZATION_DETAIL_TYPE,
                "actions": [action],
                "topics": topics,
            });
            if let (Some(payload), "subscribe") = (&payload, action) {
                detail["payload"] = payload.clone();
            }
            details.push(detail);
        }
        let uuid = || format!("urn:uuid:{}", uuid::Uuid::new_v4());
        claims.insert("iss".into(), json!(issuer));
        claims.insert("aud".into(), json!(audience));
        claims.insert("sub".into(), json!(args.sub.clone().unwrap_or_else(uuid)));
        claims.insert(
            "client_id".into(),
            json!(args.client_id.as_deref().unwrap_or(issuer)),
        );
        claims.insert("iat".into(), json!(now_secs));
        claims.insert("exp".into(), json!(exp));
        claims.insert("jti".into(), json!(uuid()));
        claims.insert("authorization_details".into(), Value::Array(details));
        typ = "at+jwt";
    }
    let mut header = Header::new(algorithm);
    header.typ = Some(typ.into());
    header.kid = args.kid.clone();
    let claims = Value::Object(claims);
    let token = jsonwebtoken::encode(&header, &claims, &encoding_key)
        .map_err(|e| TokenError::Sign(e.to_string()))?;
    let header = serde_json::to_value(&header).unwrap_or(Value::Null);
    Ok(Minted {
        token,
        header,
        claims,
    })
}

/// The algorithm and key to sign with: a PEM key needs an explicit, asymmetric algorithm; a
/// secret defaults to HS256 and takes only HMAC ones.
pub(crate) fn signing_key(
    key: &[u8],
    alg: Option<&str>,
) -> Result<(Algorithm, EncodingKey), TokenError> {
    let pem = String::from_utf8_lossy(key)
        .trim_start()
        .starts_with("-----BEGIN");
    let name =
        match (alg.filter(|a| !a.is_empty()), pem) {
            (Some(a), _) => a,
            (None, false) => "HS256",
            (None, true) => return Err(TokenError::Missing(
                "the key is PEM-encoded: --alg must name its algorithm (RS256, ES256, EdDSA, …)",
            )),
        };
    let algorithm = Algorithm::from_str(name)
        .map_err(|_| TokenError::Invalid(format!("unknown algorithm {name:?}")))?;
    let bad_key = |e: jsonwebtoken::errors::Error| {
        TokenError::Invalid(format!("the key is no {name} private key: {e}"))
    };
    let key = match algorithm {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            if pem {
                return Err(TokenError::Invalid(format!(
                    "the key is PEM-encoded but {name} is an HMAC algorithm: it would sign with the key's text as a shared secret"
                )));
            }
            if key.is_empty() {
                return Err(TokenError::Invalid("the key is empty".into()));
            }
            EncodingKey::from_secret(key)
        }
        _ if !pem => {
            return Err(TokenError::Invalid(format!(
                "{name} signs with a PEM private key, and the key is not PEM-encoded"
            )))
        }
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => EncodingKey::from_rsa_pem(key).map_err(bad_key)?,
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(key).map_err(bad_key)?,
        Algorithm::EdDSA => EncodingKey::from_ed_pem(key).map_err(bad_key)?,
    };
    Ok((algorithm, key))
}

/// Reads `--key`: the value itself, `@FILE`, or `@-` for standard input; one trailing newline
/// (`\n` or `\r\n`) of a file or of standard input is dropped.
pub fn read_key(value: &str, stdin: &mut dyn Read) -> Result<Vec<u8>, TokenError> {
    let Some(source) = value.strip_prefix('@') else {
        return Ok(value.as_bytes().to_vec());
    };
    let mut content = Vec::new();
    if source == "-" {
        stdin.read_to_end(&mut content).map_err(TokenError::Read)?;
    } else {
        content = std::fs::read(source).map_err(TokenError::Read)?;
    }
    if content.ends_with(b"\n") {
        content.pop();
    }
    if content.ends_with(b"\r") {
        content.pop();
    }
    Ok(content)
}

/// Runs the command on `args` (the first one is the command's name) and returns the exit status.
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut args = match TokenArgs::try_parse_from(args) {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    args.apply_dev_defaults(&|name| std::env::var(name).ok());
    let result = args
        .key
        .as_deref()
        .ok_or(TokenError::Missing("--key is required (or --dev)"))
        .and_then(|key| read_key(key, &mut std::io::stdin()))
        .and_then(|key| mint(&args, &key, SystemTime::now()));
    match result {
        Ok(minted) => {
            println!("{}", minted.token);
            if args.pretty {
                let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
                eprintln!(
                    "header: {}\nclaims: {}",
                    pretty(&minted.header),
                    pretty(&minted.claims)
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("quicksilver token: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> TokenArgs {
        let mut argv = vec!["quicksilver token"];
        argv.extend_from_slice(list);
        TokenArgs::try_parse_from(argv).unwrap()
    }

    fn decode(token: &str) -> (Value, Value) {
        use base64::Engine;
        let part = |i: usize| -> Value {
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(token.split('.').nth(i).unwrap())
                .unwrap();
            serde_json::from_slice(&bytes).unwrap()
        };
        (part(0), part(1))
    }

    const NOW: u64 = 1_800_000_000;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW)
    }

    #[test]
    fn access_tokens_carry_rfc_9068_claims_and_authorization_details() {
        let a = args(&[
            "--iss",
            "https://example.com",
            "--aud",
            "https://hub.example.com/.well-known/mercure",
            "--publish",
            "https://example.com/books/1",
            "--subscribe-urlpattern",
            "https://example.com/books/:id",
            "--subscribe",
            "https://example.com/users/1",
            "--payload",
            r#"{"user": 1}"#,
            "--kid",
            "k1",
            "--ttl",
            "15m",
        ]);
        let minted = mint(&a, b"secret", now()).unwrap();
        let (header, claims) = decode(&minted.token);
        assert_eq!(header["typ"], "at+jwt");
        assert_eq!(header["alg"], "HS256");
        assert_eq!(header["kid"], "k1");
        assert_eq!(claims["iss"], "https://example.com");
        assert_eq!(claims["client_id"], "https://example.com");
        assert_eq!(claims["aud"], "https://hub.example.com/.well-known/mercure");
        assert_eq!(claims["exp"], NOW + 900);
        assert_eq!(claims["iat"], NOW);
        assert!(claims["sub"].as_str().unwrap().starts_with("urn:uuid:"));
        assert!(claims["jti"].as_str().unwrap().starts_with("urn:uuid:"));
        assert_eq!(
            claims["authorization_details"],
            json!([
                {"type": AUTHORIZATION_DETAIL_TYPE, "actions": ["publish"],
                 "topics": [{"match": "https://example.com/books/1"}]},
                {"type": AUTHORIZATION_DETAIL_TYPE, "actions": ["subscribe"],
                 "topics": [{"match": "https://example.com/users/1"},
                            {"match": "https://example.com/books/:id", "match_type": "urlpattern"}],
                 "payload": {"user": 1}},
            ])
        );
    }

    #[test]
    fn legacy_tokens_carry_the_mercure_claim() {
        let a = args(&[
            "--legacy",
            "--ttl",
            "0",
            "--publish",
            "*",
            "--subscribe",
            "*",
        ]);
        let (header, claims) = decode(&mint(&a, b"secret", now()).unwrap().token);
        assert_eq!(header["typ"], "JWT");
        assert_eq!(
            claims,
            json!({"mercure": {"publish": ["*"], "subscribe": ["*"]}})
        );
        let a = args(&["--legacy", "--subscribe", "https://example.com/books/{id}"]);
        let (_, claims) = decode(&mint(&a, b"secret", now()).unwrap().token);
        assert_eq!(claims["exp"], NOW + 3600);
        assert_eq!(claims["mercure"]["publish"], json!([]));
        let a = args(&["--legacy", "--subscribe-urlpattern", "https://e/:id"]);
        assert!(mint(&a, b"secret", now()).is_err());
    }

    #[test]
    fn dev_defaults_fill_what_is_missing_only() {
        let mut a = args(&["--dev"]);
        a.apply_dev_defaults(&|_| None);
        assert_eq!(a.key.as_deref(), Some(DEV_KEY));
        assert_eq!(a.issuer.as_deref(), Some(DEV_ISSUER));
        let (_, claims) = decode(&mint(&a, DEV_KEY.as_bytes(), now()).unwrap().token);
        assert_eq!(claims["aud"], DEV_AUDIENCE);
        assert_eq!(claims["exp"], DEV_EXPIRY);
        assert_eq!(
            claims["authorization_details"][0]["topics"],
            json!([{"match": "*"}])
        );

        let mut a = args(&[
            "--dev",
            "--subscribe",
            "a",
            "--aud",
            "https://hub/.well-known/mercure",
        ]);
        a.apply_dev_defaults(&|name| (name == "MERCURE_JWT_KEY").then(|| "from-env".into()));
        assert_eq!(a.key.as_deref(), Some("from-env"));
        assert!(a.publish.is_empty());
        assert_eq!(
            a.audience.as_deref(),
            Some("https://hub/.well-known/mercure")
        );
    }

    #[test]
    fn keys_and_algorithms_are_checked() {
        let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIBw+L8DPri0CHHiOLSGEmBBqAWiWQxOBVDTJ95BZNU7F\n-----END PRIVATE KEY-----\n";
        let grant = ["--iss", "i", "--aud", "a", "--publish", "*"];
        let with = |extra: &[&str]| {
            let mut list = grant.to_vec();
            list.extend_from_slice(extra);
            args(&list)
        };
        let e = mint(&with(&[]), pem.as_bytes(), now())
            .unwrap_err()
            .to_string();
        assert!(e.contains("--alg must name"), "{e}");
        let e = mint(&with(&["--alg", "HS256"]), pem.as_bytes(), now())
            .unwrap_err()
            .to_string();
        assert!(e.contains("HMAC"), "{e}");
        let e = mint(&with(&["--alg", "RS256"]), b"secret", now())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not PEM-encoded"), "{e}");
        let e = mint(&with(&["--alg", "none"]), b"secret", now())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown algorithm"), "{e}");
        let minted = mint(&with(&["--alg", "EdDSA"]), pem.as_bytes(), now()).unwrap();
        assert_eq!(decode(&minted.token).0["alg"], "EdDSA");
        let e = mint(&args(&["--aud", "a", "--publish", "*"]), b"k", now()).unwrap_err();
        assert!(e.to_string().contains("--issuer"));
        let e = mint(&with(&["--ttl", "0"]), b"k", now()).unwrap_err();
        assert!(e.to_string().contains("must expire"));
        assert!(mint(&with(&["--payload", "[1]"]), b"k", now()).is_err());
        assert!(mint(&args(&["--iss", "i", "--aud", "a"]), b"k", now()).is_err());
    }

    #[test]
    fn keys_are_read_from_files_and_standard_input() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "from-file\r\n").unwrap();
        let at_file = format!("@{}", file.display());
        assert_eq!(
            read_key(&at_file, &mut std::io::empty()).unwrap(),
            b"from-file"
        );
        assert_eq!(
            read_key("@-", &mut "from-stdin\n".as_bytes()).unwrap(),
            b"from-stdin"
        );
        assert_eq!(
            read_key("literal\n", &mut std::io::empty()).unwrap(),
            b"literal\n"
        );
        assert!(read_key("@/nonexistent/key", &mut std::io::empty()).is_err());
    }
}
