//! A subscriber's bounded update queue: the shard pushes, the subscriber's stream takes.
//!
//! It replaces a Tokio `mpsc` channel, which costs about 800 bytes per subscriber before anything
//! is queued (a cache-padded channel plus a first block of 32 slots): with tens of thousands of
//! mostly idle subscribers per node that was a third of what each one cost. This queue is a
//! `VecDeque` behind a mutex, empty (no allocation) while idle, living in the subscriber's shared
//! state. The shard pushes under the lock and wakes the stream only if the stream is waiting, so
//! a burst queued before the stream runs costs one wakeup; the stream takes everything queued in
//! one lock. The lock is only ever held for a push or a pop, never across an `.await`.
//!
//! **Written straight to the socket.** While the stream's writer has nothing left to write and
//! waits for the next update, it may open the queue's direct way ([`crate::direct`]): a push that
//! finds the queue empty and the way open writes the update to the socket itself, without a queue
//! entry or a wakeup. The way is opened and closed under this lock, and only ever while the queue
//! is empty, so the socket has one writer at a time and updates keep their order: whatever does
//! not go out whole (the socket is full) is left for the writer, which is woken and closes the way
//! before it writes anything else.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;
use quicksilver_protocol::{Envelope, Position};

use crate::direct::{DirectSink, Sent};
use crate::resume::take_covered;

/// A queue that held more than this and then drained gives its memory back, so one burst does not
/// leave every subscriber of a busy topic holding a large buffer forever.
const SHRINK_ABOVE: usize = 64;

/// Why a push was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The queue holds its capacity: the subscriber is too slow.
    Full,
    /// The receiving side is gone.
    Closed,
    /// Updates have waited in the queue longer than the dispatch timeout: the connection is
    /// stalled (its socket stopped draining) even if the queue is not full yet.
    Stalled,
}

/// The dispatch-timeout check a push makes under the queue's lock (see [`Queue::push_within`]).
pub(crate) struct Stall<'a> {
    /// Now, in the fan-out's milliseconds.
    pub(crate) now_ms: u64,
    /// The dispatch timeout.
    pub(crate) timeout_ms: u64,
    /// Since when the oldest queued update waits (0: unknown), kept in the subscriber's state.
    pub(crate) waiting_since_ms: &'a AtomicU64,
}

/// The queue. Both sides hold it through the subscriber's shared state.
#[derive(Debug)]
pub(crate) struct Queue {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    items: VecDeque<Arc<Envelope>>,
    /// The stream's waker, while it waits for an update.
    waker: Option<Waker>,
    /// No more pushes will come (the index let the subscriber go): the stream ends once the
    /// queue is drained.
    closed: bool,
    /// The stream is gone: pushes are refused.
    receiver_gone: bool,
    /// The stream sends no history any more, so a live update needs no filtering before it is
    /// written: the direct way may be opened.
    live_only: bool,
    /// The direct way is open: a push into the empty queue writes to `sink`.
    direct_open: bool,
    /// The stream's socket, attached by its writer when it can take direct writes.
    sink: Option<Arc<dyn DirectSink>>,
    /// Bytes of the update at the head of `items` that a direct write sent (the socket took only
    /// part of it); 0 when none. The writer sends the rest before anything else.
    partial: u32,
    /// While the stream replays history: per partition, the last position that history covers.
    /// A push it covers is dropped instead of queued (see [`Queue::skip_covered`]). Boxed: idle
    /// subscribers, the many, pay one pointer for it instead of a `Vec`'s three words.
    #[allow(clippy::box_collection)]
    covered: Option<Box<Vec<Position>>>,
}

/// What became of a pushed update.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued for the stream.
    Queued,
    /// Written to the socket directly (all of it, or what the socket did not take left for the
    /// writer).
    Written,
    /// Dropped: the history the stream is replaying holds it already.
    Covered,
}

