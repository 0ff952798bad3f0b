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
//! Before reading on after a reconnection, and after every full batch (when it may be falling behind),
//! it also checks whether Redis removed entries it had not read yet; those are lost for this node,
//! which it logs and counts. Trimming leaves no trace of what it removed, so the check counts: the
//! reader tracks the ordinal of its last entry (Redis 7's `entries-added` when it read the newest
//! entry, plus one per entry since), and entries were trimmed past it when
//! `entries-added - length` (entries ever removed, all from the front unless `XDEL`ed) exceeds it.
//! `XDEL`s past it show in `max-deleted-entry-id`. On Redis before 7 the check is skipped.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use quicksilver_protocol::{Envelope, Position};
use redis::streams::StreamId;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::commands::{self, TailEnd, Via};
use super::connection::{CallError, Conn};
use super::status::Counters;
use super::Shared;
use crate::UpdateSink;

/// Entries per `XREAD`.
const READ_COUNT: usize = 512;

/// How often a connected reader re-reads the stream's epoch.
const EPOCH_CHECK_EVERY: Duration = Duration::from_secs(5);

/// How often a reader that lost track of its ordinal tries to find it again (see the module docs).
const RESYNC_EVERY: Duration = Duration::from_secs(1);

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
    /// A loss was reported up to this position: do not report it again until the reader passes it.
    reported_until: Option<Position>,
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
            reported_until: None,
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
            Some(_) => self.check_gap(&mut conn).await?,
        }
        self.epoch = Some(epoch);
        shared.health.set_reader(self.partition, true);
        backoff.reset();
        tracing::debug!(partition = self.partition, stream = %keys.stream, "redis reader connected");

        let mut epoch_checked = Instant::now();
        let mut resync_tried = Instant::now();
        let window = settings.batch_window;
        let mut handed_over: Option<Instant> = None;
        let mut pace = false;
        loop {
            if let Some(at) = handed_over.filter(|_| pace) {
                // Pacing (see the module docs): what arrives meanwhile goes in the next batch.
                tokio::time::sleep_until(at + window).await;
            }
            let after = self.last.unwrap_or(Position::new(self.partition, 0, 0));
            let raw = commands::read_after(
                &mut conn,
                &keys.stream,
                after,
                READ_COUNT,
                settings.block,
                timeout,
            )
            .await?;
            let full = raw.len() >= READ_COUNT;
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
            }
            let resync = self.ordinal.is_none() && resync_tried.elapsed() >= RESYNC_EVERY;
            if full || resync {
                resync_tried = Instant::now();
                self.check_gap(&mut conn).await?;
            }
        }
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
        let tail =
            commands::read_tail(&mut via(conn, timeout), key, TailEnd::At(newest), limit).await?;
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
        Ok(())
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
        self.ordinal = self.ordinal.map(|k| k + raw.len() as u64);
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
        shared.caches[usize::from(self.partition)]
            .write()
            .reset(Vec::new(), true);
        self.last = Some(Position::new(self.partition, 0, 0));
        self.ordinal = None;
        self.reported_until = None;
        Ok(())
    }

    /// Whether Redis removed entries after the last one read (see the module docs), and
    /// re-learns the ordinal of the last entry when the reader is at the newest one.
    async fn check_gap(&mut self, conn: &mut Conn) -> Result<(), CallError> {
        let Some(last) = self.last else {
            return Ok(());
        };
        let shared = self.shared.clone();
        let key = &shared.keys[usize::from(self.partition)].stream;
        let timeout = shared.settings.command_timeout;
        let info = commands::stream_info(&mut via(conn, timeout), key, self.partition).await?;
        if self.reported_until.is_some_and(|r| !last.is_after(&r)) {
            // Still reading past a loss already reported.
            return Ok(());
        }
        self.reported_until = None;
        let removed = info
            .entries_added
            .map(|added| added.saturating_sub(info.length));
        let trimmed = matches!((self.ordinal, removed), (Some(k), Some(r)) if r > k);
        let deleted = info.max_deleted.is_after(&last);
        if trimmed || deleted {
            Counters::bump(&shared.counters.trimmed_gaps);
            tracing::warn!(
                partition = self.partition,
                stream = %key,
                last = %last,
                "stream lost entries this node had not read yet (trimmed or deleted): those updates \
                 never reach its subscribers (raise history_size, or find why the reader fell behind)"
            );
            // The cache must stay a contiguous run of the stream; older history comes from Redis.
            shared.caches[usize::from(self.partition)]
                .write()
                .reset(Vec::new(), false);
            self.ordinal = None;
            self.reported_until = Some(info.last_generated);
            return Ok(());
        }
        if info.last_generated == last {
            self.ordinal = info.entries_added;
        }
        // Behind by the entries added after the last one read (at least a batch when the ordinal of
        // the last entry is unknown, since this runs after a full batch).
        let lag = match (info.entries_added, self.ordinal) {
            (Some(added), Some(read)) => added.saturating_sub(read),
            _ => READ_COUNT as u64,
        };
        shared.lags[usize::from(self.partition)].store(lag, std::sync::atomic::Ordering::Relaxed);
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
