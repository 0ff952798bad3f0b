//! TLS on the main listener (`--tls-cert`, `--tls-key`), so a single node can face browsers
//! without a load balancer.
//!
//! Browsers open at most six HTTP/1.1 connections per origin, and every open `EventSource` holds
//! one: over plain HTTP/1.1 a seventh tab of the same app waits for another to close. Over TLS
//! the client and the hub agree on HTTP/2 by ALPN (`h2`, else `http/1.1`), and one HTTP/2
//! connection carries all the tabs' streams (up to `--http2-max-streams`).
//!
//! [`Tls::load`] reads the certificate chain and its private key (PEM) and builds the one
//! [`rustls::ServerConfig`] every handshake uses; the certificate itself is not part of it but
//! looked up per handshake in a [`CertificateSlot`]. [`Tls::watch`] reads both files again every
//! [`RELOAD_CHECK_INTERVAL`] and, when their bytes changed and the new pair is usable (the key
//! signs for the certificate), swaps it into the slot: handshakes from then on present the new
//! certificate; established connections keep the session they negotiated and are not dropped. A
//! pair that cannot be used (a half-written file, a key that does not match) leaves the previous
//! certificate in place and is reported once, then tried again when the files change again.
//!
//! The files are compared by content rather than by modification time: a Kubernetes Secret
//! volume replaces them through a symbolic link swap, and a copy may keep the old time.
//!
//! The handshake itself, its timeout and what a plain-HTTP request to this port is answered live
//! with the rest of a connection's life in [`crate::sse::accept`].

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use prometheus_client::metrics::counter::Counter;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The ALPN name of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";

/// The ALPN name of HTTP/1.1.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// How often the certificate and key files are read again to see whether they changed: two small
/// reads, cheap enough to notice a renewed certificate within a second or two.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The largest certificate or key file read: a chain of a few certificates is a few KiB, and a
/// path pointing at something else must not make the hub read it whole.
const MAX_PEM_FILE: u64 = 1024 * 1024;

/// The listener's TLS metrics.
#[derive(Clone, Debug, Default)]
pub struct TlsMetrics {
    /// Handshakes that failed (a client that is not TLS, or refused our certificate or protocols).
    pub handshake_failures: Counter,
    /// Connections closed because their handshake did not finish within the header read timeout.
    pub handshake_timeouts: Counter,
    /// Plain-HTTP requests to the TLS listener, answered 400.
    pub plaintext_refused: Counter,
    /// Certificates loaded again after their files changed.
    pub reloads: Counter,
    /// Changed certificate files that could not be used (the previous certificate stays).
    pub reload_failures: Counter,
}

/// Why a certificate and key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file is larger than any certificate chain or key.
    #[error("{} is larger than {MAX_PEM_FILE} bytes: not a PEM certificate or key", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The certificate file holds no usable certificate.
    #[error("{}: no certificate (expected PEM `CERTIFICATE` blocks, the server's own first): {reason}", path.display())]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What the PEM reader said.
        reason: String,
    },
    /// The key file holds no usable private key.
    #[error("{}: no private key (expected a PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block): {reason}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What the PEM reader said.
        reason: String,
    },
    /// The key is of an unsupported kind, or is not the certificate's.
    #[error("the key in {} cannot serve the certificate in {}: {reason}", key.display(), cert.display())]
    Unusable {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
}

/// The certificate handshakes present, swapped whole when the files change. A read lock held for
/// the clone of one `Arc` per handshake: a `parking_lot` lock, never held across an `.await`.
#[derive(Debug)]
struct CertificateSlot(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CertificateSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().clone())
    }
}

/// The contents of the two files, as last read.
#[derive(Clone, Default, PartialEq, Eq)]
struct PemFiles {
    cert: Vec<u8>,
    key: Vec<u8>,
}

/// What the reload check remembers between two looks at the files.
#[derive(Default)]
struct Seen {
    /// The files the current certificate was built from.
    loaded: PemFiles,
    /// Files that could not be used, reported once.
    refused: Option<PemFiles>,
}

