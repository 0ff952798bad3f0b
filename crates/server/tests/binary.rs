//! The real `quicksilver` executable: start-up, SIGTERM drain and exit, refusal of bad settings.

use std::time::Duration;

use quicksilver_testkit::free_port;
use quicksilver_testkit::hub::HubProcess;
use quicksilver_testkit::sse::SseClient;
use quicksilver_testkit::token::publisher_token;
use quicksilver_testkit::{http_client, poll_until, TEST_JWT_KEY, WAIT};

const BIN: &str = env!("CARGO_BIN_EXE_quicksilver");

#[tokio::test]
async fn sigterm_drains_streams_with_a_retry_hint_and_exits_cleanly() {
    let mut hub = HubProcess::spawn(
        BIN,
        &[
            "--jwt-key",
            TEST_JWT_KEY,
            "--anonymous",
            "--drain-window",
            "1s",
            "--drain-retry",
            "250ms",
        ],
    );
    let c = http_client();
    let sse = SseClient::new();
    let mut streams = Vec::new();
    for _ in 0..20 {
        streams.push(
            sse.open(&format!("{}?topic=t", hub.mercure_url()), &[])
                .await
                .unwrap(),
        );
    }
    let token = publisher_token();
    let (status, _) = quicksilver_testkit::hub::publish(
        &c,
        hub.url(),
        &token,
        &[("topic", "t"), ("id", "before")],
    )
    .await;
    assert_eq!(status, 200);
    for s in &mut streams {
        assert_eq!(
            s.next_event(Duration::from_secs(5))
                .await
                .unwrap()
                .id
                .as_deref(),
            Some("before")
        );
    }

    hub.sigterm();
    // Not ready any more, while the streams are being closed over the drain window (the signal
    // takes a moment to arrive: poll until /readyz stops answering 200; it must then say 503, not
    // be gone already).
    let readyz = format!("{}/readyz", hub.url());
    let mut answer = None;
    poll_until(WAIT, async || {
        answer = c.get(&readyz).send().await.ok().map(|r| r.status());
        answer != Some(reqwest::StatusCode::OK)
    })
    .await;
    assert_eq!(
        answer,
        Some(reqwest::StatusCode::SERVICE_UNAVAILABLE),
        "/readyz turned 503 while draining"
    );
    for s in &mut streams {
        assert!(
            s.closed_within(Duration::from_secs(5)).await,
            "stream closed by the drain"
        );
        assert_eq!(s.retry(), Some(250), "told to reconnect promptly");
    }
    let status = hub
        .wait_exit(Duration::from_secs(15))
        .expect("exits after draining");
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn sighup_reloads_the_policies_and_keeps_connections_a_bad_file_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.toml");
    let good = format!("jwt_key = \"{TEST_JWT_KEY}\"\nanonymous = true\n");
    std::fs::write(&path, &good).unwrap();
    let mut hub = HubProcess::spawn(BIN, &["--config", path.to_str().unwrap()]);
    let c = http_client();
    let mut stream = SseClient::new()
        .open(&format!("{}?topic=t", hub.mercure_url()), &[])
        .await
        .unwrap();
    let url = hub.url().to_string();
    let count = async |c: &reqwest::Client, name: &str| {
        quicksilver_testkit::hub::metric(c, &url, name)
            .await
            .unwrap_or(-1.0)
    };

    // A file that does not parse: refused, counted, the hub goes on as it was.
    std::fs::write(&path, "[[rate_limit\n").unwrap();
    hub.sighup();
    assert!(
        poll_until(WAIT, async || {
            count(&c, "quicksilver_policy_reload_failures_total").await == 1.0
        })
        .await,
        "the refused reload is counted"
    );
    assert_eq!(count(&c, "quicksilver_policy_reloads_total").await, 0.0);

    // A good one is put in force; neither reload touched the open stream.
    std::fs::write(&path, &good).unwrap();
    hub.sighup();
    assert!(
        poll_until(WAIT, async || {
            count(&c, "quicksilver_policy_reloads_total").await == 1.0
        })
        .await,
        "the reload is counted"
    );
    assert!(hub.is_running(), "SIGHUP does not end the process");
    let (status, _) = quicksilver_testkit::hub::publish(
        &c,
        hub.url(),
        &publisher_token(),
        &[("topic", "t"), ("id", "after-reloads")],
    )
    .await;
    assert_eq!(status, 200);
    let event = stream.next_event(Duration::from_secs(5)).await.unwrap();
    assert_eq!(event.id.as_deref(), Some("after-reloads"));
}

#[test]
fn refuses_to_start_with_a_pem_key_and_an_hmac_algorithm() {
    let pem = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n";
    let err = HubProcess::try_spawn(
        BIN,
        &["--publisher-jwt-key", pem, "--publisher-jwt-alg", "HS256"],
        &[],
    );
    assert!(err.is_err(), "a PEM key paired with HS256 must be refused");
}

#[test]
fn help_lists_every_setting() {
    let out = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--transport",
        "--redis-url",
        "--publisher-jwt-key",
        "--subscriber-jwt-key",
        "--anonymous",
        "--cors-origins",
        "--publish-origins",
        "--history-size",
        "--heartbeat",
        "--write-timeout",
        "--drain-window",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
    assert!(text.contains("MERCURE_PUBLISHER_JWT_KEY") && text.contains("QUICKSILVER_LISTEN"));
}

