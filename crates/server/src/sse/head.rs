//! HTTP/1.1 heads for the lean subscription path: request classification, response head encoding
//! and chunk framing. Pure functions, no I/O.
//!
//! An idle SSE subscriber served by hyper keeps hyper's per-connection buffers (an 8 KiB read
//! buffer, used to notice the client going away, and an 8 KiB header buffer) for as long as the
//! stream lasts: most of what an idle subscriber costs. So [`super::accept`] reads request heads
//! itself with a small buffer and [`classify`] decides here whether one is a plain `GET` of the
//! hub path over HTTP/1.1 that the lean path can answer. Such a request is still answered by the
//! same axum router (CORS, metrics, authentication, headers are all unchanged); only the response
//! is written by [`super::writer`], with the head from [`encode_head`] and the body as chunks
//! framed by [`chunk_header`], holding no buffer between writes. A publish (`POST`) with one plain
//! `Content-Length` within the body limit is lean too, when the caller publishes on the lean path.
//! Everything else (other paths and methods, other request bodies, HTTP/1.0, upgrades, HTTP/2,
//! malformed heads) is handed to hyper together with the bytes already read, so hyper sees the
//! connection as if it had read it from the start.

use std::io::Write as _;

use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Version};

/// Most header lines a lean head may hold (hyper's own default limit); more goes to hyper.
pub const MAX_HEADERS: usize = 100;

/// Longest request head the lean path reads; a longer one is handed to hyper, which has its own
/// (larger) limit and answers it as it always did.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// What to do with the bytes read so far from a new connection.
#[derive(Debug)]
pub enum Head {
    /// The head is not complete yet: read more (unless [`MAX_HEAD_BYTES`] are already read).
    Partial,
    /// A request the lean path answers; `consumed` bytes of the input were its head (the rest, if
    /// any, is a pipelined next request).
    Lean {
        /// The request, with an empty body (boxed: it dwarfs the other variants).
        request: Box<Request<()>>,
        /// Length of the head in the input.
        consumed: usize,
        /// Length of the request's body (a publish's), which follows the head.
        body_len: u64,
    },
    /// Anything else: hand the connection and every byte read to hyper.
    Hyper,
}

/// Classifies the start of a connection's input for the hub path `hub_path`. With `max_publish`, a
/// publish (`POST`) whose `Content-Length` is at most that is lean too.
pub fn classify(input: &[u8], hub_path: &str, max_publish: Option<u64>) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let consumed = match parsed.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Head::Partial,
        // Malformed, or more header lines than the lean path takes: hyper answers it.
        Err(_) => return Head::Hyper,
    };
    let method = match parsed.method {
        Some("GET") => Method::GET,
        Some("POST") if max_publish.is_some() => Method::POST,
        _ => return Head::Hyper,
    };
    if parsed.version != Some(1) {
        return Head::Hyper;
    }
    let Some(target) = parsed.path else {
        return Head::Hyper;
    };
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if path != hub_path {
        return Head::Hyper;
    }
    // A publish's head is copied once, and its target and header values are slices of that copy
    // rather than an allocation each: a publisher sends head after head. (A subscription's are
    // copied one by one: its stream may outlive its request, and should keep nothing of its head.)
    let shared = (method == Method::POST).then(|| SharedHead::new(input, consumed));
    let uri = match shared
        .as_ref()
        .and_then(|head| head.slice(target.as_bytes()))
    {
        Some(bytes) => http::Uri::from_maybe_shared(bytes),
        None => http::Uri::try_from(target),
    };
    let Ok(uri) = uri else {
        return Head::Hyper;
    };
    let mut builder = Request::builder()
        .method(method.clone())
        .uri(uri)
        .version(Version::HTTP_11);
    let Some(map) = builder.headers_mut() else {
        return Head::Hyper;
    };
    for h in parsed.headers.iter() {
        let value = match shared.as_ref().and_then(|head| head.slice(h.value)) {
            Some(bytes) => HeaderValue::from_maybe_shared(bytes),
            None => HeaderValue::from_bytes(h.value),
        };
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(h.name.as_bytes()), value) else {
            return Head::Hyper;
        };
        map.append(name, value);
    }
    let body_len = match method {
        Method::GET if plain_request(map) => 0,
        Method::POST => match publish_body(map) {
            Some(len) if max_publish.is_some_and(|max| len <= max) => len,
            _ => return Head::Hyper,
        },
        _ => return Head::Hyper,
    };
    match builder.body(()) {
        Ok(request) => Head::Lean {
            request: Box::new(request),
            consumed,
            body_len,
        },
        Err(_) => Head::Hyper,
    }
}

