//! A slow consumer: subscribes, reads the response head and preamble, then never reads again.
//!
//! It opens its request with the subscribers' minimal client ([`crate::http1`]) on a socket with a
//! small receive buffer, then takes the socket back and stops reading. Once the kernel buffers
//! fill, the hub can no longer write to it, and a well-behaved hub cuts it off rather than queue
//! without bound. When the
//! worker stops, the subscriber drains its socket (bounded in time) to learn what the hub did:
//! ended the response (the chunked body's last chunk, or the connection closed), kept it open
//! with nothing more to send, or was still sending when the probe gave up.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::time::{timeout, Instant};

use crate::directive::Directive;
use crate::http1::{Decoded, Http1Stream};
use crate::net::{self, Endpoint};
use crate::plan::{Plan, SubscriberPlan};
use crate::subscriber::{lock, subscribe_request};
use crate::worker::WorkerShared;

/// How long the final drain may take to see the end of the stream.
const DRAIN_PROBE: Duration = Duration::from_secs(10);
/// A pause this long in the drain means the hub has nothing more to send.
const DRAIN_IDLE: Duration = Duration::from_secs(1);
/// The last chunk of a chunked body: the response is over.
const LAST_CHUNK: &[u8] = b"\r\n0\r\n\r\n";

/// What the final drain found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum DrainOutcome {
    /// The hub ended the response or closed the connection: it cut the subscriber off.
    CutOff,
    /// Everything was drained and the response is still open: the hub kept the subscriber.
    #[default]
    KeptOpen,
    /// Data was still flowing when the probe gave up.
    StillSending,
}

/// What a slow consumer experienced.
#[derive(Debug, Default)]
pub(crate) struct SlowReport {
    pub(crate) connect_error: Option<String>,
    pub(crate) outcome: DrainOutcome,
    /// Bytes read after the run (what the hub and the kernel had buffered, or still sent).
    pub(crate) drained_bytes: u64,
}

/// Runs one slow consumer until the stop directive.
pub(crate) async fn run(
    spec: SubscriberPlan,
    plan: Arc<Plan>,
    endpoints: Arc<Vec<Endpoint>>,
    shared: Arc<WorkerShared>,
    mut directive: watch::Receiver<Directive>,
) -> SlowReport {
    let begun = Instant::now();
    let endpoint = &endpoints[spec.index % endpoints.len()];
    let mut stream = match open(&spec, &plan, endpoint).await {
        Ok(s) => s,
        Err(e) => {
            shared.note_connect_failure(&e);
            return SlowReport {
                connect_error: Some(e),
                ..SlowReport::default()
            };
        }
    };
    lock(&shared.connect_latency).record(begun.elapsed().as_micros() as u64);
    shared.slow_connected.fetch_add(1, Ordering::Relaxed);
    // Never read again until told to stop.
    while !directive.borrow_and_update().stop {
        if directive.changed().await.is_err() {
            break;
        }
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut report = SlowReport::default();
    let mut tail: Vec<u8> = Vec::with_capacity(2 * LAST_CHUNK.len());
    let deadline = Instant::now() + DRAIN_PROBE;
    report.outcome = loop {
        let idle = (Instant::now() + DRAIN_IDLE).min(deadline);
        match tokio::time::timeout_at(idle, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break DrainOutcome::CutOff,
            Ok(Ok(n)) => {
                report.drained_bytes += n as u64;
                tail.extend_from_slice(&buf[n.saturating_sub(LAST_CHUNK.len())..n]);
                let keep = tail.len().saturating_sub(LAST_CHUNK.len());
                tail.drain(..keep);
                if tail == LAST_CHUNK {
                    break DrainOutcome::CutOff;
                }
            }
            Err(_) if Instant::now() >= deadline => break DrainOutcome::StillSending,
            Err(_) => break DrainOutcome::KeptOpen,
        }
    };
    report
}

/// Connects, sends the request and reads until the head and the first body bytes arrived.
async fn open(
    spec: &SubscriberPlan,
    plan: &Plan,
    endpoint: &Endpoint,
) -> Result<tokio::net::TcpStream, String> {
    let source =
        (!plan.source_ips.is_empty()).then(|| plan.source_ips[spec.index % plan.source_ips.len()]);
    let tcp = net::connect(
        endpoint.addr,
        source,
        Some(plan.slow_recv_buffer),
        plan.connect_timeout,
    )
    .await
    .map_err(|e| e.to_string())?;
    let request = subscribe_request(plan, spec, endpoint, None).map_err(|e| e.to_string())?;
    let exchange = async {
        let mut stream = Http1Stream::open(tcp, &request)
            .await
            .map_err(|e| e.to_string())?;
        if stream.status != StatusCode::OK {
            return Err(format!("HTTP {}", stream.status));
        }
        loop {
            let mut got = false;
            let decoded = stream.decode(|_| got = true).map_err(|e| e.to_string())?;
            if got {
                return Ok(stream.into_inner());
            }
            if decoded == Decoded::Ended {
                return Err("closed before the preamble".to_owned());
            }
            stream.fill().await.map_err(|e| e.to_string())?;
        }
    };
    timeout(plan.connect_timeout, exchange)
        .await
        .map_err(|_| "no preamble in time".to_owned())?
}
