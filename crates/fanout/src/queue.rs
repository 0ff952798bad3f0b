//! A subscriber's bounded update queue: the shard pushes, the subscriber's stream takes.
//!
//! It replaces a Tokio `mpsc` channel, which costs about 800 bytes per subscriber before anything
//! is queued (a cache-padded channel plus a first block of 32 slots): with tens of thousands of
//! mostly idle subscribers per node that was a third of what each one cost. This queue is a
//! `VecDeque` behind a mutex, empty (no allocation) while idle, living in the subscriber's shared
//! state. The shard pushes under the lock and wakes the stream only if the stream is waiting, so
//! a burst queued before the stream runs costs one wakeup; the stream takes everything queued in
//! one lock. The lock is only ever held for a push or a pop, never across an `.await`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;
use quicksilver_protocol::Envelope;

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
}

impl Queue {
    /// An empty queue holding at most `capacity` updates.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
        }
    }

    /// Appends `envelope`, waking the stream if it waits.
    pub(crate) fn push(&self, envelope: Arc<Envelope>) -> Result<(), PushError> {
        let waker = {
            let mut inner = self.inner.lock();
            if inner.receiver_gone || inner.closed {
                return Err(PushError::Closed);
            }
            if inner.items.len() >= self.capacity {
                return Err(PushError::Full);
            }
            inner.items.push_back(envelope);
            inner.waker.take()
        };
        // Woken outside the lock, so the woken task does not find it held.
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
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

    /// Whether updates are waiting.
    pub(crate) fn has_queued(&self) -> bool {
        !self.inner.lock().items.is_empty()
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
    fn bounded_fifo_that_wakes_once_per_wait() {
        let q = Queue::new(2);
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(q.poll_pop(&mut cx).is_pending());
        q.push(envelope(1)).unwrap();
        q.push(envelope(2)).unwrap();
        assert_eq!(q.push(envelope(3)), Err(PushError::Full));
        // Two pushes while waiting: one wakeup.
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert!(q.has_queued());
        let mut out = Vec::new();
        assert_eq!(q.pop_many(&mut out, 10), 2);
        assert_eq!(
            out.iter().map(|e| e.position.seq).collect::<Vec<_>>(),
            [1, 2]
        );
        assert!(q.try_pop().is_none());
        q.push(envelope(4)).unwrap();
        q.close();
        assert_eq!(q.push(envelope(5)), Err(PushError::Closed));
        assert!(matches!(q.poll_pop(&mut cx), Poll::Ready(Some(e)) if e.position.seq == 4));
        assert!(matches!(q.poll_pop(&mut cx), Poll::Ready(None)));
    }

    #[test]
    fn a_gone_receiver_refuses_pushes_and_memory_is_returned() {
        let q = Queue::new(1000);
        for i in 0..200 {
            q.push(envelope(i)).unwrap();
        }
        while q.try_pop().is_some() {}
        assert_eq!(q.inner.lock().items.capacity(), 0);
        q.drop_receiver();
        assert_eq!(q.push(envelope(1)), Err(PushError::Closed));
    }
}