impl Queue {
    /// An empty queue holding at most `capacity` updates.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
        }
    }

    /// Appends `envelope` (or, with `direct` and the direct way open, writes it to the socket),
    /// waking the stream if it waits and has something to do.
    #[cfg(test)]
    pub(crate) fn push(&self, envelope: &Arc<Envelope>, direct: bool) -> Result<Pushed, PushError> {
        self.push_within(envelope, direct, None)
    }

    /// [`Queue::push`], refusing with [`PushError::Stalled`] when `stall` says the queued updates
    /// have waited too long. The check is made under the same lock as the push (one lock per
    /// delivery): a queue that is empty now restarts the wait from `now_ms`.
    pub(crate) fn push_within(
        &self,
        envelope: &Arc<Envelope>,
        direct: bool,
        stall: Option<Stall<'_>>,
    ) -> Result<Pushed, PushError> {
        let (waker, pushed) = {
            let mut inner = self.inner.lock();
            match admit(&mut inner, envelope, direct, stall)? {
                Admitted::Covered => return Ok(Pushed::Covered),
                Admitted::Direct => {
                    let sent = inner
                        .sink
                        .as_ref()
                        .map_or(Sent::Blocked, |sink| sink.try_send(envelope));
                    settle(&mut inner, envelope, sent)
                }
                Admitted::Queue => self.enqueue(&mut inner, envelope)?,
            }
        };
        // Woken outside the lock, so the woken task does not find it held.
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(pushed)
    }

    /// Queues `envelope` for the writer (not written directly).
    fn enqueue(
        &self,
        inner: &mut Inner,
        envelope: &Arc<Envelope>,
    ) -> Result<(Option<Waker>, Pushed), PushError> {
        if inner.items.len() >= self.capacity {
            return Err(PushError::Full);
        }
        // Queued: the writer writes again, so the shard must not.
        inner.direct_open = false;
        inner.items.push_back(envelope.clone());
        Ok((inner.waker.take(), Pushed::Queued))
    }

    /// Attaches the socket direct writes go to (see the module documentation).
    pub(crate) fn attach(&self, sink: Arc<dyn DirectSink>) {
        self.inner.lock().sink = Some(sink);
    }

    /// Tells the queue which live updates the history the stream replays already holds: per
    /// partition, the last position it covers. Those are dropped, from the queue now and from
    /// pushes to come, instead of waiting in the queue until the stream skips them: a subscriber
    /// resuming while this node's reader catches up on a backlog would otherwise see its queue fill
    /// with updates it is being sent as history, and be cut off as too slow.
    pub(crate) fn skip_covered(&self, covered: &[Position]) {
        if covered.is_empty() {
            return;
        }
        let mut inner = self.inner.lock();
        let mut covered = covered.to_vec();
        // Never the head of a partly written update (only direct writes leave one, and a replaying
        // stream takes none).
        let keep_head = usize::from(inner.partial != 0);
        let mut index = 0;
        inner.items.retain(|envelope| {
            index += 1;
            index <= keep_head || !take_covered(&mut covered, envelope.position)
        });
        inner.covered = (!covered.is_empty()).then(|| Box::new(covered));
    }

    /// Marks the stream as sending no more history: live updates may be written directly.
    pub(crate) fn set_live_only(&self) {
        self.inner.lock().live_only = true;
    }

    /// Opens the direct way if the queue is empty and a socket is attached; the writer calls it
    /// with nothing left to write. Returns whether it opened.
    pub(crate) fn open_direct(&self) -> bool {
        let mut inner = self.inner.lock();
        let open = inner.live_only
            && inner.sink.is_some()
            && inner.items.is_empty()
            && !inner.closed
            && !inner.receiver_gone;
        inner.direct_open = open;
        open
    }

    /// Closes the direct way (the writer is about to write) and takes the update a direct write
    /// sent only part of, with the count of its bytes that went out: the rest must go out first.
    pub(crate) fn close_direct(&self) -> Option<(Arc<Envelope>, usize)> {
        let mut inner = self.inner.lock();
        inner.direct_open = false;
        if inner.partial == 0 {
            return None;
        }
        let written = std::mem::take(&mut inner.partial) as usize;
        pop(&mut inner).map(|envelope| (envelope, written))
    }

    /// Wakes the stream if it waits, without giving it anything (its alarm rang).
    pub(crate) fn wake(&self) {
        let waker = self.inner.lock().waker.take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Registers `cx`'s waker to be woken by the next push, close or alarm, without taking
    /// anything (a writer blocked on its socket watching for a cut-off).
    pub(crate) fn register(&self, cx: &mut Context<'_>) {
        let mut inner = self.inner.lock();
        match &inner.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => inner.waker = Some(cx.waker().clone()),
        }
    }

    /// Ends the queue: the stream gets what is queued, then `None`.
    pub(crate) fn close(&self) {
        let waker = {
            let mut inner = self.inner.lock();
            inner.closed = true;
            inner.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Called when the stream goes away: later pushes are refused and the queue's memory freed.
    pub(crate) fn drop_receiver(&self) {
        let mut inner = self.inner.lock();
        inner.receiver_gone = true;
        inner.waker = None;
        inner.items = VecDeque::new();
        // The socket goes back to its connection, which may serve more requests on it.
        inner.direct_open = false;
        inner.sink = None;
        inner.partial = 0;
    }

    /// Takes the next update, or registers `cx`'s waker; `Ready(None)` once closed and drained.
    pub(crate) fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Option<Arc<Envelope>>> {
        let mut inner = self.inner.lock();
        if let Some(next) = pop(&mut inner) {
            return Poll::Ready(Some(next));
        }
        if inner.closed {
            return Poll::Ready(None);
        }
        match &inner.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => inner.waker = Some(cx.waker().clone()),
        }
        drop(inner);
        Poll::Pending
    }

    /// Takes the next update if there is one.
    pub(crate) fn try_pop(&self) -> Option<Arc<Envelope>> {
        pop(&mut self.inner.lock())
    }

    /// Moves up to `max` queued updates into `out` under one lock; returns how many.
    pub(crate) fn pop_many(&self, out: &mut Vec<Arc<Envelope>>, max: usize) -> usize {
        let mut inner = self.inner.lock();
        let n = inner.items.len().min(max);
        out.extend(inner.items.drain(..n));
        if inner.items.is_empty() {
            shrink(&mut inner.items);
        }
        n
    }
}

