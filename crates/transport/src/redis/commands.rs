//! The Redis commands the transport sends, and the parsing of their replies.
//!
//! Readers send them on their own connection, publishes and history reads through the shared pool;
//! [`Via`] names which. Every command is bounded by a timeout (see `connection`). Entries come back as
//! raw [`StreamId`]s and are decoded by [`decode_all`], which skips (and reports) entries it cannot
//! read rather than failing the whole batch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use quicksilver_protocol::{Envelope, Position};
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use redis::{Cmd, FromRedisValue, Value};

use super::connection::{timed, CallError, Conn};
use super::entry::{self, EntryError, FIELD_CLASSES, FIELD_UPDATE, FIELD_VERSION, FORMAT_V1};
use super::pool::ConnectionPool;

/// Where a command is sent.
pub(crate) enum Via<'a> {
    /// Through the shared pool, counting each command sent in `sent`.
    Pool {
        pool: &'a ConnectionPool,
        sent: &'a AtomicU64,
    },
    /// On a reader's own connection, bounded by `timeout`.
    Conn {
        conn: &'a mut Conn,
        timeout: Duration,
    },
}

impl Via<'_> {
    pub(crate) async fn query<T: FromRedisValue>(&mut self, cmd: &Cmd) -> Result<T, CallError> {
        match self {
            Via::Pool { pool, sent } => {
                sent.fetch_add(1, Ordering::Relaxed);
                pool.query(cmd).await
            }
            Via::Conn { conn, timeout } => timed(*timeout, cmd.query_async(&mut **conn)).await,
        }
    }
}

/// `XADD <key> MAXLEN ~ <len> * v 1 u <payload>`: the stream id Redis assigned.
pub(crate) fn xadd(key: &str, max_len: usize, payload: &[u8]) -> Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(key)
        .arg("MAXLEN")
        .arg("~")
        .arg(max_len)
        .arg("*")
        .arg(FIELD_VERSION)
        .arg(FORMAT_V1)
        .arg(FIELD_UPDATE)
        .arg(payload);
    cmd
}

/// Appends a subscription event to the events stream (`KEYS[1]`), following the newest update of
/// partition 0's updates stream (`KEYS[2]`, same hash slot) at this instant: every update stored
/// after the event comes after it, every update stored before it comes before it, on every node
/// and in history (see `reader`). What an event follows never goes backwards along the events
/// stream (an `XDEL` of the newest update could make it): the event's own place is then the later
/// one. `ARGV[1]`: `MAXLEN ~`; `ARGV[2]`: the format version; `ARGV[3]`: the payload. Returns the
/// new entry's id.
const XADD_EVENT_SCRIPT: &str = "\
local function later(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if not am then return b end
  if not bm then return a end
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  if am > bm or (am == bm and as > bs) then return a end
  return b
end
local follows = '0-0'
local update = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
if update then follows = update[1] end
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if newest then
  local fields = newest[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'a' then follows = later(fields[i + 1], follows) end
  end
end
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'v', ARGV[2], 'a', follows, 'u', ARGV[3])";

/// The `EVAL` of [`XADD_EVENT_SCRIPT`]: an event into `events`, following `updates`' newest.
pub(crate) fn xadd_event(events: &str, updates: &str, max_len: usize, payload: &[u8]) -> Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(XADD_EVENT_SCRIPT)
        .arg(2)
        .arg(events)
        .arg(updates)
        .arg(max_len)
        .arg(FORMAT_V1)
        .arg(payload);
    cmd
}

