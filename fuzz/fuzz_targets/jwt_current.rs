//! Current-generation access tokens (`typ: at+jwt`, `authorization_details`), verified for one
//! trusted HS256 issuer, and the two-generation [`Verifier`] that routes a token by its header.
//!
//! Inputs are raw tokens or fuzzed payloads minted under one of several headers (see
//! `quicksilver_fuzz::token_from_input`). Properties:
//! - an accepted token carries a genuine HS256 signature, `typ` at+jwt, no `crit`, the trusted
//!   `iss`, the hub in `aud`, a numeric `exp` in the future and no `nbf` in the future;
//! - the router agrees with the access-token verifier on current tokens from a header, refuses
//!   them in the URL, and never accepts a forged legacy token either;
//! - oversized tokens are refused as such.

#![no_main]

use libfuzzer_sys::fuzz_target;
use quicksilver_auth::{
    is_access_token_type, token_generation, AccessTokenOptions, AccessTokenVerifier, AuthError,
    CredentialConfig, ExtractedToken, Generation, HubIdentity, KeySpec, TokenSource, TokenVerifier,
    TrustedIssuer, Verifier, VerifierOptions, DEFAULT_MAX_TOKEN_BYTES,
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

fn verifier() -> &'static Verifier {
    static V: OnceLock<Verifier> = OnceLock::new();
    V.get_or_init(|| {
        let issuer = TrustedIssuer::new(ISSUER, KeySpec::new(SECRET, "HS256").unwrap()).unwrap();
        let current = AccessTokenVerifier::new([issuer], AccessTokenOptions::default()).unwrap();
        let legacy = TokenVerifier::new(
            KeySpec::new(SECRET, "HS256").unwrap(),
            VerifierOptions::default(),
        );
        Verifier::new(current, Some(legacy), CredentialConfig::default())
    })
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
    let v = verifier();

    let direct = v.current().verify_at(&store, &token, &hub, now());
    if token.len() > DEFAULT_MAX_TOKEN_BYTES {
        assert!(matches!(direct, Err(AuthError::TokenTooLong { .. })));
    }
    if direct.is_ok() {
        check_accepted_current(&token);
    }

    let generation = token_generation(&token);
    let from = |source| ExtractedToken {
        token: &token,
        source,
    };
    let routed = v.verify_at(&store, from(TokenSource::Header), &hub, now());
    match generation {
        Generation::Current => {
            assert_eq!(routed.is_ok(), direct.is_ok());
            assert!(matches!(
                v.verify_at(&store, from(TokenSource::Query), &hub, now()),
                Err(AuthError::TokenInUrl)
            ));
        }
        Generation::Legacy => {
            if routed.is_ok() {
                assert!(has_valid_signature(&token), "forged legacy token accepted");
            }
        }
    }
    if let Ok(auth) = routed {
        assert_eq!(auth.generation, generation);
        if generation == Generation::Current {
            assert_eq!(auth.issuer.as_deref(), Some(ISSUER));
        }
    }
});
