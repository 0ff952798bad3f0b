//! Both generations through the one entry, [`Verifier::authenticate`]: extraction (header,
//! cookies, URL), generation selection, legacy on and off, and what a failure carries for the
//! server (the reason, the presented token's generation, a key refetch hint).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{HeaderMap, HeaderValue, Method};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use quicksilver_auth::{
    can_publish, AccessTokenOptions, AccessTokenVerifier, AuthError, AuthFailure, Authenticated,
    CredentialConfig, Generation, HubIdentity, KeySet, KeySpec, PublishOrigins, RequestParts,
    TokenRejection, TokenSource, TokenVerifier, TrustedIssuer, Verifier, VerifierOptions,
    AUTHORIZATION_DETAIL_TYPE,
};
use quicksilver_protocol::SelectorStore;
use serde_json::json;

const SECRET: &str = "!ChangeThisMercureHubJWTSecretKey!";
const LEGACY_SECRET: &str = "legacy-secret-legacy-secret-legacy";
const ISSUER: &str = "https://localhost";
const HUB: &str = "https://localhost/.well-known/mercure";
const NOW: u64 = 1_700_000_000;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn current_token(topic: &str) -> String {
    let mut h = Header::new(Algorithm::HS256);
    h.typ = Some("at+jwt".into());
    encode(
        &h,
        &json!({
            "iss": ISSUER, "aud": HUB, "exp": NOW + 60, "sub": "urn:sub",
            "authorization_details": [
                {"type": AUTHORIZATION_DETAIL_TYPE, "actions": ["publish"], "topics": [{"match": topic}]}
            ]
        }),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn legacy_token(topic: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &json!({"mercure": {"publish": [topic]}}),
        &EncodingKey::from_secret(LEGACY_SECRET.as_bytes()),
    )
    .unwrap()
}

fn verifier(legacy: bool) -> Verifier {
    let issuer = TrustedIssuer::new(ISSUER, KeySpec::new(SECRET, "HS256").unwrap()).unwrap();
    let current = AccessTokenVerifier::new([issuer], AccessTokenOptions::default()).unwrap();
    let legacy = legacy.then(|| {
        TokenVerifier::new(
            KeySpec::new(LEGACY_SECRET, "HS256").unwrap(),
            VerifierOptions::default(),
        )
    });
    Verifier::new(
        current,
        legacy,
        CredentialConfig {
            publish_origins: PublishOrigins::new(["https://app.example"]).unwrap(),
            ..CredentialConfig::default()
        },
    )
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        h.append(*name, HeaderValue::from_str(value).unwrap());
    }
    h
}

fn attempt(
    v: &Verifier,
    method: Method,
    h: &HeaderMap,
    query: Option<&str>,
) -> Result<Option<Authenticated>, AuthFailure> {
    v.authenticate(
        &SelectorStore::default(),
        &RequestParts::new(&method, h, query),
        &HubIdentity::new(HUB),
        at(NOW),
    )
}

fn run(
    v: &Verifier,
    method: Method,
    h: &HeaderMap,
    query: Option<&str>,
) -> Result<Option<Authenticated>, AuthError> {
    attempt(v, method, h, query).map_err(|f| f.error)
}

fn ok(result: Result<Option<Authenticated>, AuthError>) -> Authenticated {
    result.unwrap().expect("a token")
}

fn may_publish(a: &Authenticated, topic: &str) -> bool {
    can_publish(&SelectorStore::default(), &a.grants, &[topic.to_string()])
}

