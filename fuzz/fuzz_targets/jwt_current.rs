//! Current-generation access tokens (`typ: at+jwt`, `authorization_details`), verified for one
//! trusted HS256 issuer, and the two-generation [`Verifier`] that routes a token by its header.
//!
//! Inputs are raw tokens or fuzzed payloads minted under one of several headers (see
//! `quicksilver_fuzz::token_from_input`). Properties:
//! - an accepted token carries a genuine HS256 signature, `typ` at+jwt, no `crit`, the trusted
//!   `iss`, the hub in `aud`, a numeric `exp` in the future and no `nbf` in the future;
//! - the two-generation entry ([`Verifier::authenticate`]) agrees with the access-token verifier
//!   on current tokens from a header, refuses them in the URL, never accepts a forged legacy token
//!   either, and reports the generation the token claims when it refuses one;
//! - oversized tokens are refused as such.

#![no_main]

use http::{HeaderMap, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use quicksilver_auth::{
    is_access_token_type, token_generation, AccessTokenOptions, AccessTokenVerifier, AuthError,
    CredentialConfig, Generation, HubIdentity, KeySpec, RequestParts, TokenVerifier,
    TrustedIssuer, Verifier, VerifierOptions, DEFAULT_MAX_TOKEN_BYTES, MIN_TOKEN_LEN,
};
use quicksilver_fuzz::{
    has_valid_signature, header_json, now, numeric_claim, payload_json, token_from_input, NOW_SECS,
    SECRET,
};
use quicksilver_protocol::SelectorStore;
use serde_json::Value;
use std::sync::OnceLock;

const ISSUER: &str = "https://issuer.example";
const HUB: &str = "https://hub.example/.well-known/mercure";

/// The access-token verifier alone, and the two-generation entry built around a clone of it.
fn verifiers() -> &'static (AccessTokenVerifier, Verifier) {
    static V: OnceLock<(AccessTokenVerifier, Verifier)> = OnceLock::new();
    V.get_or_init(|| {
        let issuer = TrustedIssuer::new(ISSUER, KeySpec::new(SECRET, "HS256").unwrap()).unwrap();
        let current = AccessTokenVerifier::new([issuer], AccessTokenOptions::default()).unwrap();
        let legacy = TokenVerifier::new(
            KeySpec::new(SECRET, "HS256").unwrap(),
            VerifierOptions::default(),
        );
        let both = Verifier::new(current.clone(), Some(legacy), CredentialConfig::default());
        (current, both)
    })
}

/// `value` percent-encoded whole, so the query parser gives it back unchanged.
fn query_value(value: &str) -> String {
    value.bytes().map(|b| format!("%{b:02X}")).collect()
}

fn check_accepted_current(token: &str) {
    assert!(has_valid_signature(token), "forged access token accepted");
    let header = header_json(token).expect("accepted header is an object");
    assert_eq!(header.get("alg").and_then(Value::as_str), Some("HS256"));
    assert!(header
        .get("typ")
        .and_then(Value::as_str)
        .is_some_and(is_access_token_type));
    assert!(!header.contains_key("crit"));
    let payload = payload_json(token).expect("accepted payload is an object");
    assert_eq!(payload.get("iss").and_then(Value::as_str), Some(ISSUER));
    let aud_ok = match payload.get("aud") {
        Some(Value::String(a)) => a == HUB,
        Some(Value::Array(a)) => a.iter().any(|v| v == HUB),
        _ => false,
    };
    assert!(aud_ok, "audience not checked");
    let now = NOW_SECS as f64;
    let exp = numeric_claim(&payload, "exp")
        .expect("numeric exp")
        .expect("exp required");
    assert!(exp > now, "expired token accepted");
    if let Some(nbf) = numeric_claim(&payload, "nbf").expect("numeric nbf") {
        assert!(nbf <= now, "premature token accepted");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((token, _minted)) = token_from_input(data) else {
        return;
    };
    let store = SelectorStore::new(64, 256);
    let hub = HubIdentity::new(HUB);
    let (current, v) = verifiers();

    let direct = current.verify_at(&store, &token, &hub, now());
    if token.len() > DEFAULT_MAX_TOKEN_BYTES {
        assert!(matches!(direct, Err(AuthError::TokenTooLong { .. })));
    }
    if direct.is_ok() {
        check_accepted_current(&token);
    }

    let generation = token_generation(&token);
    if generation == Generation::Current && token.len() >= MIN_TOKEN_LEN {
        let query = format!("authorization={}", query_value(&token));
        let no_header = HeaderMap::new();
        let from_url = RequestParts::new(&Method::GET, &no_header, Some(&query));
        let refused = v.authenticate(&store, &from_url, &hub, now()).unwrap_err();
        assert_eq!(refused.error, AuthError::TokenInUrl);
        assert_eq!(refused.generation, Some(Generation::Current));
    }

    let Ok(bearer) = HeaderValue::from_str(&format!("Bearer {token}")) else {
        assert!(direct.is_err(), "a token that is no header value was accepted");
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, bearer);
    let from_header = RequestParts::new(&Method::POST, &headers, None);
    match v.authenticate(&store, &from_header, &hub, now()) {
        Ok(Some(auth)) => {
            assert_eq!(auth.generation, generation);
            match generation {
                Generation::Current => {
                    assert!(direct.is_ok(), "the entry accepted what the verifier refused");
                    assert_eq!(auth.issuer.as_deref(), Some(ISSUER));
                }
                Generation::Legacy => {
                    assert!(has_valid_signature(&token), "forged legacy token accepted");
                }
            }
        }
        Ok(None) => panic!("a request with an Authorization header is not anonymous"),
        Err(failure) => {
            assert!(
                generation == Generation::Legacy || direct.is_err(),
                "the entry refused what the verifier accepted"
            );
            // Refused once the token was read: the failure names the generation it claims.
            if failure.error != AuthError::InvalidAuthorizationHeader {
                assert_eq!(failure.generation, Some(generation));
            }
        }
    }
});
