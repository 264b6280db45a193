//! TLS test fixtures: a CA made in the test, certificates per node written to files, the
//! node settings that use them, and clients (REST, client gRPC, peer gRPC) that speak TLS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft_memory::security::certs::{DevCa, Issued, Validity};
use openraft_memory::security::tls::{self, CertInfo};
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

/// A rustls client configuration trusting `ca_pem`, presenting `identity` if given.
pub fn client_config(ca_pem: &str, identity: Option<&Issued>, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let identity = identity.map(|id| (id.cert.as_bytes(), id.key.as_bytes()));
    let config = tls::client_trusting(ca_pem.as_bytes(), identity, alpn).expect("client config");
    (*config).clone()
}

/// A REST client trusting `ca_pem`.
pub fn https(ca_pem: &str) -> reqwest::Client {
    https_as(ca_pem, None)
}

/// A REST client trusting `ca_pem` and presenting `identity`'s certificate, if given.
pub fn https_as(ca_pem: &str, identity: Option<&Issued>) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(client_config(ca_pem, identity, &[b"http/1.1"]))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("https client")
}

/// A gRPC channel over TLS to `addr`, verifying the server as `addr`'s IP.
pub async fn grpc_channel(
    addr: SocketAddr,
    config: rustls::ClientConfig,
) -> Result<Channel, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(3));
    tls::channel(endpoint, &addr.to_string(), Arc::new(config)).await
}

/// The certificate `addr` presents in a fresh handshake.
pub async fn presented(addr: SocketAddr, ca_pem: &str) -> Option<CertInfo> {
    let config = Arc::new(client_config(ca_pem, None, &[b"http/1.1"]));
    let tls = tls::connect(config, &addr.to_string()).await.ok()?;
    let der = tls.get_ref().1.peer_certificates()?.first()?.clone();
    CertInfo::parse(&der)
}
