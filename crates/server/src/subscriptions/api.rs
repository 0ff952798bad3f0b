//! `GET /.well-known/mercure/subscriptions[/…]`: the subscription API, answering for the whole
//! cluster from the registry.
//!
//! The request needs a token whose subscribe grants match the request's path (taken as a topic,
//! query excluded); no token is `401`, a token without such a grant `403`. The token's generation
//! picks the shape (see [`super`]): current tokens get `application/json` documents with the
//! reconciliation cursor on the `Link` header, exactly as the reference hub sends it
//! (`</.well-known/mercure>; rel="mercure"; last-event-id="…"; type="mercure";
//! content-type="application/json"`); legacy tokens get `application/ld+json` documents with
//! `lastEventID` at their root. Both carry the cursor as `ETag` too, and a matching
//! `If-None-Match` is answered `304`: any change of the subscriptions is a subscription event,
//! which moves the cursor. An unknown subscription is `404`.
//!
//! A list is served in pages of at most `--subscriptions-page-size` documents, in id order: a page
//! that is not the last carries `Link: <…?after=ID>; rel="next"`, whose `after` names the page's
//! last id, so however many subscriptions the cluster holds, one response stays bounded.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use quicksilver_auth::Generation;
use serde_json::{json, Value};

use super::document::{
    document_generation, in_collection, parse_api_path, subscriptions_path, ApiTarget,
    LEGACY_CONTEXT,
};
use crate::client::Peer;
use crate::discovery::hub_link;
use crate::error::HubError;
use crate::hub::Hub;

/// Handles a subscription API request.
pub async fn subscriptions(
    State(hub): State<Hub>,
    peer: Option<Extension<Peer>>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, HubError> {
    let Some(subscriptions) = hub.subscriptions() else {
        return Err(HubError::NotFound(
            "the subscription API is not enabled on this hub".into(),
        ));
    };
    let identity = hub.auth().identity(&headers, peer.map(|Extension(p)| p))?;
    let Some(subscriber) = hub
        .auth()
        .subscriber(&method, &headers, uri.query(), &identity)?
    else {
        return Err(hub
            .auth()
            .token_required(&identity, "a token is required for the subscription API"));
    };
    let path = uri.path();
    let private_access = subscriber.grants.private_access();
    if !private_access.allows(hub.selectors(), &[path.to_string()]) {
        return Err(hub.auth().forbidden(
            &identity,
            "the token does not allow reading these subscriptions",
        ));
    }
    // Documents are served in the shape of the token's generation.
    let generation = subscriber.generation;
    let rest = path.strip_prefix(&subscriptions_path()).unwrap_or("/-");
    let target = parse_api_path(rest, generation).ok_or_else(|| {
        // A current path names its matcher type first; an unknown one is a malformed request, as
        // on the reference hub, not a missing resource.
        let match_type = rest.trim_start_matches('/').split('/').next().unwrap_or("");
        if generation == Generation::Current
            && !match_type.is_empty()
            && !matches!(match_type, "exact" | "urlpattern")
        {
            HubError::BadRequest(format!("unknown matcher type {match_type:?}"))
        } else {
            HubError::NotFound("no such subscription or collection".into())
        }
    })?;

    // The cursor is read before the registry, so a change made in between shows as a newer event
    // the client will also receive by subscribing from this cursor.
    let cursor = hub
        .last_event_id()
        .unwrap_or_else(|| quicksilver_protocol::EARLIEST.to_string());
    let etag = format!("\"{}\"", cursor.replace(['"', '\\'], ""));
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return Ok(with_headers(
            StatusCode::NOT_MODIFIED.into_response(),
            generation,
            &cursor,
            &etag,
        ));
    }

    let records = subscriptions
        .registry()
        .list()
        .await
        .map_err(|e| HubError::Unavailable(e.to_string()))?;
    let mut documents: Vec<(String, Value)> = records
        .into_iter()
        .filter_map(|r| {
            let doc: Value = serde_json::from_str(&r.document).ok()?;
            (document_generation(&doc) == generation).then_some((r.id, doc))
        })
        .collect();
    documents.sort_by(|a, b| a.0.cmp(&b.0));

    let mut next_page = None;
    let body = match &target {
        ApiTarget::One(id) => {
            let Some((_, mut doc)) = documents.into_iter().find(|(d, _)| d == id) else {
                return Err(HubError::NotFound("no such subscription".into()));
            };
            if generation == Generation::Legacy {
                doc["lastEventID"] = Value::String(cursor.clone());
            }
            doc
        }
        ApiTarget::All | ApiTarget::Collection(_) => {
            // One page: the documents after the `after` id, in id order, at most the page size.
            let after = query_param(uri.query(), "after");
            let page_size = hub.settings().subscriptions_page_size;
            let mut page: Vec<(String, Value)> = documents
                .into_iter()
                .filter(|(id, _)| match &target {
                    ApiTarget::Collection(c) => in_collection(id, c),
                    _ => true,
                })
                .filter(|(id, _)| after.as_deref().is_none_or(|after| id.as_str() > after))
                .take(page_size + 1)
                .collect();
            if page.len() > page_size {
                page.truncate(page_size);
                next_page = page.last().map(|(id, _)| id.clone());
            }
            let list: Vec<Value> = page
                .into_iter()
                .map(|(_, mut doc)| {
                    // The collection's root carries the context once.
                    if let Some(o) = doc.as_object_mut() {
                        o.remove("@context");
                    }
                    doc
                })
                .collect();
            let id = match &target {
                ApiTarget::Collection(c) => c.clone(),
                _ => subscriptions_path(),
            };
            match generation {
                Generation::Current => json!({
                    "id": id,
                    "type": "subscriptions",
                    "subscriptions": list,
                }),
                Generation::Legacy => json!({
                    "@context": LEGACY_CONTEXT,
                    "id": id,
                    "type": "Subscriptions",
                    "lastEventID": cursor,
                    "subscriptions": list,
                }),
            }
        }
    };
    let mut response = with_headers(
        (StatusCode::OK, body.to_string()).into_response(),
        generation,
        &cursor,
        &etag,
    );
    if let Some(after) = next_page {
        let next = format!(
            "<{path}?after={}>; rel=\"next\"",
            percent_encoding::utf8_percent_encode(&after, percent_encoding::NON_ALPHANUMERIC)
        );
        if let Ok(v) = HeaderValue::from_str(&next) {
            response.headers_mut().append(header::LINK, v);
        }
    }
    Ok(response)
}

/// The first value of query parameter `name`, decoded.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn with_headers(
    mut response: Response,
    generation: Generation,
    cursor: &str,
    etag: &str,
) -> Response {
    let headers = response.headers_mut();
    let (content_type, link) = match generation {
        Generation::Current => (
            "application/json",
            // Relative, as the reference hub sends it: the hub on the request's own origin.
            hub_link(
                crate::HUB_PATH,
                &[
                    ("last-event-id", cursor),
                    ("type", super::EVENT_TYPE),
                    ("content-type", "application/json"),
                ],
            ),
        ),
        Generation::Legacy => ("application/ld+json", hub_link(crate::HUB_PATH, &[])),
    };
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::LINK, link);
    if let Ok(v) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, v);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("must-revalidate"),
    );
    response
}
