//! Token extraction through the one entry, [`Verifier::authenticate`], with the legacy generation
//! on: the header → query → cookie order, malformed carriers, and the CSRF origin check for
//! cookie-authenticated publishes. Which token was used is told by the topic it grants.

use std::time::SystemTime;

use http::{HeaderMap, HeaderValue, Method};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use quicksilver_auth::{
    AccessTokenOptions, AccessTokenVerifier, AuthError, CredentialConfig, HubIdentity, KeySpec,
    PublishOrigins, RequestParts, TokenSource, TokenVerifier, Verifier, VerifierOptions,
};
use quicksilver_protocol::SelectorStore;
use serde_json::json;

const SECRET: &str = "!ChangeThisMercureHubJWTSecretKey!";

fn token(publish: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &json!({"mercure": {"publish": [publish]}}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        h.append(*name, HeaderValue::from_str(value).unwrap());
    }
    h
}

fn config(origins: &[&str]) -> CredentialConfig {
    CredentialConfig {
        publish_origins: PublishOrigins::new(origins).unwrap(),
        ..CredentialConfig::default()
    }
}

/// The publish topic of the token the request was authenticated with, and where it was found.
fn source(
    h: &HeaderMap,
    method: Method,
    query: &[String],
    cfg: &CredentialConfig,
) -> Result<Option<(String, TokenSource)>, AuthError> {
    let verifier = Verifier::new(
        AccessTokenVerifier::new([], AccessTokenOptions::default()).unwrap(),
        Some(TokenVerifier::new(
            KeySpec::new(SECRET, "HS256").unwrap(),
            VerifierOptions::default(),
        )),
        cfg.clone(),
    );
    let query: Vec<String> = query.iter().map(|t| format!("authorization={t}")).collect();
    let query = query.join("&");
    let request = RequestParts::new(&method, h, Some(&query));
    let hub = HubIdentity::new("https://localhost/.well-known/mercure");
    verifier
        .authenticate(&SelectorStore::default(), &request, &hub, SystemTime::now())
        .map(|found| found.map(|a| (a.grants.publish()[0].raw().to_string(), a.source)))
        .map_err(|f| f.error)
}

#[test]
fn header_beats_query_beats_cookie() {
    let (th, tq, tc) = (token("urn:h"), token("urn:q"), token("urn:c"));
    let bearer = format!("Bearer {th}");
    let cookie = format!("mercureAuthorization={tc}");
    let cfg = config(&[]);
    let q = vec![tq.clone()];

    let all = headers(&[("authorization", &bearer), ("cookie", &cookie)]);
    assert_eq!(
        source(&all, Method::GET, &q, &cfg).unwrap(),
        Some(("urn:h".to_string(), TokenSource::Header))
    );
    let no_header = headers(&[("cookie", &cookie)]);
    assert_eq!(
        source(&no_header, Method::GET, &q, &cfg).unwrap(),
        Some(("urn:q".to_string(), TokenSource::Query))
    );
    assert_eq!(
        source(&no_header, Method::GET, &[], &cfg).unwrap(),
        Some(("urn:c".to_string(), TokenSource::Cookie))
    );
    assert_eq!(
        source(&HeaderMap::new(), Method::GET, &[], &cfg).unwrap(),
        None
    );
    // A header-authenticated publish needs no origin.
    assert_eq!(
        source(&all, Method::POST, &[], &cfg).unwrap(),
        Some(("urn:h".to_string(), TokenSource::Header))
    );
}

#[test]
fn malformed_authorization_header_does_not_fall_back() {
    let t = token("*");
    let cookie = format!("mercureAuthorization={t}");
    let cfg = config(&["*"]);
    let q = vec![t.clone()];
    let bad = [
        format!("Basic {t}"),
        format!("Bearer{t}"),
        "Bearer short.token.here".to_string(),
        t.clone(),
    ];
    for value in &bad {
        let h = headers(&[("authorization", value), ("cookie", &cookie)]);
        assert_eq!(
            source(&h, Method::GET, &q, &cfg).unwrap_err(),
            AuthError::InvalidAuthorizationHeader,
            "{value}"
        );
    }
    let bearer = format!("Bearer {t}");
    let twice = headers(&[("authorization", &bearer), ("authorization", &bearer)]);
    assert_eq!(
        source(&twice, Method::GET, &[], &cfg).unwrap_err(),
        AuthError::InvalidAuthorizationHeader
    );
    let mut binary = HeaderMap::new();
    binary.insert(
        "authorization",
        HeaderValue::from_bytes(format!("Bearer {t}\u{e9}").as_bytes()).unwrap(),
    );
    assert_eq!(
        source(&binary, Method::GET, &[], &cfg).unwrap_err(),
        AuthError::InvalidAuthorizationHeader
    );
    let lower = headers(&[("authorization", &format!("bearer {t}"))]);
    assert_eq!(
        source(&lower, Method::GET, &[], &cfg).unwrap(),
        Some(("*".to_string(), TokenSource::Header))
    );
}

