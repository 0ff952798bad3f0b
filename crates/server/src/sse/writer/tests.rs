//! The writer against a scripted socket: partial writes, blocked writes, cut-offs, clients that
//! leave or speak.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};

use parking_lot::Mutex;
use quicksilver_fanout::{Access, Fanout, FanoutConfig, SubscriberSpec};
use quicksilver_protocol::{Envelope, Position, Selector, SelectorStore, Update};

use super::*;

const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";

/// A socket whose behaviour the test sets: how much one write takes, whether writes block, and
/// what a peek finds.
#[derive(Default)]
struct ScriptedSocket {
    written: Vec<u8>,
    /// Most bytes one write takes (0: no limit).
    per_write: usize,
    /// Writes pend, as on a socket whose client stopped reading.
    blocked: bool,
    /// Write calls that took bytes.
    writes: usize,
    /// What a peek finds: `None` nothing yet, `Some(0)` end of input, `Some(n)` bytes waiting.
    incoming: Option<usize>,
}

impl AsyncWrite for ScriptedSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.blocked {
            return Poll::Pending;
        }
        let limit = match self.per_write {
            0 => usize::MAX,
            n => n,
        };
        let mut taken = 0;
        for buf in bufs {
            let n = buf.len().min(limit - taken);
            self.written.extend_from_slice(&buf[..n]);
            taken += n;
            if taken == limit {
                break;
            }
        }
        self.writes += 1;
        Poll::Ready(Ok(taken))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Socket for ScriptedSocket {
    fn poll_peek(
        &mut self,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<usize>> {
        match self.incoming {
            None => Poll::Pending,
            Some(0) => Poll::Ready(Ok(0)),
            Some(_) => {
                buf.put_slice(b"G");
                Poll::Ready(Ok(1))
            }
        }
    }
}

/// A response body fed by the test: frames, then (once `end` is set) its end.
#[derive(Clone, Default)]
struct Feed(Arc<Mutex<FeedState>>);

#[derive(Default)]
struct FeedState {
    frames: VecDeque<Bytes>,
    ended: bool,
    waker: Option<Waker>,
}

impl Feed {
    fn push(&self, frame: &'static str) {
        let mut state = self.0.lock();
        state.frames.push_back(Bytes::from_static(frame.as_bytes()));
        if let Some(w) = state.waker.take() {
            w.wake();
        }
    }

    fn end(&self) {
        let mut state = self.0.lock();
        state.ended = true;
        if let Some(w) = state.waker.take() {
            w.wake();
        }
    }

    fn body(&self) -> axum::body::Body {
        axum::body::Body::new(self.clone())
    }
}

impl http_body::Body for Feed {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let mut state = self.0.lock();
        if let Some(frame) = state.frames.pop_front() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(frame))));
        }
        if state.ended {
            return Poll::Ready(None);
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Counts its wakeups.
#[derive(Default)]
struct Wakeups(AtomicUsize);

impl Wake for Wakeups {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn poll<S: Socket>(writer: &mut StreamWriter<'_, S>, waker: &Waker) -> Poll<std::io::Result<()>> {
    Pin::new(writer).poll(&mut Context::from_waker(waker))
}

#[test]
fn partial_writes_send_every_byte_once_and_in_order() {
    let mut socket = ScriptedSocket {
        per_write: 3,
        ..ScriptedSocket::default()
    };
    let feed = Feed::default();
    feed.push("hello");
    feed.push("world!");
    feed.end();
    let mut writer = StreamWriter::new(&mut socket, HEAD.to_vec(), feed.body(), None, false);
    assert!(matches!(
        poll(&mut writer, Waker::noop()),
        Poll::Ready(Ok(()))
    ));
    let mut want = HEAD.to_vec();
    want.extend_from_slice(b"5\r\nhello\r\n6\r\nworld!\r\n0\r\n\r\n");
    assert_eq!(socket.written, want);
    assert!(socket.writes > want.len() / 3);
}

#[test]
fn the_head_goes_out_with_a_ready_first_frame_in_one_write() {
    let mut socket = ScriptedSocket::default();
    let feed = Feed::default();
    feed.push(":\n\n");
    let mut writer = StreamWriter::new(&mut socket, HEAD.to_vec(), feed.body(), None, false);
    assert!(poll(&mut writer, Waker::noop()).is_pending());
    drop(writer);
    assert_eq!(socket.writes, 1);
    assert!(socket.written.ends_with(b"3\r\n:\n\n\r\n"));
}

#[test]
fn a_head_is_not_held_back_when_no_frame_is_ready() {
    let mut socket = ScriptedSocket::default();
    let feed = Feed::default();
    let mut writer = StreamWriter::new(&mut socket, HEAD.to_vec(), feed.body(), None, false);
    assert!(poll(&mut writer, Waker::noop()).is_pending());
    feed.push("x");
    assert!(poll(&mut writer, Waker::noop()).is_pending());
    drop(writer);
    let mut want = HEAD.to_vec();
    want.extend_from_slice(b"1\r\nx\r\n");
    assert_eq!(socket.written, want);
}

#[test]
fn a_blocked_write_waits_and_resumes_where_it_stopped() {
    let mut socket = ScriptedSocket {
        blocked: true,
        ..ScriptedSocket::default()
    };
    let feed = Feed::default();
    feed.push("abc");
    let body = feed.body();
    {
        let mut writer = StreamWriter::new(&mut socket, HEAD.to_vec(), body, None, false);
        for _ in 0..3 {
            assert!(poll(&mut writer, Waker::noop()).is_pending());
        }
        writer.socket.blocked = false;
        writer.socket.per_write = 4;
        feed.end();
        assert!(matches!(
            poll(&mut writer, Waker::noop()),
            Poll::Ready(Ok(()))
        ));
    }
    let mut want = HEAD.to_vec();
    want.extend_from_slice(b"3\r\nabc\r\n0\r\n\r\n");
    assert_eq!(socket.written, want);
}

/// A subscriber of topic `t` on a one-shard fan-out whose queue holds one update (two dispatches
/// overflow it).
fn small_queue_subscriber() -> (Fanout, quicksilver_fanout::Subscriber) {
    let store = Arc::new(SelectorStore::default());
    let fanout = Fanout::start(
        &FanoutConfig {
            shards: 1,
            subscriber_queue: 1,
            ..FanoutConfig::default()
        },
        store,
    );
    let subscriber = fanout.subscribe(SubscriberSpec {
        selectors: vec![Selector::exact_topic("t")],
        access: Access::None,
    });
    (fanout, subscriber)
}

fn update(seq: u64) -> Arc<Envelope> {
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

#[tokio::test]
async fn a_blocked_write_ends_as_soon_as_its_stream_is_cut_off() {
    let (fanout, subscriber) = small_queue_subscriber();
    let mut socket = ScriptedSocket {
        blocked: true,
        ..ScriptedSocket::default()
    };
    let feed = Feed::default();
    feed.push("update");
    let woken = Arc::new(Wakeups::default());
    let waker = Waker::from(woken.clone());
    let mut writer = StreamWriter::new(
        &mut socket,
        HEAD.to_vec(),
        feed.body(),
        Some(subscriber.cut_off()),
        false,
    );
    assert!(poll(&mut writer, &waker).is_pending());
    // The queue holds one update; the second overflows it and the fan-out cuts the subscriber off.
    fanout.dispatch(update(1)).await;
    fanout.dispatch(update(2)).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while woken.0.load(Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer was never woken"
        );
        tokio::task::yield_now().await;
    }
    let Poll::Ready(Err(e)) = poll(&mut writer, &waker) else {
        panic!("a cut-off stream must end its blocked write");
    };
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionAborted);
}

#[tokio::test]
async fn a_cut_off_ends_only_its_own_stream() {
    let (fanout, subscriber) = small_queue_subscriber();
    // Another stream's subscriber, on its own fan-out.
    let (_other_fanout, other) = small_queue_subscriber();
    let mut socket = ScriptedSocket {
        blocked: true,
        ..ScriptedSocket::default()
    };
    let feed = Feed::default();
    feed.push("update");
    let mut writer = StreamWriter::new(
        &mut socket,
        HEAD.to_vec(),
        feed.body(),
        Some(other.cut_off()),
        false,
    );
    assert!(poll(&mut writer, Waker::noop()).is_pending());
    fanout.dispatch(update(1)).await;
    fanout.dispatch(update(2)).await;
    tokio::task::yield_now().await;
    assert!(subscriber.was_cut_off());
    assert!(poll(&mut writer, Waker::noop()).is_pending());
}

#[test]
fn a_client_that_closes_its_end_ends_the_stream() {
    let mut socket = ScriptedSocket {
        incoming: Some(0),
        ..ScriptedSocket::default()
    };
    let feed = Feed::default();
    let mut writer = StreamWriter::new(&mut socket, HEAD.to_vec(), feed.body(), None, false);
    let Poll::Ready(Err(e)) = poll(&mut writer, Waker::noop()) else {
        panic!("a closed client must end the stream");
    };
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionAborted);
}

