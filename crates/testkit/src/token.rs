//! JWTs for tests, in both generations the hub accepts:
//!
//! - pre-standardization tokens carrying the `mercure` claim (`{"mercure":{"publish":[..],"subscribe":[..]}}`,
//!   optional `exp`), signed HS256 with a shared secret ([`mercure_token`]) or RS256 with a PEM private key;
//! - current access tokens: header `typ: at+jwt`, claims `iss`, `aud`, `exp` and `authorization_details`
//!   ([`access_claims`], [`authorization_detail`], [`access_token`]).
//!
//! [`sign`] signs any claims with any algorithm and key, and [`forge`] assembles a token by hand (any header,
//! any signature part) for the attacks a verifier must refuse.
//!
//! Signing errors are test bugs (a malformed key), so these functions panic with the reason instead of
//! returning a `Result` that every test would unwrap.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
pub use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// The secret the reference hub's documentation uses; convenient as the hub's HS256 key in tests.
pub const TEST_JWT_KEY: &str = "!ChangeThisMercureHubJWTSecretKey!";

/// A 2048-bit RSA private key (PKCS#8 PEM) for RS256 test tokens. Protects nothing.
pub const TEST_RSA_PRIVATE_PEM: &str = include_str!("../fixtures/rsa_private.pem");

/// The public half of [`TEST_RSA_PRIVATE_PEM`] (SPKI PEM): the hub's key with `--*-jwt-alg RS256`.
pub const TEST_RSA_PUBLIC_PEM: &str = include_str!("../fixtures/rsa_public.pem");

/// The claims `{"mercure":{"publish":publish,"subscribe":subscribe}}`, plus `"exp"` when given.
pub fn mercure_claims(publish: &[&str], subscribe: &[&str], exp: Option<i64>) -> Value {
    let mut claims = json!({ "mercure": { "publish": publish, "subscribe": subscribe } });
    if let Some(exp) = exp {
        claims["exp"] = exp.into();
    }
    claims
}

/// An HS256 token carrying [`mercure_claims`], signed with the secret `key`.
pub fn mercure_token(key: &str, publish: &[&str], subscribe: &[&str], exp: Option<i64>) -> String {
    sign_hs256(key, &mercure_claims(publish, subscribe, exp))
}

/// A token of [`TEST_JWT_KEY`] that may publish to every topic (`mercure.publish: ["*"]`, no `exp`): what
/// most tests publish with.
pub fn publisher_token() -> String {
    mercure_token(TEST_JWT_KEY, &["*"], &[], None)
}

/// An RS256 token carrying [`mercure_claims`], signed with an RSA private key in PEM (PKCS#1 or PKCS#8).
pub fn mercure_token_rs256(
    private_pem: &str,
    publish: &[&str],
    subscribe: &[&str],
    exp: Option<i64>,
) -> String {
    sign_rs256(private_pem, &mercure_claims(publish, subscribe, exp))
}

/// Any claims, HS256 with the secret `key`.
pub fn sign_hs256(key: &str, claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(key.as_bytes()),
        claims,
    )
}

/// Any claims, RS256 with an RSA private key in PEM.
pub fn sign_rs256(private_pem: &str, claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(private_pem.as_bytes())
        .unwrap_or_else(|e| panic!("the RSA private key PEM should parse: {e}"));
    sign(Algorithm::RS256, &key, claims)
}

/// Any claims with any algorithm and key (for other algorithms, or a deliberately wrong key).
pub fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    sign_with_header(&Header::new(alg), key, claims)
}

/// Any claims under any header (its `alg` picks the algorithm; `typ`, `kid` as given).
pub fn sign_with_header(header: &Header, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(header, claims, key)
        .unwrap_or_else(|e| panic!("signing a {:?} test token should succeed: {e}", header.alg))
}

/// The `type` of the current specification's authorization details.
pub const AUTHORIZATION_DETAIL_TYPE: &str = "https://mercure.rocks/authorization-detail";

/// One `authorization_details` entry: `{"type": AUTHORIZATION_DETAIL_TYPE, "actions": actions, "topics":
/// topics}`, where `topics` is a JSON array of `{"match": …, "match_type": …}` objects. Add a `payload` with
/// `detail["payload"] = …`.
pub fn authorization_detail(actions: &[&str], topics: Value) -> Value {
    json!({ "type": AUTHORIZATION_DETAIL_TYPE, "actions": actions, "topics": topics })
}