/// A copy of a request head that the parts of the request are cut from.
struct SharedHead {
    bytes: bytes::Bytes,
    /// Where the head started in the input it was parsed from.
    origin: usize,
}

impl SharedHead {
    /// Copies the first `len` bytes of `input`.
    fn new(input: &[u8], len: usize) -> Self {
        Self {
            bytes: bytes::Bytes::copy_from_slice(input.get(..len).unwrap_or_default()),
            origin: input.as_ptr() as usize,
        }
    }

    /// The copy of `part`, a slice of the input's head; `None` if it is not one.
    fn slice(&self, part: &[u8]) -> Option<bytes::Bytes> {
        let start = (part.as_ptr() as usize).checked_sub(self.origin)?;
        let end = start.checked_add(part.len())?;
        (end <= self.bytes.len()).then(|| self.bytes.slice(start..end))
    }
}

/// Whether a request's headers ask for nothing but a response on a kept-alive connection: no body,
/// no `Expect`, no upgrade, no `Connection` option other than `keep-alive`.
fn plain_request(headers: &HeaderMap) -> bool {
    if headers.contains_key(TRANSFER_ENCODING)
        || headers.contains_key(http::header::EXPECT)
        || headers.contains_key(http::header::UPGRADE)
    {
        return false;
    }
    let no_body = headers
        .get_all(CONTENT_LENGTH)
        .iter()
        .all(|v| v.as_bytes() == b"0");
    no_body && keep_alive_only(headers)
}

/// The body length of a publish the lean path reads: one `Content-Length` of digits only, and
/// otherwise what [`plain_request`] asks (no `Expect`, no chunks, no upgrade, kept alive). `None`
/// for anything else, which hyper reads (and answers) as it always did.
fn publish_body(headers: &HeaderMap) -> Option<u64> {
    if headers.contains_key(TRANSFER_ENCODING)
        || headers.contains_key(http::header::EXPECT)
        || headers.contains_key(http::header::UPGRADE)
        || !keep_alive_only(headers)
    {
        return None;
    }
    let mut lengths = headers.get_all(CONTENT_LENGTH).iter();
    let (Some(length), None) = (lengths.next(), lengths.next()) else {
        return None;
    };
    let digits = length.as_bytes();
    // At most 19 digits: always a u64.
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Whether every `Connection` option is `keep-alive` (or there is none).
fn keep_alive_only(headers: &HeaderMap) -> bool {
    headers.get_all(CONNECTION).iter().all(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .all(|token| token.trim().eq_ignore_ascii_case("keep-alive"))
        })
    })
}

/// How a response body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body at all (1xx, 204, 304).
    None,
    /// Exactly this many bytes, announced with `content-length`.
    Length(u64),
    /// Chunked transfer coding (a stream of unknown length).
    Chunked,
}

/// How a response with `status`, `headers` and a body of exactly `exact_len` bytes (if known) is
/// framed, as hyper frames it.
pub fn framing(status: StatusCode, headers: &HeaderMap, exact_len: Option<u64>) -> Framing {
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Framing::None;
    }
    if let Some(len) = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
    {
        return Framing::Length(len);
    }
    match exact_len {
        Some(len) => Framing::Length(len),
        None => Framing::Chunked,
    }
}

/// Whether the connection must close after this response (the handler said so).
pub fn closes_connection(headers: &HeaderMap) -> bool {
    headers.get_all(CONNECTION).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    })
}

