//! `RedisServer` and `RedisCluster` against real `redis-server` processes: start, commands, crash and
//! restart with and without persistence, clean-up on drop, and a three-master cluster.

use std::path::Path;

use quicksilver_testkit::redis::{RedisOptions, Resp};
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

fn text(reply: Resp) -> String {
    reply
        .as_text()
        .unwrap_or_else(|| panic!("expected a string reply, got {reply:?}"))
}

#[test]
fn a_server_answers_and_is_killed_and_cleaned_up_on_drop() {
    if !redis_present() {
        return;
    }
    let server = RedisServer::start();
    assert!(server.ping());
    assert!(server.url().starts_with("redis://127.0.0.1:"));
    assert_eq!(text(server.command(&["SET", "k", "v"]).expect("SET")), "OK");
    assert_eq!(text(server.command(&["GET", "k"]).expect("GET")), "v");
    assert!(matches!(
        server.command(&["NOSUCHCOMMAND"]).expect("reply"),
        Resp::Error(_)
    ));
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
    server.command(&["XADD", "s", "*", "f", "1"]).expect("XADD");
    server.kill();
    assert!(!server.ping());
    assert!(!server.is_running());
    server.restart();
    assert_eq!(server.port(), port);
    assert_eq!(
        server.command(&["XLEN", "s"]).expect("XLEN"),
        Resp::Integer(0)
    );
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
            .command(&["XADD", "s", "*", "n", &i.to_string()])
            .expect("XADD");
    }
    server.kill();
    server.restart();
    assert_eq!(
        server.command(&["XLEN", "s"]).expect("XLEN"),
        Resp::Integer(5)
    );
}

#[test]
fn three_masters_form_a_cluster_covering_all_slots() {
    if !redis_present() {
        return;
    }
    let cluster = RedisCluster::start(3);
    assert_eq!(cluster.nodes().len(), 3);
    assert_eq!(cluster.urls().len(), 3);
    let info = text(
        cluster.nodes()[0]
            .command(&["CLUSTER", "INFO"])
            .expect("CLUSTER INFO"),
    );
    assert!(info.contains("cluster_state:ok"), "{info}");
    assert!(info.contains("cluster_slots_assigned:16384"), "{info}");
    assert!(info.contains("cluster_size:3"), "{info}");
    // A key answered by the wrong node redirects with MOVED: the slots are really spread.
    let replies: Vec<Resp> = cluster
        .nodes()
        .iter()
        .map(|node| node.command(&["GET", "some-key"]).expect("GET"))
        .collect();
    let moved = replies
        .iter()
        .filter(|r| matches!(r, Resp::Error(e) if e.starts_with("MOVED")))
        .count();
    assert_eq!(moved, 2, "{replies:?}");
}