/// Stores an update in a partition's stream (`KEYS[1]`) and in the history streams of its
/// retention classes there (`KEYS[2..]`, same hash slot), each copy under the partition stream's
/// new id, so a position means the same entry in all of them (see `crate::retention`).
/// `ARGV[1]`: the partition stream's `MAXLEN ~`; `ARGV[2]`: the format version; `ARGV[3]`: the
/// payload; `ARGV[4]`: the classes' tags (the `r` field, every class of the update's topics here,
/// those keeping no history included); then, per class stream, its `MAXLEN ~`, its `MINID ~` (`0`:
/// no age limit) and the expiry it is given (milliseconds, `0`: none). A class stream that already
/// holds a later id belongs to a partition stream since recreated (its positions mean nothing
/// now): it is emptied first. Returns the new id.
const XADD_RETAINED_SCRIPT: &str = "\
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'v', ARGV[2], 'r', ARGV[4], 'u', ARGV[3])
for k = 2, #KEYS do
  local a = 5 + (k - 2) * 3
  local ok = redis.pcall('XADD', KEYS[k], 'MAXLEN', '~', ARGV[a], id, 'v', ARGV[2], 'u', ARGV[3])
  if type(ok) == 'table' and ok.err then
    redis.call('DEL', KEYS[k])
    redis.call('XADD', KEYS[k], 'MAXLEN', '~', ARGV[a], id, 'v', ARGV[2], 'u', ARGV[3])
  end
  if ARGV[a + 1] ~= '0' then redis.call('XTRIM', KEYS[k], 'MINID', '~', ARGV[a + 1]) end
  if ARGV[a + 2] ~= '0' then redis.call('PEXPIRE', KEYS[k], ARGV[a + 2]) end
end
return id";

/// One retention class's history stream, as a publish writes it.
pub(crate) struct ClassStream<'a> {
    pub(crate) key: &'a str,
    /// `MAXLEN ~`.
    pub(crate) max_len: usize,
    /// `MINID ~`: entries older than this are dropped (`None`: no age limit).
    pub(crate) min_ms: Option<u64>,
    /// The stream expires this long after its last write (`None`: never).
    pub(crate) expire_ms: Option<u64>,
}

/// A Lua script sent by its SHA1 once Redis is known to hold it (`EVALSHA`), else in full (`EVAL`,
/// which also caches it there): Redis then does not hash the script's text on every call, about
/// 2 µs of its time per call for the scripts here.
pub(crate) struct Script {
    text: &'static str,
    /// Learnt from `SCRIPT LOAD` after the first `EVAL` that succeeded.
    sha: std::sync::OnceLock<String>,
}

impl Script {
    pub(crate) const fn new(text: &'static str) -> Self {
        Self {
            text,
            sha: std::sync::OnceLock::new(),
        }
    }

    /// Runs the script with what `args` appends (the key count, keys and arguments).
    pub(crate) async fn run<T: FromRedisValue>(
        &self,
        pool: &ConnectionPool,
        args: impl Fn(&mut Cmd),
    ) -> Result<T, CallError> {
        if let Some(sha) = self.sha.get() {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(sha);
            args(&mut cmd);
            match pool.query(&cmd).await {
                // A Redis that does not hold it (restarted, failed over, flushed): nothing ran;
                // sent in full below.
                Err(CallError::Redis(e)) if e.code() == Some("NOSCRIPT") => {}
                other => return other,
            }
        }
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(self.text);
        args(&mut cmd);
        let result = pool.query(&cmd).await;
        if result.is_ok() && self.sha.get().is_none() {
            let mut load = redis::cmd("SCRIPT");
            load.arg("LOAD").arg(self.text);
            if let Ok(sha) = pool.query::<String>(&load).await {
                let _ = self.sha.set(sha);
            }
        }
        result
    }
}

/// [`XADD_RETAINED_SCRIPT`], sent by its SHA1.
static XADD_RETAINED: Script = Script::new(XADD_RETAINED_SCRIPT);

