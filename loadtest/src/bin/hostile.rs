//! `quicksilver-hostile`: hostile clients for `scripts/hostile.sh`, and the normal subscriber that
//! measures what they cost everyone else.
//!
//! `attack` opens `--connections` connections of one kind against a hub and holds them for
//! `--hold` seconds (several processes share an attack: one process may hold only so many
//! sockets), then prints one JSON line of what the hub answered. `probe` subscribes to a topic of
//! its own, publishes to it at `--rate` per second for `--duration` seconds and prints one JSON line
//! with the publish-to-receive latency (p50, p99) and the updates lost. Both speak HTTP over plain
//! TCP by hand: what they send is exactly what the attack is.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

#[derive(Parser)]
#[command(
    name = "quicksilver-hostile",
    about = "Hostile clients and a latency probe for one hub"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Opens hostile connections and holds them.
    Attack {
        /// The kind of attack.
        #[arg(long, value_enum)]
        kind: Kind,
        /// The hub's address (host:port).
        #[arg(long)]
        addr: SocketAddr,
        /// Connections (or, for `methods`, requests) this process makes.
        #[arg(long)]
        connections: usize,
        /// Seconds the connections are held before the process leaves.
        #[arg(long, default_value_t = 30)]
        hold: u64,
        /// Connections opened at once.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// Offset of this process's connections (distinct selectors across processes).
        #[arg(long, default_value_t = 0)]
        first: usize,
        /// Local address to connect from (e.g. `127.0.0.12`), so several processes spread over
        /// more ephemeral ports.
        #[arg(long)]
        source: Option<std::net::IpAddr>,
    },
    /// Prints a publisher token (HS256, every topic) for scripts.
    Token {
        /// The publishers' JWT key (HS256).
        #[arg(long)]
        jwt_key: String,
    },
    /// Subscribes, publishes to itself and reports latency and loss.
    Probe {
        /// The hub's address (host:port).
        #[arg(long)]
        addr: SocketAddr,
        /// The publishers' JWT key (HS256).
        #[arg(long)]
        jwt_key: String,
        /// Updates per second.
        #[arg(long, default_value_t = 10)]
        rate: u64,
        /// Seconds of publishing.
        #[arg(long, default_value_t = 20)]
        duration: u64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    /// A request with a made-up method each.
    Methods,
    /// HTTP/2 (prior knowledge) connections: one request each, then idle.
    H2Idle,
    /// Subscribers that hold their stream (and read it).
    Subscribers,
    /// Subscribers with 100 distinct URI templates each.
    Templates,
    /// Resuming subscribers (from `earliest`) that never read, with a small receive buffer.
    StalledResume,
    /// Connections that pipeline 200 requests for the debug page and never read the answers.
    Pipelining,
    /// Connections that send nothing.
    Silent,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Attack {
            kind,
            addr,
            connections,
            hold,
            concurrency,
            first,
            source,
        } => attack(kind, addr, connections, hold, concurrency, first, source).await,
        Command::Probe {
            addr,
            jwt_key,
            rate,
            duration,
        } => probe(addr, &jwt_key, rate, duration).await,
        Command::Token { jwt_key } => {
            println!("{}", publisher_token(&jwt_key)?);
            Ok(())
        }
    }
}

/// What the hub answered the attack's connections.
#[derive(Default)]
struct Tally {
    opened: AtomicU64,
    connect_failed: AtomicU64,
    status_2xx: AtomicU64,
    status_4xx: AtomicU64,
    status_429: AtomicU64,
    status_503: AtomicU64,
    closed_by_hub: AtomicU64,
}

impl Tally {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn status(&self, status: u16) {
        match status {
            200..=299 => Self::bump(&self.status_2xx),
            429 => Self::bump(&self.status_429),
            503 => Self::bump(&self.status_503),
            400..=499 => Self::bump(&self.status_4xx),
            _ => {}
        }
    }

    fn json(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "{{\"opened\":{},\"connect_failed\":{},\"2xx\":{},\"4xx\":{},\"429\":{},\"503\":{},\"closed_by_hub\":{}}}",
            get(&self.opened),
            get(&self.connect_failed),
            get(&self.status_2xx),
            get(&self.status_4xx),
            get(&self.status_429),
            get(&self.status_503),
            get(&self.closed_by_hub),
        )
    }
}

