//! The SSE client against a scripted HTTP server on a free port: chunks split at awkward places, comments,
//! timeouts that lose nothing, the end of the stream, error statuses and the request headers sent.

use std::time::Duration;

use quicksilver_testkit::sse::{SseClient, SseError, SseItem};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// What the scripted server does after the response head: write a chunk, or wait for the test's go.
enum Step {
    Write(&'static str),
    Pause(Duration),
    WaitForGo,
}

/// Serves one connection: reads the request head (sent back on `requests`), answers with `head`, then
/// follows `steps` and closes the connection.
async fn serve_once(
    head: &'static str,
    steps: Vec<Step>,
) -> (String, mpsc::UnboundedReceiver<String>, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!(
        "http://{}/.well-known/mercure?topic=x",
        listener.local_addr().expect("addr")
    );
    let (requests, received) = mpsc::unbounded_channel();
    let (go, mut went) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).await.expect("read request");
            assert!(n > 0, "client closed before sending its request");
            request.extend_from_slice(&buf[..n]);
        }
        let _ = requests.send(String::from_utf8_lossy(&request).into_owned());
        socket.write_all(head.as_bytes()).await.expect("write head");
        for step in steps {
            match step {
                Step::Write(chunk) => {
                    socket
                        .write_all(chunk.as_bytes())
                        .await
                        .expect("write chunk");
                    socket.flush().await.expect("flush");
                }
                Step::Pause(d) => tokio::time::sleep(d).await,
                Step::WaitForGo => {
                    let _ = (&mut went).await;
                }
            }
        }
    });
    (url, received, go)
}

const SSE_HEAD: &str =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nX-Test: yes\r\nConnection: close\r\n\r\n";
const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn events_and_comments_arrive_incrementally_across_awkward_chunks() {
    let pause = || Step::Pause(Duration::from_millis(20));
    let (url, mut requests, go) = serve_once(
        SSE_HEAD,
        vec![
            Step::Write(":\n\n"),
            pause(),
            Step::Write("id: 1\r\nda"),
            pause(),
            Step::Write("ta: hel"),
            pause(),
            Step::Write("lo\r"),
            pause(),
            Step::Write("\n\r\n: heartbeat\n"),
            Step::WaitForGo,
            Step::Write("event: note\ndata: late\ndata: two\n\ndata: unterminated"),
        ],
    )
    .await;
    let mut stream = SseClient::connect(
        &url,
        &[("Last-Event-ID", "urn:0"), ("Authorization", "Bearer t")],
    )
    .await
    .expect("connect");
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.header("x-test"), Some("yes"));
    assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    let request = requests.recv().await.expect("request seen");
    assert!(
        request.starts_with("GET /.well-known/mercure?topic=x HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(
        request
            .to_ascii_lowercase()
            .contains("last-event-id: urn:0\r\n"),
        "{request}"
    );
    assert!(
        request
            .to_ascii_lowercase()
            .contains("authorization: bearer t\r\n"),
        "{request}"
    );

    assert_eq!(
        stream.next_item(WAIT).await.expect("comment"),
        SseItem::Comment(String::new())
    );
    let first = stream.next_event(WAIT).await.expect("event");
    assert_eq!(
        (first.id.as_deref(), first.data.as_str()),
        (Some("1"), "hello")
    );
    assert_eq!(first.event_type, "message");
    assert_eq!(
        stream.next_comment(WAIT).await.expect("heartbeat"),
        " heartbeat"
    );
    assert_eq!(stream.last_event_id(), "1");

    // Nothing more until the server is told to go on; the timed-out read loses nothing.
    assert!(matches!(
        stream.next_event(Duration::from_millis(200)).await,
        Err(SseError::Timeout(_))
    ));
    go.send(()).expect("server waiting");
    let late = stream.next_event(WAIT).await.expect("late event");
    assert_eq!(
        (late.event_type.as_str(), late.data.as_str()),
        ("note", "late\ntwo")
    );
    assert_eq!(late.last_event_id, "1", "the last event ID carries over");
    assert!(late.id.is_none());

    // The server closes mid-event: the partial event is discarded and the stream reports the end.
    assert!(stream.closed_within(WAIT).await);
    assert!(matches!(
        stream.next_item(WAIT).await,
        Err(SseError::Closed)
    ));
}

#[tokio::test]
async fn events_collects_several_and_assert_no_event_ignores_comments() {
    let (url, _requests, go) = serve_once(
        SSE_HEAD,
        vec![
            Step::Write("data: a\n\ndata: b\n\n:\n\n"),
            Step::WaitForGo,
            Step::Write("data: c\n\n"),
        ],
    )
    .await;
    let mut stream = SseClient::new().open(&url, &[]).await.expect("connect");
    let events = stream.events(2, WAIT).await.expect("two events");
    assert_eq!(
        events.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    stream.assert_no_event(Duration::from_millis(200)).await;
    go.send(()).expect("server waiting");
    assert_eq!(stream.next_event(WAIT).await.expect("c").data, "c");
}

#[tokio::test]
async fn an_error_status_is_returned_with_its_body() {
    let (url, _requests, _go) = serve_once(
        "HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\n",
        vec![Step::Write("Unauthorized")],
    )
    .await;
    let stream = SseClient::connect(&url, &[]).await.expect("a response");
    assert_eq!(stream.status(), 401);
    assert_eq!(stream.text(WAIT).await.expect("body"), "Unauthorized");
}

#[tokio::test]
async fn connecting_to_a_closed_port_fails_promptly() {
    let port = quicksilver_testkit::free_port();
    let result = SseClient::connect(&format!("http://127.0.0.1:{port}/"), &[]).await;
    assert!(matches!(result, Err(SseError::Http(_))), "{result:?}");
}

#[tokio::test]
async fn ids_and_data_read_the_next_events() {
    let (url, _requests, _go) = serve_once(
        SSE_HEAD,
        vec![Step::Write(
            "id: 1\ndata: a\n\ndata: b\n\nid: 3\ndata: c\n\n",
        )],
    )
    .await;
    let mut stream = SseClient::connect(&url, &[]).await.expect("connect");
    assert_eq!(stream.ids(1, WAIT).await.expect("one"), ["1"]);
    assert_eq!(stream.data(1, WAIT).await.expect("one"), ["b"]);
    assert_eq!(stream.ids(1, WAIT).await.expect("one"), ["3"]);
    assert!(matches!(stream.ids(1, WAIT).await, Err(SseError::Closed)));
}
