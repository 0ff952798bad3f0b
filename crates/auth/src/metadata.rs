//! Protected resource metadata (RFC 9728): where it lives and what it says.
//!
//! The specification ("Protected Resource Metadata") makes the hub an OAuth 2.0 protected
//! resource that should publish a metadata document at a URL derived from its resource identifier,
//! and point clients at it from every `WWW-Authenticate: Bearer` challenge (the server's).
//! This module derives that URL and models the document; the server serves it. Nothing here does
//! I/O.

use serde::Serialize;

use crate::details::AUTHORIZATION_DETAIL_TYPE;

/// The RFC 9728 well-known path segment inserted into the resource identifier.
pub const PROTECTED_RESOURCE_WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// The metadata URL for `resource` (RFC 9728 §3.1): the well-known segment goes between the host
/// and the path, a lone `/` path is dropped, and the query is kept. So the resource
/// `https://hub.example.com/.well-known/mercure` has its metadata at
/// `https://hub.example.com/.well-known/oauth-protected-resource/.well-known/mercure`.
///
/// `None` when `resource` is not an absolute `https` (or, for local development, `http`) URL with
/// a host and without a fragment, as RFC 9728 requires of resource identifiers.
pub fn protected_resource_metadata_url(resource: &str) -> Option<String> {
    let url = url::Url::parse(resource).ok()?;
    if !matches!(url.scheme(), "https" | "http") || url.fragment().is_some() {
        return None;
    }
    let host = url.host_str()?;
    let mut out = format!("{}://{}", url.scheme(), host);
    if let Some(port) = url.port() {
        out.push(':');
        out.push_str(&port.to_string());
    }
    out.push_str(PROTECTED_RESOURCE_WELL_KNOWN);
    if url.path() != "/" {
        out.push_str(url.path());
    }
    if let Some(query) = url.query() {
        out.push('?');
        out.push_str(query);
    }
    Some(out)
}

/// The protected resource metadata document, serialized as JSON by the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProtectedResourceMetadata {
    /// The hub's resource identifier: what tokens must carry in `aud`.
    pub resource: String,
    /// Issuer identifiers of the authorization servers issuing tokens for the hub; omitted when
    /// empty (self-issued tokens).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub authorization_servers: Vec<String>,
    /// Always the Mercure authorization detail type.
    pub authorization_details_types_supported: Vec<String>,
    /// The RFC 6750 methods accepted: `header` (the cookie is not an RFC 6750 method).
    pub bearer_methods_supported: Vec<String>,
    /// The cookie name accepted besides the header; omitted when cookies are not accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mercure_cookie: Option<String>,
    /// Whether the hub implements active subscriptions; omitted when it does not.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub mercure_subscriptions: bool,
}

impl ProtectedResourceMetadata {
    /// The document for `resource` with the members this crate knows: the detail type and the
    /// `header` bearer method. The server fills in the rest.
    pub fn new(resource: impl Into<String>) -> Self {
        Self {
            resource: resource.into(),
            authorization_servers: Vec::new(),
            authorization_details_types_supported: vec![AUTHORIZATION_DETAIL_TYPE.to_string()],
            bearer_methods_supported: vec!["header".to_string()],
            mercure_cookie: None,
            mercure_subscriptions: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metadata_url_inserts_the_well_known_segment() {
        let cases = [
            (
                "https://hub.example.com/.well-known/mercure",
                Some("https://hub.example.com/.well-known/oauth-protected-resource/.well-known/mercure"),
            ),
            (
                "https://localhost:8443/hub?x=1",
                Some("https://localhost:8443/.well-known/oauth-protected-resource/hub?x=1"),
            ),
            (
                "https://hub.example.com/",
                Some("https://hub.example.com/.well-known/oauth-protected-resource"),
            ),
            (
                "https://hub.example.com",
                Some("https://hub.example.com/.well-known/oauth-protected-resource"),
            ),
            (
                "http://localhost/.well-known/mercure",
                Some("http://localhost/.well-known/oauth-protected-resource/.well-known/mercure"),
            ),
            ("https://hub.example.com/#frag", None),
            ("/.well-known/mercure", None),
            ("urn:example:hub", None),
            ("ftp://hub.example.com/x", None),
        ];
        for (resource, want) in cases {
            assert_eq!(
                protected_resource_metadata_url(resource).as_deref(),
                want,
                "{resource}"
            );
        }
    }

    #[test]
    fn document_omits_what_is_not_offered() {
        let doc = ProtectedResourceMetadata::new("https://hub.example.com/.well-known/mercure");
        assert_eq!(
            serde_json::to_value(&doc).unwrap(),
            json!({
                "resource": "https://hub.example.com/.well-known/mercure",
                "authorization_details_types_supported": ["https://mercure.rocks/authorization-detail"],
                "bearer_methods_supported": ["header"],
            })
        );
        let doc = ProtectedResourceMetadata {
            authorization_servers: vec!["https://as.example.com".into()],
            mercure_cookie: Some("__Secure-mercure_access_token".into()),
            mercure_subscriptions: true,
            ..doc
        };
        let v = serde_json::to_value(&doc).unwrap();
        assert_eq!(
            v["authorization_servers"],
            json!(["https://as.example.com"])
        );
        assert_eq!(v["mercure_cookie"], "__Secure-mercure_access_token");
        assert_eq!(v["mercure_subscriptions"], true);
    }
}
