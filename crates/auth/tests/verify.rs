//! Token verification against tokens minted here: HMAC, RSA, EC and Ed25519 keys (test-only PEM
//! fixtures in `tests/fixtures/`), validity windows, forged and confused algorithms, and the
//! pre-standardization claim's shapes and limits.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use quicksilver_auth::{
    can_publish, AuthError, KeyError, KeySpec, TokenRejection, TokenVerifier, VerifierOptions,
};
use quicksilver_protocol::SelectorStore;
use serde_json::{json, Value};

const SECRET: &str = "!ChangeThisMercureHubJWTSecretKey!";
const RSA_PRIVATE: &str = include_str!("fixtures/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("fixtures/rsa_public.pem");
const EC_PRIVATE: &str = include_str!("fixtures/ec_private.pem");
const EC_PUBLIC: &str = include_str!("fixtures/ec_public.pem");
const ED_PRIVATE: &str = include_str!("fixtures/ed25519_private.pem");
const ED_PUBLIC: &str = include_str!("fixtures/ed25519_public.pem");

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn verifier(key: &str, alg: &str) -> TokenVerifier {
    TokenVerifier::new(KeySpec::new(key, alg).unwrap(), VerifierOptions::default())
}

fn hmac_verifier() -> TokenVerifier {
    verifier(SECRET, "HS256")
}

fn publish_all() -> Value {
    json!({"mercure": {"publish": ["*"]}})
}

fn topics(t: &[&str]) -> Vec<String> {
    t.iter().map(|s| s.to_string()).collect()
}

fn rejection(result: Result<quicksilver_auth::Grants, AuthError>) -> TokenRejection {
    match result {
        Err(AuthError::InvalidToken(r)) => r,
        other => panic!("expected an invalid token, got {other:?}"),
    }
}

#[test]
fn hs256_without_exp_is_valid() {
    let store = SelectorStore::default();
    let g = hmac_verifier()
        .verify(&store, &hs256(&publish_all()))
        .unwrap();
    assert!(g.publish_all());
    assert!(g.expires_at().is_none());
    assert!(can_publish(&store, &g, &topics(&["urn:anything"])));
}

#[test]
fn hs256_with_future_exp_is_valid_and_reports_its_expiry() {
    let exp = now() + 3600;
    let token =
        hs256(&json!({"exp": exp, "mercure": {"subscribe": ["urn:a"], "payload": {"u": 1}}}));
    let g = hmac_verifier()
        .verify(&SelectorStore::default(), &token)
        .unwrap();
    assert_eq!(g.expires_at(), Some(UNIX_EPOCH + Duration::from_secs(exp)));
    assert_eq!(g.payload(), Some(&json!({"u": 1})));
}

#[test]
fn expired_token_is_refused() {
    let token = hs256(&json!({"exp": now() - 10, "mercure": {"publish": ["*"]}}));
    assert_eq!(
        rejection(hmac_verifier().verify(&SelectorStore::default(), &token)),
        TokenRejection::Expired
    );
}

#[test]
fn fractional_exp_is_checked_too() {
    // jsonwebtoken alone would skip an `exp` it cannot read as an integer.
    let token = hs256(&json!({"exp": (now() - 10) as f64 + 0.5}));
    assert_eq!(
        rejection(hmac_verifier().verify(&SelectorStore::default(), &token)),
        TokenRejection::Expired
    );
    let token = hs256(&json!({"exp": "never"}));
    assert_eq!(
        rejection(hmac_verifier().verify(&SelectorStore::default(), &token)),
        TokenRejection::Malformed
    );
}

#[test]
fn leeway_is_configurable() {
    let token = hs256(&json!({"exp": now() - 2}));
    let store = SelectorStore::default();
    assert!(hmac_verifier().verify(&store, &token).is_err());
    let lenient = TokenVerifier::new(
        KeySpec::new(SECRET, "HS256").unwrap(),
        VerifierOptions {
            leeway: Duration::from_secs(30),
            ..VerifierOptions::default()
        },
    );
    lenient.verify(&store, &token).unwrap();
}

#[test]
fn nbf_in_the_future_is_refused() {
    let store = SelectorStore::default();
    let token = hs256(&json!({"nbf": now() + 600}));
    assert_eq!(
        rejection(hmac_verifier().verify(&store, &token)),
        TokenRejection::NotYetValid
    );
    let token = hs256(&json!({"nbf": now() - 600}));
    hmac_verifier().verify(&store, &token).unwrap();
}

#[test]
fn wrong_key_is_refused() {
    let token = encode(
        &Header::new(Algorithm::HS256),
        &publish_all(),
        &EncodingKey::from_secret(b"another secret"),
    )
    .unwrap();
    assert_eq!(
        rejection(hmac_verifier().verify(&SelectorStore::default(), &token)),
        TokenRejection::Signature
    );
}

#[test]
fn tampered_claims_are_refused() {
    let token = hs256(&json!({"mercure": {"publish": ["urn:mine"]}}));
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged = URL_SAFE_NO_PAD.encode(publish_all().to_string());
    parts[1] = &forged;
    assert_eq!(
        rejection(hmac_verifier().verify(&SelectorStore::default(), &parts.join("."))),
        TokenRejection::Signature
    );
}

#[test]
fn alg_none_is_refused() {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(publish_all().to_string());
    let store = SelectorStore::default();
    for token in [format!("{header}.{claims}."), format!("{header}.{claims}")] {
        assert!(matches!(
            hmac_verifier().verify(&store, &token),
            Err(AuthError::InvalidToken(_))
        ));
        assert!(verifier(RSA_PUBLIC, "RS256")
            .verify(&store, &token)
            .is_err());
    }
}

#[test]
fn other_hmac_strength_is_refused() {
    let token = encode(
        &Header::new(Algorithm::HS512),
        &publish_all(),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        rejection(hmac_verifier().verify(&SelectorStore::default(), &token)),
        TokenRejection::Algorithm
    );
}

#[test]
fn algorithm_confusion_is_refused() {
    let store = SelectorStore::default();
    // The setup that makes the attack possible cannot be configured at all…
    assert_eq!(
        KeySpec::new(RSA_PUBLIC, "HS256").unwrap_err(),
        KeyError::PemWithHmac("HS256")
    );
    // …and an HS256 token keyed with the (public) PEM is refused by the RS256 verifier.
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &publish_all(),
        &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        rejection(verifier(RSA_PUBLIC, "RS256").verify(&store, &forged)),
        TokenRejection::Algorithm
    );
    // A genuine RS256 token offered to an HS256 verifier is refused as well.
    let rs = encode(
        &Header::new(Algorithm::RS256),
        &publish_all(),
        &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        rejection(hmac_verifier().verify(&store, &rs)),
        TokenRejection::Algorithm
    );
}

