//! Transports: the one place an update is stored and given its place in the hub's order.
//!
//! A publish is acknowledged only after [`Transport::publish`] returns: the update is then stored
//! and will be delivered. Every node runs the transport's reader, which hands each stored update, in
//! transport order, to an [`UpdateSink`] (the node's fan-out). The publishing node does not shortcut
//! to its own subscribers: it receives its updates from its reader like every other node, so all
//! nodes deliver in the same order. [`Transport::history`] answers reconnecting subscribers.
//!
//! # Layout
//! - [`Transport`], [`UpdateSink`], [`HistoryReply`] and [`TransportError`] (this file).
//! - [`memory`]: the embedded single-node transport, a bounded ring buffer with O(1) id lookup.

pub mod memory;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use quicksilver_protocol::{Envelope, Position, Update};
use thiserror::Error;

pub use memory::MemoryTransport;

/// Why a transport could not do what was asked.
#[derive(Debug, Error)]
pub enum TransportError {
    /// The backing store cannot be reached now; the request may be retried.
    #[error("transport unavailable: {0}")]
    Unavailable(String),
    /// The transport is shutting down.
    #[error("transport closed")]
    Closed,
    /// Stored data could not be decoded.
    #[error("corrupt stream entry: {0}")]
    Corrupt(String),
}

/// Where a reader hands the stored updates, in transport order.
#[async_trait]
pub trait UpdateSink: Send + Sync + 'static {
    /// Takes one update. May wait (back-pressure on the reader); must not drop it.
    async fn deliver(&self, envelope: Arc<Envelope>);
}

/// The updates a reconnecting subscriber missed.
#[derive(Debug, Default)]
pub struct HistoryReply {
    /// The id the replay starts after: the requested id when it was found, `None` when the
    /// subscriber asked for `earliest` or the id is unknown (answered as `earliest`).
    pub anchor: Option<String>,
    /// Every retained update after the anchor, in transport order (not yet filtered by topic or
    /// access: the caller knows the subscriber).
    pub entries: Vec<Arc<Envelope>>,
}

/// A place updates are stored, ordered and read back.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Stores an update and returns its position. Returning `Ok` means the update is stored and
    /// will reach every node's reader.
    async fn publish(&self, update: Update) -> Result<Position, TransportError>;

    /// The retained updates after `last_event_id` (`earliest`: all of them). An unknown id yields no
    /// entries and no anchor: the client is told `earliest` rather than left silently behind.
    async fn history(&self, last_event_id: &str) -> Result<HistoryReply, TransportError>;

    /// Starts this node's reader(s), which hand every stored update to `sink` in transport order
    /// until the transport is closed.
    fn start_reader(&self, sink: Arc<dyn UpdateSink>);

    /// Whether the transport can currently store and read updates (readiness probe).
    fn is_ready(&self) -> bool;

    /// A short name for logs and metrics (`memory`, `redis`).
    fn name(&self) -> &'static str;
}

/// Microseconds since the Unix epoch, stamped on updates when accepted (for latency metrics).
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
