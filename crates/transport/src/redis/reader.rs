//! A reader group's task: one connection, one blocking read over the streams of every partition of
//! the group that this node reads, and the hand-over of every update to the node's fan-out.
//!
//! Which partitions form a group, and which of them are read, is `interest`'s business; the task
//! takes the group's membership before each read. A partition that joins is positioned on the
//! group's connection: on its first connection it warms the tail cache from the end of its stream
//! and starts reading after the newest entry (what was there before is history, not live). A
//! partition that leaves is dropped from the reads, its cache emptied; a group with no partition
//! left ends its task and closes its connection. Joining and leaving wake a read blocked in `XREAD
//! BLOCK` (`CLIENT UNBLOCK` of the reader's connection, sent on a pooled connection to the same
//! server), so a newcomer's updates do not wait for the block to end.
//!
//! The task then loops on `XREAD BLOCK` over the group's streams: each stream's batch is decoded,
//! appended to its partition's tail cache, and only then delivered to the sink in order, so a
//! subscriber that registered before reading history finds every update either in the cache or in
//! its live queue. Everything below holds per partition (each has its own cursors, epoch, checks,
//! pacing and nonces); only the connection is shared.
//!
//! After a connection failure the group's partitions are marked not ready, the task backs off (100
//! ms doubling to 5 s, with jitter), reconnects and resumes each stream after the last entry it
//! read, so nothing still in the streams is skipped. On every (re)connection and every few seconds
//! it compares the stream's epoch (see the `redis` module docs): a new epoch whose stream no longer
//! holds the last entry read means the stream was recreated, so the cache is emptied and reading
//! restarts at the new stream's beginning.
//!
//! A busy topic's reads are paced by the batch window (`RedisConfig::batch_window`). When the
//! updates just handed over repeat a topic (two in one batch, or the batch's first repeating the
//! previous batch's last within the window), its partition is left out of the group's reads until
//! the window since that hand-over has passed (the others are read meanwhile, the block shortened
//! to the window's end). What arrived meanwhile is then read and handed over together, so a
//! subscriber of that topic gets several updates in one write instead of one write each: on
//! loopback or a fast network the kernel's cost per write is most of a delivery's cost. Updates on
//! changing topics (many documents edited at once) gain nothing from that and are not delayed, nor
//! is an update after a quiet spell: the blocking `XREAD` already waiting reads it at once.
//!
//! # Nothing lost silently
//! A reader that falls further behind than its stream retains (a paused or overloaded node, a long
//! reconnection) would find the entries it had not read trimmed away, and its subscribers would
//! silently miss them. So whenever that is possible the reader reads *checked*: one script reads
//! the stream's counters and the entries after its position in the same instant, and the counters
//! say exactly whether anything after that position was removed. Trimming leaves no trace of what
//! it removed, so the check counts: the reader tracks the ordinal of its last entry (Redis 7's
//! `entries-added` when it read the newest entry, plus one per entry since), and entries after it
//! were trimmed when `entries-added - length` (entries ever removed, all from the front unless
//! `XDEL`ed) exceeds it; `XDEL`s past it show in `max-deleted-entry-id`; a stream whose newest id
//! or count went backwards rolled back (a replica without the newest entries took over).
//!
//! Reads are checked after a (re)connection, periodically, and while the partition is behind (one
//! script over the streams of the partitions due, a few dozen at most, without blocking). A plain
//! `XREAD` is safe otherwise: the stream keeps at least `stream_len` entries, so if entries after
//! the reader's position had been trimmed, the read would return a full batch of what is left; a
//! read that returns less cannot have skipped anything (with an age limit, also unless the reader's
//! position is about as old as the limit). A full batch, or one that old, is not handed over: its
//! partition is read again checked.
//!
//! A loss found is handed to the sink as a [`Gap`] of its partition only, before anything of that
//! partition read after it, counted, and logged with the number of entries missed (when Redis 7 can
//! count them); the node then ends its subscribers' streams so they resume with their last event id
//! and are told. The same happens when the stream was recreated under a live reader (its epoch
//! changed and its entries are gone). On Redis before 7 trimming cannot be counted and is not
//! detected.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::try_join_all;
use quicksilver_protocol::{Envelope, Position};
use redis::streams::StreamId;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::commands::{self, StreamInfo, TailEnd, Via};
use super::connection::{timed, CallError, Conn};
use super::interest::Group;
use super::status::{Counters, ReaderState};
use super::Shared;
use crate::{Gap, GapCause, UpdateSink};

/// How often a connected reader re-reads the stream's epoch, and reads checked once (which finds a
/// rollback by a failover that the connection did not notice).
const EPOCH_CHECK_EVERY: Duration = Duration::from_secs(5);

/// How often a reader that lost track of its ordinal tries to find it again (see the module docs).
const RESYNC_EVERY: Duration = Duration::from_secs(1);

/// With an age limit, a reader whose position is older than the limit minus this reads checked:
/// room for the clock difference between this node and Redis.
const AGE_SLACK_MS: u64 = 2_000;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How many publish nonces a reader remembers to recognise a retried `XADD`: a retry lands within
/// moments of the original, far fewer entries apart than this.
const RECENT_NONCES: usize = 4_096;

