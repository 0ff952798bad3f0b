//! Logs and traces: the process's `tracing` subscriber, and the OpenTelemetry export of the spans
//! that follow a publish.
//!
//! Logs go to standard error, human-readable or one JSON object per line, filtered by `--log`, as
//! they always did. Traces are off unless the standard OpenTelemetry variables ask for them:
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`, with the service name
//! from `OTEL_SERVICE_NAME` (default `quicksilver`). Export is OTLP over HTTP/protobuf to an
//! `http://` endpoint (a pure-Rust client on the exporter's own thread; for TLS or gRPC, run a
//! collector beside the hub): another scheme, or an `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL` other
//! than `http/protobuf`, is refused at start-up rather than silently exporting nothing. The
//! exporter reads the other `OTEL_EXPORTER_OTLP_*` variables (headers, timeout), the SDK reads
//! `OTEL_TRACES_SAMPLER(_ARG)`, `OTEL_BSP_*` (the batch queue, bounded: spans are dropped when it is
//! full, with a warning) and `OTEL_RESOURCE_ATTRIBUTES`; `OTEL_SDK_DISABLED=true` turns tracing off
//! again. Export failures are logged as warnings and errors (targets `opentelemetry_sdk`,
//! `opentelemetry-otlp`).
//!
//! # The trace of a publish
//! - `mercure.publish` (kind server; this module's [`publish_span`]): the request, from the
//!   token check to the acknowledgement. A child of the publisher's own trace when the request
//!   carries a W3C `traceparent` header. Attributes: `mercure.topic_count`, `mercure.private`,
//!   `mercure.update.id` (never the token or the data); status error when the update could not be
//!   stored.
//! - `mercure.transport.publish` (kind producer), its child: storing the update (`XADD`, or the
//!   in-memory append). Its W3C trace context is stored with the update.
//! - `mercure.transport.dispatch` (kind consumer), on every node: the reader handing the update to
//!   the node's fan-out, with `mercure.transport.publish` as its (remote) parent, so the deliveries
//!   of all nodes join the publisher's trace. See `quicksilver_transport::trace_context`.
//!
//! The `mercure.*` spans go to OpenTelemetry only, never to the log output, so with tracing off no
//! layer wants them: they are disabled at their call sites and cost a cached check, and nothing is
//! formatted or stored with the update. Warnings and errors logged inside them become span events.

use http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::InstrumentationScope;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
use opentelemetry_sdk::Resource;
use quicksilver_protocol::Update;
use tracing::field::Empty;
use tracing::{Level, Metadata, Span, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{filter_fn, EnvFilter, FilterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::config::LogFormat;
use crate::error::HubError;

/// The service name when `OTEL_SERVICE_NAME` is not set.
pub const DEFAULT_SERVICE_NAME: &str = "quicksilver";
/// Name of the span around one publish request.
pub const PUBLISH_SPAN: &str = "mercure.publish";
/// Every span exported to OpenTelemetry (and kept out of the logs) starts with this.
const SPAN_PREFIX: &str = "mercure.";

const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
const PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
const SDK_DISABLED: &str = "OTEL_SDK_DISABLED";

/// Keeps the trace exporter alive; dropping it sends the spans still queued and shuts the exporter
/// down. Hold it until the end of `main`.
#[must_use = "dropping the guard stops exporting traces"]
pub struct Guard {
    provider: Option<SdkTracerProvider>,
}

impl Guard {
    /// Whether traces are being exported.
    pub fn is_exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("exporting", &self.is_exporting())
            .finish()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        // Shutting down waits for the exporter thread to send the last batch (bounded by the OTLP
        // timeout): do that waiting on a thread of its own, never on an async runtime's worker.
        match std::thread::spawn(move || provider.shutdown()).join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not flush the last traces"),
            Err(_) => tracing::warn!("flushing the last traces panicked"),
        }
    }
}

/// Installs the process's subscriber: logs as `log_format` filtered by `log_filter` (the `--log`
/// syntax), plus OTLP trace export when the environment asks for it (see the module docs).
pub fn init(log_format: LogFormat, log_filter: &str) -> anyhow::Result<Guard> {
    let otlp = OtlpSettings::from_env(|name| std::env::var(name).ok())?;
    let provider = otlp.as_ref().map(OtlpSettings::provider).transpose()?;
    subscriber(log_format, log_filter, provider.as_ref().map(tracer))?
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))?;
    if let Some(otlp) = &otlp {
        tracing::info!(
            endpoint = %otlp.endpoint,
            service = %otlp.service_name,
            "exporting traces over OTLP"
        );
    }
    Ok(Guard { provider })
}

