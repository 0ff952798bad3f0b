//! Current-generation access tokens against tokens minted here: `typ`, issuer binding, audience,
//! validity window, algorithms and key selection (configured keys and JWK Sets, with rotation),
//! and the authorization details they carry.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use quicksilver_auth::{
    can_publish, AccessTokenOptions, AccessTokenVerifier, AuthError, DetailLimits, HubIdentity,
    IssuerError, KeySet, KeySpec, SharedKeySet, TokenRejection, TrustedIssuer, VerifiedAccessToken,
    AUTHORIZATION_DETAIL_TYPE,
};
use quicksilver_protocol::SelectorStore;
use serde_json::{json, Value};

const SECRET: &str = "!ChangeThisMercureHubJWTSecretKey!";
const ISSUER: &str = "https://localhost";
const HUB: &str = "https://localhost/.well-known/mercure";
const RSA_PRIVATE: &str = include_str!("fixtures/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("fixtures/rsa_public.pem");
const RSA2_PRIVATE: &str = include_str!("fixtures/rsa2_private.pem");
const EC_PRIVATE: &str = include_str!("fixtures/ec_private.pem");
const ED_PRIVATE: &str = include_str!("fixtures/ed25519_private.pem");
const JWKS: &str = include_str!("fixtures/jwks.json");

/// A fixed "now" so validity windows are exact.
const NOW: u64 = 1_700_000_000;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn hub() -> HubIdentity<'static> {
    HubIdentity::new(HUB)
}

fn detail(actions: &[&str], topics: Value) -> Value {
    json!({"type": AUTHORIZATION_DETAIL_TYPE, "actions": actions, "topics": topics})
}

/// The claims RFC 9068 asks issuers for, with these details.
fn claims(details: Value) -> Value {
    json!({
        "iss": ISSUER,
        "aud": HUB,
        "sub": "urn:uuid:bb3de268-05b0-4c65-b44e-8f9acefc29d6",
        "client_id": ISSUER,
        "iat": NOW - 10,
        "exp": NOW + 300,
        "jti": "urn:uuid:e70ff8d7-59d5-4a92-b0b7-505e8f6d09fa",
        "authorization_details": details,
    })
}

fn publish_all() -> Value {
    claims(json!([detail(&["publish"], json!([{"match": "*"}]))]))
}

fn header(alg: Algorithm, typ: Option<&str>, kid: Option<&str>) -> Header {
    let mut h = Header::new(alg);
    h.typ = typ.map(str::to_string);
    h.kid = kid.map(str::to_string);
    h
}

fn mint(h: &Header, key: &EncodingKey, claims: &Value) -> String {
    encode(h, claims, key).unwrap()
}

fn secret() -> EncodingKey {
    EncodingKey::from_secret(SECRET.as_bytes())
}

fn rsa() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap()
}

fn rsa2() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA2_PRIVATE.as_bytes()).unwrap()
}

/// An HS256 access token with the conformance tests' secret.
fn hs(claims: &Value) -> String {
    mint(
        &header(Algorithm::HS256, Some("at+jwt"), None),
        &secret(),
        claims,
    )
}

fn verifier(issuers: Vec<TrustedIssuer>) -> AccessTokenVerifier {
    AccessTokenVerifier::new(issuers, AccessTokenOptions::default()).unwrap()
}

fn hs_verifier() -> AccessTokenVerifier {
    verifier(vec![TrustedIssuer::new(
        ISSUER,
        KeySpec::new(SECRET, "HS256").unwrap(),
    )
    .unwrap()])
}

fn verify(v: &AccessTokenVerifier, token: &str) -> Result<VerifiedAccessToken, AuthError> {
    v.verify_at(&SelectorStore::default(), token, &hub(), at(NOW))
}

fn rejection(result: Result<VerifiedAccessToken, AuthError>) -> TokenRejection {
    match result {
        Err(AuthError::InvalidToken(r)) => r,
        other => panic!("expected an invalid token, got {other:?}"),
    }
}

