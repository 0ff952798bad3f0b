//! The subscriber's HTTP/1.1 client: one `GET` on a connected socket, its response head, and its
//! body decoded in place.
//!
//! A general client (hyper) costs a subscriber a connection task's worth of buffering and a channel
//! hop per body chunk; at 100,000 deliveries a second on one core that was a sixth of the load
//! generator's time, which then measured its own queueing. This one writes the request head,
//! parses the response head with `httparse`, and decodes the body (chunked, `Content-Length`, or
//! until the connection closes) straight out of its read buffer: the caller gets slices of the
//! buffer, nothing is copied. Reading ([`Http1Stream::fill`]) and decoding
//! ([`Http1Stream::decode`]) are separate steps so the read can sit in a `select!` (it is cancel
//! safe) while decoding hands slices to code that borrows the caller.

use bytes::{Buf, BytesMut};
use http::{Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest chunk-size line accepted (hex digits and extensions).
const MAX_SIZE_LINE: usize = 1024;
/// Free space ensured before each read.
const READ_SPACE: usize = 4 * 1024;

/// Why a connection could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Http1Error {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed before the response")]
    ClosedEarly,
    #[error("malformed response head: {0}")]
    Head(String),
    #[error("malformed chunked body")]
    Chunk,
}

/// How the body's end is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// Before a chunk-size line.
    ChunkSize,
    /// Inside a chunk: bytes left.
    ChunkData(u64),
    /// After a chunk's data: its CRLF.
    ChunkEnd,
    /// `Content-Length`: bytes left.
    Length(u64),
    /// Until the connection closes.
    UntilClose,
    /// The body is complete.
    Done,
}

/// An open response: status known, body being read.
pub(crate) struct Http1Stream {
    tcp: TcpStream,
    buf: BytesMut,
    body: Body,
    /// The peer closed its side.
    eof: bool,
    pub(crate) status: StatusCode,
}

/// What decoding found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// More may come.
    Open,
    /// The body ended (last chunk, full length, or the connection closed).
    Ended,
}

impl Http1Stream {
    /// Sends `request` (a body-less `GET`) on `tcp` and reads the response head.
    pub(crate) async fn open(
        mut tcp: TcpStream,
        request: &Request<()>,
    ) -> Result<Self, Http1Error> {
        let mut head = Vec::with_capacity(512);
        let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
        head.extend_from_slice(request.method().as_str().as_bytes());
        head.push(b' ');
        head.extend_from_slice(target.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in request.headers() {
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        tcp.write_all(&head).await?;

        let mut buf = BytesMut::with_capacity(READ_SPACE);
        loop {
            if buf.len() >= MAX_HEAD {
                return Err(Http1Error::Head("too large".into()));
            }
            buf.reserve(READ_SPACE);
            if tcp.read_buf(&mut buf).await? == 0 {
                return Err(Http1Error::ClosedEarly);
            }
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            let parsed = response
                .parse(&buf)
                .map_err(|e| Http1Error::Head(e.to_string()))?;
            let httparse::Status::Complete(head_len) = parsed else {
                continue;
            };
            let status = response
                .code
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or_else(|| Http1Error::Head("no status".into()))?;
            let body = body_framing(response.headers)?;
            buf.advance(head_len);
            return Ok(Self {
                tcp,
                buf,
                body,
                eof: false,
                status,
            });
        }
    }

    /// The socket, for a caller that reads on by itself (what is buffered is dropped).
    pub(crate) fn into_inner(self) -> TcpStream {
        self.tcp
    }

    /// Reads what the socket has into the buffer. Cancel safe.
    pub(crate) async fn fill(&mut self) -> Result<(), Http1Error> {
        if self.buf.capacity() - self.buf.len() < READ_SPACE {
            self.buf.reserve(READ_SPACE);
        }
        if self.tcp.read_buf(&mut self.buf).await? == 0 {
            self.eof = true;
        }
        Ok(())
    }

    /// Hands every complete piece of body data in the buffer to `on_data`, in order.
    pub(crate) fn decode(&mut self, mut on_data: impl FnMut(&[u8])) -> Result<Decoded, Http1Error> {
        loop {
            match self.body {
                Body::Done => return Ok(Decoded::Ended),
                Body::UntilClose => {
                    if !self.buf.is_empty() {
                        on_data(&self.buf);
                        self.buf.clear();
                    }
                    return Ok(if self.eof {
                        Decoded::Ended
                    } else {
                        Decoded::Open
                    });
                }
                Body::Length(0) => self.body = Body::Done,
                Body::Length(left) | Body::ChunkData(left) => {
                    if self.buf.is_empty() {
                        break;
                    }
                    let take = self
                        .buf
                        .len()
                        .min(usize::try_from(left).unwrap_or(usize::MAX));
                    on_data(&self.buf[..take]);
                    self.buf.advance(take);
                    let left = left - take as u64;
                    self.body = match self.body {
                        Body::Length(_) => Body::Length(left),
                        _ if left == 0 => Body::ChunkEnd,
                        _ => Body::ChunkData(left),
                    };
                }
                Body::ChunkEnd => {
                    if self.buf.len() < 2 {
                        break;
                    }
                    if &self.buf[..2] != b"\r\n" {
                        return Err(Http1Error::Chunk);
                    }
                    self.buf.advance(2);
                    self.body = Body::ChunkSize;
                }
                Body::ChunkSize => {
                    let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") else {
                        if self.buf.len() > MAX_SIZE_LINE {
                            return Err(Http1Error::Chunk);
                        }
                        break;
                    };
                    let size = chunk_size(&self.buf[..end]).ok_or(Http1Error::Chunk)?;
                    self.buf.advance(end + 2);
                    // The last chunk ends the body (trailers, if any, are not read).
                    self.body = if size == 0 {
                        Body::Done
                    } else {
                        Body::ChunkData(size)
                    };
                }
            }
        }
        if self.eof {
            // Closed in the middle of the body.
            return Ok(Decoded::Ended);
        }
        Ok(Decoded::Open)
    }
}

/// How the body of a response with these headers is delimited.
fn body_framing(headers: &[httparse::Header<'_>]) -> Result<Body, Http1Error> {
    let mut length = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let chunked = std::str::from_utf8(h.value)
                .is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
            if chunked {
                return Ok(Body::ChunkSize);
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| Http1Error::Head("bad content-length".into()))?;
            length = Some(n);
        }
    }
    Ok(length.map_or(Body::UntilClose, Body::Length))
}

