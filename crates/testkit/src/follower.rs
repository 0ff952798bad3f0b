//! A subscriber that behaves like a browser's `EventSource` across a cluster: it reads its stream
//! and, when the stream ends or breaks, reconnects with `Last-Event-ID` to the next node that
//! answers, as a browser does through a load balancer. It records every numeric event id it
//! receives, how often it reconnected, and how often a resume was answered `earliest` (it was told
//! it may have missed updates), so cluster tests can check the hub's promise from the
//! subscriber's side: every acknowledged update once and in order, or a signal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::task::JoinHandle;

use crate::sse::{SseClient, SseError};
use crate::WAIT;

/// How long a follower keeps going at most, whatever the test does.
const LIFETIME: Duration = Duration::from_secs(180);

/// What a follower saw (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Followed {
    /// The ids received, in order (each a number).
    pub received: Vec<u64>,
    /// Streams opened after the first.
    pub reconnections: u32,
    /// Resumes answered `Last-Event-ID: earliest`.
    pub told: u32,
}

/// A running follower (see the module docs). Stops when [`Follower::stop`] is called or dropped.
#[derive(Debug)]
pub struct Follower {
    seen: Arc<Mutex<Followed>>,
    stop: Arc<AtomicBool>,
    task: Option<JoinHandle<()>>,
}

impl Follower {
    /// Follows the selectors of `query` (a form-encoded query string, `topic=t`) on the hubs
    /// `nodes` (their Mercure endpoints), first connected to `nodes[first]`; returns once that
    /// first stream is open. Panics if none opens within [`WAIT`].
    pub async fn start(nodes: Vec<String>, first: usize, query: &str) -> Follower {
        let seen = Arc::new(Mutex::new(Followed::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (opened_tx, opened_rx) = tokio::sync::oneshot::channel();
        let task = {
            let (seen, stop, query) = (seen.clone(), stop.clone(), query.to_string());
            tokio::spawn(async move {
                let sse = SseClient::new();
                let mut opened = Some(opened_tx);
                let mut last_id: Option<String> = None;
                let mut i = first;
                let deadline = Instant::now() + LIFETIME;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let url = format!("{}?{query}", nodes[i % nodes.len()]);
                    let headers: Vec<(&str, &str)> = last_id
                        .as_deref()
                        .map(|id| vec![("Last-Event-ID", id)])
                        .unwrap_or_default();
                    let mut stream = match sse.open(&url, &headers).await {
                        Ok(s) if s.status() == 200 => s,
                        _ => {
                            i += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    match opened.take() {
                        Some(tx) => {
                            let _ = tx.send(());
                        }
                        None => {
                            let mut seen = seen.lock();
                            seen.reconnections += 1;
                            if stream.header("last-event-id") == Some("earliest") {
                                seen.told += 1;
                            }
                        }
                    }
                    while !stop.load(Ordering::Relaxed) {
                        match stream.next_event(Duration::from_millis(200)).await {
                            Ok(event) => {
                                if let Some(id) = event.id {
                                    if let Ok(seq) = id.parse() {
                                        seen.lock().received.push(seq);
                                    }
                                    last_id = Some(id);
                                }
                            }
                            Err(SseError::Timeout(_)) => {}
                            Err(_) => break,
                        }
                    }
                    // The stream ended (node killed, draining, or a loss told): like a browser,
                    // try the next node.
                    i += 1;
                }
            })
        };
        match tokio::time::timeout(WAIT, opened_rx).await {
            Ok(Ok(())) => {}
            _ => panic!("the follower's first stream did not open within {WAIT:?}"),
        }
        Follower {
            seen,
            stop,
            task: Some(task),
        }
    }

    /// The ids received so far.
    pub fn received(&self) -> Vec<u64> {
        self.seen.lock().received.clone()
    }

    /// Stops following and says what was seen.
    pub async fn stop(mut self) -> Followed {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let seen = self.seen.lock().clone();
        seen
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