/// Stores an update in `stream` (trimmed to `max_len`), tagged with the retention classes `tags`,
/// and in each of `classes` (see [`XADD_RETAINED_SCRIPT`]); the new stream id. Without a class
/// stream to write (every class of the update keeps no history), a plain `XADD`.
pub(crate) async fn xadd_retained(
    pool: &ConnectionPool,
    stream: &str,
    max_len: usize,
    payload: &[u8],
    tags: &str,
    classes: &[ClassStream<'_>],
) -> Result<String, CallError> {
    if classes.is_empty() {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(max_len)
            .arg("*")
            .arg(FIELD_VERSION)
            .arg(FORMAT_V1)
            .arg(FIELD_CLASSES)
            .arg(tags)
            .arg(FIELD_UPDATE)
            .arg(payload);
        return pool.query(&cmd).await;
    }
    XADD_RETAINED
        .run(pool, |cmd| {
            cmd.arg(1 + classes.len()).arg(stream);
            for class in classes {
                cmd.arg(class.key);
            }
            cmd.arg(max_len).arg(FORMAT_V1).arg(payload).arg(tags);
            for class in classes {
                cmd.arg(class.max_len)
                    .arg(class.min_ms.unwrap_or(0))
                    .arg(class.expire_ms.unwrap_or(0));
            }
        })
        .await
}

/// `XTRIM <key> MINID ~ <ms>`: drops entries older than `min_ms`.
pub(crate) fn xtrim_minid(key: &str, min_ms: u64) -> Cmd {
    let mut cmd = redis::cmd("XTRIM");
    cmd.arg(key).arg("MINID").arg("~").arg(min_ms);
    cmd
}

/// Entries read backwards from the end of a stream.
pub(crate) struct Tail {
    /// Oldest first.
    pub(crate) entries: Vec<StreamId>,
    /// The stream holds nothing older than `entries[0]` (it ran out before the limit).
    pub(crate) exhausted: bool,
    /// The read stopped at its byte budget: older entries exist that were not read.
    pub(crate) over_budget: bool,
}

/// The bytes of a raw entry's field values, about what it takes once read.
fn raw_bytes(entry: &StreamId) -> usize {
    entry
        .map
        .values()
        .map(|v| match v {
            Value::BulkString(b) => b.len(),
            _ => 16,
        })
        .sum::<usize>()
        + entry.id.len()
}

/// Where reading a stream's tail backwards starts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum TailEnd {
    /// At the newest entry.
    Newest,
    /// At this entry (included).
    At(Position),
    /// Just before this entry.
    Before(Position),
}

/// Up to `limit` entries of `key` from `end` backwards, in batches of `batch` entries (sized by
/// bytes: see `RedisConfig::read_budget`).
pub(crate) async fn read_tail(
    via: &mut Via<'_>,
    key: &str,
    end: TailEnd,
    limit: usize,
    batch: usize,
) -> Result<Tail, CallError> {
    read_tail_within(via, key, end, limit, batch, usize::MAX).await
}

/// [`read_tail`], stopping once the entries read take `budget` bytes (the newest entries within
/// it are kept; at least one).
pub(crate) async fn read_tail_within(
    via: &mut Via<'_>,
    key: &str,
    end: TailEnd,
    limit: usize,
    batch: usize,
    budget: usize,
) -> Result<Tail, CallError> {
    let mut newest_first: Vec<StreamId> = Vec::new();
    let mut end = match end {
        TailEnd::Newest => "+".to_string(),
        TailEnd::At(p) => p.stream_id(),
        TailEnd::Before(p) => format!("({}", p.stream_id()),
    };
    let mut exhausted = false;
    let mut over_budget = false;
    let mut bytes = 0usize;
    'read: while newest_first.len() < limit {
        let count = batch.max(1).min(limit - newest_first.len());
        let mut cmd = redis::cmd("XREVRANGE");
        cmd.arg(key).arg(&end).arg("-").arg("COUNT").arg(count);
        let reply: StreamRangeReply = via.query(&cmd).await?;
        let got = reply.ids.len();
        if let Some(oldest) = reply.ids.last() {
            end = format!("({}", oldest.id);
        }
        for entry in reply.ids {
            bytes += raw_bytes(&entry);
            if bytes > budget && !newest_first.is_empty() {
                over_budget = true;
                break 'read;
            }
            newest_first.push(entry);
        }
        if got < count {
            exhausted = true;
            break;
        }
    }
    newest_first.reverse();
    Ok(Tail {
        entries: newest_first,
        exhausted,
        over_budget,
    })
}

