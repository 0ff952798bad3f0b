//! `quicksilver revoke`: revokes tokens on a running hub (any node of a cluster: every node
//! enforces it within a second), lists the revocations in force, or lifts one, through the admin
//! endpoint ([`crate::policies::revocation::admin`]).
//!
//! The command mints its own admin token for each call (`scope: revocations`, valid for a minute)
//! with the admin key: `--admin-key` (a secret, `@FILE`, `@-` for standard input, or a PEM private
//! key with `--alg`), else `QUICKSILVER_ADMIN_JWT_KEY`, the variable the hub reads its key from, so
//! with an HMAC key the hub's environment is all it needs. It prints the hub's JSON answer and
//! exits 0, or prints the hub's refusal on standard error and exits 1.

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use serde_json::{json, Map, Value};

use crate::config::parse_duration;
use crate::policies::revocation::admin::{PATH, SCOPE};
use crate::token::{read_key, signing_key};

/// The first argument that selects this command instead of the hub.
pub const SUBCOMMAND: &str = "revoke";

/// How long the admin tokens the command mints are valid.
const ADMIN_TOKEN_LIFE: u64 = 60;

/// Revokes tokens on a running hub, lists the revocations in force, or lifts one.
#[derive(Parser, Clone, Debug, Default)]
#[command(
    name = "quicksilver-revoke",
    bin_name = "quicksilver revoke",
    version,
    max_term_width = 100,
    after_help = "Examples:\n  quicksilver revoke --hub https://hub.example.com --jti 3f2a… --reason 'leaked'\n  quicksilver revoke --sub alice --iss https://app.example.com\n  quicksilver revoke --list\n  quicksilver revoke --lift --sub alice --iss https://app.example.com"
)]
pub struct RevokeArgs {
    /// The hub's URL (any node of the cluster).
    #[arg(
        long,
        env = "QUICKSILVER_HUB_URL",
        default_value = "http://127.0.0.1:3000"
    )]
    pub hub: String,

    /// Admin key: an HMAC secret, `@FILE`, `@-` for standard input, or a PEM private key (then
    /// `--alg` is required).
    #[arg(
        long,
        env = "QUICKSILVER_ADMIN_JWT_KEY",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    pub admin_key: Option<String>,

    /// Signing algorithm (default HS256 for a secret; required for a PEM key).
    #[arg(long, env = "QUICKSILVER_ADMIN_JWT_ALG")]
    pub alg: Option<String>,

    /// Revoke the token with this id (`jti`).
    #[arg(long, conflicts_with = "sub")]
    pub jti: Option<String>,

    /// Revoke every token of this subject (`sub`) issued before `--before`.
    #[arg(long)]
    pub sub: Option<String>,

    /// Only the tokens of this issuer (`iss`).
    #[arg(long)]
    pub iss: Option<String>,

    /// With `--sub`: tokens issued before this time (seconds since the epoch or RFC 3339;
    /// default: now).
    #[arg(long, requires = "sub", value_parser = parse_time)]
    pub before: Option<u64>,

    /// When the covered tokens expire (seconds since the epoch or RFC 3339; default: the hub's
    /// `--max-token-lifetime` from now).
    #[arg(long, value_parser = parse_time)]
    pub exp: Option<u64>,

    /// Why, kept with the revocation for whoever lists it.
    #[arg(long)]
    pub reason: Option<String>,

    /// List the revocations in force instead.
    #[arg(long, conflicts_with_all = ["lift", "jti", "sub", "before", "exp", "reason"])]
    pub list: bool,

    /// With `--list`: at most this many (1 to 1000).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,

    /// With `--list`: those after this id (the `next` of the previous page).
    #[arg(long)]
    pub after: Option<String>,

    /// Lift the revocation of `--jti` or `--sub` (with `--iss` if it has one) instead.
    #[arg(long, conflicts_with_all = ["before", "exp", "reason"])]
    pub lift: bool,

    /// Give up after this long.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Why the command failed.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// A setting is missing or unusable.
    #[error("{0}")]
    Usage(String),
    /// The hub could not be reached.
    #[error("cannot reach the hub: {0}")]
    Unreachable(String),
    /// The hub refused.
    #[error("the hub answered {status}: {body}")]
    Refused {
        /// Its status.
        status: u16,
        /// Its answer.
        body: String,
    },
}

