//! The connections shared by publishes and history reads.
//!
//! A fixed set of `pool_size` multiplexed connections, opened lazily and used round-robin. Callers
//! do not check a connection out: they clone it (cheap) and send their command, so any number of
//! publishes are in flight at once, pipelined over the set. (A checkout pool such as deadpool's would
//! cap in-flight commands at the pool size and send a `PING` on every checkout, doubling a publish's
//! round trips.) A command that fails in a way that breaks its connection (I/O error, timeout) clears
//! that slot; the next caller on the slot reconnects. Readers do not use this pool: a blocking
//! `XREAD` would stall every command pipelined behind it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::{Cmd, FromRedisValue, Pipeline};
use tokio::sync::Mutex;

use super::connection::{timed, CallError, Conn, Connector};

/// A slot: the connection and a generation number, so a failure only clears the connection it
/// happened on, never a newer one.
struct Slot {
    conn: Mutex<Option<(u64, Conn)>>,
}

/// The shared connections (see the module docs).
pub(crate) struct ConnectionPool {
    connector: Connector,
    slots: Vec<Slot>,
    next: AtomicUsize,
    generation: AtomicUsize,
    timeout: Duration,
}

impl ConnectionPool {
    /// A pool of `size` connections opened by `connector`, each command bounded by `timeout`.
    pub(crate) fn new(connector: Connector, size: usize, timeout: Duration) -> Self {
        Self {
            connector,
            slots: (0..size.max(1))
                .map(|_| Slot {
                    conn: Mutex::new(None),
                })
                .collect(),
            next: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            timeout,
        }
    }

    /// Sends one command.
    pub(crate) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, CallError> {
        let (slot, generation, mut conn) = self.checkout().await?;
        let result = timed(self.timeout, cmd.query_async(&mut conn)).await;
        self.after(slot, generation, &result).await;
        result
    }

    /// Sends one command to the server that holds `slot` (see [`Conn::query_at`]).
    pub(crate) async fn query_at<T: FromRedisValue>(
        &self,
        cmd: &Cmd,
        slot: u16,
    ) -> Result<T, CallError> {
        let (index, generation, mut conn) = self.checkout().await?;
        let result = timed(self.timeout, conn.query_at(cmd, slot)).await;
        self.after(index, generation, &result).await;
        result
    }

    /// Sends a pipeline (one round trip).
    pub(crate) async fn query_pipeline<T: FromRedisValue>(
        &self,
        pipe: &Pipeline,
    ) -> Result<T, CallError> {
        let (slot, generation, mut conn) = self.checkout().await?;
        let result = timed(self.timeout, pipe.query_async(&mut conn)).await;
        self.after(slot, generation, &result).await;
        result
    }

    /// The next slot's connection, opening it if needed. The slot lock is held across the connect so
    /// a burst of callers opens one connection per slot, not one each; it is bounded by the timeout.
    async fn checkout(&self) -> Result<(usize, u64, Conn), CallError> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[index].conn.lock().await;
        if let Some((generation, conn)) = slot.as_ref() {
            return Ok((index, *generation, conn.clone()));
        }
        let conn = self.connector.connect(self.timeout).await?;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) as u64;
        *slot = Some((generation, conn.clone()));
        Ok((index, generation, conn))
    }

    async fn after<T>(&self, index: usize, generation: u64, result: &Result<T, CallError>) {
        let Err(e) = result else { return };
        if !e.breaks_connection() {
            return;
        }
        let mut slot = self.slots[index].conn.lock().await;
        if slot.as_ref().is_some_and(|(g, _)| *g == generation) {
            *slot = None;
        }
    }
}
