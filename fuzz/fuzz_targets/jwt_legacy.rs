//! Pre-standardization tokens (the `mercure` claim), verified with an HS256 key.
//!
//! Inputs are either raw token strings or payloads (any bytes, often JSON) minted into a token
//! under one of several headers, so the claims decoding is reached (see
//! `quicksilver_fuzz::token_from_input`). Properties:
//! - an accepted token carries a genuine HS256 signature with the hub's key and an `alg` of HS256
//!   (`none`, other algorithms and forged signatures are refused);
//! - its payload is a JSON object whose `exp` (if any) is a number in the future and `nbf` (if
//!   any) a number not in the future, and its grants never exceed the selectors it lists;
//! - oversized tokens are refused as such, before decoding.

#![no_main]

use libfuzzer_sys::fuzz_target;
use quicksilver_auth::{
    token_generation, AuthError, KeySpec, TokenVerifier, VerifierOptions, DEFAULT_MAX_TOKEN_BYTES,
};
use quicksilver_fuzz::{
    has_valid_signature, header_json, now, numeric_claim, payload_json, token_from_input, NOW_SECS,
    SECRET,
};
use quicksilver_protocol::SelectorStore;
use serde_json::Value;
use std::sync::OnceLock;

fn verifier() -> &'static TokenVerifier {
    static V: OnceLock<TokenVerifier> = OnceLock::new();
    V.get_or_init(|| {
        TokenVerifier::new(
            KeySpec::new(SECRET, "HS256").unwrap(),
            VerifierOptions::default(),
        )
    })
}

fn selectors(claim: Option<&Value>, role: &str) -> usize {
    claim
        .and_then(|c| c.get(role))
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

fuzz_target!(|data: &[u8]| {
    let Some((token, _minted)) = token_from_input(data) else {
        return;
    };
    let _ = token_generation(&token);
    let store = SelectorStore::new(64, 256);
    let result = verifier().verify_at(&store, &token, now());
    if token.len() > DEFAULT_MAX_TOKEN_BYTES {
        assert!(matches!(result, Err(AuthError::TokenTooLong { .. })));
        return;
    }
    let Ok(grants) = result else {
        return;
    };
    assert!(has_valid_signature(&token), "forged token accepted");
    let header = header_json(&token).expect("accepted header is an object");
    assert_eq!(header.get("alg").and_then(Value::as_str), Some("HS256"));
    let payload = payload_json(&token).expect("accepted payload is an object");
    let now = NOW_SECS as f64;
    if let Some(exp) = numeric_claim(&payload, "exp").expect("numeric exp") {
        assert!(exp > now, "expired token accepted: exp {exp}");
    }
    if let Some(nbf) = numeric_claim(&payload, "nbf").expect("numeric nbf") {
        assert!(nbf <= now, "premature token accepted: nbf {nbf}");
    }
    // The namespaced claim wins when present and not null.
    let claim = payload
        .get("https://mercure.rocks/")
        .filter(|v| !v.is_null())
        .or_else(|| payload.get("mercure"));
    assert!(grants.publish().len() <= selectors(claim, "publish"));
    assert!(grants.private_access().selectors().len() <= selectors(claim, "subscribe"));
    if grants.publish_all() {
        let listed = claim
            .and_then(|c| c.get("publish"))
            .and_then(Value::as_array);
        assert!(listed.is_some_and(|l| l.iter().any(|s| s == "*")));
    }
});
