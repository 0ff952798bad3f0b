//! Replay then live, with no gap and no duplicate: what a resuming subscriber is sent from
//! history, and which live updates that history already covered.
//!
//! A subscriber that resumes (`Last-Event-ID`) is registered in its shard *first*, so every
//! update the reader hands over from then on is queued for it, and only then is history read from
//! its last event id. The two overlap: an update can be both in the history read and in the
//! queue. [`Resume`] holds the history to send and, per partition, the last position the read
//! covered (including entries this subscriber may not see, and the transport's own high-water mark
//! when it read further than its last entry). A live update at or before that position was part
//! of the read and is skipped; anything after it is new. Positions decide, never event ids (ids are
//! the publishers' and may repeat).
//!
//! Once a live update past the covered position has been seen in a partition, every later one is
//! past it too (a partition's order is the reader's order), so the mark is dropped; when no mark
//! and no history is left, the resume is [done](Resume::is_done) and its owner can free it.
//!
//! History entries are shared (`Arc`) with the history cache and with every other subscriber
//! replaying them; what a replay copies is its batches, several frames joined into one write.
//! A slow reader holds its current batch until its socket takes it, so a storm of slow resuming
//! readers could hold one batch each: 19,000 of them, over a gigabyte. A [`ReplayBudget`] bounds
//! the batches in flight on a node: each batch is charged while its memory lives, and once the
//! budget is spent, replays send their frames one at a time, uncopied, until batches are freed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use quicksilver_protocol::{Envelope, Position};

/// The replay of one resuming subscriber and the positions it covered.
#[derive(Debug, Default)]
pub struct Resume {
    /// History entries this subscriber may see, not sent yet, in order.
    pending: VecDeque<Arc<Envelope>>,
    /// Per partition, the last position the history read covered.
    covered: Vec<Position>,
    /// Entries the replay started with.
    replayed: usize,
    /// What batches are charged to (`None`: not bounded).
    budget: Option<Arc<ReplayBudget>>,
}

/// The bytes of replay batches a node may hold at once (see the module documentation). Shared by
/// every [`Resume`] of the node.
#[derive(Debug)]
pub struct ReplayBudget {
    max: usize,
    used: AtomicUsize,
    /// Frames sent alone, uncopied, because the budget was spent.
    unbatched: AtomicU64,
}

impl ReplayBudget {
    /// A budget of `max` bytes of batches in flight.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            used: AtomicUsize::new(0),
            unbatched: AtomicU64::new(0),
        })
    }

    /// Bytes of batches alive now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The budget in bytes.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Frames replayed alone because the budget was spent.
    pub fn unbatched(&self) -> u64 {
        self.unbatched.load(Ordering::Relaxed)
    }

    fn try_charge(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let after = used.checked_add(bytes)?;
                (after <= self.max).then_some(after)
            })
            .is_ok()
    }
}

/// A batch's memory, charged to its budget until the last `Bytes` pointing into it is dropped.
struct ChargedBatch {
    bytes: Vec<u8>,
    budget: Arc<ReplayBudget>,
    charged: usize,
}

impl AsRef<[u8]> for ChargedBatch {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for ChargedBatch {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.charged, Ordering::AcqRel);
    }
}

impl Resume {
    /// A resume from a history read: `entries` is everything the read returned, in order;
    /// `high_water` the positions the transport reports the read reached (per partition, possibly
    /// past its last entry); `wanted` says which entries this subscriber may receive.
    pub fn new(
        entries: Vec<Arc<Envelope>>,
        high_water: &[Position],
        wanted: impl Fn(&Envelope) -> bool,
    ) -> Self {
        let mut covered: Vec<Position> = Vec::new();
        for position in entries.iter().map(|e| &e.position).chain(high_water) {
            match covered
                .iter_mut()
                .find(|p| p.partition == position.partition)
            {
                Some(p) if position.is_after(p) => *p = *position,
                Some(_) => {}
                None => covered.push(*position),
            }
        }
        let pending: VecDeque<_> = entries.into_iter().filter(|e| wanted(e)).collect();
        Self {
            replayed: pending.len(),
            pending,
            covered,
            budget: None,
        }
    }

