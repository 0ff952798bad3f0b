//! The runnable topologies: `scripts/cluster.sh` (Redis, three nodes and nginx as processes) is
//! started for real and used through nginx, and `docker-compose.cluster.yml` is validated by
//! docker-compose's own parser (no Docker engine exists on these machines).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use quicksilver_testkit::free_port;
use quicksilver_testkit::sse::SseClient;
use quicksilver_testkit::token::publisher_token;
use quicksilver_testkit::TEST_JWT_KEY;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Stops the cluster when the test ends, passed or not.
struct ClusterGuard {
    env: Vec<(String, String)>,
}

impl ClusterGuard {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("bash")
            .arg(repo_root().join("scripts/cluster.sh"))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run scripts/cluster.sh")
    }
}

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        let _ = self.run(&["down"]);
    }
}

#[tokio::test]
async fn cluster_script_runs_three_nodes_behind_nginx() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = free_port();
    let nodes = [free_port(), free_port(), free_port()];
    let guard = ClusterGuard {
        env: vec![
            ("CLUSTER_DIR".into(), dir.path().display().to_string()),
            ("NGINX_PORT".into(), nginx.to_string()),
            (
                "NODE_PORTS".into(),
                format!("{} {} {}", nodes[0], nodes[1], nodes[2]),
            ),
            ("REDIS_PORT".into(), free_port().to_string()),
            (
                "QUICKSILVER_BIN".into(),
                env!("CARGO_BIN_EXE_quicksilver").into(),
            ),
            ("QUICKSILVER_EXTRA_ARGS".into(), "--anonymous".into()),
            ("MERCURE_JWT_KEY".into(), TEST_JWT_KEY.into()),
        ],
    };
    let up = guard.run(&["up"]);
    assert!(
        up.status.success(),
        "cluster.sh up failed:\n{}\n{}",
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr)
    );
    let hub = format!("http://127.0.0.1:{nginx}");
    let c = reqwest::Client::new();
    // Discovery passes through nginx, with the public host (port included) as the identity.
    let metadata = c
        .get(format!(
            "{hub}/.well-known/oauth-protected-resource/.well-known/mercure"
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metadata.contains(&format!("\"resource\":\"{hub}/.well-known/mercure\"")),
        "{metadata}"
    );
    assert_eq!(c.get(format!("{hub}/")).send().await.unwrap().status(), 200);
    assert_eq!(
        c.get(format!("{hub}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Subscribers through nginx land on different nodes; each gets every update published through
    // nginx (which also lands on different nodes), in one order.
    let sse = SseClient::new();
    let mut subs = Vec::new();
    for _ in 0..6 {
        let s = sse
            .open(&format!("{hub}/.well-known/mercure?topic=t"), &[])
            .await
            .unwrap();
        assert_eq!(s.status(), 200);
        subs.push(s);
    }
    let token = publisher_token();
    for i in 1..=20 {
        let (status, _) = quicksilver_testkit::hub::publish(
            &c,
            &hub,
            &token,
            &[("topic", "t"), ("id", &i.to_string())],
        )
        .await;
        assert_eq!(status, 200);
    }
    for s in &mut subs {
        let events = s.events(20, Duration::from_secs(10)).await.unwrap();
        let ids: Vec<String> = events.into_iter().filter_map(|e| e.id).collect();
        assert_eq!(ids, (1..=20).map(|i| i.to_string()).collect::<Vec<_>>());
    }
    let status = guard.run(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert_eq!(text.matches("readyz: 200").count(), 3, "{text}");
}

/// `ROUTING=partition`: nginx's plain `hash $arg_topic` and the nodes' `--redis-partition-hash
/// nginx` agree, so every topic of a partition reaches one node, and each node reads only its own
/// share of the partitions (12 partitions over 3 nodes: at most 4 each). With topics routed by
/// nginx's consistent hash instead, 24 topics over 3 nodes make each node read 5 to 7 of them.
#[tokio::test]
async fn routing_by_partition_gives_each_node_its_own_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = free_port();
    let nodes = [free_port(), free_port(), free_port()];
    let guard = ClusterGuard {
        env: vec![
            ("CLUSTER_DIR".into(), dir.path().display().to_string()),
            ("NGINX_PORT".into(), nginx.to_string()),
            (
                "NODE_PORTS".into(),
                format!("{} {} {}", nodes[0], nodes[1], nodes[2]),
            ),
            ("REDIS_PORT".into(), free_port().to_string()),
            (
                "QUICKSILVER_BIN".into(),
                env!("CARGO_BIN_EXE_quicksilver").into(),
            ),
            ("QUICKSILVER_EXTRA_ARGS".into(), "--anonymous".into()),
            ("MERCURE_JWT_KEY".into(), TEST_JWT_KEY.into()),
            ("ROUTING".into(), "partition".into()),
        ],
    };
    let up = guard.run(&["up"]);
    assert!(
        up.status.success(),
        "cluster.sh up failed:\n{}\n{}",
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr)
    );
    let hub = format!("http://127.0.0.1:{nginx}");
    let topic = |i: usize| format!("https://example.com/docs/{i}");
    let sse = SseClient::new();
    let mut subs = Vec::new();
    for i in 0..24 {
        // Encoded as browsers' URLSearchParams encode it, which is what the nodes hash.
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("topic", &topic(i))
            .finish();
        let s = sse
            .open(&format!("{hub}/.well-known/mercure?{query}"), &[])
            .await
            .unwrap();
        assert_eq!(s.status(), 200);
        subs.push(s);
    }
    let c = reqwest::Client::new();
    let token = publisher_token();
    for i in 0..24 {
        let (status, _) = quicksilver_testkit::hub::publish(
            &c,
            &hub,
            &token,
            &[("topic", &topic(i)), ("id", &format!("u{i}"))],
        )
        .await;
        assert_eq!(status, 200);
    }
    for (i, s) in subs.iter_mut().enumerate() {
        let events = s.events(1, Duration::from_secs(10)).await.unwrap();
        assert_eq!(events[0].id.as_deref(), Some(format!("u{i}").as_str()));
    }
    let mut total = 0;
    for port in nodes {
        let metrics = c
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let read: u32 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("quicksilver_transport_partitions_read "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no partitions gauge on {port}:\n{metrics}"));
        assert!(read <= 4, "node {port} reads {read} of 12 partitions");
        total += read;
    }
    assert!(total > 0);
}

#[test]
fn compose_file_is_valid_and_a_broken_one_is_not() {
    // The file has no fallback key: compose refuses to start without both.
    let check = |file: &std::path::Path, keys: bool| {
        let mut cmd = Command::new("docker-compose");
        cmd.arg("-f")
            .arg(file)
            .args(["config", "-q"])
            .env_remove("MERCURE_PUBLISHER_JWT_KEY")
            .env_remove("MERCURE_SUBSCRIBER_JWT_KEY");
        if keys {
            cmd.env("MERCURE_PUBLISHER_JWT_KEY", "publisher-key")
                .env("MERCURE_SUBSCRIBER_JWT_KEY", "subscriber-key");
        }
        cmd.output()
            .expect("docker-compose is installed by scripts/install-test-deps.sh")
    };
    let compose = repo_root().join("docker-compose.cluster.yml");
    let out = check(&compose, true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keyless = check(&compose, false);
    assert!(!keyless.status.success(), "no key, no hub");
    assert!(
        String::from_utf8_lossy(&keyless.stderr).contains("MERCURE_PUBLISHER_JWT_KEY"),
        "{}",
        String::from_utf8_lossy(&keyless.stderr)
    );

    let text = std::fs::read_to_string(&compose).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("docker-compose.yml");
    std::fs::write(
        &broken,
        text.replace("  redis:\n    image:", "  redis:\n    imagee:"),
    )
    .unwrap();
    assert!(
        !check(&broken, true).status.success(),
        "a misspelt key must be rejected"
    );
}
