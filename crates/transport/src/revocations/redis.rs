//! The revocations kept in Redis, shared by every node of the cluster.
//!
//! # Keys
//! All keys share one hash tag, `{<prefix>:revocations}`, so on Redis Cluster they live in one
//! slot and the scripts and transactions below reach one master.
//! - `…:set`: HASH key → `<expires_at>:<document>`, the records.
//! - `…:expiry`: ZSET key → expires_at (seconds), so expired records are found without a scan.
//! - `…:version`: STRING, the number of the last change (`INCR`).
//! - `…:epoch`: STRING, a random id set once (`SET NX`): it changes only when Redis lost the keys.
//! - `…:log`: STREAM of the last [`LOG_LENGTH`] changes (`XADD MAXLEN ~`), each with its version
//!   (`v`), `op` (`put`, `del`), `key` and, for a put, the stored value (`rec`).
//!
//! # Writes
//! A put is one script: compare the key's value with the one the caller expected (else
//! [`PutOutcome::Conflict`]), drop up to [`PURGE_BATCH`] expired records, refuse a new key over the
//! cap, then store, number and log the change. A remove is one script too. A write is acknowledged
//! once Redis has it, so a node that answers an admin has stored the revocation.
//!
//! # Following the changes
//! [`RedisRevocations::changes`] reads `MGET epoch version` (one round trip, the whole cost of a
//! poll when nothing changed), then the log after the cursor's entry. It answers
//! [`Changes::Reload`] when the epoch differs (Redis restarted without persistence, or the keys were
//! deleted), when the version went backwards (a failover to a replica that lacked the last writes),
//! or when the log does not continue the cursor's version (trimmed past it). A snapshot reads the
//! set, the version and the last log entry in one transaction, so the changes after it are exactly
//! those logged after it.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use redis::Value;

use super::{
    Change, Changes, Cursor, PutOutcome, RevocationRecord, RevocationStore, Snapshot,
    CHANGES_BATCH, LOG_LENGTH,
};
use crate::redis::pool::ConnectionPool;
use crate::TransportError;

/// Expired records one put drops at most (the rest go with later puts; nodes ignore them anyway).
pub const PURGE_BATCH: usize = 1_000;

/// Stores a record if the key holds the expected value.
/// KEYS: set, expiry, log, version, epoch.
/// ARGV: key, value, expires_at, now, max, log length, expected value ("" for none), new epoch,
/// purge batch.
/// Returns {replaced (0/1), version}, {-1, 0} when full, {-2, 0} on a conflict.
const PUT: &str = r"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current == false then current = '' end
if current ~= ARGV[7] then return {-2, 0} end
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[4], 'LIMIT', 0, tonumber(ARGV[9]))
if #expired > 0 then
  redis.call('HDEL', KEYS[1], unpack(expired))
  redis.call('ZREM', KEYS[2], unpack(expired))
end
local replaced = redis.call('HEXISTS', KEYS[1], ARGV[1])
if replaced == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[5]) then return {-1, 0} end
redis.call('SET', KEYS[5], ARGV[8], 'NX')
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local v = redis.call('INCR', KEYS[4])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'v', v, 'op', 'put', 'key', ARGV[1], 'rec', ARGV[2])
return {replaced, v}
";

/// Removes a record. KEYS: set, expiry, log, version. ARGV: key, log length.
/// Returns the change's version, 0 when there was no such record.
const REMOVE: &str = r"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
local v = redis.call('INCR', KEYS[4])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'v', v, 'op', 'del', 'key', ARGV[1])
return v
";

/// The store's key names (see the module docs).
#[derive(Clone, Debug)]
struct Keys {
    set: String,
    expiry: String,
    log: String,
    version: String,
    epoch: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        let base = format!("{{{prefix}:revocations}}");
        Self {
            set: format!("{base}:set"),
            expiry: format!("{base}:expiry"),
            log: format!("{base}:log"),
            version: format!("{base}:version"),
            epoch: format!("{base}:epoch"),
        }
    }
}

