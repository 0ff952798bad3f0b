//! The debugger at `/.well-known/mercure/debug/`: a page for trying the hub from a browser —
//! subscribe with any matcher (by `GET` or `QUERY`), publish, list active subscriptions — with a
//! token you paste.
//!
//! The page is static and learns how the hub runs from `config.json` beside it (`playground`,
//! `anonymous`, `subscriptions`, `cookieName`: the reference hub's fields), never a token, so it
//! holds no secret and does nothing the hub's API does not already allow: it is safe in
//! production (`--debug-page false` removes it). With `--playground` the page also fetches a
//! prefilled token from [`crate::playground`]. `/` and `/.well-known/mercure/debug` redirect to it.

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use http::{header, HeaderValue};
use serde_json::json;

use crate::hub::Hub;

/// Where the debugger lives.
pub const PATH: &str = "/.well-known/mercure/debug/";

/// Its runtime configuration, beside it.
pub const CONFIG_PATH: &str = "/.well-known/mercure/debug/config.json";

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

/// `GET /` and `GET /.well-known/mercure/debug`: to the page.
pub async fn redirect() -> Redirect {
    Redirect::to(PATH)
}

/// `GET /.well-known/mercure/debug/config.json`: how the hub runs, as far as the page needs to
/// know to adapt itself.
pub async fn config(State(hub): State<Hub>) -> Response {
    let settings = hub.settings();
    let mut response = Json(json!({
        "playground": settings.playground,
        "anonymous": settings.anonymous,
        "subscriptions": settings.subscriptions,
        "cookieName": hub.auth().access_token_cookie(),
    }))
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