/// A handle to the listener's TLS settings: the acceptor every connection's handshake uses, and
/// the certificate files it watches ([`Tls::watch`], run by the server until it stops).
#[derive(Clone)]
pub struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    /// The same, offering HTTP/1.1 only: a refused connection is answered in HTTP/1.1, which a
    /// client that agreed on HTTP/2 could not read.
    refusal_acceptor: tokio_rustls::TlsAcceptor,
    slot: Arc<CertificateSlot>,
    cert_path: Arc<Path>,
    key_path: Arc<Path>,
    seen: Arc<Mutex<Seen>>,
    metrics: TlsMetrics,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads the certificate chain at `cert` and the private key at `key` and builds the server's
    /// TLS configuration (TLS 1.3 and 1.2, ALPN `h2` then `http/1.1`, ring's algorithms).
    pub fn load(cert: &Path, key: &Path, metrics: TlsMetrics) -> Result<Self, TlsError> {
        let files = read_files(cert, key)?;
        let certified = certified_key(&files, cert, key)?;
        let slot = Arc::new(CertificateSlot(RwLock::new(certified)));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Unusable {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                reason: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(slot.clone());
        // Resumption by stateless tickets (keys rotated every few hours, held in memory only):
        // clients reconnecting after `--write-timeout` or a drain resume their session instead
        // of a full handshake, without a per-session cache on the node.
        if let Ok(ticketer) = rustls::crypto::ring::Ticketer::new() {
            config.ticketer = ticketer;
        }
        let mut refusal = config.clone();
        refusal.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            refusal_acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(refusal)),
            slot,
            cert_path: Arc::from(cert),
            key_path: Arc::from(key),
            seen: Arc::new(Mutex::new(Seen {
                loaded: files,
                refused: None,
            })),
            metrics,
        })
    }

    /// The acceptor that runs a connection's handshake.
    pub fn acceptor(&self) -> &tokio_rustls::TlsAcceptor {
        &self.acceptor
    }

    /// The acceptor of a connection that is refused (HTTP/1.1 only, so it can read the answer).
    pub fn refusal_acceptor(&self) -> &tokio_rustls::TlsAcceptor {
        &self.refusal_acceptor
    }

    /// The listener's TLS metrics.
    pub fn metrics(&self) -> &TlsMetrics {
        &self.metrics
    }

    /// Reads the files again and, when they changed and are usable, serves their certificate from
    /// the next handshake on. `Ok(true)`: a new certificate is served; `Ok(false)`: nothing
    /// changed (or the change was already refused); `Err`: the files changed but cannot be used,
    /// and the previous certificate stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let files = read_files(&self.cert_path, &self.key_path)?;
        let mut seen = self.seen.lock();
        if files == seen.loaded || seen.refused.as_ref() == Some(&files) {
            return Ok(false);
        }
        match certified_key(&files, &self.cert_path, &self.key_path) {
            Ok(certified) => {
                *self.slot.0.write() = certified;
                seen.loaded = files;
                seen.refused = None;
                self.metrics.reloads.inc();
                Ok(true)
            }
            Err(e) => {
                seen.refused = Some(files);
                self.metrics.reload_failures.inc();
                Err(e)
            }
        }
    }

    /// Checks the files every [`RELOAD_CHECK_INTERVAL`] (see the module documentation); runs until
    /// dropped.
    pub async fn watch(self) {
        // A file that cannot be read is reported once until it can be read again: a Secret being
        // replaced can be missing for a moment.
        let mut unreadable = false;
        loop {
            tokio::time::sleep(RELOAD_CHECK_INTERVAL).await;
            // Off the reactor: a file read can block (a network file system).
            let tls = self.clone();
            let outcome = match tokio::task::spawn_blocking(move || tls.reload()).await {
                Ok(outcome) => outcome,
                Err(_) => continue,
            };
            match outcome {
                Ok(true) => {
                    unreadable = false;
                    tracing::info!(
                        cert = %self.cert_path.display(),
                        "TLS certificate reloaded: new connections get the new certificate"
                    );
                }
                Ok(false) => unreadable = false,
                Err(e @ (TlsError::Read { .. } | TlsError::TooLarge { .. })) => {
                    if !unreadable {
                        tracing::warn!(error = %e, "TLS certificate files unreadable; serving the previous certificate");
                    }
                    unreadable = true;
                }
                Err(e) => {
                    unreadable = false;
                    tracing::warn!(error = %e, "changed TLS certificate files refused; serving the previous certificate");
                }
            }
        }
    }
}

