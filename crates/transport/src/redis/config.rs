//! How the Redis transport is configured: [`RedisConfig`], its defaults and its validation.
//!
//! The server builds one from its own configuration (flags, environment, file); tests build it with
//! [`RedisConfig::new`] and struct update syntax. Validation happens once, in
//! [`RedisTransport::new`](super::RedisTransport::new), and resolves the derived values (cache size,
//! stream length) into [`Settings`], which the rest of the module reads.

use std::time::Duration;

use thiserror::Error;

use super::keys::{PartitionHash, MAX_PARTITIONS};

/// Default cap on the per-partition tail cache when it is derived from `history_size`.
pub const DEFAULT_TAIL_CACHE_CAP: usize = 100_000;

/// Default [`RedisConfig::batch_window`]: short against a browser's perception, long enough that a
/// busy topic's updates share writes.
pub const DEFAULT_BATCH_WINDOW: Duration = Duration::from_millis(1);

/// Longest accepted [`RedisConfig::batch_window`].
pub const MAX_BATCH_WINDOW: Duration = Duration::from_secs(1);

/// Default [`RedisConfig::history_max_bytes`].
pub const DEFAULT_HISTORY_MAX_BYTES: usize = 64 * 1024 * 1024;

/// Default [`RedisConfig::read_budget`].
pub const DEFAULT_READ_BUDGET: usize = 16 * 1024 * 1024;

/// Default [`RedisConfig::reader_partitions`]: 16 connections per node at most for 256 partitions,
/// while a wake-up of a read costs Redis little more than one over a single stream.
pub const DEFAULT_READER_PARTITIONS: u16 = 16;

/// Default [`RedisConfig::idle_reader_linger`].
pub const DEFAULT_IDLE_READER_LINGER: Duration = Duration::from_secs(10);

/// Most entries one read or one history scan command asks for, however small entries are.
pub(crate) const MAX_READ_COUNT: usize = 512;

/// Streams keep at least this many entries whatever `history_size` says, so a reader that was
/// disconnected for a moment still finds what it missed (history replies still hold at most
/// `history_size` entries per partition).
pub(crate) const MIN_STREAM_LEN: usize = 1_000;

