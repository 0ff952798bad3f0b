//! `/.well-known/mercure/admin/revocations`: revoke tokens, list the revocations in force, lift
//! one.
//!
//! Every request needs `Authorization: Bearer <admin token>` ([`quicksilver_auth::admin`]: the
//! admin key, an `exp`, and `revocations` in its `scope`); nothing else (no cookie, no query
//! parameter) is read, so a browser cannot be made to send one. Without an admin key configured
//! the endpoint answers `404`, like any path the hub does not serve.
//!
//! - `POST` with a JSON body revokes: `{"jti":"…"}` one token; `{"sub":"…"}` every token of the
//!   subject issued before now (`"before": <seconds>` for another time); either with `"iss"` to
//!   cover only that issuer's tokens, `"exp"` (seconds) when the covered tokens expire, and a
//!   `"reason"`. A revocation of a key already in force widens it (the later `before` and `exp`
//!   win). Answers `201` (new) or `200` (widened) with the revocation as stored, once it is in
//!   force on this node; `400` for a body that is not such an object, `507` when the cluster holds
//!   `--max-revocations`.
//! - `GET` lists the revocations in force on this node, by id, `?limit=` (default 100, at most
//!   1000) at a time; `next` names the `?after=` of the next page.
//! - `DELETE ?jti=…` or `?sub=…` (with `&iss=…` if the revocation has one), or `?id=…`, lifts one:
//!   `204`, or `404` when none is in force. Streams it ended stay ended; their clients reconnect.

use std::ops::Bound;
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use quicksilver_auth::{AdminVerifier, AuthError};
use quicksilver_transport::{PutOutcome, RevocationRecord};
use serde::{Deserialize, Serialize};

use super::set::{key_of, unix_now, Revocation, Target};
use super::Revocations;
use crate::error::{AuthRefusal, HubError};
use crate::hub::Hub;

/// The endpoint's path.
pub const PATH: &str = "/.well-known/mercure/admin/revocations";

/// The `scope` an admin token needs here.
pub const SCOPE: &str = "revocations";

/// Largest request body.
const MAX_BODY: usize = 16 * 1024;

/// How long a write waits for the revocation to be in force on this node before answering.
const SYNC_WAIT: Duration = Duration::from_secs(2);

/// Page size of a list without `limit`, and the largest allowed.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1_000;

/// Attempts at a compare-and-set write before giving up (only concurrent writers of the same
/// key make one fail).
const WRITE_ATTEMPTS: usize = 8;

/// A revocation request (see the module docs).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    jti: Option<String>,
    sub: Option<String>,
    iss: Option<String>,
    before: Option<u64>,
    exp: Option<u64>,
    reason: Option<String>,
}

/// A revocation as listed: its id and itself.
#[derive(Debug, Serialize)]
struct Listed<'a> {
    id: &'a str,
    #[serde(flatten)]
    revocation: &'a Revocation,
}

/// A page of the list.
#[derive(Debug, Serialize)]
struct Page<'a> {
    revocations: Vec<Listed<'a>>,
    /// How many are in force on this node.
    total: usize,
    /// The `after` of the next page, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<&'a str>,
}

/// `POST`: revokes.
pub async fn revoke(
    State(hub): State<Hub>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HubError> {
    let Some(revocations) = authorized(&hub, &headers)? else {
        return Ok(StatusCode::NOT_FOUND.into_response());
    };
    let mime = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .unwrap_or("");
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(HubError::UnsupportedMediaType(
            "the body must be application/json".into(),
        ));
    }
    let body: Bytes = crate::publish::read_body(&headers, body, MAX_BODY).await?;
    let request: RevokeRequest = serde_json::from_slice(&body)
        .map_err(|e| HubError::BadRequest(format!("invalid revocation: {e}")))?;
    let settings = revocations.settings();
    let revocation = revocation_of(request, unix_now(), settings.max_token_lifetime)?;
    let key = revocation
        .key()
        .ok_or_else(|| HubError::BadRequest("name exactly one of \"jti\" and \"sub\"".into()))?;
    let (stored, replaced) = store(&revocations, &key, revocation, settings.max).await?;
    tracing::info!(
        id = %key,
        reason = stored.reason.as_deref().unwrap_or(""),
        exp = stored.exp,
        "tokens revoked"
    );
    revocations.sync_now(SYNC_WAIT).await;
    let status = if replaced {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    json(
        status,
        &Listed {
            id: &key,
            revocation: &stored,
        },
    )
}

/// `GET`: lists.
pub async fn list(
    State(hub): State<Hub>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, HubError> {
    let Some(revocations) = authorized(&hub, &headers)? else {
        return Ok(StatusCode::NOT_FOUND.into_response());
    };
    let mut limit = DEFAULT_PAGE;
    let mut after = None;
    for (name, value) in parameters(query.as_deref()) {
        match name.as_str() {
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        HubError::BadRequest(format!("limit must be 1 to {MAX_PAGE}"))
                    })?;
            }
            "after" => after = Some(value),
            _ => {}
        }
    }
    let listed = revocations.set().listed();
    let now = unix_now();
    let start = match &after {
        Some(after) => Bound::Excluded(after.as_str()),
        None => Bound::Unbounded,
    };
    let mut page: Vec<Listed<'_>> = listed
        .range::<str, _>((start, Bound::Unbounded))
        .filter(|(_, r)| r.exp > now)
        .take(limit + 1)
        .map(|(id, revocation)| Listed { id, revocation })
        .collect();
    let next = if page.len() > limit {
        page.truncate(limit);
        page.last().map(|l| l.id)
    } else {
        None
    };
    json(
        StatusCode::OK,
        &Page {
            revocations: page,
            total: listed.values().filter(|r| r.exp > now).count(),
            next,
        },
    )
}