/// The revocations of a cluster, in Redis (see the module docs).
pub struct RedisRevocations {
    pool: Arc<ConnectionPool>,
    keys: Keys,
}

impl std::fmt::Debug for RedisRevocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRevocations")
            .field("set", &self.keys.set)
            .finish_non_exhaustive()
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> TransportError {
    TransportError::Unavailable(format!("revocations: {what}: {e}"))
}

impl RedisRevocations {
    pub(crate) fn new(pool: Arc<ConnectionPool>, prefix: &str) -> Self {
        Self {
            pool,
            keys: Keys::new(prefix),
        }
    }

    fn new_epoch() -> String {
        uuid::Uuid::new_v4().to_string()
    }
}

/// The string of a bulk or simple reply.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// One log entry: its stream id and fields.
type LogEntry = (String, HashMap<String, String>);

/// The entries of an `XRANGE`/`XREVRANGE` reply.
fn log_entries(reply: Value) -> Result<Vec<LogEntry>, TransportError> {
    let corrupt = || TransportError::Corrupt("revocation log entry".into());
    let Value::Array(items) = reply else {
        return match reply {
            Value::Nil => Ok(Vec::new()),
            _ => Err(corrupt()),
        };
    };
    items
        .into_iter()
        .map(|item| {
            let Value::Array(mut parts) = item else {
                return Err(corrupt());
            };
            if parts.len() != 2 {
                return Err(corrupt());
            }
            let fields = parts.pop().ok_or_else(corrupt)?;
            let id = parts.pop().as_ref().and_then(text).ok_or_else(corrupt)?;
            let fields = match fields {
                Value::Array(flat) => flat
                    .chunks(2)
                    .map(|kv| match kv {
                        [k, v] => Ok((text(k).ok_or_else(corrupt)?, text(v).ok_or_else(corrupt)?)),
                        _ => Err(corrupt()),
                    })
                    .collect::<Result<HashMap<_, _>, _>>()?,
                Value::Map(pairs) => pairs
                    .into_iter()
                    .map(|(k, v)| {
                        Ok((text(&k).ok_or_else(corrupt)?, text(&v).ok_or_else(corrupt)?))
                    })
                    .collect::<Result<HashMap<_, _>, TransportError>>()?,
                _ => return Err(corrupt()),
            };
            Ok((id, fields))
        })
        .collect()
}

/// The change and version a log entry records.
fn change_of(fields: &HashMap<String, String>) -> Result<(u64, Change), TransportError> {
    let corrupt = || TransportError::Corrupt("revocation log entry".into());
    let version = fields
        .get("v")
        .and_then(|v| v.parse().ok())
        .ok_or_else(corrupt)?;
    let key = fields.get("key").ok_or_else(corrupt)?.clone();
    let change = match fields.get("op").map(String::as_str) {
        Some("put") => Change::Put(RevocationRecord::decode(
            key,
            fields.get("rec").ok_or_else(corrupt)?,
        )?),
        Some("del") => Change::Remove(key),
        _ => return Err(corrupt()),
    };
    Ok((version, change))
}

#[async_trait]
impl RevocationStore for RedisRevocations {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn get(&self, key: &str) -> Result<Option<RevocationRecord>, TransportError> {
        let value: Option<String> = self
            .pool
            .query(redis::cmd("HGET").arg(&self.keys.set).arg(key))
            .await
            .map_err(|e| failed("reading a revocation", e))?;
        value
            .map(|v| RevocationRecord::decode(key.to_string(), &v))
            .transpose()
    }

