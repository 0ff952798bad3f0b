//! OpenTelemetry traces of a publish, recorded with the SDK's in-memory exporter through the hub's
//! real subscriber (`telemetry::subscriber`), set for one test only.
//!
//! Each test runs on Tokio's current-thread runtime, so the in-process hubs, their transport readers
//! and the HTTP client all run on the test's thread, under the test's subscriber.

use std::time::Duration;

use opentelemetry::trace::{SpanId, SpanKind, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, Sampler, SdkTracerProvider, SpanData};
use quicksilver_server::config::LogFormat;
use quicksilver_server::telemetry;
use quicksilver_testkit::hub::is_ready;
use quicksilver_testkit::redis::RedisServer;
use quicksilver_testkit::token::publisher_token;
use quicksilver_testkit::{
    http_client, poll_until, spawn_hub, update, wait_until, HubProcess, InProcessHub, TEST_JWT_KEY,
    UNREACHABLE_REDIS, WAIT,
};
use quicksilver_transport::{MemoryTransport, Transport};

/// An in-memory exporter behind the hub's subscriber, installed for the current thread until dropped.
struct Traces {
    exporter: InMemorySpanExporter,
    _provider: SdkTracerProvider,
    _default: tracing::subscriber::DefaultGuard,
}

impl Traces {
    fn record() -> Self {
        Self::record_with(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
    }

    fn record_with(sampler: Sampler) -> Self {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_sampler(sampler)
            .with_simple_exporter(exporter.clone())
            .build();
        // No log output (it would bypass the test harness's capture): spans only.
        let subscriber =
            telemetry::subscriber(LogFormat::Human, "off", Some(telemetry::tracer(&provider)))
                .expect("subscriber");
        Self {
            exporter,
            _provider: provider,
            _default: tracing::subscriber::set_default(subscriber),
        }
    }

    fn spans(&self) -> Vec<SpanData> {
        self.exporter.get_finished_spans().expect("finished spans")
    }

    /// Waits until, for each `(name, count)`, at least `count` spans named `name` have ended;
    /// returns every span ended by then.
    async fn wait_for(&self, expected: &[(&str, usize)]) -> Vec<SpanData> {
        let ended = poll_until(WAIT, async || {
            let spans = self.spans();
            expected
                .iter()
                .all(|(name, count)| named(&spans, name).len() >= *count)
        })
        .await;
        let spans = self.spans();
        assert!(
            ended,
            "timed out waiting for {expected:?}; have {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        spans
    }
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn only<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "exactly one {name} span expected");
    found[0]
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

const PUBLISH: &str = telemetry::PUBLISH_SPAN;
const STORE: &str = quicksilver_transport::trace_context::PUBLISH_SPAN;
const DISPATCH: &str = quicksilver_transport::trace_context::DISPATCH_SPAN;

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_ID: &str = "b7ad6b7169203331";

async fn publish_with(hub: &InProcessHub, headers: &[(&str, &str)], body: &str) -> String {
    let token = publisher_token();
    let mut request = http_client()
        .post(hub.mercure_url())
        .bearer_auth(&token)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body.to_string());
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.expect("publish request");
    assert_eq!(response.status(), 200);
    response.text().await.expect("the event id")
}

/// The links every publish trace has, whatever the transport: publish → transport publish →
/// (remote) dispatch on each of `nodes` nodes. Returns the publish span.
fn assert_one_trace(spans: &[SpanData], nodes: usize) -> &SpanData {
    let publish = only(spans, PUBLISH);
    let store = only(spans, STORE);
    let dispatches = named(spans, DISPATCH);
    assert_eq!(dispatches.len(), nodes, "one dispatch per node");

    let trace_id = publish.span_context.trace_id();
    assert_eq!(publish.span_kind, SpanKind::Server);
    assert_eq!(store.span_kind, SpanKind::Producer);
    assert_eq!(store.span_context.trace_id(), trace_id);
    assert_eq!(store.parent_span_id, publish.span_context.span_id());
    assert!(!store.parent_span_is_remote);
    for dispatch in dispatches {
        assert_eq!(dispatch.span_kind, SpanKind::Consumer);
        assert_eq!(dispatch.span_context.trace_id(), trace_id);
        assert_eq!(dispatch.parent_span_id, store.span_context.span_id());
        // The parent came out of the stored update, not from the task's span stack.
        assert!(dispatch.parent_span_is_remote);
    }
    publish
}

#[tokio::test]
async fn a_publish_is_one_trace_from_the_request_to_the_reader() {
    let traces = Traces::record();
    let hub = spawn_hub(&[]).await;
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let id = publish_with(
        &hub,
        &[("traceparent", &traceparent)],
        "topic=https%3A%2F%2Fex.com%2Fa&topic=b&private=on&data=secret-payload",
    )
    .await;

    let spans = traces.wait_for(&[(PUBLISH, 1), (DISPATCH, 1)]).await;
    let publish = assert_one_trace(&spans, 1);

    // The publisher's trace continues in the hub.
    assert_eq!(
        publish.span_context.trace_id(),
        TraceId::from_hex(TRACE_ID).unwrap()
    );
    assert_eq!(publish.parent_span_id, SpanId::from_hex(PARENT_ID).unwrap());
    assert!(publish.parent_span_is_remote);
    assert_eq!(
        attribute(publish, "mercure.topic_count").as_deref(),
        Some("2")
    );
    assert_eq!(
        attribute(publish, "mercure.private").as_deref(),
        Some("true")
    );
    assert_eq!(attribute(publish, "mercure.update.id"), Some(id.clone()));
    let dispatch = only(&spans, DISPATCH);
    assert_eq!(attribute(dispatch, "mercure.update.id"), Some(id));

    // Neither the token nor the payload is ever an attribute.
    let token = publisher_token();
    for span in &spans {
        for kv in &span.attributes {
            let value = kv.value.to_string();
            assert!(!value.contains(&token), "{} leaks the token", span.name);
            assert!(
                !value.contains("secret-payload"),
                "{} leaks data",
                span.name
            );
        }
    }
    hub.shutdown().await;
}

#[tokio::test]
async fn without_a_traceparent_the_publish_starts_a_trace() {
    let traces = Traces::record();
    let hub = spawn_hub(&[]).await;
    publish_with(&hub, &[], "topic=a&data=x").await;
    let spans = traces.wait_for(&[(PUBLISH, 1), (DISPATCH, 1)]).await;
    let publish = assert_one_trace(&spans, 1);
    assert_eq!(publish.parent_span_id, SpanId::INVALID);
    hub.shutdown().await;
}

#[tokio::test]
async fn a_failed_store_marks_the_publish_span_as_an_error() {
    // The Redis transport cannot store, the hub answers 503.
    let traces = Traces::record();
    let hub = spawn_hub(&UNREACHABLE_REDIS).await;
    let response = http_client()
        .post(hub.mercure_url())
        .bearer_auth(publisher_token())
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("topic=a&data=x")
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 503);
    let spans = traces.wait_for(&[(PUBLISH, 1)]).await;
    let publish = only(&spans, PUBLISH);
    assert_eq!(
        publish.status,
        opentelemetry::trace::Status::error(
            "the update could not be stored, retry later".to_string()
        )
    );
    let store = only(&spans, STORE);
    assert_eq!(store.parent_span_id, publish.span_context.span_id());
    assert!(named(&spans, DISPATCH).is_empty());
    hub.shutdown().await;
}

