//! `--tls`: every node gets a certificate of a CA made for the run (naming only its own
//! address), and runs mutual TLS on the peer port and TLS on the client ports; the
//! clients trust that CA. Partitions then cut TLS connections, which must be detected and
//! re-dialled like plain ones.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft_memory::security::certs::{DevCa, Validity};

/// The run's CA and where its files go.
pub struct Tls {
    ca: DevCa,
    dir: PathBuf,
}

impl Tls {
    pub fn new(dir: &Path) -> Tls {
        let tls = Tls {
            ca: DevCa::new("chaos CA").expect("CA"),
            dir: dir.to_owned(),
        };
        write(&tls.dir.join("ca.crt"), tls.ca.cert_pem());
        tls
    }

    pub fn ca_pem(&self) -> String {
        self.ca.cert_pem().to_owned()
    }

    /// The settings of a node on `ip`, issuing its certificate on first use.
    pub fn node_env(&self, ordinal: usize, ip: IpAddr) -> Vec<(String, String)> {
        let cert = self.dir.join(format!("chaos-{ordinal}.crt"));
        let key = self.dir.join(format!("chaos-{ordinal}.key"));
        if !cert.exists() {
            let issued = self
                .ca
                .issue(&[ip.to_string()], Validity::Days(1))
                .expect("issue");
            write(&key, &issued.key);
            write(&cert, &issued.cert);
        }
        let p = |p: &Path| p.display().to_string();
        let ca = self.dir.join("ca.crt");
        [
            ("OPENRAFT_MEMORY__TLS__PEER__CERT", p(&cert)),
            ("OPENRAFT_MEMORY__TLS__PEER__KEY", p(&key)),
            ("OPENRAFT_MEMORY__TLS__PEER__CA", p(&ca)),
            ("OPENRAFT_MEMORY__TLS__CLIENT__CERT", p(&cert)),
            ("OPENRAFT_MEMORY__TLS__CLIENT__KEY", p(&key)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// Readable by the nodes' own uids (the run directory is private to this run).
fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write TLS file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
}

fn config(ca_pem: &str, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    openraft_memory::security::tls::client_trusting(ca_pem.as_bytes(), None, &[alpn]).expect("client config")
}

/// A REST client, trusting `ca` when given.
pub fn http_client(ca: Option<&str>, timeout: Option<Duration>) -> reqwest::Client {
    openraft_memory::security::tls::install_default_provider();
    let mut b = reqwest::Client::builder().pool_max_idle_per_host(1);
    if let Some(t) = timeout {
        b = b.timeout(t);
    }
    if let Some(ca) = ca {
        b = b.tls_backend_preconfigured((*config(ca, b"http/1.1")).clone());
    }
    b.build().expect("http client")
}

/// A client gRPC channel to `url` (`http://ip:port` or `https://ip:port`).
pub async fn grpc_channel(url: String, ca: Option<&str>) -> Option<tonic::transport::Channel> {
    let Some(ca) = ca else {
        return tonic::transport::Channel::from_shared(url)
            .ok()?
            .connect()
            .await
            .ok();
    };
    let target = url.trim_start_matches("https://");
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{target}")).ok()?;
    openraft_memory::security::tls::channel(endpoint, target, config(ca, b"h2"))
        .await
        .ok()
}
