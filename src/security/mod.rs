//! Security state: the TLS configurations of the peer and client ports and the tokens
//! file, loaded at start-up and re-loaded when their files change (polled every
//! `tls.reload_interval`, and at once on SIGHUP). A file that fails to load keeps the last
//! good configuration in use; the observer (the metrics) hears every outcome.
//!
//! Kubernetes swaps a Secret volume's files at once by re-pointing a `..data` symlink, so a
//! reload compares the files' contents, not their modification times.

pub mod auth;
pub mod certs;
pub mod tls;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rustls::{ClientConfig, ServerConfig};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::config::{AuthSettings, TlsSettings};
use auth::{Policy, Tokens};

/// Why security material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A certificate, key or CA file is missing or unusable.
    #[error("{}: {problem}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// PEM material handed over in memory is unusable.
    #[error("{0}")]
    Pem(String),
    /// The tokens file is missing or has a bad line.
    #[error("auth.tokens_file {}: {problem}", path.display())]
    Tokens {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
}

/// Hears the outcome of every load, for metrics.
pub trait Observer: Send + Sync {
    /// A part (`peer`, `client`, `tokens`) was loaded (`ok`) or failed to load.
    fn reloaded(&self, part: &'static str, ok: bool);
    /// A certificate file now in use expires at `not_after` (Unix seconds; the earliest of
    /// the file's certificates).
    fn expires(&self, file: &Path, not_after: i64);
}

/// An observer that ignores everything.
pub struct Unobserved;

impl Observer for Unobserved {
    fn reloaded(&self, _: &'static str, _: bool) {}
    fn expires(&self, _: &Path, _: i64) {}
}

/// The peer port's two sides.
#[derive(Clone)]
pub struct PeerConfigs {
    /// What the peer listener accepts with (client certificates required).
    pub server: Arc<ServerConfig>,
    /// What the peer client dials with.
    pub client: Arc<ClientConfig>,
}

struct Part<T> {
    value: T,
    fingerprint: [u8; 32],
}

#[derive(Default)]
struct State {
    peer: Option<Part<PeerConfigs>>,
    client: Option<Part<Arc<ServerConfig>>>,
    tokens: Option<Part<Arc<Tokens>>>,
}

/// The node's security material, shared by the listeners and the peer client.
pub struct Security {
    tls: TlsSettings,
    auth: AuthSettings,
    state: RwLock<State>,
    /// Bumped whenever the peer configuration changes, so peer connections are re-dialled.
    peer_generation: AtomicU64,
    observer: Box<dyn Observer>,
}

/// A digest of files' contents (a missing file is an error).
fn fingerprint(paths: &[&Path]) -> std::io::Result<[u8; 32]> {
    let mut hash = Sha256::new();
    for path in paths {
        hash.update(std::fs::read(path)?);
        hash.update([0]);
    }
    Ok(hash.finalize().into())
}

impl Security {
    /// Loads everything configured; any failure stops start-up.
    pub fn load(
        tls: TlsSettings,
        auth: AuthSettings,
        observer: Box<dyn Observer>,
    ) -> Result<Arc<Security>, SecurityError> {
        let security = Security {
            tls,
            auth,
            state: RwLock::new(State::default()),
            peer_generation: AtomicU64::new(0),
            observer,
        };
        security.reload_all(true)?;
        Ok(Arc::new(security))
    }

