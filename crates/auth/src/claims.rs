//! The pre-standardization claims: the `mercure` object of the reference hub before 1.0.
//!
//! ```json
//! { "exp": 1700000000,
//!   "mercure": { "publish": ["*"], "subscribe": ["https://example.com/books/{id}"], "payload": {} } }
//! ```
//!
//! The same object is also accepted under the namespaced claim `https://mercure.rocks/`; when that
//! one is present (and not `null`) it wins over `mercure`, as on the reference hub. Every part is
//! optional: a token without the claim is valid and grants nothing. The registered claims and the
//! plan (`quota`, top level or inside the claim) become the grants' [`crate::Identity`].
//!
//! Claims enter as the JSON payload already authenticated by [`crate::TokenVerifier`] and leave as
//! [`Grants`]. The standardized generation (`authorization_details`, `at+jwt`) will get its own
//! module beside this one and produce the same [`Grants`].

use quicksilver_protocol::SelectorStore;
use serde::Deserialize;

use crate::error::AuthError;
use crate::grants::Grants;
use crate::identity::IdentityClaims;
use crate::verifier::to_system_time;

/// The pre-standardization token payload. `exp` and `nbf` are checked; `iss`, `sub`, `jti`, `iat`
/// are only read into the [`crate::Identity`] (no audience or issuer checks in this generation).
#[derive(Debug, Deserialize)]
pub(crate) struct MercureClaims {
    /// Expiry, seconds since the epoch (integer or fractional, as JWT `NumericDate` allows).
    #[serde(default)]
    pub(crate) exp: Option<f64>,
    /// Not-before, seconds since the epoch.
    #[serde(default)]
    pub(crate) nbf: Option<f64>,
    #[serde(default)]
    mercure: Option<MercureClaim>,
    #[serde(default, rename = "https://mercure.rocks/")]
    namespaced: Option<MercureClaim>,
    /// `iss`, `sub`, `jti`, `iat` and `quota`, for the hub's policies.
    #[serde(flatten)]
    identity: IdentityClaims,
}

#[derive(Debug, Default, Deserialize)]
struct MercureClaim {
    #[serde(default)]
    publish: Option<Vec<String>>,
    #[serde(default)]
    subscribe: Option<Vec<String>>,
    #[serde(default)]
    payload: Option<serde_json::Value>,
    /// The token's plan, when it is given inside the claim rather than at the top level.
    #[serde(default, deserialize_with = "crate::identity::lenient_string")]
    quota: Option<String>,
}

impl MercureClaims {
    /// Turns the claim into grants, refusing claims with more than `max_selectors` selectors in
    /// `publish` or `subscribe`.
    ///
    /// A selector that does not compile (a malformed URI template) is dropped: it can never match,
    /// and one bad entry should not void the rest of an otherwise valid token. (The reference hub
    /// keeps such a selector as a literal string; a topic equal to a malformed template is not a
    /// case worth a second matching rule.)
    pub(crate) fn into_grants(
        self,
        store: &SelectorStore,
        max_selectors: usize,
    ) -> Result<Grants, AuthError> {
        let claim = self.namespaced.or(self.mercure).unwrap_or_default();
        let publish = compile(store, claim.publish, "mercure.publish", max_selectors)?;
        let subscribe = compile(store, claim.subscribe, "mercure.subscribe", max_selectors)?;
        let expires_at = self.exp.and_then(to_system_time);
        let identity = self.identity.into_identity(expires_at, claim.quota);
        Ok(Grants::new(publish, subscribe, claim.payload)
            .with_expires_at(expires_at)
            .with_identity(identity))
    }
}

