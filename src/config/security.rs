//! The security settings: TLS for the peer and client ports, bearer-token authorization,
//! and how often their files are re-read.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, parse};

/// `[tls]`: certificates for the peer port (mutual TLS) and the client ports.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// How often the certificate, key, CA and tokens files are checked for a change.
    #[serde(deserialize_with = "parse::duration")]
    pub reload_interval: Duration,
    /// The peer port.
    pub peer: PeerTls,
    /// The REST and client gRPC ports.
    pub client: ClientTls,
}

/// `[tls.peer]`: mutual TLS between the nodes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerTls {
    /// This node's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA bundle (PEM) that peers' certificates must chain to.
    pub ca: PathBuf,
    /// Certificate names accepted on Raft RPCs besides the members' hosts.
    pub allowed_names: Vec<String>,
    /// Serve the peer port in plaintext on a non-loopback address anyway.
    pub insecure: bool,
}

/// `[tls.client]`: TLS for REST and client gRPC.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// The server certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// If set, clients must present a certificate from this CA bundle (PEM).
    pub ca: PathBuf,
}

/// `[auth]`: who may do what on the client ports.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// The tokens file (`sha256:<hex> <role> <name>` per line); empty: no authorization.
    pub tokens_file: PathBuf,
    /// `/metrics` needs no token (true) or the `metrics` or `admin` role (false).
    pub anonymous_metrics: bool,
}

fn set(p: &Path) -> bool {
    !p.as_os_str().is_empty()
}

impl PeerTls {
    /// Whether peer TLS is configured.
    pub fn enabled(&self) -> bool {
        set(&self.cert)
    }
}

impl ClientTls {
    /// Whether client TLS is configured.
    pub fn enabled(&self) -> bool {
        set(&self.cert)
    }

    /// Whether clients must present a certificate.
    pub fn verifies_clients(&self) -> bool {
        set(&self.ca)
    }
}

impl AuthSettings {
    /// Whether client requests are authorized.
    pub fn enabled(&self) -> bool {
        set(&self.tokens_file)
    }
}

/// Checks the TLS settings against each other and against the peer listen address.
pub(super) fn validate(tls: &TlsSettings, peer_addr: std::net::SocketAddr) -> Result<(), ConfigError> {
    let invalid = |key, problem: String| Err(ConfigError::Invalid { key, problem });
    let p = &tls.peer;
    let given = [set(&p.cert), set(&p.key), set(&p.ca)];
    if given.iter().any(|g| *g) && !given.iter().all(|g| *g) {
        return invalid(
            "tls.peer",
            "`cert`, `key` and `ca` are needed together (mutual TLS: this node's certificate and key, and the CA its peers' certificates chain to)".into(),
        );
    }
    let c = &tls.client;
    if set(&c.cert) != set(&c.key) {
        return invalid("tls.client", "`cert` and `key` are needed together".into());
    }
    if set(&c.ca) && !set(&c.cert) {
        return invalid(
            "tls.client.ca",
            "verifying client certificates needs `tls.client.cert` and `tls.client.key` too".into(),
        );
    }
    if tls.reload_interval < Duration::from_millis(100) {
        return invalid("tls.reload_interval", "must be at least 100ms".into());
    }
    if !p.enabled() && !p.insecure && !peer_addr.ip().is_loopback() {
        return invalid(
            "raft.addr",
            format!(
                "{peer_addr} is reachable from other machines, and without peer TLS anyone who can reach it can \
                 join, remove members, or overwrite the log. Set tls.peer.cert, tls.peer.key and tls.peer.ca \
                 (`openraft-memory certs` makes a development CA), or set tls.peer.insecure = true \
                 (OPENRAFT_MEMORY__TLS__PEER__INSECURE=true) on a network you trust"
            ),
        );
    }
    Ok(())
}
