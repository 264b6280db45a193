//! TLS material: reading PEM files, building the rustls configurations of the three ports,
//! and what a peer's certificate says about it (its names, serial and expiry).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::SecurityError;

/// The one crypto provider: ring (aws-lc-rs, rustls' default, needs a C toolchain build).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process-wide default provider, for libraries that build their own
/// rustls configurations from it (reqwest in the tests and the chaos harness). Idempotent.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn bad(path: &Path, problem: impl std::fmt::Display) -> SecurityError {
    SecurityError::File {
        path: path.to_owned(),
        problem: problem.to_string(),
    }
}

/// The certificates of a PEM file, at least one.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, SecurityError> {
    let bytes = std::fs::read(path).map_err(|e| bad(path, e))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(bad(
            path,
            "holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)",
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, SecurityError> {
    let bytes = std::fs::read(path).map_err(|e| bad(path, e))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| bad(path, format!("holds no usable PEM private key: {e}")))
}

fn roots(path: &Path) -> Result<Arc<RootCertStore>, SecurityError> {
    let mut store = RootCertStore::empty();
    for cert in read_certs(path)? {
        store
            .add(cert)
            .map_err(|e| bad(path, format!("a CA certificate is unusable: {e}")))?;
    }
    Ok(Arc::new(store))
}

/// Whether `key` belongs to the first certificate of `certs`.
fn check_pair(
    certs: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    key_path: &Path,
) -> Result<Arc<rustls::sign::CertifiedKey>, SecurityError> {
    let certified = rustls::sign::CertifiedKey::from_der(certs.to_vec(), key.clone_key(), &provider())
        .map_err(|e| bad(key_path, format!("does not match its certificate: {e}")))?;
    Ok(Arc::new(certified))
}

/// A server configuration; `clients` is the CA that client certificates must chain to and
/// whether one is required.
pub fn server_config(
    cert: &Path,
    key: &Path,
    clients: Option<(&Path, bool)>,
) -> Result<Arc<ServerConfig>, SecurityError> {
    let certs = read_certs(cert)?;
    let private = read_key(key)?;
    check_pair(&certs, &private, key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(cert, e))?;
    let builder = match clients {
        Some((ca, required)) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider());
            let verifier = if required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| bad(ca, e))?)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, private)
        .map_err(|e| bad(cert, e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The peer client's configuration: trusts `ca` only and presents this node's certificate.
pub fn client_config(cert: &Path, key: &Path, ca: &Path) -> Result<Arc<ClientConfig>, SecurityError> {
    let certs = read_certs(cert)?;
    let private = read_key(key)?;
    check_pair(&certs, &private, key)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(cert, e))?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(certs, private)
        .map_err(|e| bad(cert, e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration trusting the CA certificates in `ca_pem`, presenting `identity`
/// (certificate chain and key, PEM) if given, offering `alpn`.
pub fn client_trusting(
    ca_pem: &[u8],
    identity: Option<(&[u8], &[u8])>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, SecurityError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| SecurityError::Pem(format!("{what}: {e}"));
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| bad("CA bundle", &e))?;
        roots.add(cert).map_err(|e| bad("CA certificate", &e))?;
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("TLS versions", &e))?
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => {
            let chain = CertificateDer::pem_slice_iter(chain)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad("client certificate", &e))?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| bad("client key", &e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| bad("client certificate", &e))?
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Dials `target` (host:port) over TLS, checking the server's certificate against the host.
pub async fn connect(
    config: Arc<ClientConfig>,
    target: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let name = rustls::pki_types::ServerName::try_from(host_of(target).trim_matches(['[', ']']).to_owned())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let stream = tokio::net::TcpStream::connect(target).await?;
    let _ = stream.set_nodelay(true);
    tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
}

/// A gRPC channel from `endpoint`'s settings to `target` (host:port) over TLS with `config`.
pub async fn channel(
    endpoint: tonic::transport::Endpoint,
    target: &str,
    config: Arc<ClientConfig>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let target = target.to_owned();
    let connector = tower::service_fn(move |_: http::Uri| {
        let (config, target) = (config.clone(), target.clone());
        async move { connect(config, &target).await.map(hyper_util::rt::TokioIo::new) }
    });
    endpoint.connect_with_connector(connector).await
}

/// A client configuration that accepts any server certificate, for the local health probe
/// only (it sends no credential; see `probe.rs`).
pub fn unverified_client() -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = provider();
    let verifier = Arc::new(AnyServer(provider.clone()));
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct AnyServer(Arc<CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What a verified certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// DNS names (lowercase) and IP addresses from the subject alternative names.
    pub names: Vec<String>,
    /// The subject's common name, if any.
    pub common_name: Option<String>,
    /// The serial number, hex.
    pub serial: String,
    /// Expiry, seconds since the Unix epoch.
    pub not_after: i64,
}

impl CertInfo {
    /// Reads a DER certificate.
    pub fn parse(der: &[u8]) -> Option<CertInfo> {
        use x509_parser::prelude::*;
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => names.push(dns.to_ascii_lowercase()),
                    GeneralName::IPAddress(raw) => {
                        let ip = match raw.len() {
                            4 => <[u8; 4]>::try_from(*raw).ok().map(IpAddr::from),
                            16 => <[u8; 16]>::try_from(*raw).ok().map(IpAddr::from),
                            _ => None,
                        };
                        names.extend(ip.map(|ip| ip.to_string()));
                    }
                    _ => {}
                }
            }
        }
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        Some(CertInfo {
            names,
            common_name,
            serial: cert.raw_serial_as_string().replace(':', ""),
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    /// Whether the certificate names `host` (a DNS name, `*.` wildcards matching one label,
    /// or an IP address).
    pub fn names_host(&self, host: &str) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.names.iter().any(|n| n.parse::<IpAddr>().ok() == Some(ip));
        }
        let host = host.to_ascii_lowercase();
        self.names.iter().any(|name| match name.strip_prefix("*.") {
            Some(suffix) => host
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
            None => *name == host,
        })
    }

    /// The holder's identity for logs and authorization: the first DNS name, else the
    /// common name, else the first IP address.
    pub fn identity(&self) -> String {
        self.names
            .iter()
            .find(|n| n.parse::<IpAddr>().is_err())
            .cloned()
            .or_else(|| self.common_name.clone())
            .or_else(|| self.names.first().cloned())
            .unwrap_or_else(|| format!("serial {}", self.serial))
    }
}

/// The earliest expiry among the certificates of a PEM file.
pub fn earliest_expiry(path: &Path) -> Option<i64> {
    read_certs(path)
        .ok()?
        .iter()
        .filter_map(|c| CertInfo::parse(c).map(|i| i.not_after))
        .min()
}

/// The host part of `host:port` (IPv6 in brackets kept whole).
pub fn host_of(addr: &str) -> &str {
    match addr.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(names: &[&str]) -> CertInfo {
        CertInfo {
            names: names.iter().map(|s| s.to_string()).collect(),
            common_name: Some("cn".into()),
            serial: "01".into(),
            not_after: 0,
        }
    }

    #[test]
    fn hosts_match_exact_names_wildcards_of_one_label_and_ips() {
        let cert = info(&["node-1.db.svc", "*.db.default.svc", "127.0.0.2", "::1"]);
        assert!(cert.names_host("node-1.db.svc"));
        assert!(cert.names_host("NODE-1.db.svc."));
        assert!(!cert.names_host("node-2.db.svc"));
        assert!(cert.names_host("db-0.db.default.svc"));
        assert!(
            !cert.names_host("a.b.db.default.svc"),
            "a wildcard covers one label"
        );
        assert!(!cert.names_host("db.default.svc"));
        assert!(cert.names_host("127.0.0.2"));
        assert!(!cert.names_host("127.0.0.3"));
        assert!(cert.names_host("[::1]"));
    }

    #[test]
    fn identity_prefers_a_dns_name_then_the_common_name() {
        assert_eq!(info(&["10.0.0.1", "alice"]).identity(), "alice");
        assert_eq!(info(&["10.0.0.1"]).identity(), "cn");
        assert_eq!(host_of("node-1.db:50052"), "node-1.db");
        assert_eq!(host_of("[::1]:50052"), "[::1]");
        assert_eq!(host_of("noport"), "noport");
    }
}
