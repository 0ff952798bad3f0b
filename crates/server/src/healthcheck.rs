//! `quicksilver healthcheck`: the probe a container runtime runs inside the hub's container
//! (Docker's `HEALTHCHECK`, a compose `healthcheck`), where there may be no shell, no curl and no
//! `/dev/tcp`.
//!
//! The command sends one `GET` over HTTP/1.1 to the hub's `/healthz` (or `/readyz` with
//! `--ready`) and exits `0` when the answer's status is `200`, `1` otherwise: refused, timed out,
//! any other status, or something that is not HTTP. It never starts the async runtime or the hub:
//! a blocking [`std::net::TcpStream`] with one deadline over connect, write and read is all it
//! needs, so it costs a few milliseconds and no memory worth naming.
//!
//! A hub that serves TLS itself (`--tls-cert`) is probed over HTTPS, unless the probe goes to its
//! metrics listener, which is always plain HTTP. The probe does not verify the certificate: it
//! asks a process on this machine whether it serves, not who it is, and a certificate issued for
//! the public name would not match the loopback address it knocks on anyway.
//!
//! Where it knocks: `--url` when given; otherwise the address the hub itself was told to use,
//! read from the same flags and environment variables (`--metrics-addr` /
//! `QUICKSILVER_METRICS_ADDR` first, then `--listen` / `QUICKSILVER_LISTEN`, then the reference
//! hub's `SERVER_NAME`), so an image sets its addresses once and the healthcheck follows them. The metrics listener comes first because it
//! has its own accept queue: during a reconnection storm the main port's queue is full of
//! subscribers and a probe there would time out on a healthy hub. An unspecified address
//! (`0.0.0.0`, `[::]`) is probed on the loopback address of the same family.
//!
//! Exit status `2` is avoided on purpose: Docker reserves it, so even a bad command line exits `1`.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

use crate::config::parse_duration;

/// The first argument that selects this command instead of the hub.
pub const SUBCOMMAND: &str = "healthcheck";

/// Longest status line accepted; a health endpoint's is about 20 bytes.
const MAX_STATUS_LINE: usize = 1024;

/// Probes a running hub's health endpoint; exit status 0 when it answers 200, 1 otherwise.
#[derive(Parser, Clone, Debug)]
#[command(
    name = "quicksilver-healthcheck",
    bin_name = "quicksilver healthcheck",
    version,
    max_term_width = 100
)]
pub struct HealthcheckArgs {
    /// URL to probe (`http://HOST:PORT/PATH` or `https://…`). Default: `/healthz` (or `/readyz` with `--ready`) on
    /// the metrics address when one is set, otherwise on the listen address.
    #[arg(long)]
    pub url: Option<String>,

    /// Probe `/readyz` (the node takes subscribers: transport reachable, not draining) instead of
    /// `/healthz` (the process serves).
    #[arg(long)]
    pub ready: bool,

    /// Give up after this long, connecting, sending and reading included.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// The hub's listen address (the same setting as the hub's `--listen`; default
    /// `127.0.0.1:3000`).
    #[arg(long, env = "QUICKSILVER_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// The reference hub's site address (the same setting as the hub's `--server-name`), used
    /// when no listen address is given.
    #[arg(long, env = "SERVER_NAME")]
    pub server_name: Option<String>,

    /// The hub's separate metrics address, probed in preference to the listen address (the same
    /// setting as the hub's `--metrics-addr`).
    #[arg(long, env = "QUICKSILVER_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// The hub's certificate (the same setting as the hub's `--tls-cert`): when set, the listen
    /// address is probed over HTTPS (the metrics address stays plain HTTP). Only whether it is set
    /// matters; the file is not read.
    #[arg(long, env = "QUICKSILVER_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
}

/// Where a probe goes: the address to connect to, whether over TLS, and what the request line
/// and `Host` say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Over HTTPS.
    pub tls: bool,
    /// `HOST:PORT` (a name or an IP literal; names are resolved when probing).
    pub authority: String,
    /// The host name alone, for resolution.
    pub host: String,
    /// The port.
    pub port: u16,
    /// Path and query of the request line.
    pub path: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority, self.path)
    }
}

