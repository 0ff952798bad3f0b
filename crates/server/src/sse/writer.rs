//! Writes a streamed response to a socket: the response head, then every data frame of the body as
//! one HTTP/1.1 chunk, until the body ends (then the last chunk), the client goes away, or the
//! fan-out cuts the subscriber off.
//!
//! [`StreamWriter`] is a hand-written future rather than an `async fn`: it is what every idle
//! subscriber's task holds for as long as its stream lasts, and an `async fn`'s state keeps room
//! for every local of every await point. It holds no buffer between writes: the unsent bytes are
//! the head (freed once written) and the current frame (a shared `Bytes`), with the chunk's size
//! line on the stack, written with one vectored write when the socket takes it all, then flushed
//! (a no-op on TCP; a TLS socket, [`super::tls::TlsSocket`], keeps the records it encrypted until
//! the socket takes them, and nothing else would push them out before the next update).
//!
//! While it waits for the next frame it peeks at the socket, so a client that closes its end is
//! noticed at once (as hyper notices it), without taking the bytes of a pipelined next request.
//! While a write is blocked (the client stopped reading), it watches the stream's [`CutOff`]: a
//! cut-off by the fan-out, a write blocked for longer than the dispatch timeout, or the stream's
//! deadline (maximum connection life, token expiry) ends the wait, whether or not updates arrive
//! (the shard's alarm tick wakes the writer for those times), instead of keeping the socket, its
//! unsent bytes and its replay batch for as long as the client likes. Dropping the writer drops the
//! body, and with it whatever the stream still held.
//!
//! On a plain TCP connection the socket is a [`LeanSocket`], shared with the subscriber's shard:
//! while the writer has nothing to write it opens the fan-out's direct way
//! ([`quicksilver_fanout::direct`]) and goes to sleep; the shard then writes each live update to
//! the socket itself, as one chunk, and wakes the writer only when the socket did not take it all
//! (the writer closes the way and sends the rest first) or something else needs the writer. A
//! subscriber that keeps up thus costs one write per update and no wakeup of its task.

use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::sync::Arc;

use bytes::{Buf, Bytes};
use http_body::Body as _;
use quicksilver_fanout::{CutOff, CutOffReason, DirectSink, Sent};
use quicksilver_protocol::Envelope;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::head;
use crate::metrics::LatencyHistogram;