/// A time: seconds since the Unix epoch, or an RFC 3339 date.
fn parse_time(text: &str) -> Result<u64, String> {
    if let Ok(secs) = text.trim().parse::<u64>() {
        return Ok(secs);
    }
    humantime::parse_rfc3339_weak(text.trim())
        .map_err(|e| {
            format!("{text:?} is neither seconds since the epoch nor an RFC 3339 time: {e}")
        })
        .map(|t| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

/// An admin token signed with `key`, valid for a minute from `now`.
pub fn admin_token(key: &[u8], alg: Option<&str>, now: SystemTime) -> Result<String, RevokeError> {
    let (algorithm, encoding_key) =
        signing_key(key, alg).map_err(|e| RevokeError::Usage(e.to_string()))?;
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let claims = json!({"scope": SCOPE, "iat": now, "exp": now + ADMIN_TOKEN_LIFE});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(algorithm),
        &claims,
        &encoding_key,
    )
    .map_err(|e| RevokeError::Usage(format!("cannot sign: {e}")))
}

/// The request `args` stand for: method, URL (query included) and JSON body.
fn request(args: &RevokeArgs) -> Result<(reqwest::Method, String, Option<Value>), RevokeError> {
    let base = format!("{}{PATH}", args.hub.trim_end_matches('/'));
    let mut url = url::Url::parse(&base)
        .map_err(|e| RevokeError::Usage(format!("--hub {:?}: {e}", args.hub)))?;
    if args.list {
        url.query_pairs_mut()
            .append_pair("limit", &args.limit.to_string());
        if let Some(after) = &args.after {
            url.query_pairs_mut().append_pair("after", after);
        }
        return Ok((reqwest::Method::GET, url.into(), None));
    }
    let target = match (&args.jti, &args.sub) {
        (Some(jti), None) => ("jti", jti),
        (None, Some(sub)) => ("sub", sub),
        _ => {
            return Err(RevokeError::Usage(
                "name the tokens: --jti ID or --sub SUBJECT (or --list)".into(),
            ))
        }
    };
    if args.lift {
        url.query_pairs_mut().append_pair(target.0, target.1);
        if let Some(iss) = &args.iss {
            url.query_pairs_mut().append_pair("iss", iss);
        }
        return Ok((reqwest::Method::DELETE, url.into(), None));
    }
    let mut body = Map::new();
    body.insert(target.0.into(), json!(target.1));
    for (name, value) in [("iss", &args.iss), ("reason", &args.reason)] {
        if let Some(value) = value {
            body.insert(name.into(), json!(value));
        }
    }
    for (name, value) in [("before", args.before), ("exp", args.exp)] {
        if let Some(value) = value {
            body.insert(name.into(), json!(value));
        }
    }
    Ok((reqwest::Method::POST, url.into(), Some(Value::Object(body))))
}

/// Sends what `args` ask for with `token`; returns what to print.
async fn send(args: &RevokeArgs, token: &str) -> Result<String, RevokeError> {
    let (method, url, body) = request(args)?;
    let client = reqwest::Client::builder()
        .timeout(args.timeout)
        .build()
        .map_err(|e| RevokeError::Unreachable(e.to_string()))?;
    let mut request = client.request(method, &url).bearer_auth(token);
    if let Some(body) = &body {
        request = request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
    }
    let response = request
        .send()
        .await
        .map_err(|e| RevokeError::Unreachable(e.to_string()))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| RevokeError::Unreachable(e.to_string()))?;
    if !status.is_success() {
        let body = if text.trim().is_empty() {
            status.canonical_reason().unwrap_or("").to_string()
        } else {
            text.trim().to_string()
        };
        return Err(RevokeError::Refused {
            status: status.as_u16(),
            body,
        });
    }
    if status == reqwest::StatusCode::NO_CONTENT {
        return Ok("lifted".into());
    }
    Ok(serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(text))
}

/// Runs the command on `args` (the first one is the command's name) and returns the exit status.
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args = match RevokeArgs::try_parse_from(args) {
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
    let result = args
        .admin_key
        .as_deref()
        .ok_or_else(|| {
            RevokeError::Usage(
                "the admin key is required: --admin-key or QUICKSILVER_ADMIN_JWT_KEY".into(),
            )
        })
        .and_then(|key| {
            read_key(key, &mut std::io::stdin()).map_err(|e| RevokeError::Usage(e.to_string()))
        })
        .and_then(|key| admin_token(&key, args.alg.as_deref(), SystemTime::now()))
        .and_then(|token| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| RevokeError::Unreachable(e.to_string()))?
                .block_on(send(&args, &token))
        });
    match result {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("quicksilver revoke: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> RevokeArgs {
        let mut all = vec!["quicksilver revoke", "--admin-key", "k"];
        all.extend_from_slice(list);
        RevokeArgs::try_parse_from(all).unwrap()
    }

    #[test]
    fn each_action_is_one_request() {
        let (method, url, body) = request(&args(&[
            "--jti",
            "t 1",
            "--exp",
            "2030-01-01T00:00:00Z",
            "--reason",
            "leaked",
        ]))
        .unwrap();
        assert_eq!(method, reqwest::Method::POST);
        assert_eq!(
            url,
            "http://127.0.0.1:3000/.well-known/mercure/admin/revocations"
        );
        assert_eq!(
            body.unwrap(),
            json!({"jti": "t 1", "exp": 1_893_456_000u64, "reason": "leaked"})
        );
        let (_, _, body) = request(&args(&["--sub", "alice", "--before", "100"])).unwrap();
        assert_eq!(body.unwrap(), json!({"sub": "alice", "before": 100}));
        let (method, url, _) = request(&args(&[
            "--hub",
            "https://hub.example/",
            "--lift",
            "--sub",
            "a&b",
            "--iss",
            "https://app.example",
        ]))
        .unwrap();
        assert_eq!(method, reqwest::Method::DELETE);
        assert_eq!(
            url,
            "https://hub.example/.well-known/mercure/admin/revocations?sub=a%26b&iss=https%3A%2F%2Fapp.example"
        );
        let (method, url, _) = request(&args(&["--list", "--limit", "5"])).unwrap();
        assert_eq!(method, reqwest::Method::GET);
        assert!(url.ends_with("?limit=5"));
        assert!(request(&args(&[])).is_err(), "nothing named");
        let both = ["quicksilver revoke", "--jti", "a", "--sub", "b"];
        assert!(RevokeArgs::try_parse_from(both).is_err());
    }

    #[test]
    fn the_admin_token_carries_the_scope_and_expires_soon() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let token = admin_token(b"secret", None, now).unwrap();
        let verifier = quicksilver_auth::AdminVerifier::new(
            quicksilver_auth::KeySpec::new("secret", "HS256").unwrap(),
        );
        assert!(verifier.verify(&token, SCOPE, now).is_ok());
        assert!(verifier
            .verify(
                &token,
                SCOPE,
                now + Duration::from_secs(ADMIN_TOKEN_LIFE + 10)
            )
            .is_err());
    }
}
