//! JWTs for tests: the `mercure` claim (`{"mercure":{"publish":[..],"subscribe":[..]}}`, optional `exp`),
//! signed HS256 with a shared secret or RS256 with a PEM private key.
//!
//! Signing errors are test bugs (a malformed key), so these functions panic with the reason instead of
//! returning a `Result` that every test would unwrap.

pub use jsonwebtoken::{Algorithm, EncodingKey};
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
    jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), claims, key)
        .unwrap_or_else(|e| panic!("signing a {alg:?} test token should succeed: {e}"))
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
