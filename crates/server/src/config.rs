//! The hub's configuration: one struct, read from command-line flags and environment variables.
//!
//! Each field's doc comment is its `--help` text. Names follow the reference hub where it has one
//! (`MERCURE_PUBLISHER_JWT_KEY`, …) so existing deployments keep their environment; settings of our
//! own use the `QUICKSILVER_` prefix. The reference's environment is read too: its site address
//! (`SERVER_NAME`) and the directives of its `mercure` block (`MERCURE_EXTRA_DIRECTIVES`).
//!
//! Precedence, highest first: a flag; its environment variable; `SERVER_NAME` (for the listen
//! address) and `MERCURE_EXTRA_DIRECTIVES`; the configuration file (`--config`); the default.
//! Each lower layer is turned into the flags it stands for and given to clap only for the settings
//! no higher layer set, so one parser validates everything and one struct holds the result.
//! Trusted issuers add up instead: `--issuer` values and `issuer` blocks together.
//!
//! - `config/file.rs`: the TOML configuration file.
//! - `config/directives.rs`: `MERCURE_EXTRA_DIRECTIVES`, the reference's Caddyfile directives.
//! - `config/server_name.rs`: `SERVER_NAME`, the reference's site address.
//! - `config/reference_command.rs`: the reference image's command line (`caddy run --config …`).
//! - `config/issuer.rs`: trusted issuers ([`IssuerSpec`]) and the `--issuer` mini-language.

pub mod directives;
mod file;
mod issuer;
pub mod reference_command;
pub mod server_name;

pub use directives::{Notice, NoticeLevel};
pub use issuer::{IssuerSpec, RoleKeys};

/// The key of the reference hub's quick start and development setups, used by `--playground` when
/// no key at all is configured (and by `quicksilver token --dev`).
pub const DEV_KEY: &str = "!ChangeThisMercureHubJWTSecretKey!";

