//! `RedisServer` and `RedisCluster` against real `redis-server` processes: start, commands, crash and
//! restart with and without persistence, clean-up on drop, a three-master cluster, and a TLS-only server
//! with an ACL user.

use std::path::Path;

use quicksilver_testkit::redis::{query_url, RedisOptions, Value};
use quicksilver_testkit::{RedisCluster, RedisServer};

/// Skips (with a message) where redis-server is absent, except in CI, where a missing server is a failure
/// of the set-up script.
fn redis_present() -> bool {
    if RedisServer::available() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "redis-server is missing in CI: scripts/install-test-deps.sh should install it"
    );
    eprintln!("SKIPPED: redis-server not found; run scripts/install-test-deps.sh");
    false
}

#[test]
fn a_server_answers_and_is_killed_and_cleaned_up_on_drop() {
    if !redis_present() {
        return;
    }
    let server = RedisServer::start();
    assert!(server.ping());
    assert!(server.url().starts_with("redis://127.0.0.1:"));
    assert_eq!(
        server.query::<String>(&["SET", "k", "v"]).expect("SET"),
        "OK"
    );
    assert_eq!(server.query::<String>(&["GET", "k"]).expect("GET"), "v");
    let unknown = server
        .query::<Value>(&["NOSUCHCOMMAND"])
        .expect_err("an error reply");
    assert_eq!(unknown.code(), Some("ERR"), "{unknown}");
    let pid = server.pid().expect("running");
    let dir = server.dir().to_path_buf();
    drop(server);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "redis-server {pid} still exists"
    );
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

#[test]
fn a_restart_without_persistence_loses_data_on_the_same_port() {
    if !redis_present() {
        return;
    }
    let mut server = RedisServer::start();
    let port = server.port();
    server
        .query::<String>(&["XADD", "s", "*", "f", "1"])
        .expect("XADD");
    server.kill();
    assert!(!server.ping());
    assert!(!server.is_running());
    server.restart();
    assert_eq!(server.port(), port);
    assert_eq!(server.query::<i64>(&["XLEN", "s"]).expect("XLEN"), 0);
}

#[test]
fn a_restart_with_aof_keeps_acknowledged_writes_after_sigkill() {
    if !redis_present() {
        return;
    }
    let mut server = RedisServer::start_with(RedisOptions {
        appendonly: true,
        ..RedisOptions::default()
    });
    for i in 0..5 {
        server
            .query::<String>(&["XADD", "s", "*", "n", &i.to_string()])
            .expect("XADD");
    }
    server.kill();
    server.restart();
    assert_eq!(server.query::<i64>(&["XLEN", "s"]).expect("XLEN"), 5);
}

#[test]
fn three_masters_form_a_cluster_covering_all_slots() {
    if !redis_present() {
        return;
    }
    let cluster = RedisCluster::start(3);
    assert_eq!(cluster.nodes().len(), 3);
    assert_eq!(cluster.urls().len(), 3);
    let info: String = cluster.nodes()[0]
        .query(&["CLUSTER", "INFO"])
        .expect("CLUSTER INFO");
    assert!(info.contains("cluster_state:ok"), "{info}");
    assert!(info.contains("cluster_slots_assigned:16384"), "{info}");
    assert!(info.contains("cluster_size:3"), "{info}");
    // A key answered by the wrong node redirects with MOVED: the slots are really spread.
    let codes: Vec<Option<String>> = cluster
        .nodes()
        .iter()
        .map(
            |node| match node.query::<Option<String>>(&["GET", "some-key"]) {
                Ok(_) => None,
                Err(e) => Some(e.code().unwrap_or("no code").to_owned()),
            },
        )
        .collect();
    let moved = codes
        .iter()
        .filter(|code| code.as_deref() == Some("MOVED"))
        .count();
    assert_eq!(moved, 2, "{codes:?}");
}

#[test]
fn a_tls_server_with_an_acl_user_is_queried_as_that_user_and_refuses_others() {
    if !redis_present() {
        return;
    }
    let server = RedisServer::start_with(RedisOptions {
        tls: true,
        acl_users: vec![("app".into(), "app-password".into())],
        default_user_off: true,
        ..RedisOptions::default()
    });
    assert!(server.url().starts_with("rediss://127.0.0.1:"));
    assert!(server.tls_ca_file().expect("a CA").exists());
    assert!(server.ping(), "over TLS, as the ACL user");
    assert_eq!(
        server.query::<String>(&["ACL", "WHOAMI"]).expect("WHOAMI"),
        "app"
    );
    let plaintext = format!("redis://127.0.0.1:{}", server.port());
    assert!(
        query_url::<String>(&plaintext, &["PING"]).is_err(),
        "no plaintext port"
    );
}
