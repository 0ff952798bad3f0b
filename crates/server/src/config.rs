//! The hub's configuration: one struct, read from command-line flags and environment variables.
//!
//! Each field's doc comment is its `--help` text. Names follow the reference hub where it has one
//! (`MERCURE_PUBLISHER_JWT_KEY`, …) so existing deployments keep their environment; settings of our
//! own use the `QUICKSILVER_` prefix. A flag beats its environment variable, which beats the file
//! (`--config`), which beats the default.
//!
//! - `config/file.rs`: the TOML configuration file, turned into the flags it stands for.
//! - `config/issuer.rs`: the `--issuer` mini-language ([`IssuerSpec`]).

mod file;
mod issuer;

pub use issuer::IssuerSpec;

use std::net::SocketAddr;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};

/// Quicksilver: a horizontally scalable Mercure hub.
#[derive(Parser, Clone, Debug)]
#[command(name = "quicksilver", version, about, max_term_width = 100)]
pub struct Config {
    /// Address to listen on (`127.0.0.1:0` picks a free port and prints it).
    #[arg(long, env = "QUICKSILVER_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,

    /// A TOML file of settings (keys are the flag names); flags and environment variables win over it.
    #[arg(long, env = "QUICKSILVER_CONFIG")]
    pub config: Option<std::path::PathBuf>,

    /// Where updates are stored and shared: `memory` (a single node) or `redis` (any number of nodes
    /// sharing Redis Streams).
    #[arg(long, env = "QUICKSILVER_TRANSPORT", value_enum, default_value_t = TransportKind::Memory)]
    pub transport: TransportKind,

    /// Redis URL (`redis://[user:password@]host:port[/db]`, `rediss://` for TLS); for Redis Cluster,
    /// one or more masters separated by commas.
    #[arg(
        long,
        env = "QUICKSILVER_REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub redis_url: Vec<String>,

    /// PEM file of the certificate authorities that sign the Redis server's TLS certificate, for
    /// `rediss://` URLs (default: the system's trusted roots). To skip verification instead (never
    /// in production), end the URL with `#insecure`.
    #[arg(long, env = "QUICKSILVER_REDIS_TLS_CA")]
    pub redis_tls_ca: Option<std::path::PathBuf>,

    /// Speak the Redis Cluster protocol (implied by several `--redis-url`s).
    #[arg(long, env = "QUICKSILVER_REDIS_CLUSTER", default_value_t = false)]
    pub redis_cluster: bool,

    /// Number of streams updates are spread over by topic (Redis Cluster: spreads load over
    /// masters; order is kept per topic).
    #[arg(long, env = "QUICKSILVER_REDIS_PARTITIONS", default_value_t = 1)]
    pub redis_partitions: u16,