/// Reads both files.
fn read_files(cert: &Path, key: &Path) -> Result<PemFiles, TlsError> {
    Ok(PemFiles {
        cert: read_bounded(cert)?,
        key: read_bounded(key)?,
    })
}

/// Reads `path`, refusing anything larger than [`MAX_PEM_FILE`].
fn read_bounded(path: &Path) -> Result<Vec<u8>, TlsError> {
    let read = |source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > MAX_PEM_FILE {
        return Err(TlsError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

/// The certificate chain and signing key of `files`, checked to belong together.
fn certified_key(
    files: &PemFiles,
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(&files.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate {
            path: cert_path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Certificate {
            path: cert_path.to_path_buf(),
            reason: "no items found".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&files.key).map_err(|e| TlsError::Key {
        path: key_path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let unusable = |e: rustls::Error| TlsError::Unusable {
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
        reason: e.to_string(),
    };
    let provider = rustls::crypto::ring::default_provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(unusable)?;
    let certified = CertifiedKey::new(chain, signing_key);
    // A key rustls cannot compare (none of ring's key types) is refused too: a mismatched pair
    // would fail every handshake instead of failing here.
    certified.keys_match().map_err(unusable)?;
    Ok(Arc::new(certified))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn write(dir: &Path, cert: &str, key: &str) -> (PathBuf, PathBuf) {
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        (c, k)
    }

    fn served(tls: &Tls) -> Vec<u8> {
        tls.slot.0.read().cert[0].to_vec()
    }

    #[test]
    fn a_pair_is_loaded_and_a_mismatched_or_broken_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_a, key_a) = pair("a.test");
        let (cert_b, key_b) = pair("b.test");
        let (c, k) = write(dir.path(), &cert_a, &key_a);
        assert!(Tls::load(&c, &k, TlsMetrics::default()).is_ok());

        write(dir.path(), &cert_a, &key_b);
        let e = Tls::load(&c, &k, TlsMetrics::default()).unwrap_err();
        assert!(matches!(e, TlsError::Unusable { .. }), "{e}");
        write(dir.path(), &key_a, &key_a);
        let e = Tls::load(&c, &k, TlsMetrics::default()).unwrap_err();
        assert!(matches!(e, TlsError::Certificate { .. }), "{e}");
        write(dir.path(), &cert_b, &cert_b);
        let e = Tls::load(&c, &k, TlsMetrics::default()).unwrap_err();
        assert!(matches!(e, TlsError::Key { .. }), "{e}");
        let e = Tls::load(&dir.path().join("missing.pem"), &k, TlsMetrics::default()).unwrap_err();
        assert!(e.to_string().contains("missing.pem"), "{e}");
    }

    #[test]
    fn a_changed_pair_replaces_the_certificate_and_a_bad_one_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_a, key_a) = pair("a.test");
        let (cert_b, key_b) = pair("b.test");
        let (c, k) = write(dir.path(), &cert_a, &key_a);
        let metrics = TlsMetrics::default();
        let tls = Tls::load(&c, &k, metrics.clone()).unwrap();
        let first = served(&tls);
        assert!(!tls.reload().unwrap(), "nothing changed");

        // Half-way through a replacement: the new certificate with the old key.
        write(dir.path(), &cert_b, &key_a);
        assert!(tls.reload().is_err());
        assert_eq!(served(&tls), first, "the previous certificate stays");
        assert!(!tls.reload().unwrap(), "a refused pair is reported once");
        assert_eq!(metrics.reload_failures.get(), 1);

        write(dir.path(), &cert_b, &key_b);
        assert!(tls.reload().unwrap());
        assert_ne!(served(&tls), first);
        assert_eq!(metrics.reloads.get(), 1);
    }
}