/// How many partitions one checked read covers at most: after a reconnection every partition of a
/// group reads checked, a few scripts of bounded size rather than one huge one.
const CHECKED_READ_PARTITIONS: usize = 32;

/// How soon a wake-up of a blocked read is sent again when it found nothing to wake (it reached
/// Redis before the read did).
const UNBLOCK_RETRY: Duration = Duration::from_millis(20);

/// How many times one read is looked for to be woken: a read that was never found blocked (its
/// connection's id changed under a cluster connection that reconnected by itself) ends with its
/// block instead.
const UNBLOCK_ATTEMPTS: u32 = 25;

/// The reader of one group of partitions: one task, one connection, one blocking `XREAD` over the
/// streams of every partition of the group the node reads (see the module docs).
pub(crate) struct GroupReader {
    shared: Arc<Shared>,
    group: Arc<Group>,
    sink: Arc<dyn UpdateSink>,
    /// The partitions read, as last taken from the group's membership.
    members: BTreeMap<u16, StreamReader>,
    /// Sees the membership change (see [`GroupReader::read`]).
    changes: tokio::sync::watch::Receiver<u64>,
    /// The membership's change number when last taken.
    synced: Option<u64>,
    /// The readiness state of a partition whose reader has not connected yet.
    starting_state: ReaderState,
}

/// Counts an open reader connection for as long as it lives.
struct OpenConnection<'a>(&'a AtomicU64);