fn topics(t: &[&str]) -> Vec<String> {
    t.iter().map(|s| s.to_string()).collect()
}

fn jwks_with(kids: &[&str]) -> KeySet {
    let doc: Value = serde_json::from_str(JWKS).unwrap();
    let keys: Vec<Value> = doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| kids.contains(&k["kid"].as_str().unwrap()))
        .cloned()
        .collect();
    assert_eq!(keys.len(), kids.len());
    KeySet::from_jwks(json!({ "keys": keys }).to_string().as_bytes()).unwrap()
}

#[test]
fn conformance_test_token_is_accepted() {
    // The publisher token of the reference hub's conformance tests (HS256, no sub/iat/jti).
    let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6ImF0K2p3dCJ9.eyJhdWQiOiJodHRwczovL2xvY2FsaG9zdC8ud2VsbC1rbm93bi9tZXJjdXJlIiwiaXNzIjoiaHR0cHM6Ly9sb2NhbGhvc3QiLCJhdXRob3JpemF0aW9uX2RldGFpbHMiOlt7InR5cGUiOiJodHRwczovL21lcmN1cmUucm9ja3MvYXV0aG9yaXphdGlvbi1kZXRhaWwiLCJhY3Rpb25zIjpbInB1Ymxpc2giXSwidG9waWNzIjpbeyJtYXRjaCI6IioifV19LHsidHlwZSI6Imh0dHBzOi8vbWVyY3VyZS5yb2Nrcy9hdXRob3JpemF0aW9uLWRldGFpbCIsImFjdGlvbnMiOlsic3Vic2NyaWJlIl0sInRvcGljcyI6W3sibWF0Y2giOiIqIn1dfV0sImV4cCI6NDEwMjQ0NDgwMH0.z_S8IP5WZsCK8h3pcq0PB5zvJE0OdTrGA70khAYJQy4";
    let v = hs_verifier()
        .verify(&SelectorStore::default(), token, &hub())
        .unwrap();
    assert!(
        v.grants.publish_all()
            && matches!(v.grants.private_access(), quicksilver_auth::Access::All)
    );
    assert_eq!(v.issuer, ISSUER);
    assert_eq!(v.subject, None);
    assert_eq!(v.grants.expires_at(), Some(at(4_102_444_800)));
}

#[test]
fn valid_token_with_exact_details() {
    let token = hs(&claims(json!([
        detail(
            &["publish"],
            json!([{"match": "https://example.com/books/1"}])
        ),
        detail(
            &["subscribe"],
            json!([
                {"match": "https://example.com/books/1", "match_type": "exact"},
                {"match": "https://example.com/books/{id}"},
            ])
        ),
    ])));
    let store = SelectorStore::default();
    let v = hs_verifier()
        .verify_at(&store, &token, &hub(), at(NOW))
        .unwrap();
    assert_eq!(
        v.subject.as_deref(),
        Some("urn:uuid:bb3de268-05b0-4c65-b44e-8f9acefc29d6")
    );
    assert_eq!(v.grants.expires_at(), Some(at(NOW + 300)));
    let id = v.grants.identity();
    assert_eq!(id.subject.as_deref(), v.subject.as_deref());
    assert_eq!(
        id.token_id.as_deref(),
        Some("urn:uuid:e70ff8d7-59d5-4a92-b0b7-505e8f6d09fa")
    );
    assert_eq!(id.issuer.as_deref(), Some(ISSUER));
    assert_eq!(id.issued_at, Some(at(NOW - 10)));
    assert_eq!(id.expires_at, Some(at(NOW + 300)));
    let g = &v.grants;
    assert!(can_publish(
        &store,
        g,
        &topics(&["https://example.com/books/1"])
    ));
    assert!(!can_publish(
        &store,
        g,
        &topics(&["https://example.com/books/1", "https://example.com/books/2"])
    ));
    assert!(g
        .private_access()
        .allows(&store, &topics(&["urn:x", "https://example.com/books/1"])));
    // `exact` is byte for byte: `{id}` is no template here.
    assert!(!g
        .private_access()
        .allows(&store, &topics(&["https://example.com/books/2"])));
    assert!(g
        .private_access()
        .allows(&store, &topics(&["https://example.com/books/{id}"])));
}

