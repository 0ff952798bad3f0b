//! `POST /.well-known/mercure`: accept an update from a publisher.
//!
//! Order of checks, as on the reference hub: the token first (401 without a valid one), then the
//! rate limit of the policies (429, see [`crate::policies::limits`]), then the content type and
//! the form (400/413/415), then the publish grant for every topic (403). The
//! update is acknowledged with its id only once the transport has stored it; a transport that
//! cannot store answers 503, never 200.
//!
//! The body is read by the handler, after the token and the content type were checked, rather than
//! by an extractor before them: an unauthenticated client cannot make the hub buffer a body. A
//! declared `Content-Length` over the limit is refused before anything is read, and the whole body
//! must arrive within [`BODY_READ_TIMEOUT`]; otherwise a client declaring a large body and sending
//! it a byte at a time (or never) would hold its connection and task for as long as it liked.
//!
//! The whole request runs in the `mercure.publish` trace span (see [`crate::telemetry`]).
//!
//! # Two ways in, one publish
//! A publish arrives through the router ([`publish`], the handler) or, for a plain HTTP/1.1
//! request with a `Content-Length` body, on the lean path of [`crate::sse::accept`], which reads
//! its head and body itself and never builds a hyper connection or goes through the router (a
//! publisher on a kept-alive connection pays for neither, request after request). Both call
//! [`answer`] (the token, the limits, the form, the transport, the trace span, the answer);
//! the body is a [`PublishBody`], read only when [`answer`] asks for it: hyper's body, or
//! [`SocketBody`], the connection's buffer and socket, under the same limit, deadline and
//! answers. What the router's layers add to an answer, [`LeanPublish`] adds on the lean path: the
//! CORS headers, computed by the same CORS layer ([`crate::cors::CorsHeaders`]), and the
//! response count of [`crate::metrics::count_response`]. The trace span is [`answer`]'s own, so
//! it is exported alike from both paths when OpenTelemetry is on. So a publish is answered byte
//! for byte alike on both paths (the `lean_publish` tests compare them).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use quicksilver_protocol::{parse_publish_form, publish::PublishError};
use tracing::Instrument;

use crate::client::{client_ip, Peer};
use crate::cors::CorsHeaders;
use crate::error::HubError;
use crate::hub::Hub;
use crate::policies::limits::RequestKind;

/// Time a publish request's body has to arrive, once its head was read: ample for the 1 MiB default
/// body limit over a slow link, short enough that slow-body clients cannot pile up.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How much more room the lean path's body read makes at a time (see [`SocketBody`]).
const BODY_READ_CHUNK: usize = 64 * 1024;

/// Handles a publish request that came through the router.
pub async fn publish(
    State(hub): State<Hub>,
    peer: Option<Extension<Peer>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    let peer = peer.map(|Extension(peer)| peer);
    answer(&hub, peer, &method, &headers, query.as_deref(), body).await
}

/// Where a publish request's body comes from: hyper's body, or the lean path's socket. Read only
/// once the publisher is authorized and within its rate.
pub(crate) trait PublishBody {
    /// Reads the whole body, at most `limit` bytes: 413 over it (declared or actual), 400 if it
    /// breaks off, 408 if it does not arrive within [`BODY_READ_TIMEOUT`].
    async fn read(self, headers: &HeaderMap, limit: usize) -> Result<Bytes, HubError>;
}

impl PublishBody for Body {
    async fn read(self, headers: &HeaderMap, limit: usize) -> Result<Bytes, HubError> {
        read_body(headers, self, limit).await
    }
}

/// The publish itself, on either path, in its trace span: the answer before what the router's
/// layers add (CORS headers, the response count; see [`LeanPublish`] for the lean path's).
pub(crate) async fn answer(
    hub: &Hub,
    peer: Option<Peer>,
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
    body: impl PublishBody,
) -> Response {
    let span = crate::telemetry::publish_span(headers);
    let outcome = authorize_and_store(hub, peer, method, headers, query, body)
        .instrument(span.clone())
        .await;
    crate::telemetry::record_outcome(&span, &outcome);
    outcome.into_response()
}

/// What the lean HTTP/1.1 path ([`crate::sse::accept`]) needs to publish outside the router: the
/// hub, and the CORS headers the router's layer would add. The response count is kept here as the
/// router's middleware keeps it.
#[derive(Debug)]
pub struct LeanPublish {
    hub: Hub,
    cors: CorsHeaders,
    /// The count of `200` answers, looked up once (the others are rare enough to look up).
    stored: std::sync::OnceLock<prometheus_client::metrics::counter::Counter>,
}

impl LeanPublish {
    /// Publishing to `hub`, with the router's CORS layer `cors`.
    pub fn new(hub: Hub, cors: &tower_http::cors::CorsLayer) -> Self {
        Self {
            hub,
            cors: CorsHeaders::new(cors),
            stored: std::sync::OnceLock::new(),
        }
    }

    /// The largest body the lean path reads: a publish declaring more goes to the router.
    pub fn max_body(&self) -> u64 {
        self.hub.settings().max_body_size as u64
    }

    /// Answers a `POST` of the hub path as the router would: [`answer`], then the CORS headers and
    /// the response count of the router's layers.
    pub(crate) async fn answer(
        &self,
        peer: Peer,
        request: &http::Request<()>,
        body: impl PublishBody,
    ) -> Response {
        let headers = request.headers();
        let method = request.method();
        let mut response = answer(
            &self.hub,
            Some(peer),
            method,
            headers,
            request.uri().query(),
            body,
        )
        .await;
        let status = response.status();
        if status == StatusCode::OK {
            self.stored
                .get_or_init(|| {
                    let route = crate::HUB_PATH.to_string();
                    crate::metrics::response_counter(&self.hub, route, method, status)
                })
                .inc();
        } else {
            let route = crate::HUB_PATH.to_string();
            crate::metrics::count_response(&self.hub, route, method, status);
        }
        self.cors.apply(headers, response.headers_mut());
        response
    }
}