#[test]
fn asymmetric_keys_verify_their_tokens() {
    let store = SelectorStore::default();
    let cases = [
        (
            Algorithm::RS256,
            "RS256",
            EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
            RSA_PUBLIC,
        ),
        (
            Algorithm::PS256,
            "PS256",
            EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
            RSA_PUBLIC,
        ),
        (
            Algorithm::ES256,
            "ES256",
            EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
            EC_PUBLIC,
        ),
        (
            Algorithm::EdDSA,
            "EdDSA",
            EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap(),
            ED_PUBLIC,
        ),
    ];
    for (alg, name, private, public) in cases {
        let token = encode(
            &Header::new(alg),
            &json!({"exp": now() + 60, "mercure": {"subscribe": ["urn:x"]}}),
            &private,
        )
        .unwrap();
        let g = verifier(public, name).verify(&store, &token).unwrap();
        assert!(
            g.private_access().allows(&store, &topics(&["urn:x"])),
            "{name}"
        );
    }
}

#[test]
fn asymmetric_token_signed_by_another_key_is_refused() {
    // An ES256 token offered to the RS256 verifier: another algorithm, refused before any crypto.
    let store = SelectorStore::default();
    let es = encode(
        &Header::new(Algorithm::ES256),
        &publish_all(),
        &EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        rejection(verifier(RSA_PUBLIC, "RS256").verify(&store, &es)),
        TokenRejection::Algorithm
    );
    // Same header, signature bytes from another token: the signature check fails.
    let rs = encode(
        &Header::new(Algorithm::RS256),
        &json!({"mercure": {"publish": ["urn:a"]}}),
        &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
    )
    .unwrap();
    let other = encode(
        &Header::new(Algorithm::RS256),
        &publish_all(),
        &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
    )
    .unwrap();
    let spliced = format!(
        "{}.{}",
        other.rsplit_once('.').unwrap().0,
        rs.rsplit_once('.').unwrap().1
    );
    assert_eq!(
        rejection(verifier(RSA_PUBLIC, "RS256").verify(&store, &spliced)),
        TokenRejection::Signature
    );
}

#[test]
fn namespaced_claim_is_read_and_wins() {
    let store = SelectorStore::default();
    let token = hs256(&json!({
        "mercure": {"publish": ["urn:plain"]},
        "https://mercure.rocks/": {"publish": ["urn:namespaced"], "subscribe": ["urn:s"]}
    }));
    let g = hmac_verifier().verify(&store, &token).unwrap();
    assert!(can_publish(&store, &g, &topics(&["urn:namespaced"])));
    assert!(!can_publish(&store, &g, &topics(&["urn:plain"])));
    assert!(g.private_access().allows(&store, &topics(&["urn:s"])));
}