/// The subscriber [`init`] installs, exporting the `mercure.*` spans to `tracer` when there is one.
/// Public so tests can run the real filters with an in-memory exporter, scoped to one test with
/// `tracing::subscriber::set_default`.
pub fn subscriber(
    log_format: LogFormat,
    log_filter: &str,
    tracer: Option<Tracer>,
) -> anyhow::Result<Box<dyn Subscriber + Send + Sync>> {
    let filter = EnvFilter::try_new(log_filter)
        .map_err(|e| anyhow::anyhow!("invalid --log filter {log_filter:?}: {e}"))?;
    // Trace spans stay out of the logs: with no OpenTelemetry layer they are then wanted by no
    // layer at all, hence disabled where they are created.
    let logs = filter.and(filter_fn(|meta| !is_trace_span(meta)));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match log_format {
        LogFormat::Human => fmt.with_filter(logs).boxed(),
        LogFormat::Json => fmt.json().with_filter(logs).boxed(),
    };
    let logged = Registry::default().with(fmt);
    let Some(tracer) = tracer else {
        // Not an `Option` layer: a `None` layer would still claim interest in every call site, and
        // the trace spans would be created (though never recorded) instead of disabled.
        return Ok(Box::new(logged));
    };
    let traces = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        // Busy/idle time would cost two clock reads per poll of every traced future.
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_filter(filter_fn(|meta| {
            if meta.is_span() {
                is_trace_span(meta)
            } else {
                *meta.level() <= Level::WARN
            }
        }));
    Ok(Box::new(logged.with(traces)))
}

/// The tracer spans are exported with.
pub fn tracer(provider: &SdkTracerProvider) -> Tracer {
    use opentelemetry::trace::TracerProvider as _;
    provider.tracer_with_scope(
        InstrumentationScope::builder("quicksilver")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    )
}

fn is_trace_span(meta: &Metadata<'_>) -> bool {
    meta.is_span() && meta.name().starts_with(SPAN_PREFIX)
}

/// The `mercure.publish` span of one request (see the module docs): a child of the publisher's
/// trace when the request has a `traceparent` header. The update's attributes are recorded by
/// [`record_update`] once the form is parsed.
pub fn publish_span(headers: &HeaderMap) -> Span {
    let span = tracing::info_span!(
        PUBLISH_SPAN,
        otel.kind = "server",
        http.request.method = "POST",
        mercure.topic_count = Empty,
        mercure.private = Empty,
        mercure.update.id = Empty,
        otel.status_code = Empty,
        otel.status_description = Empty,
    );
    if !span.is_disabled() && headers.contains_key("traceparent") {
        let parent = TraceContextPropagator::new().extract(&RequestHeaders(headers));
        // Fails only without an OpenTelemetry layer, when nothing is exported anyway.
        let _ = span.set_parent(parent);
    }
    span
}

/// Records what is known of `update` on a publish span (never its data).
pub fn record_update(span: &Span, update: &Update) {
    span.record("mercure.topic_count", update.topics.len());
    span.record("mercure.private", update.private);
    span.record("mercure.update.id", update.id.as_str());
}

/// Marks a publish span as failed when the hub failed (the update could not be stored); a refused
/// request (4xx) is the publisher's error, not the server's, and leaves the status unset.
pub fn record_outcome<T>(span: &Span, outcome: &Result<T, HubError>) {
    if let Err(HubError::Unavailable(reason)) = outcome {
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_description", reason.as_str());
    }
}

/// An HTTP request's headers as the propagator reads them.
struct RequestHeaders<'a>(&'a HeaderMap);

impl Extractor for RequestHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// What the standard OpenTelemetry variables ask for; `None`: no trace export.
#[derive(Debug, PartialEq, Eq)]
struct OtlpSettings {
    endpoint: String,
    service_name: String,
}