async fn attack(
    kind: Kind,
    addr: SocketAddr,
    connections: usize,
    hold: u64,
    concurrency: usize,
    first: usize,
    source: Option<std::net::IpAddr>,
) -> anyhow::Result<()> {
    let tally = Arc::new(Tally::default());
    let until = Instant::now() + Duration::from_secs(hold);
    let gate = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..connections {
        let permit = gate.clone().acquire_owned().await?;
        let tally = tally.clone();
        tasks.spawn(async move {
            one(kind, addr, source, first + i, &tally, until, permit).await;
        });
    }
    while tasks.join_next().await.is_some() {}
    println!("{}", tally.json());
    Ok(())
}

/// One hostile connection: opened, its request sent, its answer's status read (when one is
/// expected), then held until `until` or until the hub closes it. `permit` bounds connections
/// being opened at once and is released once this one is established.
async fn one(
    kind: Kind,
    addr: SocketAddr,
    source: Option<std::net::IpAddr>,
    i: usize,
    tally: &Tally,
    until: Instant,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let small_buffer = matches!(kind, Kind::StalledResume | Kind::Pipelining);
    let stream = match connect(addr, source, small_buffer).await {
        Ok(s) => s,
        Err(_) => {
            Tally::bump(&tally.connect_failed);
            return;
        }
    };
    Tally::bump(&tally.opened);
    let mut stream = stream;
    let request: Vec<u8> = match kind {
        Kind::Methods => {
            format!("X{i:06} /.well-known/mercure HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .into_bytes()
        }
        Kind::H2Idle => h2_request(),
        Kind::Subscribers => {
            b"GET /.well-known/mercure?topic=hostile HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()
        }
        Kind::Templates => {
            let query: Vec<String> = (0..100)
                .map(|j| format!("topic=https%3A%2F%2Fexample.com%2F{i}%2F{j}%2F%7Bid%7D"))
                .collect();
            format!(
                "GET /.well-known/mercure?{} HTTP/1.1\r\nHost: x\r\n\r\n",
                query.join("&")
            )
            .into_bytes()
        }
        Kind::StalledResume => b"GET /.well-known/mercure?topic=history&lastEventID=earliest HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        // The debug page is about 5 KB: 200 answers fill the sockets' buffers.
        Kind::Pipelining => "GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(200).into_bytes(),
        Kind::Silent => Vec::new(),
    };
    if !request.is_empty()
        && tokio::time::timeout(Duration::from_secs(10), stream.write_all(&request))
            .await
            .map_or(true, |r| r.is_err())
    {
        Tally::bump(&tally.closed_by_hub);
        return;
    }
    let reads_status = matches!(
        kind,
        Kind::Methods | Kind::Subscribers | Kind::Templates | Kind::StalledResume
    );
    if reads_status {
        let mut head = [0u8; 12];
        match tokio::time::timeout(Duration::from_secs(30), stream.read_exact(&mut head)).await {
            Ok(Ok(_)) => {
                let status = std::str::from_utf8(&head[9..12])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                tally.status(status);
            }
            _ => {
                Tally::bump(&tally.closed_by_hub);
                return;
            }
        }
    }
    drop(permit);
    if matches!(kind, Kind::Methods) {
        return;
    }
    // Held: read (for kinds that read) or not, until the hub closes it or the hold ends.
    let reads = matches!(
        kind,
        Kind::Subscribers | Kind::Templates | Kind::H2Idle | Kind::Silent
    );
    let left = until.saturating_duration_since(Instant::now());
    let closed = tokio::time::timeout(left, async {
        if reads {
            let mut buf = vec![0u8; 4096];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        } else {
            // A client that never reads learns of the hub's close only when a write fails, so it
            // writes an empty line now and then (the hub takes it as the start of a next request).
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if stream.write_all(b"\r\n").await.is_err() {
                    return;
                }
            }
        }
    })
    .await
    .is_ok();
    if closed {
        Tally::bump(&tally.closed_by_hub);
    }
}

async fn connect(
    addr: SocketAddr,
    source: Option<std::net::IpAddr>,
    small_buffer: bool,
) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    if small_buffer {
        socket.set_recv_buffer_size(4096)?;
    }
    tokio::time::timeout(Duration::from_secs(30), socket.connect(addr))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// The client preface, an empty SETTINGS frame and one `GET /healthz` request (HEADERS with