    async fn put(
        &self,
        record: &RevocationRecord,
        expected: Option<&RevocationRecord>,
        now: u64,
        max: usize,
    ) -> Result<PutOutcome, TransportError> {
        let k = &self.keys;
        let cmd = redis::cmd("EVAL")
            .arg(PUT)
            .arg(5)
            .arg(&k.set)
            .arg(&k.expiry)
            .arg(&k.log)
            .arg(&k.version)
            .arg(&k.epoch)
            .arg(&record.key)
            .arg(record.encode())
            .arg(record.expires_at)
            .arg(now)
            .arg(max)
            .arg(LOG_LENGTH)
            .arg(expected.map(RevocationRecord::encode).unwrap_or_default())
            .arg(Self::new_epoch())
            .arg(PURGE_BATCH)
            .clone();
        let (outcome, _version): (i64, u64) = self
            .pool
            .query(&cmd)
            .await
            .map_err(|e| failed("storing a revocation", e))?;
        Ok(match outcome {
            -2 => PutOutcome::Conflict,
            -1 => PutOutcome::Full,
            n => PutOutcome::Stored { replaced: n == 1 },
        })
    }

    async fn remove(&self, key: &str) -> Result<bool, TransportError> {
        let k = &self.keys;
        let cmd = redis::cmd("EVAL")
            .arg(REMOVE)
            .arg(4)
            .arg(&k.set)
            .arg(&k.expiry)
            .arg(&k.log)
            .arg(&k.version)
            .arg(key)
            .arg(LOG_LENGTH)
            .clone();
        let version: u64 = self
            .pool
            .query(&cmd)
            .await
            .map_err(|e| failed("removing a revocation", e))?;
        Ok(version != 0)
    }

    async fn snapshot(&self) -> Result<Snapshot, TransportError> {
        let k = &self.keys;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(&k.epoch)
            .arg(Self::new_epoch())
            .arg("NX")
            .ignore()
            .cmd("MGET")
            .arg(&k.epoch)
            .arg(&k.version)
            .cmd("HGETALL")
            .arg(&k.set)
            .cmd("XREVRANGE")
            .arg(&k.log)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1);
        let ((epoch, version), set, last): (
            (Option<String>, Option<u64>),
            HashMap<String, String>,
            Value,
        ) = self
            .pool
            .query_pipeline(&pipe)
            .await
            .map_err(|e| failed("reading the revocations", e))?;
        let records = set
            .into_iter()
            .map(|(key, value)| RevocationRecord::decode(key, &value))
            .collect::<Result<Vec<_>, _>>()?;
        let log_id = log_entries(last)?.into_iter().next().map(|(id, _)| id);
        Ok(Snapshot {
            records,
            cursor: Cursor {
                epoch,
                version: version.unwrap_or(0),
                log_id,
            },
        })
    }

    async fn changes(&self, cursor: &Cursor) -> Result<Changes, TransportError> {
        let k = &self.keys;
        let (epoch, version): (Option<String>, Option<u64>) = self
            .pool
            .query(redis::cmd("MGET").arg(&k.epoch).arg(&k.version))
            .await
            .map_err(|e| failed("polling the revocations", e))?;
        let version = version.unwrap_or(0);
        if epoch != cursor.epoch || version < cursor.version {
            return Ok(Changes::Reload);
        }
        if version == cursor.version {
            return Ok(Changes::Unchanged);
        }
        let start = match &cursor.log_id {
            Some(id) => format!("({id}"),
            None => "-".to_string(),
        };
        let reply: Value = self
            .pool
            .query(
                redis::cmd("XRANGE")
                    .arg(&k.log)
                    .arg(start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(CHANGES_BATCH),
            )
            .await
            .map_err(|e| failed("reading the revocation log", e))?;
        let mut expected = cursor.version + 1;
        let mut changes = Vec::new();
        let mut last_id = None;
        for (id, fields) in log_entries(reply)? {
            let (v, change) = change_of(&fields)?;
            if v != expected {
                // The log no longer continues this cursor (trimmed, or rewritten by a failover).
                return Ok(Changes::Reload);
            }
            expected += 1;
            changes.push(change);
            last_id = Some(id);
        }
        let Some(log_id) = last_id else {
            // The version moved but the log holds nothing after the cursor: it was lost.
            return Ok(Changes::Reload);
        };
        Ok(Changes::Changed {
            cursor: Cursor {
                epoch,
                version: expected - 1,
                log_id: Some(log_id),
            },
            changes,
        })
    }
}
