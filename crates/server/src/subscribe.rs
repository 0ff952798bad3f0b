//! `GET /.well-known/mercure` (and `QUERY`): open a subscriber's event stream.
//!
//! A `QUERY` request carries its parameters in an `application/x-www-form-urlencoded` body as
//! well: the hub takes the union of the URL's and the body's (a subscription per matcher of
//! either), and for the single-valued `last_event_id` the URL's value wins, the `Last-Event-ID`
//! header winning over both. Its body is bounded like a publish body (`413` beyond). A token is
//! never read from the body. Any other method than `GET`, `HEAD`, `POST` and `QUERY` is `405`.
//!
//! The request is parsed (selectors, cursor, token), authenticated, held to the policies' rate and
//! connection limits (see [`crate::policies::limits`]; `429` over them, and an admitted
//! subscriber holds its place in its subject's connection count until its stream ends), and its
//! selectors compiled. The subscriber is then registered in the fan-out *before* history is read,
//! so every update stored after the history read arrives live; a [`Resume`] built from the read
//! tells the stream which live updates the history already covered. Between the two, the subscriber's interest is given to
//! the transport ([`Scope`]: its exact topics, or everything when a selector is a `*`, a template
//! or a URL pattern): a partitioned transport then reads what it may match, and answers once that
//! reading has found its place, so the history read and the live queue still meet without a gap.
//! The interest is held for the life of the stream. The handler answers with the subscriber's
//! [`SubscriberStream`], whose headers go out with the preamble comment immediately (see
//! [`crate::sse`] for how it reaches the socket).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use http::{HeaderMap, HeaderValue, Method};
use quicksilver_fanout::{Access, Resume, SubscriberSpec};
use quicksilver_protocol::selector::SelectorKind;
use quicksilver_protocol::subscribe::{MatchType, Matcher};
use quicksilver_protocol::{parse_subscribe_query, Selector, SelectorError, EARLIEST};
use quicksilver_transport::Scope;

use crate::client::{client_ip, Peer};
use crate::error::HubError;
use crate::hub::Hub;
use crate::policies::limits::RequestKind;
use crate::sse::{EndReason, SubscriberStream};
use crate::subscriptions::SubscriptionInfo;

/// How long a subscriber arriving before the transport is ready waits for it.
const STARTUP_WAIT: Duration = Duration::from_secs(5);

/// The `QUERY` method (a safe, idempotent request with a body).
pub const QUERY: &str = "QUERY";

/// Handles a subscription request (`GET`, `HEAD`).
pub async fn subscribe(
    State(hub): State<Hub>,
    peer: Option<Extension<Peer>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw_query): RawQuery,
) -> Result<Response, HubError> {
    let parameters = raw_query.clone().unwrap_or_default();
    let peer = peer.map(|Extension(peer)| peer);
    open(hub, peer, method, headers, raw_query, &parameters).await
}

/// Handles the hub URL's other methods: `QUERY` subscribes with the body's parameters merged with
/// the URL's; anything else is `405`.
pub async fn other_method(
    State(hub): State<Hub>,
    peer: Option<Extension<Peer>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw_query): RawQuery,
    body: axum::body::Body,
) -> Result<Response, HubError> {
    if method.as_str() != QUERY {
        let mut response = http::StatusCode::METHOD_NOT_ALLOWED.into_response();
        response.headers_mut().insert(
            http::header::ALLOW,
            HeaderValue::from_static("GET,HEAD,POST,QUERY"),
        );
        return Ok(response);
    }
    let body = crate::publish::read_body(&headers, body, hub.settings().max_body_size).await?;
    let body = std::str::from_utf8(&body)
        .map_err(|_| HubError::BadRequest("the QUERY body must be UTF-8".into()))?;
    // The URL's parameters first: the parser keeps the first `last_event_id` it meets.
    let parameters = match raw_query.as_deref() {
        Some(q) if !q.is_empty() && !body.is_empty() => format!("{q}&{body}"),
        Some(q) if !q.is_empty() => q.to_string(),
        _ => body.to_string(),
    };
    let peer = peer.map(|Extension(peer)| peer);
    open(hub, peer, method, headers, raw_query, &parameters).await
}

