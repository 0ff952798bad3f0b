//! A slow consumer: subscribes, reads the response head and preamble, then never reads again.
//!
//! It speaks HTTP/1.1 by hand on a socket with a small receive buffer, because a hyper connection
//! would keep reading into its own buffers. Once the kernel buffers fill, the hub can no longer
//! write to it, and a well-behaved hub cuts it off rather than queue without bound. When the
//! worker stops, the subscriber drains its socket (bounded in time) to learn what the hub did:
//! ended the response (the chunked body's last chunk, or the connection closed), kept it open
//! with nothing more to send, or was still sending when the probe gave up.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{timeout, Instant};

use crate::cli::AuthMode;
use crate::directive::Directive;
use crate::net::{self, Endpoint};
use crate::plan::{Plan, SubscriberSpec};
use crate::subscriber::lock;
use crate::worker::WorkerShared;

/// How long the final drain may take to see the end of the stream.
const DRAIN_PROBE: Duration = Duration::from_secs(10);
/// A pause this long in the drain means the hub has nothing more to send.
const DRAIN_IDLE: Duration = Duration::from_secs(1);
/// The last chunk of a chunked body: the response is over.
const LAST_CHUNK: &[u8] = b"\r\n0\r\n\r\n";
/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

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
    spec: SubscriberSpec,
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
    spec: &SubscriberSpec,
    plan: &Plan,
    endpoint: &Endpoint,
) -> Result<tokio::net::TcpStream, String> {
    let source =
        (!plan.source_ips.is_empty()).then(|| plan.source_ips[spec.index % plan.source_ips.len()]);
    let mut stream = net::connect(
        endpoint.addr,
        source,
        Some(plan.slow_recv_buffer),
        plan.connect_timeout,
    )
    .await
    .map_err(|e| e.to_string())?;
    let token = spec.token.map(|t| plan.tokens[t].as_str());
    let mut params: Vec<(&str, &str)> = spec
        .selectors
        .iter()
        .map(|s| ("topic", s.as_str()))
        .collect();
    if let (AuthMode::Query, Some(token)) = (plan.auth, token) {
        params.push(("authorization", token));
    }
    let mut head = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n",
        endpoint.path_with_query(params),
        endpoint.host
    );
    match (plan.auth, token) {
        (AuthMode::Header, Some(t)) => head.push_str(&format!("Authorization: Bearer {t}\r\n")),
        (AuthMode::Cookie, Some(t)) => {
            head.push_str(&format!("Cookie: mercureAuthorization={t}\r\n"));
        }
        _ => {}
    }
    head.push_str("\r\n");
    let exchange = async {
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut got = Vec::with_capacity(1024);
        let mut buf = [0u8; 1024];
        loop {
            let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed before the preamble".to_owned());
            }
            got.extend_from_slice(&buf[..n]);
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let status_ok =
                    got.starts_with(b"HTTP/1.1 200") || got.starts_with(b"HTTP/1.0 200");
                if !status_ok {
                    let line = got.split(|&b| b == b'\r').next().unwrap_or_default();
                    return Err(String::from_utf8_lossy(line).into_owned());
                }
                if got.len() > end + 4 {
                    return Ok(());
                }
            }
            if got.len() > MAX_HEAD {
                return Err("response head too large".to_owned());
            }
        }
    };
    timeout(plan.connect_timeout, exchange)
        .await
        .map_err(|_| "no preamble in time".to_owned())??;
    Ok(stream)
}
