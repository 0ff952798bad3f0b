//! `GET /`: a small page for trying the hub from a browser — subscribe with any matcher, publish,
//! with a pasted token. It is static (no server-side data in it), so it holds no secret and can be
//! left on in production; `--debug-page false` removes it.

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue};

const PAGE: &str = include_str!("../assets/debug.html");

/// Serves the page.
pub async fn page() -> Response {
    let mut response = PAGE.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // The page only talks to its own origin and is never framed.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}
