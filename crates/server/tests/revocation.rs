//! Revocation end to end: hubs in this process (and the binary, for `quicksilver revoke` and
//! `SIGHUP`), real HTTP, a real `redis-server` shared by two nodes.
//!
//! A revocation made through one node refuses the token on another (401 to every new request)
//! and ends that node's live streams authenticated by it; a subject's revocation spares tokens
//! issued after its time; revocations lapse; the count is capped; the admin endpoint needs the
//! admin key (404 without one, 401 for a publisher's token); the CLI and the `[revocation]` table
//! (reloaded on `SIGHUP`) drive it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quicksilver_testkit::hub::{metric, publish, HubProcess};
use quicksilver_testkit::sse::SseClient;
use quicksilver_testkit::token::sign_hs256;
use quicksilver_testkit::{http_client, spawn_hub, wait_until, RedisServer, TEST_JWT_KEY};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_quicksilver");

/// The admin key of these tests (never the publisher's or subscriber's).
const ADMIN_KEY: &str = "the admin key of the revocation tests";

/// How long something that should happen promptly may take.
const WAIT: Duration = Duration::from_secs(15);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An admin token signed with `key`, granting `scope`.
fn admin_token_with(key: &str, scope: &str) -> String {
    sign_hs256(key, &json!({"scope": scope, "exp": now() + 60}))
}

fn admin_token() -> String {
    admin_token_with(ADMIN_KEY, "revocations")
}

/// A legacy token of the hub's key that may publish and subscribe to everything, naming `claims`
/// (`sub`, `jti`, `iat`, `iss`, …) besides.
fn user_token(claims: Value) -> String {
    let mut all = json!({
        "mercure": {"publish": ["*"], "subscribe": ["*"]},
        "exp": now() + 3600,
    });
    if let (Some(all), Some(claims)) = (all.as_object_mut(), claims.as_object()) {
        all.extend(claims.clone());
    }
    sign_hs256(TEST_JWT_KEY, &all)
}

fn admin_url(hub: &str) -> String {
    format!("{hub}/.well-known/mercure/admin/revocations")
}