/// Opens the stream for a request whose subscription parameters are `parameters` (a form-encoded
/// string); a legacy token is only ever read from the URL's own query, `raw_query`.
async fn open(
    hub: Hub,
    peer: Option<Peer>,
    method: Method,
    headers: HeaderMap,
    raw_query: Option<String>,
    parameters: &str,
) -> Result<Response, HubError> {
    if hub.is_shutting_down() {
        return Err(HubError::Unavailable("the hub is shutting down".into()));
    }
    // A subscriber arriving while the node starts waits for the transport's readers to find their
    // place (briefly: an EventSource does not retry after an error status); see `Hub::has_started`.
    if !hub.wait_started(STARTUP_WAIT).await {
        return Err(HubError::Unavailable(
            "the hub is starting, retry in a moment".into(),
        ));
    }
    let settings = hub.settings();
    let connected = hub
        .fanout()
        .stats()
        .subscribers
        .load(std::sync::atomic::Ordering::Relaxed);
    if connected >= 0 && connected as usize >= settings.max_subscribers {
        return Err(HubError::Unavailable(
            "this node holds its maximum number of subscribers, retry on another".into(),
        ));
    }
    // Connections through a trusted proxy are shared by many clients: each client's streams are
    // counted under its forwarded address instead (direct connections are counted on accept).
    let client_addr = client_ip(peer, &headers, &settings.trusted_proxies);
    let client_slot = match client_addr {
        Some(ip) if hub.clients().is_limited() && settings.trusted_proxies.trusts(peer) => {
            Some(hub.clients().acquire(ip).ok_or_else(|| {
                HubError::TooManyRequests("too many connections from this client address".into())
            })?)
        }
        _ => None,
    };
    let query = parse_subscribe_query(parameters, &settings.subscribe_limits)
        .map_err(|e| HubError::BadRequest(e.to_string()))?;

    let identity = hub.auth().identity(&headers, peer)?;
    let subscriber = hub
        .auth()
        .subscriber(&method, &headers, raw_query.as_deref(), &identity)?;
    let grants = subscriber.as_ref().map(|s| &s.grants);
    let subscriber_generation = subscriber.as_ref().map(|s| s.generation);
    // A token's expiry ends the connection, as on the reference hub: the client reconnects with a
    // fresh token (or is refused), so an expired token never keeps reading private updates.
    let token_life = grants.as_ref().and_then(|g| g.expires_at()).map(|at| {
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default()
    });
    let access = match grants {
        Some(grants) => grants.private_access().clone(),
        None if settings.anonymous => Access::None,
        None => {
            return Err(hub
                .auth()
                .token_required(&identity, "a subscriber token is required"))
        }
    };

    // The policies' rate and connection limits (see `crate::policies::limits`), before the
    // selectors cost anything to compile. The slot is held for the stream's life.
    let claims = grants.map(|g| &**g.identity());
    let client = client_addr.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let policies = hub.policies();
    hub.limits()
        .check_rate(&policies.limits, RequestKind::Subscribe, claims, client)
        .await?;
    let limit_slot = hub
        .limits()
        .admit(&policies.limits, claims, client, query.matchers.len())
        .await?;
    drop(policies);

    let selectors = compile_selectors(&hub, &query.matchers, &identity.hub_url).await?;
    let scope = scope_of(&selectors);
    let spec = SubscriberSpec { selectors, access };

    // The header wins over the query parameters, as the SSE and Mercure specifications say.
    // Browsers send the id they last saw as UTF-8 bytes, and publishers may choose any id, so the
    // header is decoded as UTF-8 rather than restricted to visible ASCII (`to_str`): an id like
    // `urn:é` must resume, not silently start a fresh stream.
    // A cursor sent empty (the header or a parameter) asks for nothing to replay, yet it was sent:
    // the answer still carries the cursor, `earliest`, as the specification requires.
    let header = headers
        .get("last-event-id")
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok());
    let last_event_id = match (header, query.last_event_id) {
        (Some(h), _) if !h.is_empty() => Some(h.to_string()),
        (_, Some(q)) if !q.is_empty() => Some(q),
        (h, q) => q.or(h.map(str::to_string)),
    };

    // Registered first: from here on every update the reader hands over is queued for it, so the
    // history read below and the live queue overlap instead of leaving a gap. With the token's
    // identity (shared with the verified token, not copied) when revocation is on and could name
    // it, so that revoking the token ends the stream.
    let token_identity = grants
        .filter(|_| hub.revocations().is_some())
        .map(|g| g.identity())
        .filter(|id| !id.is_anonymous())
        .cloned();
    let subscriber = hub
        .fanout()
        .subscribe_as(spec.clone(), token_identity.clone());
    // A revocation that reached this node after the token was checked but before the stream was
    // registered found nothing to end: check again now that the stream can be found.
    if token_identity.is_some_and(|id| hub.auth().is_revoked(&id)) {
        return Err(hub.auth().revoked(&identity, subscriber_generation));
    }
    // Then the transport reads what it may match (see the module docs), before history is read.
    let interest = hub
        .transport()
        .interest(&scope)
        .await
        .map_err(|e| HubError::Unavailable(e.to_string()))?;

    let mut resume = None;
    let mut anchor_header = None;
    if last_event_id.as_deref() == Some("") {
        anchor_header = Some(EARLIEST.to_string());
    } else if let Some(last_event_id) = &last_event_id {
        let history = hub
            .transport()
            .history_within(last_event_id, &interest, &scope)
            .await
            .map_err(|e| HubError::Unavailable(e.to_string()))?;
        resume = Some(
            Resume::new(history.entries, &history.high_water, |e| {
                spec.accepts(hub.selectors(), e)
            })
            .with_budget(hub.replay_budget().clone()),
        );
        anchor_header = Some(history.anchor.unwrap_or_else(|| EARLIEST.to_string()));
    }

    // Subscription events: recorded and announced before the stream starts, so a subscription's
    // `active: false` event can only follow its `active: true` one.
    let held = match hub.subscriptions() {
        Some(subscriptions) => {
            let infos = subscription_infos(&hub, &query.matchers, grants);
            Some(subscriptions.connected(infos).await.map_err(|refused| {
                HubError::Unavailable(format!(
                    "this node is announcing too many subscriptions, retry in {}s",
                    refused.retry_after.as_secs().max(1)
                ))
            })?)
        }
        None => None,
    };

    let replayed = resume.as_ref().map_or(0, Resume::replayed);
    hub.metrics().replayed.inc_by(replayed as u64);
    let topics: Vec<String> = query.matchers.iter().map(|m| m.pattern.clone()).collect();
    tracing::info!(
        topics = ?topics,
        last_event_id = last_event_id.as_deref(),
        replayed,
        "subscriber connected"
    );
    let stream = SubscriberStream::new(
        subscriber,
        resume,
        settings.heartbeat,
        match (settings.write_timeout.map(jitter), token_life) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
        move |reason: EndReason| {
            tracing::info!(topics = ?topics, reason = ?reason, "subscriber disconnected");
            // Ends the subscriptions (events, registry), frees the client's slot and its subject's
            // connection count, and lets the transport stop reading what no other subscriber
            // needs.
            drop(held);
            drop(client_slot);
            drop(limit_slot);
            drop(interest);
        },
    )
    .with_closing_retry(settings.drain_retry)
    .with_latency(hub.metrics().delivery_latency.clone());

    let mut response = stream.into_response();
    let h = response.headers_mut();
    if let Some(anchor) = anchor_header {
        // The anchor is an id validated at publish time or the client's own, echoed back; an id that
        // cannot be a header value falls back to `earliest` rather than failing the stream.
        let value = HeaderValue::from_str(&anchor).unwrap_or(HeaderValue::from_static(EARLIEST));
        h.insert("last-event-id", value.clone());
        h.insert("mercure-last-event-id", value);
    }
    Ok(response)
}

