//! Reading on interest: which partitions this node reads, and the reader tasks that come and go
//! with the subscribers that need them.
//!
//! A subscriber's [`Scope`](crate::Scope) names the partitions it may match (see the `redis`
//! module docs); [`Readers::acquire`] counts it as a holder of each and starts the partition's
//! reader if none runs, then waits until every one of those readers has found its place in its
//! stream (its first connection warmed the tail cache and took the newest entry as its starting
//! point). The subscriber registered in the fan-out before asking, so from then on:
//! - every update stored after the reader's starting point reaches the subscriber live;
//! - everything up to it is in the tail cache (or in Redis), where its history lookup, made after
//!   the acquisition, finds it, and the lookup's high-water marks reach at least that point.
//!
//! Replay-then-live therefore holds exactly as for a reader that always ran: no gap, no duplicate.
//!
//! Dropping the [`Hold`] releases the partitions. A partition whose last holder left keeps its
//! reader for `idle_reader_linger` (a reconnecting subscriber finds it still running), then the
//! reader is stopped, its tail cache emptied (memory goes with the interest) and its position
//! forgotten. The next reader of that partition waits until the stopped one has finished, so two
//! readers never fill one cache, and starts afresh. Nobody on the node held the partition in
//! between, so nobody can have missed what it did not read.
//!
//! With `read_on_interest` off, the transport holds every partition from the start for the life of
//! the node, and this is only where the readers are started.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::reader::StreamReader;
use super::status::ReaderState;
use super::Shared;
use crate::{TransportError, UpdateSink};

/// The reader tasks of one node, started and stopped by interest (see the module docs).
pub(crate) struct Readers {
    shared: Arc<Shared>,
    /// Where readers hand their updates: set once when the transport's readers are started, let
    /// go when it closes (the fan-out then sees its last reader go).
    sink: Mutex<SinkState>,
    shutdown: CancellationToken,
    /// Index = partition.
    slots: Vec<Mutex<Slot>>,
    /// The readiness state a reader starts in (see [`ReaderState`]).
    starting_state: ReaderState,
}

/// The sink's life: not yet given, given, let go at close.
enum SinkState {
    Unset,
    Set(Arc<dyn UpdateSink>),
    Closed,
}

/// One partition's reading.
#[derive(Default)]
struct Slot {
    /// Subscribers (holds) that need the partition.
    holders: usize,
    /// Counts the times the partition was taken or left idle, so that a lingering stop acts only if
    /// nothing happened since the release that scheduled it.
    idle_epoch: u64,
    running: Option<Run>,
    /// Whether the last stopped reader has ended; the next one waits for it (they share the
    /// partition's tail cache).
    ended: Option<watch::Receiver<bool>>,
}

/// A running reader task.
struct Run {
    stop: CancellationToken,
    positioned: watch::Receiver<bool>,
    ended: watch::Receiver<bool>,
}

/// A hold on some partitions' readers; dropping it releases them.
pub(crate) struct Hold {
    readers: Arc<Readers>,
    partitions: Vec<u16>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.readers.release(&self.partitions);
    }
}

impl Readers {
    pub(crate) fn new(
        shared: Arc<Shared>,
        shutdown: CancellationToken,
        starting_state: ReaderState,
    ) -> Arc<Self> {
        let partitions = usize::from(shared.settings.partitions);
        Arc::new(Self {
            shared,
            sink: Mutex::new(SinkState::Unset),
            shutdown,
            slots: (0..partitions)
                .map(|_| Mutex::new(Slot::default()))
                .collect(),
            starting_state,
        })
    }

    /// Sets where readers hand their updates; `false` if it was already set.
    pub(crate) fn set_sink(&self, sink: Arc<dyn UpdateSink>) -> bool {
        let mut state = self.sink.lock();
        if !matches!(*state, SinkState::Unset) {
            return false;
        }
        *state = SinkState::Set(sink);
        true
    }

    /// Lets the sink go (the transport closed; its readers are cancelled): no reader starts again.
    pub(crate) fn close(&self) {
        *self.sink.lock() = SinkState::Closed;
    }

