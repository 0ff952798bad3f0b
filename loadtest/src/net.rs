//! Hub endpoints and TCP connections.
//!
//! Only plain `http://` URLs are supported: the harness measures the hub, not TLS. Host names are
//! resolved once, when an [`Endpoint`] is parsed, so no connection pays for a lookup. Subscriber
//! sockets may bind to a chosen local address first, which gives each source address its own
//! range of ephemeral ports.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

/// Why an endpoint or a connection could not be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NetError {
    #[error("invalid hub URL `{0}`: {1}")]
    InvalidUrl(String, String),
    #[error("cannot resolve `{0}`: {1}")]
    Resolve(String, std::io::Error),
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("connect timed out")]
    ConnectTimeout,
}

/// A resolved hub URL.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    pub(crate) addr: SocketAddr,
    /// `Host` header value.
    pub(crate) host: String,
    /// Path (with any query) requests go to.
    pub(crate) path: String,
}

impl Endpoint {
    /// Parses and resolves an `http://host:port/path` URL.
    pub(crate) fn parse(url: &str) -> Result<Self, NetError> {
        let invalid = |why: &str| NetError::InvalidUrl(url.to_owned(), why.to_owned());
        let parsed = url::Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
        if parsed.scheme() != "http" {
            return Err(invalid("only http:// is supported"));
        }
        let host = parsed.host_str().ok_or_else(|| invalid("no host"))?;
        let port = parsed.port_or_known_default().unwrap_or(80);
        let addr = (host.trim_start_matches('[').trim_end_matches(']'), port)
            .to_socket_addrs()
            .map_err(|e| NetError::Resolve(url.to_owned(), e))?
            .next()
            .ok_or_else(|| invalid("resolves to no address"))?;
        let host_header = match parsed.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        let mut path = parsed.path().to_owned();
        if let Some(q) = parsed.query() {
            path.push('?');
            path.push_str(q);
        }
        Ok(Self {
            addr,
            host: host_header,
            path,
        })
    }

    /// `path` followed by `params` as a query string.
    pub(crate) fn path_with_query<'a>(
        &self,
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> String {
        let mut out = self.path.clone();
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        ser.extend_pairs(params);
        let query = ser.finish();
        if !query.is_empty() {
            out.push(if out.contains('?') { '&' } else { '?' });
            out.push_str(&query);
        }
        out
    }
}

/// Parses and resolves every URL.
pub(crate) fn endpoints(urls: &[String]) -> Result<Vec<Endpoint>, NetError> {
    urls.iter().map(|u| Endpoint::parse(u)).collect()
}

/// Opens a TCP connection to `addr`, from `source` if given, with an optional receive buffer size.
pub(crate) async fn connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
    recv_buffer: Option<u32>,
    timeout: Duration,
) -> Result<TcpStream, NetError> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(NetError::Connect)?;
    if let Some(size) = recv_buffer {
        socket
            .set_recv_buffer_size(size)
            .map_err(NetError::Connect)?;
    }
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(NetError::Connect)?;
    }
    let stream = tokio::time::timeout(timeout, socket.connect(addr))
        .await
        .map_err(|_| NetError::ConnectTimeout)?
        .map_err(NetError::Connect)?;
    stream.set_nodelay(true).map_err(NetError::Connect)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_builds_queries() {
        let e = Endpoint::parse("http://127.0.0.1:3000/.well-known/mercure").unwrap();
        assert_eq!(e.addr, "127.0.0.1:3000".parse().unwrap());
        assert_eq!(e.host, "127.0.0.1:3000");
        let q = e.path_with_query([
            ("topic", "https://example.com/t/{x}"),
            ("authorization", "a.b"),
        ]);
        assert_eq!(
            q,
            "/.well-known/mercure?topic=https%3A%2F%2Fexample.com%2Ft%2F%7Bx%7D&authorization=a.b"
        );
        assert!(Endpoint::parse("https://x/").is_err());
    }
}