impl<'a> OpenConnection<'a> {
    fn new(count: &'a AtomicU64) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl GroupReader {
    pub(crate) fn new(
        shared: Arc<Shared>,
        group: Arc<Group>,
        sink: Arc<dyn UpdateSink>,
        starting_state: ReaderState,
    ) -> Self {
        let changes = group.changes.subscribe();
        Self {
            shared,
            group,
            sink,
            changes,
            synced: None,
            members: BTreeMap::new(),
            starting_state,
        }
    }

    /// Reads until `shutdown` is cancelled or the group has no partition left.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new();
        loop {
            let failure = tokio::select! {
                _ = shutdown.cancelled() => break,
                outcome = self.session(&mut backoff) => match outcome {
                    Ok(()) => break,
                    Err(e) => e,
                },
            };
            for &partition in self.members.keys() {
                self.shared
                    .health
                    .set_reader(partition, ReaderState::Failing);
            }
            Counters::bump(&self.shared.counters.reader_errors);
            let delay = backoff.next();
            tracing::warn!(
                group = self.group.index,
                partitions = self.members.len(),
                error = %failure,
                retry_in = ?delay,
                "redis reader failed; reconnecting"
            );
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        for &partition in self.members.keys() {
            self.shared.forget(partition);
            self.shared.health.set_reader(partition, ReaderState::Idle);
        }
        if shutdown.is_cancelled() {
            // Subscribers still waiting for a position are told the transport closed.
            self.group.closed();
        }
    }

    /// Takes the group's membership: partitions no longer wanted (or wanted anew since) are
    /// forgotten, new ones added unpositioned. `false` when the group has no partition left (the
    /// group then counts this task as ended: a partition added later starts another).
    fn sync(&mut self) -> bool {
        // Read before the membership is taken: a change after this wakes the next read and shows
        // in the next sync. (The read's wait marks changes seen too, hence a number of our own.)
        let version = *self.changes.borrow_and_update();
        if !self.members.is_empty() && self.synced == Some(version) {
            // Unchanged since last taken (every change bumps the number).
            return true;
        }
        self.synced = Some(version);
        let Some(wanted) = self.group.take_members() else {
            return false;
        };
        let gone: Vec<u16> = self
            .members
            .iter()
            .filter(|(p, r)| wanted.get(p).map(|m| m.generation) != Some(r.generation))
            .map(|(p, _)| *p)
            .collect();
        for partition in gone {
            self.members.remove(&partition);
            // Its caches emptied (memory goes with the interest) and its position forgotten.
            self.shared.forget(partition);
            self.shared.health.set_reader(partition, ReaderState::Idle);
            tracing::debug!(
                partition,
                "no subscriber needs this partition: no longer read"
            );
        }
        for (partition, member) in wanted {
            if self.members.contains_key(&partition) {
                continue;
            }
            self.shared
                .health
                .set_reader(partition, self.starting_state);
            tracing::debug!(
                partition,
                group = self.group.index,
                "partition joins its reader group"
            );
            self.members.insert(
                partition,
                StreamReader::new(
                    self.shared.clone(),
                    partition,
                    self.sink.clone(),
                    member.generation,
                    member.positioned,
                ),
            );
        }
        true
    }

    /// One connection's life: `Ok` when the group has no partition left, or the error that ended it.
    async fn session(&mut self, backoff: &mut Backoff) -> Result<(), CallError> {
        if !self.sync() {
            return Ok(());
        }
        let shared = self.shared.clone();
        let timeout = shared.settings.command_timeout;
        let mut conn = shared.reader_connector.connect(timeout).await?;
        let _open = OpenConnection::new(&shared.reader_connections);
        // The connection's id, to wake its blocking read when a partition joins (see `read`).
        let mut id_cmd = redis::cmd("CLIENT");
        id_cmd.arg("ID");
        let client_id: Option<u64> = match timed(timeout, conn.query_at(&id_cmd, self.group.slot))
            .await
        {
            Ok(id) => Some(id),
            Err(e) if e.breaks_connection() => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "CLIENT ID refused: a partition joining a blocked read waits for the read to end");
                None
            }
        };
        self.position(&conn, true).await?;
        backoff.reset();
        tracing::debug!(
            group = self.group.index,
            partitions = self.members.len(),
            "redis reader connected"
        );
        loop {
            if !self.sync() {
                return Ok(());
            }
            self.position(&conn, false).await?;
            self.read(&mut conn, client_id).await?;
            // The periodic checks, side by side on the connection (it pipelines them).
            try_join_all(self.members.values_mut().map(|reader| {
                let mut conn = conn.clone();
                async move { reader.maintain(&mut conn).await }
            }))
            .await?;
        }
    }

    /// Positions every partition (`all`, on a new connection) or those that just joined, side by
    /// side on the connection: a node that starts reading hundreds of partitions at once positions
    /// them in a few round trips' time, not one after the other.
    async fn position(&mut self, conn: &Conn, all: bool) -> Result<(), CallError> {
        try_join_all(
            self.members
                .values_mut()
                .filter(|reader| all || !reader.is_positioned())
                .map(|reader| {
                    let mut conn = conn.clone();
                    async move { reader.position(&mut conn).await }
                }),
        )
        .await?;
        Ok(())
    }

    /// One read: checked for the partitions that must be (a few at a time), otherwise a blocking
    /// `XREAD` over every partition not held back by pacing, woken when the membership changes.
    async fn read(&mut self, conn: &mut Conn, client_id: Option<u64>) -> Result<(), CallError> {
        let shared = self.shared.clone();
        let settings = &shared.settings;
        let timeout = settings.command_timeout;
        let count = settings.read_count;
        let checked: Vec<u16> = self
            .members
            .iter()
            .filter(|(_, r)| r.checked)
            .map(|(p, _)| *p)
            .take(CHECKED_READ_PARTITIONS)
            .collect();
        if !checked.is_empty() {
            let (spans, streams) = self.streams_of(&checked);
            let refs: Vec<(&str, Position)> =
                streams.iter().map(|(k, p)| (k.as_str(), *p)).collect();
            let read = commands::read_checked(&mut via(conn, timeout), &refs, count).await?;
            let mut read = read.into_iter();
            for (partition, n) in spans {
                let part: Vec<_> = read.by_ref().take(n).collect();
                if let Some(reader) = self.members.get_mut(&partition) {
                    reader.take_checked(part).await;
                }
            }
            return Ok(());
        }
        let now = Instant::now();
        let readable: Vec<u16> = self
            .members
            .iter()
            .filter(|(_, r)| r.paced_until.is_none_or(|at| at <= now))
            .map(|(p, _)| *p)
            .collect();
        let next_paced = self
            .members
            .values()
            .filter_map(|r| r.paced_until)
            .filter(|at| *at > now)
            .min();
        if readable.is_empty() {
            // Every partition waits for its pacing window: sleep until the first one ends.
            if let Some(at) = next_paced {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = self.changes.changed() => {}
                }
            }
            return Ok(());
        }
        let block = next_paced.map_or(settings.block, |at| {
            settings.block.min(at - now).max(Duration::from_millis(1))
        });
        let (spans, streams) = self.streams_of(&readable);
        let refs: Vec<(&str, Position)> = streams.iter().map(|(k, p)| (k.as_str(), *p)).collect();
        let (shared, slot) = (&self.shared, self.group.slot);
        let changes = &mut self.changes;
        let read = commands::read_after(conn, &refs, count, block, timeout);
        tokio::pin!(read);
        // A partition that joins (or leaves) is taken in by the next read: wake this one if it is
        // blocked, by `CLIENT UNBLOCK` from another connection to the same server (the read then
        // returns as if its block had run out). Sent again while it found nothing to wake: it may
        // have reached Redis before the read itself (at most `UNBLOCK_ATTEMPTS` times).
        // The wake-up is sent beside the read, not in its place: a slow answer to it must not
        // hold back what the read returns meanwhile.
        let mut unblock_at: Option<Instant> = None;
        let mut waking: Option<std::pin::Pin<Box<dyn Future<Output = bool> + Send + '_>>> = None;
        let mut attempts = 0;
        let batches = loop {
            let may_wake = client_id.is_some() && attempts < UNBLOCK_ATTEMPTS;
            tokio::select! {
                read = &mut read => break read?,
                _ = changes.changed(), if unblock_at.is_none() && waking.is_none() && may_wake => {
                    unblock_at = Some(Instant::now());
                }
                _ = tokio::time::sleep_until(unblock_at.unwrap_or(now)), if unblock_at.is_some() => {
                    attempts += 1;
                    unblock_at = None;
                    if let Some(id) = client_id {
                        waking = Some(Box::pin(unblock(shared, slot, id)));
                    }
                }
                woke = async {
                    match waking.as_mut() {
                        Some(waking) => waking.await,
                        None => std::future::pending().await,
                    }
                }, if waking.is_some() => {
                    waking = None;
                    unblock_at = (!woke && attempts < UNBLOCK_ATTEMPTS)
                        .then(|| Instant::now() + UNBLOCK_RETRY);
                }
            }
        };
        let mut batches = batches.into_iter();
        for (partition, n) in spans {
            let part: Vec<_> = batches.by_ref().take(n).collect();
            if let Some(reader) = self.members.get_mut(&partition) {
                reader.take_read(part).await;
            }
        }
        Ok(())
    }

    /// The streams (key, position to read after) of `partitions`, and how many each has.
    fn streams_of(&self, partitions: &[u16]) -> (Vec<(u16, usize)>, Streams) {
        let mut spans = Vec::with_capacity(partitions.len());
        let mut streams = Vec::with_capacity(partitions.len() + 1);
        for partition in partitions {
            if let Some(reader) = self.members.get(partition) {
                let before = streams.len();
                streams.extend(reader.cursors().map(|c| (c.key.clone(), c.after())));
                spans.push((*partition, streams.len() - before));
            }
        }
        (spans, streams)
    }
}

