//! The revocations every node of a hub enforces: a small set of records, each with an expiry, and a
//! versioned log of changes through which every node keeps its own copy current.
//!
//! Records are opaque here, as subscription records are: the server chooses a record's key (one
//! per revoked token id or subject) and renders its document. A store keeps at most a given number
//! of records that have not expired ([`RevocationStore::put`] answers [`PutOutcome::Full`] beyond
//! it), drops expired ones as it writes, and numbers every change: a node reads the whole set once
//! ([`RevocationStore::snapshot`]), then asks for the changes after the [`Cursor`] it holds
//! ([`RevocationStore::changes`]). When the store cannot give them (its log no longer reaches back
//! that far, or the store lost its data and started over: a new epoch), the answer is
//! [`Changes::Reload`] and the node reads the whole set again. Expiry needs no change: every node
//! drops a record when its time comes.
//!
//! Writes are compare-and-set ([`RevocationStore::put`] takes the value the caller read with
//! [`RevocationStore::get`]), so two admins revoking the same subject at once merge rather than
//! overwrite each other.
//!
//! # Implementations
//! - [`MemoryRevocations`]: a single node; a map and a short log.
//! - [`RedisRevocations`] (from [`RedisTransport::revocation_store`](crate::RedisTransport::revocation_store)):
//!   the set, its expiries and its log in Redis; see [`redis`] for the keys and scripts.

pub mod memory;
pub mod redis;

use async_trait::async_trait;

use crate::TransportError;

pub use memory::MemoryRevocations;
pub use redis::RedisRevocations;

/// Changes a store keeps for nodes catching up; a node further behind reads the whole set again.
pub const LOG_LENGTH: usize = 1_000;

/// Changes one [`RevocationStore::changes`] call returns at most (the caller asks again).
pub const CHANGES_BATCH: usize = 256;

/// One revocation as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationRecord {
    /// Unique in the store: what is revoked (chosen by the server).
    pub key: String,
    /// The revocation as the server rendered it. Opaque here.
    pub document: String,
    /// When it stops mattering (seconds since the Unix epoch): the record is dropped then.
    pub expires_at: u64,
}

impl RevocationRecord {
    /// Whether the record has expired at `now` (seconds since the Unix epoch).
    pub fn is_expired(&self, now: u64) -> bool {
        self.expires_at <= now
    }

    /// The value stored for the record: `<expires_at>:<document>`.
    pub(crate) fn encode(&self) -> String {
        format!("{}:{}", self.expires_at, self.document)
    }

    /// The record of `key` stored as `value` ([`RevocationRecord::encode`]).
    pub(crate) fn decode(key: String, value: &str) -> Result<Self, TransportError> {
        let corrupt = || TransportError::Corrupt(format!("revocation {key:?}"));
        let (expires_at, document) = value.split_once(':').ok_or_else(corrupt)?;
        let expires_at = expires_at.parse().map_err(|_| corrupt())?;
        Ok(Self {
            key,
            document: document.to_string(),
            expires_at,
        })
    }
}

/// What [`RevocationStore::put`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// Stored: a new record, or (`replaced`) over the one the caller expected.
    Stored {
        /// Whether a record with the key was there (and not yet expired) before.
        replaced: bool,
    },
    /// The key no longer holds what the caller expected: read it again and retry.
    Conflict,
    /// The store holds its maximum number of records that have not expired; nothing was stored.
    Full,
}

/// Where a node stands in a store's changes: the store's epoch (a new one when the store lost its
/// data) and the number of the last change applied. Opaque to the caller.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    pub(crate) epoch: Option<String>,
    pub(crate) version: u64,
    /// The log entry of `version` (Redis stream id), when the log has one.
    pub(crate) log_id: Option<String>,
}

impl Cursor {
    /// The number of the last change applied.
    pub fn version(&self) -> u64 {
        self.version
    }
}

/// The whole set, and where it stands.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Every record held, the expired ones not yet dropped included.
    pub records: Vec<RevocationRecord>,
    /// The changes after this one are not in `records`.
    pub cursor: Cursor,
}

/// One change of the set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A record was added or replaced.
    Put(RevocationRecord),
    /// The record of this key was removed.
    Remove(String),
}

/// The changes after a [`Cursor`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Changes {
    /// None.
    Unchanged,
    /// These, in order; `cursor` stands after the last one (there may be more: ask again).
    Changed {
        /// The changes.
        changes: Vec<Change>,
        /// Where the caller stands once it applied them.
        cursor: Cursor,
    },
    /// The store cannot tell what changed since the cursor: read a [`RevocationStore::snapshot`].
    Reload,
}

/// A set of revocations shared by every node (see the module docs).
#[async_trait]
pub trait RevocationStore: Send + Sync + 'static {
    /// A short name for logs (`memory`, `redis`).
    fn name(&self) -> &'static str;

    /// The record of `key`, expired or not.
    async fn get(&self, key: &str) -> Result<Option<RevocationRecord>, TransportError>;

    /// Stores `record` if its key still holds `expected` (the record [`RevocationStore::get`]
    /// returned, `None` for none), first dropping the records expired at `now` (seconds since the
    /// Unix epoch); refuses a new key while `max` records are held.
    async fn put(
        &self,
        record: &RevocationRecord,
        expected: Option<&RevocationRecord>,
        now: u64,
        max: usize,
    ) -> Result<PutOutcome, TransportError>;

    /// Removes the record of `key`; `false` when there was none.
    async fn remove(&self, key: &str) -> Result<bool, TransportError>;

    /// The whole set.
    async fn snapshot(&self) -> Result<Snapshot, TransportError>;

    /// The changes after `cursor` (at most [`CHANGES_BATCH`]).
    async fn changes(&self, cursor: &Cursor) -> Result<Changes, TransportError>;
}
