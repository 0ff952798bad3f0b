//! Reading on interest: which partitions this node reads, and the reader tasks that come and go
//! with the subscribers that need them.
//!
//! Partitions are read in groups: partitions whose streams one command can read together, on one
//! connection, with one blocking `XREAD` (see `reader`), at most `reader_partitions` of them (a
//! wake-up of a blocking read costs Redis work per stream it names). On a plain Redis a group is a
//! run of partitions; on Redis Cluster a multi-key command needs one hash slot, so a group is also
//! within a slot: one partition each, or runs of the `P / G` partitions of a slot with
//! `partition_slots = G` (see `keys::reader_group`). A node therefore holds one reader connection
//! per group it reads, not one per partition.
//!
//! A subscriber's [`Scope`](crate::Scope) names the partitions it may match (see the `redis`
//! module docs); [`Readers::acquire`] counts it as a holder of each and adds the partition to its
//! group's membership (starting the group's reader if none runs, and waking its blocked read so
//! the newcomer does not wait for the block to end), then waits until every one of those
//! partitions has found its place in its stream (the group's reader warmed the tail cache and took
//! the newest entry as its starting point). The subscriber registered in the fan-out before asking, so from then on:
//! - every update stored after the reader's starting point reaches the subscriber live;
//! - everything up to it is in the tail cache (or in Redis), where its history lookup, made after
//!   the acquisition, finds it, and the lookup's high-water marks reach at least that point.
//!
//! Replay-then-live therefore holds exactly as for a reader that always ran: no gap, no duplicate.
//!
//! Dropping the [`Hold`] releases the partitions. A partition whose last holder left keeps its
//! reading for `idle_reader_linger` (a reconnecting subscriber finds it still read), then it
//! leaves its group: the group's reader drops its stream from its reads, empties its tail cache
//! (memory goes with the interest) and forgets its position; a group with no partition left ends
//! its task and closes its connection. The group's one task does all of this in order, so a
//! partition that joins again starts afresh after it was forgotten; a group's next task waits
//! until the previous one has finished, so two tasks never fill one cache. Nobody on the node held
//! the partition in between, so nobody can have missed what it did not read.
//!
//! With `read_on_interest` off, the transport holds every partition from the start for the life of
//! the node, and this is only where the readers are started.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::keys::{hash_slot, reader_group};
use super::reader::GroupReader;
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
    /// Index = reader group (see [`reader_group`]).
    groups: Vec<Arc<Group>>,
    /// The readiness state a partition starts in (see [`ReaderState`]).
    starting_state: ReaderState,
}

/// The sink's life: not yet given, given, let go at close.
enum SinkState {
    Unset,
    Set(Arc<dyn UpdateSink>),
    Closed,
}

/// One partition's interest.
#[derive(Default)]
struct Slot {
    /// Subscribers (holds) that need the partition.
    holders: usize,
    /// Counts the times the partition was taken or left idle, so that a lingering stop acts only if
    /// nothing happened since the release that scheduled it.
    idle_epoch: u64,
    /// While the partition is a member of its group: turns `true` once it is positioned.
    positioned: Option<watch::Receiver<bool>>,
}

/// The partitions read together on one connection, and the task that reads them.
pub(crate) struct Group {
    pub(crate) index: u16,
    /// The hash slot of the group's streams: connection commands go to its server on Redis
    /// Cluster.
    pub(crate) slot: u16,
    wanted: Mutex<Wanted>,
    /// Bumped (under the `wanted` lock) on every membership change: wakes the group's read.
    pub(crate) changes: watch::Sender<u64>,
}

/// A group's membership and task.
#[derive(Default)]
struct Wanted {
    members: BTreeMap<u16, Member>,
    /// Turns `true` when the running task has ended; `None` when no task runs.
    running: Option<watch::Receiver<bool>>,
    /// The last task that stopped: the next one waits until it has ended.
    ended: Option<watch::Receiver<bool>>,
    generations: u64,
}

/// A partition's membership of its group.
#[derive(Clone)]
pub(crate) struct Member {
    /// Which membership this is: a partition that left and joined again starts afresh.
    pub(crate) generation: u64,
    pub(crate) positioned: Arc<watch::Sender<bool>>,
}

impl Group {
    /// The members the task should read; `None` when there are none, and the task then counts as
    /// stopped (the next member starts another).
    pub(crate) fn take_members(&self) -> Option<BTreeMap<u16, Member>> {
        let mut wanted = self.wanted.lock();
        if wanted.members.is_empty() {
            wanted.ended = wanted.running.take();
            return None;
        }
        Some(wanted.members.clone())
    }

