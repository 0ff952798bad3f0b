//! Per-(lane, topic) sequence tracking: what one subscriber received of one publisher's sequence.
//!
//! Sequences arrive in order when the hub behaves, so the common case is one comparison. A jump
//! forward records the skipped range as a gap; a number that arrives later inside a gap is
//! out of order, any other number at or below the highest seen is a duplicate. At the end the
//! publisher's manifest (how many were sent, which failed) turns the gaps and the missing tail into
//! the count of lost updates. The gap list is bounded: past [`MAX_GAPS`] ranges the tracker stops
//! telling late arrivals from duplicates (counts them out of order) rather than grow.

/// At most this many gap ranges are kept per tracker.
const MAX_GAPS: usize = 4096;

/// Receipt state of one (lane, topic) sequence at one subscriber.
#[derive(Clone, Debug, Default)]
pub(crate) struct SequenceTracker {
    /// One past the highest sequence number received.
    next: u64,
    /// Ranges `[start, end)` below `next` not received (yet), in ascending order.
    gaps: Vec<(u64, u64)>,
    /// Updates received again.
    pub(crate) duplicated: u64,
    /// Updates received after a later one of the same sequence.
    pub(crate) out_of_order: u64,
    /// Set when the gap list hit its bound.
    overflowed: bool,
}

/// What a tracker's sequence amounted to, judged against the publisher's manifest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SequenceOutcome {
    /// Acknowledged updates (the subscriber should have had them all).
    pub(crate) expected: u64,
    /// Acknowledged updates it received (counted once).
    pub(crate) received: u64,
    /// Acknowledged updates it never received.
    pub(crate) lost: u64,
    /// Updates whose publish failed (error or timeout) but that were delivered anyway.
    pub(crate) unacked_delivered: u64,
}

impl SequenceTracker {
    /// Records the receipt of `seq`.
    pub(crate) fn record(&mut self, seq: u64) {
        if seq == self.next {
            self.next += 1;
        } else if seq > self.next {
            if self.gaps.len() < MAX_GAPS {
                self.gaps.push((self.next, seq));
            } else {
                self.overflowed = true;
            }
            self.next = seq + 1;
        } else if self.fill(seq) || self.overflowed {
            // A late arrival inside a gap (or, once gaps overflowed, presumed to be one).
            self.out_of_order += 1;
        } else {
            self.duplicated += 1;
        }
    }

    /// Removes `seq` from the gaps; false when it was not missing.
    fn fill(&mut self, seq: u64) -> bool {
        let idx = self.gaps.partition_point(|&(_, end)| end <= seq);
        let Some(&(start, end)) = self.gaps.get(idx) else {
            return false;
        };
        if seq < start {
            return false;
        }
        match (seq == start, seq + 1 == end) {
            (true, true) => {
                self.gaps.remove(idx);
            }
            (true, false) => self.gaps[idx].0 = seq + 1,
            (false, true) => self.gaps[idx].1 = seq,
            (false, false) => {
                self.gaps[idx].1 = seq;
                self.gaps.insert(idx + 1, (seq + 1, end));
            }
        }
        true
    }

    /// Whether `seq` was received.
    fn has(&self, seq: u64) -> bool {
        if seq >= self.next {
            return false;
        }
        let idx = self.gaps.partition_point(|&(_, end)| end <= seq);
        !matches!(self.gaps.get(idx), Some(&(start, _)) if start <= seq)
    }

    /// Whether every acknowledged update below `published` has arrived (`failed` lists the
    /// sequence numbers whose publish failed, sorted).
    pub(crate) fn is_complete(&self, published: u64, failed: &[u64]) -> bool {
        if self.next < published {
            // The missing tail may consist only of failed publishes.
            let tail_missing = published - self.next;
            let tail_failed = failed.len() - failed.partition_point(|&s| s < self.next);
            if tail_failed as u64 != tail_missing {
                return false;
            }
        }
        self.gaps.iter().all(|&(start, end)| {
            let end = end.min(published);
            start >= end || {
                let lo = failed.partition_point(|&s| s < start);
                let hi = failed.partition_point(|&s| s < end);
                (hi - lo) as u64 == end - start
            }
        })
    }

    /// Judges this sequence against the manifest: `published` numbers were sent, of which `failed`
    /// (sorted) were not acknowledged.
    pub(crate) fn outcome(&self, published: u64, failed: &[u64]) -> SequenceOutcome {
        let seen_below = |limit: u64| -> u64 {
            let upto = self.next.min(limit);
            let gap: u64 = self
                .gaps
                .iter()
                .map(|&(s, e)| e.min(upto).saturating_sub(s))
                .sum();
            upto - gap
        };
        let received_all = seen_below(published);
        let unacked_delivered = failed.iter().filter(|&&s| self.has(s)).count() as u64;
        let expected = published - failed.len() as u64;
        let received = received_all - unacked_delivered;
        SequenceOutcome {
            expected,
            received,
            lost: expected - received,
            unacked_delivered,
        }
    }

    /// Outcome for a sequence of which nothing arrived.
    pub(crate) fn nothing(published: u64, failed: &[u64]) -> SequenceOutcome {
        Self::default().outcome(published, failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_is_complete() {
        let mut t = SequenceTracker::default();
        (0..10).for_each(|s| t.record(s));
        assert!(t.is_complete(10, &[]));
        assert!(!t.is_complete(11, &[]));
        assert!(t.is_complete(11, &[10]));
        let o = t.outcome(10, &[]);
        assert_eq!((o.expected, o.received, o.lost), (10, 10, 0));
    }

    #[test]
    fn gaps_dups_and_reorders() {
        let mut t = SequenceTracker::default();
        for s in [0, 1, 4, 5, 2, 2, 9, 1] {
            t.record(s);
        }
        assert_eq!(t.out_of_order, 1);
        assert_eq!(t.duplicated, 2);
        // Missing: 3, 6, 7, 8 and the tail 10, 11.
        let o = t.outcome(12, &[]);
        assert_eq!((o.expected, o.received, o.lost), (12, 6, 6));
        assert!(!t.is_complete(12, &[]));
        assert!(t.is_complete(10, &[3, 6, 7, 8]));
        t.record(7);
        t.record(3);
        assert_eq!(t.out_of_order, 3);
        let o = t.outcome(10, &[6, 8]);
        assert_eq!(
            (o.expected, o.received, o.lost, o.unacked_delivered),
            (8, 8, 0, 0)
        );
    }

    #[test]
    fn failed_but_delivered_is_not_expected() {
        let mut t = SequenceTracker::default();
        (0..5).for_each(|s| t.record(s));
        let o = t.outcome(5, &[2]);
        assert_eq!(
            (o.expected, o.received, o.lost, o.unacked_delivered),
            (4, 4, 0, 1)
        );
        let none = SequenceTracker::nothing(5, &[2]);
        assert_eq!((none.expected, none.received, none.lost), (4, 0, 4));
    }
}