/// Streams to read: each key, and the position to read after.
type Streams = Vec<(String, Position)>;

/// Wakes the blocked read of connection `client_id` on the server of `slot` (`CLIENT UNBLOCK`);
/// whether it found it blocked.
async fn unblock(shared: &Shared, slot: u16, client_id: u64) -> bool {
    let mut cmd = redis::cmd("CLIENT");
    cmd.arg("UNBLOCK").arg(client_id);
    match shared.pool.query_at::<i64>(&cmd, slot).await {
        Ok(n) => n > 0,
        Err(e) => {
            tracing::debug!(error = %e, "could not wake a blocked reader; it wakes when its block ends");
            true
        }
    }
}

/// The reading of one partition within its group (see the module docs).
pub(crate) struct StreamReader {
    shared: Arc<Shared>,
    partition: u16,
    sink: Arc<dyn UpdateSink>,
    /// Which membership of the partition in its group this is (a partition that left and joined
    /// again starts afresh).
    generation: u64,
    /// The partition's updates stream.
    updates: Cursor,
    /// The subscription events stream, read with partition 0's updates (`None` elsewhere).
    events: Option<Cursor>,
    /// The stream's epoch when last checked.
    epoch: Option<String>,
    /// Read checked (see the module docs): after a reconnection, periodically, and while behind.
    checked: bool,
    /// The last update handed over, whose first topic the next is compared with (for pacing, see
    /// the module docs).
    last_handed: Option<Arc<Envelope>>,
    /// When the last updates were handed over.
    handed_over: Option<Instant>,
    /// Pacing (see the module docs): the partition is left out of reads until then.
    paced_until: Option<Instant>,
    /// When the epoch was last compared, and when a lost ordinal was last looked for.
    epoch_checked: Instant,
    resync_tried: Instant,
    /// Updates read and cached but not handed over yet: an event that comes before one of them
    /// may not have been read yet (see [`StreamReader::hand_over_pending`]).
    pending_updates: VecDeque<Arc<Envelope>>,
    /// Events read and cached but not handed over yet: the update they follow may not have been
    /// read yet.
    pending_events: VecDeque<Arc<Envelope>>,
    /// What the newest event read follows: no event read later comes before it.
    events_floor: Option<Position>,
    /// Whether the last read returned every event stored up to its instant (not a full batch).
    events_caught_up: bool,
    /// Publish nonces of the entries read lately (see [`RECENT_NONCES`]).
    recent: RecentNonces,
    /// Set once the reader has found its place in its streams (its first connection warmed the
    /// caches): subscribers waiting for this partition are then served.
    positioned: Arc<tokio::sync::watch::Sender<bool>>,
}

/// Where a reader is in one stream.
struct Cursor {
    key: String,
    /// The partition index of the stream's positions (`partitions` for events).
    partition: u16,
    /// The last entry read (delivered, or skipped as undecodable); `None` before the first warm-up.
    last: Option<Position>,
    /// The `entries-added` ordinal of `last`, when known (see the module docs).
    ordinal: Option<u64>,
}

impl Cursor {
    fn new(key: &str, partition: u16) -> Self {
        Self {
            key: key.to_string(),
            partition,
            last: None,
            ordinal: None,
        }
    }

    fn after(&self) -> Position {
        self.last.unwrap_or(Position::new(self.partition, 0, 0))
    }
}

/// Whether a batch repeated a topic: between two of its updates, or between its first update and
/// the previous batch's last.
#[derive(Debug, Default)]
struct Repeats {
    within: bool,
    across: bool,
}

impl StreamReader {
    fn new(
        shared: Arc<Shared>,
        partition: u16,
        sink: Arc<dyn UpdateSink>,
        generation: u64,
        positioned: Arc<tokio::sync::watch::Sender<bool>>,
    ) -> Self {
        let keys = &shared.keys[usize::from(partition)];
        let updates = Cursor::new(&keys.stream, partition);
        let events = (partition == 0).then(|| Cursor::new(&keys.events, shared.events_partition()));
        Self {
            shared,
            partition,
            sink,
            generation,
            updates,
            events,
            epoch: None,
            checked: false,
            last_handed: None,
            handed_over: None,
            paced_until: None,
            epoch_checked: Instant::now(),
            resync_tried: Instant::now(),
            pending_updates: VecDeque::new(),
            pending_events: VecDeque::new(),
            events_floor: None,
            events_caught_up: true,
            recent: RecentNonces::default(),
            positioned,
        }
    }

    /// The cursors, updates first.
    fn cursors(&self) -> impl Iterator<Item = &Cursor> {
        std::iter::once(&self.updates).chain(self.events.as_ref())
    }