async fn authorize_and_store(
    hub: &Hub,
    peer: Option<Peer>,
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
    body: impl PublishBody,
) -> Result<Response, HubError> {
    let identity = hub.auth().identity(headers, peer)?;
    let publisher = hub.auth().publisher(method, headers, query, &identity)?;
    // Counted before the body is read: a publisher over its rate costs the hub no more than this.
    let client = client_ip(peer, headers, &hub.settings().trusted_proxies)
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    hub.limits()
        .check_rate(
            &hub.policies().limits,
            RequestKind::Publish,
            Some(publisher.grants.identity()),
            client,
        )
        .await?;

    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(HubError::UnsupportedMediaType(
            "the body must be application/x-www-form-urlencoded".into(),
        ));
    }

    let settings = hub.settings();
    let body = body.read(headers, settings.max_body_size).await?;
    let update = parse_publish_form(&body, &settings.publish_limits, crate::ids::random_urn)
        .map_err(|e: PublishError| {
            if e.is_size_limit() {
                HubError::TooLarge(e.to_string())
            } else {
                HubError::BadRequest(e.to_string())
            }
        })?;

    if !quicksilver_auth::can_publish(hub.selectors(), &publisher.grants, &update.topics) {
        return Err(hub.auth().forbidden(
            &identity,
            "the token does not allow publishing to these topics",
        ));
    }

    crate::telemetry::record_update(&tracing::Span::current(), &update);
    let id = update.id.clone();
    let private = update.private;
    // For the debug line only: not copied when it is off.
    let topic =
        tracing::enabled!(tracing::Level::DEBUG).then(|| update.canonical_topic().to_string());
    let started = std::time::Instant::now();
    let position = hub.transport().publish(update).await.map_err(|e| {
        tracing::warn!(error = %e, "publish refused: the transport could not store the update");
        HubError::Unavailable("the update could not be stored, retry later".into())
    })?;
    hub.metrics()
        .publish_duration
        .observe(started.elapsed().as_secs_f64());
    hub.metrics().published.inc();
    if let Some(topic) = topic {
        tracing::debug!(id = %id, topic = %topic, private, position = %position, "update published");
    }

    let mut response = (StatusCode::OK, id).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(response)
}

/// Reads the whole body: 413 over `limit` (declared or actual), 400 if it breaks off or is
/// malformed (a bad chunk), 408 if it does not arrive within [`BODY_READ_TIMEOUT`].
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, HubError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large(limit));
    }
    match tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            // axum reports the limit as an error whose source chain holds `LengthLimitError`.
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(err) = source {
                if err.is::<http_body_util::LengthLimitError>() {
                    return Err(too_large(limit));
                }
                source = err.source();
            }
            Err(broken_body())
        }
        Err(_) => Err(late_body()),
    }
}

fn too_large(limit: usize) -> HubError {
    HubError::TooLarge(format!("the body exceeds {limit} bytes"))
}

fn broken_body() -> HubError {
    HubError::BadRequest("the request body could not be read".into())
}

fn late_body() -> HubError {
    HubError::Timeout("the request body did not arrive in time".into())
}

/// A body of `len` bytes (its `Content-Length`) read from a connection's socket by the lean path:
/// first from `buffered`, what was read with the head, then from `socket`. What follows the body
/// (a pipelined request) stays in `buffered`.
pub(crate) struct SocketBody<'a, S> {
    pub(crate) socket: &'a mut S,
    pub(crate) buffered: &'a mut Vec<u8>,
    pub(crate) len: usize,
    /// How far the read went: the connection can serve another request only after a whole body.
    pub(crate) state: BodyState,
}

/// How far a [`SocketBody`] was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyState {
    /// Not at all (the request was refused first).
    Unread,
    /// In full, and taken out of the buffer.
    Read,
    /// It broke off or came too late: the connection cannot go on.
    Broken,
}

impl<S: tokio::io::AsyncRead + Unpin> PublishBody for &mut SocketBody<'_, S> {
    async fn read(self, _: &HeaderMap, limit: usize) -> Result<Bytes, HubError> {
        // Never on the lean path, which leaves larger bodies to hyper; checked all the same.
        if self.len > limit {
            return Err(too_large(limit));
        }
        self.state = BodyState::Broken;
        let len = self.len;
        let socket = &mut *self.socket;
        let buffered = &mut *self.buffered;
        let fill = async {
            while buffered.len() < len {
                if buffered.capacity() == buffered.len() {
                    // Grown as the body arrives, not to its declared length up front: a client
                    // that declares a large body and sends it slowly holds about what it sent.
                    buffered.reserve((len - buffered.len()).min(BODY_READ_CHUNK));
                }
                match tokio::io::AsyncReadExt::read_buf(socket, buffered).await {
                    Ok(0) | Err(_) => return Err(broken_body()),
                    Ok(_) => {}
                }
            }
            Ok(())
        };
        match tokio::time::timeout(BODY_READ_TIMEOUT, fill).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(late_body()),
        }
        let body = Bytes::copy_from_slice(buffered.get(..len).unwrap_or_default());
        buffered.drain(..len);
        self.state = BodyState::Read;
        Ok(body)
    }
}
