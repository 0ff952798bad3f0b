//! Carrying a publish's trace across the transport, so one trace runs from the publisher's HTTP
//! request through the store to the readers of every node.
//!
//! A transport's `publish` runs inside its `mercure.transport.publish` span (kind producer). Just
//! before storing, [`current`] takes the W3C trace context of that span (`traceparent`, and
//! `tracestate` when there is one) and the transport stores it beside the update: in the Redis
//! stream entry, or in the in-memory envelope. Each node's reader, handing an update to its fan-out,
//! wraps the hand-off in [`dispatch_span`]: a `mercure.transport.dispatch` span (kind consumer) whose
//! parent is the remote producer span, so it joins the publisher's trace whatever node it runs on.
//!
//! When tracing is off (no OpenTelemetry layer in the subscriber, or the spans filtered out) the
//! spans are disabled: nothing is formatted, nothing is stored with the update, and a reader only
//! checks an `Option`. The context is stored only for a sampled span, so an update whose trace was
//! not sampled costs no bytes in the stream and starts no trace on other nodes either.
//!
//! Only the W3C Trace Context format is used (no global propagator), so what is stored does not
//! depend on process-wide settings.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use quicksilver_protocol::update::TraceContext;
use quicksilver_protocol::Envelope;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Name of the span around storing an update (`XADD`, or the ring append).
pub const PUBLISH_SPAN: &str = "mercure.transport.publish";
/// Name of the span around a reader's hand-off of one update to the node's fan-out.
pub const DISPATCH_SPAN: &str = "mercure.transport.dispatch";

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// The trace context of the current span, when it is being recorded and sampled; `None` otherwise
/// (then nothing is formatted).
pub fn current() -> Option<TraceContext> {
    let span = Span::current();
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let span_ref = cx.span();
    let span_context = span_ref.span_context();
    if !span_context.is_valid() || !span_context.is_sampled() {
        return None;
    }
    let mut carrier = Carrier::default();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    Some(TraceContext {
        traceparent: carrier.traceparent?,
        tracestate: carrier.tracestate.filter(|s| !s.is_empty()),
    })
}

/// The span for handing `envelope` to the fan-out: a child of the span that stored it (on whatever
/// node), or a disabled span when the update carries no trace context or tracing is off here.
pub fn dispatch_span(envelope: &Envelope) -> Span {
    let Some(trace_context) = &envelope.trace_context else {
        return Span::none();
    };
    let span = tracing::info_span!(
        DISPATCH_SPAN,
        otel.kind = "consumer",
        mercure.update.id = envelope.update.id.as_str(),
        mercure.position = %envelope.position,
    );
    if !span.is_disabled() {
        let parent = TraceContextPropagator::new().extract(&StoredContext(trace_context));
        // Fails only without an OpenTelemetry layer, when the span is not exported anyway.
        let _ = span.set_parent(parent);
    }
    span
}

/// Writes what the propagator injects.
#[derive(Default)]
struct Carrier {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => self.traceparent = Some(value),
            TRACESTATE => self.tracestate = Some(value),
            _ => {}
        }
    }
}

/// Reads a stored context as the propagator's headers.
struct StoredContext<'a>(&'a TraceContext);

impl Extractor for StoredContext<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => Some(self.0.traceparent.as_str()),
            TRACESTATE => self.0.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        match self.0.tracestate {
            Some(_) => vec![TRACEPARENT, TRACESTATE],
            None => vec![TRACEPARENT],
        }
    }
}
