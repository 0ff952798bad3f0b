//! The verified-token cache through the one entry, [`Verifier::authenticate`]: a token presented
//! again is accepted without verifying it again, and never beyond what a full verification would
//! accept — its `exp` and `nbf`, its audience, its carrier, its issuer's current keys.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, Method};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use quicksilver_auth::{
    AccessTokenOptions, AccessTokenVerifier, AuthError, AuthFailure, Authenticated,
    CredentialConfig, Generation, HubIdentity, KeySet, KeySpec, SharedKeySet, TokenCacheStats,
    TokenRejection, TokenVerifier, TrustedIssuer, Verifier, VerifierOptions,
    AUTHORIZATION_DETAIL_TYPE, MAX_CACHED_TOKEN_BYTES,
};
use quicksilver_protocol::SelectorStore;
use serde_json::{json, Value};

const SECRET: &str = "!ChangeThisMercureHubJWTSecretKey!";
const ROTATED: &str = "another-secret-another-secret-another";
const ISSUER: &str = "https://localhost";
const HUB: &str = "https://localhost/.well-known/mercure";
const T: u64 = 1_700_000_000;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn sign(header: Header, claims: Value, secret: &str) -> String {
    encode(
        &header,
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn legacy(claims: Value) -> String {
    sign(Header::new(Algorithm::HS256), claims, SECRET)
}

fn current(exp: u64) -> String {
    let mut h = Header::new(Algorithm::HS256);
    h.typ = Some("at+jwt".into());
    sign(
        h,
        json!({
            "iss": ISSUER, "aud": HUB, "exp": exp,
            "authorization_details": [
                {"type": AUTHORIZATION_DETAIL_TYPE, "actions": ["publish"], "topics": [{"match": "*"}]}
            ]
        }),
        SECRET,
    )
}

/// A verifier whose current tokens come from an issuer with a replaceable key set, and whose
/// legacy tokens are verified with a configured key; `capacity` remembered tokens.
fn verifier(capacity: usize) -> (Verifier, SharedKeySet) {
    let keys = SharedKeySet::new(KeySet::from_key(KeySpec::new(SECRET, "HS256").unwrap()));
    let issuer = TrustedIssuer::new(ISSUER, keys.clone()).unwrap();
    let issuer = issuer.with_algorithms(["HS256"]).unwrap();
    let current = AccessTokenVerifier::new([issuer], AccessTokenOptions::default()).unwrap();
    let legacy = TokenVerifier::new(
        KeySpec::new(SECRET, "HS256").unwrap(),
        VerifierOptions::default(),
    );
    let v = Verifier::new(current, Some(legacy), CredentialConfig::default())
        .with_token_cache(capacity);
    (v, keys)
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    h
}

fn authenticate_as(
    v: &Verifier,
    headers: &HeaderMap,
    query: Option<&str>,
    hub: &str,
    now: SystemTime,
) -> Result<Authenticated, AuthFailure> {
    let request = quicksilver_auth::RequestParts::new(&Method::POST, headers, query);
    v.authenticate(
        &SelectorStore::default(),
        &request,
        &HubIdentity::new(hub),
        now,
    )
    .map(|found| found.expect("a token"))
}

fn authenticate(v: &Verifier, token: &str, now: SystemTime) -> Result<Authenticated, AuthError> {
    authenticate_as(v, &bearer(token), None, HUB, now).map_err(|f| f.error)
}

fn stats(v: &Verifier) -> TokenCacheStats {
    v.token_cache_stats().expect("a cache")
}

#[test]
fn a_token_presented_again_is_not_verified_again() {
    let (v, _) = verifier(16);
    let token = legacy(json!({"mercure": {"publish": ["urn:a"]}}));
    let first = authenticate(&v, &token, at(T)).unwrap();
    let again = authenticate(&v, &token, at(T + 1)).unwrap();
    assert_eq!(
        stats(&v),
        TokenCacheStats {
            hits: 1,
            misses: 1,
            entries: 1
        }
    );
    assert_eq!(again.generation, Generation::Legacy);
    assert_eq!(format!("{:?}", first.grants), format!("{:?}", again.grants));
    // Clones of a verifier share its cache.
    authenticate(&v.clone(), &token, at(T + 2)).unwrap();
    assert_eq!(stats(&v).hits, 2);
}

#[test]
fn a_remembered_token_expires_at_its_exp() {
    let (v, _) = verifier(16);
    let token = legacy(json!({"exp": T + 10, "mercure": {"publish": ["*"]}}));
    authenticate(&v, &token, at(T)).unwrap();
    authenticate(&v, &token, at(T + 9)).unwrap();
    assert_eq!(stats(&v).hits, 1);
    assert_eq!(
        authenticate(&v, &token, at(T + 10)).unwrap_err(),
        AuthError::InvalidToken(TokenRejection::Expired),
        "expired from its exp instant on, remembered or not"
    );
    assert_eq!(stats(&v).hits, 1);

    let token = current(T + 10);
    authenticate(&v, &token, at(T)).unwrap();
    authenticate(&v, &token, at(T + 1)).unwrap();
    assert_eq!(stats(&v).hits, 2);
    assert_eq!(
        authenticate(&v, &token, at(T + 11)).unwrap_err(),
        AuthError::InvalidToken(TokenRejection::Expired)
    );
}

#[test]
fn a_remembered_token_is_not_used_before_its_nbf() {
    let (v, _) = verifier(16);
    let token = legacy(json!({"nbf": T + 10, "mercure": {"publish": ["*"]}}));
    assert_eq!(
        authenticate(&v, &token, at(T)).unwrap_err(),
        AuthError::InvalidToken(TokenRejection::NotYetValid)
    );
    authenticate(&v, &token, at(T + 20)).unwrap();
    // The clock stepped back: the remembered verification does not outlive its window.
    assert_eq!(
        authenticate(&v, &token, at(T + 5)).unwrap_err(),
        AuthError::InvalidToken(TokenRejection::NotYetValid)
    );
}

#[test]
fn replaced_keys_retire_what_they_admitted() {
    let (v, keys) = verifier(16);
    let token = current(T + 3600);
    authenticate(&v, &token, at(T)).unwrap();
    authenticate(&v, &token, at(T)).unwrap();
    assert_eq!(stats(&v).hits, 1);

    // The issuer rotated to a key that did not sign this token.
    keys.replace(KeySet::from_key(KeySpec::new(ROTATED, "HS256").unwrap()));
    assert!(matches!(
        authenticate(&v, &token, at(T)).unwrap_err(),
        AuthError::InvalidToken(_)
    ));
    assert_eq!(stats(&v).hits, 1);

    // Rotated back: verified in full again, then remembered again.
    keys.replace(KeySet::from_key(KeySpec::new(SECRET, "HS256").unwrap()));
    authenticate(&v, &token, at(T)).unwrap();
    authenticate(&v, &token, at(T)).unwrap();
    assert_eq!(stats(&v).hits, 2);
}

#[test]
fn a_token_remembered_for_one_audience_is_not_accepted_for_another() {
    let (v, _) = verifier(16);
    let token = current(T + 3600);
    authenticate(&v, &token, at(T)).unwrap();
    let other = authenticate_as(
        &v,
        &bearer(&token),
        None,
        "https://elsewhere.example/.well-known/mercure",
        at(T),
    )
    .unwrap_err();
    assert_eq!(
        other.error,
        AuthError::InvalidToken(TokenRejection::Audience)
    );
}

#[test]
fn a_remembered_access_token_is_still_refused_from_the_url() {
    let (v, _) = verifier(16);
    let token = current(T + 3600);
    authenticate(&v, &token, at(T)).unwrap();
    let from_url = authenticate_as(
        &v,
        &HeaderMap::new(),
        Some(&format!("authorization={token}")),
        HUB,
        at(T),
    )
    .unwrap_err();
    assert_eq!(from_url.error, AuthError::TokenInUrl);
    assert_eq!(from_url.generation, Some(Generation::Current));
}

#[test]
fn refusals_and_long_tokens_are_not_remembered() {
    let (v, _) = verifier(16);
    let forged = sign(
        Header::new(Algorithm::HS256),
        json!({"mercure": {"publish": ["*"]}}),
        ROTATED,
    );
    for _ in 0..2 {
        assert!(authenticate(&v, &forged, at(T)).is_err());
    }
    let long = legacy(json!({
        "mercure": {"publish": ["*"]},
        "padding": "x".repeat(MAX_CACHED_TOKEN_BYTES),
    }));
    for _ in 0..2 {
        authenticate(&v, &long, at(T)).unwrap();
    }
    assert_eq!(
        stats(&v),
        TokenCacheStats {
            hits: 0,
            misses: 4,
            entries: 0
        }
    );
}

#[test]
fn the_cache_is_bounded_and_optional() {
    let (v, _) = verifier(8);
    for i in 0..100 {
        let token = legacy(json!({"mercure": {"publish": [format!("urn:{i}")]}}));
        authenticate(&v, &token, at(T)).unwrap();
    }
    assert!(stats(&v).entries <= 8, "{:?}", stats(&v));

    let (v, _) = verifier(0);
    assert_eq!(v.token_cache_stats(), None);
    let token = legacy(json!({"mercure": {"publish": ["*"]}}));
    authenticate(&v, &token, at(T)).unwrap();
    authenticate(&v, &token, at(T)).unwrap();
}