#[test]
fn a_pipelined_request_is_left_for_whoever_serves_the_connection_next() {
    let mut socket = ScriptedSocket {
        incoming: Some(20),
        ..ScriptedSocket::default()
    };
    let feed = Feed::default();
    let mut writer = StreamWriter::new(&mut socket, HEAD.to_vec(), feed.body(), None, false);
    // The client spoke: not mistaken for a close, and no longer watched.
    assert!(poll(&mut writer, Waker::noop()).is_pending());
    assert!(writer.client_spoke);
    feed.end();
    assert!(matches!(
        poll(&mut writer, Waker::noop()),
        Poll::Ready(Ok(()))
    ));
    assert!(socket.written.ends_with(head::LAST_CHUNK));
}

/// A subscriber on a fan-out whose dispatch timeout is `dispatch_timeout` and whose alarms ring
/// every 100 ms.
fn subscriber_with_timeout(
    dispatch_timeout: Option<std::time::Duration>,
) -> (Fanout, quicksilver_fanout::Subscriber) {
    let fanout = Fanout::start(
        &FanoutConfig {
            shards: 1,
            subscriber_queue: 16,
            dispatch_timeout,
            alarm_tick: std::time::Duration::from_millis(100),
            ..FanoutConfig::default()
        },
        Arc::new(SelectorStore::default()),
    );
    let subscriber = fanout.subscribe(SubscriberSpec {
        selectors: vec![Selector::exact_topic("t")],
        access: Access::None,
    });
    (fanout, subscriber)
}