/// The socket a [`StreamWriter`] writes to: writable, and able to look at incoming bytes without
/// taking them.
pub trait Socket: AsyncWrite + Unpin {
    /// Peeks at incoming bytes (`Ready(Ok(0))`: the client closed its end).
    fn poll_peek(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<usize>>;

    /// The socket as the fan-out may write to it directly ([`quicksilver_fanout::direct`]), if it
    /// can be shared so (a plain TCP connection's [`SharedSocket`]; not a TLS session, whose
    /// writes go through its own state).
    fn direct_sink(&self) -> Option<Arc<dyn DirectSink>> {
        None
    }
}

/// A plain TCP connection's socket, shared by the connection's task and, while it carries a
/// subscriber's stream, that subscriber's shard through the fan-out's direct way (see the module
/// documentation). The subscriber's end detaches it from the fan-out.
#[derive(Debug)]
pub struct LeanSocket {
    socket: TcpStream,
    /// Accept-to-write latency of live updates written directly, when measured (the body measures
    /// the others).
    latency: Option<LatencyHistogram>,
}

impl LeanSocket {
    /// Shares `socket`.
    pub fn new(socket: TcpStream, latency: Option<LatencyHistogram>) -> Arc<Self> {
        Arc::new(Self { socket, latency })
    }
}

impl DirectSink for LeanSocket {
    fn try_send(&self, envelope: &Envelope) -> Sent {
        // Framed once per update for every socket: one plain write, as cheap as a write gets.
        let sent = match self.socket.try_write(&envelope.chunk) {
            Ok(0) => return Sent::Failed,
            Ok(n) if n == envelope.chunk.len() => Sent::All,
            // The socket's buffer filled mid-chunk: the writer sends the rest.
            Ok(n) => Sent::Part(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Sent::Blocked,
            Err(_) => return Sent::Failed,
        };
        self.written(envelope);
        sent
    }

    fn socket(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        Some(self.socket.as_fd())
    }

    fn abort(&self) {
        // Both ways: the writer's next write fails and the connection task ends, so the client
        // reconnects and resumes with its last event id.
        let _ = socket2::SockRef::from(&self.socket).shutdown(std::net::Shutdown::Both);
    }

    fn written(&self, envelope: &Envelope) {
        if let Some(h) = &self.latency {
            super::body::observe_latency(h, envelope, quicksilver_transport::now_micros());
        }
    }
}

/// The connection's handle on its [`LeanSocket`]: the socket's reads, writes and peeks through the
/// shared reference (as Tokio's own `TcpStream` does them: wait for readiness, try, repeat).
pub struct SharedSocket(pub Arc<LeanSocket>);

impl AsyncRead for SharedSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let socket = &self.0.socket;
        loop {
            std::task::ready!(socket.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let room = unfilled.len();
            let mut read = 0;
            // A short read drained the socket: its readiness is cleared (as Tokio's own reads do),
            // so the next read waits for new bytes instead of first trying in vain, a system call
            // saved per request of a kept-alive connection. `try_io` clears only the readiness it
            // saw before the read, never that of bytes arriving after it.
            let outcome = socket.try_io(tokio::io::Interest::READABLE, || {
                read = socket.try_read(unfilled)?;
                if read > 0 && read < room {
                    return Err(std::io::ErrorKind::WouldBlock.into());
                }
                Ok(())
            });
            match outcome {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && read > 0 => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
            buf.advance(read);
            return Poll::Ready(Ok(()));
        }
    }
}

impl AsyncWrite for SharedSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let socket = &self.0.socket;
        loop {
            std::task::ready!(socket.poll_write_ready(cx))?;
            match socket.try_write(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let socket = &self.0.socket;
        loop {
            std::task::ready!(socket.poll_write_ready(cx))?;
            match socket.try_write_vectored(bufs) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Arc::get_mut(&mut self.0) {
            Some(lean) => Pin::new(&mut lean.socket).poll_shutdown(cx),
            // Still lent to a shard (a stream that did not end cleanly): the socket closes when
            // the last holder lets it go.
            None => Poll::Ready(Ok(())),
        }
    }
}

impl Socket for SharedSocket {
    fn poll_peek(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<usize>> {
        self.0.socket.poll_peek(cx, buf)
    }

    fn direct_sink(&self) -> Option<Arc<dyn DirectSink>> {
        Some(self.0.clone())
    }
}

/// Writes one streamed response (see the module documentation). Resolves `Ok` once the last chunk
/// is written, or with an error when the client went away, the socket failed or the stream was
/// cut off (`ConnectionAborted`; `TimedOut` when its write stalled or its deadline passed).
pub struct StreamWriter<'a, S> {
    socket: &'a mut S,
    /// The stream's cut-off, watched while a write is blocked (responses that are not subscriber
    /// streams have none).
    cut_off: Option<CutOff>,
    /// The socket is attached to the fan-out's direct way ([`CutOff::direct_writes`]), which the
    /// writer opens while nothing is left to write.
    direct: bool,
    /// The direct way was opened when the writer last went to sleep.
    direct_open: bool,
    body: axum::body::Body,
    /// What is still to be written.
    out: Unsent,
    /// The body ended: once the last chunk is written, the response is complete.
    ended: bool,
    /// Set once the client sent bytes (a next request): stop watching for EOF then, as hyper does;
    /// the bytes stay in the socket for whoever serves the connection after this response.
    client_spoke: bool,
    /// Everything written has been flushed: a TLS socket keeps what it encrypted until the socket
    /// takes it, and must be flushed once no further write follows (a no-op on TCP).
    flushed: bool,
    /// When the current write blocked ([`quicksilver_fanout::now_ms`]); 0 while writes go through.
    blocked_since_ms: u64,
}

/// The bytes a [`StreamWriter`] has yet to write, in order: the response head (until written),
/// then the current chunk's size line, data and end, each advanced as bytes go out.
///
/// Kept small (it is part of every idle stream's task): the head is a boxed slice freed once
/// written, the size line lives inline, and the chunk's end is a count of the `\r\n` bytes left.
/// The last chunk is sent as data (`0\r\n\r\n`) with no size line or end.
struct Unsent {
    head: Box<[u8]>,
    /// Bytes of `head` already written.
    head_written: u32,
    size: [u8; 18],
    size_len: u8,
    size_written: u8,
    data: Bytes,
    /// Bytes of the chunk's closing `\r\n` still to write (0 to 2).
    crlf_left: u8,
}

impl Unsent {
    fn new(head: Vec<u8>) -> Self {
        Self {
            head: head.into_boxed_slice(),
            head_written: 0,
            size: [0; 18],
            size_len: 0,
            size_written: 0,
            data: Bytes::new(),
            crlf_left: 0,
        }
    }

    fn head_left(&self) -> &[u8] {
        self.head
            .get(self.head_written as usize..)
            .unwrap_or_default()
    }

    fn size_left(&self) -> &[u8] {
        self.size
            .get(usize::from(self.size_written)..usize::from(self.size_len))
            .unwrap_or_default()
    }

    fn crlf(&self) -> &'static [u8] {
        &head::CHUNK_END[head::CHUNK_END.len() - usize::from(self.crlf_left)..]
    }

    /// Whether no chunk is waiting (the head may be).
    fn chunk_done(&self) -> bool {
        self.size_left().is_empty() && self.data.is_empty() && self.crlf_left == 0
    }

    fn is_empty(&self) -> bool {
        self.head_left().is_empty() && self.chunk_done()
    }

    /// Queues `data` as one chunk.
    fn set_chunk(&mut self, data: Bytes) {
        let line = head::chunk_header(data.len());
        let line = line.as_bytes();
        self.size[..line.len()].copy_from_slice(line);
        self.size_len = line.len() as u8;
        self.size_written = 0;
        self.data = data;
        self.crlf_left = head::CHUNK_END.len() as u8;
    }

    /// Queues bytes that are already framed (the rest of a chunk a direct write began).
    fn set_framed(&mut self, bytes: Bytes) {
        self.size_len = 0;
        self.size_written = 0;
        self.data = bytes;
        self.crlf_left = 0;
    }

    /// Queues the last chunk.
    fn set_last_chunk(&mut self) {
        self.size_len = 0;
        self.size_written = 0;
        self.data = Bytes::from_static(head::LAST_CHUNK);
        self.crlf_left = 0;
    }

    /// The parts still to write, empty ones included.
    fn slices(&self) -> [IoSlice<'_>; 4] {
        [
            IoSlice::new(self.head_left()),
            IoSlice::new(self.size_left()),
            IoSlice::new(&self.data),
            IoSlice::new(self.crlf()),
        ]
    }

    /// Drops the first `n` bytes.
    fn advance(&mut self, mut n: usize) {
        let take = n.min(self.head_left().len());
        self.head_written += take as u32;
        if self.head_left().is_empty() && !self.head.is_empty() {
            // Freed: an idle stream keeps no head buffer.
            self.head = Box::default();
            self.head_written = 0;
        }
        n -= take;
        let take = n.min(self.size_left().len());
        self.size_written += take as u8;
        n -= take;
        let take = n.min(self.data.len());
        self.data.advance(take);
        n -= take;
        self.crlf_left -= n.min(usize::from(self.crlf_left)) as u8;
    }
}

impl<'a, S: Socket> StreamWriter<'a, S> {
    /// A writer of `head` (an encoded response head) and then `body`, chunked, to `socket`. With
    /// `direct`, `socket` is the one attached to `cut_off`'s direct way
    /// ([`quicksilver_fanout::DirectWrites::attach`]).
    pub fn new(
        socket: &'a mut S,
        head: Vec<u8>,
        body: axum::body::Body,
        cut_off: Option<CutOff>,
        direct: bool,
    ) -> Self {
        Self {
            socket,
            cut_off,
            direct,
            direct_open: false,
            body,
            out: Unsent::new(head),
            ended: false,
            client_spoke: false,
            flushed: true,
            blocked_since_ms: 0,
        }
    }