/// The default name of the access token cookie (`--access-token-cookie`).
pub const DEFAULT_ACCESS_TOKEN_COOKIE: &str = "__Secure-mercure_access_token";

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

    /// Redis Cluster hash slots the partitions share (0: one slot per partition). With G, the
    /// partitions of one slot are read together (in groups of --redis-reader-partitions), over one
    /// connection per group. Changing it renames the streams: do it with an empty history.
    #[arg(long, env = "QUICKSILVER_REDIS_PARTITION_SLOTS", default_value_t = 0)]
    pub redis_partition_slots: u16,

    /// Partitions one reader connection reads at most (one blocking XREAD over their streams):
    /// fewer connections with more, but Redis's work per wake-up of a read grows with its streams.
    #[arg(
        long,
        env = "QUICKSILVER_REDIS_READER_PARTITIONS",
        default_value_t = quicksilver_transport::redis::DEFAULT_READER_PARTITIONS
    )]
    pub redis_reader_partitions: u16,

    /// How a topic is mapped to its partition, the same on every node: `fnv1a`, or `nginx` (the
    /// hash of nginx's `hash $arg_topic;`, so that with partitions a multiple of the nodes nginx
    /// routes every topic of a partition to one node; see the README, "Routing by partition").
    /// Changing it moves topics between streams: do it with an empty history.
    #[arg(
        long,
        env = "QUICKSILVER_REDIS_PARTITION_HASH",
        value_enum,
        default_value = "fnv1a"
    )]
    pub redis_partition_hash: PartitionHashKind,

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
        default_value = DEFAULT_ACCESS_TOKEN_COOKIE
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

    /// Verified tokens each role (publishers, subscribers) remembers, so a token presented again
    /// is not verified again while it is valid and its keys unchanged (`0`: verify every time).
    #[arg(long, env = "QUICKSILVER_TOKEN_CACHE_SIZE", default_value_t = 4096)]
    pub token_cache_size: usize,

    /// How often JWK Sets of `--issuer … jwks_uri=` are fetched again (key rotation); a token
    /// naming an unknown `kid` also triggers a fetch, at most every 10 s.
    #[arg(long, env = "QUICKSILVER_JWKS_REFRESH", default_value = "5m", value_parser = parse_duration)]
    pub jwks_refresh: Duration,

    /// Key of the admin tokens that may revoke tokens (`/.well-known/mercure/admin/revocations`,
    /// `quicksilver revoke`): an HMAC secret, or a PEM public key with `--admin-jwt-alg`. Never
    /// the publisher or subscriber key (refused at start). Unset: revocation is off and the
    /// endpoint answers 404.
    #[arg(long, env = "QUICKSILVER_ADMIN_JWT_KEY", hide_env_values = true)]
    pub admin_jwt_key: Option<String>,

    /// Algorithm of the admin tokens [default: HS256].
    #[arg(long, env = "QUICKSILVER_ADMIN_JWT_ALG")]
    pub admin_jwt_alg: Option<String>,

    /// Revocations the cluster holds at most (those not yet expired); beyond it a new one is
    /// refused with 507 until some are lifted or expire [default: 10000].
    #[arg(long, env = "QUICKSILVER_MAX_REVOCATIONS")]
    pub max_revocations: Option<usize>,

    /// The longest a token lives: a revocation given no `exp` is kept this long (a subject's:
    /// this long after its `before` time), by when every token it covers has expired
    /// [default: 24h].
    #[arg(long, env = "QUICKSILVER_MAX_TOKEN_LIFETIME", value_parser = parse_duration)]
    pub max_token_lifetime: Option<Duration>,

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

    /// Send each update's direct writes to subscribers' sockets with one io_uring submission per
    /// fan-out shard instead of one `send` each (Linux; where io_uring is forbidden or missing, and
    /// if a ring fails, the shard writes one at a time and says so in the log and the metrics).
    #[arg(long, env = "QUICKSILVER_IO_URING", default_value_t = false)]
    pub io_uring: bool,

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

    /// Rate-limit keys (a subject or address with a recent request, per `[[rate_limit]]` rule)
    /// the memory transport keeps; past it the key nearest to idle is evicted and counted
    /// (`quicksilver_rate_limit_evictions_total`). With Redis, keys live there and expire when idle.
    #[arg(long, env = "QUICKSILVER_RATE_LIMIT_ENTRIES", default_value_t = quicksilver_transport::limits::memory::DEFAULT_RATE_ENTRIES)]
    pub rate_limit_entries: usize,

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

    /// PEM file of the certificate chain to serve HTTPS with (the node's certificate first), with
    /// `--tls-key`: the listener then speaks TLS only, HTTP/2 or HTTP/1.1 as agreed by ALPN. Both
    /// files are read again when they change (checked every second): new connections get the new
    /// certificate, open ones keep going.
    #[arg(long, env = "QUICKSILVER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// PEM file of the private key of `--tls-cert` (PKCS#8, RSA or EC).
    #[arg(long, env = "QUICKSILVER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

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

    /// The reference hub's site address (`:80`, `localhost`, `host:port`, `http://host`): sets the
    /// listen address (its port, every interface) when `--listen` is not given; served over HTTPS
    /// with `--tls-cert` (a host name without a port then listens on 443), plain HTTP without.
    #[arg(long, env = "SERVER_NAME")]
    pub server_name: Option<String>,

    /// Directives of the reference hub's `mercure` block, one per line (`anonymous`,
    /// `cors_origins https://app.example.com`, `issuer ID { … }`, …): each becomes the setting it
    /// stands for, below flags and environment variables; an unknown directive refuses to start.
    #[arg(long, env = "MERCURE_EXTRA_DIRECTIVES", hide_env_values = true)]
    pub extra_directives: Option<String>,

    /// INSECURE, development only: the debug page prefilled with an all-access token, echo
    /// endpoints under `/playground/`, and `/` redirected to the debug page; turns on
    /// `--anonymous` and `--subscriptions`, and, unless set, `*` CORS and publish origins, the
    /// `mercure_access_token` cookie, and the well-known development key when no key is set.
    #[arg(long, env = "QUICKSILVER_PLAYGROUND", default_value_t = false)]
    pub playground: bool,

    /// Issuers of `issuer` blocks (`MERCURE_EXTRA_DIRECTIVES`), beside `--issuer`.
    #[arg(skip)]
    pub issuer_blocks: Vec<IssuerSpec>,

    /// JWK Sets verifying pre-standardization tokens (`publisher_jwks_url`, `subscriber_jwks_url`
    /// of `MERCURE_EXTRA_DIRECTIVES`), instead of the role's key.
    #[arg(skip)]
    pub legacy_jwks: LegacyJwks,

    /// What the configuration layers have to say, logged at start.
    #[arg(skip)]
    pub notices: Vec<Notice>,
}