#[tokio::test]
async fn the_readers_of_every_node_join_the_publishers_trace() {
    if !RedisServer::available() {
        eprintln!("redis-server not found: skipping");
        return;
    }
    let redis = RedisServer::start();
    let url = redis.url();
    let args = ["--transport", "redis", "--redis-url", url.as_str()];
    let traces = Traces::record();
    let node_a = spawn_hub(&args).await;
    let node_b = spawn_hub(&args).await;
    let c = http_client();
    for node in [&node_a, &node_b] {
        wait_until("the node to be ready", WAIT, async || {
            is_ready(&c, node.url()).await
        })
        .await;
    }

    // A subscriber of the topic on each node: a node reads only what its subscribers may match.
    let token = quicksilver_testkit::token::mercure_token(TEST_JWT_KEY, &[], &["a"], None);
    let bearer = format!("Bearer {token}");
    let mut subscribers = Vec::new();
    for node in [&node_a, &node_b] {
        let url = format!("{}?topic=a", node.mercure_url());
        subscribers.push(
            quicksilver_testkit::SseClient::connect(&url, &[("Authorization", &bearer)])
                .await
                .expect("subscribed"),
        );
    }

    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    publish_with(&node_a, &[("traceparent", &traceparent)], "topic=a&data=x").await;

    // Node A's reader and node B's reader each dispatch the entry, as children of A's XADD span.
    let spans = traces.wait_for(&[(PUBLISH, 1), (DISPATCH, 2)]).await;
    let publish = assert_one_trace(&spans, 2);
    assert_eq!(
        publish.span_context.trace_id(),
        TraceId::from_hex(TRACE_ID).unwrap()
    );
    drop(subscribers);
    node_a.shutdown().await;
    node_b.shutdown().await;
}

