//! Shared set-up for the server's integration tests: an in-process hub on a free port, a token
//! minter, and a thin adapter over the testkit's SSE client.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::time::Duration;

use quicksilver_server::{Config, Server};
use quicksilver_testkit::sse::{SseClient, SseEvent, SseItem, SseStream};
use tokio::sync::oneshot;

pub const KEY: &str = "!ChangeThisMercureHubJWTSecretKey!";

/// A hub running in this process; stopped when dropped.
pub struct TestHub {
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestHub {
    /// Starts a hub with `--jwt-key KEY --listen 127.0.0.1:0` plus `extra` flags.
    pub async fn start(extra: &[&str]) -> Self {
        let mut args = vec!["quicksilver", "--listen", "127.0.0.1:0", "--jwt-key", KEY];
        args.extend_from_slice(extra);
        let config = Config::from_args(args).expect("valid test config");
        let server = Server::bind(&config).await.expect("bind");
        let url = format!("http://{}", server.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Self {
            url,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn hub_url(&self) -> String {
        format!("{}/.well-known/mercure", self.url)
    }

    /// Sends the shutdown signal and waits for the server to stop.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
        }
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// An HS256 token with the pre-standardization `mercure` claim.
pub fn token(publish: &[&str], subscribe: &[&str], exp: Option<i64>) -> String {
    let mut claims =
        serde_json::json!({ "mercure": { "publish": publish, "subscribe": subscribe } });
    if let Some(exp) = exp {
        claims["exp"] = exp.into();
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(KEY.as_bytes()),
    )
    .expect("encode token")
}

pub fn publisher_token() -> String {
    token(&["*"], &[], None)
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Publishes `fields` with a bearer token; returns the status and body.
pub async fn publish(
    client: &reqwest::Client,
    hub: &TestHub,
    token: &str,
    fields: &[(&str, &str)],
) -> (u16, String) {
    let body = serde_urlencoded_pairs(fields);
    let response = client
        .post(hub.hub_url())
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("publish request");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

pub fn serde_urlencoded_pairs(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// One SSE event, as the tests compare it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    pub id: Option<String>,
    /// The `event:` field, `None` for the default `message` type.
    pub event: Option<String>,
    pub data: String,
    pub retry: Option<u64>,
}

/// What an SSE stream yields: events and comments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Event(Event),
    Comment(String),
}

/// A streaming SSE response, read with the testkit's event-stream parser; waits return `None` on
/// timeout or end of stream.
pub struct Sse {
    pub status: u16,
    pub headers: HashMap<String, String>,
    stream: SseStream,
}

impl Sse {
    pub async fn connect(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Sse {
        let stream = SseClient::with_http_client(client.clone())
            .open(url, headers)
            .await
            .expect("connect");
        let headers = stream
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        Sse {
            status: stream.status(),
            headers,
            stream,
        }
    }

    /// The next event or comment.
    pub async fn next_item(&mut self, timeout: Duration) -> Option<Item> {
        match self.stream.next_item(timeout).await.ok()? {
            SseItem::Comment(c) => Some(Item::Comment(c)),
            SseItem::Event(e) => Some(Item::Event(convert(e))),
        }
    }

    /// The next event, skipping comments.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<Event> {
        self.stream.next_event(timeout).await.ok().map(convert)
    }

    /// Whether the stream ended (rather than timing out) within `timeout`.
    pub async fn ended_within(&mut self, timeout: Duration) -> bool {
        self.stream.closed_within(timeout).await
    }
}

fn convert(e: SseEvent) -> Event {
    Event {
        id: e.id,
        event: (e.event_type != "message").then_some(e.event_type),
        data: e.data,
        retry: e.retry,
    }
}

pub const WAIT: Duration = Duration::from_secs(5);
pub const SHORT: Duration = Duration::from_millis(300);

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}
