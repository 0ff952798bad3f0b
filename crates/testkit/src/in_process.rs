//! The hub in the test's own process, built from the server crate (feature `in-process`), for tests that
//! need neither the executable nor a signal.
//!
//! - [`spawn_hub`] binds `127.0.0.1:0` and serves on the test's Tokio runtime until its [`InProcessHub`] is
//!   shut down or dropped: real HTTP and real SSE, without a process to start.
//! - [`HubRouter`] is the hub's axum router without any socket: each request goes through
//!   `tower::ServiceExt::oneshot` and comes back as an [`Answer`]. For tests of status codes, challenges and
//!   headers, which need no connection.
//!
//! Both take the `quicksilver` command line (parsed by the server's own [`Config`], as the binary does),
//! with `--jwt-key` [`TEST_JWT_KEY`] added unless the arguments name a `--jwt-key`, and for [`spawn_hub`]
//! `--listen 127.0.0.1:0` unless they name a `--listen`.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use http::{HeaderMap, Request};
use quicksilver_server::{Config, Hub, Server, HUB_PATH};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::ServiceExt;

use crate::token::TEST_JWT_KEY;

/// How long [`InProcessHub::shutdown`] waits for the hub to stop (its drain and connection grace
/// included).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// How long [`HubRouter`] waits for a response and its body: longer than the hub's own request timeouts
/// (30 s for a publish body), so that a test on Tokio's paused clock sees the hub's answer to a request
/// that never completes.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// A hub serving on `127.0.0.1` in this process. Dropping it signals the hub to stop without waiting.
#[derive(Debug)]
pub struct InProcessHub {
    addr: SocketAddr,
    url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), String>>>,
}

/// Starts a hub configured by `args` (see the module documentation) on a free port of `127.0.0.1`, serving
/// on the current Tokio runtime. Panics with the reason if the configuration is refused or the hub cannot
/// bind.
pub async fn spawn_hub(args: &[&str]) -> InProcessHub {
    let mut command_line = vec!["quicksilver"];
    if !names_flag(args, "--listen") {
        command_line.extend(["--listen", "127.0.0.1:0"]);
    }
    let config = config(command_line, args);
    let server = Server::bind(&config)
        .await
        .unwrap_or_else(|e| panic!("the in-process hub cannot start: {e:#}"));
    let addr = server
        .local_addr()
        .unwrap_or_else(|e| panic!("the in-process hub has no address: {e}"));
    let scheme = if server.is_tls() { "https" } else { "http" };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .run(async move {
                // A dropped sender (the handle dropped) stops the hub as a sent signal does.
                let _ = stopped.await;
            })
            .await
            .map_err(|e| format!("{e:#}"))
    });
    InProcessHub {
        addr,
        url: format!("{scheme}://{addr}"),
        stop: Some(stop),
        task: Some(task),
    }
}

impl InProcessHub {
    /// The hub's origin, `http://127.0.0.1:PORT` (`https://` when it serves TLS; no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The hub endpoint, `http://127.0.0.1:PORT/.well-known/mercure`.
    pub fn mercure_url(&self) -> String {
        format!("{}{HUB_PATH}", self.url)
    }

    /// The address the hub listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Signals the hub to stop (as SIGTERM does the binary: it drains its streams) and waits up to
    /// [`STOP_TIMEOUT`] for it. Panics if the hub's serve loop failed.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            if let Ok(joined) = tokio::time::timeout(STOP_TIMEOUT, task).await {
                match joined {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => panic!("the in-process hub failed: {e}"),
                    Err(e) => panic!("the in-process hub's task failed: {e}"),
                }
            }
        }
    }
}

impl Drop for InProcessHub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The hub's router, called without a socket. Its background tasks (transport reader, fan-out) run on the
/// current Tokio runtime, as an in-process hub's do.
#[derive(Debug, Clone)]
pub struct HubRouter {
    router: axum::Router,
}

/// What the router answered: the status, the headers, and the body as text (left unread, empty, for an
/// event stream, which does not end).
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body, lossily decoded; empty for `text/event-stream`.
    pub body: String,
}

impl Answer {
    /// One header as text, if present and UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
    }
}

