//! The binary started with the reference hub's environment, as its users write it today: the Symfony
//! Mercure recipe's compose service and eXeLearning's, unchanged; `SERVER_NAME` and
//! `MERCURE_EXTRA_DIRECTIVES` against our own settings; start-up errors naming a directive's line; and
//! `quicksilver token` output fed to a running hub, in both generations.

use std::io::Write;
use std::process::{Command, Stdio};

use quicksilver_testkit::token::{mercure_claims, now, sign_hs256};
use quicksilver_testkit::{http_client, publish, HubProcess, SseClient, WAIT};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_quicksilver");
const FORM: &str = "application/x-www-form-urlencoded";
/// The key of the recipe and of eXeLearning's `.env.dist`.
const KEY: &str = "!ChangeThisMercureHubJWTSecretKey!";

/// The Symfony Mercure recipe's `compose.yaml` service environment, with `SERVER_NAME` on a free port
/// instead of `:80` (same form; port 80 needs privileges).
fn symfony_recipe() -> Vec<(&'static str, &'static str)> {
    vec![
        ("SERVER_NAME", ":0"),
        ("MERCURE_PUBLISHER_JWT_KEY", KEY),
        ("MERCURE_SUBSCRIBER_JWT_KEY", KEY),
        (
            "MERCURE_EXTRA_DIRECTIVES",
            "cors_origins http://127.0.0.1:8000\n",
        ),
    ]
}

