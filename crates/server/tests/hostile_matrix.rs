//! The hostile-clients matrix: one test per attack on a resource a client can take, each against
//! the real `quicksilver` binary, asserting the bound (file descriptors, connections, series,
//! bytes held) and that a normal subscriber is still served. Scaled to the test command's time;
//! `scripts/hostile.sh` runs the same attacks at full scale (19,000 hostile connections).
//!
//! Slowloris, 10,000 non-readers, malformed requests and connection churn are in `hostile.rs`.
//!
//! | attack | bound asserted |
//! |---|---|
//! | 3,000 requests with made-up methods | the responses counter keeps a closed set of series |
//! | HTTP/2 connections left idle after one request | closed after `--idle-timeout` |
//! | connections beyond `--max-connections` | a fast `503` + `Retry-After`; the metrics listener answers |
//! | one address beyond `--max-connections-per-client` | `429` + `Retry-After`, direct or forwarded |
//! | distinct URI templates per connection | compiled once, held under `--max-selector-memory` (`503`), `413` per subscription |
//! | resuming subscribers that never read, no updates after | cut off by the dispatch timeout; replay batches under `--max-replay-buffer` |
//! | pipelining clients that never read | closed once their writes stayed blocked for the dispatch timeout |
//! | a `Host` for another hub, forged `X-Forwarded-*` | `421` outside `--public-url`; forwarded headers only from `--trusted-proxies` |
//! | a long subscription list | served in pages of `--subscriptions-page-size` |

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use quicksilver_testkit::hub::{publish, HubProcess};
use quicksilver_testkit::sse::SseClient;
use quicksilver_testkit::token::mercure_token;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const KEY: &str = "!ChangeThisMercureHubJWTSecretKey!";
const BIN: &str = env!("CARGO_BIN_EXE_quicksilver");
const WAIT: Duration = Duration::from_secs(20);

/// Serializes the tests that open hundreds of connections on this 2-core machine.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    let _ = setrlimit(Resource::Nofile, limit);
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("VmHWM")
        / 1024.0
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("proc fd")
        .count()
}

async fn metrics_text(c: &reqwest::Client, base: &str) -> String {
    c.get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body")
}

/// The value of an unlabelled metric served at `base`.
async fn metric(c: &reqwest::Client, base: &str, name: &str) -> f64 {
    let text = metrics_text(c, base).await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} in:\n{text}"))
}

/// Waits until `name` satisfies `ok` (60 s at most); returns the last value seen.
async fn wait_metric(c: &reqwest::Client, base: &str, name: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let value = metric(c, base, name).await;
        if ok(value) || Instant::now() >= deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `request` on a new connection and returns the status line and headers of the answer.
async fn raw_request(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("request");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&seen).to_string()
}

/// A normal subscriber on `topic`, and a check that it receives an update published now.
async fn served(
    c: &reqwest::Client,
    hub: &HubProcess,
    sub: &mut quicksilver_testkit::sse::SseStream,
    id: &str,
) {
    let publisher = mercure_token(KEY, &["*"], &[], None);
    let (status, _) = publish(c, hub.url(), &publisher, &[("topic", "normal"), ("id", id)]).await;
    assert_eq!(status, 200);
    let event = sub.next_event(WAIT).await.expect("normal subscriber");
    assert_eq!(event.id.as_deref(), Some(id));
}