/// Settings of the Redis transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisConfig {
    /// Redis URLs: `redis://[user:password@]host:port[/db]`, or `rediss://…` for TLS. One URL for a
    /// plain server; several (any subset of the masters) for Redis Cluster.
    pub urls: Vec<String>,
    /// Use the Redis Cluster protocol even with a single URL. Implied by several URLs.
    pub cluster: bool,
    /// Prefix of every key this hub writes (`<prefix>:updates`, `<prefix>:{tag}`, …). Must not contain
    /// `{` or `}`.
    pub stream_key_prefix: String,
    /// Number of streams updates are spread over by topic (1..=1024). More than one only makes sense
    /// on Redis Cluster, where each stream can live on another master. Order is kept per partition.
    /// Changing it reshuffles topics over streams: do it with an empty history.
    pub partitions: u16,
    /// Redis Cluster hash slots the partitions share (0: one slot per partition). With `G > 0`,
    /// partition `p`'s keys carry the slot tag of group `p mod G`, so the partitions of a group can
    /// be read by one blocking `XREAD` on one connection (a multi-key command needs one slot): a node
    /// then reads at most `G` groups, i.e. holds at most `G` reader connections, whatever the number
    /// of partitions. Fewer slots spread the streams over fewer masters. At most `partitions`;
    /// `partitions` itself is the same as 0. Changing it renames the streams: do it with an empty
    /// history. On a plain Redis every partition is read by one connection whatever this says.
    pub partition_slots: u16,
    /// Partitions one reader connection reads at most (1..=1024). A node reads its partitions in
    /// groups, one blocking `XREAD` over the group's streams per connection (see `interest`);
    /// Redis's work for such a read grows with the streams it names, at every wake-up, so large
    /// groups save connections at the cost of Redis CPU.
    pub reader_partitions: u16,
    /// How a topic is mapped to its partition; the same on every node (see [`PartitionHash`]).
    pub partition_hash: PartitionHash,
    /// Updates retained per partition for reconnecting subscribers (`XADD MAXLEN ~`); 0 disables
    /// history.
    pub history_size: usize,
    /// Subscription events retained (`XADD MAXLEN ~` of their own stream), apart from the
    /// updates' `history_size`: they never push real updates out of history.
    pub event_history: usize,
    /// Also drop updates older than this (`XTRIM MINID ~ now-age`, measured by this node's clock
    /// against Redis stream ids, so keep clocks synchronized).
    pub history_max_age: Option<Duration>,
    /// Updates each node keeps in memory per partition to answer history without asking Redis.
    /// `None`: `history_size` capped at 100 000. Never more than `history_size`.
    pub tail_cache_size: Option<usize>,
    /// Connections used for publishing and history reads. Each is multiplexed (pipelines concurrent
    /// commands), so a handful is plenty; readers have their own connections besides these.
    pub pool_size: usize,
    /// How long a reader's `XREAD BLOCK` waits for new entries before asking again, in milliseconds.
    pub block_ms: u64,
    /// When a topic's updates follow each other within this window, the reader hands them to the
    /// local fan-out at most once per window, so each subscriber of the topic receives them in one
    /// write. Updates on changing topics, and one after a quiet spell, pass at once.
    /// `Duration::ZERO` hands over every read as it comes.
    pub batch_window: Duration,
    /// Upper bound on one Redis command (connecting included): a hung Redis yields an error after
    /// this, never a hang.
    pub command_timeout: Duration,
    /// Partitioned mode: how far before the resume point other partitions are replayed from. Must
    /// exceed the clock difference between the masters plus how far one partition's reader may run
    /// ahead of another's on a node (see the module docs of `redis`).
    pub resume_margin: Duration,
    /// PEM file of the certificate authorities trusted for `rediss://` servers, instead of the
    /// system's roots (a private CA is the usual case for Redis). Read once, at start.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// The most bytes of history a node holds per stream in its tail cache, and reads for one
    /// history reply: large updates are kept (and replayed) in fewer numbers.
    pub history_max_bytes: usize,
    /// The largest stream entry publishes can create, in bytes (the server's maximum body size
    /// plus the entry's framing). Reads are sized from it.
    pub max_entry_bytes: usize,
    /// The most bytes one read asks Redis for: a read asks for at most
    /// `read_budget / max_entry_bytes` entries (at least 1, at most 512), so a reply stays bounded
    /// in Redis's output buffer and in this node's memory however large updates are.
    pub read_budget: usize,
    /// History lookups that may talk to Redis at once (scans of the retained history, and the
    /// catch-up checks of unknown ids); others wait up to the command timeout, then fail.
    pub max_history_scans: usize,
    /// Read only the partitions that the node's subscribers may match (see the `redis` module
    /// docs, "Reading on interest"): a reader starts when a subscriber needs its partition and
    /// stops `idle_reader_linger` after the last one left. `false`: every partition is read from
    /// the start, whatever the subscribers.
    pub read_on_interest: bool,
    /// How long a partition's reader keeps reading after its last interested subscriber left, so
    /// that subscribers coming and going (reconnections) do not restart it each time.
    pub idle_reader_linger: Duration,
}

impl RedisConfig {
    /// Defaults for the Redis server (or cluster node) at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            urls: vec![url.into()],
            ..Self::default()
        }
    }

    /// Whether to speak the Redis Cluster protocol.
    pub fn is_cluster(&self) -> bool {
        self.cluster || self.urls.len() > 1
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            urls: vec!["redis://127.0.0.1:6379".into()],
            cluster: false,
            stream_key_prefix: "quicksilver".into(),
            partitions: 1,
            partition_slots: 0,
            reader_partitions: DEFAULT_READER_PARTITIONS,
            partition_hash: PartitionHash::Fnv1a,
            history_size: 1_000,
            event_history: 1_000,
            history_max_age: None,
            tail_cache_size: None,
            pool_size: 4,
            block_ms: 2_000,
            batch_window: DEFAULT_BATCH_WINDOW,
            command_timeout: Duration::from_secs(2),
            resume_margin: Duration::from_secs(5),
            tls_ca_file: None,
            history_max_bytes: DEFAULT_HISTORY_MAX_BYTES,
            max_entry_bytes: 1024 * 1024 + 64 * 1024,
            read_budget: DEFAULT_READ_BUDGET,
            max_history_scans: 8,
            read_on_interest: false,
            idle_reader_linger: DEFAULT_IDLE_READER_LINGER,
        }
    }
}

