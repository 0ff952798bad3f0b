//! The browser driver end to end, without Quicksilver: headless Chromium on a page of one origin subscribes
//! with `EventSource` + cookie to a fake hub on another origin that insists on the cookie and answers with
//! CORS headers, exactly what the real hub must do.

use std::time::Duration;

use quicksilver_testkit::browser::{self, BrowserEventSource, EventSourceConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

const WAIT: Duration = Duration::from_secs(30);

/// Skips (with a message) where node, Chromium or the npm packages are absent, except in CI.
fn browser_present() -> bool {
    match browser::available() {
        Ok(()) => true,
        Err(missing) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "browser tests cannot run in CI: {missing}; scripts/install-test-deps.sh should set them up"
            );
            eprintln!("SKIPPED: {missing}; run scripts/install-test-deps.sh");
            false
        }
    }
}

#[tokio::test]
async fn the_scripts_selftest_passes() {
    if !browser_present() {
        return;
    }
    let message = browser::selftest(WAIT).await.expect("selftest");
    assert_eq!(message.data, "selftest\nline 2");
    assert_eq!(message.last_event_id, "selftest-1");
}

/// A one-connection-at-a-time SSE endpoint that requires `Origin: page_origin` and the cookie
/// `mercureAuthorization=token`, and sends `data: <message>` when told to.
async fn fake_hub(
    page_origin: String,
    token: &'static str,
) -> (
    String,
    oneshot::Sender<&'static str>,
    mpsc::UnboundedReceiver<String>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (publish, published) = oneshot::channel::<&'static str>();
    let (requests, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut published = Some(published);
        loop {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let request = String::from_utf8_lossy(&request).to_ascii_lowercase();
            let _ = requests.send(request.clone());
            let cors = format!(
                "Access-Control-Allow-Origin: {page_origin}\r\nAccess-Control-Allow-Credentials: true\r\n"
            );
            let has_cookie = request.lines().any(|l| {
                l.strip_prefix("cookie:").is_some_and(|v| {
                    v.split(';')
                        .any(|c| c.trim() == format!("mercureauthorization={token}"))
                })
            });
            let right_origin = request.contains(&format!("origin: {page_origin}\r\n"));
            if !(has_cookie && right_origin) {
                let _ = socket
                    .write_all(format!("HTTP/1.1 401 Unauthorized\r\n{cors}Content-Length: 0\r\nConnection: close\r\n\r\n").as_bytes())
                    .await;
                continue;
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\n{cors}Content-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n:\n\n"
            );
            socket.write_all(head.as_bytes()).await.expect("write head");
            if let Some(published) = published.take() {
                if let Ok(data) = published.await {
                    let event = format!("id: urn:1\ndata: {data}\n\n");
                    socket
                        .write_all(event.as_bytes())
                        .await
                        .expect("write event");
                }
            }
            // Hold the connection until the browser goes away.
            let _ = socket.read(&mut buf).await;
        }
    });
    (url, publish, seen)
}

#[tokio::test]
async fn a_cross_origin_event_source_sends_the_cookie_and_receives_a_message() {
    if !browser_present() {
        return;
    }
    let mut browser = BrowserEventSource::launch().await.expect("launch");
    let page_origin = browser.page_origin().to_owned();
    assert!(
        page_origin.starts_with("http://127.0.0.1:"),
        "{page_origin}"
    );
    // The hub is started only now that the page origin is known, as a real test does with --cors-origins.
    let (hub_url, publish, mut requests) = fake_hub(page_origin.clone(), "secret-token").await;
    browser
        .open(&EventSourceConfig::new(
            &hub_url,
            "secret-token",
            "https://example.com/a b",
        ))
        .expect("open");
    browser.wait_ready(WAIT).await.expect("ready");
    let request = requests.recv().await.expect("the hub saw the request");
    assert!(
        request.starts_with("get /.well-known/mercure?topic=https%3a%2f%2fexample.com%2fa%20b "),
        "{request}"
    );
    publish
        .send("hello from the hub")
        .expect("fake hub waiting");
    let message = browser.wait_message(WAIT).await.expect("message");
    assert_eq!(message.data, "hello from the hub");
    assert_eq!(message.last_event_id, "urn:1");
    assert!(
        browser.wait_exit(WAIT).is_some_and(|s| s.success()),
        "{}",
        browser.stderr()
    );
}

#[tokio::test]
async fn a_refused_event_source_is_reported_as_an_error() {
    if !browser_present() {
        return;
    }
    let mut browser = BrowserEventSource::launch().await.expect("launch");
    // The fake hub allows another origin than the page's and wants another token: the browser refuses.
    let (hub_url, _publish, _requests) = fake_hub("http://127.0.0.1:1".into(), "other-token").await;
    browser
        .open(&EventSourceConfig::new(&hub_url, "wrong", "t"))
        .expect("open");
    let error = browser.wait_ready(WAIT).await.expect_err("must not open");
    assert!(
        error.to_string().contains("closed before opening"),
        "{error}"
    );
}
