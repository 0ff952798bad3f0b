//! A minimal in-process Mercure hub for the harness's own tests, with injectable faults.
//!
//! It keeps every update in memory, delivers to subscribers whose `topic` selectors equal the
//! update's topic (no templates), replays history after `Last-Event-ID`, and can drop or
//! duplicate one update for the first subscriber, so tests can prove the harness notices.
//! The accept loop ends when the [`TestHub`] is dropped.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::channel::{Channel, Sender};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Faults to inject.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Faults {
    /// Never deliver the update with this id to the first subscriber.
    pub(crate) drop_for_first: Option<u64>,
    /// Deliver the update with this id twice to the first subscriber.
    pub(crate) duplicate_for_first: Option<u64>,
}

/// A running test hub.
pub(crate) struct TestHub {
    /// Its `/.well-known/mercure` URL.
    pub(crate) url: String,
    accept: JoinHandle<()>,
}

impl Drop for TestHub {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

#[derive(Default)]
struct State {
    subscribers: Vec<(Vec<String>, Sender<Bytes>)>,
    /// (id, topic, SSE frame)
    history: Vec<(u64, String, Bytes)>,
    faults: Faults,
}

type Body = Either<Channel<Bytes>, Full<Bytes>>;

/// Starts a hub on a free loopback port.
pub(crate) async fn spawn(faults: Faults) -> TestHub {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!(
        "http://{}/.well-known/mercure",
        listener.local_addr().expect("addr")
    );
    let state = Arc::new(Mutex::new(State {
        faults,
        ..State::default()
    }));
    let accept = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let state = state.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(state.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    TestHub { url, accept }
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if req.method() == http::Method::POST {
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut topic = String::new();
        let mut data = String::new();
        for (k, v) in url::form_urlencoded::parse(&body) {
            match &*k {
                "topic" => topic = v.into_owned(),
                "data" => data = v.into_owned(),
                _ => {}
            }
        }
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        let id = state.history.len() as u64 + 1;
        let frame = Bytes::from(format!("id: {id}\ndata: {data}\n\n"));
        state.history.push((id, topic.clone(), frame.clone()));
        let faults = state.faults;
        for (i, (topics, tx)) in state.subscribers.iter_mut().enumerate() {
            if !topics.contains(&topic) {
                continue;
            }
            let first = i == 0;
            if first && faults.drop_for_first == Some(id) {
                continue;
            }
            let _ = tx.try_send(Frame::data(frame.clone()));
            if first && faults.duplicate_for_first == Some(id) {
                let _ = tx.try_send(Frame::data(frame.clone()));
            }
        }
        return Ok(Response::new(Either::Right(Full::new(Bytes::from(
            format!("urn:id:{id}"),
        )))));
    }
    let topics: Vec<String> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .filter(|(k, _)| k == "topic")
            .map(|(_, v)| v.into_owned())
            .collect();
    let last: Option<u64> = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let (mut tx, body) = Channel::new(16 * 1024);
    let _ = tx.try_send(Frame::data(Bytes::from_static(b":\n\n")));
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(last) = last {
        for (id, topic, frame) in &state.history {
            if *id > last && topics.contains(topic) {
                let _ = tx.try_send(Frame::data(frame.clone()));
            }
        }
    }
    state.subscribers.push((topics, tx));
    let response = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .body(Either::Left(body))
        .expect("static response parts are valid");
    Ok(response)
}