    fn cursor_mut(&mut self, index: usize) -> &mut Cursor {
        match (index, &mut self.events) {
            (1, Some(events)) => events,
            _ => &mut self.updates,
        }
    }

    /// Whether the partition was positioned on the group's current connection.
    fn is_positioned(&self) -> bool {
        self.epoch.is_some()
    }

    /// Finds the partition's place on a new connection: warms the caches on the first one,
    /// otherwise compares the epoch and reads checked next (whatever happened while disconnected
    /// shows in that read). Then subscribers waiting for the partition are served.
    async fn position(&mut self, conn: &mut Conn) -> Result<(), CallError> {
        let shared = self.shared.clone();
        let keys = &shared.keys[usize::from(self.partition)];
        let timeout = shared.settings.command_timeout;
        let epoch = commands::epoch(&mut via(conn, timeout), &keys.epoch).await?;
        match self.updates.last {
            None => self.warm(conn).await?,
            Some(last) if self.epoch.as_deref() != Some(epoch.as_str()) => {
                self.epoch_changed(conn, last).await?
            }
            Some(_) => self.checked = true,
        }
        self.epoch = Some(epoch);
        self.epoch_checked = Instant::now();
        self.resync_tried = Instant::now();
        shared
            .health
            .set_reader(self.partition, ReaderState::Connected);
        // Positioned: what is stored from now on is read live (see `interest`).
        self.positioned.send_replace(true);
        tracing::debug!(partition = self.partition, stream = %keys.stream, "partition positioned");
        Ok(())
    }

    /// The periodic checks after a read: the epoch every few seconds (and one checked read,
    /// which finds a rollback the connection did not notice), a lost ordinal every second.
    async fn maintain(&mut self, conn: &mut Conn) -> Result<(), CallError> {
        if self.epoch_checked.elapsed() >= EPOCH_CHECK_EVERY {
            let shared = self.shared.clone();
            let keys = &shared.keys[usize::from(self.partition)];
            let timeout = shared.settings.command_timeout;
            self.epoch_checked = Instant::now();
            let epoch = commands::epoch(&mut via(conn, timeout), &keys.epoch).await?;
            if self.epoch.as_deref() != Some(epoch.as_str()) {
                if let Some(last) = self.updates.last {
                    self.epoch_changed(conn, last).await?;
                }
                self.epoch = Some(epoch);
            }
            self.checked = true;
        }
        if self.cursors().any(|c| c.ordinal.is_none())
            && self.resync_tried.elapsed() >= RESYNC_EVERY
        {
            // Redis 7 counts entries, but an ordinal was lost: the next checked read re-learns
            // it when it reaches the newest entry.
            self.resync_tried = Instant::now();
            self.checked = true;
        }
        Ok(())
    }

    /// Takes a plain `XREAD`'s batches (one per cursor). One that may have skipped trimmed
    /// entries (full, or old) is not handed over: the partition is read again, checked.
    async fn take_read(&mut self, batches: Vec<Vec<StreamId>>) {
        let count = self.shared.settings.read_count;
        if batches.iter().any(|b| b.len() >= count) || self.older_than_age_limit() {
            self.checked = true;
            return;
        }
        for (index, batch) in batches.iter().enumerate() {
            let cursor = self.cursor_mut(index);
            cursor.ordinal = cursor.ordinal.map(|k| k + batch.len() as u64);
        }
        self.process(batches).await;
    }

    /// Takes a checked read's streams: losses are reported first (see [`StreamReader::account`]).
    async fn take_checked(&mut self, read: Vec<(StreamInfo, Vec<StreamId>)>) {
        let count = self.shared.settings.read_count;
        let mut batches = Vec::with_capacity(read.len());
        for (index, (info, raw)) in read.into_iter().enumerate() {
            self.account(index, &info, raw.len()).await;
            batches.push(raw);
        }
        self.checked = batches.iter().any(|b| b.len() >= count);
        self.process(batches).await;
    }

    /// Caches and hands over a read's batches; decides the pacing and the lag.
    async fn process(&mut self, batches: Vec<Vec<StreamId>>) {
        let window = self.shared.settings.batch_window;
        let count = self.shared.settings.read_count;
        let full = batches.iter().any(|b| b.len() >= count);
        let updates_caught_up = batches.first().is_none_or(|b| b.len() < count);
        self.events_caught_up = batches.get(1).is_none_or(|b| b.len() < count);
        if batches.iter().any(|b| !b.is_empty()) {
            let recent = self.handed_over.is_some_and(|at| at.elapsed() < window);
            let repeats = self.take(batches).await;
            // A full batch means falling behind: read on at once.
            let pace = !window.is_zero() && !full && (repeats.within || (repeats.across && recent));
            let now = Instant::now();
            self.handed_over = Some(now);
            self.paced_until = pace.then(|| now + window);
        }
        if updates_caught_up {
            // A read that returned less than a batch reached the newest entry: no lag.
            self.shared.lags[usize::from(self.partition)].store(0, Ordering::Relaxed);
        }
    }