#[test]
fn too_many_selectors_are_refused() {
    let store = SelectorStore::default();
    let many: Vec<String> = (0..=1000).map(|i| format!("urn:{i}")).collect();
    let token = hs256(&json!({"mercure": {"subscribe": many}}));
    assert_eq!(
        hmac_verifier().verify(&store, &token).unwrap_err(),
        AuthError::TooManySelectors {
            claim: "mercure.subscribe",
            max: 1000
        }
    );
    let strict = TokenVerifier::new(
        KeySpec::new(SECRET, "HS256").unwrap(),
        VerifierOptions {
            max_selectors_per_claim: 2,
            ..VerifierOptions::default()
        },
    );
    let token = hs256(&json!({"mercure": {"publish": ["a", "b", "c"]}}));
    assert_eq!(
        strict.verify(&store, &token).unwrap_err(),
        AuthError::TooManySelectors {
            claim: "mercure.publish",
            max: 2
        }
    );
}

#[test]
fn overlong_token_is_refused_before_decoding() {
    let store = SelectorStore::default();
    let token = "a".repeat(quicksilver_auth::DEFAULT_MAX_TOKEN_BYTES + 1);
    assert_eq!(
        hmac_verifier().verify(&store, &token).unwrap_err(),
        AuthError::TokenTooLong {
            max: quicksilver_auth::DEFAULT_MAX_TOKEN_BYTES
        }
    );
}

#[test]
fn garbage_is_malformed() {
    let store = SelectorStore::default();
    for token in ["", "abc", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9.!!!.sig"] {
        assert!(
            matches!(
                hmac_verifier().verify(&store, token),
                Err(AuthError::InvalidToken(_))
            ),
            "{token:?}"
        );
    }
}

#[test]
fn template_selectors_in_grants() {
    let store = SelectorStore::default();
    let token = hs256(&json!({"mercure": {
        "publish": ["https://example.com/books/{id}"],
        "subscribe": ["https://example.com/users/{user}/{+rest}"]
    }}));
    let g = hmac_verifier().verify(&store, &token).unwrap();
    assert!(can_publish(
        &store,
        &g,
        &topics(&["https://example.com/books/1", "https://example.com/books/2"])
    ));
    assert!(!can_publish(
        &store,
        &g,
        &topics(&[
            "https://example.com/books/1",
            "https://example.com/authors/2"
        ])
    ));
    assert!(g.private_access().allows(
        &store,
        &topics(&["urn:x", "https://example.com/users/7/inbox/2"])
    ));
    assert!(!g
        .private_access()
        .allows(&store, &topics(&["https://example.com/books/1"])));
}

#[test]
fn token_without_mercure_claim_grants_nothing() {
    let store = SelectorStore::default();
    let g = hmac_verifier()
        .verify(
            &store,
            &hs256(&json!({"sub": "someone", "aud": "elsewhere"})),
        )
        .unwrap();
    assert!(!can_publish(&store, &g, &topics(&["urn:a"])));
    assert!(!g.private_access().allows(&store, &topics(&["urn:a"])));
}

/// The reference hub's 0.x `publisher_jwks_url`: legacy tokens verified with a JWK Set, by `kid`,
/// with the asymmetric algorithms only unless told otherwise, and the set replaceable at run time.
#[test]
fn legacy_tokens_verified_with_a_key_set() {
    use quicksilver_auth::{KeySet, SharedKeySet};
    let store = SelectorStore::default();
    let rs256 = |kid: Option<&str>| {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = kid.map(str::to_string);
        encode(
            &header,
            &publish_all(),
            &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let set = KeySet::new().with_key(Some("k1"), KeySpec::new(RSA_PUBLIC, "RS256").unwrap());
    let shared = SharedKeySet::new(set);
    let v = TokenVerifier::with_key_set(shared.clone(), &[], VerifierOptions::default()).unwrap();
    assert!(v.key().is_none());
    let grants = v
        .verify(&store, &rs256(Some("k1")))
        .expect("the named key verifies");
    assert!(can_publish(&store, &grants, &topics(&["a"])));
    assert!(
        v.verify(&store, &rs256(None)).is_ok(),
        "no kid: any key of the set"
    );
    assert_eq!(
        rejection(v.verify(&store, &rs256(Some("k2")))),
        TokenRejection::UnknownKey
    );
    // HMAC is not among the default algorithms: no confusion with the public key as a secret.
    assert_eq!(
        rejection(v.verify(&store, &hs256(&publish_all()))),
        TokenRejection::Algorithm
    );
    // Rotation: the set is replaced, the verifier follows.
    shared.replace(KeySet::new().with_key(Some("k2"), KeySpec::new(RSA_PUBLIC, "RS256").unwrap()));
    assert!(v.verify(&store, &rs256(Some("k2"))).is_ok());
    assert_eq!(
        rejection(v.verify(&store, &rs256(Some("k1")))),
        TokenRejection::UnknownKey
    );
    assert!(TokenVerifier::with_key_set(shared, &["RS999"], VerifierOptions::default()).is_err());
}
