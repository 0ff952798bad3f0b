//! The lean publish path (see `sse::accept` and `publish`): a plain HTTP/1.1 publish with a
//! `Content-Length` is answered outside hyper and the router, and must be answered exactly as
//! through them. The same request is sent with a chunked body, which always goes to hyper, and
//! the two answers are compared byte for byte (but for `date`, and `retry-after` of a 429, which
//! are clocks), together with the response count each one adds. Then what only a connection
//! shows: keep-alive across publishes and a subscription, pipelining, and bodies that arrive late
//! or never.

use std::net::SocketAddr;
use std::time::Duration;

use quicksilver_testkit::hub::metric;
use quicksilver_testkit::token::{mercure_claims, sign_hs256};
use quicksilver_testkit::{http_client, mercure_token, spawn_hub, wait_until, TEST_JWT_KEY, WAIT};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FORM: &str = "application/x-www-form-urlencoded";
const LEAN: &str = "quicksilver_lean_requests_total";
const ID: &str = "urn:uuid:0b6d5a41-6a0c-4d5e-a5ab-3d1f3f7f5c11";

/// A publish with its body announced by `Content-Length` (lean) or chunked (hyper).
fn request(headers: &[(&str, &str)], body: &str, chunked: bool) -> String {
    let mut text = String::from("POST /.well-known/mercure HTTP/1.1\r\nHost: hub\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    if chunked {
        let chunk = if body.is_empty() {
            String::new()
        } else {
            format!("{:x}\r\n{body}\r\n", body.len())
        };
        text.push_str(&format!(
            "Transfer-Encoding: chunked\r\n\r\n{chunk}0\r\n\r\n"
        ));
    } else {
        text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    }
    text
}

/// Reads one response of known length from `socket` (`pending` holds bytes read earlier and keeps
/// what follows it); `None` when the connection closes first.
async fn read_response(
    socket: &mut (impl AsyncRead + Unpin),
    pending: &mut Vec<u8>,
) -> Option<String> {
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end + 4]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            while pending.len() < end + 4 + len {
                let mut buf = [0u8; 4096];
                let n = socket.read(&mut buf).await.ok()?;
                if n == 0 {
                    return None;
                }
                pending.extend_from_slice(&buf[..n]);
            }
            let response: Vec<u8> = pending.drain(..end + 4 + len).collect();
            return Some(String::from_utf8_lossy(&response).to_string());
        }
        let mut buf = [0u8; 4096];
        let n = socket.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        pending.extend_from_slice(&buf[..n]);
    }
}

/// Sends `text` on a new connection and returns the answer.
async fn exchange(addr: SocketAddr, text: &str) -> String {
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    socket.write_all(text.as_bytes()).await.expect("write");
    let mut pending = Vec::new();
    tokio::time::timeout(WAIT, read_response(&mut socket, &mut pending))
        .await
        .expect("an answer in time")
        .expect("an answer")
}