/// What a push may do, decided under the queue's lock before anything is written.
enum Admitted {
    /// Dropped: the stream's replay covers it.
    Covered,
    /// Written to the socket, the direct way being open.
    Direct,
    /// Queued for the writer.
    Queue,
}

/// The checks of a push ([`Queue::push_within`]): the queue is open, the update not covered by a
/// replay, the queue not stalled; then whether it may be written directly.
fn admit(
    inner: &mut Inner,
    envelope: &Envelope,
    direct: bool,
    stall: Option<Stall<'_>>,
) -> Result<Admitted, PushError> {
    if inner.receiver_gone || inner.closed {
        return Err(PushError::Closed);
    }
    if let Some(covered) = inner.covered.as_mut() {
        let skip = take_covered(covered, envelope.position);
        if covered.is_empty() {
            inner.covered = None;
        }
        if skip {
            return Ok(Admitted::Covered);
        }
    }
    if let Some(stall) = stall {
        let since = stall.waiting_since_ms.load(Ordering::Relaxed);
        let queued = !inner.items.is_empty();
        if queued && since != 0 && stall.now_ms.saturating_sub(since) > stall.timeout_ms {
            return Err(PushError::Stalled);
        }
        if !queued || since == 0 {
            stall
                .waiting_since_ms
                .store(stall.now_ms, Ordering::Relaxed);
        }
    }
    Ok(if inner.direct_open && direct {
        Admitted::Direct
    } else {
        Admitted::Queue
    })
}

/// Records what a direct write of `envelope` did: whatever did not go out whole is left at the head
/// of the queue for the writer, which is woken and closes the way.
fn settle(inner: &mut Inner, envelope: &Arc<Envelope>, sent: Sent) -> (Option<Waker>, Pushed) {
    match sent {
        Sent::All => (None, Pushed::Written),
        Sent::Part(written) => {
            inner.direct_open = false;
            inner.items.push_back(envelope.clone());
            // An update is at most the publish body limit, far below 4 GiB.
            inner.partial = u32::try_from(written).unwrap_or(u32::MAX);
            (inner.waker.take(), Pushed::Written)
        }
        // The socket is full or failed: the writer takes over and finds out.
        Sent::Blocked | Sent::Failed => {
            inner.direct_open = false;
            inner.items.push_back(envelope.clone());
            (inner.waker.take(), Pushed::Queued)
        }
    }
}