    /// Charges this replay's batches to `budget`.
    pub fn with_budget(mut self, budget: Arc<ReplayBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// How many entries the replay holds in all (sent or not).
    pub fn replayed(&self) -> usize {
        self.replayed
    }

    /// The next history frames to send, concatenated up to about `max_bytes` (at least one frame);
    /// `None` once the history is sent.
    pub fn next_batch(&mut self, max_bytes: usize) -> Option<Bytes> {
        let first = self.pending.pop_front()?;
        // How many of the frames that follow fit in the batch, and its size.
        let mut size = first.frame.len();
        let mut more = 0;
        for next in &self.pending {
            if size + next.frame.len() > max_bytes {
                break;
            }
            size += next.frame.len();
            more += 1;
        }
        if more == 0 {
            return Some(first.frame.clone());
        }
        if let Some(budget) = &self.budget {
            if !budget.try_charge(size) {
                // Spent: this frame goes alone, shared with the history, copying nothing.
                budget.unbatched.fetch_add(1, Ordering::Relaxed);
                return Some(first.frame.clone());
            }
        }
        let mut batch = Vec::with_capacity(size);
        batch.extend_from_slice(&first.frame);
        for next in self.pending.drain(..more) {
            batch.extend_from_slice(&next.frame);
        }
        if self.pending.is_empty() {
            // The history's memory goes as soon as it is sent, not when the stream ends.
            self.pending = VecDeque::new();
        }
        Some(match &self.budget {
            Some(budget) => Bytes::from_owner(ChargedBatch {
                bytes: batch,
                budget: budget.clone(),
                charged: size,
            }),
            None => Bytes::from(batch),
        })
    }

    /// Whether history frames are still to be sent.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whether the live update `envelope` was already part of the history read (skip it). Call it
    /// for every live update in the order they arrive.
    pub fn covers(&mut self, envelope: &Envelope) -> bool {
        take_covered(&mut self.covered, envelope.position)
    }

    /// Per partition, the last position the history read covered, until a live update past it
    /// was seen.
    pub fn covered(&self) -> &[Position] {
        &self.covered
    }

    /// Whether nothing is left to send or skip: the owner may drop the resume.
    pub fn is_done(&self) -> bool {
        self.pending.is_empty() && self.covered.is_empty()
    }
}

/// Whether `covered` (per partition, the last position a history read covered) covers
/// `position`. The first position past a partition's mark takes the mark away: updates of one
/// partition come in order, so everything after it is past the read too. Used by the stream
/// ([`Resume::covers`]) and by its queue, which drops what the replay holds (see
/// `Queue::skip_covered`).
pub(crate) fn take_covered(covered: &mut Vec<Position>, position: Position) -> bool {
    let Some(i) = covered
        .iter()
        .position(|p| p.partition == position.partition)
    else {
        return false;
    };
    if position.is_after(&covered[i]) {
        covered.swap_remove(i);
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use quicksilver_protocol::Update;

    use super::*;

    fn envelope(partition: u16, seq: u64, topic: &str) -> Arc<Envelope> {
        Arc::new(Envelope::new(
            Position::new(partition, 0, seq),
            Update {
                id: format!("id-{partition}-{seq}"),
                topics: vec![topic.into()],
                data: format!("d{seq}"),
                private: false,
                event_type: None,
                retry: None,
            },
            0,
        ))
    }

    fn ids(frames: &Bytes) -> Vec<String> {
        std::str::from_utf8(frames)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("id: ").map(str::to_string))
            .collect()
    }

    /// Replays `history`, then offers `live` in order; returns the ids the subscriber receives.
    fn receive(resume: &mut Resume, live: &[Arc<Envelope>]) -> Vec<String> {
        let mut got = Vec::new();
        while let Some(batch) = resume.next_batch(1 << 20) {
            got.extend(ids(&batch));
        }
        for e in live {
            if !resume.covers(e) {
                got.push(e.update.id.clone());
            }
        }
        got
    }

    #[test]
    fn live_updates_the_history_covered_are_skipped_once_and_nothing_is_lost() {
        // History read 1..=5; the queue got 4..=8 because the subscriber registered first.
        let history: Vec<_> = (1..=5).map(|s| envelope(0, s, "t")).collect();
        let live: Vec<_> = (4..=8).map(|s| envelope(0, s, "t")).collect();
        let mut resume = Resume::new(history, &[], |_| true);
        assert_eq!(resume.replayed(), 5);
        let got = receive(&mut resume, &live);
        let want: Vec<String> = (1..=8).map(|s| format!("id-0-{s}")).collect();
        assert_eq!(got, want);
        assert!(resume.is_done());
    }

    #[test]
    fn entries_the_subscriber_may_not_see_still_count_as_covered() {
        // The read ended on an update of another topic: a live copy of it must not leak through
        // as "new" (it is skipped like the rest), and the subscriber's own entries replay.
        let history = vec![envelope(0, 1, "mine"), envelope(0, 2, "other")];
        let live = vec![envelope(0, 2, "other"), envelope(0, 3, "mine")];
        let mut resume = Resume::new(history, &[], |e| e.update.topics[0] == "mine");
        assert_eq!(resume.replayed(), 1);
        assert_eq!(receive(&mut resume, &live), ["id-0-1", "id-0-3"]);
    }

    #[test]
    fn the_transport_high_water_mark_covers_a_read_past_its_last_entry() {
        // Nothing after the id in history, but the read reached position 9 (trimmed or filtered
        // entries): live updates up to 9 were part of that read.
        let live = vec![envelope(0, 9, "t"), envelope(0, 10, "t")];
        let mut resume = Resume::new(Vec::new(), &[Position::new(0, 0, 9)], |_| true);
        assert_eq!(receive(&mut resume, &live), ["id-0-10"]);
    }

    #[test]
    fn partitions_are_covered_independently() {
        let history = vec![envelope(0, 5, "t"), envelope(1, 2, "t")];
        let live = vec![
            envelope(1, 2, "t"),
            envelope(0, 4, "t"),
            envelope(0, 6, "t"),
            envelope(1, 3, "t"),
        ];
        let mut resume = Resume::new(history, &[], |_| true);
        assert_eq!(
            receive(&mut resume, &live),
            ["id-0-5", "id-1-2", "id-0-6", "id-1-3"]
        );
        assert!(resume.is_done());
    }

    #[test]
    fn batches_respect_the_size_bound_but_always_carry_a_frame() {
        let history: Vec<_> = (1..=10).map(|s| envelope(0, s, "t")).collect();
        let one = history[0].frame.len();
        let mut resume = Resume::new(history, &[], |_| true);
        let first = resume.next_batch(one * 3).unwrap_or_default();
        assert_eq!(ids(&first).len(), 3);
        // A bound below one frame still sends one.
        let next = resume.next_batch(1).unwrap_or_default();
        assert_eq!(ids(&next), ["id-0-4"]);
        let mut rest = 0;
        while let Some(b) = resume.next_batch(usize::MAX) {
            rest += ids(&b).len();
        }
        assert_eq!(rest, 6);
        assert!(!resume.has_pending());
    }

    #[test]
    fn batches_are_charged_while_alive_and_frames_go_alone_once_the_budget_is_spent() {
        let history: Vec<_> = (1..=8).map(|seq| envelope(0, seq, "t")).collect();
        let frame = history[0].frame.len();
        // Room for one batch of two frames.
        let budget = ReplayBudget::new(2 * frame + frame / 2);
        let mut a = Resume::new(history.clone(), &[], |_| true).with_budget(budget.clone());
        let mut b = Resume::new(history, &[], |_| true).with_budget(budget.clone());
        let held = a.next_batch(2 * frame).expect("a batch");
        assert_eq!(ids(&held), ["id-0-1", "id-0-2"]);
        assert_eq!(budget.used(), 2 * frame);
        // Spent: the next replay sends single frames, shared and uncopied.
        let single = b.next_batch(2 * frame).expect("a frame");
        assert_eq!(ids(&single), ["id-0-1"]);
        assert_eq!(budget.unbatched(), 1);
        assert_eq!(budget.used(), 2 * frame);
        // Once the held batch is written and dropped, batching resumes.
        drop(held);
        assert_eq!(budget.used(), 0);
        let batch = b.next_batch(2 * frame).expect("a batch");
        assert_eq!(ids(&batch), ["id-0-2", "id-0-3"]);
        drop(batch);
        // Whatever is sent, nothing is lost or repeated.
        let mut rest = Vec::new();
        while let Some(frames) = b.next_batch(2 * frame) {
            rest.extend(ids(&frames));
        }
        assert_eq!(rest, ["id-0-4", "id-0-5", "id-0-6", "id-0-7", "id-0-8"]);
        assert_eq!(budget.used(), 0);
    }
}