/// The runtime stage of the repository's `Dockerfile`, as Docker runs its health check: the
/// image's `ENV` settings and the `HEALTHCHECK` command (exec form).
struct ImageHealthcheck {
    env: Vec<(String, String)>,
    command: Vec<String>,
}

impl ImageHealthcheck {
    fn from_dockerfile() -> Self {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Dockerfile");
        let text = std::fs::read_to_string(path).expect("the repository's Dockerfile");
        let joined = text.replace("\\\n", " ");
        let (_, stage) = joined.rsplit_once("\nFROM ").expect("a runtime stage");
        let mut env = Vec::new();
        let mut command = None;
        for line in stage.lines().map(str::trim) {
            if let Some(pairs) = line.strip_prefix("ENV ") {
                for pair in pairs.split_whitespace() {
                    let (k, v) = pair.split_once('=').expect("ENV in the KEY=VALUE form");
                    env.push((k.to_string(), v.to_string()));
                }
            } else if let Some(rest) = line.strip_prefix("HEALTHCHECK ") {
                let (_, cmd) = rest.split_once("CMD ").expect("HEALTHCHECK … CMD");
                let argv: Vec<String> =
                    serde_json::from_str(cmd.trim()).expect("HEALTHCHECK CMD in the exec form");
                command = Some(argv);
            }
        }
        let command = command.expect("a HEALTHCHECK in the runtime stage");
        assert!(
            command[0].ends_with("/quicksilver"),
            "the health check runs the hub's own binary, not a shell: {command:?}"
        );
        ImageHealthcheck { env, command }
    }

    /// Runs the command with this machine's binary, only the image's environment, and the image's
    /// ports `3000` / `9090` moved to `main` / `metrics`; `extra` arguments are appended.
    fn run(&self, main: u16, metrics: u16, extra: &[&str]) -> std::process::Output {
        let env = self.env.iter().map(|(k, v)| {
            let v = match v.parse::<std::net::SocketAddr>() {
                Ok(mut addr) => {
                    match addr.port() {
                        3000 => addr.set_port(main),
                        9090 => addr.set_port(metrics),
                        other => panic!("{k}: unexpected port {other} in the image"),
                    }
                    addr.to_string()
                }
                Err(_) => v.clone(),
            };
            (k.clone(), v)
        });
        std::process::Command::new(BIN)
            .args(&self.command[1..])
            .args(extra)
            .env_clear()
            .envs(env)
            .output()
            .expect("run the health check")
    }
}

#[test]
fn the_image_health_check_passes_on_a_serving_hub_and_fails_otherwise() {
    let check = ImageHealthcheck::from_dockerfile();
    let (main, metrics) = (free_port(), free_port());
    let refused = check.run(main, metrics, &[]);
    assert!(!refused.status.success(), "nothing listens yet");
    assert_eq!(
        refused.status.code(),
        Some(1),
        "1, never Docker's reserved 2"
    );

    // The image's settings, as flags (HubProcess keeps the test's QUICKSILVER_* out of the child).
    let (main_addr, metrics_addr) = (format!("127.0.0.1:{main}"), format!("127.0.0.1:{metrics}"));
    let hub_args = [
        "--jwt-key",
        TEST_JWT_KEY,
        "--listen",
        main_addr.as_str(),
        "--metrics-addr",
        metrics_addr.as_str(),
    ];
    let mut hub = HubProcess::spawn(BIN, &hub_args);
    let healthy = check.run(main, metrics, &[]);
    let stdout = String::from_utf8_lossy(&healthy.stdout);
    assert!(
        healthy.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&healthy.stderr)
    );
    assert!(
        stdout.contains(&format!("127.0.0.1:{metrics}/healthz: HTTP/1.1 200")),
        "probes the metrics listener: {stdout}"
    );
    assert!(check.run(main, metrics, &["--ready"]).status.success());
    hub.kill();
    let _ = hub.wait_exit(Duration::from_secs(5));

    // Alive but not ready: the Redis it needs is not there. Liveness passes, readiness fails.
    let redis_url = format!("redis://127.0.0.1:{}", free_port());
    let mut args = hub_args.to_vec();
    args.extend(["--transport", "redis", "--redis-url", redis_url.as_str()]);
    let _unready = HubProcess::spawn(BIN, &args);
    assert!(check.run(main, metrics, &[]).status.success());
    let not_ready = check.run(main, metrics, &["--ready"]);
    assert_eq!(not_ready.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&not_ready.stderr);
    assert!(stderr.contains("503"), "{stderr}");
    drop(_unready);

    // A listener that takes connections and never answers (a hung process): the probe gives up
    // by itself, well within Docker's own --timeout.
    let silent = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let started = std::time::Instant::now();
    let hung = check.run(main, silent_port, &[]);
    assert_eq!(hung.status.code(), Some(1));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the probe must not hang"
    );
    let stderr = String::from_utf8_lossy(&hung.stderr);
    assert!(stderr.contains("no answer within"), "{stderr}");
}