#[test]
fn valid_token_with_urlpattern_details() {
    let token = hs(&claims(json!([
        detail(
            &["publish"],
            json!([{"match": "https://example.com/books/:id", "match_type": "urlpattern"}])
        ),
        detail(
            &["subscribe"],
            json!([{"match": "https://example.com/users/42/*", "match_type": "urlpattern"}])
        ),
    ])));
    let store = SelectorStore::default();
    let v = hs_verifier()
        .verify_at(&store, &token, &hub(), at(NOW))
        .unwrap();
    let g = &v.grants;
    assert!(can_publish(
        &store,
        g,
        &topics(&["https://example.com/books/1"])
    ));
    assert!(!can_publish(
        &store,
        g,
        &topics(&["https://example.com/books/1/chapters"])
    ));
    assert!(!can_publish(
        &store,
        g,
        &topics(&["https://example.com/users/42/books/1"])
    ));
    // The specification's alternate-topic example: the canonical topic is not granted, the
    // alternate one is, so the update is delivered.
    assert!(g.private_access().allows(
        &store,
        &topics(&[
            "https://example.com/books/1",
            "https://example.com/users/42/books/1"
        ])
    ));
    assert!(!g
        .private_access()
        .allows(&store, &topics(&["https://example.com/users/7/books/1"])));
}

#[test]
fn typ_must_be_at_jwt() {
    let v = hs_verifier();
    for typ in [
        None,
        Some("JWT"),
        Some("jwt"),
        Some("at+jwt2"),
        Some("application/jwt"),
    ] {
        let token = mint(
            &header(Algorithm::HS256, typ, None),
            &secret(),
            &publish_all(),
        );
        assert_eq!(
            rejection(verify(&v, &token)),
            TokenRejection::Type,
            "{typ:?}"
        );
    }
    for typ in ["AT+JWT", "application/at+jwt", "Application/At+Jwt"] {
        let token = mint(
            &header(Algorithm::HS256, Some(typ), None),
            &secret(),
            &publish_all(),
        );
        verify(&v, &token).unwrap_or_else(|e| panic!("{typ}: {e}"));
    }
}

#[test]
fn audience_must_name_this_hub() {
    let v = hs_verifier();
    let with_aud = |aud: Option<Value>| {
        let mut c = publish_all();
        match aud {
            Some(aud) => c["aud"] = aud,
            None => {
                c.as_object_mut().unwrap().remove("aud");
            }
        }
        hs(&c)
    };
    for bad in [
        None,
        Some(json!("https://other.example/.well-known/mercure")),
        Some(json!("https://localhost/.well-known/mercure/")),
        Some(json!("HTTPS://LOCALHOST/.well-known/mercure")),
        Some(json!([])),
        Some(json!(["https://other.example"])),
        Some(Value::Null),
    ] {
        assert_eq!(
            rejection(verify(&v, &with_aud(bad.clone()))),
            TokenRejection::Audience,
            "{bad:?}"
        );
    }
    verify(&v, &with_aud(Some(json!(["https://other.example", HUB])))).unwrap();
    assert_eq!(
        rejection(verify(&v, &with_aud(Some(json!(7))))),
        TokenRejection::Malformed
    );

    // The resource identifier is per request: the same token fails on another identity.
    let other = HubIdentity {
        resource: "https://hub.example.com/.well-known/mercure",
        hub_url: None,
    };
    let token = hs(&publish_all());
    let err = v.verify_at(&SelectorStore::default(), &token, &other, at(NOW));
    assert_eq!(rejection(err), TokenRejection::Audience);
    let empty = HubIdentity {
        resource: "",
        hub_url: None,
    };
    let mut c = publish_all();
    c["aud"] = json!("");
    let err = v.verify_at(&SelectorStore::default(), &hs(&c), &empty, at(NOW));
    assert_eq!(rejection(err), TokenRejection::Audience);
}

