//! Who a verified token names: the registered claims the hub's policies count and match by.
//!
//! Grants say what a token allows; an [`Identity`] says whose it is: the issuer (`iss`), the
//! subject (`sub`), the token's own id (`jti`), when it was issued (`iat`) and when it expires
//! (`exp`), and its plan (a `quota` string claim). Rate limits and connection caps count by
//! subject and match rules by issuer, subject or plan; revocation matches live connections and new
//! requests by token id, or by subject and issue time.
//!
//! Both claim generations fill it from the signed payload once, when the token is verified; it
//! travels inside the [`Grants`](crate::Grants) as an `Arc`, so a cached verification and every
//! subscriber authenticated by the same token share one copy. Strings a token carries are bounded
//! by the token's own size limit; nothing here is read from an unsigned part of the request.

use std::sync::Arc;
use std::time::SystemTime;

use serde::Deserialize;

use crate::verifier::to_system_time;

/// The longest claim value kept (bytes). A signed token is the issuer's word, but a policy key
/// (rate-limit counters, revocation entries) built from a claim must stay small: a longer value is
/// not kept, as if the claim were absent.
pub const MAX_CLAIM_BYTES: usize = 256;

/// The registered claims of a verified token, as policies use them. Every part is optional: a
/// token without `sub` has no subject (policies then count by `jti`, else the client address).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// `iss`.
    pub issuer: Option<Arc<str>>,
    /// `sub`.
    pub subject: Option<Arc<str>>,
    /// `jti`.
    pub token_id: Option<Arc<str>>,
    /// `iat`.
    pub issued_at: Option<SystemTime>,
    /// `exp`.
    pub expires_at: Option<SystemTime>,
    /// The token's plan: a `quota` string claim, top level or inside the `mercure` claim.
    pub quota: Option<Arc<str>>,
}

impl Identity {
    /// Whether the token names nothing a policy could count by (no subject and no id).
    pub fn is_anonymous(&self) -> bool {
        self.subject.is_none() && self.token_id.is_none()
    }
}

/// The registered claims as read from a payload (unknown claims ignored; a claim of the wrong type
/// makes the whole payload malformed only where the generation already requires it, so these are
/// read leniently: a non-string `sub` is simply not kept).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct IdentityClaims {
    #[serde(default, deserialize_with = "lenient_string")]
    iss: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    sub: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    jti: Option<String>,
    #[serde(default, deserialize_with = "lenient_number")]
    iat: Option<f64>,
    #[serde(default, deserialize_with = "lenient_string")]
    quota: Option<String>,
}

impl IdentityClaims {
    /// The identity, with `exp` as verified and the plan from `nested_quota` (the `mercure`
    /// claim's) when the top level has none.
    pub(crate) fn into_identity(
        self,
        expires_at: Option<SystemTime>,
        nested_quota: Option<String>,
    ) -> Identity {
        Identity {
            issuer: kept(self.iss),
            subject: kept(self.sub),
            token_id: kept(self.jti),
            issued_at: self.iat.and_then(to_system_time),
            expires_at,
            quota: kept(self.quota.or(nested_quota)),
        }
    }
}

fn kept(value: Option<String>) -> Option<Arc<str>> {
    value.as_deref().and_then(kept_str)
}

/// A claim value as kept: non-empty and at most [`MAX_CLAIM_BYTES`].
pub(crate) fn kept_str(value: &str) -> Option<Arc<str>> {
    (!value.is_empty() && value.len() <= MAX_CLAIM_BYTES).then(|| Arc::from(value))
}

pub(crate) fn lenient_string<'de, D>(d: D) -> Result<Option<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    })
}

fn lenient_number<'de, D>(d: D) -> Result<Option<f64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(serde_json::Value::deserialize(d)?.as_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn reads_registered_claims_leniently() {
        let claims: IdentityClaims = serde_json::from_str(
            r#"{"iss":"https://idp","sub":"alice","jti":"t-1","iat":1700000000,"quota":"gold","x":1}"#,
        )
        .unwrap();
        let id = claims.into_identity(None, None);
        assert_eq!(id.subject.as_deref(), Some("alice"));
        assert_eq!(id.token_id.as_deref(), Some("t-1"));
        assert_eq!(id.issuer.as_deref(), Some("https://idp"));
        assert_eq!(id.quota.as_deref(), Some("gold"));
        assert_eq!(
            id.issued_at,
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert!(!id.is_anonymous());

        let odd: IdentityClaims =
            serde_json::from_str(r#"{"sub":42,"jti":"","iat":"soon"}"#).unwrap();
        let id = odd.into_identity(None, Some("silver".into()));
        assert!(
            id.is_anonymous(),
            "a non-string sub and an empty jti name nobody"
        );
        assert_eq!(id.issued_at, None);
        assert_eq!(id.quota.as_deref(), Some("silver"));
    }

    #[test]
    fn overlong_values_are_not_kept() {
        let long = "a".repeat(MAX_CLAIM_BYTES + 1);
        let claims: IdentityClaims =
            serde_json::from_str(&format!(r#"{{"sub":"{long}"}}"#)).unwrap();
        assert_eq!(claims.into_identity(None, None).subject, None);
    }
}
