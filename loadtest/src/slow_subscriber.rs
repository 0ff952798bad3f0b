//! A slow consumer: subscribes, reads the response head and preamble, then never reads again.
//!
//! It speaks HTTP/1.1 by hand on a socket with a small receive buffer, because a hyper connection
//! would keep reading into its own buffers. Once the kernel buffers fill, the hub can no longer
//! write to it, and a well-behaved hub cuts it off rather than queue without bound. When the
//! worker stops, the subscriber drains its socket for a short while to learn whether the hub
//! closed the connection (end of stream seen) or still holds it open.

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
const DRAIN_PROBE: Duration = Duration::from_secs(3);
/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// What a slow consumer experienced.
#[derive(Debug, Default)]
pub(crate) struct SlowReport {
    pub(crate) connect_error: Option<String>,
    /// The hub had closed the connection by the end of the run.
    pub(crate) closed_by_hub: bool,
    /// Bytes read after the run (what the hub had buffered or still sent).
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
    let deadline = Instant::now() + DRAIN_PROBE;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                report.closed_by_hub = true;
                break;
            }
            Ok(Ok(n)) => report.drained_bytes += n as u64,
            Err(_) => break,
        }
    }
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