/// Why a probe did not find the hub healthy.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// `--url` is not an `http://` or `https://` URL with a host.
    #[error("invalid --url {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `SERVER_NAME` names no address to probe.
    #[error("{0}")]
    InvalidServerName(String),
    /// The host name resolved to no address.
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// The host.
        host: String,
        /// The resolver's answer.
        reason: String,
    },
    /// No connection could be made (refused, unreachable).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address tried last.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The deadline passed before a status line arrived.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Reading or writing failed after connecting (a failed TLS handshake included).
    #[error("connection failed: {0}")]
    Io(std::io::Error),
    /// The TLS client could not be set up for this host.
    #[error("TLS: {0}")]
    Tls(String),
    /// What came back is not an HTTP/1.x status line.
    #[error("not an HTTP answer: {0:?}")]
    NotHttp(String),
    /// The hub answered with another status than 200.
    #[error("answered {0}")]
    Status(String),
}

impl HealthcheckArgs {
    /// The probe's target: `--url`, or the hub's own address with the health path.
    pub fn target(&self) -> Result<Target, ProbeError> {
        match &self.url {
            Some(url) => parse_url(url),
            None => {
                let listener_tls = self.tls_cert.is_some();
                let listen = match (self.listen, &self.server_name) {
                    (Some(listen), _) => listen,
                    (None, Some(name)) => {
                        crate::config::server_name::parse(name, listener_tls)
                            .map_err(ProbeError::InvalidServerName)?
                            .listen
                    }
                    (None, None) => SocketAddr::from(([127, 0, 0, 1], 3000)),
                };
                let (addr, tls) = match self.metrics_addr {
                    Some(metrics) => (metrics, false),
                    None => (listen, listener_tls),
                };
                let addr = loopback_if_unspecified(addr);
                let path = if self.ready { "/readyz" } else { "/healthz" };
                Ok(Target {
                    tls,
                    authority: addr.to_string(),
                    host: addr.ip().to_string(),
                    port: addr.port(),
                    path: path.to_string(),
                })
            }
        }
    }
}

/// Runs the command on `args` (the first one is the command's name, as in `argv`) and returns the
/// process's exit status.
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args = match HealthcheckArgs::try_parse_from(args) {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS // --help, --version
            };
        }
    };
    let outcome = args
        .target()
        .and_then(|target| probe(&target, args.timeout).map(|line| (target, line)));
    match outcome {
        Ok((target, status_line)) => {
            println!("{target}: {status_line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("quicksilver healthcheck: unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Sends `GET` to `target` and returns its status line when the status is 200; all of it, connect
/// included, within `timeout`.
pub fn probe(target: &Target, timeout: Duration) -> Result<String, ProbeError> {
    let deadline = Instant::now() + timeout;
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(ProbeError::Timeout(timeout))
    };
    let addrs: Vec<SocketAddr> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| ProbeError::Resolve {
            host: target.host.clone(),
            reason: e.to_string(),
        })?
        .collect();
    let mut last_error = None;
    let mut stream = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, remaining()?) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) if is_timeout(&e) => return Err(ProbeError::Timeout(timeout)),
            Err(e) => last_error = Some((*addr, e)),
        }
    }
    let stream = match (stream, last_error) {
        (Some(s), _) => s,
        (None, Some((addr, source))) => return Err(ProbeError::Connect { addr, source }),
        (None, None) => {
            return Err(ProbeError::Resolve {
                host: target.host.clone(),
                reason: "no address".into(),
            })
        }
    };
    let io = |e: std::io::Error| {
        if is_timeout(&e) {
            ProbeError::Timeout(timeout)
        } else {
            ProbeError::Io(e)
        }
    };
    // The socket's timeouts are set through this handle while `connection` (a TLS session over
    // the same socket, or the socket itself) reads and writes.
    let socket = stream.try_clone().map_err(io)?;
    let mut connection: Box<dyn ReadWrite> = if target.tls {
        Box::new(rustls::StreamOwned::new(tls_client(&target.host)?, stream))
    } else {
        Box::new(stream)
    };
    // Over TLS the handshake happens in this first write (and the reads after it).
    socket.set_write_timeout(Some(remaining()?)).map_err(io)?;
    socket.set_read_timeout(Some(remaining()?)).map_err(io)?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: quicksilver-healthcheck\r\nConnection: close\r\n\r\n",
        target.path, target.authority
    );
    connection.write_all(request.as_bytes()).map_err(io)?;
    connection.flush().map_err(io)?;

    // Only the status line matters; read until its end (or the deadline, or a size bound).
    let mut head = Vec::with_capacity(128);
    let mut buf = [0u8; 256];
    let line_end = loop {
        if let Some(end) = head.windows(2).position(|w| w == b"\r\n") {
            break end;
        }
        if head.len() >= MAX_STATUS_LINE {
            return Err(ProbeError::NotHttp(lossy_prefix(&head)));
        }
        socket.set_read_timeout(Some(remaining()?)).map_err(io)?;
        match connection.read(&mut buf).map_err(io)? {
            0 => return Err(ProbeError::NotHttp(lossy_prefix(&head))),
            n => head.extend_from_slice(&buf[..n]),
        }
    };
    let line = String::from_utf8_lossy(&head[..line_end]).into_owned();
    match status_code(&line) {
        Some(200) => Ok(line),
        Some(_) => Err(ProbeError::Status(line)),
        None => Err(ProbeError::NotHttp(line)),
    }
}