#[test]
fn issuer_must_be_trusted() {
    let v = hs_verifier();
    for iss in [
        None,
        Some(json!("https://evil.example")),
        Some(json!("https://localhost/")),
        Some(json!("")),
    ] {
        let mut c = publish_all();
        match &iss {
            Some(iss) => c["iss"] = iss.clone(),
            None => {
                c.as_object_mut().unwrap().remove("iss");
            }
        }
        assert_eq!(
            rejection(verify(&v, &hs(&c))),
            TokenRejection::Issuer,
            "{iss:?}"
        );
    }
    let mut c = publish_all();
    c["iss"] = json!(["https://localhost"]);
    assert_eq!(rejection(verify(&v, &hs(&c))), TokenRejection::Malformed);
    // A role without issuers refuses every token.
    assert_eq!(
        rejection(verify(&verifier(vec![]), &hs(&publish_all()))),
        TokenRejection::Issuer
    );
}

#[test]
fn each_issuer_only_verifies_with_its_own_keys() {
    let other_secret = "another-issuer-secret-0123456789";
    let v = verifier(vec![
        TrustedIssuer::new(ISSUER, KeySpec::new(SECRET, "HS256").unwrap()).unwrap(),
        TrustedIssuer::new(
            "https://b.example",
            KeySpec::new(other_secret, "HS256").unwrap(),
        )
        .unwrap(),
        TrustedIssuer::new(
            "https://c.example",
            KeySpec::new(RSA_PUBLIC, "RS256").unwrap(),
        )
        .unwrap(),
    ]);
    // Signed with B's key but claiming A: refused, though B is trusted.
    let forged = mint(
        &header(Algorithm::HS256, Some("at+jwt"), None),
        &EncodingKey::from_secret(other_secret.as_bytes()),
        &publish_all(),
    );
    assert_eq!(rejection(verify(&v, &forged)), TokenRejection::Signature);
    // The same token claiming B is fine.
    let mut c = publish_all();
    c["iss"] = json!("https://b.example");
    let genuine = mint(
        &header(Algorithm::HS256, Some("at+jwt"), None),
        &EncodingKey::from_secret(other_secret.as_bytes()),
        &c,
    );
    assert_eq!(verify(&v, &genuine).unwrap().issuer, "https://b.example");
    // An RS256 token claiming A, whose allowlist is HS256 only.
    let rs = mint(
        &header(Algorithm::RS256, Some("at+jwt"), None),
        &rsa(),
        &publish_all(),
    );
    assert_eq!(rejection(verify(&v, &rs)), TokenRejection::Algorithm);
    // Claiming C, it verifies.
    let mut c = publish_all();
    c["iss"] = json!("https://c.example");
    let rs = mint(&header(Algorithm::RS256, Some("at+jwt"), None), &rsa(), &c);
    verify(&v, &rs).unwrap();

    assert_eq!(
        AccessTokenVerifier::new(
            [
                TrustedIssuer::new(ISSUER, KeySpec::new(SECRET, "HS256").unwrap()).unwrap(),
                TrustedIssuer::new(ISSUER, KeySpec::new(RSA_PUBLIC, "RS256").unwrap()).unwrap(),
            ],
            AccessTokenOptions::default()
        )
        .unwrap_err(),
        IssuerError::Duplicate(ISSUER.into())
    );
}

