//! A partition's reader: the task that reads one stream, in order, on its own connection, and hands
//! every update to the node's fan-out.
//!
//! On its first connection it warms the tail cache from the end of the stream and starts reading
//! after the newest entry (what was there before is history, not live). Then it loops on
//! `XREAD BLOCK`: each batch is decoded, appended to the tail cache, and only then delivered to the
//! sink in order, so a subscriber that registered before reading history finds every update either
//! in the cache or in its live queue.
//!
//! After any failure the reader marks itself not ready, backs off (100 ms doubling to 5 s, with
//! jitter), reconnects and resumes after the last entry it read, so nothing still in the stream is
//! skipped. On every (re)connection and every few seconds it compares the stream's epoch (see the
//! `redis` module docs): a new epoch whose stream no longer holds the last entry read means the
//! stream was recreated, so the cache is emptied and reading restarts at the new stream's beginning.
//!
//! A busy topic's reads are paced by the batch window (`RedisConfig::batch_window`). When the
//! updates just handed over repeat a topic (two in one batch, or the batch's first repeating the
//! previous batch's last within the window), the reader waits until the window since that hand-over
//! has passed before it reads again. What arrived meanwhile is then read and handed over together,
//! so a subscriber of that topic gets several updates in one write instead of one write each: on
//! loopback or a fast network the kernel's cost per write is most of a delivery's cost. Updates on
//! changing topics (many documents edited at once) gain nothing from that and are not delayed, nor
//! is an update after a quiet spell: the blocking `XREAD` already waiting reads it at once.
//!
//! # Nothing lost silently
//! A reader that falls further behind than its stream retains (a paused or overloaded node, a long
//! reconnection) would find the entries it had not read trimmed away, and its subscribers would
//! silently miss them. So whenever that is possible the reader reads *checked*: one script reads
//! the stream's counters and the entries after its position in the same instant, and the counters
//! say exactly whether anything after that position was removed. Trimming leaves no trace of what it
//! removed, so the check counts: the reader tracks the ordinal of its last entry (Redis 7's
//! `entries-added` when it read the newest entry, plus one per entry since), and entries after it
//! were trimmed when `entries-added - length` (entries ever removed, all from the front unless
//! `XDEL`ed) exceeds it; `XDEL`s past it show in `max-deleted-entry-id`; a stream whose newest id
//! or count went backwards rolled back (a replica without the newest entries took over).
//!
//! Reads are checked after a (re)connection, periodically, and while the reader is behind. A plain
//! `XREAD` is safe otherwise: the stream keeps at least `stream_len` entries, so if entries after
//! the reader's position had been trimmed, the read would return a full batch of what is left;
//! a read that returns less cannot have skipped anything (with an age limit, also unless the
//! reader's position is about as old as the limit). A full batch, or one that old, is not handed
//! over: it is read again checked.
//!
//! A loss found is handed to the sink as a [`Gap`] before anything read after it, counted, and
//! logged with the number of entries missed (when Redis 7 can count them); the node then ends its
//! subscribers' streams so they resume with their last event id and are told. The same happens
//! when the stream was recreated under a live reader (its epoch changed and its entries are gone).
//! On Redis before 7 trimming cannot be counted and is not detected.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use quicksilver_protocol::{Envelope, Position};
use redis::streams::StreamId;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::commands::{self, StreamInfo, TailEnd, Via};
use super::connection::{CallError, Conn};
use super::status::Counters;
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

/// The reader of one partition (see the module docs).
pub(crate) struct StreamReader {
    shared: Arc<Shared>,
    partition: u16,
    sink: Arc<dyn UpdateSink>,
    /// The last entry read (delivered, or skipped as undecodable); `None` before the first warm-up.
    last: Option<Position>,
    /// The stream's epoch when last checked.
    epoch: Option<String>,
    /// The `entries-added` ordinal of `last`, when known (see the module docs).
    ordinal: Option<u64>,
    /// Read checked (see the module docs): after a reconnection, periodically, and while behind.
    checked: bool,
    /// The last update handed over, whose first topic the next is compared with (for pacing, see
    /// the module docs).
    last_handed: Option<Arc<Envelope>>,
}