impl OtlpSettings {
    /// Reads the variables through `var` (the process environment, or a test's map).
    fn from_env(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Self>> {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        if set(SDK_DISABLED).is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        // The signal's own variable wins, as the exporter itself decides.
        let Some(endpoint) = set(TRACES_ENDPOINT).or_else(|| set(ENDPOINT)) else {
            return Ok(None);
        };
        if !endpoint.trim().starts_with("http://") {
            anyhow::bail!(
                "OTLP endpoint {endpoint:?}: this build exports traces over plain http:// only \
                 (OTLP/HTTP protobuf); point it at a collector beside the hub"
            );
        }
        if let Some(protocol) = set(TRACES_PROTOCOL).or_else(|| set(PROTOCOL)) {
            if protocol.trim() != "http/protobuf" {
                anyhow::bail!(
                    "OTLP protocol {protocol:?}: this build exports traces as http/protobuf only"
                );
            }
        }
        let service_name = set(SERVICE_NAME).unwrap_or_else(|| DEFAULT_SERVICE_NAME.into());
        Ok(Some(Self {
            endpoint,
            service_name,
        }))
    }

    /// A provider batching spans to the OTLP exporter on a thread of its own. The exporter reads
    /// the endpoint and the other `OTEL_EXPORTER_OTLP_*` variables itself.
    fn provider(&self) -> anyhow::Result<SdkTracerProvider> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .build()
            .map_err(|e| anyhow::anyhow!("OTLP exporter for {:?}: {e}", self.endpoint))?;
        let resource = Resource::builder()
            .with_service_name(self.service_name.clone())
            .build();
        Ok(SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> anyhow::Result<Option<OtlpSettings>> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        OtlpSettings::from_env(|name| vars.get(name).cloned())
    }

    #[test]
    fn traces_are_off_unless_an_endpoint_is_set() {
        assert_eq!(settings(&[]).unwrap(), None);
        assert_eq!(settings(&[(ENDPOINT, " ")]).unwrap(), None);
        assert_eq!(settings(&[(SERVICE_NAME, "hub")]).unwrap(), None);
        assert_eq!(
            settings(&[(ENDPOINT, "http://collector:4318"), (SDK_DISABLED, "TRUE")]).unwrap(),
            None
        );
    }

    #[test]
    fn endpoint_and_service_name_come_from_the_standard_variables() {
        assert_eq!(
            settings(&[(ENDPOINT, "http://collector:4318")]).unwrap(),
            Some(OtlpSettings {
                endpoint: "http://collector:4318".into(),
                service_name: DEFAULT_SERVICE_NAME.into(),
            })
        );
        assert_eq!(
            settings(&[
                (ENDPOINT, "http://collector:4318"),
                (TRACES_ENDPOINT, "http://traces:4318/v1/traces"),
                (SERVICE_NAME, "hub-eu"),
            ])
            .unwrap(),
            Some(OtlpSettings {
                endpoint: "http://traces:4318/v1/traces".into(),
                service_name: "hub-eu".into(),
            })
        );
    }

    #[test]
    fn what_this_build_cannot_export_is_refused_with_a_reason() {
        let e = settings(&[(ENDPOINT, "https://otlp.example.com")]).unwrap_err();
        assert!(e.to_string().contains("http://"), "{e}");
        let e = settings(&[(ENDPOINT, "http://collector:4317"), (PROTOCOL, "grpc")]).unwrap_err();
        assert!(e.to_string().contains("http/protobuf"), "{e}");
        assert!(settings(&[
            (ENDPOINT, "http://collector:4318"),
            (TRACES_PROTOCOL, "http/protobuf")
        ])
        .unwrap()
        .is_some());
    }

    #[test]
    fn an_invalid_log_filter_is_refused() {
        let e = subscriber(LogFormat::Human, "info,=[", None).err().unwrap();
        assert!(e.to_string().contains("--log"), "{e}");
        assert!(subscriber(LogFormat::Json, "quicksilver_server=debug,info", None).is_ok());
    }

    #[test]
    fn trace_spans_are_disabled_without_an_exporter() {
        let _guard =
            tracing::subscriber::set_default(subscriber(LogFormat::Human, "trace", None).unwrap());
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        assert!(publish_span(&headers).is_disabled());
        // Ordinary spans still reach the logs.
        assert!(!tracing::info_span!("request").is_disabled());
    }
}