#[test]
fn exp_is_required_and_enforced() {
    let v = hs_verifier();
    let mut c = publish_all();
    c.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        rejection(verify(&v, &hs(&c))),
        TokenRejection::MissingExpiry
    );
    c["exp"] = Value::Null;
    assert_eq!(
        rejection(verify(&v, &hs(&c))),
        TokenRejection::MissingExpiry
    );
    c["exp"] = json!(NOW);
    assert_eq!(rejection(verify(&v, &hs(&c))), TokenRejection::Expired);
    c["exp"] = json!(NOW - 1);
    assert_eq!(rejection(verify(&v, &hs(&c))), TokenRejection::Expired);
    c["exp"] = json!(NOW as f64 - 0.5);
    assert_eq!(rejection(verify(&v, &hs(&c))), TokenRejection::Expired);
    c["exp"] = json!("tomorrow");
    assert_eq!(rejection(verify(&v, &hs(&c))), TokenRejection::Malformed);
    c["exp"] = json!(NOW + 1);
    verify(&v, &hs(&c)).unwrap();

    // Leeway tolerates skew.
    c["exp"] = json!(NOW - 5);
    let lenient = AccessTokenVerifier::new(
        [TrustedIssuer::new(ISSUER, KeySpec::new(SECRET, "HS256").unwrap()).unwrap()],
        AccessTokenOptions {
            leeway: Duration::from_secs(30),
            ..AccessTokenOptions::default()
        },
    )
    .unwrap();
    verify(&lenient, &hs(&c)).unwrap();
}

#[test]
fn nbf_is_enforced_and_iat_only_shape_checked() {
    let v = hs_verifier();
    let mut c = publish_all();
    c["nbf"] = json!(NOW + 60);
    assert_eq!(rejection(verify(&v, &hs(&c))), TokenRejection::NotYetValid);
    c["nbf"] = json!(NOW);
    verify(&v, &hs(&c)).unwrap();
    // A future `iat` is not checked against the clock (`exp` bounds the token)...
    c["iat"] = json!(NOW + 3600);
    verify(&v, &hs(&c)).unwrap();
    // ...but it must be a NumericDate.
    c["iat"] = json!("yesterday");
    assert_eq!(rejection(verify(&v, &hs(&c))), TokenRejection::Malformed);
}

#[test]
fn alg_none_is_refused() {
    let v = hs_verifier();
    let payload = URL_SAFE_NO_PAD.encode(publish_all().to_string());
    for header in [
        r#"{"alg":"none","typ":"at+jwt"}"#,
        r#"{"alg":"None","typ":"at+jwt"}"#,
        r#"{"typ":"at+jwt"}"#,
    ] {
        let h = URL_SAFE_NO_PAD.encode(header);
        for token in [format!("{h}.{payload}."), format!("{h}.{payload}.c2ln")] {
            assert_eq!(
                rejection(verify(&v, &token)),
                TokenRejection::Algorithm,
                "{header}"
            );
        }
    }
}

#[test]
fn hmac_rsa_confusion_is_refused() {
    // The issuer publishes an RSA key; the attacker signs HS256 with the public key's bytes.
    let issuer = TrustedIssuer::new(ISSUER, KeySpec::new(RSA_PUBLIC, "RS256").unwrap()).unwrap();
    let forged = mint(
        &header(Algorithm::HS256, Some("at+jwt"), None),
        &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
        &publish_all(),
    );
    assert_eq!(
        rejection(verify(&verifier(vec![issuer.clone()]), &forged)),
        TokenRejection::Algorithm
    );
    // Even with HS256 on the allowlist, an RSA key never verifies an HMAC signature.
    let careless = issuer.with_algorithms(["RS256", "HS256"]).unwrap();
    assert_eq!(
        rejection(verify(&verifier(vec![careless.clone()]), &forged)),
        TokenRejection::Algorithm
    );
    // The same with the key from a JWK Set.
    let jwks = TrustedIssuer::new(ISSUER, jwks_with(&["rsa-1"]))
        .unwrap()
        .with_algorithms(["RS256", "HS256"])
        .unwrap();
    assert_eq!(
        rejection(verify(&verifier(vec![jwks]), &forged)),
        TokenRejection::Algorithm
    );
    // The genuine RS256 token passes.
    let genuine = mint(
        &header(Algorithm::RS256, Some("at+jwt"), None),
        &rsa(),
        &publish_all(),
    );
    verify(&verifier(vec![careless]), &genuine).unwrap();
}