/// `XREAD COUNT <count> BLOCK <block> STREAMS <keys…> <afters…>` on a reader's connection: for
/// each `(key, after)` of `streams`, the entries after `after` (at most `count` per stream),
/// waiting up to `block` for some to arrive in any of them. One list per stream, in order.
pub(crate) async fn read_after(
    conn: &mut Conn,
    streams: &[(&str, Position)],
    count: usize,
    block: Duration,
    timeout: Duration,
) -> Result<Vec<Vec<StreamId>>, CallError> {
    let mut cmd = redis::cmd("XREAD");
    cmd.arg("COUNT")
        .arg(count)
        .arg("BLOCK")
        .arg(block.as_millis() as u64)
        .arg("STREAMS");
    for (key, _) in streams {
        cmd.arg(*key);
    }
    for (_, after) in streams {
        cmd.arg(after.stream_id());
    }
    let reply: Option<StreamReadReply> = timed(block + timeout, cmd.query_async(conn)).await?;
    let mut by_key: Vec<Vec<StreamId>> = streams.iter().map(|_| Vec::new()).collect();
    for stream in reply.into_iter().flat_map(|r| r.keys) {
        if let Some(i) = streams.iter().position(|(key, _)| *key == stream.key) {
            by_key[i] = stream.ids;
        }
    }
    Ok(by_key)
}

/// The stream's epoch: creates it (a random value, `SET NX`) if absent, then reads it.
pub(crate) async fn epoch(via: &mut Via<'_>, epoch_key: &str) -> Result<String, CallError> {
    let fresh = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    let mut set = redis::cmd("SET");
    set.arg(epoch_key).arg(&fresh).arg("NX");
    let _: Value = via.query(&set).await?;
    let mut get = redis::cmd("GET");
    get.arg(epoch_key);
    let current: Option<String> = via.query(&get).await?;
    // Deleted between the two commands: ours was the value set, or will be on the next check.
    Ok(current.unwrap_or(fresh))
}

/// Whether the stream still holds the entry at `position`.
pub(crate) async fn contains(
    via: &mut Via<'_>,
    key: &str,
    position: Position,
) -> Result<bool, CallError> {
    let id = position.stream_id();
    let mut cmd = redis::cmd("XRANGE");
    cmd.arg(key).arg(&id).arg(&id);
    let reply: StreamRangeReply = via.query(&cmd).await?;
    Ok(!reply.ids.is_empty())
}

/// A consistent snapshot of a stream's counters (`XINFO STREAM`, read inside a script so the fields
/// belong together).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StreamInfo {
    /// Entries ever added (Redis 7+; `None` on older servers).
    pub(crate) entries_added: Option<u64>,
    /// Entries held now.
    pub(crate) length: u64,
    /// The id of the newest entry ever added (`0-0` for no stream).
    pub(crate) last_generated: Position,
    /// The newest id removed by `XDEL` (Redis 7+; `0-0` when none or unknown).
    pub(crate) max_deleted: Position,
}

/// Reads the `XINFO STREAM` fields in one atomic step; a missing stream reads as empty.
const STREAM_INFO_SCRIPT: &str = "\
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0, '0-0', '0-0'} end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local f = {}
for i = 1, #info, 2 do f[info[i]] = info[i + 1] end
return {f['entries-added'] or -1, f['length'], f['last-generated-id'], f['max-deleted-entry-id'] or '0-0'}";