/// `POST`s a revocation with `token`; the status and the JSON answer (`null` if none).
async fn revoke_with(hub: &str, token: &str, body: Value) -> (u16, Value) {
    let response = http_client()
        .post(admin_url(hub))
        .bearer_auth(token)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn revoke(hub: &str, body: Value) -> (u16, Value) {
    revoke_with(hub, &admin_token(), body).await
}

/// The status of a subscription with `token` (the stream, if opened, is dropped).
async fn subscribe_status(hub: &str, token: &str) -> u16 {
    let url = format!("{hub}/.well-known/mercure?topic=t");
    let auth = format!("Bearer {token}");
    SseClient::connect(&url, &[("Authorization", &auth)])
        .await
        .unwrap()
        .status()
}

async fn open_stream(hub: &str, token: &str) -> quicksilver_testkit::SseStream {
    let url = format!("{hub}/.well-known/mercure?topic=t");
    let auth = format!("Bearer {token}");
    SseClient::subscribe(&url, &[("Authorization", &auth)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_through_one_node_refuses_the_token_and_ends_its_streams_on_another() {
    let redis = RedisServer::start();
    let redis_url = redis.url();
    let args = [
        "--transport",
        "redis",
        "--redis-url",
        &redis_url,
        "--admin-jwt-key",
        ADMIN_KEY,
    ];
    let a = spawn_hub(&args).await;
    let b = spawn_hub(&args).await;
    let client = http_client();
    let alice = user_token(json!({"sub": "alice", "jti": "t-alice", "iat": now() - 10}));
    let bob = user_token(json!({"sub": "bob", "jti": "t-bob", "iat": now() - 10}));
    let mut alice_stream = open_stream(b.url(), &alice).await;
    let mut bob_stream = open_stream(b.url(), &bob).await;

    let (status, stored) = revoke(a.url(), json!({"jti": "t-alice", "reason": "leaked"})).await;
    assert_eq!(status, 201, "{stored}");
    assert_eq!(stored["id"], "jti:0:t-alice");
    assert_eq!(stored["reason"], "leaked");
    // In force on the node that took it as soon as it answered.
    assert_eq!(subscribe_status(a.url(), &alice).await, 401);

    // Node B refuses new requests with the token, and ends its live stream.
    wait_until("node B refuses the revoked token", WAIT, async || {
        subscribe_status(b.url(), &alice).await == 401
    })
    .await;
    assert!(
        alice_stream.closed_within(WAIT).await,
        "the revoked token's stream on node B ends"
    );
    let (status, _) = publish(&client, b.url(), &alice, &[("topic", "t"), ("data", "x")]).await;
    assert_eq!(status, 401, "a revoked token publishes nothing either");
    // The refusal is the usual one for an invalid token.
    let response = client
        .get(format!("{}/.well-known/mercure?topic=t", b.url()))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("invalid_token"), "{challenge}");

    // Other tokens are untouched, live and new.
    let (status, _) = publish(
        &client,
        a.url(),
        &bob,
        &[("topic", "t"), ("data", "for bob")],
    )
    .await;
    assert_eq!(status, 200);
    let event = bob_stream.next_event(WAIT).await.unwrap();
    assert_eq!(event.data, "for bob");
    assert_eq!(subscribe_status(b.url(), &bob).await, 200);

    // A node that starts later reads the whole set.
    let c = spawn_hub(&args).await;
    wait_until("a new node refuses the revoked token", WAIT, async || {
        subscribe_status(c.url(), &alice).await == 401
    })
    .await;

    let value = |name: &'static str| {
        let client = client.clone();
        let hub = b.url().to_string();
        async move { metric(&client, &hub, name).await.unwrap_or(-1.0) }
    };
    assert_eq!(value("quicksilver_revocations").await, 1.0);
    assert!(value("quicksilver_revoked_disconnections_total").await >= 1.0);
    assert!(value("quicksilver_revoked_token_refusals_total").await >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_revocation_spares_tokens_issued_after_it_and_other_issuers() {
    let hub = spawn_hub(&["--admin-jwt-key", ADMIN_KEY]).await;
    let t = now();
    let old = user_token(json!({"sub": "alice", "iat": t - 100}));
    let fresh = user_token(json!({"sub": "alice", "iat": t - 10}));
    let undated = user_token(json!({"sub": "alice"}));
    let other_app = user_token(json!({"sub": "alice", "iat": t - 100, "iss": "https://b.example"}));
    let app = user_token(json!({"sub": "alice", "iat": t - 100, "iss": "https://a.example"}));
    let mut old_stream = open_stream(hub.url(), &old).await;
    let mut fresh_stream = open_stream(hub.url(), &fresh).await;

    let (status, stored) = revoke(hub.url(), json!({"sub": "alice", "before": t - 50})).await;
    assert_eq!(status, 201, "{stored}");
    assert_eq!(stored["before"], t - 50);
    assert_eq!(subscribe_status(hub.url(), &old).await, 401);
    assert_eq!(
        subscribe_status(hub.url(), &undated).await,
        401,
        "no iat: covered"
    );
    assert_eq!(subscribe_status(hub.url(), &fresh).await, 200);
    assert!(old_stream.closed_within(WAIT).await);
    assert!(!fresh_stream.closed_within(Duration::from_millis(300)).await);

    // Revoking the subject again with an earlier time lifts nothing (the later time stays).
    let (status, stored) = revoke(hub.url(), json!({"sub": "alice", "before": t - 80})).await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["before"], t - 50);
    // Now every token of alice issued before now (the default time).
    let (status, stored) = revoke(hub.url(), json!({"sub": "alice"})).await;
    assert_eq!(status, 200);
    assert!(stored["before"].as_u64().unwrap() > t - 10);
    assert_eq!(subscribe_status(hub.url(), &fresh).await, 401);
    assert!(fresh_stream.closed_within(WAIT).await);

    // Limited to one issuer: that issuer's tokens of the subject only. (The unlimited one above
    // covers both; lift it first.)
    let lifted = http_client()
        .delete(format!("{}?sub=alice", admin_url(hub.url())))
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(lifted.status(), 204);
    assert_eq!(subscribe_status(hub.url(), &other_app).await, 200);
    let (status, stored) = revoke(
        hub.url(),
        json!({"sub": "alice", "iss": "https://a.example"}),
    )
    .await;
    assert_eq!(status, 201, "{stored}");
    assert_eq!(subscribe_status(hub.url(), &app).await, 401);
    assert_eq!(subscribe_status(hub.url(), &other_app).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_lapse_when_the_tokens_they_cover_expire() {
    let hub = spawn_hub(&["--admin-jwt-key", ADMIN_KEY]).await;
    let token = user_token(json!({"jti": "short-lived"}));
    let (status, stored) = revoke(hub.url(), json!({"jti": "short-lived", "exp": now() + 2})).await;
    assert_eq!(status, 201, "{stored}");
    assert_eq!(subscribe_status(hub.url(), &token).await, 401);
    // (The token itself outlives the revocation here, as a token lying about its lifetime would.)
    wait_until("the revocation lapses", WAIT, async || {
        subscribe_status(hub.url(), &token).await == 200
    })
    .await;
    let list = list(hub.url(), "").await;
    assert_eq!(list["total"], 0, "{list}");
    let client = http_client();
    wait_until("the gauge follows", WAIT, async || {
        metric(&client, hub.url(), "quicksilver_revocations").await == Some(0.0)
    })
    .await;
    // One whose exp has passed is refused: it would cover nothing.
    let (status, _) = revoke(hub.url(), json!({"jti": "x", "exp": now() - 1})).await;
    assert_eq!(status, 400);
}

async fn list(hub: &str, query: &str) -> Value {
    let response = http_client()
        .get(format!("{}{query}", admin_url(hub)))
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_in_pages_lifting_and_the_cap() {
    let hub = spawn_hub(&["--admin-jwt-key", ADMIN_KEY, "--max-revocations", "2"]).await;
    for jti in ["a", "b"] {
        let (status, _) = revoke(hub.url(), json!({"jti": jti})).await;
        assert_eq!(status, 201);
    }
    let (status, _) = revoke(hub.url(), json!({"jti": "c"})).await;
    assert_eq!(status, 507, "over --max-revocations");
    let client = http_client();
    assert_eq!(
        metric(
            &client,
            hub.url(),
            "quicksilver_revocations_over_limit_total"
        )
        .await,
        Some(1.0)
    );
    // Revoking a key already held is no new revocation.
    let (status, _) = revoke(hub.url(), json!({"jti": "a", "reason": "again"})).await;
    assert_eq!(status, 200);

    let page = list(hub.url(), "?limit=1").await;
    assert_eq!(page["total"], 2);
    assert_eq!(page["revocations"][0]["id"], "jti:0:a");
    assert_eq!(page["revocations"][0]["reason"], "again");
    assert_eq!(page["next"], "jti:0:a");
    let page = list(hub.url(), "?limit=1&after=jti:0:a").await;
    assert_eq!(page["revocations"][0]["jti"], "b");
    assert!(page.get("next").is_none());

    let lift = |query: &'static str| {
        let client = client.clone();
        let url = admin_url(hub.url());
        async move {
            client
                .delete(format!("{url}{query}"))
                .bearer_auth(admin_token())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let token = user_token(json!({"jti": "a"}));
    assert_eq!(subscribe_status(hub.url(), &token).await, 401);
    assert_eq!(lift("?jti=a").await, 204);
    assert_eq!(lift("?jti=a").await, 404);
    assert_eq!(lift("").await, 400);
    assert_eq!(subscribe_status(hub.url(), &token).await, 200, "lifted");
    // Room again under the cap.
    let (status, _) = revoke(hub.url(), json!({"jti": "c"})).await;
    assert_eq!(status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_endpoint_needs_the_admin_key_and_is_absent_without_one() {
    let off = spawn_hub(&[]).await;
    let (status, _) = revoke(off.url(), json!({"jti": "x"})).await;
    assert_eq!(status, 404, "no admin key: no endpoint");
    let response = http_client()
        .get(admin_url(off.url()))
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    let hub = spawn_hub(&["--admin-jwt-key", ADMIN_KEY]).await;
    let publisher = quicksilver_testkit::token::publisher_token();
    let (status, _) = revoke_with(hub.url(), &publisher, json!({"jti": "x"})).await;
    assert_eq!(status, 401, "a publisher token is no admin token");
    let (status, _) = revoke_with(
        hub.url(),
        &admin_token_with(TEST_JWT_KEY, "revocations"),
        json!({"jti": "x"}),
    )
    .await;
    assert_eq!(status, 401, "nor a token signed with the publisher key");
    let (status, _) = revoke_with(
        hub.url(),
        &admin_token_with(ADMIN_KEY, "other"),
        json!({"jti": "x"}),
    )
    .await;
    assert_eq!(status, 403, "an admin token without the scope");
    let response = http_client()
        .post(admin_url(hub.url()))
        .header("Content-Type", "application/json")
        .body(json!({"jti": "x"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    // Bad bodies are 400s and 415s.
    for (body, status) in [
        (json!({"jti": "x", "sub": "y"}), 400),
        (json!({"jti": "x", "before": 1}), 400),
        (json!({"jti": "x", "colour": "red"}), 400),
        (json!({"jti": "x".repeat(300)}), 400),
        (json!(["jti"]), 400),
    ] {
        assert_eq!(revoke(hub.url(), body.clone()).await.0, status, "{body}");
    }
    let response = http_client()
        .post(admin_url(hub.url()))
        .bearer_auth(admin_token())
        .body("jti=x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);

    // The admin key may not be the publisher's.
    let config = quicksilver_server::Config::from_args([
        "quicksilver",
        "--jwt-key",
        TEST_JWT_KEY,
        "--admin-jwt-key",
        TEST_JWT_KEY,
    ])
    .unwrap();
    let refused = quicksilver_server::Hub::start(&config).unwrap_err();
    assert!(refused.to_string().contains("admin JWT key"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_revoke_command_drives_a_running_hub() {
    let hub = spawn_hub(&["--admin-jwt-key", ADMIN_KEY]).await;
    let token = user_token(json!({"sub": "carol", "jti": "t-carol", "iat": now() - 5}));
    let run = |args: Vec<&str>, key: Option<&str>| {
        let mut command = tokio::process::Command::new(BIN);
        command.arg("revoke").arg("--hub").arg(hub.url()).args(args);
        command.env_remove("QUICKSILVER_ADMIN_JWT_KEY");
        if let Some(key) = key {
            command.env("QUICKSILVER_ADMIN_JWT_KEY", key);
        }
        async move {
            let out = command.output().await.unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    // The key from the environment, as the hub reads it.
    let (ok, out, err) = run(
        vec!["--jti", "t-carol", "--reason", "lost laptop"],
        Some(ADMIN_KEY),
    )
    .await;
    assert!(ok, "{err}");
    let stored: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stored["id"], "jti:0:t-carol");
    assert_eq!(subscribe_status(hub.url(), &token).await, 401);

    // From a file, listing.
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("admin.key");
    std::fs::write(&key_file, format!("{ADMIN_KEY}\n")).unwrap();
    let key_arg = format!("@{}", key_file.display());
    let (ok, out, err) = run(vec!["--list", "--admin-key", &key_arg], None).await;
    assert!(ok, "{err}");
    let page: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(page["total"], 1);
    assert_eq!(page["revocations"][0]["reason"], "lost laptop");

    let (ok, out, err) = run(
        vec!["--lift", "--jti", "t-carol", "--admin-key", ADMIN_KEY],
        None,
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "lifted");
    assert_eq!(subscribe_status(hub.url(), &token).await, 200);

    // A wrong key: the hub's refusal, exit status 1.
    let (ok, _, err) = run(vec!["--sub", "carol", "--admin-key", "wrong"], None).await;
    assert!(!ok);
    assert!(err.contains("401"), "{err}");
    let (ok, _, err) = run(vec!["--sub", "carol"], None).await;
    assert!(!ok);
    assert!(err.contains("admin key is required"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_revocation_table_is_read_again_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hub.toml");
    let key_file = dir.path().join("admin.key");
    std::fs::write(&key_file, "first admin key\n").unwrap();
    std::fs::write(
        &config,
        format!(
            "[revocation]\nadmin_key_file = {:?}\nmax_revocations = 5\n",
            key_file.display().to_string()
        ),
    )
    .unwrap();
    let config_arg = config.display().to_string();
    let hub = HubProcess::spawn(BIN, &["--jwt-key", TEST_JWT_KEY, "--config", &config_arg]);
    let first = admin_token_with("first admin key", "revocations");
    let second = admin_token_with("second admin key", "revocations");
    assert_eq!(
        revoke_with(hub.url(), &first, json!({"jti": "a"})).await.0,
        201
    );

    // The key is rotated in its file, and the hub told.
    std::fs::write(&key_file, "second admin key\n").unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(hub.pid() as i32).unwrap(),
        rustix::process::Signal::HUP,
    )
    .unwrap();
    wait_until("the new admin key is accepted", WAIT, async || {
        revoke_with(hub.url(), &second, json!({"jti": "b"})).await.0 == 201
    })
    .await;
    assert_eq!(
        revoke_with(hub.url(), &first, json!({"jti": "c"})).await.0,
        401
    );
    // What was revoked stays revoked.
    let token = user_token(json!({"jti": "a"}));
    assert_eq!(subscribe_status(hub.url(), &token).await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_are_revoked_by_id_within_their_issuer() {
    use quicksilver_testkit::token::{access_claims, access_token, authorization_detail};
    const ISSUER: &str = "https://issuer.example";
    const RESOURCE: &str = "https://hub.example/.well-known/mercure";
    let hub = spawn_hub(&[
        "--issuer",
        ISSUER,
        "--resource-identifier",
        RESOURCE,
        "--admin-jwt-key",
        ADMIN_KEY,
    ])
    .await;
    let token = |jti: &str| {
        let mut claims = access_claims(
            ISSUER,
            RESOURCE,
            json!([authorization_detail(
                &["subscribe"],
                json!([{"match": "*"}])
            )]),
        );
        claims["jti"] = json!(jti);
        claims["sub"] = json!("dave");
        claims["iat"] = json!(now() - 5);
        access_token(TEST_JWT_KEY, None, &claims)
    };
    let (revoked, kept) = (token("at-1"), token("at-2"));
    let mut stream = open_stream(hub.url(), &revoked).await;
    // Another issuer's token id of the same value is not this one.
    let (status, _) = revoke(
        hub.url(),
        json!({"jti": "at-1", "iss": "https://other.example"}),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(subscribe_status(hub.url(), &revoked).await, 200);
    let (status, _) = revoke(hub.url(), json!({"jti": "at-1", "iss": ISSUER})).await;
    assert_eq!(status, 201);
    assert_eq!(subscribe_status(hub.url(), &revoked).await, 401);
    assert!(stream.closed_within(WAIT).await);
    assert_eq!(subscribe_status(hub.url(), &kept).await, 200);
}