#[tokio::test]
async fn untraced_publishes_store_no_trace_context() {
    async fn stored_context(transport: &MemoryTransport) -> Option<String> {
        transport.publish(update("u", &["t"], "x")).await.unwrap();
        let history = transport.history("earliest").await.unwrap();
        let last = history.entries.last().expect("stored").clone();
        last.trace_context.as_ref().map(|c| c.traceparent.clone())
    }

    // Logs only (no exporter): nothing is stored.
    {
        let _default = tracing::subscriber::set_default(
            telemetry::subscriber(LogFormat::Human, "trace", None).unwrap(),
        );
        assert_eq!(stored_context(&MemoryTransport::new(4)).await, None);
    }
    // Exporting, but this trace is not sampled: nothing is stored either.
    {
        let _traces = Traces::record_with(Sampler::AlwaysOff);
        assert_eq!(stored_context(&MemoryTransport::new(4)).await, None);
    }
    // Sampled: the producer span's own context is stored.
    let traces = Traces::record();
    let traceparent = stored_context(&MemoryTransport::new(4))
        .await
        .expect("a stored trace context");
    let spans = traces.spans();
    let store = only(&spans, STORE);
    assert_eq!(
        traceparent,
        format!(
            "00-{}-{}-01",
            store.span_context.trace_id(),
            store.span_context.span_id()
        )
    );
}

/// The real executable, configured only through the standard OpenTelemetry variables, sends its
/// spans as OTLP/HTTP protobuf to a receiver in this test, flushing them when it exits on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exports_over_otlp_when_the_standard_variables_say_so() {
    use axum::body::Bytes;

    let received = std::sync::Arc::new(parking_lot::Mutex::new(Vec::<(String, Bytes)>::new()));
    let sink = received.clone();
    let receiver = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: http::HeaderMap, body: Bytes| async move {
            let content_type = headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            sink.lock().push((content_type, body));
            // An empty ExportTraceServiceResponse.
            http::StatusCode::OK
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let bin = env!("CARGO_BIN_EXE_quicksilver");
    let mut hub = HubProcess::spawn_with_env(
        bin,
        &["--jwt-key", TEST_JWT_KEY],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_SERVICE_NAME", "quicksilver-under-test"),
        ],
    );
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let response = http_client()
        .post(hub.mercure_url())
        .bearer_auth(publisher_token())
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("traceparent", &traceparent)
        .body("topic=a&data=x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Give the reader a moment to dispatch, then exit: the guard flushes the batch.
    tokio::time::sleep(Duration::from_millis(200)).await;
    hub.sigterm();
    let status = tokio::task::block_in_place(|| hub.wait_exit(Duration::from_secs(15)));
    assert!(
        status.is_some_and(|s| s.success()),
        "clean exit: {status:?}"
    );

    let received = received.lock().clone();
    assert!(!received.is_empty(), "no OTLP request received");
    let mut all = Vec::new();
    for (content_type, body) in &received {
        assert_eq!(content_type, "application/x-protobuf");
        all.extend_from_slice(body);
    }
    // Protobuf strings are stored as they are: enough to see what was exported.
    let contains = |needle: &[u8]| all.windows(needle.len()).any(|w| w == needle);
    for name in [PUBLISH, STORE, DISPATCH, "quicksilver-under-test"] {
        assert!(contains(name.as_bytes()), "{name} not exported");
    }
    assert!(contains(&TraceId::from_hex(TRACE_ID).unwrap().to_bytes()));
}