/// Whether a batch repeated a topic: between two of its updates, or between its first update and
/// the previous batch's last.
#[derive(Debug, Default)]
struct Repeats {
    within: bool,
    across: bool,
}

impl StreamReader {
    pub(crate) fn new(shared: Arc<Shared>, partition: u16, sink: Arc<dyn UpdateSink>) -> Self {
        Self {
            shared,
            partition,
            sink,
            last: None,
            epoch: None,
            ordinal: None,
            checked: false,
            last_handed: None,
        }
    }

    /// Reads until `shutdown` is cancelled.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new();
        loop {
            let failure = tokio::select! {
                _ = shutdown.cancelled() => break,
                outcome = self.session(&mut backoff) => match outcome {
                    Err(e) => e,
                    Ok(never) => match never {},
                },
            };
            self.shared.health.set_reader(self.partition, false);
            Counters::bump(&self.shared.counters.reader_errors);
            let delay = backoff.next();
            tracing::warn!(
                partition = self.partition,
                error = %failure,
                retry_in = ?delay,
                "redis reader failed; reconnecting"
            );
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        self.shared.health.set_reader(self.partition, false);
    }

    /// One connection's life: returns only with the error that ended it.
    async fn session(&mut self, backoff: &mut Backoff) -> Result<Infallible, CallError> {
        let shared = self.shared.clone();
        let settings = &shared.settings;
        let keys = &shared.keys[usize::from(self.partition)];
        let timeout = settings.command_timeout;
        let mut conn = shared.reader_connector.connect(timeout).await?;
        let epoch = commands::epoch(&mut via(&mut conn, timeout), &keys.epoch).await?;
        match self.last {
            None => self.warm(&mut conn).await?,
            Some(last) if self.epoch.as_deref() != Some(epoch.as_str()) => {
                self.epoch_changed(&mut conn, last).await?
            }
            // Whatever happened while disconnected shows in the first (checked) read.
            Some(_) => self.checked = true,
        }
        self.epoch = Some(epoch);
        shared.health.set_reader(self.partition, true);
        backoff.reset();
        tracing::debug!(partition = self.partition, stream = %keys.stream, "redis reader connected");

        let mut epoch_checked = Instant::now();
        let mut resync_tried = Instant::now();
        let window = settings.batch_window;
        let count = settings.read_count;
        let mut handed_over: Option<Instant> = None;
        let mut pace = false;
        loop {
            if let Some(at) = handed_over.filter(|_| pace) {
                // Pacing (see the module docs): what arrives meanwhile goes in the next batch.
                tokio::time::sleep_until(at + window).await;
            }
            let after = self.last.unwrap_or(Position::new(self.partition, 0, 0));
            let raw = if self.checked {
                let (info, raw) = commands::read_checked(
                    &mut via(&mut conn, timeout),
                    &keys.stream,
                    after,
                    count,
                )
                .await?;
                self.account(&info, raw.len()).await;
                self.checked = raw.len() >= count;
                raw
            } else {
                let raw = commands::read_after(
                    &mut conn,
                    &keys.stream,
                    after,
                    count,
                    settings.block,
                    timeout,
                )
                .await?;
                if raw.len() >= count || self.older_than_age_limit() {
                    // It may have skipped trimmed entries: read it again, checked.
                    self.checked = true;
                    continue;
                }
                self.ordinal = self.ordinal.map(|k| k + raw.len() as u64);
                raw
            };
            let full = raw.len() >= count;
            if !raw.is_empty() {
                let recent = handed_over.is_some_and(|at| at.elapsed() < window);
                let repeats = self.take(raw).await;
                // A full batch means falling behind: read on at once.
                pace = !window.is_zero() && !full && (repeats.within || (repeats.across && recent));
                handed_over = Some(Instant::now());
            }
            if !full {
                // A read that returned less than a batch reached the newest entry: no lag.
                self.shared.lags[usize::from(self.partition)]
                    .store(0, std::sync::atomic::Ordering::Relaxed);
            }
            if epoch_checked.elapsed() >= EPOCH_CHECK_EVERY {
                epoch_checked = Instant::now();
                let epoch = commands::epoch(&mut via(&mut conn, timeout), &keys.epoch).await?;
                if self.epoch.as_deref() != Some(epoch.as_str()) {
                    if let Some(last) = self.last {
                        self.epoch_changed(&mut conn, last).await?;
                    }
                    self.epoch = Some(epoch);
                }
                self.checked = true;
            }
            if self.ordinal.is_none() && resync_tried.elapsed() >= RESYNC_EVERY {
                // Redis 7 counts entries, but the ordinal was lost: the next checked read re-learns
                // it when it reaches the newest entry.
                resync_tried = Instant::now();
                self.checked = true;
            }
        }
    }