/// One subscriber's part in [`push_batch`]: its queue and the dispatch-timeout check to make.
pub(crate) struct BatchPush<'a> {
    pub(crate) queue: &'a Queue,
    pub(crate) stall: Option<Stall<'a>>,
}

/// Pushes `envelope` to every queue of `pushes`, writing it to the sockets of those whose direct
/// way is open with one batched submission ([`quicksilver_uring`]) instead of a write each;
/// `out[i]` is what became of `pushes[i]`. A queue whose update is written this way stays locked
/// from its checks until its outcome is recorded, so, as with [`Queue::push_within`], the socket
/// has one writer at a time; the others are unlocked once checked. Returns how many sends went
/// through the ring, or the ring's error if it failed: a send whose outcome it lost may have put
/// any part of the update on the wire, so that connection is aborted (the client resumes with its
/// last event id) rather than written to again.
pub(crate) fn push_batch(
    pushes: Vec<BatchPush<'_>>,
    envelope: &Arc<Envelope>,
    ring: &mut quicksilver_uring::SendRing,
    out: &mut Vec<Result<Pushed, PushError>>,
) -> std::io::Result<usize> {
    out.clear();
    let mut wakers = Vec::new();
    // The direct writes: index in `pushes`, the socket's sink, the queue held locked.
    let mut direct = Vec::new();
    for (i, push) in pushes.into_iter().enumerate() {
        let mut inner = push.queue.inner.lock();
        let outcome = match admit(&mut inner, envelope, true, push.stall) {
            Err(e) => Err(e),
            Ok(Admitted::Covered) => Ok(Pushed::Covered),
            Ok(Admitted::Direct) => match inner.sink.clone() {
                Some(sink) if sink.socket().is_some() => {
                    direct.push((i, sink, inner));
                    // Settled once the send's outcome is known.
                    out.push(Ok(Pushed::Written));
                    continue;
                }
                sink => {
                    let sent = sink.map_or(Sent::Blocked, |sink| sink.try_send(envelope));
                    let (waker, pushed) = settle(&mut inner, envelope, sent);
                    wakers.extend(waker);
                    Ok(pushed)
                }
            },
            Ok(Admitted::Queue) => {
                push.queue
                    .enqueue(&mut inner, envelope)
                    .map(|(waker, pushed)| {
                        wakers.extend(waker);
                        pushed
                    })
            }
        };
        out.push(outcome);
    }
    let sends = direct.len();
    let mut failed = Ok(());
    if !direct.is_empty() {
        let sockets: Vec<_> = direct
            .iter()
            .filter_map(|(_, sink, _)| sink.socket())
            .collect();
        let mut results = Vec::with_capacity(sockets.len());
        if sockets.len() == direct.len() {
            failed = ring.send_all(&envelope.chunk, &sockets, &mut results);
        }
        drop(sockets);
        // Whatever the ring did not say (a sink that stopped offering its socket: nothing was
        // sent) is unknown.
        results.resize(direct.len(), quicksilver_uring::UNKNOWN);
        let length = envelope.chunk.len();
        for ((i, sink, mut inner), result) in direct.into_iter().zip(results) {
            let sent = match usize::try_from(result) {
                Ok(n) if n == length => Sent::All,
                Ok(0) => Sent::Failed,
                Ok(n) => Sent::Part(n),
                Err(_) if result == -quicksilver_uring::EAGAIN => Sent::Blocked,
                Err(_) if result == quicksilver_uring::UNKNOWN => {
                    sink.abort();
                    Sent::Failed
                }
                Err(_) => Sent::Failed,
            };
            if matches!(sent, Sent::All | Sent::Part(_)) {
                sink.written(envelope);
            }
            let (waker, pushed) = settle(&mut inner, envelope, sent);
            drop(inner);
            wakers.extend(waker);
            out[i] = Ok(pushed);
        }
    }
    // Woken outside the locks, so the woken tasks do not find them held.
    for waker in wakers {
        waker.wake();
    }
    failed.map(|()| sends)
}

fn pop(inner: &mut Inner) -> Option<Arc<Envelope>> {
    let next = inner.items.pop_front();
    if next.is_some() && inner.items.is_empty() {
        shrink(&mut inner.items);
    }
    next
}