/// The answer without its clocks (`date`, a 429's `retry-after` value).
fn without_clocks(answer: &str) -> String {
    answer
        .split("\r\n")
        .filter(|l| !l.starts_with("date: "))
        .map(|l| {
            if l.starts_with("retry-after: ") {
                "retry-after: N"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// A publish to send both ways: what it is, the status it gets, its headers and its body.
type Case<'a> = (&'a str, u16, Vec<(&'a str, &'a str)>, &'a str);

fn token(sub: &str, publish: &[&str]) -> String {
    let mut claims = mercure_claims(publish, &[], None);
    claims["sub"] = sub.into();
    sign_hs256(TEST_JWT_KEY, &claims)
}

async fn counter(hub: &str, name: &str) -> f64 {
    metric(&http_client(), hub, name).await.unwrap_or(0.0)
}

#[tokio::test]
async fn lean_and_hyper_answer_every_publish_alike() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("hub.toml");
    std::fs::write(
        &config,
        "[[rate_limit]]\nname = \"slow\"\nsubject = \"slow\"\nrate = \"1/h\"\nburst = 1\n",
    )
    .expect("config");
    let config = config.to_string_lossy().to_string();
    let hub = spawn_hub(&[
        "--cors-origins",
        "https://app.example",
        "--publish-origins",
        "https://app.example",
        "--max-body-size",
        "300",
        "--max-topics-per-update",
        "2",
        "--config",
        &config,
    ])
    .await;
    let url = hub.url().to_string();
    let bearer = |t: String| format!("Bearer {t}");
    let publisher = bearer(mercure_token(TEST_JWT_KEY, &["*"], &[], None));
    let books = bearer(mercure_token(TEST_JWT_KEY, &["books"], &[], None));
    let slow = bearer(token("slow", &["*"]));
    // The slow publisher's one publish an hour, spent.
    let spent = exchange(
        hub.addr(),
        &request(
            &[("Authorization", &slow), ("Content-Type", FORM)],
            "topic=a",
            false,
        ),
    )
    .await;
    assert!(spent.starts_with("HTTP/1.1 200 "), "{spent}");
    let form = format!("topic=a&id={ID}&data=x");
    let cookie = format!("mercureAuthorization={}", &publisher[7..]);
    let cases: &[Case] = &[
        (
            "stored",
            200,
            vec![("Authorization", &publisher), ("Content-Type", FORM)],
            &form,
        ),
        (
            "stored, from an allowed origin",
            200,
            vec![
                ("Authorization", &publisher),
                ("Content-Type", FORM),
                ("Origin", "https://app.example"),
            ],
            &form,
        ),
        (
            "stored, from another origin",
            200,
            vec![
                ("Authorization", &publisher),
                ("Content-Type", FORM),
                ("Origin", "https://evil.example"),
            ],
            &form,
        ),
        (
            "the token in the cookie, from an allowed origin",
            200,
            vec![
                ("Cookie", &cookie),
                ("Content-Type", FORM),
                ("Origin", "https://app.example"),
            ],
            &form,
        ),
        (
            "the token in the cookie, without an origin",
            401,
            vec![("Cookie", &cookie), ("Content-Type", FORM)],
            &form,
        ),
        ("no token", 401, vec![("Content-Type", FORM)], "topic=a"),
        (
            "no token, cross-origin",
            401,
            vec![("Content-Type", FORM), ("Origin", "https://app.example")],
            "topic=a",
        ),
        (
            "a bad token",
            401,
            vec![("Authorization", "Bearer nope"), ("Content-Type", FORM)],
            "topic=a",
        ),
        (
            "a topic not granted",
            403,
            vec![("Authorization", &books), ("Content-Type", FORM)],
            "topic=other",
        ),
        (
            "no topic",
            400,
            vec![("Authorization", &publisher), ("Content-Type", FORM)],
            "data=x",
        ),
        (
            "not a form",
            415,
            vec![
                ("Authorization", &publisher),
                ("Content-Type", "application/json"),
            ],
            "{}",
        ),
        (
            "too many topics",
            413,
            vec![("Authorization", &publisher), ("Content-Type", FORM)],
            "topic=a&topic=b&topic=c",
        ),
        (
            "over the rate",
            429,
            vec![("Authorization", &slow), ("Content-Type", FORM)],
            "topic=a",
        ),
    ];
    for (what, status, headers, body) in cases {
        let route = format!(
            "quicksilver_http_responses_total{{route=\"/.well-known/mercure\",method=\"POST\",status=\"{status}\"}}"
        );
        let (lean_before, count_before) = (counter(&url, LEAN).await, counter(&url, &route).await);
        let lean = exchange(hub.addr(), &request(headers, body, false)).await;
        assert!(
            lean.starts_with(&format!("HTTP/1.1 {status} ")),
            "{what}: {lean}"
        );
        let lean_after = counter(&url, LEAN).await;
        let count_lean = counter(&url, &route).await;
        let hyper = exchange(hub.addr(), &request(headers, body, true)).await;
        assert_eq!(
            counter(&url, LEAN).await,
            lean_after,
            "{what}: the chunked publish is hyper's"
        );
        assert_eq!(
            lean_after,
            lean_before + 1.0,
            "{what}: the publish was lean"
        );
        assert_eq!(
            count_lean,
            count_before + 1.0,
            "{what}: the lean answer is counted"
        );
        assert_eq!(
            counter(&url, &route).await,
            count_lean + 1.0,
            "{what}: hyper's is counted"
        );
        assert!(lean.contains("\r\ndate: "), "{what}: {lean}");
        assert_eq!(without_clocks(&lean), without_clocks(&hyper), "{what}");
    }
    // A body over the limit goes to hyper, answered as ever.
    let big = format!("topic=a&data={}", "x".repeat(400));
    let before = counter(&url, LEAN).await;
    let answer = exchange(
        hub.addr(),
        &request(
            &[("Authorization", &publisher), ("Content-Type", FORM)],
            &big,
            false,
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    assert_eq!(counter(&url, LEAN).await, before);
    hub.shutdown().await;
}

#[tokio::test]
async fn one_connection_carries_publishes_a_subscription_and_pipelined_requests() {
    let hub = spawn_hub(&[]).await;
    let publisher = format!("Bearer {}", mercure_token(TEST_JWT_KEY, &["*"], &[], None));
    let publish = |n: usize| {
        request(
            &[("Authorization", &publisher), ("Content-Type", FORM)],
            &format!("topic=a&id=m{n}&data=x"),
            false,
        )
    };
    let mut socket = TcpStream::connect(hub.addr()).await.expect("connect");
    let mut pending = Vec::new();
    // Kept alive, one after the other.
    for n in 0..3 {
        socket
            .write_all(publish(n).as_bytes())
            .await
            .expect("write");
        let answer = read_response(&mut socket, &mut pending)
            .await
            .expect("answer");
        assert!(answer.ends_with(&format!("\r\n\r\nm{n}")), "{answer}");
    }
    // Pipelined: three in one write, answered in order.
    let three: String = (3..6).map(publish).collect();
    socket.write_all(three.as_bytes()).await.expect("write");
    for n in 3..6 {
        let answer = read_response(&mut socket, &mut pending)
            .await
            .expect("answer");
        assert!(answer.ends_with(&format!("\r\n\r\nm{n}")), "{answer}");
    }
    // A refused publish (its body not read) pipelined before a good one: the refused one's body
    // is skipped, not taken for the next request.
    let refused = request(
        &[("Content-Type", FORM)],
        "topic=a&id=refused&data=x",
        false,
    );
    socket
        .write_all(format!("{refused}{}", publish(99)).as_bytes())
        .await
        .expect("write");
    let answer = read_response(&mut socket, &mut pending)
        .await
        .expect("answer");
    assert!(answer.starts_with("HTTP/1.1 401 "), "{answer}");
    let answer = read_response(&mut socket, &mut pending)
        .await
        .expect("answer");
    assert!(answer.ends_with("\r\n\r\nm99"), "{answer}");
    // A publish whose body arrives in pieces, then a subscription on the same connection that
    // replays everything published on it.
    let split = publish(6);
    let (head, tail) = split.split_at(split.len() - 4);
    socket.write_all(head.as_bytes()).await.expect("write");
    socket.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(50)).await;
    socket.write_all(tail.as_bytes()).await.expect("write");
    let answer = read_response(&mut socket, &mut pending)
        .await
        .expect("answer");
    assert!(answer.ends_with("\r\n\r\nm6"), "{answer}");
    let subscriber = mercure_token(TEST_JWT_KEY, &[], &["*"], None);
    socket
        .write_all(
            format!(
                "GET /.well-known/mercure?topic=a&lastEventID=earliest HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer {subscriber}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("write");
    let mut seen = String::new();
    tokio::time::timeout(WAIT, async {
        while !seen.contains("id: m6\n") {
            let mut buf = [0u8; 4096];
            let n = socket.read(&mut buf).await.expect("read");
            assert!(n > 0, "the stream ended: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await
    .expect("the replay in time");
    seen.insert_str(0, &String::from_utf8_lossy(&pending));
    for n in (0..7).chain([99]) {
        assert!(seen.contains(&format!("id: m{n}\n")), "m{n} in {seen}");
    }
    assert!(!seen.contains("id: refused\n"), "{seen}");
    assert!(counter(hub.url(), LEAN).await >= 8.0);
    hub.shutdown().await;
}

/// Whether the update `id` was stored (replayed from the start of history).
async fn stored(hub: SocketAddr, id: &str) -> bool {
    let subscriber = mercure_token(TEST_JWT_KEY, &[], &["*"], None);
    // A marker published last: once it is replayed, so is everything before it.
    let publisher = format!("Bearer {}", mercure_token(TEST_JWT_KEY, &["*"], &[], None));
    let marker = exchange(
        hub,
        &request(
            &[("Authorization", &publisher), ("Content-Type", FORM)],
            "topic=a&id=marker",
            false,
        ),
    )
    .await;
    assert!(marker.ends_with("marker"), "{marker}");
    let mut socket = TcpStream::connect(hub).await.expect("connect");
    socket
        .write_all(
            format!(
                "GET /.well-known/mercure?topic=a&lastEventID=earliest HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer {subscriber}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("write");
    let mut seen = String::new();
    tokio::time::timeout(WAIT, async {
        while !seen.contains("id: marker\n") {
            let mut buf = [0u8; 4096];
            let n = socket.read(&mut buf).await.expect("read");
            assert!(n > 0, "the stream ended: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await
    .expect("the replay in time");
    seen.contains(&format!("id: {id}\n"))
}

#[tokio::test]
async fn a_body_that_never_arrives_in_full_publishes_nothing() {
    let hub = spawn_hub(&[]).await;
    let publisher = format!("Bearer {}", mercure_token(TEST_JWT_KEY, &["*"], &[], None));
    let url = hub.url().to_string();
    let lean = counter(&url, LEAN).await;
    // Announces 100 bytes, sends 20, leaves.
    let mut socket = TcpStream::connect(hub.addr()).await.expect("connect");
    let head = format!(
        "POST /.well-known/mercure HTTP/1.1\r\nHost: hub\r\nAuthorization: {publisher}\r\nContent-Type: {FORM}\r\nContent-Length: 100\r\n\r\ntopic=a&id=cut&data="
    );
    socket.write_all(head.as_bytes()).await.expect("write");
    drop(socket);
    wait_until("the cut publish was read", WAIT, async || {
        counter(&url, LEAN).await > lean
    })
    .await;
    assert!(!stored(hub.addr(), "cut").await);
    // The hub goes on.
    let answer = exchange(
        hub.addr(),
        &request(
            &[("Authorization", &publisher), ("Content-Type", FORM)],
            "topic=a&id=after",
            false,
        ),
    )
    .await;
    assert!(answer.ends_with("after"), "{answer}");
    hub.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_body_trickled_past_its_deadline_is_refused_and_the_connection_closed() {
    let hub = spawn_hub(&["--header-read-timeout", "1h"]).await;
    let publisher = format!("Bearer {}", mercure_token(TEST_JWT_KEY, &["*"], &[], None));
    let mut socket = TcpStream::connect(hub.addr()).await.expect("connect");
    let head = format!(
        "POST /.well-known/mercure HTTP/1.1\r\nHost: hub\r\nAuthorization: {publisher}\r\nContent-Type: {FORM}\r\nContent-Length: 100\r\n\r\ntopic=a&id=slow&data="
    );
    socket.write_all(head.as_bytes()).await.expect("write");
    let (mut reader, mut writer) = socket.into_split();
    // A byte every few seconds, far from 100 before the body's deadline.
    let trickle = async {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            if writer.write_all(b"x").await.is_err() {
                return;
            }
        }
    };
    let mut pending = Vec::new();
    let answer = tokio::select! {
        answer = read_response(&mut reader, &mut pending) => answer,
        () = trickle => None,
        () = tokio::time::sleep(Duration::from_secs(120)) => None,
    };
    let answer = answer.expect("an answer before two minutes");
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    // Closed after it.
    assert_eq!(read_response(&mut reader, &mut pending).await, None);
    assert!(!stored(hub.addr(), "slow").await);
    hub.shutdown().await;
}