    /// The transport closed under the task: subscribers waiting for a position are told so.
    pub(crate) fn closed(&self) {
        let mut wanted = self.wanted.lock();
        wanted.members.clear();
        if let Some(running) = wanted.running.take() {
            wanted.ended = Some(running);
        }
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
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
        let settings = &shared.settings;
        let partitions = settings.partitions;
        let groups = (0..partitions)
            .map(|p| {
                reader_group(
                    p,
                    settings.cluster,
                    settings.partition_slots,
                    settings.reader_partitions,
                )
            })
            .max()
            .map_or(0, |g| g + 1);
        let group_of = |p: u16| {
            reader_group(
                p,
                settings.cluster,
                settings.partition_slots,
                settings.reader_partitions,
            )
        };
        let groups = (0..groups)
            .map(|index| {
                // Every partition of a group shares its first one's slot.
                let first = (0..partitions).find(|&p| group_of(p) == index).unwrap_or(0);
                Arc::new(Group {
                    index,
                    slot: hash_slot(&shared.keys[usize::from(first)].stream),
                    wanted: Mutex::new(Wanted::default()),
                    changes: watch::channel(0).0,
                })
            })
            .collect();
        Arc::new(Self {
            shared,
            sink: Mutex::new(SinkState::Unset),
            shutdown,
            slots: (0..partitions)
                .map(|_| Mutex::new(Slot::default()))
                .collect(),
            groups,
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
            let joined = match &slot.positioned {
                Some(joined) => joined.clone(),
                None => {
                    let joined = self.join(partition, &sink);
                    slot.positioned = Some(joined.clone());
                    joined
                }
            };
            positioned.push(joined);
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
            .filter(|s| s.lock().positioned.is_some())
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

    /// Takes the partition out of its group if nobody took or left the partition since the release
    /// that made it idle at `epoch`.
    fn stop_if_idle(&self, partition: u16, epoch: u64) {
        let Some(slot) = self.slots.get(usize::from(partition)) else {
            return;
        };
        let mut slot = slot.lock();
        if slot.holders > 0 || slot.idle_epoch != epoch {
            return;
        }
        if slot.positioned.take().is_some() {
            if let Some(group) = self.group_of(partition) {
                let mut wanted = group.wanted.lock();
                wanted.members.remove(&partition);
                group.changed();
            }
        }
    }

    fn group_of(&self, partition: u16) -> Option<&Arc<Group>> {
        let settings = &self.shared.settings;
        let index = reader_group(
            partition,
            settings.cluster,
            settings.partition_slots,
            settings.reader_partitions,
        );
        self.groups.get(usize::from(index))
    }

    /// Adds `partition` to its group (starting the group's task if none runs); the receiver turns
    /// `true` once the partition is positioned.
    fn join(&self, partition: u16, sink: &Arc<dyn UpdateSink>) -> watch::Receiver<bool> {
        let (positioned_tx, positioned) = watch::channel(false);
        let Some(group) = self.group_of(partition) else {
            // Unreachable (every partition has a group); the subscriber's wait times out.
            return positioned;
        };
        // Its readiness state from now on, not when the group's task gets to it: a node whose
        // readers must all be positioned (`read_on_interest` off) is otherwise ready for the
        // instant between the spawn and the task's first step, and what is published then is
        // taken for history by the warm-up instead of read live.
        self.shared
            .health
            .set_reader(partition, self.starting_state);
        let mut wanted = group.wanted.lock();
        wanted.generations += 1;
        let generation = wanted.generations;
        wanted.members.insert(
            partition,
            Member {
                generation,
                positioned: Arc::new(positioned_tx),
            },
        );
        if wanted.running.is_none() {
            let after = wanted.ended.take();
            wanted.running = Some(self.spawn(group.clone(), sink.clone(), after));
        }
        group.changed();
        positioned
    }

    fn spawn(
        &self,
        group: Arc<Group>,
        sink: Arc<dyn UpdateSink>,
        after: Option<watch::Receiver<bool>>,
    ) -> watch::Receiver<bool> {
        let (ended_tx, ended) = watch::channel(false);
        let shared = self.shared.clone();
        let starting_state = self.starting_state;
        let token = self.shutdown.child_token();
        tokio::spawn(async move {
            if let Some(mut before) = after {
                // Ended, or its task is gone: either way it no longer touches the caches.
                let _ = before.wait_for(|ended| *ended).await;
            }
            tracing::debug!(group = group.index, "reader group started");
            GroupReader::new(shared, group.clone(), sink, starting_state)
                .run(token)
                .await;
            tracing::debug!(group = group.index, "reader group stopped");
            ended_tx.send_replace(true);
        });
        ended
    }
}
