//! The direct way out: a live update written to the subscriber's socket by the shard that offers
//! it, when the stream's writer has nothing left to write.
//!
//! Without it every delivery costs a wakeup of the stream's task, a poll of its body and writer,
//! and two locks of its queue, on top of the one write the kernel needs. With it, a subscriber
//! that keeps up (its queue empty, its socket taking what it is given) costs the shard one lock
//! and one non-blocking write per update, as a hand-written fan-out loop would.
//!
//! The writer owns the socket and decides when the way is open ([`DirectWrites::open`]): only with
//! nothing of its own left to write, after the stream's history was sent (a live update must then
//! not be filtered), and only while the queue is empty. The moment a write does not go out whole,
//! or the writer is woken for any reason (a heartbeat, an alarm, the client speaking), the way
//! closes and the writer goes on as without it, sending first what the direct write left unsent
//! ([`DirectWrites::close`]: the update is kept at the head of the queue with a count of the bytes
//! that went out, so a partial write costs no copy and an idle subscriber no buffer). All of it
//! happens under the subscriber's queue lock, so there is one
//! writer of the socket at a time and updates keep their order.
//!
//! **Batched** (`--io-uring`): a shard with a ring ([`quicksilver_uring`]) checks every matched
//! queue first and sends the update to all the sockets whose way is open with one submission, each
//! of those queues locked until its send's outcome is recorded exactly as a single write's would be
//! (`queue::push_batch`).
//!
//! What the socket is, and how an update is framed on it (an HTTP/1.1 chunk), is the server's
//! business: it implements [`DirectSink`].

use std::sync::Arc;

use quicksilver_protocol::Envelope;

use crate::subscriber::SubscriberState;

/// A socket the fan-out may write an update to without waiting.
pub trait DirectSink: Send + Sync + std::fmt::Debug {
    /// Writes `envelope`'s frame, framed for the connection, without blocking.
    fn try_send(&self, envelope: &Envelope) -> Sent;

    /// The socket, if the fan-out may send `envelope.chunk` to it itself, batched with other
    /// sends (`--io-uring`); it then calls [`DirectSink::written`] for what it sent.
    fn socket(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }

    /// Some of `envelope` was sent to [`DirectSink::socket`] by the fan-out.
    fn written(&self, _envelope: &Envelope) {}

    /// Ends the connection at once: a send to [`DirectSink::socket`] may have put any part of an
    /// update on the wire without the fan-out learning how much (its batch failed), so nothing
    /// more may be written to it.
    fn abort(&self) {}
}

/// What became of a direct write.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// All of it was written.
    All,
    /// Only this many bytes (of the framed update) were written: the writer sends the rest before
    /// anything else.
    Part(usize),
    /// Nothing was written: the socket is full.
    Blocked,
    /// The socket failed; nothing was written (the writer finds the error itself).
    Failed,
}

/// The direct way of one subscriber as its stream's writer sees it (see the module
/// documentation), borrowed from the stream's [`crate::CutOff`]
/// ([`crate::CutOff::direct_writes`]): what holds the writer's side of the cut-off holds this too.
#[derive(Clone, Copy)]
pub struct DirectWrites<'a> {
    pub(crate) state: &'a SubscriberState,
}

impl std::fmt::Debug for DirectWrites<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectWrites").finish_non_exhaustive()
    }
}

impl DirectWrites<'_> {
    /// Attaches the socket direct writes go to; until then the way never opens. The subscriber's
    /// handle detaches it when it is dropped (the stream ended), so the socket can serve the
    /// connection's next request.
    pub fn attach(self, sink: Arc<dyn DirectSink>) {
        self.state.queue.attach(sink);
    }

    /// Opens the way, if the stream's history is sent, a socket is attached and nothing is queued.
    /// Call it with nothing left to write, after the stream's body returned `Pending` (so the
    /// waker that a partial write or a blocked socket wakes is registered). Returns whether it
    /// opened.
    pub fn open(self) -> bool {
        self.state.queue.open_direct()
    }

    /// Closes the way before the writer writes anything itself, and returns the update a direct
    /// write sent only part of, with how many of its framed bytes went out: the rest must be
    /// written first.
    pub fn close(self) -> Option<(Arc<Envelope>, usize)> {
        self.state.queue.close_direct()
    }
}
