//! Where an update sits in the transport's total order.
//!
//! Event ids are chosen by publishers and may repeat or be arbitrary strings, so they cannot say what
//! came first. Positions can: the in-memory transport numbers updates with a sequence, the Redis
//! transport uses the stream entry id (`<ms>-<seq>`), and partitioned deployments add the partition
//! index. Replay-then-live decisions ("was this live update already replayed?") compare positions,
//! never ids. Two positions are only comparable within one partition.

use std::fmt;

/// A position in one partition of the transport's order: `(ms, seq)` as a Redis stream entry id, or
/// `(0, n)` for the in-memory transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Index of the partition (stream) this position belongs to; `0` when not partitioned.
    pub partition: u16,
    /// Milliseconds part of a Redis stream id, `0` for the in-memory transport.
    pub ms: u64,
    /// Sequence part of a Redis stream id, or the in-memory sequence number.
    pub seq: u64,
}

impl Position {
    /// A position in partition `partition` for a Redis stream id `ms-seq`.
    pub const fn new(partition: u16, ms: u64, seq: u64) -> Self {
        Self { partition, ms, seq }
    }

    /// Whether `self` comes strictly after `other`; positions of different partitions are unordered
    /// and never "after" each other.
    pub fn is_after(&self, other: &Position) -> bool {
        self.partition == other.partition && (self.ms, self.seq) > (other.ms, other.seq)
    }

    /// Parses a Redis stream entry id (`<ms>-<seq>`) into a position of `partition`.
    pub fn parse_stream_id(partition: u16, id: &str) -> Option<Self> {
        let (ms, seq) = id.split_once('-')?;
        Some(Self::new(partition, ms.parse().ok()?, seq.parse().ok()?))
    }

    /// The Redis stream entry id (`<ms>-<seq>`) of this position.
    pub fn stream_id(&self) -> String {
        format!("{}-{}", self.ms, self.seq)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}-{}", self.partition, self.ms, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_round_trip_and_order() {
        let a = Position::parse_stream_id(0, "1700000000000-0").unwrap();
        let b = Position::parse_stream_id(0, "1700000000000-1").unwrap();
        assert!(b.is_after(&a));
        assert!(!a.is_after(&b));
        assert_eq!(a.stream_id(), "1700000000000-0");
        assert!(Position::parse_stream_id(0, "nope").is_none());
    }

    #[test]
    fn partitions_are_unordered() {
        let a = Position::new(0, 5, 0);
        let b = Position::new(1, 1, 0);
        assert!(!a.is_after(&b) && !b.is_after(&a));
    }
}
