//! Cross-origin rules, so browser apps on other origins can subscribe and publish.
//!
//! Listed origins get their origin echoed with `Access-Control-Allow-Credentials: true` (cookies
//! work); `*` allows every origin but without credentials, since reflecting arbitrary origins on a
//! credentialed endpoint would let any site read a user's private updates. Preflights for `POST`
//! and `QUERY` (a subscription with a body) with `Authorization` and for `Last-Event-ID` are
//! answered; the `Link` header (the subscription API's cursor, discovery), `Last-Event-ID` and
//! `Mercure-Last-Event-ID` response headers are exposed to scripts.

use std::time::Duration;

use http::{header, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The CORS layer for `origins` (empty: no CORS headers at all).
pub fn layer(origins: &[String]) -> anyhow::Result<CorsLayer> {
    if origins.is_empty() {
        return Ok(CorsLayer::new());
    }
    let query = Method::from_bytes(crate::subscribe::QUERY.as_bytes())
        .map_err(|_| anyhow::anyhow!("QUERY is not a valid method name"))?;
    let base = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::OPTIONS,
            query,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CACHE_CONTROL,
            header::CONTENT_TYPE,
            HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([
            HeaderName::from_static("last-event-id"),
            HeaderName::from_static("mercure-last-event-id"),
            header::LINK,
        ])
        .max_age(Duration::from_secs(3600));
    if origins.iter().any(|o| o == "*") {
        return Ok(base.allow_origin(AllowOrigin::any()));
    }
    let list = origins
        .iter()
        .map(|o| {
            HeaderValue::from_str(o.trim_end_matches('/'))
                .map_err(|_| anyhow::anyhow!("invalid CORS origin {o:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(base
        .allow_origin(AllowOrigin::list(list))
        .allow_credentials(true))
}
