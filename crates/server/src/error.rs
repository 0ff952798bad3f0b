//! Every error a request can end with, and its HTTP answer, in one place.
//!
//! Handlers return [`HubError`]; its [`IntoResponse`] picks the status and writes a short reason as
//! `text/plain`. Reasons never contain a token or key.

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use thiserror::Error;

/// A request's failure.
#[derive(Debug, Error)]
pub enum HubError {
    /// Malformed request (400).
    #[error("{0}")]
    BadRequest(String),
    /// Missing or invalid credentials (401).
    #[error("{0}")]
    Unauthorized(String),
    /// An authentication or authorization failure, answered with its status and a
    /// `WWW-Authenticate: Bearer` challenge (see [`crate::auth`]).
    #[error("{reason}")]
    Auth {
        /// 400, 401 or 403.
        status: StatusCode,
        /// A short reason, never quoting the token.
        reason: String,
        /// The `WWW-Authenticate` value.
        challenge: HeaderValue,
    },
    /// Valid credentials that do not allow this (403).
    #[error("{0}")]
    Forbidden(String),
    /// Over a size limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// No such resource (404).
    #[error("{0}")]
    NotFound(String),
    /// The request (its body) did not arrive in time (408).
    #[error("{0}")]
    Timeout(String),
    /// Wrong content type (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The transport cannot store or read now; retry later (503 with `Retry-After`).
    #[error("{0}")]
    Unavailable(String),
}

impl IntoResponse for HubError {
    fn into_response(self) -> Response {
        let status = match &self {
            HubError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HubError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            HubError::Auth { status, .. } => *status,
            HubError::NotFound(_) => StatusCode::NOT_FOUND,
            HubError::Forbidden(_) => StatusCode::FORBIDDEN,
            HubError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            HubError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            HubError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            HubError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        let mut response = (status, format!("{self}\n")).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let HubError::Auth { challenge, .. } = &self {
            headers.insert(header::WWW_AUTHENTICATE, challenge.clone());
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
