//! A TLS connection as the lean path sees it: [`TlsSocket`], a rustls stream that the stream
//! writer ([`super::writer::StreamWriter`]) can watch for the client going away.
//!
//! On plain TCP the writer peeks at the socket: the kernel keeps the bytes for whoever reads next.
//! Under TLS the bytes on the socket are records, and a client closing its end sends one
//! (`close_notify`) before its FIN, so peeking at TCP would tell "the client spoke" where it
//! said goodbye. [`TlsSocket`] peeks at the decrypted stream instead: it reads one byte of
//! application data and keeps it (one byte, not a buffer) for the next read; end of stream and
//! errors are reported as they come. The rest of what the client sent stays decrypted in rustls
//! until read.
//!
//! Writes go through rustls, which encrypts them into its own buffer (at most
//! [`MAX_UNSENT_TLS`]) and then writes to the socket as far as it can: [`StreamWriter`] flushes
//! after each chunk so the bytes leave that buffer even when no further write comes, and a write
//! that rustls cannot take is `Pending` like a full socket's, which is what the write-stall
//! detection watches. The bound is lower than rustls' own (64 KiB): a subscriber that stops
//! reading holds what the kernel's send buffer holds for a plain one, plus this, in the hub's
//! memory.
//!
//! [`StreamWriter`]: super::writer::StreamWriter

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::writer::Socket;

/// The most encrypted bytes a session holds that the socket has not taken: one full TLS record
/// (16 KiB of data) and its framing, so a record is never split for want of room.
pub const MAX_UNSENT_TLS: usize = 16 * 1024 + 256;

/// A server-side TLS stream with a one-byte look-ahead (see the module documentation).
pub struct TlsSocket {
    /// Boxed: the session is over a kilobyte, and a connection task's future would otherwise
    /// keep room for it in more than one of its states.
    inner: Box<TlsStream<TcpStream>>,
    /// A byte of application data read by [`Socket::poll_peek`], not yet handed to a reader.
    peeked: Option<u8>,
}

impl TlsSocket {
    /// Wraps a stream whose handshake is done.
    pub fn new(mut inner: TlsStream<TcpStream>) -> Self {
        inner.get_mut().1.set_buffer_limit(Some(MAX_UNSENT_TLS));
        Self {
            inner: Box::new(inner),
            peeked: None,
        }
    }

    /// The protocol the client and the hub agreed on by ALPN, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.inner.get_ref().1.alpn_protocol()
    }
}

impl Socket for TlsSocket {
    fn poll_peek(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<usize>> {
        let byte = match self.peeked {
            Some(byte) => byte,
            None => {
                let mut one = [0u8; 1];
                let mut read = ReadBuf::new(&mut one);
                ready!(Pin::new(&mut self.inner).poll_read(cx, &mut read))?;
                if read.filled().is_empty() {
                    // The client closed the session (`close_notify`, then its end of the socket).
                    return Poll::Ready(Ok(0));
                }
                self.peeked = Some(one[0]);
                one[0]
            }
        };
        if buf.remaining() > 0 {
            buf.put_slice(&[byte]);
        }
        Poll::Ready(Ok(1))
    }
}

impl AsyncRead for TlsSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if let Some(byte) = self.peeked.take() {
            buf.put_slice(&[byte]);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// Sends `close_notify`, then closes the socket's write side.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
