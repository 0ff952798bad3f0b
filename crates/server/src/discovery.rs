//! Discovery: the protected resource metadata document (RFC 9728) and the hub's `Link` header.
//!
//! Clients of the current specification learn the hub's resource identifier (the audience their
//! tokens must name), its authorization servers, cookie name and features from
//! `GET /.well-known/oauth-protected-resource/.well-known/mercure`. Every `401`/`403` challenge
//! points there (`resource_metadata`, see [`crate::auth`]). The document is built per request,
//! because the resource identifier may be derived from the request's host.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use http::{header, HeaderMap, HeaderValue};
use quicksilver_auth::ProtectedResourceMetadata;

use crate::client::Peer;
use crate::hub::Hub;

/// The metadata path for the default hub URL.
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource/.well-known/mercure";

/// `GET /.well-known/oauth-protected-resource/.well-known/mercure`.
pub async fn metadata(
    State(hub): State<Hub>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
) -> Response {
    let identity = match hub.auth().identity(&headers, peer.map(|Extension(p)| p)) {
        Ok(identity) => identity,
        Err(e) => return e.into_response(),
    };
    let document = ProtectedResourceMetadata {
        authorization_servers: hub.auth().authorization_servers().to_vec(),
        mercure_cookie: Some(hub.auth().access_token_cookie().to_string()),
        mercure_subscriptions: hub.settings().subscriptions,
        ..ProtectedResourceMetadata::new(identity.resource.clone())
    };
    let mut response = Json(document).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    response
}

/// A `Link` value naming the hub: `<HUB_URL>; rel="mercure"`, plus the extra target attributes
/// given (already formatted, e.g. `last-event-id="…"`). Quotes and backslashes in attribute values
/// are escaped by [`quoted`].
pub fn hub_link(hub_url: &str, attributes: &[(&str, &str)]) -> HeaderValue {
    let mut value = format!("<{hub_url}>; rel=\"mercure\"");
    for (name, v) in attributes {
        value.push_str("; ");
        value.push_str(name);
        value.push('=');
        value.push_str(&quoted(v));
    }
    HeaderValue::from_str(&value)
        .unwrap_or_else(|_| HeaderValue::from_static("</.well-known/mercure>; rel=\"mercure\""))
}

/// `value` as an HTTP quoted string, dropping characters a header cannot carry.
fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars().filter(|c| matches!(c, ' '..='~')) {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header_quotes_attributes() {
        let v = hub_link(
            "https://hub.example/.well-known/mercure",
            &[("last-event-id", "urn:uuid:1\"x"), ("type", "mercure")],
        );
        assert_eq!(
            v.to_str().unwrap(),
            "<https://hub.example/.well-known/mercure>; rel=\"mercure\"; last-event-id=\"urn:uuid:1\\\"x\"; type=\"mercure\""
        );
    }
}
