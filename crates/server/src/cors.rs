//! Cross-origin rules, so browser apps on other origins can subscribe and publish.
//!
//! Listed origins get their origin echoed with `Access-Control-Allow-Credentials: true` (cookies
//! work); `*` allows every origin but without credentials, since reflecting arbitrary origins on a
//! credentialed endpoint would let any site read a user's private updates. Preflights for `POST`
//! and `QUERY` (a subscription with a body) with `Authorization` and for `Last-Event-ID` are
//! answered; the `Link` header (the subscription API's cursor, discovery), `Last-Event-ID` and
//! `Mercure-Last-Event-ID` response headers are exposed to scripts.

use std::time::Duration;

use std::future::Future as _;

use http::{header, HeaderMap, HeaderName, HeaderValue, Method};
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

/// The headers a [`CorsLayer`] adds to the answer of a `POST`, for answers made outside the router
/// (the lean publish path, see [`crate::publish`]). The layer itself computes them, so both paths
/// answer alike by construction: it is asked about a request with the same method and `Origin`
/// (the only parts of a request our rules read) whose answer is empty, and what it put on that
/// answer is merged into the real one as the layer merges it.
pub struct CorsHeaders {
    /// The layer around a service answering every request with an empty response.
    cors: parking_lot::Mutex<tower_http::cors::Cors<EmptyAnswer>>,
    /// What it adds for a request without `Origin` (a back end publishing): the same every time.
    without_origin: HeaderMap,
}

impl std::fmt::Debug for CorsHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CorsHeaders").finish_non_exhaustive()
    }
}

impl CorsHeaders {
    /// The headers `layer` adds.
    pub fn new(layer: &CorsLayer) -> Self {
        let mut cors = tower::Layer::layer(layer, EmptyAnswer);
        let without_origin = Self::ask(&mut cors, None);
        Self {
            cors: parking_lot::Mutex::new(cors),
            without_origin,
        }
    }

    fn ask(
        cors: &mut tower_http::cors::Cors<EmptyAnswer>,
        origin: Option<&HeaderValue>,
    ) -> HeaderMap {
        let mut request = http::Request::new(());
        *request.method_mut() = Method::POST;
        if let Some(origin) = origin {
            request.headers_mut().insert(header::ORIGIN, origin.clone());
        }
        let answer = tower::Service::call(cors, request);
        // Every rule we configure is decided at once: the future is ready on its first poll.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::pin::pin!(answer).poll(&mut cx) {
            std::task::Poll::Ready(Ok(response)) => response.into_parts().0.headers,
            std::task::Poll::Ready(Err(never)) => match never {},
            std::task::Poll::Pending => HeaderMap::new(),
        }
    }

    /// Adds to `response` what the layer adds to the answer of a `POST` with `request_headers`.
    pub fn apply(&self, request_headers: &HeaderMap, response: &mut HeaderMap) {
        match request_headers.get(header::ORIGIN) {
            None => merge(&self.without_origin, response),
            origin => merge(&Self::ask(&mut self.cors.lock(), origin), response),
        }
    }
}

/// Merges `added` into `response` as the CORS layer merges its headers, in its order (the empty
/// answer holds them in it): `Vary` joins the handler's, the others replace theirs.
fn merge(added: &HeaderMap, response: &mut HeaderMap) {
    for name in added.keys() {
        let mut values = added.get_all(name).iter();
        if name != header::VARY {
            let Some(first) = values.next() else {
                continue;
            };
            response.insert(name, first.clone());
        }
        for value in values {
            response.append(name, value.clone());
        }
    }
}

/// A service answering every request with an empty response (see [`CorsHeaders`]).
#[derive(Clone, Copy, Debug)]
pub struct EmptyAnswer;

impl tower::Service<http::Request<()>> for EmptyAnswer {
    type Response = http::Response<()>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<http::Response<()>, std::convert::Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<()>) -> Self::Future {
        std::future::ready(Ok(http::Response::new(())))
    }
}