/// What a subscriber with `selectors` may match, for the transport: its exact topics and the
/// literal starts of its URI templates (which bound the retention classes its history is read
/// from), or everything when one selector may match any topic.
fn scope_of(selectors: &[Selector]) -> Scope {
    let mut topics = Vec::with_capacity(selectors.len());
    let mut prefixes = Vec::new();
    for selector in selectors {
        match selector.kind() {
            SelectorKind::Exact => topics.push(selector.raw().to_string()),
            SelectorKind::Template => match selector.literal_prefix() {
                Some(prefix) if !prefix.is_empty() => prefixes.push(prefix.to_string()),
                _ => return Scope::All,
            },
            SelectorKind::Wildcard | SelectorKind::UrlPattern => return Scope::All,
        }
    }
    if prefixes.is_empty() {
        Scope::Topics(topics)
    } else {
        Scope::Matching { topics, prefixes }
    }
}

/// Compiles a subscription's selectors through the node's selector store, sharing what is already
/// compiled. Compiling a template or URL pattern takes tens of microseconds, so a subscription
/// that has one is compiled on the blocking pool, a core's worth at a time, not on the reactor
/// that serves every stream. Selectors compiled for this subscription alone are charged to it
/// (`--max-subscription-selector-memory`, 413 past it); the store refuses what would take the
/// node past its budget (`--max-selector-memory`, 503).
async fn compile_selectors(
    hub: &Hub,
    matchers: &[Matcher],
    hub_url: &str,
) -> Result<Vec<Selector>, HubError> {
    let costly = matchers.iter().any(|m| match m.kind {
        MatchType::TopicSelector => m.pattern.contains('{'),
        MatchType::UrlPattern => true,
        MatchType::Exact => false,
    });
    if !costly {
        return compile_all(hub, matchers, hub_url);
    }
    let _permit = hub
        .compiling()
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| HubError::Unavailable("the hub is shutting down".into()))?;
    let (job_hub, matchers, hub_url) = (hub.clone(), matchers.to_vec(), hub_url.to_string());
    tokio::task::spawn_blocking(move || compile_all(&job_hub, &matchers, &hub_url))
        .await
        .map_err(|_| HubError::Unavailable("selector compilation failed".into()))?
}