/// JWK Sets for the pre-standardization generation, per role (the reference's 0.x
/// `publisher_jwks_url` and `subscriber_jwks_url`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LegacyJwks {
    /// Publishers' set.
    pub publisher: Option<String>,
    /// Subscribers' set.
    pub subscriber: Option<String>,
}

/// Which transport stores and shares updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TransportKind {
    /// In-memory, single node (the embedded default).
    Memory,
    /// Redis Streams, shared by every node.
    Redis,
}

/// How topics map to Redis partitions (see [`quicksilver_transport::redis::PartitionHash`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PartitionHashKind {
    /// FNV-1a of the topic.
    Fnv1a,
    /// nginx's `hash $arg_topic;` of the query-encoded topic.
    Nginx,
}

impl From<PartitionHashKind> for quicksilver_transport::redis::PartitionHash {
    fn from(kind: PartitionHashKind) -> Self {
        match kind {
            PartitionHashKind::Fnv1a => Self::Fnv1a,
            PartitionHashKind::Nginx => Self::Nginx,
        }
    }
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
        Self::from_args_and_env(args, &|name| std::env::var(name).ok())
    }

    /// [`Config::from_args`] with `env` answering the `{env.NAME}` placeholders of
    /// `MERCURE_EXTRA_DIRECTIVES` (clap reads the flags' own variables itself).
    pub fn from_args_and_env<I, T>(
        args: I,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::parser::ValueSource;
        use std::collections::HashSet;

        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let matches = Self::command().try_get_matches_from(&args)?;
        // Settings given as a flag or as their own environment variable: no lower layer touches them.
        let mut taken: HashSet<String> = Self::command()
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .filter(|id| {
                matches!(
                    matches.value_source(id),
                    Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                )
            })
            .collect();
        let mut notices = Vec::new();

        // SERVER_NAME and MERCURE_EXTRA_DIRECTIVES: the reference's environment.
        let mut layered: Vec<String> = Vec::new();
        if let Some(name) = matches.get_one::<String>("server_name") {
            let tls = matches.get_one::<std::path::PathBuf>("tls_cert").is_some();
            let site = server_name::parse(name, tls).map_err(ConfigError::ServerName)?;
            if taken.insert("listen".to_string()) {
                layered.extend(["--listen".to_string(), site.listen.to_string()]);
                notices.extend(site.notices);
            } else {
                notices.push(Notice::info(format!(
                    "SERVER_NAME={name:?} is not used: --listen / QUICKSILVER_LISTEN is set"
                )));
            }
        }
        let directives = match matches.get_one::<String>("extra_directives") {
            Some(text) => directives::parse(text, env)?,
            None => directives::Directives::default(),
        };
        // Directives are assignments: a later one replaces an earlier one of the same setting.
        let mut claimed: HashSet<&'static str> = HashSet::new();
        let mut kept = Vec::new();
        for setting in directives.settings.iter().rev() {
            if let Some(id) = setting.ids.iter().find(|id| taken.contains(**id)) {
                notices.push(Notice::info(format!(
                    "{} line {}: `{}` is not used: --{} is set by a flag or environment variable",
                    directives::SOURCE,
                    setting.line,
                    setting.directive,
                    id.replace('_', "-"),
                )));
                continue;
            }
            if setting.ids.iter().any(|id| claimed.contains(id)) {
                continue;
            }
            claimed.extend(setting.ids.iter().copied());
            kept.push(setting);
        }
        kept.reverse();
        for setting in &kept {
            layered.extend(setting.args.iter().cloned());
        }
        taken.extend(claimed.iter().map(|id| id.to_string()));
        notices.extend(directives.notices.iter().cloned());
        let reparse = |layer: &[String]| {
            let mut merged = Vec::with_capacity(args.len() + layer.len());
            merged.extend(args.first().cloned());
            merged.extend(layer.iter().map(Into::into));
            merged.extend(args.iter().skip(1).cloned());
            Self::try_parse_from(merged)
        };
        if !layered.is_empty() {
            if let Err(e) = reparse(&layered) {
                // Blame the directive whose arguments clap refuses.
                let culprit = kept.iter().find(|s| reparse(&s.args).is_err());
                return Err(ConfigError::Directives(directives::DirectiveError {
                    line: culprit.map_or(0, |s| s.line),
                    reason: format!(
                        "`{}`: {}",
                        culprit.map_or("?", |s| s.directive.as_str()),
                        e.kind()
                    ),
                }));
            }
        }

        // The configuration file, for what no layer above set.
        let mut config = match matches.get_one::<std::path::PathBuf>("config") {
            Some(path) => {
                let (file_args, file_ids) = file::args(path, &|id| taken.contains(id))?;
                layered.extend(file_args);
                taken.extend(file_ids);
                reparse(&layered).map_err(|e| ConfigError::File {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?
            }
            None if layered.is_empty() => Self::from_arg_matches(&matches)?,
            None => reparse(&layered)?,
        };
        config.issuer_blocks = directives.issuers;
        config.legacy_jwks = directives.legacy_jwks;
        config.cors_origins = split_list(&config.cors_origins);
        config.publish_origins = split_list(&config.publish_origins);
        config.redis_url = split_list(&config.redis_url);
        if config.playground {
            config.apply_playground(&|id| taken.contains(id), &mut notices);
        }
        config.notices = notices;
        Ok(config)
    }

    /// The permissive settings the playground needs: anonymous subscribers and subscription
    /// events always; `*` origins, a cookie name usable over plain HTTP and the development key
    /// unless set.
    fn apply_playground(&mut self, taken: &dyn Fn(&str) -> bool, notices: &mut Vec<Notice>) {
        self.anonymous = true;
        self.subscriptions = true;
        self.debug_page = true;
        if !taken("cors_origins") && self.cors_origins.is_empty() {
            self.cors_origins = vec!["*".into()];
        }
        if !taken("publish_origins") && self.publish_origins.is_empty() {
            self.publish_origins = vec!["*".into()];
        }
        if !taken("access_token_cookie") {
            self.access_token_cookie = "mercure_access_token".into();
        }
        let keyless = self.publisher_key().is_none()
            && self.subscriber_key().is_none()
            && self.legacy_jwks == LegacyJwks::default()
            && self.issuers.is_empty()
            && self.issuer_blocks.is_empty();
        if keyless {
            self.jwt_key = Some(DEV_KEY.into());
            notices.push(Notice::warn(
                "playground without any JWT key: using the well-known development key; never do this in production",
            ));
        }
        notices.push(Notice::warn(
            "playground is on (INSECURE, development only): anyone can fetch an all-access token from /.well-known/mercure/debug/playground-token",
        ));
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
    /// Bad `MERCURE_EXTRA_DIRECTIVES`.
    #[error(transparent)]
    Directives(#[from] directives::DirectiveError),
    /// A `SERVER_NAME` that cannot be listened on.
    #[error("{0}")]
    ServerName(String),
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
            ConfigError::File { .. } | ConfigError::Directives(_) | ConfigError::ServerName(_) => {
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
