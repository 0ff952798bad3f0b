//! Certificates for hubs that serve TLS themselves (`--tls-cert`, `--tls-key`), and HTTPS clients
//! that trust them.
//!
//! [`TestCa`] is a certificate authority made for one test (its key never leaves the test's
//! memory); [`TestCa::issue`] signs a server certificate for the names given (an IP literal such
//! as `127.0.0.1` becomes an IP address name). [`CertificateFiles`] holds a certificate and its key
//! as PEM files in a temporary directory, where a hub reads them, and [`CertificateFiles::replace`]
//! swaps both as a renewal does (each written aside, then renamed over the old one, so the hub
//! never reads half a file). [`TestCa::client`] and [`TestCa::http1_client`] are `reqwest`
//! clients that trust only this authority: the first offers `h2` and `http/1.1` by ALPN, as a
//! browser does, the second `http/1.1` only.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;

/// A certificate authority for one test.
pub struct TestCa {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// A server certificate and its private key, as PEM.
#[derive(Clone, Debug)]
pub struct ServerCertificate {
    /// The certificate (PEM), alone: the authority is the client's trust anchor.
    pub cert_pem: String,
    /// Its private key (PKCS#8 PEM).
    pub key_pem: String,
    /// The certificate (DER), to compare with what a client was shown.
    pub der: Vec<u8>,
}

impl TestCa {
    /// A new authority named `name`. Panics if the key cannot be generated.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new())
            .unwrap_or_else(|e| panic!("authority parameters: {e}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("authority key: {e}"));
        let cert = params
            .self_signed(&key)
            .unwrap_or_else(|e| panic!("authority certificate: {e}"));
        TestCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The authority's certificate (PEM).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A server certificate for `names` (host names or IP literals), signed by this authority.
    pub fn issue(&self, names: &[&str]) -> ServerCertificate {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params =
            CertificateParams::new(names).unwrap_or_else(|e| panic!("server parameters: {e}"));
        params.distinguished_name.push(DnType::CommonName, "hub");
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("server key: {e}"));
        let cert = params
            .signed_by(&key, &self.issuer)
            .unwrap_or_else(|e| panic!("server certificate: {e}"));
        ServerCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// An HTTPS client trusting only this authority, offering HTTP/2 and HTTP/1.1 (ALPN `h2`,
    /// `http/1.1`) as a browser does, with [`crate::http_client`]'s settings. Its responses carry
    /// the certificate the hub presented ([`presented_certificate`]).
    pub fn client(&self) -> reqwest::Client {
        self.builder()
            .build()
            .unwrap_or_else(|e| panic!("HTTPS client: {e}"))
    }

    /// [`TestCa::client`] offering HTTP/1.1 only (ALPN `http/1.1`).
    pub fn http1_client(&self) -> reqwest::Client {
        self.builder()
            .http1_only()
            .build()
            .unwrap_or_else(|e| panic!("HTTPS/1.1 client: {e}"))
    }

    fn builder(&self) -> reqwest::ClientBuilder {
        let root = reqwest::Certificate::from_pem(self.pem.as_bytes())
            .unwrap_or_else(|e| panic!("the authority's certificate: {e}"));
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(root)
            .tls_info(true)
            .pool_max_idle_per_host(0)
            .connect_timeout(Duration::from_secs(5))
    }
}

/// The certificate (DER) the server presented on the connection of `response`, from a client
/// built by [`TestCa`].
pub fn presented_certificate(response: &reqwest::Response) -> Option<Vec<u8>> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()?
        .peer_certificate()
        .map(<[u8]>::to_vec)
}

/// A certificate and its key as files a hub reads (`cert.pem`, `key.pem` in a temporary
/// directory, removed on drop).
#[derive(Debug)]
pub struct CertificateFiles {
    dir: TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl CertificateFiles {
    /// Writes `certificate` to new files. Panics if they cannot be written.
    pub fn new(certificate: &ServerCertificate) -> CertificateFiles {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("certificate directory: {e}"));
        let files = CertificateFiles {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
            dir,
        };
        files.replace(certificate);
        files
    }

    /// The certificate file.
    pub fn cert(&self) -> &Path {
        &self.cert
    }

    /// The key file.
    pub fn key(&self) -> &Path {
        &self.key
    }

    /// `--tls-cert CERT --tls-key KEY`, for a hub's command line.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }

    /// Replaces both files with `certificate`: the key first, then the certificate, each written
    /// aside and renamed over the old file.
    pub fn replace(&self, certificate: &ServerCertificate) {
        let write = |path: &Path, text: &str| {
            let aside = self.dir.path().join(".writing");
            std::fs::write(&aside, text)
                .and_then(|()| std::fs::rename(&aside, path))
                .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        };
        write(&self.key, &certificate.key_pem);
        write(&self.cert, &certificate.cert_pem);
    }
}