    /// Whether, with an age limit, the last update read is about as old as the limit: updates after
    /// it may have been trimmed by age whatever the stream's length.
    fn older_than_age_limit(&self) -> bool {
        match (self.shared.settings.max_age, self.updates.last) {
            (Some(age), Some(last)) => {
                let now_ms = crate::now_micros() / 1_000;
                now_ms.saturating_sub(last.ms) + AGE_SLACK_MS > age.as_millis() as u64
            }
            _ => false,
        }
    }

    /// Reads the counters of a checked read of `read` entries after the last one of stream
    /// `index` (0: updates, 1: events): reports a loss (before the entries are handed over), and
    /// keeps the ordinal and the lag up to date.
    async fn account(&mut self, index: usize, info: &StreamInfo, read: usize) {
        let cursor = self.cursor_mut(index);
        let Some(last) = cursor.last else {
            return;
        };
        let read = read as u64;
        let removed = info
            .entries_added
            .map(|added| added.saturating_sub(info.length));
        let rolled_back = last.is_after(&info.last_generated)
            || matches!((info.entries_added, cursor.ordinal), (Some(added), Some(k)) if added < k);
        let partition = cursor.partition;
        if rolled_back {
            // The new master's entries are read from its own newest one on: what it holds up to
            // there was read already (it precedes what it lost).
            cursor.last = Some(info.last_generated);
            cursor.ordinal = info.entries_added;
            Counters::bump(&self.shared.counters.rollbacks);
            self.report(partition, GapCause::RolledBack, None, last)
                .await;
            // Events that follow lost updates would wait for ever: what is read goes now.
            self.flush_pending().await;
            self.advanced();
            return;
        }
        let trimmed = match (cursor.ordinal, removed) {
            (Some(k), Some(r)) if r > k => Some(r - k),
            _ => None,
        };
        let deleted = info.max_deleted.is_after(&last);
        if let Some(missed) = trimmed {
            // What the read returned starts at the first entry left: its ordinal is `removed + 1`.
            cursor.ordinal = removed.map(|r| r + read);
            Counters::bump(&self.shared.counters.trimmed_gaps);
            self.report(partition, GapCause::Trimmed, Some(missed), last)
                .await;
        } else if deleted {
            cursor.ordinal = None;
            Counters::bump(&self.shared.counters.trimmed_gaps);
            self.report(partition, GapCause::Trimmed, None, last).await;
        } else {
            cursor.ordinal = cursor.ordinal.map(|k| k + read);
        }
        let cursor = self.cursor_mut(index);
        if cursor.ordinal.is_none() && read == 0 && info.last_generated == last {
            cursor.ordinal = info.entries_added;
        }
        if index == 0 {
            // Behind by the entries added after those read (at least a batch when that cannot be
            // counted and the read was full).
            let lag = match (info.entries_added, cursor.ordinal) {
                (Some(added), Some(k)) => added.saturating_sub(k),
                _ if read >= self.shared.settings.read_count as u64 => read,
                _ => 0,
            };
            self.shared.lags[usize::from(self.partition)].store(lag, Ordering::Relaxed);
        }
    }