/// Advances the paused clock by `by` in small steps, letting the shard's tick run.
async fn advance(by: std::time::Duration) {
    let step = std::time::Duration::from_millis(50);
    let mut gone = std::time::Duration::ZERO;
    while gone < by {
        tokio::time::advance(step).await;
        tokio::task::yield_now().await;
        gone += step;
    }
}

#[tokio::test(start_paused = true)]
async fn a_blocked_write_is_ended_by_the_dispatch_timeout_without_any_update() {
    let (_fanout, subscriber) = subscriber_with_timeout(Some(std::time::Duration::from_secs(5)));
    let mut socket = ScriptedSocket {
        blocked: true,
        ..ScriptedSocket::default()
    };
    let feed = Feed::default();
    feed.push("a replay batch the client never reads");
    let woken = Arc::new(Wakeups::default());
    let waker = Waker::from(woken.clone());
    let mut writer = StreamWriter::new(
        &mut socket,
        HEAD.to_vec(),
        feed.body(),
        Some(subscriber.cut_off()),
        false,
    );
    assert!(poll(&mut writer, &waker).is_pending());
    advance(std::time::Duration::from_secs(4)).await;
    assert!(poll(&mut writer, &waker).is_pending(), "ended early");
    // No update arrives: the shard's alarm tick wakes the blocked writer once the limit passed.
    let before = woken.0.load(Ordering::SeqCst);
    advance(std::time::Duration::from_secs(2)).await;
    assert!(woken.0.load(Ordering::SeqCst) > before, "never woken");
    let Poll::Ready(Err(e)) = poll(&mut writer, &waker) else {
        panic!("a write blocked past the dispatch timeout must end");
    };
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    assert!(subscriber.was_cut_off());
}

#[tokio::test(start_paused = true)]
async fn a_blocked_write_is_ended_at_the_streams_deadline() {
    let (_fanout, subscriber) = subscriber_with_timeout(None);
    subscriber.set_deadline(quicksilver_fanout::now_ms() + 3_000);
    let mut socket = ScriptedSocket {
        blocked: true,
        ..ScriptedSocket::default()
    };
    let feed = Feed::default();
    feed.push("update");
    let woken = Arc::new(Wakeups::default());
    let waker = Waker::from(woken.clone());
    let mut writer = StreamWriter::new(
        &mut socket,
        HEAD.to_vec(),
        feed.body(),
        Some(subscriber.cut_off()),
        false,
    );
    assert!(poll(&mut writer, &waker).is_pending());
    advance(std::time::Duration::from_secs(2)).await;
    assert!(poll(&mut writer, &waker).is_pending(), "ended early");
    let before = woken.0.load(Ordering::SeqCst);
    advance(std::time::Duration::from_millis(1_500)).await;
    assert!(woken.0.load(Ordering::SeqCst) > before, "never woken");
    let Poll::Ready(Err(e)) = poll(&mut writer, &waker) else {
        panic!("a write blocked past the stream's deadline must end");
    };
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    // A deadline is the stream's normal end, not a slow subscriber.
    assert!(!subscriber.was_cut_off());
}

/// An update of topic `t` whose data is `len` bytes.
fn sized_update(seq: u64, len: usize) -> Arc<Envelope> {
    Arc::new(Envelope::new(
        Position::new(0, 0, seq),
        Update {
            id: format!("id-{seq}"),
            topics: vec!["t".into()],
            data: "x".repeat(len),
            private: false,
            event_type: None,
            retry: None,
        },
        0,
    ))
}

