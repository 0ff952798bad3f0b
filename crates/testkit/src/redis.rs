//! `redis-server` processes for tests: each on a free port, with its files (logs, AOF, `nodes.conf`) in a
//! temporary directory deleted on drop, and killed on drop.
//!
//! [`RedisServer::start`] is a throwaway server without persistence (`--save "" --appendonly no`);
//! [`RedisOptions`] turns on AOF (`appendfsync always`, so a SIGKILL loses nothing acknowledged) or cluster
//! mode. [`RedisServer::kill`] and [`RedisServer::restart`] simulate a crash and a restart on the same port
//! and directory, which is how tests check what the hub does when Redis loses (or keeps) its streams.
//! [`RedisCluster::start`] forms a Redis Cluster from cluster-enabled servers with
//! `redis-cli --cluster create`.
//!
//! Commands go over a tiny RESP2 client on a fresh TCP connection ([`RedisServer::command`]), so the
//! testkit needs no Redis client crate; it is for set-up and inspection, not for load.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::free_port;
use crate::hub::spawn_retrying_busy;

/// How long a server has to answer `PING` after start (an AOF replay counts as start).
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long [`RedisCluster::start`] waits for `cluster_state:ok` on every node.
pub const CLUSTER_TIMEOUT: Duration = Duration::from_secs(60);

/// Read/write timeout of one [`RedisServer::command`].
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// What redis-server logs when its port (or cluster bus port) is taken.
const PORT_IN_USE: &str = "Address already in use";

/// How many fresh ports to try when the chosen one is taken between [`free_port`] and the bind.
const PORT_ATTEMPTS: usize = 8;

/// Why a Redis server or cluster could not be started, or a command failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// `redis-server` (or `redis-cli`) could not be executed; run `scripts/install-test-deps.sh`.
    #[error("could not run {program}: {source} (scripts/install-test-deps.sh installs it)")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server exited during start-up.
    #[error("redis-server exited with {status} during start-up; log:\n{log}")]
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// Its log.
        log: String,
    },
    /// No `PONG` (or no cluster_state:ok) in time.
    #[error("{what} not ready within {timeout:?}; log:\n{log}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long.
        timeout: Duration,
        /// The relevant log or output.
        log: String,
    },
    /// `redis-cli --cluster create` failed.
    #[error("redis-cli --cluster create failed ({status}):\n{output}")]
    ClusterCreate {
        /// Its exit status.
        status: ExitStatus,
        /// Its stdout and stderr.
        output: String,
    },
    /// I/O on the command connection.
    #[error("redis command I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A reply that is not RESP2.
    #[error("malformed RESP reply: {0}")]
    Protocol(String),
}

/// How to run a [`RedisServer`].
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// `--appendonly yes --appendfsync always`: streams survive [`RedisServer::kill`] + `restart`.
    pub appendonly: bool,
    /// `--cluster-enabled yes`, with the cluster bus on a second free port and `nodes.conf` in the temp dir.
    pub cluster: bool,
    /// More `redis-server` arguments, appended last (e.g. `["--maxmemory", "10mb"]`).
    pub extra_args: Vec<String>,
}