/// `DELETE`: lifts one.
pub async fn lift(
    State(hub): State<Hub>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, HubError> {
    let Some(revocations) = authorized(&hub, &headers)? else {
        return Ok(StatusCode::NOT_FOUND.into_response());
    };
    let (mut id, mut jti, mut sub, mut iss) = (None, None, None, None);
    for (name, value) in parameters(query.as_deref()) {
        match name.as_str() {
            "id" => id = Some(value),
            "jti" => jti = Some(value),
            "sub" => sub = Some(value),
            "iss" => iss = Some(value),
            _ => {}
        }
    }
    let key = match (id, jti, sub) {
        (Some(id), None, None) if iss.is_none() => id,
        (None, Some(jti), None) => key_of(Target::TokenId(&jti), iss.as_deref()),
        (None, None, Some(sub)) => key_of(Target::Subject(&sub), iss.as_deref()),
        _ => {
            return Err(HubError::BadRequest(
                "name one revocation: ?jti=… or ?sub=… (with &iss=… if it has one), or ?id=…"
                    .into(),
            ))
        }
    };
    let removed = revocations
        .store()
        .remove(&key)
        .await
        .map_err(unavailable)?;
    if !removed {
        return Err(HubError::NotFound("no such revocation".into()));
    }
    tracing::info!(id = %key, "revocation lifted");
    revocations.sync_now(SYNC_WAIT).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The revocation machinery when revocation is on and the request carries a valid admin token;
/// `None` when revocation is off (the caller answers 404).
fn authorized(
    hub: &Hub,
    headers: &HeaderMap,
) -> Result<Option<std::sync::Arc<Revocations>>, HubError> {
    let Some(revocations) = hub.revocations() else {
        return Ok(None);
    };
    let settings = revocations.settings();
    let Some(admin) = &settings.admin else {
        return Ok(None);
    };
    check_token(admin, headers)?;
    Ok(Some(revocations.clone()))
}

/// Checks the request's `Authorization: Bearer` admin token.
fn check_token(admin: &AdminVerifier, headers: &HeaderMap) -> Result<(), HubError> {
    let refuse = |error: AuthError| HubError::Auth(AuthRefusal::new(error, None, false, None));
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(refuse(AuthError::MissingToken).into_reason("an admin token is required"));
    };
    let token = value
        .to_str()
        .ok()
        .filter(|_| values.next().is_none())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or_else(|| refuse(AuthError::InvalidAuthorizationHeader))?;
    admin
        .verify(token, SCOPE, SystemTime::now())
        .map_err(|e| match e {
            AuthError::NotAllowed => {
                refuse(e).into_reason("the admin token's scope does not include \"revocations\"")
            }
            e => {
                tracing::debug!(error = %e, "admin token refused");
                refuse(e)
            }
        })
}

trait WithReason {
    fn into_reason(self, reason: &'static str) -> Self;
}

impl WithReason for HubError {
    fn into_reason(self, reason: &'static str) -> Self {
        match self {
            HubError::Auth(refusal) => HubError::Auth(refusal.with_reason(reason)),
            other => other,
        }
    }
}

/// The revocation a request asks for, made at `now`: defaults filled in, checked.
fn revocation_of(
    request: RevokeRequest,
    now: u64,
    max_token_lifetime: Duration,
) -> Result<Revocation, HubError> {
    let bad = |reason: String| HubError::BadRequest(reason);
    let lifetime = max_token_lifetime.as_secs();
    // A subject's tokens issued before now: the next whole second, so that a token issued
    // earlier in this second (its `iat` rounded down) is covered too.
    let before = request
        .sub
        .as_ref()
        .map(|_| request.before.unwrap_or(now + 1));
    if request.jti.is_some() && request.before.is_some() {
        return Err(bad("\"before\" applies to a subject (\"sub\") only".into()));
    }
    let exp = match request.exp {
        Some(exp) if exp <= now => {
            return Err(bad(
                "\"exp\" has passed: the tokens it covers have expired already".into(),
            ))
        }
        Some(exp) => exp,
        // Every token it covers has expired once the longest lifetime passed after it was
        // issued: after now for a token id, after `before` for a subject.
        None => before.unwrap_or(now).max(now).saturating_add(lifetime),
    };
    if let Some(before) = before {
        if request.exp.is_none() && before.saturating_add(lifetime) <= now {
            return Err(bad(format!(
                "every token issued before {before} has expired (--max-token-lifetime {}s)",
                lifetime
            )));
        }
    }
    let revocation = Revocation {
        jti: request.jti,
        sub: request.sub,
        iss: request.iss,
        before,
        exp,
        created: now,
        reason: request.reason,
    };
    revocation.validate().map_err(bad)?;
    Ok(revocation)
}

/// Stores `revocation` under `key`, widening one already in force; returns what was stored and
/// whether it replaced one.
async fn store(
    revocations: &Revocations,
    key: &str,
    revocation: Revocation,
    max: usize,
) -> Result<(Revocation, bool), HubError> {
    let store = revocations.store();
    for _ in 0..WRITE_ATTEMPTS {
        let now = unix_now();
        let current = store.get(key).await.map_err(unavailable)?;
        let in_force = current
            .as_ref()
            .filter(|c| !c.is_expired(now))
            .and_then(|c| serde_json::from_str::<Revocation>(&c.document).ok());
        let stored = match &in_force {
            Some(older) => revocation.clone().merged_with(older),
            None => revocation.clone(),
        };
        let document = serde_json::to_string(&stored)
            .map_err(|e| HubError::BadRequest(format!("invalid revocation: {e}")))?;
        let record = RevocationRecord {
            key: key.to_string(),
            document,
            expires_at: stored.exp,
        };
        match store
            .put(&record, current.as_ref(), now, max)
            .await
            .map_err(unavailable)?
        {
            PutOutcome::Stored { replaced } => return Ok((stored, replaced)),
            PutOutcome::Conflict => continue,
            PutOutcome::Full => {
                revocations.metrics().over_limit.inc();
                return Err(HubError::InsufficientStorage(format!(
                    "the hub holds its maximum of {max} revocations (--max-revocations): lift \
                     some, or wait for them to lapse"
                )));
            }
        }
    }
    Err(HubError::Unavailable(
        "the revocation is being changed concurrently, retry".into(),
    ))
}

fn unavailable(e: quicksilver_transport::TransportError) -> HubError {
    tracing::warn!(error = %e, "revocation store unavailable");
    HubError::Unavailable("the revocation store is unavailable, retry later".into())
}

/// The query's parameters, decoded.
fn parameters(query: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn json(status: StatusCode, value: &impl Serialize) -> Result<Response, HubError> {
    let body = serde_json::to_string(value)
        .map_err(|e| HubError::BadRequest(format!("cannot render the answer: {e}")))?;
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(jti: Option<&str>, sub: Option<&str>) -> RevokeRequest {
        RevokeRequest {
            jti: jti.map(Into::into),
            sub: sub.map(Into::into),
            iss: None,
            before: None,
            exp: None,
            reason: None,
        }
    }

    #[test]
    fn defaults_cover_every_token_that_may_still_be_valid() {
        let day = Duration::from_secs(86_400);
        let now = 1_000_000;
        let r = revocation_of(request(Some("t"), None), now, day).unwrap();
        assert_eq!((r.before, r.exp), (None, now + 86_400));
        let r = revocation_of(request(None, Some("alice")), now, day).unwrap();
        assert_eq!((r.before, r.exp), (Some(now + 1), now + 1 + 86_400));
        // An explicit exp wins; one in the past is refused.
        let mut req = request(Some("t"), None);
        req.exp = Some(now + 60);
        assert_eq!(revocation_of(req, now, day).unwrap().exp, now + 60);
        let mut req = request(Some("t"), None);
        req.exp = Some(now);
        assert!(revocation_of(req, now, day).is_err());
        // A subject's tokens issued so long ago that all have expired: nothing to revoke.
        let mut req = request(None, Some("alice"));
        req.before = Some(now - 86_400);
        assert!(revocation_of(req, now, day).is_err());
        assert!(revocation_of(request(None, None), now, day).is_err());
        assert!(revocation_of(request(Some("a"), Some("b")), now, day).is_err());
        let mut req = request(Some("t"), None);
        req.before = Some(now);
        assert!(revocation_of(req, now, day).is_err());
    }
}