    /// No TLS, no authorization (tests and tools).
    pub fn none() -> Arc<Security> {
        let (tls, auth) = disabled();
        Arc::new(Security {
            tls,
            auth,
            state: RwLock::new(State::default()),
            peer_generation: AtomicU64::new(0),
            observer: Box::new(Unobserved),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A panic while holding the lock leaves valid data: every write is one assignment.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Re-reads every file that changed; failures are logged and counted, and keep the
    /// last good material.
    pub fn reload(&self) {
        // Errors were already reported per part.
        let _ = self.reload_all(false);
    }

    fn reload_all(&self, first: bool) -> Result<(), SecurityError> {
        let p = &self.tls.peer;
        if p.enabled() {
            let files = [p.cert.as_path(), p.key.as_path(), p.ca.as_path()];
            let current = self.read().peer.as_ref().map(|part| part.fingerprint);
            self.reload_part(
                "peer",
                &files,
                current,
                first,
                || {
                    Ok(PeerConfigs {
                        server: tls::server_config(&p.cert, &p.key, Some((&p.ca, true)))?,
                        client: tls::client_config(&p.cert, &p.key, &p.ca)?,
                    })
                },
                |state, part| {
                    state.peer = Some(part);
                    self.peer_generation.fetch_add(1, Ordering::Release);
                },
            )?;
        }
        let c = &self.tls.client;
        if c.enabled() {
            let mut files = vec![c.cert.as_path(), c.key.as_path()];
            if c.verifies_clients() {
                files.push(c.ca.as_path());
            }
            let current = self.read().client.as_ref().map(|part| part.fingerprint);
            // Client certificates are checked when presented but not required by the
            // handshake: kubelet probes and health checks present none, and authorization
            // decides per route (AnyCertificate policy).
            let ca = c.verifies_clients().then_some((c.ca.as_path(), false));
            self.reload_part(
                "client",
                &files,
                current,
                first,
                || tls::server_config(&c.cert, &c.key, ca),
                |state, part| state.client = Some(part),
            )?;
        }
        if self.auth.enabled() {
            let path = self.auth.tokens_file.as_path();
            let current = self.read().tokens.as_ref().map(|part| part.fingerprint);
            self.reload_part(
                "tokens",
                &[path],
                current,
                first,
                || {
                    let text = std::fs::read_to_string(path).map_err(|e| SecurityError::Tokens {
                        path: path.to_owned(),
                        problem: e.to_string(),
                    })?;
                    let tokens = Tokens::parse(&text).map_err(|problem| SecurityError::Tokens {
                        path: path.to_owned(),
                        problem,
                    })?;
                    Ok(Arc::new(tokens))
                },
                |state, part| state.tokens = Some(part),
            )?;
        }
        Ok(())
    }

    fn reload_part<T>(
        &self,
        part: &'static str,
        files: &[&Path],
        current: Option<[u8; 32]>,
        first: bool,
        build: impl FnOnce() -> Result<T, SecurityError>,
        install: impl FnOnce(&mut State, Part<T>),
    ) -> Result<(), SecurityError> {
        let outcome = fingerprint(files)
            .map_err(|e| SecurityError::File {
                path: files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
                    .into(),
                problem: e.to_string(),
            })
            .and_then(|fp| {
                if Some(fp) == current {
                    return Ok(None);
                }
                build().map(|value| {
                    Some(Part {
                        value,
                        fingerprint: fp,
                    })
                })
            });
        match outcome {
            Ok(None) => Ok(()),
            Ok(Some(loaded)) => {
                install(&mut self.write(), loaded);
                self.observer.reloaded(part, true);
                for file in files {
                    if let Some(not_after) = tls::earliest_expiry(file) {
                        self.observer.expires(file, not_after);
                    }
                }
                if !first {
                    tracing::info!(part, "security files changed; loaded the new ones");
                }
                Ok(())
            }
            Err(e) => {
                self.observer.reloaded(part, false);
                if !first {
                    tracing::warn!(part, error = %e, "security files changed but cannot be loaded; keeping the last good ones");
                }
                Err(e)
            }
        }
    }

    /// Polls the files and reloads on SIGHUP until `stop`.
    pub async fn watch(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(self.tls.reload_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let hup = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tick.tick() => {}
                _ = hup => tracing::info!("SIGHUP: re-reading the certificate and tokens files"),
                _ = stop.wait_for(|s| *s) => return,
            }
            let this = self.clone();
            // File reads and key parsing block; keep them off the async workers.
            let _ = tokio::task::spawn_blocking(move || this.reload()).await;
        }
    }

    /// Whether the peer port uses mutual TLS.
    pub fn peer_tls(&self) -> bool {
        self.tls.peer.enabled()
    }

    /// The peer configurations in use, if peer TLS is on.
    pub fn peer(&self) -> Option<PeerConfigs> {
        self.read().peer.as_ref().map(|p| p.value.clone())
    }

    /// Changes whenever the peer configuration does.
    pub fn peer_generation(&self) -> u64 {
        self.peer_generation.load(Ordering::Acquire)
    }

    /// Certificate names accepted on Raft RPCs besides the members' hosts.
    pub fn allowed_peer_names(&self) -> &[String] {
        &self.tls.peer.allowed_names
    }

    /// The client ports' server configuration, if client TLS is on.
    pub fn client(&self) -> Option<Arc<ServerConfig>> {
        self.read().client.as_ref().map(|p| p.value.clone())
    }

    /// The tokens in use, if authorization is on.
    pub fn tokens(&self) -> Option<Arc<Tokens>> {
        self.read().tokens.as_ref().map(|p| p.value.clone())
    }

    /// What the client ports require of callers.
    pub fn policy(&self) -> Policy {
        if self.auth.enabled() {
            Policy::Tokens
        } else if self.tls.client.verifies_clients() {
            Policy::AnyCertificate
        } else {
            Policy::Open
        }
    }

    /// Whether `/metrics` needs no credential.
    pub fn anonymous_metrics(&self) -> bool {
        self.auth.anonymous_metrics
    }
}

fn disabled() -> (TlsSettings, AuthSettings) {
    use crate::config::{ClientTls, PeerTls};
    (
        TlsSettings {
            reload_interval: std::time::Duration::from_secs(10),
            peer: PeerTls {
                cert: PathBuf::new(),
                key: PathBuf::new(),
                ca: PathBuf::new(),
                allowed_names: Vec::new(),
                insecure: false,
            },
            client: ClientTls {
                cert: PathBuf::new(),
                key: PathBuf::new(),
                ca: PathBuf::new(),
            },
        },
        AuthSettings {
            tokens_file: PathBuf::new(),
            anonymous_metrics: true,
        },
    )
}