fn compile_all(hub: &Hub, matchers: &[Matcher], hub_url: &str) -> Result<Vec<Selector>, HubError> {
    let budget = hub.settings().max_subscription_selector_memory;
    let mut own_bytes = 0usize;
    let mut selectors = Vec::with_capacity(matchers.len());
    for matcher in matchers {
        let compiled = match matcher.kind {
            MatchType::TopicSelector => hub.selectors().compile_fresh(&matcher.pattern),
            MatchType::Exact => Ok((Selector::exact_topic(&matcher.pattern), false)),
            // Relative patterns resolve against this hub's URL, as seen by the request.
            MatchType::UrlPattern => hub
                .selectors()
                .compile_url_pattern_fresh(&matcher.pattern, Some(hub_url)),
        };
        let (selector, fresh) = compiled.map_err(|e| match e {
            SelectorError::OverBudget { .. } => {
                hub.metrics().selectors_refused.inc();
                HubError::Unavailable(e.to_string())
            }
            e => HubError::BadRequest(e.to_string()),
        })?;
        if fresh {
            own_bytes += selector.approx_memory();
            if own_bytes > budget {
                hub.metrics().selectors_refused.inc();
                return Err(HubError::TooLarge(format!(
                    "the topic selectors of this subscription take more than {budget} bytes to \
                     compile; share selectors with other subscribers or send fewer"
                )));
            }
        }
        selectors.push(selector);
    }
    Ok(selectors)
}

/// One subscription per matcher of the request, all with the same new subscriber id, each with
/// the payload the token gives it.
fn subscription_infos(
    hub: &Hub,
    matchers: &[quicksilver_protocol::subscribe::Matcher],
    grants: Option<&quicksilver_auth::Grants>,
) -> Vec<SubscriptionInfo> {
    use quicksilver_auth::Generation;
    use quicksilver_protocol::subscribe::MatchType;
    let subscriber = crate::ids::random_urn();
    matchers
        .iter()
        .map(|m| {
            let (generation, match_type) = match m.kind {
                MatchType::TopicSelector => (Generation::Legacy, "exact"),
                MatchType::Exact => (Generation::Current, "exact"),
                MatchType::UrlPattern => (Generation::Current, "urlpattern"),
            };
            SubscriptionInfo {
                generation,
                match_type,
                pattern: m.pattern.clone(),
                subscriber: subscriber.clone(),
                payload: grants.and_then(|g| g.payload_for(hub.selectors(), &m.pattern).cloned()),
            }
        })
        .collect()
}

/// Takes up to 10% off a connection's maximum life so reconnections after a deploy or scale-up
/// spread out instead of arriving in one wave.
fn jitter(max_life: Duration) -> Duration {
    max_life.mul_f64(1.0 - fastrand::f64() * 0.1)
}
