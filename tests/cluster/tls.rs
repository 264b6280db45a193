//! TLS test fixtures: a CA made in the test, certificates per node written to files, the
//! node settings that use them, and clients (REST, client gRPC, peer gRPC) that speak TLS.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft_memory::security::certs::{DevCa, Issued, Validity};
use openraft_memory::security::tls::{CertInfo, provider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::{Channel, Endpoint};

/// A CA and the directory its files go to.
pub struct Pki {
    pub ca: DevCa,
    pub dir: tempfile::TempDir,
}

/// A certificate and key on disk.
#[derive(Clone)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub issued: Issued,
}

/// Replaces `path` atomically (as a Kubernetes Secret volume does).
pub fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        Pki {
            ca: DevCa::new(name).expect("CA"),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The CA bundle file (`ca.crt`), written on first use.
    pub fn ca_file(&self) -> PathBuf {
        let path = self.dir.path().join("ca.crt");
        if !path.exists() {
            replace(&path, self.ca.cert_pem());
        }
        path
    }

    /// Issues a certificate for `names` and writes it as `<file>.crt` / `<file>.key`.
    pub fn issue(&self, file: &str, names: &[String], validity: Validity) -> Pair {
        let issued = self.ca.issue(names, validity).expect("issue");
        let (cert, key) = (
            self.dir.path().join(format!("{file}.crt")),
            self.dir.path().join(format!("{file}.key")),
        );
        replace(&cert, &issued.cert);
        replace(&key, &issued.key);
        Pair { cert, key, issued }
    }
}

/// Settings for TLS on every port with `pair`, trusting `ca`.
pub fn node_env(pair: &Pair, ca: &Path) -> Vec<(String, String)> {
    let p = |s: &Path| s.display().to_string();
    vec![
        ("OPENRAFT_MEMORY__TLS__PEER__CERT".into(), p(&pair.cert)),
        ("OPENRAFT_MEMORY__TLS__PEER__KEY".into(), p(&pair.key)),
        ("OPENRAFT_MEMORY__TLS__PEER__CA".into(), p(ca)),
        ("OPENRAFT_MEMORY__TLS__CLIENT__CERT".into(), p(&pair.cert)),
        ("OPENRAFT_MEMORY__TLS__CLIENT__KEY".into(), p(&pair.key)),
        ("OPENRAFT_MEMORY__TLS__RELOAD_INTERVAL".into(), "200ms".into()),
    ]
}

fn roots(ca_pem: &str) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("pem")).expect("root");
    }
    roots
}

/// A rustls client configuration trusting `ca_pem`, presenting `identity` if given.
pub fn client_config(ca_pem: &str, identity: Option<&Issued>, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots(ca_pem));
    let mut config = match identity {
        Some(id) => {
            let chain = CertificateDer::pem_slice_iter(id.cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("chain");
            let key = PrivateKeyDer::from_pem_slice(id.key.as_bytes()).expect("key");
            builder.with_client_auth_cert(chain, key).expect("client cert")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// A REST client trusting `ca_pem`.
pub fn https(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(client_config(ca_pem, None, &[b"http/1.1"]))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("https client")
}

/// A gRPC channel over TLS to `addr`, verifying the server as `addr`'s IP.
pub async fn grpc_channel(
    addr: SocketAddr,
    config: rustls::ClientConfig,
) -> Result<Channel, tonic::transport::Error> {
    let config = Arc::new(config);
    let connector = tower::service_fn(move |_: http::Uri| {
        let config = config.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = ServerName::IpAddress(addr.ip().into());
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(3))
        .connect_with_connector(connector)
        .await
}

/// The certificate `addr` presents in a fresh handshake.
pub async fn presented(addr: SocketAddr, ca_pem: &str) -> Option<CertInfo> {
    let config = Arc::new(client_config(ca_pem, None, &[b"http/1.1"]));
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let ip: IpAddr = addr.ip();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::IpAddress(ip.into()), tcp)
        .await
        .ok()?;
    let der = tls.get_ref().1.peer_certificates()?.first()?.clone();
    CertInfo::parse(&der)
}