/// The claims of an access token of `issuer` for the hub `audience` (its resource identifier), valid for an
/// hour: `iss`, `aud`, `exp` and `authorization_details` (a JSON array of [`authorization_detail`]s).
pub fn access_claims(issuer: &str, audience: &str, details: Value) -> Value {
    json!({
        "iss": issuer,
        "aud": audience,
        "exp": now() + 3600,
        "authorization_details": details,
    })
}

/// A current access token: `claims` (see [`access_claims`]) under the header `typ: at+jwt`, HS256 with the
/// secret `key`, naming `kid` when given (an issuer's JWK Set picks its key by it).
pub fn access_token(key: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    header.kid = kid.map(str::to_owned);
    sign_with_header(&header, &EncodingKey::from_secret(key.as_bytes()), claims)
}

/// A symmetric key as a JWK (`{"kty": "oct", "kid": kid, "alg": "HS256", "k": …}`), for an issuer's JWK Set
/// (`{"keys": [oct_jwk(…)]}`) whose tokens [`access_token`] signs with the same `secret`.
pub fn oct_jwk(kid: &str, secret: &str) -> Value {
    json!({ "kty": "oct", "kid": kid, "alg": "HS256", "k": URL_SAFE_NO_PAD.encode(secret) })
}

/// A compact token assembled by hand: `header` and `claims` encoded as they are, then `signature` as the
/// third part verbatim (empty for `alg: none`, or another token's signature). Nothing is signed: for the
/// forgeries a verifier must refuse.
pub fn forge(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// Seconds since the Unix epoch, for `exp` values (`now() + 3600`, `now() - 10`).
pub fn now() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(since_epoch.as_secs()).expect("seconds since 1970 fit in i64")
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    fn decode(token: &str, alg: Algorithm, key: &DecodingKey) -> Value {
        let mut validation = Validation::new(alg);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        jsonwebtoken::decode::<Value>(token, key, &validation)
            .expect("a token this module signed verifies")
            .claims
    }

    #[test]
    fn hs256_token_carries_the_mercure_claim() {
        let token = mercure_token(
            TEST_JWT_KEY,
            &["*"],
            &["https://example.com/{id}"],
            Some(42),
        );
        let claims = decode(
            &token,
            Algorithm::HS256,
            &DecodingKey::from_secret(TEST_JWT_KEY.as_bytes()),
        );
        assert_eq!(
            claims,
            json!({"mercure": {"publish": ["*"], "subscribe": ["https://example.com/{id}"]}, "exp": 42})
        );
    }

    #[test]
    fn access_token_is_at_jwt_with_its_kid_and_details() {
        let details = json!([authorization_detail(&["publish"], json!([{"match": "*"}]))]);
        let claims = access_claims("https://issuer.example", "https://hub.example", details);
        let token = access_token(TEST_JWT_KEY, Some("k1"), &claims);
        let header = jsonwebtoken::decode_header(&token).expect("a header");
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.kid.as_deref(), Some("k1"));
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&["https://hub.example"]);
        let decoded = jsonwebtoken::decode::<Value>(
            &token,
            &DecodingKey::from_secret(TEST_JWT_KEY.as_bytes()),
            &validation,
        )
        .expect("verifies with exp and aud checked")
        .claims;
        assert_eq!(decoded, claims);
        assert_eq!(
            decoded["authorization_details"][0]["type"],
            AUTHORIZATION_DETAIL_TYPE
        );
    }

    #[test]
    fn a_forged_token_carries_exactly_what_it_was_given() {
        let valid = mercure_token(TEST_JWT_KEY, &["*"], &[], None);
        let signature = valid.rsplit('.').next().expect("three parts");
        let forged = forge(&json!({"alg": "none"}), &json!({"x": 1}), signature);
        let parts: Vec<&str> = forged.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(
            URL_SAFE_NO_PAD.decode(parts[0]).unwrap(),
            br#"{"alg":"none"}"#
        );
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[1]).unwrap(), br#"{"x":1}"#);
        assert_eq!(parts[2], signature);
    }

    #[test]
    fn rs256_token_verifies_with_the_public_fixture() {
        let token = mercure_token_rs256(TEST_RSA_PRIVATE_PEM, &[], &["a"], None);
        let key =
            DecodingKey::from_rsa_pem(TEST_RSA_PUBLIC_PEM.as_bytes()).expect("public PEM parses");
        let claims = decode(&token, Algorithm::RS256, &key);
        assert_eq!(
            claims,
            json!({"mercure": {"publish": [], "subscribe": ["a"]}})
        );
    }
}
