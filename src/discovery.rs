//! Finding peers and resolving their names.
//!
//! - [`Discovery`] lists the other members' peer addresses: a static list (`cluster.peers`)
//!   or, on Kubernetes, the SRV records `_raft._tcp.<dns_name>` of the headless Service
//!   (`publishNotReadyAddresses: true` so pods that are not ready yet are listed too).
//! - [`HostResolver`] turns a host name into addresses with hickory at every connect, so a
//!   pod that came back with a new IP is reached at the new one. We do not use glibc's
//!   `getaddrinfo`: it is unreliable in the static binary and cannot be pointed at a
//!   test DNS server.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};

use crate::config::{DiscoveryMode, Settings};

/// Why peers could not be listed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DiscoveryError {
    /// The DNS query failed (server unreachable, timeout, malformed answer).
    #[error("DNS lookup of `{name}` failed: {message}")]
    Dns {
        /// The queried name.
        name: String,
        /// What the resolver said.
        message: String,
    },
    /// The resolver could not be built.
    #[error("cannot set up DNS resolution: {0}")]
    Setup(String),
}

/// One discovered peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The peer's node name when discovery knows it (the first label of an SRV target).
    pub name: Option<String>,
    /// `host:port` of its peer port.
    pub addr: String,
}

/// Resolves host names for peer connections.
#[derive(Clone)]
pub struct HostResolver {
    resolver: Option<Arc<TokioResolver>>,
}

impl HostResolver {
    /// A resolver that asks `server` (`IP:PORT`), or the system's configured servers when
    /// `None`. Without `/etc/resolv.conf` it falls back to the OS resolver.
    pub fn new(server: Option<SocketAddr>) -> Result<HostResolver, DiscoveryError> {
        let builder = match server {
            Some(addr) => {
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                for c in &mut ns.connections {
                    c.port = addr.port();
                }
                Resolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![ns]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => match Resolver::builder_tokio() {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "no usable /etc/resolv.conf: resolving peer names with the OS resolver");
                    return Ok(HostResolver { resolver: None });
                }
            },
        };
        let mut builder = builder;
        let opts = builder.options_mut();
        // Pods come and go: never trust an answer for long, and retry a missing name soon.
        opts.positive_max_ttl = Some(Duration::from_secs(5));
        opts.negative_max_ttl = Some(Duration::from_secs(1));
        opts.timeout = Duration::from_secs(2);
        opts.attempts = 2;
        let resolver = builder
            .build()
            .map_err(|e| DiscoveryError::Setup(e.to_string()))?;
        Ok(HostResolver {
            resolver: Some(Arc::new(resolver)),
        })
    }

    /// The addresses of `host` (an IP literal resolves to itself).
    pub async fn resolve(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        match &self.resolver {
            Some(r) => {
                let fqdn = if host.ends_with('.') {
                    host.to_owned()
                } else {
                    format!("{host}.")
                };
                let lookup = r
                    .lookup_ip(fqdn.as_str())
                    .await
                    .map_err(|e| io::Error::new(io::ErrorKind::NotFound, format!("resolving {host}: {e}")))?;
                Ok(lookup.iter().collect())
            }
            None => Ok(tokio::net::lookup_host((host, 0))
                .await?
                .map(|a| a.ip())
                .collect()),
        }
    }

    fn dns(&self) -> Option<&TokioResolver> {
        self.resolver.as_deref()
    }
}

/// Where peers come from.
#[derive(Clone)]
pub struct Discovery {
    mode: Mode,
    resolver: HostResolver,
    own_name: String,
    own_addr: String,
}

#[derive(Clone)]
enum Mode {
    Static(Vec<String>),
    Dns { srv_name: String },
}

impl Discovery {
    /// Discovery as the settings describe it; `own_addr` is this node's advertised address.
    pub fn from_settings(settings: &Settings, own_addr: &str) -> Result<Discovery, DiscoveryError> {
        let resolver = HostResolver::new(settings.discovery.dns_server)?;
        let mode = match settings.discovery.mode {
            DiscoveryMode::Static => Mode::Static(settings.cluster.peers.clone()),
            DiscoveryMode::Dns => Mode::Dns {
                srv_name: format!(
                    "_raft._tcp.{}.",
                    settings.discovery.dns_name.trim_end_matches('.')
                ),
            },
        };
        Ok(Discovery {
            mode,
            resolver,
            own_name: settings.node.name.clone(),
            own_addr: own_addr.to_owned(),
        })
    }

    /// The resolver peer connections use.
    pub fn resolver(&self) -> &HostResolver {
        &self.resolver
    }

    /// True when peers come from DNS (and absence from DNS means a pod is gone).
    pub fn is_dns(&self) -> bool {
        matches!(self.mode, Mode::Dns { .. })
    }

    /// True when there is nobody to discover: a single-node cluster.
    pub fn is_standalone(&self) -> bool {
        matches!(&self.mode, Mode::Static(p) if p.is_empty())
    }

    /// The other members as discovery sees them now (this node excluded). An empty DNS
    /// answer is an error: with `publishNotReadyAddresses` a running pod always sees at
    /// least itself, so "nothing" means the records are not there yet.
    pub async fn peers(&self) -> Result<Vec<Peer>, DiscoveryError> {
        match &self.mode {
            Mode::Static(peers) => Ok(peers
                .iter()
                .filter(|p| **p != self.own_addr)
                .map(|p| Peer {
                    name: None,
                    addr: p.clone(),
                })
                .collect()),
            Mode::Dns { srv_name } => {
                let dns_err = |message: String| DiscoveryError::Dns {
                    name: srv_name.clone(),
                    message,
                };
                let resolver = self
                    .resolver
                    .dns()
                    .ok_or_else(|| DiscoveryError::Setup("DNS discovery needs a DNS resolver".into()))?;
                let lookup = resolver
                    .srv_lookup(srv_name.as_str())
                    .await
                    .map_err(|e| dns_err(e.to_string()))?;
                let mut peers: Vec<Peer> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::SRV(srv) => {
                            let target = srv.target.to_ascii();
                            let target = target.trim_end_matches('.').to_owned();
                            let name = target.split('.').next().unwrap_or_default().to_owned();
                            Some(Peer {
                                name: Some(name),
                                addr: format!("{target}:{}", srv.port),
                            })
                        }
                        _ => None,
                    })
                    .collect();
                if peers.is_empty() {
                    return Err(dns_err("no SRV records yet".into()));
                }
                peers.sort_by(|a, b| a.addr.cmp(&b.addr));
                peers.dedup();
                peers.retain(|p| p.name.as_deref() != Some(self.own_name.as_str()));
                Ok(peers)
            }
        }
    }
}