#[test]
fn critical_header_extensions_are_refused() {
    let v = hs_verifier();
    let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"at+jwt","crit":["exp"],"exp":1}"#);
    let token = format!(
        "{h}.{}.sig",
        URL_SAFE_NO_PAD.encode(publish_all().to_string())
    );
    assert_eq!(
        rejection(verify(&v, &token)),
        TokenRejection::CriticalHeader
    );
}

#[test]
fn every_asymmetric_key_type_from_a_jwk_set() {
    let v = verifier(vec![TrustedIssuer::new(
        ISSUER,
        SharedKeySet::new(KeySet::from_jwks(JWKS.as_bytes()).unwrap()),
    )
    .unwrap()]);
    let cases = [
        (Algorithm::RS256, "rsa-1", rsa()),
        (Algorithm::PS256, "rsa-2", rsa2()),
        (
            Algorithm::ES256,
            "ec-1",
            EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
        ),
        (
            Algorithm::EdDSA,
            "ed-1",
            EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap(),
        ),
    ];
    for (alg, kid, key) in &cases {
        let token = mint(
            &header(*alg, Some("at+jwt"), Some(kid)),
            key,
            &publish_all(),
        );
        verify(&v, &token).unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        // Without a kid every key of the type is tried.
        let token = mint(&header(*alg, Some("at+jwt"), None), key, &publish_all());
        verify(&v, &token).unwrap_or_else(|e| panic!("{alg:?} without kid: {e}"));
    }
    // rsa-1 is pinned to RS256 by its JWK `alg`.
    let token = mint(
        &header(Algorithm::PS256, Some("at+jwt"), Some("rsa-1")),
        &rsa(),
        &publish_all(),
    );
    assert_eq!(rejection(verify(&v, &token)), TokenRejection::Algorithm);
    // The `oct` key is not usable unless HMAC is explicitly allowed.
    let oct = EncodingKey::from_secret(b"!ChangeThisMercureHubJWTSecretKey!-test-only");
    let token = mint(
        &header(Algorithm::HS256, Some("at+jwt"), Some("oct-1")),
        &oct,
        &publish_all(),
    );
    assert_eq!(rejection(verify(&v, &token)), TokenRejection::Algorithm);
    let with_hmac = verifier(vec![TrustedIssuer::new(
        ISSUER,
        KeySet::from_jwks(JWKS.as_bytes()).unwrap(),
    )
    .unwrap()
    .with_algorithms(["HS256"])
    .unwrap()]);
    verify(&with_hmac, &token).unwrap();
}

#[test]
fn jwk_set_with_two_keys_selects_by_kid() {
    let v = verifier(vec![TrustedIssuer::new(
        ISSUER,
        jwks_with(&["rsa-1", "rsa-2"]),
    )
    .unwrap()]);
    let by = |kid: Option<&str>, key: &EncodingKey| {
        verify(
            &v,
            &mint(
                &header(Algorithm::RS256, Some("at+jwt"), kid),
                key,
                &publish_all(),
            ),
        )
    };
    by(Some("rsa-1"), &rsa()).unwrap();
    by(Some("rsa-2"), &rsa2()).unwrap();
    by(None, &rsa2()).unwrap();
    // The kid names the other key: the signature does not verify with it.
    assert_eq!(
        rejection(by(Some("rsa-1"), &rsa2())),
        TokenRejection::Signature
    );
    assert_eq!(
        rejection(by(Some("rsa-3"), &rsa())),
        TokenRejection::UnknownKey
    );
    // A key from the token header is never used.
    let mut h = header(Algorithm::HS256, Some("at+jwt"), Some("rsa-1"));
    h.jku = Some("https://evil.example/jwks.json".into());
    let token = mint(&h, &EncodingKey::from_secret(b"attacker"), &publish_all());
    assert!(verify(&v, &token).is_err());
}