/// A `redis-server` child process on `127.0.0.1` and a free port. Dropping it kills the process and deletes
/// its directory.
pub struct RedisServer {
    /// `None` after [`RedisServer::kill`] until [`RedisServer::restart`].
    child: Option<Child>,
    port: u16,
    cluster_port: Option<u16>,
    options: RedisOptions,
    /// Dropped last (field order): the process must be dead before its directory goes.
    dir: TempDir,
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer")
            .field("pid", &self.pid())
            .field("port", &self.port)
            .field("cluster_port", &self.cluster_port)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl RedisServer {
    /// Whether `redis-server` can be executed here.
    pub fn available() -> bool {
        Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// A server without persistence, answering `PING`. Panics with the reason if it cannot start.
    pub fn start() -> RedisServer {
        Self::start_with(RedisOptions::default())
    }

    /// A server with `options`, answering `PING`. Panics with the reason if it cannot start.
    pub fn start_with(options: RedisOptions) -> RedisServer {
        Self::try_start_with(options)
            .unwrap_or_else(|e| panic!("starting redis-server failed: {e}"))
    }

    /// A server with `options`, or why it could not start. A port taken by someone else between choosing
    /// and binding it is retried with a new one.
    pub fn try_start_with(options: RedisOptions) -> Result<RedisServer, RedisError> {
        let mut dir = tempfile::Builder::new()
            .prefix("quicksilver-redis-")
            .tempdir()?;
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let cluster_port = options.cluster.then(free_port);
            if cluster_port == Some(port) {
                continue;
            }
            let mut server = RedisServer {
                child: None,
                port,
                cluster_port,
                options: options.clone(),
                dir,
            };
            let log_start = server.log().len();
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(e)
                    if server
                        .log()
                        .get(log_start..)
                        .unwrap_or("")
                        .contains(PORT_IN_USE) =>
                {
                    last_error = Some(e);
                    dir = server.into_dir();
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error.expect("at least one attempt was made"))
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The cluster bus port, for a cluster-enabled server.
    pub fn cluster_port(&self) -> Option<u16> {
        self.cluster_port
    }

    /// The server's working directory (AOF files, `nodes.conf`, `redis.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL and reap: a crash. Data not yet persisted is lost (with [`RedisOptions::appendonly`], nothing
    /// acknowledged is).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if it runs, then starts it again on the same port with the same directory and
    /// options, and waits for `PING`. Retries while the port is still held by the dying process. Panics if
    /// it cannot.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let log_start = self.log().len();
            match self.launch() {
                Ok(()) => return,
                Err(_)
                    if Instant::now() < deadline
                        && self
                            .log()
                            .get(log_start..)
                            .unwrap_or("")
                            .contains(PORT_IN_USE) =>
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("restarting redis-server on port {} failed: {e}", self.port),
            }
        }
    }

    /// The server's log so far (all starts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Sends one command on a fresh connection and returns the reply (a Redis error reply is
    /// `Ok(Resp::Error)`).
    pub fn command(&self, args: &[&str]) -> Result<Resp, RedisError> {
        command_at(self.addr(), args)
    }

    /// Whether the server answers `PING` with `PONG` right now.
    pub fn ping(&self) -> bool {
        matches!(self.command(&["PING"]), Ok(Resp::Simple(ref s)) if s == "PONG")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn into_dir(mut self) -> TempDir {
        self.kill();
        let placeholder = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.dir, placeholder)
    }

    /// Starts the process with the current port and options, and waits for `PING`.
    fn launch(&mut self) -> Result<(), RedisError> {
        let dir = self.dir.path();
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir)
            .args(["--save", "", "--daemonize", "no", "--logfile", ""]);
        if self.options.appendonly {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        if let Some(cluster_port) = self.cluster_port {
            command
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                ])
                .args(["--cluster-port", &cluster_port.to_string()])
                .args(["--cluster-node-timeout", "5000"]);
        }
        command.args(&self.options.extra_args);
        // The log goes to a file rather than a pipe: nothing has to drain it, and it outlives the process
        // for diagnostics. Appending keeps the history of restarts.
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        command
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = spawn_retrying_busy(&mut command).map_err(|source| RedisError::Spawn {
            program: "redis-server".into(),
            source,
        })?;
        self.child = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.ping() {
                return Ok(());
            }
            if let Some(child) = &mut self.child {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(RedisError::Exited {
                        status,
                        log: self.log(),
                    });
                }
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(RedisError::Timeout {
                    what: format!("redis-server on port {}", self.port),
                    timeout: START_TIMEOUT,
                    log: self.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(50).collect();
            eprintln!(
                "--- redis-server port {} log, last {} lines ---",
                self.port,
                tail.len()
            );
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        self.kill();
    }
}

/// A Redis Cluster of cluster-enabled [`RedisServer`]s, all masters, slots split evenly by
/// `redis-cli --cluster create`. Dropping it kills every node.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// A cluster of `masters` nodes (at least 3, as `redis-cli` requires) with no replicas, once every node
    /// reports `cluster_state:ok`. Panics with the reason if it cannot.
    pub fn start(masters: usize) -> RedisCluster {
        Self::try_start(masters).unwrap_or_else(|e| panic!("starting a Redis Cluster failed: {e}"))
    }