/// A connection the probe talks over: a TCP stream, or a TLS session on one.
trait ReadWrite: Read + Write {}

impl<T: Read + Write> ReadWrite for T {}

/// A TLS client session for `host` that offers HTTP/1.1 only and accepts any certificate (see the
/// module documentation).
fn tls_client(host: &str) -> Result<rustls::ClientConnection, ProbeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ProbeError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| ProbeError::Tls(format!("{host}: {e}")))?;
    rustls::ClientConnection::new(Arc::new(config), name)
        .map_err(|e| ProbeError::Tls(e.to_string()))
}

/// Accepts whatever certificate the hub presents, but still checks that the hub holds its key
/// (the handshake's signatures), as any TLS session requires.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The status code of an HTTP/1.x status line (`HTTP/1.1 200 OK`).
fn status_code(line: &str) -> Option<u16> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next()?;
    let code = parts.next()?;
    if !(version == "HTTP/1.1" || version == "HTTP/1.0") || code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

/// Parses `--url`: `http://` or `https://`.
fn parse_url(text: &str) -> Result<Target, ProbeError> {
    let invalid = |reason: &str| ProbeError::InvalidUrl {
        url: text.to_string(),
        reason: reason.to_string(),
    };
    let url = url::Url::parse(text).map_err(|e| invalid(&e.to_string()))?;
    let tls = match url.scheme() {
        "http" => false,
        "https" => true,
        _ => return Err(invalid("only http:// and https:// are supported")),
    };
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_string(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err(invalid("no host")),
    };
    let port = url
        .port_or_known_default()
        .unwrap_or(if tls { 443 } else { 80 });
    let authority = match url.host() {
        Some(url::Host::Ipv6(ip)) => format!("[{ip}]:{port}"),
        _ => format!("{host}:{port}"),
    };
    let mut path = url.path().to_string();
    if let Some(query) = url.query() {
        path.push('?');
        path.push_str(query);
    }
    Ok(Target {
        tls,
        authority,
        host,
        port,
        path,
    })
}