    /// Tells the sink that entries of `partition` after `last` were lost, logs and counts it; the
    /// reader's tail caches are emptied (they must stay contiguous runs of their streams; older
    /// history comes from Redis).
    async fn report(
        &mut self,
        partition: u16,
        cause: GapCause,
        missed: Option<u64>,
        last: Position,
    ) {
        let shared = self.shared.clone();
        if let Some(n) = missed {
            shared
                .counters
                .missed_entries
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
        tracing::warn!(
            partition,
            last = %last,
            missed = missed.map_or_else(|| "unknown".to_string(), |n| n.to_string()),
            cause = cause.as_str(),
            "updates were lost before this node read them; ending its subscribers' streams so they \
             resume and are told (raise history_size, or find why the reader fell behind)"
        );
        for slot in self.slots() {
            let mut history = shared.caches[slot].write();
            history.reset(false);
            // Where the reader goes on from is set by what it reads next.
            history.read = None;
        }
        self.sink
            .gap(Gap {
                partition,
                missed,
                cause,
            })
            .await;
    }

    /// The cache and progress indexes of this reader's streams.
    fn slots(&self) -> Vec<usize> {
        self.cursors().map(|c| usize::from(c.partition)).collect()
    }

    /// Fills the caches from the ends of the streams and starts after their newest entries.
    ///
    /// Each cache is filled from the stream it mirrors: the reader's own stream, or with retention
    /// rules each class's history stream, up to the reader's stream's newest entry (every copy in a
    /// class stream was stored with its entry there, so the class caches then hold exactly what
    /// came before the reader's starting point, and the reader adds what comes after).
    async fn warm(&mut self, conn: &mut Conn) -> Result<(), CallError> {
        let shared = self.shared.clone();
        let settings = &shared.settings;
        let timeout = settings.command_timeout;
        for index in 0..self.cursors().count() {
            let (key, partition) = {
                let c = self.cursor_mut(index);
                (c.key.clone(), c.partition)
            };
            let slot = usize::from(partition);
            // The counters first, then the tail up to the newest entry they name: the ordinal of
            // that entry is then known exactly, whatever is published meanwhile (read live after).
            let info = commands::stream_info(&mut via(conn, timeout), &key, partition).await?;
            let newest = info.last_generated;
            let wanted: Vec<(Option<Arc<str>>, String, usize, usize)> = shared.caches[slot]
                .read()
                .caches
                .iter()
                .map(|c| {
                    (
                        c.class.clone(),
                        c.key.clone(),
                        c.retention,
                        c.cache.capacity(),
                    )
                })
                .collect();
            let mut filled = Vec::with_capacity(wanted.len());
            for (class, history_key, retention, capacity) in wanted {
                if retention == 0 || capacity == 0 {
                    filled.push((class, history_key, Vec::new(), false));
                    continue;
                }
                let tail = commands::read_tail(
                    &mut via(conn, timeout),
                    &history_key,
                    TailEnd::At(newest),
                    capacity,
                    settings.read_count,
                )
                .await?;
                let entries: Vec<Arc<Envelope>> =
                    commands::decode_all(partition, tail.entries, |id, e| {
                        Counters::bump(&shared.counters.skipped_entries);
                        tracing::warn!(partition, entry = %id.id, error = %e, "skipping unreadable stream entry");
                    })
                    .into_iter()
                    .map(|read| {
                        self.recent.insert(read.nonce);
                        read.envelope
                    })
                    .collect();
                filled.push((class, history_key, entries, tail.exhausted));
            }
            {
                let mut history = shared.caches[slot].write();
                for (class, history_key, entries, exhausted) in filled {
                    // The rules may have changed meanwhile: a cache no longer there is skipped, a
                    // new one fills from now on.
                    let Some(cache) = history
                        .caches
                        .iter_mut()
                        .find(|c| c.class == class && c.key == history_key)
                    else {
                        continue;
                    };
                    cache.cache.reset(entries, exhausted);
                    cache.cache.start_after(newest);
                    if let Some(cutoff) = cache.age_cutoff_ms() {
                        cache.cache.prune_older_than(cutoff);
                    }
                }
                history.read = Some(newest);
            }
            let cursor = self.cursor_mut(index);
            cursor.last = Some(newest);
            cursor.ordinal = info.entries_added;
        }
        self.advanced();
        Ok(())
    }

    /// Publishes the reader's positions (what it has read and cached) to history lookups and to
    /// this node's event publishes.
    fn advanced(&self) {
        for cursor in self.cursors() {
            self.shared.progress[usize::from(cursor.partition)].send_replace(cursor.last);
        }
    }

    /// Caches a read (updates, then events when this reader has them), then hands over what can
    /// go (see [`StreamReader::hand_over_pending`]); says which topics of the updates repeated.
    async fn take(&mut self, batches: Vec<Vec<StreamId>>) -> Repeats {
        let shared = self.shared.clone();
        for (index, raw) in batches.into_iter().enumerate() {
            let partition = self.cursor_mut(index).partition;
            if let Some(last) = raw
                .last()
                .and_then(|e| Position::parse_stream_id(partition, &e.id))
            {
                self.cursor_mut(index).last = Some(last);
            }
            let mut entries = Vec::with_capacity(raw.len());
            let mut tags = Vec::with_capacity(raw.len());
            for read in commands::decode_all(partition, raw, |id, e| {
                Counters::bump(&shared.counters.skipped_entries);
                tracing::warn!(partition, entry = %id.id, error = %e, "skipping unreadable stream entry");
            }) {
                if !self.recent.insert(read.nonce) {
                    // A publish retried after it had been stored: the update is already here.
                    Counters::bump(&shared.counters.duplicates_suppressed);
                    tracing::debug!(partition, id = %read.envelope.update.id, "skipping a retried publish's second entry");
                    continue;
                }
                entries.push(read.envelope);
                tags.push(read.classes);
            }
            {
                // The entries and the position they bring the reader to, under one lock (see
                // `cache`).
                let mut history = shared.caches[usize::from(partition)].write();
                for (entry, tags) in entries.iter().zip(&tags) {
                    history.push(entry, tags.as_deref());
                }
                history.read = self.cursor_mut(index).last;
            }
            if index == 0 {
                self.pending_updates.extend(entries);
            } else {
                if let Some(follows) = entries.last().and_then(|e| e.follows) {
                    self.events_floor = Some(follows);
                }
                self.pending_events.extend(entries);
            }
        }
        self.advanced();
        self.hand_over_pending().await
    }

    /// Hands over, in order, every pending update and event whose place is settled.
    ///
    /// An event comes right after the update it follows (the newest update stored when it was
    /// stored), before any later one. So an event can go once that update has been read (it is at
    /// or before the last update read), and an update can go once no event still unread can come
    /// before it: the last read returned every event stored up to its instant, or the update is at
    /// or before what the newest event read follows (events follow updates in order). Whatever is
    /// not settled waits for the next read, which comes at once (the read that left it unsettled
    /// was a full batch).
    async fn hand_over_pending(&mut self) -> Repeats {
        let mut repeats = Repeats::default();
        let mut first = true;
        loop {
            let update_ok = self.pending_updates.front().is_some_and(|u| {
                self.events.is_none()
                    || self.events_caught_up
                    || self.events_floor.is_some_and(|f| !u.position.is_after(&f))
            });
            let event_ok = self.pending_events.front().is_some_and(|e| {
                e.follows
                    .is_none_or(|f| self.updates.last.is_some_and(|last| !f.is_after(&last)))
            });
            let take_event = match (
                update_ok,
                event_ok,
                self.pending_updates.front(),
                self.pending_events.front(),
            ) {
                (true, true, Some(u), Some(e)) => e.follows.is_none_or(|f| u.position.is_after(&f)),
                (true, _, _, _) => false,
                (false, true, _, _) => true,
                (false, false, _, _) => break,
            };
            if take_event {
                if let Some(event) = self.pending_events.pop_front() {
                    self.hand_over(event).await;
                }
                continue;
            }
            let Some(entry) = self.pending_updates.pop_front() else {
                break;
            };
            let topic = entry.update.topics.first();
            let previous = self
                .last_handed
                .as_ref()
                .and_then(|e| e.update.topics.first());
            if topic.is_some() && topic == previous {
                if first {
                    repeats.across = true;
                } else {
                    repeats.within = true;
                }
            }
            first = false;
            self.last_handed = Some(entry.clone());
            self.hand_over(entry).await;
        }
        repeats
    }

    /// Hands over everything pending, settled or not (after a loss: what it waited for is gone).
    async fn flush_pending(&mut self) {
        self.events_caught_up = true;
        self.events_floor = None;
        let events: Vec<_> = self.pending_events.drain(..).collect();
        for event in events {
            // Their update is read or lost: place them among what is pending as if read.
            let at = event.follows;
            while let Some(u) = self.pending_updates.front() {
                if at.is_some_and(|f| u.position.is_after(&f)) {
                    break;
                }
                if let Some(u) = self.pending_updates.pop_front() {
                    self.hand_over(u).await;
                }
            }
            self.hand_over(event).await;
        }
        let updates: Vec<_> = self.pending_updates.drain(..).collect();
        for update in updates {
            self.hand_over(update).await;
        }
    }

    async fn hand_over(&self, entry: Arc<Envelope>) {
        // A child of the publishing node's span when the entry carries its trace context.
        let span = crate::trace_context::dispatch_span(&entry);
        self.sink.deliver(entry).instrument(span).await;
    }

    /// The stream's epoch differs from the one last seen.
    async fn epoch_changed(&mut self, conn: &mut Conn, last: Position) -> Result<(), CallError> {
        let shared = self.shared.clone();
        let key = self.updates.key.clone();
        Counters::bump(&shared.counters.epoch_changes);
        let read_something = last != Position::new(self.partition, 0, 0);
        let timeout = shared.settings.command_timeout;
        if read_something && commands::contains(&mut via(conn, timeout), &key, last).await? {
            // Only the marker was lost (deleted or evicted): positions still hold.
            tracing::warn!(
                partition = self.partition,
                stream = %key,
                "stream epoch marker was renewed but the stream is intact; continuing"
            );
            return Ok(());
        }
        tracing::warn!(
            partition = self.partition,
            stream = %key,
            last = %last,
            "stream was recreated (epoch changed, e.g. Redis restarted without persistence): \
             updates stored before are gone, history restarts; reading the new stream from its start"
        );
        Counters::bump(&shared.counters.recreations);
        self.report(self.partition, GapCause::Recreated, None, last)
            .await;
        self.flush_pending().await;
        // Empty and complete: the new streams hold nothing older than what is read from now on.
        for slot in self.slots() {
            let mut history = shared.caches[slot].write();
            history.reset(true);
            // The new streams hold nothing from before: every cache holds all of them.
            let start = Position::new(slot as u16, 0, 0);
            for cache in &mut history.caches {
                cache.cache.start_after(start);
            }
            history.read = Some(start);
        }
        for index in 0..self.cursors().count() {
            let cursor = self.cursor_mut(index);
            cursor.last = Some(Position::new(cursor.partition, 0, 0));
            cursor.ordinal = Some(0);
        }
        self.advanced();
        Ok(())
    }
}

/// The publish nonces of the last [`RECENT_NONCES`] entries a reader read.
#[derive(Default)]
struct RecentNonces {
    order: VecDeque<u64>,
    set: std::collections::HashSet<u64>,
}

impl RecentNonces {
    /// Remembers `nonce`; `false` if it was already there (0, no nonce, is never a repeat).
    fn insert(&mut self, nonce: u64) -> bool {
        if nonce == 0 {
            return true;
        }
        if !self.set.insert(nonce) {
            return false;
        }
        self.order.push_back(nonce);
        if self.order.len() > RECENT_NONCES {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

fn via(conn: &mut Conn, timeout: Duration) -> Via<'_> {
    Via::Conn { conn, timeout }
}

/// Exponential back-off with jitter: each delay is drawn from the upper half of the current step, so
/// the readers of many nodes do not reconnect in lockstep after Redis comes back.
struct Backoff {
    step: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self { step: BACKOFF_MIN }
    }

    fn next(&mut self) -> Duration {
        let step = self.step;
        self.step = (step * 2).min(BACKOFF_MAX);
        step.mul_f64(0.5 + fastrand::f64() * 0.5)
    }

    fn reset(&mut self) {
        self.step = BACKOFF_MIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter() {
        let mut b = Backoff::new();
        let delays: Vec<Duration> = (0..10).map(|_| b.next()).collect();
        assert!(delays[0] >= BACKOFF_MIN / 2 && delays[0] <= BACKOFF_MIN);
        assert!(delays[9] >= BACKOFF_MAX / 2 && delays[9] <= BACKOFF_MAX);
        b.reset();
        assert!(b.next() <= BACKOFF_MIN);
    }
}