/// Why a [`RedisConfig`] was refused.
#[derive(Debug, Error)]
pub enum RedisConfigError {
    /// A setting is out of range.
    #[error("invalid redis setting: {0}")]
    Invalid(String),
    /// A URL could not be turned into a Redis client.
    #[error("invalid redis url: {0}")]
    Url(#[source] redis::RedisError),
    /// The TLS CA file could not be read.
    #[error("cannot read the redis TLS CA file {path}: {source}")]
    TlsCa {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A validated configuration with derived values resolved.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) urls: Vec<String>,
    pub(crate) cluster: bool,
    pub(crate) prefix: String,
    pub(crate) partitions: u16,
    /// Slot groups (see [`RedisConfig::partition_slots`]), normalized: 0 when every partition has
    /// a slot of its own.
    pub(crate) partition_slots: u16,
    /// See [`RedisConfig::reader_partitions`].
    pub(crate) reader_partitions: u16,
    pub(crate) partition_hash: PartitionHash,
    pub(crate) history_size: usize,
    pub(crate) max_age: Option<Duration>,
    pub(crate) cache_capacity: usize,
    /// See [`RedisConfig::tail_cache_size`] (the capacity of retention classes' caches derives
    /// from it as `cache_capacity` does from `history_size`).
    pub(crate) tail_cache_size: Option<usize>,
    /// Subscription events each node keeps in memory.
    pub(crate) event_cache_capacity: usize,
    /// `MAXLEN ~` of every stream.
    pub(crate) stream_len: usize,
    /// Subscription events replayed at most (the events stream's share of `history_size`).
    pub(crate) event_history: usize,
    /// `MAXLEN ~` of the events stream.
    pub(crate) event_stream_len: usize,
    pub(crate) pool_size: usize,
    pub(crate) block: Duration,
    pub(crate) batch_window: Duration,
    pub(crate) command_timeout: Duration,
    pub(crate) resume_margin: Duration,
    /// PEM bytes of the trusted CAs for `rediss://` (`None`: the system's roots).
    pub(crate) tls_ca: Option<Vec<u8>>,
    /// Entries one read or scan command asks for (see [`RedisConfig::read_budget`]).
    pub(crate) read_count: usize,
    /// See [`RedisConfig::history_max_bytes`].
    pub(crate) history_max_bytes: usize,
    /// See [`RedisConfig::max_history_scans`].
    pub(crate) max_history_scans: usize,
    /// See [`RedisConfig::read_on_interest`].
    pub(crate) read_on_interest: bool,
    /// See [`RedisConfig::idle_reader_linger`].
    pub(crate) idle_reader_linger: Duration,
}

impl Settings {
    pub(crate) fn resolve(config: &RedisConfig) -> Result<Self, RedisConfigError> {
        let invalid = |s: &str| Err(RedisConfigError::Invalid(s.to_string()));
        if config.urls.is_empty() {
            return invalid("at least one url is required");
        }
        if config.stream_key_prefix.contains(['{', '}']) {
            return invalid("stream_key_prefix must not contain '{' or '}'");
        }
        if config.partitions == 0 || config.partitions > MAX_PARTITIONS {
            return invalid("partitions must be between 1 and 1024");
        }
        if config.reader_partitions == 0 || config.reader_partitions > MAX_PARTITIONS {
            return invalid("reader_partitions must be between 1 and 1024");
        }
        if config.partition_slots > config.partitions {
            return invalid(
                "partition_slots must be at most partitions (0: one slot per partition)",
            );
        }
        if config.pool_size == 0 {
            return invalid("pool_size must be at least 1");
        }
        if config.block_ms == 0 {
            return invalid("block_ms must be at least 1");
        }
        if config.batch_window > MAX_BATCH_WINDOW {
            return invalid("batch_window must be at most 1s");
        }
        if config.command_timeout.is_zero() {
            return invalid("command_timeout must be positive");
        }
        if config.max_entry_bytes == 0 || config.read_budget == 0 {
            return invalid("max_entry_bytes and read_budget must be positive");
        }
        let cache_capacity = config
            .tail_cache_size
            .unwrap_or(config.history_size.min(DEFAULT_TAIL_CACHE_CAP))
            .min(config.history_size);
        let tls_ca = config
            .tls_ca_file
            .as_ref()
            .map(|path| {
                std::fs::read(path).map_err(|source| RedisConfigError::TlsCa {
                    path: path.display().to_string(),
                    source,
                })
            })
            .transpose()?;
        Ok(Self {
            urls: config.urls.clone(),
            cluster: config.is_cluster(),
            prefix: config.stream_key_prefix.clone(),
            partitions: config.partitions,
            partition_slots: if config.partition_slots == config.partitions {
                0
            } else {
                config.partition_slots
            },
            reader_partitions: config.reader_partitions,
            partition_hash: config.partition_hash,
            history_size: config.history_size,
            max_age: config.history_max_age,
            cache_capacity,
            tail_cache_size: config.tail_cache_size,
            event_cache_capacity: config
                .tail_cache_size
                .unwrap_or(config.event_history.min(DEFAULT_TAIL_CACHE_CAP))
                .min(config.event_history),
            stream_len: config.history_size.max(MIN_STREAM_LEN),
            event_history: config.event_history,
            event_stream_len: config.event_history.max(MIN_STREAM_LEN),
            pool_size: config.pool_size,
            block: Duration::from_millis(config.block_ms),
            batch_window: config.batch_window,
            command_timeout: config.command_timeout,
            resume_margin: config.resume_margin,
            tls_ca,
            read_count: (config.read_budget / config.max_entry_bytes).clamp(1, MAX_READ_COUNT),
            history_max_bytes: config.history_max_bytes.max(1),
            max_history_scans: config.max_history_scans.max(1),
            read_on_interest: config.read_on_interest,
            idle_reader_linger: config.idle_reader_linger,
        })
    }