/// Reads a chunked SSE stream until `want` events arrived; returns their ids in order.
async fn read_event_ids(socket: &mut TcpStream, want: usize) -> Vec<String> {
    use tokio::io::AsyncReadExt;
    let mut raw = Vec::new();
    // Where the next chunk starts in `raw` (after the response head).
    let mut next_chunk = HEAD.len();
    let mut text = String::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Unchunk what arrived (a chunk cut short waits for more bytes).
        while let Some(line_end) = raw
            .get(next_chunk..)
            .and_then(|rest| rest.windows(2).position(|w| w == b"\r\n"))
        {
            let rest = &raw[next_chunk..];
            let size = std::str::from_utf8(&rest[..line_end])
                .ok()
                .and_then(|s| usize::from_str_radix(s, 16).ok())
                .unwrap_or_else(|| panic!("a chunk size line: {:?}", &rest[..line_end]));
            let start = line_end + 2;
            if rest.len() < start + size + 2 {
                break;
            }
            assert_eq!(&rest[start + size..start + size + 2], b"\r\n", "chunk end");
            text.push_str(
                std::str::from_utf8(&rest[start..start + size]).unwrap_or_else(|e| panic!("{e}")),
            );
            next_chunk += start + size + 2;
        }
        let ids: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("id: "))
            .map(str::to_owned)
            .collect();
        if ids.len() >= want {
            return ids;
        }
        let n = socket
            .read(&mut buf)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(n > 0, "the stream ended after {} events", ids.len());
        raw.extend_from_slice(&buf[..n]);
    }
}

/// The fan-out writes to the socket itself while the writer sleeps, and the writer takes over when
/// the socket fills: over a real connection with small buffers and a client that reads late, every
/// update still arrives once, in order and framed, and both ways were used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_and_queued_writes_take_turns_without_loss_or_reordering() {
    use tokio::net::TcpSocket;
    let listener = TcpSocket::new_v4().unwrap_or_else(|e| panic!("{e}"));
    listener
        .set_recv_buffer_size(4096)
        .unwrap_or_else(|e| panic!("{e}"));
    listener
        .bind("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")))
        .unwrap_or_else(|e| panic!("{e}"));
    let listener = listener.listen(8).unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let writer_side = TcpSocket::new_v4().unwrap_or_else(|e| panic!("{e}"));
    writer_side
        .set_send_buffer_size(4096)
        .unwrap_or_else(|e| panic!("{e}"));
    let writer_side = writer_side
        .connect(addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (mut client, _) = listener.accept().await.unwrap_or_else(|e| panic!("{e}"));

    let fanout = Fanout::start(
        &FanoutConfig {
            shards: 1,
            subscriber_queue: 100_000,
            ..FanoutConfig::default()
        },
        Arc::new(SelectorStore::default()),
    );
    let subscriber = fanout.subscribe(SubscriberSpec {
        selectors: vec![Selector::exact_topic("t")],
        access: Access::None,
    });
    let cut_off = subscriber.cut_off();
    let body = crate::sse::body::SubscriberStream::new(subscriber, None, None, None, |_| {});
    let lean = LeanSocket::new(writer_side, None);
    cut_off.direct_writes().attach(lean.clone());
    let writer = tokio::spawn(async move {
        let mut socket = SharedSocket(lean);
        let result = StreamWriter::new(
            &mut socket,
            HEAD.to_vec(),
            axum::body::Body::new(body),
            Some(cut_off),
            true,
        )
        .await;
        // The subscriber is gone with the writer, and the fan-out let the socket go.
        (result, Arc::strong_count(&socket.0) == 1)
    });
    // Let the writer send the head and go to sleep with the direct way open.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;

    const UPDATES: u64 = 1_000;
    let reader = tokio::spawn(async move {
        // Reads late: the first updates fill both buffers.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let ids = read_event_ids(&mut client, UPDATES as usize).await;
        // Kept open: a client that leaves ends the stream with an error.
        (ids, client)
    });
    for seq in 1..=UPDATES {
        // Sizes from a few bytes to more than the socket's buffer, so writes go out whole, in part
        // or not at all.
        fanout
            .dispatch(sized_update(seq, (seq as usize * 37) % 6000))
            .await;
        // The first half in a burst (the shard is behind, and the client not reading yet); the
        // second one at a time, which the shard writes itself while the socket takes them.
        if seq > UPDATES / 2 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
    let (ids, _client) = reader.await.unwrap_or_else(|e| panic!("{e}"));
    let want: Vec<String> = (1..=UPDATES).map(|s| format!("id-{s}")).collect();
    assert_eq!(ids, want);
    let direct = fanout.stats().written_directly.load(Ordering::Relaxed);
    assert!(direct > 0, "no update was written directly");
    assert!(
        direct < UPDATES,
        "every update was written directly: the writer never took over"
    );
    fanout.close_all();
    let (result, socket_back) = writer.await.unwrap_or_else(|e| panic!("{e}"));
    assert!(result.is_ok(), "{result:?}");
    assert!(socket_back, "the socket was not handed back");
}