async fn normal_subscriber(hub: &HubProcess) -> quicksilver_testkit::sse::SseStream {
    let sub = SseClient::new()
        .open(&format!("{}?topic=normal", hub.mercure_url()), &[])
        .await
        .expect("normal subscriber");
    assert_eq!(sub.status(), 200);
    sub
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_never_become_time_series() {
    let hub = HubProcess::spawn(BIN, &["--anonymous"]);
    let c = http();
    let addr = hub.addr();
    let failures = stream::iter(0..3000)
        .map(|i| async move {
            let method = format!("X{i:04}");
            let answer = raw_request(
                addr,
                &format!("{method} /.well-known/mercure HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            )
            .await;
            answer.starts_with("HTTP/1.1 4")
        })
        .buffer_unordered(32)
        .filter(|ok| std::future::ready(!ok))
        .count()
        .await;
    assert_eq!(failures, 0, "every made-up method gets a 4xx");
    let text = metrics_text(&c, hub.url()).await;
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("quicksilver_http_responses_total{"))
        .collect();
    assert!(series.len() <= 4, "series: {series:#?}");
    assert!(series.iter().all(|l| !l.contains("X0")), "{series:#?}");
    assert!(text.len() < 32 * 1024, "/metrics is {} bytes", text.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_are_closed() {
    let _heavy = HEAVY.lock().await;
    let hub = HubProcess::spawn(BIN, &["--anonymous", "--idle-timeout", "2s"]);
    let c = http();
    let base = metric(&c, hub.url(), "quicksilver_connections").await;
    // 200 h2c connections, one request each, then nothing.
    let mut clients = Vec::new();
    for _ in 0..200 {
        let h2 = reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .expect("h2c client");
        let r = h2
            .get(format!("{}/healthz", hub.url()))
            .send()
            .await
            .expect("h2c request");
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        clients.push(h2);
    }
    let open = metric(&c, hub.url(), "quicksilver_connections").await;
    assert!(open >= base + 200.0, "{open} open");
    let left = wait_metric(&c, hub.url(), "quicksilver_connections", |v| {
        v <= base + 1.0
    })
    .await;
    assert!(left <= base + 1.0, "{left} connections left (base {base})");
    assert!(metric(&c, hub.url(), "quicksilver_connections_idle_closed_total").await >= 200.0);
    drop(clients);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_get_a_fast_503_and_health_still_answers() {
    let _heavy = HEAVY.lock().await;
    raise_fd_limit();
    let metrics_port = quicksilver_testkit::free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let metrics_base = format!("http://{metrics_addr}");
    let hub = HubProcess::spawn(
        BIN,
        &[
            "--jwt-key",
            KEY,
            "--anonymous",
            "--max-connections",
            "100",
            "--metrics-addr",
            &metrics_addr,
        ],
    );
    let c = http();
    let pid = hub.pid();
    let mut normal = normal_subscriber(&hub).await;
    // 99 more subscribers fill the node; 2,000 more clients arrive.
    let addr = hub.addr();
    let mut held = Vec::new();
    for _ in 0..99 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("request");
        held.push(s);
    }
    wait_metric(&c, &metrics_base, "quicksilver_connections", |v| v >= 100.0).await;
    let started = Instant::now();
    let answers: Vec<String> = stream::iter(0..2000)
        .map(|_| raw_request(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
        .buffer_unordered(64)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let refused = answers
        .iter()
        .filter(|a| {
            a.starts_with("HTTP/1.1 503") && a.to_ascii_lowercase().contains("retry-after: 1")
        })
        .count();
    assert_eq!(
        refused, 2000,
        "every extra connection is answered 503 with Retry-After"
    );
    eprintln!("2,000 refusals in {elapsed:?}; hub fds {}", fd_count(pid));
    assert!(fd_count(pid) < 100 + 600, "fds: {}", fd_count(pid));
    // The probes answer on the metrics listener, and the subscribers keep being served.
    let health = c
        .get(format!("{metrics_base}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    assert_eq!(
        metric(&c, &metrics_base, "quicksilver_connections_refused_total").await,
        2000.0
    );
    // The normal subscriber's publisher connects through the main port once a place is free.
    drop(held);
    wait_metric(&c, &metrics_base, "quicksilver_connections", |v| v <= 1.0).await;
    served(&c, &hub, &mut normal, "after-refusals").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_address_holds_at_most_its_share() {
    // Direct connections: counted per peer address.
    let hub = HubProcess::spawn(BIN, &["--anonymous", "--max-connections-per-client", "10"]);
    let addr = hub.addr();
    let mut held = Vec::new();
    for _ in 0..10 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("request");
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.expect("answer");
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(s);
    }
    let answer = raw_request(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after"));
    drop(held);

    // Through a trusted proxy: counted per forwarded address and stream; a forged entry placed
    // before the proxy's own does not help.
    let hub = HubProcess::spawn(
        BIN,
        &[
            "--anonymous",
            "--max-connections-per-client",
            "2",
            "--trusted-proxies",
            "127.0.0.1",
        ],
    );
    let url = format!("{}?topic=t", hub.mercure_url());
    let client = SseClient::new();
    let from = |ip: &'static str| [("X-Forwarded-For", ip)];
    let a1 = client.open(&url, &from("198.51.100.1")).await.expect("a1");
    let a2 = client
        .open(&url, &from("203.0.113.7, 198.51.100.1"))
        .await
        .expect("a2");
    let b1 = client.open(&url, &from("198.51.100.2")).await.expect("b1");
    assert_eq!((a1.status(), a2.status(), b1.status()), (200, 200, 200));
    let a3 = http()
        .get(&url)
        .header("X-Forwarded-For", "203.0.113.8, 198.51.100.1")
        .send()
        .await
        .expect("a3");
    assert_eq!(a3.status(), 429);
    drop(a1);
    let mut again = None;
    for _ in 0..50 {
        let s = client
            .open(&url, &from("198.51.100.1"))
            .await
            .expect("again");
        if s.status() == 200 {
            again = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(again.is_some(), "a slot frees up when a stream ends");
    drop((a2, b1));
}

/// A query of `n` distinct URI templates, numbered from `first`.
fn templates(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("topic=https%3A%2F%2Fexample.com%2Fbooks%2F{i}%2F%7Bid%7D"))
        .collect::<Vec<_>>()
        .join("&")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_templates_are_held_under_the_selector_budget() {
    let _heavy = HEAVY.lock().await;
    const BUDGET: usize = 16 * 1024 * 1024;
    let budget = BUDGET.to_string();
    let hub = HubProcess::spawn(
        BIN,
        &[
            "--jwt-key",
            KEY,
            "--anonymous",
            "--max-selector-memory",
            &budget,
            "--max-subscription-selector-memory",
            "4194304",
        ],
    );
    let c = http();
    let pid = hub.pid();
    let mut normal = normal_subscriber(&hub).await;
    served(&c, &hub, &mut normal, "before").await;
    let base_rss = rss_mb(pid);
    // 200 anonymous connections with 100 distinct templates each: 20,000 templates, far more than
    // the budget holds.
    let addr = hub.addr();
    let attackers: Vec<(usize, u16, Option<TcpStream>)> = stream::iter(0..200)
        .map(|i| async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let request = format!(
                "GET /.well-known/mercure?{} HTTP/1.1\r\nHost: x\r\n\r\n",
                templates(i * 100, 100)
            );
            s.write_all(request.as_bytes()).await.expect("request");
            let mut buf = [0u8; 12];
            let _ = tokio::time::timeout(WAIT, s.read_exact(&mut buf)).await;
            let status = std::str::from_utf8(&buf[9..12])
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            (i, status, (status == 200).then_some(s))
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let accepted = attackers.iter().filter(|(_, s, _)| *s == 200).count();
    let refused = attackers.iter().filter(|(_, s, _)| *s == 503).count();
    assert_eq!(
        accepted + refused,
        200,
        "each is accepted or refused with 503"
    );
    assert!(
        refused > 0 && accepted > 0,
        "accepted {accepted}, refused {refused}"
    );
    let used = metric(&c, hub.url(), "quicksilver_selector_memory_bytes").await;
    assert!(used <= BUDGET as f64, "selector memory {used}");
    let peak = rss_mb(pid);
    eprintln!(
        "templates: {accepted} accepted, {refused} refused; selector memory {:.1} MiB; RSS {base_rss:.1} -> {peak:.1} MiB",
        used / 1048576.0
    );
    // The budget plus what the accepted connections cost, with room for the allocator.
    assert!(
        peak < base_rss + 2.0 * (BUDGET as f64) / 1048576.0 + 32.0,
        "peak RSS {peak:.1} MiB"
    );
    served(&c, &hub, &mut normal, "during").await;
    assert!(
        metric(&c, hub.url(), "quicksilver_selector_budget_refusals_total").await >= refused as f64
    );

    // The same templates sent by many are compiled once: 100 more connections with one accepted
    // connection's selectors cost no budget.
    let before = metric(&c, hub.url(), "quicksilver_selector_memory_bytes").await;
    let block = attackers
        .iter()
        .find(|(_, s, _)| *s == 200)
        .map(|(i, _, _)| *i)
        .expect("one accepted");
    let shared_query = templates(block * 100, 100);
    let sharers: Vec<_> = stream::iter(0..100)
        .map(|_| {
            let url = format!("{}?{shared_query}", hub.mercure_url());
            async move { SseClient::new().open(&url, &[]).await.expect("sharer") }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(sharers.iter().all(|s| s.status() == 200));
    let after = metric(&c, hub.url(), "quicksilver_selector_memory_bytes").await;
    assert!(
        after <= before + 1.0,
        "shared selectors cost nothing more: {before} -> {after}"
    );
    drop((attackers, sharers));

    // One subscription alone asking for more than its own share: 413 with a reason.
    let hub = HubProcess::spawn(
        BIN,
        &[
            "--anonymous",
            "--max-subscription-selector-memory",
            "262144",
        ],
    );
    let r = c
        .get(format!("{}?{}", hub.mercure_url(), templates(0, 100)))
        .send()
        .await
        .expect("greedy");
    assert_eq!(r.status(), 413);
    assert!(r.text().await.unwrap_or_default().contains("selectors"));
}

/// A client socket with a small receive buffer, so a client that does not read lets the hub's
/// socket fill after a few kilobytes.
async fn small_buffer_connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    socket.connect(addr).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_subscribers_that_never_read_are_cut_off_without_any_update() {
    let _heavy = HEAVY.lock().await;
    let hub = HubProcess::spawn(
        BIN,
        &[
            "--jwt-key",
            KEY,
            "--anonymous",
            "--dispatch-timeout",
            "2s",
            "--history-size",
            "600",
            "--max-replay-buffer",
            "1048576",
        ],
    );
    let c = http();
    let pid = hub.pid();
    // 3 MB of history: 600 updates of 5 KB (replayed in batches of a dozen).
    let publisher = mercure_token(KEY, &["*"], &[], None);
    let data = "x".repeat(5 * 1024);
    for i in 0..600 {
        let id = format!("h{i}");
        let (status, _) = publish(
            &c,
            hub.url(),
            &publisher,
            &[("topic", "t"), ("id", &id), ("data", &data)],
        )
        .await;
        assert_eq!(status, 200);
    }
    let mut normal = normal_subscriber(&hub).await;
    let base = metric(&c, hub.url(), "quicksilver_connections").await;
    // 300 subscribers replay it all and never read.
    let addr = hub.addr();
    let stalled: Vec<TcpStream> = stream::iter(0..300)
        .map(|_| async move {
            let mut s = small_buffer_connect(addr).await.expect("connect");
            s.write_all(
                b"GET /.well-known/mercure?topic=t&lastEventID=earliest HTTP/1.1\r\nHost: x\r\n\r\n",
            )
            .await
            .expect("request");
            s
        })
        .buffer_unordered(32)
        .collect()
        .await;
    // Then nothing is published: the dispatch timeout alone must end them.
    let mut max_replay = 0.0f64;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        max_replay = max_replay.max(metric(&c, hub.url(), "quicksilver_replay_buffer_bytes").await);
        let stalls = metric(
            &c,
            hub.url(),
            "quicksilver_stalled_writer_disconnections_total",
        )
        .await;
        if stalls >= 300.0 || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stalls = metric(
        &c,
        hub.url(),
        "quicksilver_stalled_writer_disconnections_total",
    )
    .await;
    assert_eq!(stalls, 300.0, "every non-reader is cut off");
    let left = wait_metric(&c, hub.url(), "quicksilver_connections", |v| v <= base).await;
    assert!(left <= base, "connections left {left} (base {base})");
    assert!(
        max_replay <= 1048576.0,
        "replay batches held {max_replay} bytes"
    );
    assert!(metric(&c, hub.url(), "quicksilver_replay_unbatched_frames_total").await > 0.0);
    assert_eq!(
        metric(&c, hub.url(), "quicksilver_replay_buffer_bytes").await,
        0.0
    );
    eprintln!(
        "stalled resumers: peak RSS {:.1} MiB, fds {}",
        rss_mb(pid),
        fd_count(pid)
    );
    served(&c, &hub, &mut normal, "after-stall").await;
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelining_clients_that_never_read_are_closed() {
    let hub = HubProcess::spawn(BIN, &["--anonymous", "--dispatch-timeout", "2s"]);
    let c = http();
    let base = metric(&c, hub.url(), "quicksilver_connections").await;
    let mut pipelining = Vec::new();
    for _ in 0..20 {
        let mut s = small_buffer_connect(hub.addr()).await.expect("connect");
        // A publish first hands the connection to hyper; then thousands of answers nobody reads.
        let requests = "POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_string()
            + &"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(400);
        let _ =
            tokio::time::timeout(Duration::from_secs(5), s.write_all(requests.as_bytes())).await;
        pipelining.push(s);
    }
    let left = wait_metric(&c, hub.url(), "quicksilver_connections", |v| v <= base).await;
    assert!(left <= base, "connections left {left} (base {base})");
    assert!(metric(&c, hub.url(), "quicksilver_connections_write_stalled_total").await >= 20.0);
    drop(pipelining);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_public_urls_are_served_and_forwarded_headers_need_a_trusted_proxy() {
    let hub = HubProcess::spawn(BIN, &["--anonymous", "--public-url", "https://hub.example"]);
    let c = http();
    let url = format!("{}?topic=t", hub.mercure_url());
    // Another hub's name, in Host or forwarded by an untrusted client: 421.
    for (name, value) in [
        ("Host", "other.example"),
        ("X-Forwarded-Host", "hub.example"),
    ] {
        let r = c
            .get(&url)
            .header(name, value)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 421, "{name}: {value}");
    }
    let r = c
        .post(hub.mercure_url())
        .header("Host", "other.example")
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status(), 421);

    // Behind a trusted proxy, its forwarded origin is the one checked.
    let hub = HubProcess::spawn(
        BIN,
        &[
            "--anonymous",
            "--public-url",
            "https://hub.example",
            "--trusted-proxies",
            "127.0.0.0/8",
        ],
    );
    let url = format!("{}?topic=t", hub.mercure_url());
    let ok = SseClient::new()
        .open(
            &url,
            &[
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Host", "hub.example"),
            ],
        )
        .await
        .expect("through the proxy");
    assert_eq!(ok.status(), 200);
    let r = c
        .get(&url)
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Host", "other.example")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 421);

    // Without --public-url, an untrusted client's forwarded headers do not change the audience.
    let hub = HubProcess::spawn(BIN, &["--anonymous"]);
    let meta: serde_json::Value = c
        .get(format!(
            "{}/.well-known/oauth-protected-resource/.well-known/mercure",
            hub.url()
        ))
        .header("X-Forwarded-Host", "evil.example")
        .header("X-Forwarded-Proto", "https")
        .send()
        .await
        .expect("metadata")
        .json()
        .await
        .expect("metadata json");
    assert_eq!(meta["resource"], hub.mercure_url());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscription_api_lists_in_pages() {
    let hub = HubProcess::spawn(
        BIN,
        &[
            "--jwt-key",
            KEY,
            "--anonymous",
            "--subscriptions",
            "--subscriptions-page-size",
            "2",
        ],
    );
    let c = http();
    let mut subscribers = Vec::new();
    for i in 0..5 {
        let sub = SseClient::new()
            .open(&format!("{}?topic=t{i}", hub.mercure_url()), &[])
            .await
            .expect("subscriber");
        subscribers.push(sub);
    }
    let reader = mercure_token(
        KEY,
        &[],
        &["/.well-known/mercure/subscriptions{/topic}{/subscriber}"],
        None,
    );
    let mut url = format!("{}/.well-known/mercure/subscriptions", hub.url());
    let mut seen = Vec::new();
    for _ in 0..10 {
        let r = c.get(&url).bearer_auth(&reader).send().await.expect("api");
        assert_eq!(r.status(), 200);
        let next = r
            .headers()
            .get_all("link")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.contains("rel=\"next\""))
            .and_then(|v| v.split(['<', '>']).nth(1))
            .map(str::to_string);
        let body: serde_json::Value = r.json().await.expect("json");
        let page = body["subscriptions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(page.len() <= 2, "a page holds at most 2: {}", page.len());
        seen.extend(
            page.into_iter()
                .filter_map(|d| d["id"].as_str().map(str::to_string)),
        );
        match next {
            Some(next) => url = format!("{}{next}", hub.url()),
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no document twice: {seen:?}");
    assert_eq!(seen.len(), 5, "every subscription once: {seen:?}");
    drop(subscribers);
}
