//! Connections to Redis, plain or cluster, behind one type, and the bound on every command.
//!
//! [`Connector`] opens a [`Conn`]: a multiplexed connection to a plain server, or a cluster
//! connection (which follows slot moves and fails over by itself). Both pipeline concurrent commands,
//! so clones of one `Conn` are shared by many tasks. Every command goes through [`timed`], so a Redis
//! that stopped answering yields [`CallError::Timeout`] instead of a hang.

use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, Pipeline, RedisError, RedisFuture, TlsCertificates, Value,
};
use thiserror::Error;

use super::config::{RedisConfigError, Settings};
use crate::TransportError;

/// Why a Redis command failed.
#[derive(Debug, Clone, Error)]
pub(crate) enum CallError {
    /// No answer in time.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The client or the server reported an error.
    #[error("redis error: {0}")]
    Redis(#[from] RedisError),
    /// The reply did not have the shape the command has (e.g. a pipeline answered with fewer
    /// replies than it had commands).
    #[error("unexpected reply from redis: {0}")]
    Malformed(String),
    /// The task sending the command ended without an answer (the runtime is shutting down).
    #[error("the redis command was abandoned")]
    Abandoned,
}

impl CallError {
    /// Whether the connection that failed should be replaced (as opposed to a server error reply,
    /// after which the connection is still fine).
    pub(crate) fn breaks_connection(&self) -> bool {
        match self {
            CallError::Timeout(_) | CallError::Malformed(_) => true,
            CallError::Abandoned => false,
            CallError::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                    || e.is_unrecoverable_error()
            }
        }
    }
}

impl From<CallError> for TransportError {
    fn from(e: CallError) -> Self {
        TransportError::Unavailable(e.to_string())
    }
}

/// Runs `fut`, giving up after `limit`.
pub(crate) async fn timed<T>(
    limit: Duration,
    fut: impl Future<Output = Result<T, RedisError>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(CallError::Timeout(limit)),
    }
}

/// An open connection to a plain Redis or a Redis Cluster.
#[derive(Clone)]
pub(crate) enum Conn {
    Plain(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Plain(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Plain(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Plain(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Conn {
    /// Sends `cmd` to the server that holds `slot` (a plain server holds every slot): for commands
    /// about a connection rather than a key (`CLIENT ID`, `CLIENT UNBLOCK`), which a cluster
    /// connection would otherwise send to any node.
    pub(crate) async fn query_at<T: redis::FromRedisValue>(
        &mut self,
        cmd: &Cmd,
        slot: u16,
    ) -> Result<T, RedisError> {
        match self {
            Conn::Plain(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::new(slot, SlotAddr::Master),
                ));
                let value = c.route_command(cmd.clone(), route).await?;
                Ok(T::from_redis_value(value)?)
            }
        }
    }
}

/// Opens connections with one response timeout (commands of pooled connections, or the longer
/// blocking reads of a reader).
pub(crate) enum Connector {
    Plain {
        client: Client,
        config: AsyncConnectionConfig,
    },
    Cluster(ClusterClient),
}

impl Connector {
    /// A connector for `settings`' URLs whose commands may take up to `response_timeout`.
    pub(crate) fn new(
        settings: &Settings,
        response_timeout: Duration,
    ) -> Result<Self, RedisConfigError> {
        if settings.urls.iter().any(|u| u.starts_with("rediss://")) {
            // rustls needs a process-wide crypto provider; ring is the one compiled in. Installing
            // fails harmlessly when one is already set (by us earlier or by the embedding program).
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let tls = |root_cert: &Vec<u8>| TlsCertificates {
            client_tls: None,
            root_cert: Some(root_cert.clone()),
        };
        let tls_urls = settings.urls.iter().any(|u| u.starts_with("rediss://"));
        if settings.cluster {
            let mut builder = ClusterClientBuilder::new(settings.urls.iter().map(String::as_str));
            if let (true, Some(ca)) = (tls_urls, &settings.tls_ca) {
                builder = builder.certs(tls(ca));
            }
            let client = builder
                .connection_timeout(settings.command_timeout)
                .response_timeout(response_timeout)
                // Few, quick retries: the caller bounds the whole command and reports Unavailable.
                .retries(2)
                .min_retry_wait(50)
                .max_retry_wait(500)
                .build()
                .map_err(RedisConfigError::Url)?;
            return Ok(Connector::Cluster(client));
        }
        let url = settings
            .urls
            .first()
            .map(String::as_str)
            .unwrap_or_default();
        let client = match &settings.tls_ca {
            Some(ca) if tls_urls => Client::build_with_tls(url, tls(ca)),
            _ => Client::open(url),
        }
        .map_err(RedisConfigError::Url)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(settings.command_timeout))
            .set_response_timeout(Some(response_timeout));
        Ok(Connector::Plain { client, config })
    }

    /// Opens a new connection, giving up after `limit`.
    pub(crate) async fn connect(&self, limit: Duration) -> Result<Conn, CallError> {
        match self {
            Connector::Plain { client, config } => {
                timed(limit, async {
                    client
                        .get_multiplexed_async_connection_with_config(config)
                        .await
                        .map(Conn::Plain)
                })
                .await
            }
            Connector::Cluster(client) => {
                timed(limit, async {
                    client.get_async_connection().await.map(Conn::Cluster)
                })
                .await
            }
        }
    }
}