/// What `quicksilver token ARGS` prints (standard input `stdin`), or its error.
fn token(args: &[&str], stdin: &str) -> Result<String, String> {
    let mut child = Command::new(BIN)
        .arg("token")
        .args(args)
        .env_remove("MERCURE_PUBLISHER_JWT_KEY")
        .env_remove("MERCURE_JWT_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("quicksilver token");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("quicksilver token output");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout)
            .expect("UTF-8")
            .trim()
            .to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test]
async fn the_symfony_recipe_environment_works_unchanged() {
    let hub = HubProcess::spawn_with_env(BIN, &[], &symfony_recipe());
    assert_eq!(
        hub.addr().ip().to_string(),
        "0.0.0.0",
        "SERVER_NAME :PORT binds every interface"
    );
    let c = http_client();
    let app = "http://127.0.0.1:8000";

    // The browser's preflight for a cross-origin publish with a bearer token passes for the app's
    // origin (cors_origins), and for no other.
    let preflight = |origin: &'static str| {
        c.request(reqwest::Method::OPTIONS, hub.mercure_url())
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "authorization")
            .send()
    };
    let r = preflight(app).await.expect("preflight");
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(r.headers()["access-control-allow-origin"], app);
    assert_eq!(r.headers()["access-control-allow-credentials"], "true");
    let r = preflight("https://evil.example").await.expect("preflight");
    assert!(!r.headers().contains_key("access-control-allow-origin"));

    // No `anonymous` in the recipe: a subscriber needs a token.
    let r = c
        .get(format!(
            "{}?topic=https://example.com/books/1",
            hub.mercure_url()
        ))
        .send()
        .await
        .expect("anonymous subscribe");
    assert_eq!(r.status(), 401);

    // The bundle's subscriber cookie (mercureAuthorization), set for the hub by the app, reads a
    // private update; the bundle publishes with its own token.
    let subscriber = sign_hs256(
        KEY,
        &mercure_claims(&[], &["https://example.com/books/{id}"], Some(now() + 3600)),
    );
    let mut es = SseClient::connect(
        &format!(
            "{}?topic=https://example.com/books/{{id}}",
            hub.mercure_url()
        ),
        &[
            ("Origin", app),
            ("Cookie", &format!("mercureAuthorization={subscriber}")),
        ],
    )
    .await
    .expect("subscribe");
    assert_eq!(es.status(), 200);
    assert_eq!(es.header("access-control-allow-origin"), Some(app));
    let publisher = sign_hs256(KEY, &json!({"mercure": {"publish": ["*"]}}));
    let (status, id) = publish(
        &c,
        hub.url(),
        &publisher,
        &[
            ("topic", "https://example.com/books/1"),
            ("data", "{\"title\":\"Dune\"}"),
            ("private", "on"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{id}");
    let e = es.next_event(WAIT).await.expect("the private update");
    assert_eq!(
        (e.id.as_deref(), e.data.as_str()),
        (Some(id.as_str()), "{\"title\":\"Dune\"}")
    );
}

#[tokio::test]
async fn the_exelearning_environment_works_unchanged() {
    // eXeLearning passes its MERCURE_JWT_SECRET_KEY as both keys, publishes from the browser with a
    // bearer token and subscribes with the token and the last event id in the query string.
    let secret = "exelearning-secret-0123456789abcdef";
    let hub = HubProcess::spawn_with_env(
        BIN,
        &[],
        &[
            ("SERVER_NAME", ":0"),
            ("MERCURE_PUBLISHER_JWT_KEY", secret),
            ("MERCURE_SUBSCRIBER_JWT_KEY", secret),
            ("MERCURE_EXTRA_DIRECTIVES", "anonymous\ncors_origins *\n"),
        ],
    );
    let c = http_client();
    let jwt = sign_hs256(secret, &mercure_claims(&["*"], &["*"], None));
    let session = "20251122abcdef";
    let r = c
        .post(hub.mercure_url())
        .header("Origin", "https://exe.example.com")
        .bearer_auth(&jwt)
        .header("Content-Type", FORM)
        .body(format!("topic={session}&id=first-edit&data=1"))
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let (status, _) = publish(
        &c,
        hub.url(),
        &jwt,
        &[
            ("topic", session),
            ("id", "second-edit"),
            ("data", "2"),
            ("private", "on"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let mut es = SseClient::connect(
        &format!(
            "{}?topic={session}&authorization={jwt}&lastEventID=first-edit",
            hub.mercure_url()
        ),
        &[("Origin", "https://exe.example.com")],
    )
    .await
    .expect("subscribe");
    assert_eq!(es.status(), 200);
    let e = es.next_event(WAIT).await.expect("the private update");
    assert_eq!(e.id.as_deref(), Some("second-edit"));
    // `anonymous`: a subscriber without a token gets public updates only.
    let mut anonymous = SseClient::connect(
        &format!("{}?topic={session}&lastEventID=earliest", hub.mercure_url()),
        &[],
    )
    .await
    .expect("anonymous subscribe");
    assert_eq!(anonymous.status(), 200);
    let e = anonymous.next_event(WAIT).await.expect("the public update");
    assert_eq!(e.id.as_deref(), Some("first-edit"));
    anonymous.assert_no_event(quicksilver_testkit::SHORT).await;
}

#[test]
fn our_listen_setting_wins_over_server_name() {
    let hub = HubProcess::spawn_with_env(
        BIN,
        &[],
        &[
            ("SERVER_NAME", ":1"),
            ("QUICKSILVER_LISTEN", "127.0.0.1:0"),
            ("MERCURE_JWT_KEY", KEY),
        ],
    );
    assert_eq!(hub.addr().ip().to_string(), "127.0.0.1");
    assert!(hub
        .wait_for_output("SERVER_NAME=\":1\" is not used", WAIT)
        .is_some());
}

#[test]
fn an_unknown_directive_stops_the_hub_naming_it_and_its_line() {
    let e = HubProcess::try_spawn(
        BIN,
        &[],
        &[
            ("MERCURE_JWT_KEY", KEY),
            (
                "MERCURE_EXTRA_DIRECTIVES",
                "anonymous\ncors_origin http://127.0.0.1:8000\n",
            ),
        ],
    )
    .expect_err("the hub must refuse to start");
    let message = e.to_string();
    assert!(
        message.contains("MERCURE_EXTRA_DIRECTIVES line 2: unknown directive `cors_origin`"),
        "{message}"
    );
}

#[test]
fn accepted_but_ignored_directives_say_so_in_the_log() {
    let hub = HubProcess::spawn_with_env(
        BIN,
        &[],
        &[
            ("MERCURE_JWT_KEY", KEY),
            (
                "MERCURE_EXTRA_DIRECTIVES",
                "transport bolt {\n\tpath /data/mercure.db\n\tsize 500\n}\ntopic_matcher_cache 1000\n",
            ),
        ],
    );
    for needle in [
        "line 1: `transport bolt` became the in-memory transport, keeping the last 500 updates",
        "line 5: `topic_matcher_cache` has no effect here",
    ] {
        assert!(
            hub.wait_for_output(needle, WAIT).is_some(),
            "no log line {needle:?}"
        );
    }
}

#[tokio::test]
async fn token_output_is_accepted_by_the_hub_in_both_generations() {
    let resource = "https://hub.example.com/.well-known/mercure";
    let hub = HubProcess::spawn(
        BIN,
        &[
            "--jwt-key",
            KEY,
            "--issuer",
            "https://app.example.com",
            "--resource-identifier",
            resource,
        ],
    );
    let c = http_client();

    // An access token: subscribe by URL pattern, publish on one exact topic.
    let subscriber = token(
        &[
            "--issuer",
            "https://app.example.com",
            "--audience",
            resource,
            "--key",
            KEY,
            "--subscribe-urlpattern",
            "https://example.com/books/:id",
        ],
        "",
    )
    .expect("an access token");
    let publisher = token(
        &[
            "--iss",
            "https://app.example.com",
            "--aud",
            resource,
            "--key",
            "@-",
            "--publish",
            "https://example.com/books/1",
        ],
        &format!("{KEY}\n"),
    )
    .expect("an access token, key on standard input");
    let mut es = SseClient::connect(
        &format!(
            "{}?match_urlpattern=https://example.com/books/:id",
            hub.mercure_url()
        ),
        &[("Authorization", &format!("Bearer {subscriber}"))],
    )
    .await
    .expect("subscribe");
    assert_eq!(es.status(), 200);
    let (status, id) = publish(
        &c,
        hub.url(),
        &publisher,
        &[
            ("topic", "https://example.com/books/1"),
            ("data", "a"),
            ("private", "on"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{id}");
    assert_eq!(es.next_event(WAIT).await.expect("update").data, "a");
    let (status, _) = publish(
        &c,
        hub.url(),
        &publisher,
        &[("topic", "https://example.com/books/2"), ("data", "b")],
    )
    .await;
    assert_eq!(status, 403, "the grant is for books/1 only");

    // A pre-standardization token, without exp, as Symfony apps and eXeLearning use them.
    let dir = tempfile::tempdir().expect("temp dir");
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("{KEY}\n")).expect("key file");
    let legacy = token(
        &[
            "--legacy",
            "--key",
            &format!("@{}", key_file.display()),
            "--ttl",
            "0",
            "--publish",
            "*",
            "--subscribe",
            "https://example.com/books/{id}",
        ],
        "",
    )
    .expect("a legacy token");
    let mut es = SseClient::connect(
        &format!(
            "{}?topic=https://example.com/books/{{id}}",
            hub.mercure_url()
        ),
        &[("Authorization", &format!("Bearer {legacy}"))],
    )
    .await
    .expect("subscribe");
    let (status, _) = publish(
        &c,
        hub.url(),
        &legacy,
        &[
            ("topic", "https://example.com/books/3"),
            ("data", "c"),
            ("private", "on"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(es.next_event(WAIT).await.expect("update").data, "c");

    // --dev mirrors the reference's development defaults; a hub configured for them accepts it.
    let dev = HubProcess::spawn(
        BIN,
        &[
            "--issuer",
            "https://localhost",
            "--resource-identifier",
            "https://localhost/.well-known/mercure",
            "--jwt-key",
            KEY,
        ],
    );
    let dev_token = token(&["--dev"], "").expect("a development token");
    let (status, _) = publish(&c, dev.url(), &dev_token, &[("topic", "t"), ("data", "d")]).await;
    assert_eq!(status, 200);

    // Refusals name what is wrong.
    let e = token(&["--key", KEY, "--publish", "*"], "").expect_err("no issuer");
    assert!(e.contains("--issuer"), "{e}");
    let e = token(
        &[
            "--legacy",
            "--key",
            "-----BEGIN PUBLIC KEY-----\nx\n-----END PUBLIC KEY-----",
            "--alg",
            "HS256",
            "--publish",
            "*",
        ],
        "",
    )
    .expect_err("a PEM key with HMAC");
    assert!(e.contains("HMAC"), "{e}");
}

#[tokio::test]
async fn the_symfony_recipes_command_line_starts_the_playground() {
    // The recipe's service also says `command: /usr/bin/caddy run --config /etc/caddy/dev.Caddyfile`:
    // the reference image's development Caddyfile, the playground here.
    let hub = HubProcess::spawn_with_env(
        BIN,
        &[
            "/usr/bin/caddy",
            "run",
            "--config",
            "/etc/caddy/dev.Caddyfile",
        ],
        &symfony_recipe(),
    );
    assert!(hub.wait_for_output("is --playground here", WAIT).is_some());
    let c = http_client();
    // Anonymous subscribers, as in the development Caddyfile; the directive's CORS origin kept.
    let es = SseClient::connect(
        &format!("{}?topic=a", hub.mercure_url()),
        &[("Origin", "http://127.0.0.1:8000")],
    )
    .await
    .expect("anonymous subscribe");
    assert_eq!(es.status(), 200);
    assert_eq!(
        es.header("access-control-allow-origin"),
        Some("http://127.0.0.1:8000")
    );
    let debugger = c
        .get(format!("{}/.well-known/mercure/debug/", hub.url()))
        .send()
        .await
        .expect("debugger");
    assert_eq!(debugger.status(), 200);

    // A Caddyfile of one's own cannot be read: the hub says where its settings go.
    let e = HubProcess::try_spawn(
        BIN,
        &["caddy", "run", "--config", "/srv/Caddyfile"],
        &symfony_recipe(),
    )
    .expect_err("a custom Caddyfile is refused");
    assert!(e.to_string().contains("MERCURE_EXTRA_DIRECTIVES"), "{e}");
}
