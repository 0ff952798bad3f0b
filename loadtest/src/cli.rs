//! Command-line interface: one subcommand per scenario, sharing [`CommonArgs`].
//!
//! Every flag's doc comment is its `--help` text. Durations accept `10`, `10s`, `500ms` or `2m`.
//! The parsed arguments are turned into a [`crate::plan::Plan`] (what the workers do) and a
//! [`crate::publisher::PublishPlan`] (what the publisher does) by [`crate::scenario`].

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Load-test harness for Mercure hubs: drives subscribers and publishers over HTTP and reports
/// publish→receive latency, loss, throughput and what it cost the hub.
#[derive(Parser, Debug)]
#[command(name = "quicksilver-loadtest", version, about, max_term_width = 100)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The scenarios.
#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Every subscriber on one topic; the publisher sends `--rate` updates/s to it.
    Broadcast(BroadcastArgs),
    /// `--topics` topics; subscriber i follows topic i mod T (exactly or through a URI template).
    Topics(TopicsArgs),
    /// Collaborative documents: each of `--editors` editors per document subscribes to the
    /// document and publishes private updates to it; everyone must receive everything, own
    /// updates included.
    Collab(CollabArgs),
    /// Time to connect `--subscribers` subscribers and receive the preamble; then one update
    /// (or `--duration` of updates) checks that all of them are live.
    ConnectStorm(ConnectStormArgs),
    /// Connect, publish, then drop every connection (or SIGKILL `--kill-pid`) and resume everyone
    /// with `Last-Event-ID` while publishing goes on; reports the time until all caught up.
    ResumeStorm(ResumeStormArgs),
    /// A fraction of subscribers never read their socket; the others must see no loss and normal
    /// latency.
    SlowConsumers(SlowConsumersArgs),
    /// Internal: a worker process driven by its parent over stdin/stdout.
    #[command(hide = true)]
    Worker,
}

/// How subscribers present their JWT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum AuthMode {
    /// `Authorization: Bearer <jwt>` header.
    Header,
    /// `authorization=<jwt>` query parameter.
    Query,
    /// `mercureAuthorization=<jwt>` cookie.
    Cookie,
    /// No token (the hub must allow anonymous subscribers; private updates are not received).
    None,
}

/// Which protocol the hub under test speaks.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub(crate) enum HubKind {
    /// A Mercure hub (Quicksilver, the reference hub, …).
    #[default]
    Mercure,
    /// nchan (nginx): `--sub-url` and `--pub-url` are location prefixes (e.g.
    /// `http://127.0.0.1:8080/sub`, `…/pub`) to which each topic's channel name is appended; no
    /// tokens, no private updates (see `loadtest/nchan/`).
    Nchan,
}

