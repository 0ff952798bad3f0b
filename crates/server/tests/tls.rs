//! A hub that serves TLS itself (`--tls-cert`, `--tls-key`), as a single node facing browsers
//! without a load balancer does: subscribers and publishers over HTTPS/1.1 (the lean path) and
//! over HTTP/2 agreed by ALPN, many subscriptions on one HTTP/2 connection, a renewed certificate
//! picked up without dropping streams, handshakes that never finish, plain HTTP to the TLS port,
//! the healthcheck, and `SERVER_NAME` with a certificate. Every certificate comes from a
//! certificate authority made by the test.

use std::time::Duration;

use quicksilver_server::healthcheck::{self, HealthcheckArgs, ProbeError};
use quicksilver_testkit::hub::{metric, HubProcess};
use quicksilver_testkit::tls::{presented_certificate, CertificateFiles, TestCa};
use quicksilver_testkit::{
    mercure_token, publish, spawn_hub, wait_until, InProcessHub, SseClient, SseStream,
    TEST_JWT_KEY, WAIT,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use clap::Parser;

const BIN: &str = env!("CARGO_BIN_EXE_quicksilver");

/// An in-process hub serving the certificate of `files` to anonymous subscribers (plus `args`).
async fn tls_hub(files: &CertificateFiles, args: &[&str]) -> InProcessHub {
    let tls_args = files.args();
    let mut all: Vec<&str> = tls_args.iter().map(String::as_str).collect();
    all.push("--anonymous");
    all.extend_from_slice(args);
    spawn_hub(&all).await
}

fn publisher_token() -> String {
    mercure_token(TEST_JWT_KEY, &["*"], &[], None)
}

/// Subscribes to `topic` with `client`, expecting a stream.
async fn subscribe(client: &reqwest::Client, hub: &InProcessHub, topic: &str) -> SseStream {
    let url = format!("{}?topic={topic}", hub.mercure_url());
    let stream = SseClient::with_http_client(client.clone())
        .open(&url, &[])
        .await
        .unwrap_or_else(|e| panic!("subscribing over TLS: {e}"));
    assert_eq!(stream.status(), 200);
    stream
}

/// Reads from `stream` until it ends (at most `limit` bytes and [`WAIT`]).
async fn read_to_end(stream: &mut TcpStream, limit: usize) -> Vec<u8> {
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(WAIT, async {
        while answer.len() < limit {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the connection stayed open: {answer:?}");
    answer
}

#[tokio::test]
async fn a_subscriber_and_a_publisher_over_https_1_1_are_served_on_the_lean_path() {
    let ca = TestCa::new("test authority");
    let files = CertificateFiles::new(&ca.issue(&["127.0.0.1"]));
    let hub = tls_hub(&files, &[]).await;
    assert!(hub.url().starts_with("https://"), "{}", hub.url());
    let client = ca.http1_client();

    let response = client
        .get(format!("{}?topic=t", hub.mercure_url()))
        .header("Authorization", format!("Bearer {}", publisher_token()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("subscribing over TLS: {e}"));
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(response.status(), 200);
    drop(response);
    let mut stream = subscribe(&client, &hub, "t").await;
    let lean = metric(&client, hub.url(), "quicksilver_lean_requests_total").await;
    assert!(
        lean.is_some_and(|n| n >= 2.0),
        "the subscriptions were not served on the lean path: {lean:?}"
    );

    // A connection of its own (one a hyper-served request used before stays with hyper).
    let (status, id) = publish(
        &ca.http1_client(),
        hub.url(),
        &publisher_token(),
        &[("topic", "t"), ("data", "over TLS")],
    )
    .await;
    assert_eq!(status, 200, "{id}");
    let after = metric(&client, hub.url(), "quicksilver_lean_requests_total").await;
    assert!(
        after
            .zip(lean)
            .is_some_and(|(after, before)| after > before),
        "the publish was not served on the lean path: {lean:?} then {after:?}"
    );
    let event = stream
        .next_event(WAIT)
        .await
        .unwrap_or_else(|e| panic!("the update over TLS: {e}"));
    assert_eq!(
        (event.id.as_deref(), event.data.as_str()),
        (Some(id.as_str()), "over TLS")
    );
}

#[tokio::test]
async fn http2_is_agreed_by_alpn_and_one_connection_carries_seven_subscriptions() {
    let ca = TestCa::new("test authority");
    let files = CertificateFiles::new(&ca.issue(&["127.0.0.1"]));
    let hub = tls_hub(&files, &[]).await;
    // One client keeps one HTTP/2 connection for all its requests (what a browser does for every
    // tab of an origin): pooling stays on here.
    let root = reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap();
    let h2 = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .build()
        .unwrap();

    let mut streams = Vec::new();
    for _ in 0..7 {
        let response = h2
            .get(format!("{}?topic=t", hub.mercure_url()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("subscribing over HTTP/2: {e}"));
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        streams.push(response);
    }
    let observer = ca.client();
    // The seven streams and the metrics request's own connection.
    assert_eq!(
        metric(&observer, hub.url(), "quicksilver_connections").await,
        Some(2.0),
        "the seven subscriptions did not share one connection"
    );

    let (status, _) = publish(
        &observer,
        hub.url(),
        &publisher_token(),
        &[("topic", "t"), ("data", "to every tab")],
    )
    .await;
    assert_eq!(status, 200);
    for (i, response) in streams.into_iter().enumerate() {
        let mut body = response;
        let received = tokio::time::timeout(WAIT, async {
            let mut text = String::new();
            while !text.contains("data: to every tab") {
                match body.chunk().await {
                    Ok(Some(chunk)) => text.push_str(&String::from_utf8_lossy(&chunk)),
                    _ => return false,
                }
            }
            true
        })
        .await;
        assert_eq!(received, Ok(true), "stream {i} did not get the update");
    }
}

#[tokio::test]
async fn a_renewed_certificate_is_served_to_new_connections_while_open_streams_go_on() {
    let ca = TestCa::new("test authority");
    let first = ca.issue(&["127.0.0.1"]);
    let renewed = ca.issue(&["127.0.0.1"]);
    let files = CertificateFiles::new(&first);
    let hub = tls_hub(&files, &[]).await;
    let (http1, http2) = (ca.http1_client(), ca.client());

    let health = format!("{}/healthz", hub.url());
    let shown = http1.get(&health).send().await.unwrap();
    assert_eq!(presented_certificate(&shown), Some(first.der.clone()));
    let mut lean = subscribe(&http1, &hub, "t").await;
    let mut multiplexed = subscribe(&http2, &hub, "t").await;

    files.replace(&renewed);
    // A new client each time: one that resumes an earlier session is shown no certificate.
    wait_until(
        "a new connection to be shown the renewed certificate",
        WAIT,
        async || {
            let response = ca.http1_client().get(&health).send().await;
            response.is_ok_and(|r| presented_certificate(&r) == Some(renewed.der.clone()))
        },
    )
    .await;
    assert_eq!(
        metric(
            &http1,
            hub.url(),
            "quicksilver_tls_certificate_reloads_total"
        )
        .await,
        Some(1.0)
    );

    let (status, id) = publish(
        &http1,
        hub.url(),
        &publisher_token(),
        &[("topic", "t"), ("data", "after the renewal")],
    )
    .await;
    assert_eq!(status, 200);
    for (name, stream) in [("HTTP/1.1", &mut lean), ("HTTP/2", &mut multiplexed)] {
        let event = stream
            .next_event(WAIT)
            .await
            .unwrap_or_else(|e| panic!("the {name} stream opened before the renewal: {e}"));
        assert_eq!(event.id.as_deref(), Some(id.as_str()), "{name}");
    }
}

#[tokio::test]
async fn a_changed_pair_that_does_not_match_keeps_the_previous_certificate() {
    let ca = TestCa::new("test authority");
    let first = ca.issue(&["127.0.0.1"]);
    let other = ca.issue(&["127.0.0.1"]);
    let files = CertificateFiles::new(&first);
    let hub = tls_hub(&files, &[]).await;
    let client = ca.http1_client();

    // A renewal caught half-way: the new certificate beside the old key.
    std::fs::write(files.cert(), &other.cert_pem).unwrap();
    wait_until("the mismatched pair to be refused", WAIT, async || {
        metric(
            &client,
            hub.url(),
            "quicksilver_tls_certificate_reload_failures_total",
        )
        .await
            == Some(1.0)
    })
    .await;
    let shown = client
        .get(format!("{}/healthz", hub.url()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("a new connection after a refused pair: {e}"));
    assert_eq!(presented_certificate(&shown), Some(first.der.clone()));
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_closed() {
    let ca = TestCa::new("test authority");
    let files = CertificateFiles::new(&ca.issue(&["127.0.0.1"]));
    let hub = tls_hub(&files, &["--header-read-timeout", "1s"]).await;

    // One client sends nothing after connecting, the other the start of a client hello.
    let mut silent = TcpStream::connect(hub.addr()).await.unwrap();
    let mut partial = TcpStream::connect(hub.addr()).await.unwrap();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    assert!(read_to_end(&mut silent, 64 * 1024).await.is_empty());
    let answer = read_to_end(&mut partial, 64 * 1024).await;
    assert!(answer.is_empty(), "{answer:?}");

    let client = ca.client();
    assert_eq!(
        metric(
            &client,
            hub.url(),
            "quicksilver_tls_handshake_timeouts_total"
        )
        .await,
        Some(2.0)
    );
}

#[tokio::test]
async fn plain_http_to_the_tls_port_is_refused_with_a_readable_answer() {
    let ca = TestCa::new("test authority");
    let files = CertificateFiles::new(&ca.issue(&["127.0.0.1"]));
    let hub = tls_hub(&files, &[]).await;

    let mut plain = TcpStream::connect(hub.addr()).await.unwrap();
    let request = format!(
        "GET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: {}\r\n\r\n",
        hub.addr()
    );
    plain.write_all(request.as_bytes()).await.unwrap();
    let answer = String::from_utf8_lossy(&read_to_end(&mut plain, 64 * 1024).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("https://"), "{answer}");

    // An HTTP client is told the same.
    let http = format!("http://{}/.well-known/mercure?topic=t", hub.addr());
    let response = quicksilver_testkit::http_client()
        .get(&http)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    let client = ca.client();
    assert_eq!(
        metric(
            &client,
            hub.url(),
            "quicksilver_tls_plaintext_requests_total"
        )
        .await,
        Some(2.0)
    );
    // The port still serves TLS.
    assert_eq!(
        client
            .get(format!("{}/healthz", hub.url()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn the_healthcheck_probes_a_tls_listener_over_https() {
    let ca = TestCa::new("test authority");
    let files = CertificateFiles::new(&ca.issue(&["hub.example"]));
    let hub = tls_hub(&files, &[]).await;
    let listen = hub.addr().to_string();
    let cert = files.cert().display().to_string();

    let probe = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let mut argv = vec!["healthcheck".to_string()];
            argv.extend(args);
            let args = HealthcheckArgs::try_parse_from(argv).unwrap();
            let target = args.target()?;
            healthcheck::probe(&target, Duration::from_secs(5))
        })
    };
    // The certificate names another host: the probe does not verify it.
    let over_https = probe(vec![
        "--listen".into(),
        listen.clone(),
        "--tls-cert".into(),
        cert,
    ])
    .await
    .unwrap();
    assert_eq!(over_https.unwrap(), "HTTP/1.1 200 OK");
    let over_http = probe(vec!["--listen".into(), listen]).await.unwrap();
    assert!(
        matches!(over_http, Err(ProbeError::Status(ref line)) if line.contains("400")),
        "{over_http:?}"
    );
}

#[tokio::test]
async fn server_name_with_a_certificate_serves_https() {
    let ca = TestCa::new("test authority");
    let files = CertificateFiles::new(&ca.issue(&["127.0.0.1"]));
    let args = files.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut all = vec!["--anonymous", "--jwt-key", TEST_JWT_KEY];
    all.extend(args);
    let hub = HubProcess::spawn_with_env(BIN, &all, &[("SERVER_NAME", "https://127.0.0.1:0")]);
    assert!(hub.url().starts_with("https://"), "{}", hub.url());

    let client = ca.client();
    let mut stream = SseClient::with_http_client(client.clone())
        .open(&format!("{}?topic=t", hub.mercure_url()), &[])
        .await
        .unwrap_or_else(|e| panic!("subscribing to the binary over TLS: {e}"));
    assert_eq!(stream.status(), 200);
    let (status, id) = publish(
        &client,
        hub.url(),
        &publisher_token(),
        &[("topic", "t"), ("data", "x")],
    )
    .await;
    assert_eq!(status, 200);
    let event = stream.next_event(WAIT).await.unwrap();
    assert_eq!(event.id.as_deref(), Some(id.as_str()));
}

#[tokio::test]
async fn a_full_node_refuses_a_tls_connection_with_an_answer_it_can_read() {
    let ca = TestCa::new("test authority");
    let files = CertificateFiles::new(&ca.issue(&["127.0.0.1"]));
    let hub = tls_hub(&files, &["--max-connections", "1"]).await;
    let _held = subscribe(&ca.client(), &hub, "t").await;

    // The client offers HTTP/2 too; the refusal is agreed on HTTP/1.1 and answered so.
    let refused = ca
        .client()
        .get(format!("{}?topic=t", hub.mercure_url()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("the refusal over TLS: {e}"));
    assert_eq!(refused.version(), reqwest::Version::HTTP_11);
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
}

#[tokio::test]
async fn a_tls_subscriber_that_stops_reading_is_cut_off() {
    use tokio_rustls::rustls;
    let ca = TestCa::new("test authority");
    let files = CertificateFiles::new(&ca.issue(&["127.0.0.1"]));
    let hub = tls_hub(&files, &["--subscriber-queue", "8"]).await;

    // A TLS client that sends its request and never reads what comes back.
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let ca_der = {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap()
    };
    roots.add(ca_der).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(hub.addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut stalled = connector.connect(name, tcp).await.unwrap();
    stalled
        .write_all(b"GET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    stalled.flush().await.unwrap();
    let client = ca.http1_client();
    wait_until("the stalled subscriber to be connected", WAIT, async || {
        metric(&client, hub.url(), "quicksilver_subscribers").await == Some(1.0)
    })
    .await;

    // Far more than the socket buffers on both sides and the session's own hold.
    let data = "x".repeat(256 * 1024);
    for i in 0..100 {
        let id = format!("u{i}");
        let (status, _) = publish(
            &client,
            hub.url(),
            &publisher_token(),
            &[("topic", "t"), ("id", &id), ("data", &data)],
        )
        .await;
        assert_eq!(status, 200);
        if metric(&client, hub.url(), "quicksilver_subscribers").await == Some(0.0) {
            break;
        }
    }
    wait_until("the stalled subscriber to be cut off", WAIT, async || {
        metric(&client, hub.url(), "quicksilver_subscribers").await == Some(0.0)
    })
    .await;
    assert_eq!(
        metric(
            &client,
            hub.url(),
            "quicksilver_slow_subscriber_disconnections_total"
        )
        .await,
        Some(1.0)
    );
    drop(stalled);
}