/// The size in a chunk-size line (hex digits, then optional `;extensions`).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.split(|&b| b == b';').next()?;
    let digits = std::str::from_utf8(digits).ok()?.trim();
    if digits.is_empty() || digits.len() > 15 {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers one request with `response`, sent in pieces of `piece` bytes.
    async fn serve(response: &'static [u8], piece: usize) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = [0u8; 1024];
            let n = s.read(&mut req).await.unwrap();
            assert!(req[..n].starts_with(b"GET /sub?topic=x HTTP/1.1\r\n"));
            assert!(req[..n].ends_with(b"\r\n\r\n"));
            for part in response.chunks(piece) {
                s.write_all(part).await.unwrap();
                s.flush().await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        });
        addr
    }

    async fn body_of(response: &'static [u8], piece: usize) -> (StatusCode, Vec<u8>, bool) {
        let addr = serve(response, piece).await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let request = Request::get("/sub?topic=x")
            .header("host", "hub")
            .body(())
            .unwrap();
        let mut s = Http1Stream::open(tcp, &request).await.unwrap();
        let mut body = Vec::new();
        let mut ended = s.decode(|d| body.extend_from_slice(d)).unwrap() == Decoded::Ended;
        while !ended {
            s.fill().await.unwrap();
            ended = s.decode(|d| body.extend_from_slice(d)).unwrap() == Decoded::Ended;
        }
        (s.status, body, s.body == Body::Done)
    }

    #[tokio::test]
    async fn decodes_chunked_bodies_split_anywhere() {
        const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
            transfer-encoding: chunked\r\n\r\n3\r\n:\n\n\r\n11;ext=1\r\ndata: 0123456789\n\r\n0\r\n\r\n";
        for piece in [1, 2, 3, 7, RESPONSE.len()] {
            let (status, body, complete) = body_of(RESPONSE, piece).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body, b":\n\ndata: 0123456789\n", "pieces of {piece}");
            assert!(complete);
        }
    }

    #[tokio::test]
    async fn decodes_length_and_close_delimited_bodies() {
        let (status, body, complete) = body_of(
            b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 5\r\n\r\nnope!",
            4,
        )
        .await;
        assert_eq!(
            (status, body.as_slice(), complete),
            (StatusCode::UNAUTHORIZED, &b"nope!"[..], true)
        );
        let (status, body, complete) = body_of(b"HTTP/1.1 200 OK\r\n\r\ndata: a\n\n", 5).await;
        assert_eq!(
            (status, body.as_slice(), complete),
            (StatusCode::OK, &b"data: a\n\n"[..], false)
        );
    }

    #[test]
    fn refuses_bad_chunk_sizes() {
        assert_eq!(chunk_size(b"1f"), Some(31));
        assert_eq!(chunk_size(b"A;name=v"), Some(10));
        assert_eq!(chunk_size(b""), None);
        assert_eq!(chunk_size(b"zz"), None);
        assert_eq!(chunk_size(b"1234567890abcdef0"), None);
    }
}