/// Options shared by every scenario.
#[derive(Args, Debug, Clone)]
pub(crate) struct CommonArgs {
    /// Hub URL subscribers connect to; repeat to spread subscribers round-robin over nodes.
    #[arg(
        long = "sub-url",
        default_value = "http://127.0.0.1:3000/.well-known/mercure"
    )]
    pub(crate) sub_urls: Vec<String>,

    /// Hub URL updates are published to; repeat to spread publishing lanes over nodes (a lane
    /// moves to the next URL after a connection error). Defaults to the first `--sub-url`.
    #[arg(long = "pub-url")]
    pub(crate) pub_urls: Vec<String>,

    /// Protocol of the hub under test: `mercure`, or `nchan` for the nchan baseline.
    #[arg(long, value_enum, default_value = "mercure")]
    pub(crate) hub_kind: HubKind,

    /// Number of subscribers (default 100; computed for `collab`).
    #[arg(long, short = 's')]
    pub(crate) subscribers: Option<usize>,

    /// Updates per second, all lanes together, paced on a fixed schedule (default 10; `collab`
    /// uses `--editor-rate` instead).
    #[arg(long, short = 'r')]
    pub(crate) rate: Option<f64>,

    /// How long to publish after the warm-up (default 10s; 0 for `connect-storm`).
    #[arg(long, short = 'd', value_parser = parse_duration)]
    pub(crate) duration: Option<Duration>,

    /// Publishing time before measuring: those updates are checked for loss but their latency
    /// and throughput are not reported.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub(crate) warmup: Duration,

    /// After publishing ends, how long to wait for missing updates before counting them lost.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub(crate) drain_timeout: Duration,

    /// Time allowed for one subscriber to connect and receive the preamble.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub(crate) connect_timeout: Duration,

    /// Size of each update's `data` in bytes (the JSON header is padded up to it).
    #[arg(long, default_value_t = 100)]
    pub(crate) payload_bytes: usize,

    /// Sequential publishing lanes (each waits for its previous answer, so its order is the
    /// hub's order); raise it when one lane's round trip cannot keep up with `--rate`.
    #[arg(long, default_value_t = 1)]
    pub(crate) publishers: u32,

    /// JWT key: HMAC secret for HS*, or use `--jwt-private-key-file` for RS*/ES*.
    #[arg(long, env = "LOADTEST_JWT_KEY", hide_env_values = true)]
    pub(crate) jwt_key: Option<String>,

    /// JWT algorithm (HS256, HS384, HS512, RS256, RS384, RS512, ES256, ES384, PS256, EdDSA, …).
    #[arg(long, default_value = "HS256")]
    pub(crate) jwt_alg: String,

    /// PEM private key signing the JWTs (RS*, PS*, ES*, EdDSA).
    #[arg(long)]
    pub(crate) jwt_private_key_file: Option<PathBuf>,

    /// A ready-made JWT used for publishers and subscribers instead of minting one.
    #[arg(long, env = "LOADTEST_JWT", hide_env_values = true)]
    pub(crate) jwt: Option<String>,

    /// How subscribers send their token (publishers always use the header).
    #[arg(long, value_enum, default_value = "header")]
    pub(crate) auth: AuthMode,

    /// Give each subscriber a token of its own (with `sub`, `jti` and `iat`), as browsers of
    /// different users have, instead of one token shared by all (minted tokens only).
    #[arg(long)]
    pub(crate) token_per_subscriber: bool,

    /// Publish private updates (subscribers then need a token with a matching subscribe claim).
    #[arg(long)]
    pub(crate) private: bool,

    /// Subscribers opened per second, all processes together (0 = as fast as possible).
    #[arg(long, default_value_t = 2000.0)]
    pub(crate) connect_rate: f64,

    /// Local addresses subscriber sockets bind to, round-robin (e.g. 127.0.0.1,127.0.0.2): each
    /// source address has its own ~28k ephemeral ports.
    #[arg(long, value_delimiter = ',')]
    pub(crate) source_ips: Vec<IpAddr>,

    /// Write the full report as JSON to this file.
    #[arg(long)]
    pub(crate) json_out: Option<PathBuf>,

    /// Write an SVG chart (latency percentiles and deliveries per second over time).
    #[arg(long)]
    pub(crate) chart_out: Option<PathBuf>,

    /// PID of a hub process to measure (CPU seconds, RSS); repeat for several nodes.
    #[arg(long = "hub-pid")]
    pub(crate) hub_pids: Vec<u32>,

    /// Prometheus metrics URL scraped before and after the run; repeat for several nodes.
    #[arg(long = "metrics-url")]
    pub(crate) metrics_urls: Vec<String>,

    /// Worker processes driving the subscribers (one process holds < 20k sockets and one core).
    #[arg(long, default_value_t = 1)]
    pub(crate) processes: usize,

    /// Exit 0 despite connect or publish errors (loss still fails the run).
    #[arg(long)]
    pub(crate) tolerate_errors: bool,

    /// No progress line on stderr.
    #[arg(long, short = 'q')]
    pub(crate) quiet: bool,
}