    /// [`RedisCluster::start`], returning why it failed.
    pub fn try_start(masters: usize) -> Result<RedisCluster, RedisError> {
        assert!(
            masters >= 3,
            "redis-cli --cluster create needs at least 3 masters"
        );
        let nodes = (0..masters)
            .map(|_| {
                RedisServer::try_start_with(RedisOptions {
                    cluster: true,
                    ..RedisOptions::default()
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cluster = RedisCluster { nodes };
        cluster.create()?;
        cluster.wait_ok(CLUSTER_TIMEOUT)?;
        Ok(cluster)
    }

    /// The nodes, in creation order.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The nodes, mutably (to kill or restart one).
    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// The first node's URL: a cluster client discovers the others from any one seed.
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// Every node's URL.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Waits until every node reports `cluster_state:ok` and knows every other node.
    pub fn wait_ok(&self, timeout: Duration) -> Result<(), RedisError> {
        let deadline = Instant::now() + timeout;
        let wanted_nodes = format!("cluster_known_nodes:{}", self.nodes.len());
        loop {
            let infos: Vec<String> = self
                .nodes
                .iter()
                .map(|node| match node.command(&["CLUSTER", "INFO"]) {
                    Ok(reply) => reply.as_text().unwrap_or_default(),
                    Err(e) => e.to_string(),
                })
                .collect();
            let ok = infos.iter().all(|info| {
                info.lines().any(|l| l.trim() == "cluster_state:ok")
                    && info.lines().any(|l| l.trim() == wanted_nodes)
            });
            if ok {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(RedisError::Timeout {
                    what: "cluster_state:ok on every node".into(),
                    timeout,
                    log: infos.join("\n---\n"),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `redis-cli --cluster create … --cluster-replicas 0 --cluster-yes`, bounded by
    /// [`CLUSTER_TIMEOUT`]; its output goes to a file in the first node's directory, so no pipe can fill.
    fn create(&self) -> Result<(), RedisError> {
        let output_path = self.nodes[0].dir().join("cluster-create.out");
        let output = File::create(&output_path)?;
        let mut command = Command::new("redis-cli");
        command
            .arg("--cluster")
            .arg("create")
            .args(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output);
        let mut child = spawn_retrying_busy(&mut command).map_err(|source| RedisError::Spawn {
            program: "redis-cli".into(),
            source,
        })?;
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RedisError::Timeout {
                    what: "redis-cli --cluster create".into(),
                    timeout: CLUSTER_TIMEOUT,
                    log: std::fs::read_to_string(&output_path).unwrap_or_default(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if status.success() {
            Ok(())
        } else {
            Err(RedisError::ClusterCreate {
                status,
                output: std::fs::read_to_string(&output_path).unwrap_or_default(),
            })
        }
    }
}

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$n` bulk string; `None` for the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `*n` array; `None` for the null array.
    Array(Option<Vec<Resp>>),
}

impl Resp {
    /// A simple or bulk string as text.
    pub fn as_text(&self) -> Option<String> {
        match self {
            Resp::Simple(s) => Some(s.clone()),
            Resp::Bulk(Some(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        }
    }

    /// An integer reply.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Resp::Integer(n) => Some(*n),
            _ => None,
        }
    }
}

/// Sends one command to `addr` on a fresh connection and reads one reply.
pub fn command_at(addr: SocketAddr, args: &[&str]) -> Result<Resp, RedisError> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(COMMAND_TIMEOUT))?;
    stream.set_write_timeout(Some(COMMAND_TIMEOUT))?;
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    (&stream).write_all(&request)?;
    read_reply(&mut BufReader::new(stream))
}

fn read_reply(reader: &mut impl BufRead) -> Result<Resp, RedisError> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\r\n") {
        return Err(RedisError::Protocol(format!(
            "unterminated line {:?}",
            String::from_utf8_lossy(&line)
        )));
    }
    line.truncate(line.len() - 2);
    let (kind, rest) = line
        .split_first()
        .ok_or_else(|| RedisError::Protocol("empty line".into()))?;
    let rest = String::from_utf8_lossy(rest).into_owned();
    let number = || {
        rest.parse::<i64>()
            .map_err(|_| RedisError::Protocol(format!("bad length or integer {rest:?}")))
    };
    match kind {
        b'+' => Ok(Resp::Simple(rest)),
        b'-' => Ok(Resp::Error(rest)),
        b':' => Ok(Resp::Integer(number()?)),
        b'$' => {
            let Ok(len) = usize::try_from(number()?) else {
                return Ok(Resp::Bulk(None));
            };
            let mut bytes = vec![0; len + 2];
            reader.read_exact(&mut bytes)?;
            bytes.truncate(len);
            Ok(Resp::Bulk(Some(bytes)))
        }
        b'*' => {
            let Ok(len) = usize::try_from(number()?) else {
                return Ok(Resp::Array(None));
            };
            let items = (0..len)
                .map(|_| read_reply(reader))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Resp::Array(Some(items)))
        }
        other => Err(RedisError::Protocol(format!(
            "unknown reply type {:?}",
            *other as char
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_replies_parse() {
        let input = b"*4\r\n+OK\r\n:-3\r\n$5\r\nhe\r\no\r\n$-1\r\n";
        let reply = read_reply(&mut &input[..]).expect("valid RESP");
        assert_eq!(
            reply,
            Resp::Array(Some(vec![
                Resp::Simple("OK".into()),
                Resp::Integer(-3),
                Resp::Bulk(Some(b"he\r\no".to_vec())),
                Resp::Bulk(None),
            ]))
        );
        assert_eq!(
            read_reply(&mut &b"-ERR unknown\r\n"[..]).expect("valid RESP"),
            Resp::Error("ERR unknown".into())
        );
        assert!(read_reply(&mut &b"+OK"[..]).is_err());
    }
}