/// `0.0.0.0:P` → `127.0.0.1:P`, `[::]:P` → `[::1]:P`; other addresses unchanged.
fn loopback_if_unspecified(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

/// The start of what came back, for the error message.
fn lossy_prefix(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(80)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    /// Parses a command line; `--listen` is always explicit so that the test process's
    /// environment cannot choose the target.
    fn args(list: &[&str]) -> HealthcheckArgs {
        let mut argv = vec!["quicksilver healthcheck"];
        if !list.contains(&"--listen") {
            argv.extend(["--listen", "0.0.0.0:3000"]);
        }
        argv.extend_from_slice(list);
        HealthcheckArgs::try_parse_from(argv).unwrap()
    }

    #[test]
    fn default_target_follows_the_hub_addresses() {
        let t = args(&[]).target().unwrap();
        assert_eq!(t.to_string(), "http://127.0.0.1:3000/healthz");
        let t = args(&["--ready", "--metrics-addr", "0.0.0.0:9090"])
            .target()
            .unwrap();
        assert_eq!(t.to_string(), "http://127.0.0.1:9090/readyz");
        let t = args(&["--listen", "[::]:3001"]).target().unwrap();
        assert_eq!(t.to_string(), "http://[::1]:3001/healthz");
        assert_eq!(t.host, "::1");
        let t = args(&["--listen", "10.1.2.3:3000"]).target().unwrap();
        assert_eq!(t.authority, "10.1.2.3:3000");
        let t = HealthcheckArgs::try_parse_from(["healthcheck", "--server-name", ":8080"])
            .unwrap()
            .target()
            .unwrap();
        assert_eq!(t.to_string(), "http://127.0.0.1:8080/healthz");
    }

    #[test]
    fn a_tls_listener_is_probed_over_https_and_the_metrics_listener_over_http() {
        let t = args(&["--tls-cert", "/certs/tls.crt"]).target().unwrap();
        assert_eq!(t.to_string(), "https://127.0.0.1:3000/healthz");
        let t = args(&[
            "--tls-cert",
            "/certs/tls.crt",
            "--metrics-addr",
            "0.0.0.0:9090",
        ])
        .target()
        .unwrap();
        assert_eq!(t.to_string(), "http://127.0.0.1:9090/healthz");
        let t = HealthcheckArgs::try_parse_from([
            "healthcheck",
            "--server-name",
            "hub.example.com",
            "--tls-cert",
            "/certs/tls.crt",
        ])
        .unwrap()
        .target()
        .unwrap();
        assert_eq!(t.to_string(), "https://127.0.0.1:443/healthz");
    }

    #[test]
    fn url_is_taken_as_given_over_http_or_https() {
        let t = args(&["--url", "http://localhost:8080/readyz?x=1", "--ready"])
            .target()
            .unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("localhost", 8080, "/readyz?x=1")
        );
        let t = args(&["--url", "http://[::1]/healthz"]).target().unwrap();
        assert_eq!((t.authority.as_str(), t.port), ("[::1]:80", 80));
        let t = args(&["--url", "https://hub.example/healthz"])
            .target()
            .unwrap();
        assert_eq!((t.tls, t.port), (true, 443));
        for bad in [
            "ftp://a.example/healthz",
            "127.0.0.1:3000/healthz",
            "http://",
        ] {
            assert!(
                matches!(
                    args(&["--url", bad]).target(),
                    Err(ProbeError::InvalidUrl { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_code("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(status_code("HTTP/1.0 503 Service Unavailable"), Some(503));
        assert_eq!(status_code("HTTP/1.1 200"), Some(200));
        assert_eq!(status_code("HTTP/2 200"), None);
        assert_eq!(status_code("SSH-2.0-OpenSSH"), None);
        assert_eq!(status_code("HTTP/1.1 20 OK"), None);
    }

    /// A one-shot server answering `reply` (or nothing, holding the connection, when `None`).
    fn server(reply: Option<&'static [u8]>) -> Target {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            if let Ok((mut conn, _)) = listener.accept() {
                let mut request = [0u8; 1024];
                let _ = conn.read(&mut request);
                match reply {
                    Some(bytes) => {
                        // Byte by byte: the status line may arrive in pieces.
                        for b in bytes {
                            let _ = conn.write_all(&[*b]);
                        }
                    }
                    None => thread::sleep(Duration::from_secs(5)),
                }
            }
        });
        parse_url(&format!("http://{addr}/healthz")).unwrap()
    }

    #[test]
    fn healthy_only_on_200() {
        let ok = probe(
            &server(Some(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")),
            Duration::from_secs(5),
        );
        assert_eq!(ok.unwrap(), "HTTP/1.1 200 OK");
        let draining = probe(
            &server(Some(b"HTTP/1.1 503 Service Unavailable\r\n\r\n")),
            Duration::from_secs(5),
        );
        assert!(
            matches!(draining, Err(ProbeError::Status(_))),
            "{draining:?}"
        );
        let garbage = probe(&server(Some(b"hello\n")), Duration::from_secs(5));
        assert!(
            matches!(garbage, Err(ProbeError::NotHttp(_))),
            "{garbage:?}"
        );
    }

    #[test]
    fn silence_is_a_timeout_and_a_closed_port_a_refusal() {
        let silent = probe(&server(None), Duration::from_millis(300));
        assert!(matches!(silent, Err(ProbeError::Timeout(_))), "{silent:?}");

        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let refused = probe(
            &parse_url(&format!("http://127.0.0.1:{port}/healthz")).unwrap(),
            Duration::from_secs(5),
        );
        assert!(
            matches!(refused, Err(ProbeError::Connect { .. })),
            "{refused:?}"
        );
    }
}