impl HubRouter {
    /// The router of a hub configured by `args` (see the module documentation); `--listen` is irrelevant
    /// here. Must be called within a Tokio runtime. Panics with the reason if the configuration is refused.
    pub fn new(args: &[&str]) -> HubRouter {
        let config = config(vec!["quicksilver"], args);
        let hub = Hub::start(&config).unwrap_or_else(|e| panic!("the hub cannot start: {e:#}"));
        let router = quicksilver_server::router(hub, &config)
            .unwrap_or_else(|e| panic!("the hub's router cannot be built: {e:#}"));
        HubRouter { router }
    }

    /// Sends `request` through the router. Requests without a `Host` header get `Host: localhost`, as
    /// every HTTP/1.1 client sends one. Panics if no answer (or body) comes within [`ANSWER_TIMEOUT`].
    pub async fn send(&self, mut request: Request<Body>) -> Answer {
        if !request.headers().contains_key(http::header::HOST) {
            request.headers_mut().insert(
                http::header::HOST,
                http::HeaderValue::from_static("localhost"),
            );
        }
        let what = format!("{} {}", request.method(), request.uri());
        let response = match tokio::time::timeout(
            ANSWER_TIMEOUT,
            self.router.clone().oneshot(request),
        )
        .await
        {
            Ok(Ok(response)) => response,
            Ok(Err(infallible)) => match infallible {},
            Err(_) => panic!("{what}: no answer within {ANSWER_TIMEOUT:?}"),
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let is_event_stream = headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let body = if is_event_stream {
            String::new()
        } else {
            let bytes = tokio::time::timeout(
                ANSWER_TIMEOUT,
                axum::body::to_bytes(response.into_body(), usize::MAX),
            )
            .await
            .unwrap_or_else(|_| panic!("{what}: the body did not end within {ANSWER_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("{what}: the body broke off: {e}"));
            String::from_utf8_lossy(&bytes).into_owned()
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    /// `POST /.well-known/mercure` with `headers` and `body`, as [`HubRouter::post`].
    pub async fn publish(&self, headers: &[(&str, &str)], body: impl Into<Body>) -> Answer {
        self.post(HUB_PATH, headers, body).await
    }

    /// `POST target` (a path with its query) with `headers` and `body`; `Content-Type:
    /// application/x-www-form-urlencoded` unless `headers` name a content type.
    pub async fn post(
        &self,
        target: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Answer {
        let mut request = Request::post(target);
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        {
            request = request.header("content-type", "application/x-www-form-urlencoded");
        }
        let request = with_headers(request, headers)
            .body(body.into())
            .unwrap_or_else(|e| panic!("POST {target} with {headers:?}: {e}"));
        self.send(request).await
    }

    /// `GET target` (a path with its query, e.g. `/.well-known/mercure?topic=a`) with `headers`.
    pub async fn get(&self, target: &str, headers: &[(&str, &str)]) -> Answer {
        let request = with_headers(Request::get(target), headers)
            .body(Body::empty())
            .unwrap_or_else(|e| panic!("GET {target} with {headers:?}: {e}"));
        self.send(request).await
    }
}

fn with_headers(
    mut request: http::request::Builder,
    headers: &[(&str, &str)],
) -> http::request::Builder {
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request
}

/// The configuration of `command_line` (program name, flags the caller decided on) followed by `args`, with
/// the test key unless `args` name one.
fn config<'a>(mut command_line: Vec<&'a str>, args: &[&'a str]) -> Config {
    if !names_flag(args, "--jwt-key") {
        command_line.extend(["--jwt-key", TEST_JWT_KEY]);
    }
    command_line.extend_from_slice(args);
    Config::from_args(command_line.iter().copied())
        .unwrap_or_else(|e| panic!("the hub refuses {command_line:?}: {e}"))
}

/// Whether `args` hold `flag`, as `--flag VALUE` or `--flag=VALUE`.
fn names_flag(args: &[&str], flag: &str) -> bool {
    args.iter().any(|arg| {
        *arg == flag
            || arg
                .strip_prefix(flag)
                .is_some_and(|rest| rest.starts_with('='))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_found_in_both_spellings() {
        assert!(names_flag(&["--anonymous", "--jwt-key", "k"], "--jwt-key"));
        assert!(names_flag(&["--listen=127.0.0.1:1"], "--listen"));
        assert!(!names_flag(&["--listener", "x"], "--listen"));
        assert!(!names_flag(&["--publisher-jwt-key", "k"], "--jwt-key"));
    }
}