    /// Prefix of every Redis key the hub writes.
    #[arg(
        long,
        env = "QUICKSILVER_REDIS_KEY_PREFIX",
        default_value = "quicksilver"
    )]
    pub redis_key_prefix: String,

    /// Redis connections for publishing and history reads (each multiplexed); readers have their own.
    #[arg(long, env = "QUICKSILVER_REDIS_POOL_SIZE", default_value_t = 4)]
    pub redis_pool_size: usize,

    /// Upper bound on one Redis command; a hung Redis gives an error (503) after this, not a hang.
    #[arg(long, env = "QUICKSILVER_REDIS_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub redis_timeout: Duration,

    /// Partitioned mode: how far before a resume point the other partitions are replayed from;
    /// must exceed the clock difference between Redis masters.
    #[arg(long, env = "QUICKSILVER_REDIS_RESUME_MARGIN", default_value = "5s", value_parser = parse_duration)]
    pub redis_resume_margin: Duration,

    /// When a topic's updates follow each other within this window, a Redis reader hands them to
    /// local subscribers at most once per window, one write per subscriber; other updates pass at
    /// once (`0`: off; at most 1s).
    #[arg(long, env = "QUICKSILVER_REDIS_BATCH_WINDOW", default_value = "1ms", value_parser = parse_duration)]
    pub redis_batch_window: Duration,

    /// The most bytes one Redis read asks for: reads ask for at most this divided by the largest
    /// possible entry (about `--max-body-size`) entries, at least 1 and at most 512, so a reply stays
    /// bounded however large updates are.
    #[arg(long, env = "QUICKSILVER_REDIS_READ_BUDGET", default_value_t = 16 * 1024 * 1024)]
    pub redis_read_budget: usize,

    /// History lookups that may talk to Redis at once (scans of retained history for resuming
    /// subscribers, catch-up checks of unknown ids); others wait up to `--redis-timeout`, then get
    /// 503.
    #[arg(long, env = "QUICKSILVER_REDIS_MAX_HISTORY_SCANS", default_value_t = 8)]
    pub redis_max_history_scans: usize,

    /// Also drop history older than this (`0`: keep by count only).
    #[arg(long, env = "QUICKSILVER_HISTORY_MAX_AGE", default_value = "0", value_parser = parse_duration)]
    pub history_max_age: Duration,

    /// Subscription events (`--subscriptions`) kept for reconnecting subscribers, apart from the
    /// `--history-size` real updates they never push out.
    #[arg(
        long,
        env = "QUICKSILVER_SUBSCRIPTION_EVENT_HISTORY",
        default_value_t = 10_000
    )]
    pub subscription_event_history: usize,

    /// Subscription events (`--subscriptions`) this node publishes per second at most, ends
    /// included (a new subscription is charged for both of its events); beyond it new
    /// subscriptions wait, and are refused (`503`) when they would wait more than 10 s (`0`: no
    /// limit).
    #[arg(
        long,
        env = "QUICKSILVER_SUBSCRIPTION_EVENT_RATE",
        default_value_t = 2000
    )]
    pub subscription_event_rate: u32,

    /// The most bytes of history a node keeps in memory per Redis stream, and reads for one
    /// reconnecting subscriber: large updates are kept and replayed in fewer numbers (the
    /// subscriber is told `earliest` when its resume point is past them).
    #[arg(long, env = "QUICKSILVER_HISTORY_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub history_max_bytes: usize,

    /// Updates each node keeps in memory per stream to answer reconnections without asking Redis
    /// (default: the history size, at most 100000).
    #[arg(long, env = "QUICKSILVER_HISTORY_CACHE_SIZE")]
    pub history_cache_size: Option<usize>,

    /// Key verifying publishers' JWTs (HMAC secret, or PEM public key for RS*/ES*/PS*/EdDSA).
    #[arg(
        long,
        env = "MERCURE_PUBLISHER_JWT_KEY",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    pub publisher_jwt_key: Option<String>,

    /// Algorithm of publishers' JWTs.
    #[arg(long, env = "MERCURE_PUBLISHER_JWT_ALG", default_value = "HS256")]
    pub publisher_jwt_alg: String,

    /// Key verifying subscribers' JWTs (HMAC secret, or PEM public key).
    #[arg(
        long,
        env = "MERCURE_SUBSCRIBER_JWT_KEY",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    pub subscriber_jwt_key: Option<String>,

    /// Algorithm of subscribers' JWTs.
    #[arg(long, env = "MERCURE_SUBSCRIBER_JWT_ALG", default_value = "HS256")]
    pub subscriber_jwt_alg: String,

    /// Key used for both publishers and subscribers when their own key is not set.
    #[arg(
        long,
        env = "MERCURE_JWT_KEY",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    pub jwt_key: Option<String>,

    /// Algorithm used with `--jwt-key`.
    #[arg(long, env = "MERCURE_JWT_ALG", default_value = "HS256")]
    pub jwt_alg: String,

    /// Allow subscribers without a token (they receive public updates only).
    #[arg(long, env = "QUICKSILVER_ANONYMOUS", default_value_t = false)]
    pub anonymous: bool,

    /// Origins allowed to use the hub from browsers (CORS), separated by spaces or commas; `*` for
    /// any origin (then without credentials).
    #[arg(long, env = "QUICKSILVER_CORS_ORIGINS", value_delimiter = ',', num_args = 0..)]
    pub cors_origins: Vec<String>,

    /// Origins allowed to publish with the authorization cookie (CSRF protection), separated by
    /// spaces or commas; `*` for any; `https://*.example.com` wildcards accepted.
    #[arg(long, env = "QUICKSILVER_PUBLISH_ORIGINS", value_delimiter = ',', num_args = 0..)]
    pub publish_origins: Vec<String>,

    /// Name of the cookie carrying the subscriber's or publisher's JWT.
    #[arg(
        long,
        env = "QUICKSILVER_COOKIE_NAME",
        default_value = "mercureAuthorization"
    )]
    pub cookie_name: String,

    /// Name of the cookie carrying a current-generation access token (also accepted: a legacy token).
    /// The `__Secure-` prefix makes browsers refuse the cookie over plain HTTP: use another name for
    /// local development without TLS.
    #[arg(
        long,
        env = "QUICKSILVER_ACCESS_TOKEN_COOKIE",
        default_value = "__Secure-mercure_access_token"
    )]
    pub access_token_cookie: String,

    /// Trusted issuer of current-generation access tokens (`typ: at+jwt`): the `iss` value its
    /// tokens carry. Alone, it is verified with the publisher and subscriber keys above; `ID
    /// jwks_uri=URL` binds it to a JWK Set instead (`https://`, `http://` or `file://`, refreshed
    /// every `--jwks-refresh`), and a trailing `authorization_server` advertises it in the protected
    /// resource metadata; `alg=NAME` (repeatable) sets the accepted algorithms. Repeat the flag, or
    /// separate issuers with commas.
    #[arg(
        long = "issuer",
        env = "MERCURE_TRUSTED_ISSUERS",
        value_delimiter = ','
    )]
    pub issuers: Vec<String>,

    /// The hub's resource identifier: the audience (`aud`) access tokens must name. Unset, it is
    /// derived from each request as `SCHEME://HOST/.well-known/mercure` (`X-Forwarded-Proto` /
    /// `X-Forwarded-Host` honoured from `--trusted-proxies` only), within `--public-url`.
    #[arg(long, env = "MERCURE_RESOURCE_IDENTIFIER")]
    pub resource_identifier: Option<String>,

    /// The origins the hub is reached at (`https://hub.example.com`, repeatable or
    /// comma-separated): a request for any other origin (its `Host`, or what a trusted proxy
    /// forwards) is answered 421, so a token minted for another hub of the same issuer is never
    /// accepted here. Unset, every origin is served.
    #[arg(long, env = "QUICKSILVER_PUBLIC_URL", value_delimiter = ',', num_args = 0.., value_parser = crate::auth::parse_public_url)]
    pub public_url: Vec<String>,

    /// Accept the pre-standardization generation too: tokens with the `mercure` claim, the
    /// `authorization` query parameter and the `--cookie-name` cookie. `false` leaves a hub that
    /// follows the current specification only.
    #[arg(long, env = "QUICKSILVER_LEGACY", default_value_t = true, action = clap::ArgAction::Set)]
    pub legacy: bool,

    /// How often JWK Sets of `--issuer … jwks_uri=` are fetched again (key rotation); a token
    /// naming an unknown `kid` also triggers a fetch, at most every 10 s.
    #[arg(long, env = "QUICKSILVER_JWKS_REFRESH", default_value = "5m", value_parser = parse_duration)]
    pub jwks_refresh: Duration,

    /// Publish subscription events (private updates on
    /// `/.well-known/mercure/subscriptions/...`) and serve the subscription API, for the whole
    /// cluster.
    #[arg(long, env = "QUICKSILVER_SUBSCRIPTIONS", default_value_t = false)]
    pub subscriptions: bool,

    /// Time after which a node that stopped renewing its lease (it died) is considered gone: its
    /// subscriptions are removed from the cluster registry and their `active: false` events
    /// published by another node.
    #[arg(long, env = "QUICKSILVER_SUBSCRIPTION_LEASE", default_value = "15s", value_parser = parse_duration)]
    pub subscription_lease: Duration,

    /// Subscriptions one response of the subscription API lists at most; a longer list is served
    /// in pages, each with a `Link: <…?after=ID>; rel="next"` header to the next.
    #[arg(
        long,
        env = "QUICKSILVER_SUBSCRIPTIONS_PAGE_SIZE",
        default_value_t = 1000
    )]
    pub subscriptions_page_size: usize,

    /// Serve the debug page at `/` (subscribe and publish from a browser with a pasted token; it
    /// holds no secret and exposes nothing the hub's API does not).
    #[arg(long, env = "QUICKSILVER_DEBUG_PAGE", default_value_t = true, action = clap::ArgAction::Set)]
    pub debug_page: bool,

    /// Number of updates kept for reconnecting subscribers (0 disables history).
    #[arg(long, env = "QUICKSILVER_HISTORY_SIZE", default_value_t = 1000)]
    pub history_size: usize,

    /// Interval of heartbeat comments on idle streams (`0` disables).
    #[arg(long, env = "QUICKSILVER_HEARTBEAT", default_value = "40s", value_parser = parse_duration)]
    pub heartbeat: Duration,

    /// Maximum life of a subscriber connection, after which the client reconnects with its last
    /// event id; up to 10% is taken off at random so reconnections spread (`0` disables).
    #[arg(long, env = "QUICKSILVER_WRITE_TIMEOUT", default_value = "600s", value_parser = parse_duration)]
    pub write_timeout: Duration,

    /// On SIGTERM: how long the node takes to close its subscriber streams, spread evenly so the
    /// clients' reconnections do not hit the other nodes all at once.
    #[arg(long, env = "QUICKSILVER_DRAIN_WINDOW", default_value = "30s", value_parser = parse_duration)]
    pub drain_window: Duration,

    /// Reconnection delay sent to clients (`retry:`) when the node closes their stream to drain.
    #[arg(long, env = "QUICKSILVER_DRAIN_RETRY", default_value = "1s", value_parser = parse_duration)]
    pub drain_retry: Duration,

    /// A subscriber whose queued updates have waited longer than this (its connection stopped
    /// draining) is disconnected; it reconnects with its last event id (`0` disables).
    #[arg(long, env = "QUICKSILVER_DISPATCH_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub dispatch_timeout: Duration,

    /// Updates a subscriber may have queued before it is cut off as too slow.
    #[arg(long, env = "QUICKSILVER_SUBSCRIBER_QUEUE", default_value_t = 1024)]
    pub subscriber_queue: usize,

    /// Memory the node's compiled topic selectors (URI templates, URL patterns) may take, in
    /// bytes; each distinct selector is compiled once and shared by every subscriber that sends
    /// it. A subscription that would take them past this is refused with 503.
    #[arg(long, env = "QUICKSILVER_MAX_SELECTOR_MEMORY", default_value_t = 64 * 1024 * 1024)]
    pub max_selector_memory: usize,

    /// Memory one subscription's own compiled selectors (those no one else on the node holds) may
    /// take, in bytes; more is refused with 413.
    #[arg(long, env = "QUICKSILVER_MAX_SUBSCRIPTION_SELECTOR_MEMORY", default_value_t = 1024 * 1024)]
    pub max_subscription_selector_memory: usize,

    /// Bytes of replay batches (history frames joined into one write for a resuming subscriber)
    /// the node holds at once; beyond it, replays send frames one at a time, uncopied.
    #[arg(long, env = "QUICKSILVER_MAX_REPLAY_BUFFER", default_value_t = 64 * 1024 * 1024)]
    pub max_replay_buffer: usize,

    /// Number of fan-out shards (default: the number of CPU cores).
    #[arg(long, env = "QUICKSILVER_SHARDS")]
    pub shards: Option<usize>,

    /// Maximum number of TCP connections on this node's listener; more are answered at once with
    /// 503 and `Retry-After` so the load balancer sends them elsewhere (`0`: 95% of the process's
    /// open-file limit).
    #[arg(long, env = "QUICKSILVER_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,

    /// Maximum number of subscribers on this node, a subset of the connections; more are refused
    /// with 503 (`0`: as many as `--max-connections`).
    #[arg(long, env = "QUICKSILVER_MAX_SUBSCRIBERS", default_value_t = 0)]
    pub max_subscribers: usize,

    /// Maximum number of connections one client address may hold (through `--trusted-proxies`:
    /// subscriber streams of the address they forward); more are answered 429 (`0`: no limit).
    #[arg(
        long,
        env = "QUICKSILVER_MAX_CONNECTIONS_PER_CLIENT",
        default_value_t = 0
    )]
    pub max_connections_per_client: usize,

    /// Proxies (addresses or networks, e.g. `10.0.0.0/8`) whose `X-Forwarded-For`, `-Host` and
    /// `-Proto` headers are believed; from any other peer they are ignored.
    #[arg(long, env = "QUICKSILVER_TRUSTED_PROXIES", value_delimiter = ',', num_args = 0.., value_parser = crate::client::parse_network)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// A connection without a request in progress (an HTTP/2 connection without open streams, an
    /// idle kept-alive HTTP/1.1 one) is closed after this (`0`: never).
    #[arg(long, env = "QUICKSILVER_IDLE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Streams one HTTP/2 connection may have open at once.
    #[arg(long, env = "QUICKSILVER_HTTP2_MAX_STREAMS", default_value_t = 100)]
    pub http2_max_streams: u32,

    /// Interval of HTTP/2 keep-alive pings; a connection that leaves one unanswered this long is
    /// closed (`0`: no pings).
    #[arg(long, env = "QUICKSILVER_HTTP2_KEEP_ALIVE", default_value = "20s", value_parser = parse_duration)]
    pub http2_keep_alive: Duration,

    /// Time a client has to send a complete request head after connecting (or, on a kept-alive
    /// connection, after the previous response); slower connections are closed, so clients
    /// trickling their headers (slowloris) cannot hold sockets. `0` disables.
    #[arg(long, env = "QUICKSILVER_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// Also serve `/metrics` on this separate address (e.g. `0.0.0.0:9090`), besides the main one.
    #[arg(long, env = "QUICKSILVER_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Maximum size of a publish request body, in bytes.
    #[arg(long, env = "QUICKSILVER_MAX_BODY_SIZE", default_value_t = 1024 * 1024)]
    pub max_body_size: usize,

    /// Maximum number of topics in one update.
    #[arg(long, env = "QUICKSILVER_MAX_TOPICS_PER_UPDATE", default_value_t = 100)]
    pub max_topics_per_update: usize,

    /// Maximum number of topic selectors in one subscription.
    #[arg(long, env = "QUICKSILVER_MAX_SELECTORS", default_value_t = 100)]
    pub max_selectors: usize,

    /// Maximum length of a topic, topic selector, id or type, in bytes.
    #[arg(long, env = "QUICKSILVER_MAX_SELECTOR_LENGTH", default_value_t = 2048)]
    pub max_selector_length: usize,

    /// Log format.
    #[arg(long, env = "QUICKSILVER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// Log filter (`info`, `debug`, `quicksilver_server=debug,info`, …).
    #[arg(long, env = "QUICKSILVER_LOG", default_value = "info")]
    pub log: String,
}

