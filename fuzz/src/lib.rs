//! Shared pieces of the fuzz targets: the reference implementations (the very file the protocol
//! crate's property tests use, so both suites check against the same oracle) and the JWT helpers
//! that mint structurally valid tokens around a fuzzed payload.

#[path = "../../crates/protocol/tests/reference/mod.rs"]
pub mod reference;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The key of the hub's default configuration, and of every seed token.
pub const SECRET: &str = "!ChangeThisMercureHubJWTSecretKey!";

/// The fixed "now" tokens are verified at, so a run is reproducible whatever the clock says:
/// 2023-11-14T22:13:20Z.
pub const NOW_SECS: u64 = 1_700_000_000;

/// [`NOW_SECS`] as a time.
pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW_SECS)
}

/// Protected headers a token can be minted with: the first byte of a signed-mode input picks one.
/// Several must be refused whatever the payload (`none`, other algorithms).
pub const HEADERS: &[&str] = &[
    r#"{"alg":"HS256","typ":"JWT"}"#,
    r#"{"alg":"HS256"}"#,
    r#"{"alg":"HS256","typ":"at+jwt"}"#,
    r#"{"alg":"HS256","typ":"application/AT+JWT","kid":"k1"}"#,
    r#"{"alg":"none","typ":"JWT"}"#,
    r#"{"alg":"none","typ":"at+jwt"}"#,
    r#"{"alg":"HS384","typ":"at+jwt"}"#,
    r#"{"alg":"RS256","typ":"JWT"}"#,
    r#"{"alg":"HS256","typ":"at+jwt","crit":["exp"]}"#,
];

/// A compact JWS: `header` and `payload` as given (any bytes), signed with HS256 and [`SECRET`]
/// whatever the header claims, so a mismatching `alg` is a refusal the verifier must make.
pub fn mint(header: &str, payload: &[u8]) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = jsonwebtoken::crypto::sign(
        signing_input.as_bytes(),
        &EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::HS256,
    )
    .expect("HMAC signing cannot fail");
    format!("{signing_input}.{signature}")
}

/// Whether `token` carries the HS256 signature of [`SECRET`] over its first two parts: what any
/// accepted token must satisfy.
pub fn has_valid_signature(token: &str) -> bool {
    let Some((signing_input, signature)) = token.rsplit_once('.') else {
        return false;
    };
    let expected = jsonwebtoken::crypto::sign(
        signing_input.as_bytes(),
        &EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::HS256,
    )
    .expect("HMAC signing cannot fail");
    // Base64url without padding has one canonical form per byte string only up to its trailing
    // bits, so compare the decoded bytes.
    URL_SAFE_NO_PAD.decode(signature).ok() == URL_SAFE_NO_PAD.decode(expected).ok()
}

/// The decoded protected header of `token`, when it is a JSON object.
pub fn header_json(token: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let header = token.split('.').next()?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()
}

/// The decoded payload of `token`, when it is a JSON object.
pub fn payload_json(token: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

/// The token a fuzz input stands for: an even first byte means the rest is a raw token string
/// (any bytes, lossily decoded); an odd one means the rest is a payload minted under
/// `HEADERS[(first >> 1) % len]`. Returns the token and whether it was minted here.
pub fn token_from_input(data: &[u8]) -> Option<(String, bool)> {
    let (&mode, rest) = data.split_first()?;
    if mode % 2 == 0 {
        Some((String::from_utf8_lossy(rest).into_owned(), false))
    } else {
        let header = HEADERS[usize::from(mode >> 1) % HEADERS.len()];
        Some((mint(header, rest), true))
    }
}

/// A time claim that is present but not a JSON number.
#[derive(Debug)]
pub struct NotANumber;

/// A JSON number claim (`exp`, `nbf`) as seconds, `Err` when present but not a number.
pub fn numeric_claim(
    payload: &serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Result<Option<f64>, NotANumber> {
    match payload.get(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or(NotANumber),
    }
}