    /// Whether, with an age limit, the last entry read is about as old as the limit: entries after
    /// it may have been trimmed by age whatever the stream's length.
    fn older_than_age_limit(&self) -> bool {
        match (self.shared.settings.max_age, self.last) {
            (Some(age), Some(last)) => {
                let now_ms = crate::now_micros() / 1_000;
                now_ms.saturating_sub(last.ms) + AGE_SLACK_MS > age.as_millis() as u64
            }
            _ => false,
        }
    }

    /// Reads the counters of a checked read of `read` entries after the last one: reports a loss
    /// (before the entries are handed over), and keeps the ordinal and the lag up to date.
    async fn account(&mut self, info: &StreamInfo, read: usize) {
        let Some(last) = self.last else {
            return;
        };
        let read = read as u64;
        let removed = info
            .entries_added
            .map(|added| added.saturating_sub(info.length));
        let rolled_back = last.is_after(&info.last_generated)
            || matches!((info.entries_added, self.ordinal), (Some(added), Some(k)) if added < k);
        if rolled_back {
            Counters::bump(&self.shared.counters.rollbacks);
            // The new master's entries are read from its own newest one on: what it holds up to
            // there was read already (it precedes what it lost).
            self.last = Some(info.last_generated);
            self.ordinal = info.entries_added;
            self.report(GapCause::RolledBack, None, last).await;
            self.advanced();
            return;
        }
        let trimmed = match (self.ordinal, removed) {
            (Some(k), Some(r)) if r > k => Some(r - k),
            _ => None,
        };
        let deleted = info.max_deleted.is_after(&last);
        if let Some(missed) = trimmed {
            Counters::bump(&self.shared.counters.trimmed_gaps);
            // What the read returned starts at the first entry left: its ordinal is `removed + 1`.
            self.ordinal = removed.map(|r| r + read);
            self.report(GapCause::Trimmed, Some(missed), last).await;
        } else if deleted {
            Counters::bump(&self.shared.counters.trimmed_gaps);
            self.ordinal = None;
            self.report(GapCause::Trimmed, None, last).await;
        } else {
            self.ordinal = self.ordinal.map(|k| k + read);
        }
        if self.ordinal.is_none() && read == 0 && info.last_generated == last {
            self.ordinal = info.entries_added;
        }
        // Behind by the entries added after those read (at least a batch when that cannot be
        // counted and the read was full).
        let lag = match (info.entries_added, self.ordinal) {
            (Some(added), Some(k)) => added.saturating_sub(k),
            _ if read >= self.shared.settings.read_count as u64 => read,
            _ => 0,
        };
        self.shared.lags[usize::from(self.partition)]
            .store(lag, std::sync::atomic::Ordering::Relaxed);
    }