fn compile(
    store: &SelectorStore,
    raw: Option<Vec<String>>,
    claim: &'static str,
    max: usize,
) -> Result<Vec<quicksilver_protocol::Selector>, AuthError> {
    let raw = raw.unwrap_or_default();
    if raw.len() > max {
        return Err(AuthError::TooManySelectors { claim, max });
    }
    Ok(raw.iter().filter_map(|r| store.compile(r).ok()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn grants(v: serde_json::Value) -> Result<Grants, AuthError> {
        let claims: MercureClaims = serde_json::from_value(v).unwrap();
        claims.into_grants(&SelectorStore::default(), 3)
    }

    fn raws(s: &[quicksilver_protocol::Selector]) -> Vec<&str> {
        s.iter().map(|s| s.raw()).collect()
    }

    #[test]
    fn identity_comes_from_the_registered_claims_and_the_plan() {
        let g = grants(json!({
            "sub": "alice", "jti": "t-1", "iat": 1_700_000_000, "exp": 4_000_000_000u64,
            "mercure": {"subscribe": ["*"], "quota": "gold"}
        }))
        .unwrap();
        let id = g.identity();
        assert_eq!(id.subject.as_deref(), Some("alice"));
        assert_eq!(id.token_id.as_deref(), Some("t-1"));
        assert_eq!(id.quota.as_deref(), Some("gold"));
        assert!(id.issued_at.is_some() && id.expires_at.is_some());
        assert_eq!(id.expires_at, g.expires_at());

        // The eXeLearning token: no registered claims at all.
        let g = grants(json!({"mercure": {"subscribe": ["*"], "publish": ["*"]}})).unwrap();
        assert!(g.identity().is_anonymous());
        assert_eq!(g.identity().quota, None);
    }

    #[test]
    fn reads_the_mercure_claim() {
        let g = grants(json!({"mercure": {
            "publish": ["urn:a", "https://ex.com/{id}"],
            "subscribe": ["*"],
            "payload": {"user": "x"}
        }}))
        .unwrap();
        assert_eq!(raws(g.publish()), ["urn:a", "https://ex.com/{id}"]);
        assert!(!g.publish_all());
        assert!(matches!(g.private_access(), crate::Access::All));
        assert_eq!(g.payload(), Some(&json!({"user": "x"})));
    }

    #[test]
    fn namespaced_claim_wins() {
        let g = grants(json!({
            "mercure": {"publish": ["urn:plain"]},
            "https://mercure.rocks/": {"publish": ["urn:namespaced"]}
        }))
        .unwrap();
        assert_eq!(raws(g.publish()), ["urn:namespaced"]);

        let g = grants(json!({
            "mercure": {"publish": ["urn:plain"]},
            "https://mercure.rocks/": null
        }))
        .unwrap();
        assert_eq!(raws(g.publish()), ["urn:plain"]);
    }

    #[test]
    fn missing_parts_grant_nothing() {
        for v in [
            json!({}),
            json!({"mercure": null}),
            json!({"mercure": {}}),
            json!({"mercure": {"publish": null, "payload": null}}),
        ] {
            let g = grants(v).unwrap();
            assert!(g.publish().is_empty() && matches!(g.private_access(), crate::Access::None));
            assert!(g.payload().is_none());
        }
    }

    #[test]
    fn too_many_selectors_are_refused() {
        let e = grants(json!({"mercure": {"subscribe": ["a", "b", "c", "d"]}})).unwrap_err();
        assert_eq!(
            e,
            AuthError::TooManySelectors {
                claim: "mercure.subscribe",
                max: 3
            }
        );
        let e = grants(json!({"https://mercure.rocks/": {"publish": ["a", "b", "c", "d"]}}))
            .unwrap_err();
        assert!(matches!(
            e,
            AuthError::TooManySelectors {
                claim: "mercure.publish",
                ..
            }
        ));
        grants(json!({"mercure": {"publish": ["a", "b", "c"]}})).unwrap();
    }

    #[test]
    fn malformed_templates_are_dropped() {
        let g = grants(json!({"mercure": {"subscribe": ["https://ex.com/{", "urn:ok"]}})).unwrap();
        assert_eq!(raws(g.private_access().selectors()), ["urn:ok"]);
    }

    #[test]
    fn wrong_shapes_do_not_parse() {
        for v in [
            json!({"mercure": "everything"}),
            json!({"mercure": {"publish": "*"}}),
            json!({"mercure": {"subscribe": [1]}}),
            json!({"exp": "tomorrow"}),
        ] {
            assert!(serde_json::from_value::<MercureClaims>(v).is_err());
        }
    }
}
