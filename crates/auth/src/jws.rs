//! Reading a compact JWS before its signature is checked: the protected header, and one claim of
//! the payload used as a selection hint.
//!
//! Unverified data only ever *selects* among trusted things — which generation's rules apply
//! (`typ`), which trusted issuer's keys are tried (`iss`), which of those keys (`kid`) and which
//! allowed algorithm (`alg`). It never grants anything, and never introduces key material: the
//! `jwk`, `jku`, `x5u` and `x5c` header parameters are not read at all.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::TokenRejection;

/// The `typ` every current-generation access token carries (RFC 9068), without the optional
/// `application/` prefix.
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// The protected header members read here. Unknown members are ignored; a member of the wrong
/// type makes the header malformed.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct JoseHeader {
    #[serde(default)]
    pub(crate) alg: Option<String>,
    #[serde(default)]
    pub(crate) typ: Option<String>,
    #[serde(default)]
    pub(crate) kid: Option<String>,
    #[serde(default)]
    pub(crate) crit: Option<serde_json::Value>,
}

/// Splits a compact JWS into its three base64url parts.
fn parts(token: &str) -> Result<[&str; 3], TokenRejection> {
    let mut it = token.split('.');
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some(h), Some(p), Some(s), None) => Ok([h, p, s]),
        _ => Err(TokenRejection::Malformed),
    }
}

/// Decodes a base64url JSON *object* (serde would also fill a struct from an array, by position).
fn decode_part<T: DeserializeOwned>(part: &str) -> Result<T, TokenRejection> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenRejection::Malformed)?;
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|_| TokenRejection::Malformed)?;
    from_object(object)
}

/// Reads a struct from a JSON object.
pub(crate) fn from_object<T: DeserializeOwned>(
    object: serde_json::Map<String, serde_json::Value>,
) -> Result<T, TokenRejection> {
    T::deserialize(serde_json::Value::Object(object)).map_err(|_| TokenRejection::Malformed)
}

/// The token's protected header.
pub(crate) fn header(token: &str) -> Result<JoseHeader, TokenRejection> {
    decode_part(parts(token)?[0])
}

/// The payload's `iss` claim, unverified: `Ok(None)` when absent.
pub(crate) fn unverified_issuer(token: &str) -> Result<Option<String>, TokenRejection> {
    #[derive(Deserialize)]
    struct Peek {
        #[serde(default)]
        iss: Option<String>,
    }
    Ok(decode_part::<Peek>(parts(token)?[1])?.iss)
}

/// Whether the (unverified) payload has a member named `claim`; `false` when unreadable.
pub(crate) fn has_claim(token: &str, claim: &str) -> bool {
    parts(token)
        .ok()
        .and_then(|[_, payload, _]| URL_SAFE_NO_PAD.decode(payload).ok())
        .and_then(|bytes| {
            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes).ok()
        })
        .is_some_and(|object| object.contains_key(claim))
}

/// Whether a `typ` value names a JWT access token: `at+jwt` or `application/at+jwt`, compared
/// case-insensitively (RFC 7515 §4.1.9, as the specification's "Token Validation" says).
pub fn is_access_token_type(typ: &str) -> bool {
    const PREFIX: &str = "application/";
    let bare = match typ.get(..PREFIX.len()) {
        Some(head) if head.eq_ignore_ascii_case(PREFIX) => &typ[PREFIX.len()..],
        _ => typ,
    };
    bare.eq_ignore_ascii_case(ACCESS_TOKEN_TYPE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn typ_comparison() {
        for yes in [
            "at+jwt",
            "AT+JWT",
            "At+Jwt",
            "application/at+jwt",
            "Application/AT+jwt",
        ] {
            assert!(is_access_token_type(yes), "{yes}");
        }
        for no in [
            "JWT",
            "jwt",
            "",
            "at+jwt ",
            "application/",
            "application/jwt",
            "app/at+jwt",
            "application/application/at+jwt",
            "aé+jwt",
        ] {
            assert!(!is_access_token_type(no), "{no}");
        }
    }

    #[test]
    fn header_and_issuer_peeks() {
        let token = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"RS256","typ":"at+jwt","kid":"k1","jwk":{"kty":"oct"}}"#),
            b64(r#"{"iss":"https://as.example.com","exp":1}"#)
        );
        let h = header(&token).unwrap();
        assert_eq!(h.alg.as_deref(), Some("RS256"));
        assert_eq!(h.typ.as_deref(), Some("at+jwt"));
        assert_eq!(h.kid.as_deref(), Some("k1"));
        assert!(h.crit.is_none());
        assert_eq!(
            unverified_issuer(&token).unwrap().as_deref(),
            Some("https://as.example.com")
        );

        let no_iss = format!("{}.{}.sig", b64(r#"{"alg":"HS256"}"#), b64("{}"));
        assert_eq!(unverified_issuer(&no_iss).unwrap(), None);
        assert!(has_claim(&token, "exp"));
        assert!(!has_claim(&token, "authorization_details"));
        assert!(!has_claim("garbage", "exp"));
    }

    #[test]
    fn malformed_tokens() {
        let ok_header = b64(r#"{"alg":"HS256"}"#);
        for bad in [
            String::new(),
            "a.b".to_string(),
            "a.b.c.d".to_string(),
            format!("{ok_header}.!!!.sig"),
            format!("{}.{}.sig", b64(r#"{"typ":1}"#), b64("{}")),
            format!("{}.{}.sig", b64("[]"), b64("{}")),
            format!(
                "{ok_header}.{}.sig",
                b64(r#"["https://positional.example"]"#)
            ),
            format!("{ok_header}.{}.sig", b64(r#"{"iss":7}"#)),
            format!("{}=.{}.sig", ok_header, b64("{}")),
        ] {
            let h = header(&bad);
            let i = unverified_issuer(&bad);
            assert!(h.is_err() || i.is_err(), "{bad:?} parsed: {h:?} / {i:?}");
        }
    }
}