    /// Takes the next body frame as the chunk to write (or the last chunk when the body ended).
    fn poll_next_chunk(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        loop {
            match std::task::ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(frame) => {
                    // Trailers are not sent (hyper sends them only to clients that asked for them).
                    let Ok(data) = frame.map_err(std::io::Error::other)?.into_data() else {
                        continue;
                    };
                    if !data.is_empty() {
                        self.out.set_chunk(data);
                        return Poll::Ready(Ok(()));
                    }
                }
                None => {
                    self.ended = true;
                    self.out.set_last_chunk();
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }

    /// Writes what is unsent, with as few system calls as the socket allows, then flushes it.
    fn poll_write_unsent(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.out.is_empty() {
            let slices = self.out.slices();
            let first = slices.iter().position(|s| !s.is_empty()).unwrap_or(0);
            match Pin::new(&mut *self.socket).poll_write_vectored(cx, &slices[first..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(n)) => {
                    self.blocked_since_ms = 0;
                    self.flushed = false;
                    self.out.advance(n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return self.poll_blocked(cx),
            }
        }
        if !self.flushed {
            match Pin::new(&mut *self.socket).poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    self.blocked_since_ms = 0;
                    self.flushed = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return self.poll_blocked(cx),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// A write (or flush) is blocked: the client is not reading. Ends the wait with an error when
    /// the stream must end, else stays `Pending`.
    fn poll_blocked(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if let Some(cut_off) = &self.cut_off {
            if self.blocked_since_ms == 0 {
                self.blocked_since_ms = quicksilver_fanout::now_ms();
            }
            if let Poll::Ready(reason) = cut_off.poll_cut_off(cx, self.blocked_since_ms) {
                let kind = match reason {
                    CutOffReason::TooSlow => std::io::ErrorKind::ConnectionAborted,
                    CutOffReason::Stalled | CutOffReason::Deadline => std::io::ErrorKind::TimedOut,
                };
                return Poll::Ready(Err(kind.into()));
            }
        }
        Poll::Pending
    }

    /// Whether the idle client closed its end (`Ready(true)`) or sent something (`Ready(false)`).
    /// Bytes sent are only peeked, never taken.
    fn poll_client_gone(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut probe = [0u8; 1];
        let mut buf = ReadBuf::new(&mut probe);
        match self.socket.poll_peek(cx, &mut buf) {
            Poll::Ready(Ok(n)) => Poll::Ready(n == 0),
            Poll::Ready(Err(_)) => Poll::Ready(true),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: Socket> Future for StreamWriter<'_, S> {
    type Output = std::io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if std::mem::take(&mut this.direct_open) {
            // Woken: the writer writes again, so the shard must not; what the shard could not
            // write whole goes first, from where the shard stopped.
            if let Some((partial, written)) = this
                .cut_off
                .as_ref()
                .and_then(|c| c.direct_writes().close())
            {
                this.out.set_framed(partial.chunk.slice(written..));
            }
        }
        loop {
            if this.out.chunk_done() {
                // The head goes out with the first frame when that is ready at once (the
                // preamble is), in one write; otherwise alone. Unflushed bytes are flushed
                // before the writer waits for a frame or ends.
                if this.ended {
                    if this.flushed {
                        // The last chunk (and everything before it) is written.
                        return Poll::Ready(Ok(()));
                    }
                } else if this.poll_next_chunk(cx)?.is_pending()
                    && this.out.is_empty()
                    && this.flushed
                {
                    if !this.client_spoke {
                        match this.poll_client_gone(cx) {
                            Poll::Ready(true) => {
                                return Poll::Ready(Err(
                                    std::io::ErrorKind::ConnectionAborted.into()
                                ))
                            }
                            Poll::Ready(false) => this.client_spoke = true,
                            Poll::Pending => {}
                        }
                    }
                    // Nothing to write, and the body's waker registered with the queue: the shard
                    // may write live updates itself until something wakes this task.
                    this.direct_open = this.direct
                        && this
                            .cut_off
                            .as_ref()
                            .is_some_and(|c| c.direct_writes().open());
                    return Poll::Pending;
                }
            }
            std::task::ready!(this.poll_write_unsent(cx))?;
        }
    }
}

#[cfg(test)]
mod tests;