/// Which transport stores and shares updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TransportKind {
    /// In-memory, single node (the embedded default).
    Memory,
    /// Redis Streams, shared by every node.
    Redis,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

impl Config {
    /// Parses a configuration from arguments (the first one is the program name), reading
    /// environment variables for flags not given.
    ///
    /// With `--config FILE` (or `QUICKSILVER_CONFIG`), settings are also read from that TOML file,
    /// whose keys are the flag names (`history_size = 5000` or `history-size = 5000`). Precedence:
    /// a flag beats its environment variable, which beats the file, which beats the default. An
    /// unknown key or a bad value in the file refuses the whole configuration, naming the key.
    pub fn from_args<I, T>(args: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let matches = Self::command().try_get_matches_from(&args)?;
        let mut config = match matches.get_one::<std::path::PathBuf>("config") {
            Some(path) => {
                let from_file = file::args(path, &matches)?;
                let mut merged = Vec::with_capacity(args.len() + from_file.len());
                merged.extend(args.first().cloned());
                merged.extend(from_file.into_iter().map(Into::into));
                merged.extend(args.iter().skip(1).cloned());
                Self::try_parse_from(merged).map_err(|e| ConfigError::File {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?
            }
            None => Self::from_arg_matches(&matches)?,
        };
        config.cors_origins = split_list(&config.cors_origins);
        config.publish_origins = split_list(&config.publish_origins);
        config.redis_url = split_list(&config.redis_url);
        Ok(config)
    }

    /// The publisher key and algorithm, falling back to `--jwt-key`.
    pub fn publisher_key(&self) -> Option<(&str, &str)> {
        match &self.publisher_jwt_key {
            Some(k) => Some((k.as_str(), self.publisher_jwt_alg.as_str())),
            None => self.jwt_key.as_deref().map(|k| (k, self.jwt_alg.as_str())),
        }
    }

    /// The subscriber key and algorithm, falling back to `--jwt-key`.
    pub fn subscriber_key(&self) -> Option<(&str, &str)> {
        match &self.subscriber_jwt_key {
            Some(k) => Some((k.as_str(), self.subscriber_jwt_alg.as_str())),
            None => self.jwt_key.as_deref().map(|k| (k, self.jwt_alg.as_str())),
        }
    }
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A bad flag or environment variable (clap's message, with usage).
    #[error(transparent)]
    Cli(#[from] clap::Error),
    /// A bad configuration file.
    #[error("configuration file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong, naming the key.
        reason: String,
    },
}

impl ConfigError {
    /// Prints the error and exits (clap's exit codes and formatting for flag errors).
    pub fn exit(self) -> ! {
        match self {
            ConfigError::Cli(e) => e.exit(),
            ConfigError::File { .. } => {
                eprintln!("error: {self}");
                std::process::exit(2)
            }
        }
    }
}

/// Splits list values given as one space- or comma-separated string (as environment variables are).
fn split_list(values: &[String]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split([' ', ',']))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parses `40s`, `10m`, `1h 30m`, `250ms`, or a bare number of seconds; `0` is zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = Config::from_args(["quicksilver"]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:3000");
        assert_eq!(c.heartbeat, Duration::from_secs(40));
        assert_eq!(c.write_timeout, Duration::from_secs(600));
        assert_eq!(c.history_size, 1000);
        assert_eq!(c.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.redis_tls_ca, None);
        assert_eq!(c.cookie_name, "mercureAuthorization");
        assert!(!c.anonymous);
        assert!(c.legacy && c.issuers.is_empty() && !c.subscriptions && c.debug_page);
        assert_eq!(c.access_token_cookie, "__Secure-mercure_access_token");
    }

    #[test]
    fn pem_keys_can_be_flag_values() {
        let pem = "-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----";
        let c = Config::from_args(["quicksilver", "--jwt-key", pem, "--jwt-alg", "RS256"]).unwrap();
        assert_eq!(c.publisher_key(), Some((pem, "RS256")));
    }

    #[test]
    fn lists_and_durations() {
        let c = Config::from_args([
            "quicksilver",
            "--cors-origins",
            "https://a.example https://b.example,https://c.example",
            "--heartbeat",
            "0",
            "--write-timeout",
            "1m",
            "--jwt-key",
            "k",
        ])
        .unwrap();
        assert_eq!(c.cors_origins.len(), 3);
        assert_eq!(c.heartbeat, Duration::ZERO);
        assert_eq!(c.write_timeout, Duration::from_secs(60));
        assert_eq!(c.publisher_key(), Some(("k", "HS256")));
        assert!(Config::from_args(["quicksilver", "--heartbeat", "soon"]).is_err());
    }
}