    /// Holds `partitions` (starting their readers where none runs) and returns the hold with one
    /// receiver per partition that turns `true` once its reader is positioned.
    pub(crate) fn hold(
        self: &Arc<Self>,
        partitions: Vec<u16>,
    ) -> Result<(Hold, Vec<watch::Receiver<bool>>), TransportError> {
        let sink = match &*self.sink.lock() {
            SinkState::Set(sink) => sink.clone(),
            SinkState::Unset => {
                return Err(TransportError::Unavailable(
                    "the transport's readers are not started".into(),
                ))
            }
            SinkState::Closed => return Err(TransportError::Closed),
        };
        let mut positioned = Vec::with_capacity(partitions.len());
        for &partition in &partitions {
            let Some(slot) = self.slots.get(usize::from(partition)) else {
                continue;
            };
            let mut slot = slot.lock();
            slot.holders += 1;
            slot.idle_epoch += 1;
            if slot.running.is_none() {
                let after = slot.ended.take();
                slot.running = Some(self.spawn(partition, sink.clone(), after));
            }
            if let Some(run) = &slot.running {
                positioned.push(run.positioned.clone());
            }
        }
        let hold = Hold {
            readers: self.clone(),
            partitions,
        };
        Ok((hold, positioned))
    }

    /// Holds `partitions` and waits (at most `wait`) until each of their readers is positioned.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        partitions: Vec<u16>,
        wait: Duration,
    ) -> Result<Hold, TransportError> {
        let (hold, positioned) = self.hold(partitions)?;
        let deadline = tokio::time::Instant::now() + wait;
        for mut ready in positioned {
            match tokio::time::timeout_at(deadline, ready.wait_for(|p| *p)).await {
                Ok(Ok(_)) => {}
                // The reader ended (the transport is closing).
                Ok(Err(_)) => return Err(TransportError::Closed),
                Err(_) => {
                    return Err(TransportError::Unavailable(
                        "a stream reader could not reach Redis in time".into(),
                    ))
                }
            }
        }
        Ok(hold)
    }

    /// How many partitions this node reads now.
    pub(crate) fn reading(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.lock().running.is_some())
            .count()
    }

    fn release(self: &Arc<Self>, partitions: &[u16]) {
        let linger = self.shared.settings.idle_reader_linger;
        let runtime = tokio::runtime::Handle::try_current().ok();
        for &partition in partitions {
            let Some(slot) = self.slots.get(usize::from(partition)) else {
                continue;
            };
            let epoch = {
                let mut slot = slot.lock();
                slot.holders = slot.holders.saturating_sub(1);
                if slot.holders > 0 {
                    continue;
                }
                slot.idle_epoch += 1;
                slot.idle_epoch
            };
            match &runtime {
                Some(runtime) if !linger.is_zero() => {
                    let readers = self.clone();
                    runtime.spawn(async move {
                        tokio::select! {
                            _ = readers.shutdown.cancelled() => {}
                            _ = tokio::time::sleep(linger) => readers.stop_if_idle(partition, epoch),
                        }
                    });
                }
                _ => self.stop_if_idle(partition, epoch),
            }
        }
    }

    /// Stops the partition's reader if nobody took or left the partition since the release that
    /// made it idle at `epoch`.
    fn stop_if_idle(&self, partition: u16, epoch: u64) {
        let Some(slot) = self.slots.get(usize::from(partition)) else {
            return;
        };
        let mut slot = slot.lock();
        if slot.holders > 0 || slot.idle_epoch != epoch {
            return;
        }
        if let Some(running) = slot.running.take() {
            running.stop.cancel();
            slot.ended = Some(running.ended);
            tracing::debug!(
                partition,
                "no subscriber needs this partition: reader stopped"
            );
        }
    }

    fn spawn(
        &self,
        partition: u16,
        sink: Arc<dyn UpdateSink>,
        after: Option<watch::Receiver<bool>>,
    ) -> Run {
        let stop = self.shutdown.child_token();
        let (positioned_tx, positioned) = watch::channel(false);
        let (ended_tx, ended) = watch::channel(false);
        let shared = self.shared.clone();
        let starting_state = self.starting_state;
        let token = stop.clone();
        tokio::spawn(async move {
            if let Some(mut before) = after {
                // Ended, or its task is gone: either way it no longer touches the cache.
                let _ = before.wait_for(|ended| *ended).await;
            }
            shared.health.set_reader(partition, starting_state);
            tracing::debug!(partition, "reader started");
            StreamReader::new(shared.clone(), partition, sink, positioned_tx)
                .run(token)
                .await;
            shared.forget(partition);
            ended_tx.send_replace(true);
        });
        Run {
            stop,
            positioned,
            ended,
        }
    }
}