fn shrink(items: &mut VecDeque<Arc<Envelope>>) {
    if items.capacity() > SHRINK_ABOVE {
        *items = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use quicksilver_protocol::{Position, Update};

    use super::*;

    fn envelope(seq: u64) -> Arc<Envelope> {
        Arc::new(Envelope::new(
            Position::new(0, 0, seq),
            Update {
                id: format!("id-{seq}"),
                topics: vec!["t".into()],
                data: String::new(),
                private: false,
                event_type: None,
                retry: None,
            },
            0,
        ))
    }

    #[derive(Default)]
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_push_finds_a_stalled_queue_under_its_own_lock() {
        let q = Queue::new(10);
        let since = AtomicU64::new(0);
        let stall = |now_ms| {
            Some(Stall {
                now_ms,
                timeout_ms: 100,
                waiting_since_ms: &since,
            })
        };
        // An empty queue starts the wait at each push.
        q.push_within(&envelope(1), false, stall(1_000)).unwrap();
        assert_eq!(since.load(Ordering::Relaxed), 1_000);
        // Queued, within the timeout: the wait keeps its start.
        q.push_within(&envelope(2), false, stall(1_100)).unwrap();
        assert_eq!(since.load(Ordering::Relaxed), 1_000);
        // Past it with updates still queued: stalled, nothing added.
        assert_eq!(
            q.push_within(&envelope(3), false, stall(1_101)),
            Err(PushError::Stalled)
        );
        let mut out = Vec::new();
        assert_eq!(q.pop_many(&mut out, 10), 2);
        // Drained: the next push starts a new wait.
        q.push_within(&envelope(4), false, stall(5_000)).unwrap();
        assert_eq!(since.load(Ordering::Relaxed), 5_000);
    }

    #[test]
    fn updates_the_replay_holds_never_take_a_place_in_the_queue() {
        // A queue of 2 while the node's reader hands over a backlog of 5 updates the resuming
        // stream is also replaying (up to seq 5): none of them may fill it.
        let q = Queue::new(2);
        q.push(&envelope(1), false).unwrap();
        q.push(&envelope(2), false).unwrap();
        assert_eq!(q.push(&envelope(3), false), Err(PushError::Full));
        q.skip_covered(&[Position::new(0, 0, 5)]);
        // What was queued and is covered is gone; what comes and is covered is dropped.
        assert!(q.inner.lock().items.is_empty());
        for seq in 3..=5 {
            assert_eq!(q.push(&envelope(seq), false), Ok(Pushed::Covered));
        }
        // Past the mark: queued, and the mark is gone.
        assert_eq!(q.push(&envelope(6), false), Ok(Pushed::Queued));
        assert!(q.inner.lock().covered.is_none());
        assert_eq!(q.push(&envelope(7), false), Ok(Pushed::Queued));
        assert_eq!(q.push(&envelope(8), false), Err(PushError::Full));
        let mut out = Vec::new();
        assert_eq!(q.pop_many(&mut out, 10), 2);
        assert_eq!(
            out.iter().map(|e| e.position.seq).collect::<Vec<_>>(),
            [6, 7]
        );
        // A queued update past the mark takes the mark away at once: later ones are kept.
        let q = Queue::new(10);
        q.push(&envelope(9), false).unwrap();
        q.skip_covered(&[Position::new(0, 0, 8)]);
        assert!(q.inner.lock().covered.is_none());
        assert_eq!(q.push(&envelope(3), false), Ok(Pushed::Queued));
        // Another partition's updates are not its business.
        let q = Queue::new(10);
        q.skip_covered(&[Position::new(1, 0, 8)]);
        assert_eq!(q.push(&envelope(3), false), Ok(Pushed::Queued));
    }

    #[test]
    fn bounded_fifo_that_wakes_once_per_wait() {
        let q = Queue::new(2);
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(q.poll_pop(&mut cx).is_pending());
        q.push(&envelope(1), false).unwrap();
        q.push(&envelope(2), false).unwrap();
        assert_eq!(q.push(&envelope(3), false), Err(PushError::Full));
        // Two pushes while waiting: one wakeup.
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert!(!q.inner.lock().items.is_empty());
        let mut out = Vec::new();
        assert_eq!(q.pop_many(&mut out, 10), 2);
        assert_eq!(
            out.iter().map(|e| e.position.seq).collect::<Vec<_>>(),
            [1, 2]
        );
        assert!(q.try_pop().is_none());
        q.push(&envelope(4), true).unwrap();
        q.close();
        assert_eq!(q.push(&envelope(5), true), Err(PushError::Closed));
        assert!(matches!(q.poll_pop(&mut cx), Poll::Ready(Some(e)) if e.position.seq == 4));
        assert!(matches!(q.poll_pop(&mut cx), Poll::Ready(None)));
    }

    #[test]
    fn a_gone_receiver_refuses_pushes_and_memory_is_returned() {
        let q = Queue::new(1000);
        for i in 0..200 {
            q.push(&envelope(i), true).unwrap();
        }
        while q.try_pop().is_some() {}
        assert_eq!(q.inner.lock().items.capacity(), 0);
        q.drop_receiver();
        assert_eq!(q.push(&envelope(1), true), Err(PushError::Closed));
    }

    /// A sink that answers what the test scripted, and records what it took.
    #[derive(Debug, Default)]
    struct ScriptedSink {
        answers: Mutex<VecDeque<Sent>>,
        taken: Mutex<Vec<u64>>,
    }

    impl DirectSink for ScriptedSink {
        fn try_send(&self, envelope: &Envelope) -> Sent {
            let answer = self.answers.lock().pop_front().unwrap_or(Sent::All);
            if answer != Sent::Blocked && answer != Sent::Failed {
                self.taken.lock().push(envelope.position.seq);
            }
            answer
        }
    }

    #[test]
    fn the_direct_way_opens_only_when_nothing_is_left_and_closes_on_the_first_miss() {
        let q = Queue::new(10);
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let sink = Arc::new(ScriptedSink::default());
        // No socket, then history still to filter: closed.
        assert!(!q.open_direct());
        q.attach(sink.clone());
        assert!(!q.open_direct());
        q.set_live_only();
        // Something queued: closed.
        q.push(&envelope(1), true).unwrap();
        assert!(!q.open_direct());
        assert!(q.try_pop().is_some());
        assert!(q.poll_pop(&mut cx).is_pending());
        assert!(q.open_direct());
        // Written whole: no queue entry, no wakeup.
        assert_eq!(q.push(&envelope(2), true), Ok(Pushed::Written));
        assert_eq!(count.0.load(Ordering::Relaxed), 0);
        // Written in part: the rest is the writer's, which is woken; the way is closed.
        sink.answers.lock().push_back(Sent::Part(7));
        assert_eq!(q.push(&envelope(3), true), Ok(Pushed::Written));
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert_eq!(q.push(&envelope(4), true), Ok(Pushed::Queued));
        let (partial, written) = q.close_direct().unwrap();
        assert_eq!((partial.position.seq, written), (3, 7));
        assert_eq!(q.try_pop().map(|e| e.position.seq), Some(4));
        // Blocked: queued for the writer, which is woken.
        assert!(q.poll_pop(&mut cx).is_pending());
        assert!(q.open_direct());
        sink.answers.lock().push_back(Sent::Blocked);
        assert_eq!(q.push(&envelope(5), true), Ok(Pushed::Queued));
        assert_eq!(count.0.load(Ordering::Relaxed), 2);
        assert!(q.close_direct().is_none());
        assert_eq!(q.try_pop().map(|e| e.position.seq), Some(5));
        // Behind (the shard holds several updates): queued, the way closed, the writer woken.
        assert!(q.poll_pop(&mut cx).is_pending());
        assert!(q.open_direct());
        assert_eq!(q.push(&envelope(6), false), Ok(Pushed::Queued));
        assert_eq!(q.push(&envelope(7), true), Ok(Pushed::Queued));
        assert_eq!(count.0.load(Ordering::Relaxed), 3);
        assert_eq!(*sink.taken.lock(), [2, 3]);
        // The stream gone, the socket is let go.
        q.drop_receiver();
        assert_eq!(Arc::strong_count(&sink), 1);
    }

    /// A sink over one end of a real socket pair, as the server's is over a TCP socket.
    #[derive(Debug)]
    struct SocketSink {
        socket: std::os::unix::net::UnixStream,
        written: Mutex<Vec<u64>>,
        aborted: std::sync::atomic::AtomicBool,
    }

    impl DirectSink for SocketSink {
        fn try_send(&self, envelope: &Envelope) -> Sent {
            use std::io::Write;
            match (&self.socket).write(&envelope.chunk) {
                Ok(n) if n == envelope.chunk.len() => Sent::All,
                Ok(n) => Sent::Part(n),
                Err(_) => Sent::Blocked,
            }
        }

        fn socket(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
            use std::os::fd::AsFd;
            Some(self.socket.as_fd())
        }

        fn written(&self, envelope: &Envelope) {
            self.written.lock().push(envelope.position.seq);
        }

        fn abort(&self) {
            self.aborted.store(true, Ordering::Relaxed);
        }
    }

    /// A live queue with its direct way open onto a fresh socket pair; the other end.
    fn open_queue(count: &Arc<Count>) -> (Queue, Arc<SocketSink>, std::os::unix::net::UnixStream) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let sink = Arc::new(SocketSink {
            socket: ours,
            written: Mutex::default(),
            aborted: Default::default(),
        });
        let q = Queue::new(4);
        q.attach(sink.clone());
        q.set_live_only();
        let waker = Waker::from(count.clone());
        assert!(q.poll_pop(&mut Context::from_waker(&waker)).is_pending());
        assert!(q.open_direct());
        (q, sink, theirs)
    }

    #[test]
    fn a_batch_settles_each_queue_as_one_push_at_a_time_would() {
        let Ok(mut ring) = quicksilver_uring::SendRing::new(8) else {
            eprintln!("io_uring is not available here: nothing to test");
            return;
        };
        let count = Arc::new(Count::default());
        let (open, open_sink, mut open_peer) = open_queue(&count);
        let (full, full_sink, _full_peer) = open_queue(&count);
        // Fill `full`'s socket: the batch's send gets EAGAIN.
        let filler = Envelope::new(
            Position::new(0, 0, 99),
            Update {
                id: "f".into(),
                topics: vec!["t".into()],
                data: "x".repeat(1 << 16),
                private: false,
                event_type: None,
                retry: None,
            },
            0,
        );
        while full_sink.try_send(&filler) != Sent::Blocked {}
        let (closed, _, _closed_peer) = open_queue(&count);
        closed.close();
        let queued = Queue::new(4);
        let mut out = Vec::new();
        let update = envelope(1);
        let pushes = [&open, &full, &closed, &queued]
            .into_iter()
            .map(|queue| BatchPush { queue, stall: None })
            .collect();
        let sends = push_batch(pushes, &update, &mut ring, &mut out).unwrap();
        assert_eq!(sends, 2, "the two open ways go through the ring");
        assert_eq!(
            out,
            [
                Ok(Pushed::Written),
                Ok(Pushed::Queued),
                Err(PushError::Closed),
                Ok(Pushed::Queued)
            ]
        );
        // Written whole: on the wire, nothing queued, the way still open.
        let mut got = vec![0; update.chunk.len()];
        std::io::Read::read_exact(&mut open_peer, &mut got).unwrap();
        assert_eq!(got, &update.chunk[..]);
        assert_eq!(*open_sink.written.lock(), [1]);
        assert!(open.try_pop().is_none());
        assert_eq!(
            push_batch(
                vec![BatchPush {
                    queue: &open,
                    stall: None
                }],
                &envelope(2),
                &mut ring,
                &mut out,
            )
            .unwrap(),
            1
        );
        // Blocked: queued for its writer, which was woken, the way closed; nothing aborted.
        assert!(full_sink.written.lock().is_empty());
        assert!(full.close_direct().is_none());
        assert_eq!(full.try_pop().map(|e| e.position.seq), Some(1));
        assert!(count.0.load(Ordering::Relaxed) >= 1);
        assert!(!full_sink.aborted.load(Ordering::Relaxed));
        // Not open: queued as a plain push is.
        assert_eq!(queued.try_pop().map(|e| e.position.seq), Some(1));
    }
}