#[test]
fn malformed_query_parameter_does_not_fall_back() {
    let t = token("*");
    let cookie = format!("mercureAuthorization={t}");
    let h = headers(&[("cookie", &cookie)]);
    let cfg = config(&[]);
    for q in [
        vec![t.clone(), t.clone()],
        vec!["short".to_string()],
        vec![String::new()],
    ] {
        assert_eq!(
            source(&h, Method::GET, &q, &cfg).unwrap_err(),
            AuthError::InvalidAuthorizationQuery
        );
    }
}

#[test]
fn cookie_name_is_configurable() {
    let t = token("*");
    let h = headers(&[("cookie", &format!("mercureAuthorization=x; hub={t}"))]);
    let cfg = CredentialConfig {
        legacy_cookie_name: "hub".into(),
        ..CredentialConfig::default()
    };
    assert_eq!(
        source(&h, Method::GET, &[], &cfg).unwrap(),
        Some(("*".to_string(), TokenSource::Cookie))
    );
}

#[test]
fn cookie_publish_checks_the_origin() {
    let t = token("*");
    let cookie = format!("mercureAuthorization={t}");
    let cfg = config(&["https://app.example.com", "https://*.example.org"]);
    let post = |extra: &[(&'static str, &str)]| {
        let mut pairs = vec![("cookie", cookie.as_str())];
        pairs.extend_from_slice(extra);
        source(&headers(&pairs), Method::POST, &[], &cfg)
    };
    let ok = Some(("*".to_string(), TokenSource::Cookie));

    assert_eq!(post(&[("origin", "https://app.example.com")]).unwrap(), ok);
    assert_eq!(post(&[("origin", "https://eu.example.org")]).unwrap(), ok);
    assert_eq!(
        post(&[("origin", "https://evil.example.net")]).unwrap_err(),
        AuthError::OriginNotAllowed
    );
    // The Origin header wins over the Referer.
    assert_eq!(
        post(&[
            ("origin", "https://evil.example.net"),
            ("referer", "https://app.example.com/page")
        ])
        .unwrap_err(),
        AuthError::OriginNotAllowed
    );
    // Referer fallback, also when Origin is empty.
    assert_eq!(
        post(&[("referer", "https://app.example.com/books/1?x#y")]).unwrap(),
        ok
    );
    assert_eq!(
        post(&[("origin", ""), ("referer", "https://a.example.org/")]).unwrap(),
        ok
    );
    assert_eq!(
        post(&[("referer", "https://evil.example.net/")]).unwrap_err(),
        AuthError::OriginNotAllowed
    );
    assert_eq!(
        post(&[("referer", "not a url")]).unwrap_err(),
        AuthError::InvalidReferer
    );
    assert_eq!(post(&[]).unwrap_err(), AuthError::MissingOrigin);
    // Safe methods are not checked, `QUERY` (a subscription with a body) among them.
    assert_eq!(
        source(&headers(&[("cookie", &cookie)]), Method::GET, &[], &cfg).unwrap(),
        ok
    );
    let query = Method::from_bytes(b"QUERY").unwrap();
    let cross_site = headers(&[("cookie", &cookie), ("origin", "https://evil.example.net")]);
    assert_eq!(source(&cross_site, query, &[], &cfg).unwrap(), ok);
}

#[test]
fn cookie_publish_with_every_origin_allowed() {
    let t = token("*");
    let cookie = format!("mercureAuthorization={t}");
    let cfg = config(&["*"]);
    let h = headers(&[("cookie", &cookie), ("referer", "whatever")]);
    assert!(source(&h, Method::POST, &[], &cfg).unwrap().is_some());
    let h = headers(&[("cookie", &cookie), ("origin", "https://any.test")]);
    assert!(source(&h, Method::POST, &[], &cfg).unwrap().is_some());
    // Even then, one of the two headers must be present.
    let h = headers(&[("cookie", &cookie)]);
    assert_eq!(
        source(&h, Method::POST, &[], &cfg).unwrap_err(),
        AuthError::MissingOrigin
    );
    // And the default configuration allows no origin.
    let h = headers(&[("cookie", &cookie), ("origin", "https://any.test")]);
    assert_eq!(
        source(&h, Method::POST, &[], &CredentialConfig::default()).unwrap_err(),
        AuthError::OriginNotAllowed
    );
}

#[test]
fn a_found_token_is_then_verified() {
    let cfg = config(&[]);
    let bad = vec![format!("{}x", token("urn:q"))];
    assert!(matches!(
        source(&HeaderMap::new(), Method::GET, &bad, &cfg),
        Err(AuthError::InvalidToken(_))
    ));
    assert!(source(&HeaderMap::new(), Method::GET, &[], &cfg)
        .unwrap()
        .is_none());
}