    /// Tells the sink that updates after `last` were lost, logs and counts it; the tail cache is
    /// emptied (it must stay a contiguous run of the stream; older history comes from Redis).
    async fn report(&mut self, cause: GapCause, missed: Option<u64>, last: Position) {
        let shared = self.shared.clone();
        let key = &shared.keys[usize::from(self.partition)].stream;
        if let Some(n) = missed {
            shared
                .counters
                .missed_entries
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
        tracing::warn!(
            partition = self.partition,
            stream = %key,
            last = %last,
            missed = missed.map_or_else(|| "unknown".to_string(), |n| n.to_string()),
            cause = cause.as_str(),
            "updates were lost before this node read them; ending its subscribers' streams so they \
             resume and are told (raise history_size, or find why the reader fell behind)"
        );
        shared.caches[usize::from(self.partition)]
            .write()
            .reset(Vec::new(), false);
        self.sink
            .gap(Gap {
                partition: self.partition,
                missed,
                cause,
            })
            .await;
    }

    /// Fills the cache from the end of the stream and starts after its newest entry.
    async fn warm(&mut self, conn: &mut Conn) -> Result<(), CallError> {
        let shared = self.shared.clone();
        let settings = &shared.settings;
        let key = &shared.keys[usize::from(self.partition)].stream;
        let timeout = settings.command_timeout;
        // The counters first, then the tail up to the newest entry they name: the ordinal of that
        // entry is then known exactly, whatever is published meanwhile (it is read live after).
        let info = commands::stream_info(&mut via(conn, timeout), key, self.partition).await?;
        let newest = info.last_generated;
        let limit = settings.cache_capacity.max(1);
        let tail = commands::read_tail(
            &mut via(conn, timeout),
            key,
            TailEnd::At(newest),
            limit,
            settings.read_count,
        )
        .await?;
        let entries = commands::decode_all(self.partition, tail.entries, |id, e| {
            Counters::bump(&shared.counters.skipped_entries);
            tracing::warn!(partition = self.partition, entry = %id.id, error = %e, "skipping unreadable stream entry");
        });
        {
            let mut cache = shared.caches[usize::from(self.partition)].write();
            cache.reset(entries, tail.exhausted);
            if let Some(cutoff) = settings.age_cutoff_ms() {
                cache.prune_older_than(cutoff);
            }
        }
        self.last = Some(newest);
        self.ordinal = info.entries_added;
        self.advanced();
        Ok(())
    }

    /// Publishes the reader's position (what it has read and cached) to history lookups.
    fn advanced(&self) {
        self.shared.progress[usize::from(self.partition)].send_replace(self.last);
    }

    /// Appends a batch to the cache, then delivers it in order; says which topics repeated.
    async fn take(&mut self, raw: Vec<StreamId>) -> Repeats {
        let shared = self.shared.clone();
        if let Some(last) = raw
            .last()
            .and_then(|e| Position::parse_stream_id(self.partition, &e.id))
        {
            self.last = Some(last);
        }
        let entries = commands::decode_all(self.partition, raw, |id, e| {
            Counters::bump(&shared.counters.skipped_entries);
            tracing::warn!(partition = self.partition, entry = %id.id, error = %e, "skipping unreadable stream entry");
        });
        {
            let mut cache = shared.caches[usize::from(self.partition)].write();
            for entry in &entries {
                cache.push(entry.clone());
            }
            if let Some(cutoff) = shared.settings.age_cutoff_ms() {
                cache.prune_older_than(cutoff);
            }
        }
        self.advanced();
        let mut repeats = Repeats::default();
        for (i, entry) in entries.into_iter().enumerate() {
            let topic = entry.update.topics.first();
            let previous = self
                .last_handed
                .as_ref()
                .and_then(|e| e.update.topics.first());
            if topic.is_some() && topic == previous {
                if i == 0 {
                    repeats.across = true;
                } else {
                    repeats.within = true;
                }
            }
            self.last_handed = Some(entry.clone());
            // A child of the publishing node's span when the entry carries its trace context.
            let span = crate::trace_context::dispatch_span(&entry);
            self.sink.deliver(entry).instrument(span).await;
        }
        repeats
    }

    /// The stream's epoch differs from the one last seen.
    async fn epoch_changed(&mut self, conn: &mut Conn, last: Position) -> Result<(), CallError> {
        let shared = self.shared.clone();
        let key = &shared.keys[usize::from(self.partition)].stream;
        Counters::bump(&shared.counters.epoch_changes);
        let read_something = last != Position::new(self.partition, 0, 0);
        let timeout = shared.settings.command_timeout;
        if read_something && commands::contains(&mut via(conn, timeout), key, last).await? {
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
        self.report(GapCause::Recreated, None, last).await;
        // Empty and complete: the new stream holds nothing older than what is read from now on.
        shared.caches[usize::from(self.partition)]
            .write()
            .reset(Vec::new(), true);
        self.last = Some(Position::new(self.partition, 0, 0));
        self.ordinal = Some(0);
        self.advanced();
        Ok(())
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