#[test]
fn rotation_takes_effect_for_the_next_token() {
    let shared = SharedKeySet::new(jwks_with(&["rsa-1"]));
    let v = verifier(vec![TrustedIssuer::new(ISSUER, shared.clone()).unwrap()]);
    let old = mint(
        &header(Algorithm::RS256, Some("at+jwt"), Some("rsa-1")),
        &rsa(),
        &publish_all(),
    );
    let new = mint(
        &header(Algorithm::RS256, Some("at+jwt"), Some("rsa-2")),
        &rsa2(),
        &publish_all(),
    );
    verify(&v, &old).unwrap();
    assert_eq!(rejection(verify(&v, &new)), TokenRejection::UnknownKey);

    // The server refetched the JWK Set: rsa-1 retired, rsa-2 introduced.
    let previous = shared.replace(jwks_with(&["rsa-2"]));
    assert_eq!(previous.len(), 1);
    verify(&v, &new).unwrap();
    assert_eq!(rejection(verify(&v, &old)), TokenRejection::UnknownKey);
    // Clones of the verifier share the handle.
    let clone = v.clone();
    shared.replace(jwks_with(&["rsa-1", "rsa-2"]));
    verify(&clone, &old).unwrap();
    assert!(Arc::strong_count(&shared.load()) >= 1);
}

#[test]
fn overlong_tokens_are_refused_before_decoding() {
    let v = AccessTokenVerifier::new(
        [TrustedIssuer::new(ISSUER, KeySpec::new(SECRET, "HS256").unwrap()).unwrap()],
        AccessTokenOptions {
            max_token_bytes: 64,
            ..AccessTokenOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        verify(&v, &"x".repeat(65)).unwrap_err(),
        AuthError::TokenTooLong { max: 64 }
    );
}

#[test]
fn malformed_details_refuse_an_otherwise_valid_token() {
    let v = hs_verifier();
    for details in [
        json!({"type": AUTHORIZATION_DETAIL_TYPE}),
        json!([detail(&["publish"], json!(["urn:bare"]))]),
        json!([detail(
            &["publish"],
            json!([{"match": "x", "match_type": "regex"}])
        )]),
        json!([detail(&[], json!([{"match": "x"}]))]),
    ] {
        assert!(
            matches!(
                verify(&v, &hs(&claims(details.clone()))),
                Err(AuthError::InvalidAuthorizationDetails(_))
            ),
            "{details}"
        );
    }
    let limited = AccessTokenVerifier::new(
        [TrustedIssuer::new(ISSUER, KeySpec::new(SECRET, "HS256").unwrap()).unwrap()],
        AccessTokenOptions {
            details: DetailLimits {
                max_details: 1,
                ..DetailLimits::default()
            },
            ..AccessTokenOptions::default()
        },
    )
    .unwrap();
    let two = claims(json!([
        detail(&["publish"], json!([{"match": "a"}])),
        detail(&["publish"], json!([{"match": "b"}]))
    ]));
    assert!(matches!(
        verify(&limited, &hs(&two)),
        Err(AuthError::TooManySelectors { max: 1, .. })
    ));
    // No details at all: valid, grants nothing.
    let mut c = publish_all();
    c.as_object_mut().unwrap().remove("authorization_details");
    let g = verify(&v, &hs(&c)).unwrap().grants;
    assert!(g.publish().is_empty() && matches!(g.private_access(), quicksilver_auth::Access::None));
    // A legacy claim in an access token grants nothing either.
    c["mercure"] = json!({"publish": ["*"]});
    let g = verify(&v, &hs(&c)).unwrap().grants;
    assert!(g.publish().is_empty());
}

#[test]
fn non_string_sub_is_malformed() {
    let mut c = publish_all();
    c["sub"] = json!(42);
    assert_eq!(
        rejection(verify(&hs_verifier(), &hs(&c))),
        TokenRejection::Malformed
    );
}
