//! Claims check: verifying a subscriber's token and deciding whether it may read an update, for a
//! pre-standardization (legacy `mercure` claim) HS256 token and a current `at+jwt` access token
//! with authorization details.
//!
//! Run: `cargo bench -p quicksilver-auth --bench claims`.

use std::hint::black_box;
use std::time::{Duration, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use quicksilver_auth::{
    AccessTokenOptions, AccessTokenVerifier, HubIdentity, KeySpec, TokenVerifier, TrustedIssuer,
    VerifierOptions, AUTHORIZATION_DETAIL_TYPE,
};
use quicksilver_protocol::SelectorStore;
use serde_json::json;

const SECRET: &str = "!ChangeThisMercureHubJWTSecretKey!";
const ISSUER: &str = "https://localhost";
const HUB: &str = "https://localhost/.well-known/mercure";
const NOW: u64 = 1_700_000_000;

fn mint(typ: Option<&str>, claims: &serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.typ = typ.map(str::to_string);
    encode(
        &header,
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("token mints")
}

fn claims(c: &mut Criterion) {
    let now = UNIX_EPOCH + Duration::from_secs(NOW);
    let topics = vec!["https://example.com/books/42".to_string()];
    let store = SelectorStore::default();
    let key = || KeySpec::new(SECRET, "HS256").expect("key");
    let mut g = c.benchmark_group("claims");

    let legacy = TokenVerifier::new(key(), VerifierOptions::default());
    let legacy_token = mint(
        Some("JWT"),
        &json!({"exp": NOW + 300, "mercure": {"subscribe": [
            "https://example.com/users/7", "https://example.com/books/{id}"]}}),
    );
    g.bench_function("legacy/verify+check", |b| {
        b.iter(|| {
            let grants = legacy
                .verify_at(&store, black_box(&legacy_token), now)
                .expect("legacy token verifies");
            grants.private_access().allows(&store, &topics)
        })
    });
    let grants = legacy
        .verify_at(&store, &legacy_token, now)
        .expect("legacy token verifies");
    g.bench_function("legacy/check_only", |b| {
        b.iter(|| black_box(&grants).private_access().allows(&store, &topics))
    });

    let issuer = TrustedIssuer::new(ISSUER, key()).expect("issuer");
    let current =
        AccessTokenVerifier::new([issuer], AccessTokenOptions::default()).expect("verifier");
    let at_token = mint(
        Some("at+jwt"),
        &json!({
            "iss": ISSUER, "aud": HUB, "sub": "urn:uuid:bb3de268",
            "client_id": ISSUER, "iat": NOW - 10, "exp": NOW + 300, "jti": "urn:uuid:e70ff8d7",
            "authorization_details": [{
                "type": AUTHORIZATION_DETAIL_TYPE, "actions": ["subscribe"],
                "topics": [{"match": "https://example.com/users/7", "match_type": "exact"},
                           {"match": "https://example.com/books/:id", "match_type": "urlpattern"}]
            }]
        }),
    );
    let hub = HubIdentity::new(HUB);
    g.bench_function("at_jwt/verify+check", |b| {
        b.iter(|| {
            let verified = current
                .verify_at(&store, black_box(&at_token), &hub, now)
                .expect("access token verifies");
            verified.grants.private_access().allows(&store, &topics)
        })
    });
    g.finish();
}

criterion_group!(benches, claims);
criterion_main!(benches);