/// Appends a response head to `dst` as hyper writes it: status line, the handler's headers (names
/// in lower case), then the framing header and `date` when the handler did not set them, and the
/// blank line. `date` is an IMF-fixdate.
pub fn encode_head(
    dst: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    framing: Framing,
    date: &str,
) {
    // Writing to a Vec cannot fail.
    let _ = write!(
        dst,
        "HTTP/1.1 {} {}\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("<none>")
    );
    for (name, value) in headers {
        // The framing is ours to state: a handler's own framing headers are replaced below.
        if name == TRANSFER_ENCODING || (name == CONTENT_LENGTH && framing == Framing::Chunked) {
            continue;
        }
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length(len) if !headers.contains_key(CONTENT_LENGTH) => {
            let _ = write!(dst, "content-length: {len}\r\n");
        }
        Framing::Chunked => dst.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Length(_) | Framing::None => {}
    }
    if !headers.contains_key(DATE) {
        dst.extend_from_slice(b"date: ");
        dst.extend_from_slice(date.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    dst.extend_from_slice(b"\r\n");
}

/// Length of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
const DATE_LEN: usize = 29;

thread_local! {
    /// The `date` of this second, formatted once per second and thread (as hyper caches its own):
    /// the unix second it is for, and its text.
    static CACHED_DATE: std::cell::Cell<(u64, [u8; DATE_LEN])> = const { std::cell::Cell::new((u64::MAX, [0; DATE_LEN])) };
}

/// Calls `f` with the current time as an IMF-fixdate, for a response's `date`.
pub fn with_date<R>(f: impl FnOnce(&str) -> R) -> R {
    let now = std::time::SystemTime::now();
    let second = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let (cached, mut text) = CACHED_DATE.get();
    if cached != second {
        let mut cursor = std::io::Cursor::new(&mut text[..]);
        let written = write!(cursor, "{}", httpdate::HttpDate::from(now));
        if written.is_err() || cursor.position() as usize != DATE_LEN {
            // Never for a time after 1970 and before 10000; formatted afresh all the same.
            return f(&httpdate::fmt_http_date(now));
        }
        CACHED_DATE.set((second, text));
    }
    match std::str::from_utf8(&text) {
        Ok(date) => f(date),
        Err(_) => f(&httpdate::fmt_http_date(now)),
    }
}

/// The line that starts a chunk of `len` bytes (`len` in hex, CRLF); at most 18 bytes.
pub fn chunk_header(len: usize) -> ChunkHeader {
    let mut buf = [0u8; 18];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    // 16 hex digits and CRLF always fit.
    let _ = write!(cursor, "{len:X}\r\n");
    let n = cursor.position() as usize;
    ChunkHeader { buf, len: n }
}

/// A chunk-size line, kept on the stack.
#[derive(Clone, Copy, Debug)]
pub struct ChunkHeader {
    buf: [u8; 18],
    len: usize,
}

impl ChunkHeader {
    /// Its bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Ends a chunk.
pub const CHUNK_END: &[u8] = b"\r\n";

/// Ends a chunked body (last chunk, no trailers).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    const HUB: &str = "/.well-known/mercure";

    fn lean(input: &str) -> Option<(Request<()>, usize)> {
        match classify(input.as_bytes(), HUB, None) {
            Head::Lean {
                request, consumed, ..
            } => Some((*request, consumed)),
            _ => None,
        }
    }

    #[test]
    fn a_plain_subscription_is_lean() {
        let input = "GET /.well-known/mercure?topic=a&topic=b HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\nLast-Event-ID: 7\r\n\r\nGET /";
        let (request, consumed) = lean(input).expect("lean");
        assert_eq!(consumed, input.len() - 5);
        assert_eq!(request.uri().path(), HUB);
        assert_eq!(request.uri().query(), Some("topic=a&topic=b"));
        assert_eq!(request.headers()["authorization"], "Bearer t");
        assert_eq!(request.headers()["last-event-id"], "7");
        assert_eq!(request.version(), Version::HTTP_11);
    }

    #[test]
    fn keep_alive_and_empty_content_length_stay_lean() {
        assert!(lean(
            "GET /.well-known/mercure HTTP/1.1\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n"
        )
        .is_some());
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        for input in [
            "POST /.well-known/mercure HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            "GET /.well-known/mercure HTTP/1.0\r\n\r\n",
            "GET /metrics HTTP/1.1\r\n\r\n",
            "GET /.well-known/mercurex HTTP/1.1\r\n\r\n",
            "HEAD /.well-known/mercure HTTP/1.1\r\n\r\n",
            "OPTIONS /.well-known/mercure HTTP/1.1\r\n\r\n",
            "GET /.well-known/mercure HTTP/1.1\r\nConnection: close\r\n\r\n",
            "GET /.well-known/mercure HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
            "GET /.well-known/mercure HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /.well-known/mercure HTTP/1.1\r\nContent-Length: 2\r\n\r\nab",
            "GET /.well-known/mercure HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "\x16\x03\x01 tls",
        ] {
            assert!(
                matches!(classify(input.as_bytes(), HUB, None), Head::Hyper),
                "{input:?}"
            );
        }
    }

    #[test]
    fn a_plain_publish_is_lean_when_publishing_is() {
        let input = "POST /.well-known/mercure?authorization=t HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\n\r\ntopic=aPOST";
        match classify(input.as_bytes(), HUB, Some(7)) {
            Head::Lean {
                request,
                consumed,
                body_len,
            } => {
                assert_eq!(request.method(), Method::POST);
                assert_eq!(request.uri().query(), Some("authorization=t"));
                assert_eq!(request.uri().path(), HUB);
                assert_eq!(request.headers()["host"], "x");
                assert_eq!(
                    request.headers()["content-type"],
                    "application/x-www-form-urlencoded"
                );
                assert_eq!(request.headers()["content-length"], "7");
                assert_eq!(request.headers().len(), 3);
                assert_eq!(consumed, input.len() - 11);
                assert_eq!(body_len, 7);
            }
            other => panic!("{other:?}"),
        }
        // Not without a lean publish path, nor over its limit.
        assert!(matches!(classify(input.as_bytes(), HUB, None), Head::Hyper));
        assert!(matches!(
            classify(input.as_bytes(), HUB, Some(6)),
            Head::Hyper
        ));
    }

    #[test]
    fn unusual_publishes_go_to_hyper() {
        for input in [
            "POST /.well-known/mercure HTTP/1.1\r\n\r\n",
            "POST /.well-known/mercure HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /.well-known/mercure HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
            "POST /.well-known/mercure HTTP/1.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\n",
            "POST /.well-known/mercure HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            "POST /.well-known/mercure HTTP/1.1\r\nContent-Length: +3\r\n\r\n",
            "POST /.well-known/mercure HTTP/1.1\r\nContent-Length: 3\r\nUpgrade: h2c\r\n\r\n",
            "POST /.well-known/mercure HTTP/1.0\r\nContent-Length: 3\r\n\r\n",
            "POST /.well-known/mercure/subscriptions HTTP/1.1\r\nContent-Length: 3\r\n\r\n",
            "PUT /.well-known/mercure HTTP/1.1\r\nContent-Length: 3\r\n\r\n",
        ] {
            assert!(
                matches!(classify(input.as_bytes(), HUB, Some(1024)), Head::Hyper),
                "{input:?}"
            );
        }
    }

    #[test]
    fn an_incomplete_head_asks_for_more() {
        assert!(matches!(
            classify(b"GET /.well-known/mercure HTTP/1.1\r\nHost:", HUB, None),
            Head::Partial
        ));
        assert!(matches!(classify(b"", HUB, None), Head::Partial));
    }

    #[test]
    fn heads_are_written_as_hyper_writes_them() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        let mut out = Vec::new();
        encode_head(
            &mut out,
            StatusCode::OK,
            &headers,
            Framing::Chunked,
            "Sun, 06 Nov 1994 08:49:37 GMT",
        );
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nx-accel-buffering: no\r\ntransfer-encoding: chunked\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n"
        );
        let mut out = Vec::new();
        encode_head(
            &mut out,
            StatusCode::UNAUTHORIZED,
            &HeaderMap::new(),
            Framing::Length(12),
            "D",
        );
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "HTTP/1.1 401 Unauthorized\r\ncontent-length: 12\r\ndate: D\r\n\r\n"
        );
    }

    #[test]
    fn framing_follows_status_and_length() {
        let none = HeaderMap::new();
        assert_eq!(framing(StatusCode::OK, &none, None), Framing::Chunked);
        assert_eq!(framing(StatusCode::OK, &none, Some(3)), Framing::Length(3));
        assert_eq!(
            framing(StatusCode::NO_CONTENT, &none, Some(0)),
            Framing::None
        );
        let mut cl = HeaderMap::new();
        cl.insert(CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert_eq!(framing(StatusCode::OK, &cl, None), Framing::Length(5));
    }

    #[test]
    fn the_date_is_an_imf_fixdate_of_now() {
        let before = httpdate::fmt_http_date(std::time::SystemTime::now());
        let date = with_date(str::to_owned);
        let again = with_date(str::to_owned);
        let after = httpdate::fmt_http_date(std::time::SystemTime::now());
        assert_eq!(date.len(), DATE_LEN);
        assert!(
            date == before || date == after,
            "{date} not {before} or {after}"
        );
        assert!(again == date || again == after);
        assert!(httpdate::parse_http_date(&date).is_ok());
    }

    #[test]
    fn chunk_headers_are_hex() {
        assert_eq!(chunk_header(2).as_bytes(), b"2\r\n");
        assert_eq!(chunk_header(0x1f40).as_bytes(), b"1F40\r\n");
        assert_eq!(chunk_header(usize::MAX).as_bytes(), b"FFFFFFFFFFFFFFFF\r\n");
    }

    #[test]
    fn close_is_noticed() {
        let mut h = HeaderMap::new();
        assert!(!closes_connection(&h));
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, Close"));
        assert!(closes_connection(&h));
    }
}