/// END_STREAM), HPACK-encoded from the static table.
fn h2_request() -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    // :method GET, :scheme http, :path /healthz (literal, indexed name 4), :authority x.
    let mut block = vec![0x82, 0x86, 0x04, 8];
    block.extend_from_slice(b"/healthz");
    block.extend_from_slice(&[0x01, 1, b'x']);
    let len = block.len();
    out.extend_from_slice(&[0, 0, len as u8, 1, 0x05, 0, 0, 0, 1]);
    out.extend_from_slice(&block);
    out
}

/// Sends one publish on a kept-alive connection and reads its answer; whether it was `200`.
async fn publish_on(stream: &mut TcpStream, request: &str) -> anyhow::Result<bool> {
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(512);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            anyhow::bail!("closed");
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    if head.contains("connection: close") {
        anyhow::bail!("closed after this answer");
    }
    Ok(head.starts_with("http/1.1 200"))
}

/// A token allowing to publish to every topic.
fn publisher_token(jwt_key: &str) -> anyhow::Result<String> {
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"mercure": {"publish": ["*"]}}),
        &jsonwebtoken::EncodingKey::from_secret(jwt_key.as_bytes()),
    )?)
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

async fn probe(addr: SocketAddr, jwt_key: &str, rate: u64, duration: u64) -> anyhow::Result<()> {
    let topic = format!("probe-{}", std::process::id());
    let mut sub = TcpStream::connect(addr).await.context("subscribe")?;
    sub.write_all(
        format!("GET /.well-known/mercure?topic={topic} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
    .await?;
    let token = publisher_token(jwt_key)?;
    let latencies = Arc::new(samples::Samples::default());
    let received = Arc::new(AtomicU64::new(0));
    let reader = {
        let latencies = latencies.clone();
        let received = received.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut carry = String::new();
            while let Ok(n) = sub.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                carry.push_str(&String::from_utf8_lossy(&buf[..n]));
                while let Some(at) = carry.find("data: t=") {
                    let rest = &carry[at + 8..];
                    let Some(end) = rest.find('\n') else { break };
                    if let Ok(sent) = rest[..end].trim().parse::<u64>() {
                        latencies.push(now_micros().saturating_sub(sent));
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    carry = rest[end..].to_string();
                }
            }
        })
    };
    // Let the subscription settle before the first publish.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // One kept-alive publishing connection, opened before any attack, so a node holding its
    // maximum of connections still takes the probe's updates.
    let mut publisher = TcpStream::connect(addr).await.context("publisher")?;
    let mut published = 0u64;
    let mut failed = 0u64;
    let period = Duration::from_micros(1_000_000 / rate.max(1));
    let mut tick = tokio::time::interval(period);
    let end = Instant::now() + Duration::from_secs(duration);
    while Instant::now() < end {
        tick.tick().await;
        let body = format!("topic={topic}&data=t%3D{}", now_micros());
        let request = format!(
            "POST /.well-known/mercure HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        match tokio::time::timeout(
            Duration::from_secs(10),
            publish_on(&mut publisher, &request),
        )
        .await
        {
            Ok(Ok(true)) => published += 1,
            Ok(Ok(false)) => failed += 1,
            _ => {
                failed += 1;
                // The connection is lost: open another (it may be refused while the node is full).
                if let Ok(Ok(s)) =
                    tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await
                {
                    publisher = s;
                }
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    reader.abort();
    let received = received.load(Ordering::Relaxed);
    let (p50, p99) = latencies.percentiles();
    println!(
        "{{\"published\":{published},\"publish_failed\":{failed},\"received\":{received},\"lost\":{},\"p50_ms\":{:.2},\"p99_ms\":{:.2}}}",
        published.saturating_sub(received),
        p50 as f64 / 1000.0,
        p99 as f64 / 1000.0
    );
    Ok(())
}

mod samples {
    //! Latency samples behind a std mutex (the probe takes a few hundred).

    use std::sync::Mutex;

    #[derive(Default)]
    pub(crate) struct Samples(Mutex<Vec<u64>>);

    impl Samples {
        pub(crate) fn push(&self, micros: u64) {
            if let Ok(mut v) = self.0.lock() {
                v.push(micros);
            }
        }

        /// p50 and p99 in microseconds (0 without samples).
        pub(crate) fn percentiles(&self) -> (u64, u64) {
            let Ok(mut v) = self.0.lock() else {
                return (0, 0);
            };
            if v.is_empty() {
                return (0, 0);
            }
            v.sort_unstable();
            let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
            (at(0.5), at(0.99))
        }
    }
}