#[derive(Args, Debug)]
pub(crate) struct BroadcastArgs {
    #[command(flatten)]
    pub(crate) common: CommonArgs,
}

/// How a subscriber of the `topics` scenario selects its topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum SelectorMode {
    /// The topic URL itself.
    Exact,
    /// A URI template matching only its topic (`https://example.com/t/7/{x}`).
    Template,
    /// One URI template matching every topic (`https://example.com/t/{k}/{x}`): each subscriber
    /// receives all updates.
    TemplateAll,
}

#[derive(Args, Debug)]
pub(crate) struct TopicsArgs {
    #[command(flatten)]
    pub(crate) common: CommonArgs,
    /// Number of topics.
    #[arg(long, default_value_t = 100)]
    pub(crate) topics: u32,
    /// How subscribers select their topic.
    #[arg(long, value_enum, default_value = "exact")]
    pub(crate) selector: SelectorMode,
}

#[derive(Args, Debug)]
pub(crate) struct CollabArgs {
    #[command(flatten)]
    pub(crate) common: CommonArgs,
    /// Number of documents.
    #[arg(long, default_value_t = 100)]
    pub(crate) documents: u32,
    /// Editors per document (each subscribes to it and publishes to it).
    #[arg(long, default_value_t = 5)]
    pub(crate) editors: u32,
    /// Updates per second each editor publishes.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) editor_rate: f64,
    /// Publish public updates instead of private ones.
    #[arg(long)]
    pub(crate) public: bool,
}

#[derive(Args, Debug)]
pub(crate) struct ConnectStormArgs {
    #[command(flatten)]
    pub(crate) common: CommonArgs,
}

#[derive(Args, Debug)]
pub(crate) struct ResumeStormArgs {
    #[command(flatten)]
    pub(crate) common: CommonArgs,
    /// When to drop the connections (or kill the hub), counted from the start of publishing
    /// (default: a third of warm-up + duration).
    #[arg(long, value_parser = parse_duration)]
    pub(crate) disconnect_after: Option<Duration>,
    /// Instead of dropping connections, SIGKILL this process (a hub node) at that moment; the
    /// subscribers notice by themselves and resume on `--resume-url`.
    #[arg(long)]
    pub(crate) kill_pid: Option<u32>,
    /// Where subscribers reconnect; repeat for several nodes (default: `--sub-url`).
    #[arg(long = "resume-url")]
    pub(crate) resume_urls: Vec<String>,
}

#[derive(Args, Debug)]
pub(crate) struct SlowConsumersArgs {
    #[command(flatten)]
    pub(crate) common: CommonArgs,
    /// Fraction of subscribers that never read their socket after the preamble.
    #[arg(long, default_value_t = 0.1)]
    pub(crate) slow_fraction: f64,
    /// Receive buffer of slow subscribers' sockets, bytes (small, so the hub feels them early).
    #[arg(long, default_value_t = 4096)]
    pub(crate) slow_recv_buffer: u32,
}

/// Parses `10`, `1.5`, `10s`, `500ms`, `2m`, `1h` into a duration.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (try 10s, 500ms, 2m)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "us" | "µs" => value / 1_000_000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown duration unit `{other}` in `{text}`")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "lt",
            "broadcast",
            "--subscribers",
            "1000",
            "--rate",
            "100",
            "--duration",
            "10",
            "--sub-url",
            "http://127.0.0.1:1/.well-known/mercure",
            "--sub-url",
            "http://127.0.0.1:2/.well-known/mercure",
            "--source-ips",
            "127.0.0.1,127.0.0.2",
        ])
        .unwrap();
        let Command::Broadcast(b) = cli.command else {
            panic!("not broadcast")
        };
        assert_eq!(b.common.subscribers, Some(1000));
        assert_eq!(b.common.sub_urls.len(), 2);
        assert_eq!(b.common.source_ips.len(), 2);
    }
}