/// The stream's counters (see [`StreamInfo`]).
pub(crate) async fn stream_info(
    via: &mut Via<'_>,
    key: &str,
    partition: u16,
) -> Result<StreamInfo, CallError> {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(STREAM_INFO_SCRIPT).arg(1).arg(key);
    let (added, length, last, deleted): (i64, i64, String, String) = via.query(&cmd).await?;
    let zero = Position::new(partition, 0, 0);
    Ok(StreamInfo {
        entries_added: u64::try_from(added).ok(),
        length: u64::try_from(length).unwrap_or(0),
        last_generated: Position::parse_stream_id(partition, &last).unwrap_or(zero),
        max_deleted: Position::parse_stream_id(partition, &deleted).unwrap_or(zero),
    })
}

/// Reads each stream's counters and the entries after a position in one atomic step: whether
/// entries were removed after that position is then known exactly (nothing can be trimmed between
/// the two reads). `KEYS`: the streams (one hash slot); `ARGV`: the count, then one position per
/// stream. Returns, per stream, `{entries-added, length, last-generated-id, max-deleted-entry-id,
/// entries}`.
const CHECKED_READ_SCRIPT: &str = "\
local out = {}
for k = 1, #KEYS do
  if redis.call('EXISTS', KEYS[k]) == 0 then
    out[k] = {0, 0, '0-0', '0-0', {}}
  else
    local info = redis.call('XINFO', 'STREAM', KEYS[k])
    local f = {}
    for i = 1, #info, 2 do f[info[i]] = info[i + 1] end
    local entries = redis.call('XRANGE', KEYS[k], '(' .. ARGV[k + 1], '+', 'COUNT', ARGV[1])
    out[k] = {f['entries-added'] or -1, f['length'], f['last-generated-id'], f['max-deleted-entry-id'] or '0-0', entries}
  end
end
return out";

/// For each `(key, after)` of `streams` (one hash slot), up to `count` entries after `after`,
/// with the stream's counters at the same instant (see [`CHECKED_READ_SCRIPT`]). Does not wait
/// for entries: used by a reader that may be behind.
pub(crate) async fn read_checked(
    via: &mut Via<'_>,
    streams: &[(&str, Position)],
    count: usize,
) -> Result<Vec<(StreamInfo, Vec<StreamId>)>, CallError> {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(CHECKED_READ_SCRIPT).arg(streams.len());
    for (key, _) in streams {
        cmd.arg(*key);
    }
    cmd.arg(count);
    for (_, after) in streams {
        cmd.arg(after.stream_id());
    }
    type Checked = (i64, i64, String, String, StreamRangeReply);
    let replies: Vec<Checked> = via.query(&cmd).await?;
    Ok(streams
        .iter()
        .zip(replies)
        .map(|((_, after), (added, length, last, deleted, entries))| {
            let partition = after.partition;
            let zero = Position::new(partition, 0, 0);
            (
                StreamInfo {
                    entries_added: u64::try_from(added).ok(),
                    length: u64::try_from(length).unwrap_or(0),
                    last_generated: Position::parse_stream_id(partition, &last).unwrap_or(zero),
                    max_deleted: Position::parse_stream_id(partition, &deleted).unwrap_or(zero),
                },
                entries.ids,
            )
        })
        .collect())
}

/// A decoded entry, shared.
pub(crate) struct ReadEntry {
    pub(crate) envelope: Arc<Envelope>,
    /// The nonce of the publish that wrote it (0: none).
    pub(crate) nonce: u64,
    /// The retention classes it was stored for (comma-separated tags), when it says.
    pub(crate) classes: Option<Box<str>>,
}

/// Decodes raw entries of `partition`, handing each one that cannot be read to `on_skip`.
pub(crate) fn decode_all(
    partition: u16,
    raw: Vec<StreamId>,
    mut on_skip: impl FnMut(&StreamId, EntryError),
) -> Vec<ReadEntry> {
    raw.into_iter()
        .filter_map(|id| match entry::decode(partition, &id) {
            Ok(decoded) => Some(ReadEntry {
                envelope: Arc::new(decoded.envelope),
                nonce: decoded.nonce,
                classes: decoded.classes,
            }),
            Err(e) => {
                on_skip(&id, e);
                None
            }
        })
        .collect()
}