    /// Entries with a stream-id time below this are past `history_max_age` (`None`: no age limit).
    pub(crate) fn age_cutoff_ms(&self) -> Option<u64> {
        let age = self.max_age?;
        let now = crate::now_micros() / 1_000;
        Some(now.saturating_sub(age.as_millis() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_cache_and_stream_sizes() {
        let s = Settings::resolve(&RedisConfig {
            history_size: 10,
            ..RedisConfig::new("redis://x")
        })
        .unwrap();
        assert_eq!(s.cache_capacity, 10);
        assert_eq!(s.stream_len, MIN_STREAM_LEN);
        let s = Settings::resolve(&RedisConfig {
            history_size: 1_000_000,
            ..RedisConfig::new("redis://x")
        })
        .unwrap();
        assert_eq!(s.cache_capacity, DEFAULT_TAIL_CACHE_CAP);
        let s = Settings::resolve(&RedisConfig {
            history_size: 50,
            tail_cache_size: Some(500),
            ..RedisConfig::new("redis://x")
        })
        .unwrap();
        assert_eq!(s.cache_capacity, 50, "never more than history_size");
    }

    #[test]
    fn reads_are_sized_by_bytes() {
        let read_count = |max_entry_bytes, read_budget| {
            Settings::resolve(&RedisConfig {
                max_entry_bytes,
                read_budget,
                ..RedisConfig::new("redis://x")
            })
            .map(|s| s.read_count)
            .ok()
        };
        assert_eq!(read_count(1 << 20, 16 << 20), Some(16));
        assert_eq!(read_count(1 << 10, 16 << 20), Some(MAX_READ_COUNT));
        assert_eq!(
            read_count(64 << 20, 16 << 20),
            Some(1),
            "one entry at least"
        );
        assert_eq!(read_count(0, 1), None);
    }

    #[test]
    fn refuses_bad_settings() {
        let base = RedisConfig::new("redis://x");
        for bad in [
            RedisConfig {
                urls: vec![],
                ..base.clone()
            },
            RedisConfig {
                partitions: 0,
                ..base.clone()
            },
            RedisConfig {
                partitions: 2000,
                ..base.clone()
            },
            RedisConfig {
                partitions: 4,
                partition_slots: 5,
                ..base.clone()
            },
            RedisConfig {
                reader_partitions: 0,
                ..base.clone()
            },
            RedisConfig {
                pool_size: 0,
                ..base.clone()
            },
            RedisConfig {
                stream_key_prefix: "a{b}".into(),
                ..base.clone()
            },
            RedisConfig {
                batch_window: Duration::from_secs(2),
                ..base.clone()
            },
        ] {
            assert!(Settings::resolve(&bad).is_err(), "{bad:?}");
        }
        assert!(RedisConfig {
            urls: vec!["redis://a".into(), "redis://b".into()],
            ..base
        }
        .is_cluster());
    }
}