#[test]
fn both_generations_side_by_side() {
    let v = verifier(true);
    assert!(v.legacy_enabled());

    let a = ok(run(
        &v,
        Method::POST,
        &headers(&[(
            "authorization",
            &format!("Bearer {}", current_token("urn:c")),
        )]),
        None,
    ));
    assert_eq!(
        (a.generation, a.source),
        (Generation::Current, TokenSource::Header)
    );
    assert_eq!(a.issuer.as_deref(), Some(ISSUER));
    assert_eq!(a.subject.as_deref(), Some("urn:sub"));
    assert!(may_publish(&a, "urn:c"));

    let a = ok(run(
        &v,
        Method::POST,
        &headers(&[(
            "authorization",
            &format!("Bearer {}", legacy_token("urn:l")),
        )]),
        None,
    ));
    assert_eq!(
        (a.generation, a.source),
        (Generation::Legacy, TokenSource::Header)
    );
    assert_eq!(a.issuer, None);
    assert!(may_publish(&a, "urn:l"));

    // Each generation with its own keys: a legacy token signed with the issuer's secret is not
    // a legacy token of this hub, and an access token never goes to the legacy verifier.
    let wrong = encode(
        &Header::new(Algorithm::HS256),
        &json!({"mercure": {"publish": ["*"]}}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let e = run(
        &v,
        Method::POST,
        &headers(&[("authorization", &format!("Bearer {wrong}"))]),
        None,
    );
    assert_eq!(
        e.unwrap_err(),
        AuthError::InvalidToken(TokenRejection::Signature)
    );
}

#[test]
fn access_token_without_typ_is_reported_as_such() {
    let token = encode(
        &Header::new(Algorithm::HS256),
        &json!({"iss": ISSUER, "aud": HUB, "exp": NOW + 60, "authorization_details": []}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    for legacy in [true, false] {
        let h = headers(&[("authorization", &format!("Bearer {token}"))]);
        assert_eq!(
            run(&verifier(legacy), Method::POST, &h, None).unwrap_err(),
            AuthError::InvalidToken(TokenRejection::Type),
            "legacy {legacy}"
        );
    }
}

#[test]
fn legacy_off_refuses_legacy_tokens_for_their_typ() {
    let v = verifier(false);
    assert!(!v.legacy_enabled());
    let e = run(
        &v,
        Method::POST,
        &headers(&[(
            "authorization",
            &format!("Bearer {}", legacy_token("urn:l")),
        )]),
        None,
    )
    .unwrap_err();
    assert_eq!(e, AuthError::InvalidToken(TokenRejection::Type));
    ok(run(
        &v,
        Method::POST,
        &headers(&[(
            "authorization",
            &format!("Bearer {}", current_token("urn:c")),
        )]),
        None,
    ));
}

#[test]
fn current_tokens_are_refused_in_the_url() {
    let token = current_token("urn:c");
    let query = format!("authorization={token}");
    // Legacy on: the legacy query parameter is read, but an access token there is refused.
    let e = run(
        &verifier(true),
        Method::GET,
        &HeaderMap::new(),
        Some(&query),
    )
    .unwrap_err();
    assert_eq!(e, AuthError::TokenInUrl);
    // Legacy off: the parameter itself is refused, whatever it holds, even next to a header.
    let v = verifier(false);
    for q in [
        query.clone(),
        format!("authorization={}", legacy_token("urn:l")),
        "authorization=".into(),
    ] {
        assert_eq!(
            run(&v, Method::GET, &HeaderMap::new(), Some(&q)).unwrap_err(),
            AuthError::TokenInUrl
        );
    }
    let header = headers(&[("authorization", &format!("Bearer {token}"))]);
    assert_eq!(
        run(&v, Method::GET, &header, Some(&query)).unwrap_err(),
        AuthError::TokenInUrl
    );
    // RFC 6750's access_token parameter is never accepted, in either mode.
    for legacy in [true, false] {
        let q = format!("match=urn:c&access_token={token}");
        assert_eq!(
            run(&verifier(legacy), Method::GET, &HeaderMap::new(), Some(&q)).unwrap_err(),
            AuthError::TokenInUrl
        );
    }
}

#[test]
fn legacy_query_token_keeps_the_legacy_rules_when_legacy_is_on() {
    let v = verifier(true);
    let q = format!("authorization={}", legacy_token("urn:q"));
    let a = ok(run(&v, Method::GET, &HeaderMap::new(), Some(&q)));
    assert_eq!(
        (a.generation, a.source),
        (Generation::Legacy, TokenSource::Query)
    );
    // The header wins over the query, as before.
    let h = headers(&[(
        "authorization",
        &format!("Bearer {}", current_token("urn:h")),
    )]);
    let a = ok(run(&v, Method::GET, &h, Some(&q)));
    assert_eq!(
        (a.generation, a.source),
        (Generation::Current, TokenSource::Header)
    );
    // Repeated or too short: refused.
    let twice = format!("{q}&{q}");
    assert_eq!(
        run(&v, Method::GET, &HeaderMap::new(), Some(&twice)).unwrap_err(),
        AuthError::InvalidAuthorizationQuery
    );
    assert_eq!(
        run(
            &v,
            Method::GET,
            &HeaderMap::new(),
            Some("authorization=short")
        )
        .unwrap_err(),
        AuthError::InvalidAuthorizationQuery
    );
}

#[test]
fn cookies_of_both_names() {
    let current = current_token("urn:c");
    let legacy = legacy_token("urn:l");
    let new_cookie = format!("__Secure-mercure_access_token={current}");
    let old_cookie = format!("mercureAuthorization={legacy}");

    let on = verifier(true);
    let off = verifier(false);
    let a = ok(run(
        &on,
        Method::GET,
        &headers(&[("cookie", &new_cookie)]),
        None,
    ));
    assert_eq!(
        (a.generation, a.source),
        (Generation::Current, TokenSource::Cookie)
    );
    let a = ok(run(
        &on,
        Method::GET,
        &headers(&[("cookie", &old_cookie)]),
        None,
    ));
    assert_eq!(
        (a.generation, a.source),
        (Generation::Legacy, TokenSource::Cookie)
    );
    // Both present: the current cookie is read.
    let both = format!("{old_cookie}; {new_cookie}");
    assert_eq!(
        ok(run(&on, Method::GET, &headers(&[("cookie", &both)]), None)).generation,
        Generation::Current
    );
    // Legacy off: the old cookie is not read at all.
    assert!(run(
        &off,
        Method::GET,
        &headers(&[("cookie", &old_cookie)]),
        None
    )
    .unwrap()
    .is_none());
    ok(run(
        &off,
        Method::GET,
        &headers(&[("cookie", &new_cookie)]),
        None,
    ));
    // The header wins over cookies (they are ambient, so this is not an error).
    let h = headers(&[
        ("cookie", &new_cookie),
        ("authorization", &format!("Bearer {legacy}")),
    ]);
    assert_eq!(
        ok(run(&on, Method::GET, &h, None)).source,
        TokenSource::Header
    );
}

#[test]
fn cookie_publish_needs_an_allowed_origin() {
    let v = verifier(true);
    let cookie = format!("__Secure-mercure_access_token={}", current_token("urn:c"));
    let e = run(&v, Method::POST, &headers(&[("cookie", &cookie)]), None).unwrap_err();
    assert_eq!(e, AuthError::MissingOrigin);
    let e = run(
        &v,
        Method::POST,
        &headers(&[("cookie", &cookie), ("origin", "https://evil.example")]),
        None,
    )
    .unwrap_err();
    assert_eq!(e, AuthError::OriginNotAllowed);
    ok(run(
        &v,
        Method::POST,
        &headers(&[("cookie", &cookie), ("origin", "https://app.example")]),
        None,
    ));
}

#[test]
fn cookie_name_is_configurable() {
    let issuer = TrustedIssuer::new(ISSUER, KeySpec::new(SECRET, "HS256").unwrap()).unwrap();
    let v = Verifier::new(
        AccessTokenVerifier::new([issuer], AccessTokenOptions::default()).unwrap(),
        None,
        CredentialConfig {
            cookie_name: "mercure_access_token".into(),
            ..CredentialConfig::default()
        },
    );
    let token = current_token("urn:c");
    ok(run(
        &v,
        Method::GET,
        &headers(&[("cookie", &format!("mercure_access_token={token}"))]),
        None,
    ));
    let default_name = format!("__Secure-mercure_access_token={token}");
    assert!(run(
        &v,
        Method::GET,
        &headers(&[("cookie", &default_name)]),
        None
    )
    .unwrap()
    .is_none());
}

#[test]
fn no_token_is_anonymous() {
    for legacy in [true, false] {
        assert!(run(
            &verifier(legacy),
            Method::GET,
            &HeaderMap::new(),
            Some("match=urn:a")
        )
        .unwrap()
        .is_none());
    }
}

#[test]
fn failures_carry_the_presented_tokens_generation() {
    let bearer = |t: &str| headers(&[("authorization", &format!("Bearer {t}"))]);
    let expired = {
        let mut h = Header::new(Algorithm::HS256);
        h.typ = Some("at+jwt".into());
        encode(
            &h,
            &json!({"iss": ISSUER, "aud": HUB, "exp": NOW - 1}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let bad_details = {
        let mut h = Header::new(Algorithm::HS256);
        h.typ = Some("at+jwt".into());
        encode(
            &h,
            &json!({"iss": ISSUER, "aud": HUB, "exp": NOW + 1, "authorization_details": "all"}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let current_in_url = format!("authorization={}", current_token("urn:c"));
    let check = |legacy: bool,
                 h: HeaderMap,
                 query: Option<&str>,
                 error: AuthError,
                 generation: Option<Generation>| {
        let f = attempt(&verifier(legacy), Method::POST, &h, query).unwrap_err();
        assert_eq!(f.error, error, "legacy {legacy}, {query:?}");
        assert_eq!(f.generation, generation, "{error}");
        assert!(!f.unknown_key(), "{error}");
    };

    check(
        true,
        bearer(&expired),
        None,
        AuthError::InvalidToken(TokenRejection::Expired),
        Some(Generation::Current),
    );
    check(
        true,
        bearer(&bad_details),
        None,
        AuthError::InvalidAuthorizationDetails("the claim must be an array"),
        Some(Generation::Current),
    );
    // Not a JWT at all: found, read as legacy (no `typ`), refused as malformed.
    check(
        true,
        bearer("not-a-jwt-but-long-enough-to-pass-extraction"),
        None,
        AuthError::InvalidToken(TokenRejection::Malformed),
        Some(Generation::Legacy),
    );
    // The same with legacy off: the current verifier refuses it.
    check(
        false,
        bearer("not-a-jwt-but-long-enough-to-pass-extraction"),
        None,
        AuthError::InvalidToken(TokenRejection::Malformed),
        Some(Generation::Legacy),
    );
    // Refused before a token was read.
    check(
        true,
        headers(&[("authorization", "Basic dXNlcjpwYXNzd29yZA==")]),
        None,
        AuthError::InvalidAuthorizationHeader,
        None,
    );
    check(
        false,
        HeaderMap::new(),
        Some(&current_in_url),
        AuthError::TokenInUrl,
        None,
    );
    // Legacy on reads the parameter; the token there is a current one.
    check(
        true,
        HeaderMap::new(),
        Some(&current_in_url),
        AuthError::TokenInUrl,
        Some(Generation::Current),
    );
}

#[test]
fn unknown_kid_asks_for_a_key_refetch() {
    let jwks = json!({"keys": [{
        "kty": "oct", "kid": "k1", "alg": "HS256",
        "k": URL_SAFE_NO_PAD.encode(SECRET),
    }]});
    let issuer = TrustedIssuer::new(
        ISSUER,
        KeySet::from_jwks(jwks.to_string().as_bytes()).unwrap(),
    )
    .unwrap()
    .with_algorithms(["HS256"])
    .unwrap();
    let v = Verifier::new(
        AccessTokenVerifier::new([issuer], AccessTokenOptions::default()).unwrap(),
        None,
        CredentialConfig::default(),
    );
    let with_kid = |kid: &str| {
        let mut h = Header::new(Algorithm::HS256);
        h.typ = Some("at+jwt".into());
        h.kid = Some(kid.into());
        encode(
            &h,
            &json!({"iss": ISSUER, "aud": HUB, "exp": NOW + 60}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let bearer = |t: &str| headers(&[("authorization", &format!("Bearer {t}"))]);
    ok(run(&v, Method::GET, &bearer(&with_kid("k1")), None));
    let f = attempt(&v, Method::GET, &bearer(&with_kid("k2")), None).unwrap_err();
    assert_eq!(f.error, AuthError::InvalidToken(TokenRejection::UnknownKey));
    assert_eq!(f.generation, Some(Generation::Current));
    assert!(f.unknown_key());
}
