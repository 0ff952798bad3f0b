//! The publisher's manifest: how many updates each (lane, topic) sequence holds and which failed.
//!
//! The publishing side builds it as acknowledgements come back; subscribers judge their trackers
//! against it. A snapshot taken mid-run (resume storms) lists only settled updates, i.e. those
//! whose request has been answered, so a subscriber is never waiting for an update that might
//! still be refused.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Key of one (lane, topic) sequence.
pub(crate) fn sequence_key(lane: u32, topic: u32) -> u64 {
    (u64::from(lane) << 32) | u64::from(topic)
}

/// One (lane, topic) sequence as published.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SequenceEntry {
    pub(crate) lane: u32,
    pub(crate) topic: u32,
    /// Sequence numbers `0..published` were sent and answered (acknowledged or failed).
    pub(crate) published: u64,
    /// Sequence numbers whose publish failed or timed out, ascending.
    pub(crate) failed: Vec<u64>,
}

/// All sequences of a run (or of a run so far), as sent to workers.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub(crate) entries: Vec<SequenceEntry>,
}

/// A [`Manifest`] indexed for subscribers: entries by topic.
#[derive(Debug, Default)]
pub(crate) struct IndexedManifest {
    pub(crate) entries: Vec<SequenceEntry>,
    by_topic: HashMap<u32, Vec<usize>>,
}

impl IndexedManifest {
    pub(crate) fn new(manifest: Manifest) -> Self {
        let mut by_topic: HashMap<u32, Vec<usize>> = HashMap::new();
        for (i, e) in manifest.entries.iter().enumerate() {
            by_topic.entry(e.topic).or_default().push(i);
        }
        Self {
            entries: manifest.entries,
            by_topic,
        }
    }

    /// The entries of `topic`.
    pub(crate) fn topic(&self, topic: u32) -> impl Iterator<Item = &SequenceEntry> {
        self.by_topic
            .get(&topic)
            .into_iter()
            .flatten()
            .map(|&i| &self.entries[i])
    }
}
