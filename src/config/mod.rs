//! Settings: one typed struct, layered with the `config` crate as built-in defaults → TOML
//! file (`--config`) → environment (`OPENRAFT_MEMORY__SECTION__KEY`) → command-line flags,
//! then validated. A bad setting stops start-up with a message naming the key.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use serde::Deserialize;

use crate::model::ordinal_of;

mod parse;
mod security;

pub use security::{AuthSettings, ClientTls, PeerTls, TlsSettings};

/// The built-in defaults, as TOML: the README's config table is generated from the same keys.
pub const DEFAULTS: &str = include_str!("defaults.toml");

/// Log entries per AppendEntries (OpenRaft's `max_payload_entries`). Each entry is a batch
/// of up to `raft.max_batch_writes` writes, so 32 carry thousands of writes per round
/// trip, and they bound the peer message size ([`RaftSettings::peer_message_limit`]).
pub const MAX_ENTRIES_PER_APPEND: u64 = 32;

/// The built-in defaults, parsed once (`--help` asks for every flag's default).
fn defaults() -> Option<&'static Config> {
    static PARSED: std::sync::OnceLock<Option<Config>> = std::sync::OnceLock::new();
    PARSED
        .get_or_init(|| {
            Config::builder()
                .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
                .build()
                .ok()
        })
        .as_ref()
}

/// The built-in default of a dotted key as text (`None` for unknown keys and lists).
pub fn default_of(key: &str) -> Option<String> {
    defaults()?.get_string(key).ok()
}

/// All settings of a node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Identity.
    pub node: NodeSettings,
    /// REST listener.
    pub http: HttpSettings,
    /// Client gRPC listener.
    pub grpc: GrpcSettings,
    /// Raft and the peer listener.
    pub raft: RaftSettings,
    /// Cluster formation.
    pub cluster: ClusterSettings,
    /// Where the log and snapshots are kept.
    pub storage: StorageSettings,
    /// Peer discovery.
    pub discovery: DiscoverySettings,
    /// Logging.
    pub log: LogSettings,
    /// Trace export.
    pub tracing: TracingSettings,
    /// Graceful shutdown.
    pub shutdown: ShutdownSettings,
    /// The async runtime.
    pub runtime: RuntimeSettings,
    /// TLS on the peer and client ports.
    pub tls: TlsSettings,
    /// Authorization on the client ports.
    pub auth: AuthSettings,
    /// Watch streams.
    pub watch: WatchSettings,
    /// Scheduled backups to object storage.
    pub backup: BackupSettings,
    /// What loading noticed but did not refuse (look-alike environment variables), for the
    /// log once logging is set up.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// The async runtime's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSettings {
    /// Worker threads; 0: one per available CPU.
    pub worker_threads: usize,
}

impl RuntimeSettings {
    /// The number of worker threads to start.
    pub fn threads(&self) -> usize {
        match self.worker_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// OpenTelemetry trace export.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingSettings {
    /// OTLP/gRPC endpoint; empty disables export.
    pub otlp_endpoint: String,
    /// `service.name` of exported spans.
    pub service_name: String,
}

/// Identity of this node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    /// The node name (resolved from the environment when empty).
    pub name: String,
}

/// REST listener settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Listen address.
    #[serde(deserialize_with = "parse::socket_addr")]
    pub addr: SocketAddr,
    /// Largest accepted request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// Upper bound on one request's handling time.
    #[serde(deserialize_with = "parse::duration")]
    pub request_timeout: Duration,
    /// Time a client has to send a request's headers.
    #[serde(deserialize_with = "parse::duration")]
    pub header_read_timeout: Duration,
    /// Most open connections.
    pub max_connections: usize,
}

/// Client gRPC listener settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcSettings {
    /// Listen address.
    #[serde(deserialize_with = "parse::socket_addr")]
    pub addr: SocketAddr,
    /// Upper bound on one request's handling time.
    #[serde(deserialize_with = "parse::duration")]
    pub request_timeout: Duration,
    /// Concurrent streams (requests) per connection (HTTP/2 SETTINGS).
    pub max_concurrent_streams: u32,
    /// Open connections at most; more are closed at once.
    pub max_connections: usize,
    /// How often an idle connection is pinged.
    #[serde(deserialize_with = "parse::duration")]
    pub keepalive_interval: Duration,
    /// A ping unanswered this long closes the connection.
    #[serde(deserialize_with = "parse::duration")]
    pub keepalive_timeout: Duration,
}

/// Raft timing, log compaction and the peer listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftSettings {
    /// Peer gRPC listen address.
    #[serde(deserialize_with = "parse::socket_addr")]
    pub addr: SocketAddr,
    /// Host advertised to peers (empty: the host of `addr`).
    pub advertise_host: String,
    /// Leader heartbeat interval.
    #[serde(deserialize_with = "parse::duration")]
    pub heartbeat_interval: Duration,
    /// Lower bound of the randomised election timeout.
    #[serde(deserialize_with = "parse::duration")]
    pub election_timeout_min: Duration,
    /// Upper bound of the randomised election timeout.
    #[serde(deserialize_with = "parse::duration")]
    pub election_timeout_max: Duration,
    /// Snapshot policy: entries applied since the last snapshot.
    pub snapshot_after_logs: u64,
    /// Entries kept behind a snapshot.
    pub logs_to_keep: u64,
    /// Largest snapshot accepted from a peer, in bytes.
    pub max_snapshot_bytes: u64,
    /// Deadline for a client write to commit.
    #[serde(deserialize_with = "parse::duration")]
    pub write_timeout: Duration,
    /// Deadline for one peer RPC.
    #[serde(deserialize_with = "parse::duration")]
    pub rpc_timeout: Duration,
    /// Most client writes in one log entry.
    pub max_batch_writes: usize,
    /// Client writes waiting for a batch slot at most; more are refused (503 overloaded).
    pub max_queued_writes: usize,
    /// Linearizable reads waiting for a read round at most; more are refused.
    pub max_queued_reads: usize,
    /// Most batches proposed and not yet committed at once.
    pub max_in_flight_batches: usize,
    /// Confirm leadership for reads from the leader lease instead of a heartbeat round.
    pub read_lease: bool,
    /// How long the leader may hold a follower's commit notice for the next AppendEntries
    /// (zero: send every notice at once).
    #[serde(deserialize_with = "parse::duration")]
    pub commit_hold: Duration,
}

impl RaftSettings {
    /// How often the loops that watch leadership wake: four times a heartbeat, at most
    /// every 10 ms. The election timer runs on it, so it is what an election waits past its
    /// due time (a whole heartbeat was 10-25 % of a failover with short timeouts).
    pub fn tick(&self) -> std::time::Duration {
        (self.heartbeat_interval / 4).max(std::time::Duration::from_millis(10))
    }

    /// The largest peer message sent or accepted: a full AppendEntries
    /// ([`MAX_ENTRIES_PER_APPEND`] entries of `max_batch_writes` commands of the largest
    /// valid size), and never less than 2 MiB (a 1 MiB snapshot chunk with room to spare).
    /// Sized from the settings rather than a fixed 64 MiB because decoding costs up to
    /// ~70 bytes of memory per byte received (`tests/fuzz.rs` measures it): the cap is
    /// what a hostile peer's message can cost.
    pub fn peer_message_limit(&self) -> usize {
        let entries = usize::try_from(MAX_ENTRIES_PER_APPEND).unwrap_or(usize::MAX);
        entries
            .saturating_mul(self.max_batch_writes)
            .saturating_mul(crate::model::MAX_COMMAND_BYTES)
            .saturating_add(64 << 10)
            .max(2 << 20)
    }
}

impl RaftSettings {
    /// Deadline for a join: adding a learner waits until it has caught up with the
    /// leader's log, which takes a while with a large state.
    pub fn membership_timeout(&self) -> Duration {
        self.write_timeout * 6
    }
}

/// Cluster formation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// Static peer list (peer-port addresses).
    pub peers: Vec<String>,
    /// Probe window before ordinal 0 initialises.
    #[serde(deserialize_with = "parse::duration")]
    pub bootstrap_probe: Duration,
    /// Cap of the join retry backoff.
    #[serde(deserialize_with = "parse::duration")]
    pub join_backoff_max: Duration,
    /// How long a member may be missing from discovery before the leader removes it.
    #[serde(deserialize_with = "parse::duration")]
    pub scale_down_grace: Duration,
    /// Floor for automatic removals.
    pub min_voters: usize,
    /// Period of the leader's membership reconciliation.
    #[serde(deserialize_with = "parse::duration")]
    pub reconcile_interval: Duration,
}

/// Where a node keeps its Raft state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageMode {
    /// In memory only (the default).
    Memory,
    /// Journalled and snapshotted to `storage.data_dir`.
    Disk,
}

impl parse::Choice for StorageMode {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("memory", StorageMode::Memory), ("disk", StorageMode::Disk)];
}

/// Storage settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// Memory or disk.
    #[serde(deserialize_with = "parse::choice")]
    pub mode: StorageMode,
    /// Disk mode's data directory.
    pub data_dir: PathBuf,
    /// A backup to seed a new cluster from: a file, an object URL, `latest`; empty: none.
    pub restore_from: String,
}

/// Where a new cluster's records come from (`storage.restore_from`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreSource {
    /// Nowhere: the cluster starts empty.
    Nothing,
    /// A backup file on this machine.
    File(PathBuf),
    /// One backup object (`s3://`, `gs://`, `file://` URL).
    Object(String),
    /// The newest valid backup under `backup.target`.
    Latest,
}

impl StorageSettings {
    /// What `restore_from` names.
    pub fn restore_source(&self) -> RestoreSource {
        let r = self.restore_from.trim();
        if r.is_empty() {
            RestoreSource::Nothing
        } else if r == "latest" {
            RestoreSource::Latest
        } else if r.contains("://") {
            RestoreSource::Object(r.to_owned())
        } else {
            RestoreSource::File(PathBuf::from(r))
        }
    }
}

/// Scheduled backups: the leader uploads one every `interval` to `target`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupSettings {
    /// `s3://bucket/prefix`, `gs://bucket/prefix` or `file:///path`; empty: no backups.
    pub target: String,
    /// Time between backups.
    #[serde(deserialize_with = "parse::duration")]
    pub interval: Duration,
    /// Backups kept; older ones are deleted after each upload.
    pub keep: usize,
}

/// The URL schemes a backup target or restore object may have.
pub const BACKUP_SCHEMES: [&str; 3] = ["s3://", "gs://", "file://"];

fn backup_url_problem(url: &str) -> Option<String> {
    let Some(scheme) = BACKUP_SCHEMES.iter().find(|s| url.starts_with(**s)) else {
        return Some(format!(
            "`{url}` is not an object-store URL: use s3://bucket/prefix, gs://bucket/prefix or file:///path"
        ));
    };
    let rest = &url[scheme.len()..];
    if rest.trim_matches('/').is_empty() {
        return Some(format!("`{url}` names no bucket or directory"));
    }
    if *scheme == "file://" && !rest.starts_with('/') {
        return Some(format!(
            "`{url}`: a file URL needs an absolute path (file:///var/backups)"
        ));
    }
    None
}

/// How peers are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryMode {
    /// `cluster.peers`.
    Static,
    /// SRV records of a headless Service.
    Dns,
}

impl parse::Choice for DiscoveryMode {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("static", DiscoveryMode::Static), ("dns", DiscoveryMode::Dns)];
}

/// Peer discovery settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoverySettings {
    /// Static list or DNS.
    #[serde(deserialize_with = "parse::choice")]
    pub mode: DiscoveryMode,
    /// The headless Service's DNS name (DNS mode).
    pub dns_name: String,
    /// A specific DNS server; `None` uses the system configuration.
    #[serde(deserialize_with = "parse::optional_socket_addr")]
    pub dns_server: Option<SocketAddr>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl parse::Choice for LogFormat {
    const CHOICES: &'static [(&'static str, Self)] = &[("text", LogFormat::Text), ("json", LogFormat::Json)];
}

/// Logging settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// Output format.
    #[serde(deserialize_with = "parse::choice")]
    pub format: LogFormat,
    /// Default filter directive.
    pub level: String,
}

/// Watch stream settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchSettings {
    /// Changes kept for watchers to start or resume from.
    pub history: usize,
    /// An idle watcher is told the current revision this often.
    #[serde(deserialize_with = "parse::duration")]
    pub progress_interval: Duration,
    /// Open watch streams at most, over REST and gRPC.
    pub max_watchers: usize,
}

/// Graceful shutdown settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownSettings {
    /// Deadline for the whole shutdown sequence.
    #[serde(deserialize_with = "parse::duration")]
    pub deadline: Duration,
}

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Reading or parsing a layer failed (the message names the key or file).
    #[error("invalid configuration: {0}")]
    Load(#[from] config::ConfigError),
    /// An environment variable of ours that names no setting.
    #[error("invalid configuration: {0}")]
    Environment(String),
    /// A value parsed but makes no sense.
    #[error("invalid configuration: `{key}`: {problem}")]
    Invalid {
        /// The offending key, dotted.
        key: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

/// Overrides from the command line, applied last. Keys are dotted config keys.
pub type Overrides = Vec<(&'static str, config::Value)>;

/// Where the settings come from; the environment is passed in so tests need not touch the
/// process environment.
#[derive(Debug, Default)]
pub struct Sources {
    /// Optional TOML file.
    pub file: Option<PathBuf>,
    /// Environment variables (normally `std::env::vars()`).
    pub env: HashMap<String, String>,
    /// Command-line overrides.
    pub overrides: Overrides,
}

impl Settings {
    /// Loads, layers and validates the settings.
    pub fn load(sources: Sources) -> Result<Settings, ConfigError> {
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        if let Some(path) = &sources.file {
            builder = builder.add_source(File::from(path.as_path()).format(FileFormat::Toml).required(true));
        }
        let defaults: config::Map<String, config::Value> = match self::defaults() {
            Some(parsed) => parsed.clone().try_deserialize()?,
            None => Config::builder()
                .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
                .build()?
                .try_deserialize()?,
        };
        let known = parse::known_keys(&defaults);
        let warnings = parse::check_env(sources.env.keys(), &known).map_err(ConfigError::Environment)?;
        let env: HashMap<String, String> = sources
            .env
            .iter()
            .filter(|(k, _)| k.starts_with("OPENRAFT_MEMORY__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        builder = builder.add_source(
            Environment::with_prefix("OPENRAFT_MEMORY")
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("cluster.peers")
                .with_list_parse_key("tls.peer.allowed_names")
                .try_parsing(true)
                .source(Some(env)),
        );
        for (key, value) in sources.overrides {
            builder = builder.set_override(key, value)?;
        }
        let mut settings: Settings = builder.build()?.try_deserialize()?;
        settings.warnings = warnings;
        if settings.node.name.is_empty() {
            settings.node.name = default_node_name(&sources.env);
        }
        settings.cluster.peers.retain(|p| !p.trim().is_empty());
        if settings.raft.max_in_flight_batches == 0 {
            settings.raft.max_in_flight_batches = match settings.storage.mode {
                StorageMode::Memory => 4,
                StorageMode::Disk => 2,
            };
        }
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| {
            Err(ConfigError::Invalid {
                key,
                problem: problem.to_owned(),
            })
        };
        let r = &self.raft;
        if r.heartbeat_interval.is_zero() {
            return invalid("raft.heartbeat_interval", "must be greater than zero");
        }
        if r.election_timeout_min <= r.heartbeat_interval {
            return invalid(
                "raft.election_timeout_min",
                &format!(
                    "{:?} must be greater than `raft.heartbeat_interval` ({:?})",
                    r.election_timeout_min, r.heartbeat_interval
                ),
            );
        }
        if r.election_timeout_max <= r.election_timeout_min {
            return invalid(
                "raft.election_timeout_max",
                &format!(
                    "{:?} must be greater than `raft.election_timeout_min` ({:?})",
                    r.election_timeout_max, r.election_timeout_min
                ),
            );
        }
        if r.commit_hold >= r.heartbeat_interval {
            return invalid(
                "raft.commit_hold",
                &format!(
                    "{:?} must be less than `raft.heartbeat_interval` ({:?}): the heartbeat delivers a held commit notice anyway",
                    r.commit_hold, r.heartbeat_interval
                ),
            );
        }
        if r.max_snapshot_bytes < 1 << 20 {
            return invalid("raft.max_snapshot_bytes", "must be at least 1 MiB (1048576)");
        }
        if r.snapshot_after_logs == 0 {
            return invalid("raft.snapshot_after_logs", "must be at least 1");
        }
        if r.write_timeout.is_zero() {
            return invalid("raft.write_timeout", "must be greater than zero");
        }
        if self.runtime.worker_threads > 1024 {
            return invalid("runtime.worker_threads", "must be at most 1024 (0: one per CPU)");
        }
        if r.max_batch_writes == 0 {
            return invalid("raft.max_batch_writes", "must be at least 1");
        }
        if r.max_queued_writes == 0 {
            return invalid("raft.max_queued_writes", "must be at least 1");
        }
        if r.max_queued_reads == 0 {
            return invalid("raft.max_queued_reads", "must be at least 1");
        }
        if self.watch.history == 0 {
            return invalid("watch.history", "must be at least 1 (changes kept for watchers)");
        }
        if self.watch.progress_interval < Duration::from_millis(10) {
            return invalid("watch.progress_interval", "must be at least 10ms");
        }
        let b = &self.backup;
        if !b.target.is_empty() {
            if let Some(problem) = backup_url_problem(&b.target) {
                return invalid("backup.target", &problem);
            }
            if b.interval < Duration::from_secs(1) {
                return invalid("backup.interval", "must be at least 1s");
            }
            if b.keep == 0 {
                return invalid("backup.keep", "must be at least 1 (backups kept)");
            }
        }
        match self.storage.restore_source() {
            RestoreSource::Latest if b.target.is_empty() => {
                return invalid(
                    "storage.restore_from",
                    "`latest` restores the newest backup under backup.target, which is not set",
                );
            }
            RestoreSource::Object(url) => {
                if let Some(problem) = backup_url_problem(&url) {
                    return invalid("storage.restore_from", &problem);
                }
            }
            _ => {}
        }
        if self.http.header_read_timeout.is_zero() {
            return invalid("http.header_read_timeout", "must be greater than zero");
        }
        if self.http.max_connections == 0 {
            return invalid("http.max_connections", "must be at least 1");
        }
        let g = &self.grpc;
        if g.request_timeout.is_zero() {
            return invalid("grpc.request_timeout", "must be greater than zero");
        }
        if g.max_concurrent_streams == 0 {
            return invalid("grpc.max_concurrent_streams", "must be at least 1");
        }
        if g.max_connections == 0 {
            return invalid("grpc.max_connections", "must be at least 1");
        }
        if g.keepalive_interval.is_zero() || g.keepalive_timeout.is_zero() {
            return invalid(
                "grpc.keepalive_interval",
                "keepalive_interval and keepalive_timeout must be greater than zero",
            );
        }
        if self.http.max_body_bytes < 64 {
            return invalid("http.max_body_bytes", "must be at least 64 bytes");
        }
        if self.discovery.mode == DiscoveryMode::Dns && self.discovery.dns_name.trim().is_empty() {
            return invalid("discovery.dns_name", "is required when discovery.mode is \"dns\"");
        }
        if self.storage.mode == StorageMode::Disk && self.storage.data_dir.as_os_str().is_empty() {
            return invalid(
                "storage.data_dir",
                "is required when storage.mode is \"disk\" (e.g. --data-dir /var/lib/openraft-memory)",
            );
        }
        if self.cluster.min_voters == 0 {
            return invalid("cluster.min_voters", "must be at least 1");
        }
        let clustered = !self.cluster.peers.is_empty() || self.discovery.mode == DiscoveryMode::Dns;
        if clustered && ordinal_of(&self.node.name).is_none() {
            return invalid(
                "node.name",
                &format!(
                    "`{}` has no ordinal; with peers or DNS discovery the name must end in -N (e.g. db-0) so that only ordinal 0 bootstraps",
                    self.node.name
                ),
            );
        }
        security::validate(&self.tls, self.raft.addr)?;
        for p in &self.cluster.peers {
            if p.rsplit_once(':')
                .and_then(|(_, port)| port.parse::<u16>().ok())
                .is_none()
            {
                return invalid("cluster.peers", &format!("`{p}` is not host:port"));
            }
        }
        Ok(())
    }

    /// The host:port peers use to reach this node.
    pub fn advertise_addr(&self) -> String {
        let port = self.raft.addr.port();
        if self.raft.advertise_host.is_empty() && self.discovery.mode == DiscoveryMode::Dns {
            // On Kubernetes: the pod's stable DNS name under the headless Service.
            format!(
                "{}.{}:{port}",
                self.node.name,
                self.discovery.dns_name.trim_end_matches('.')
            )
        } else if self.raft.advertise_host.is_empty() {
            let ip = self.raft.addr.ip();
            if ip.is_unspecified() {
                // Binding all interfaces says nothing about which one peers can reach.
                format!("{}:{port}", self.node.name)
            } else {
                SocketAddr::new(ip, port).to_string()
            }
        } else {
            format!("{}:{port}", self.raft.advertise_host)
        }
    }

    /// The OpenRaft configuration these settings describe.
    pub fn openraft_config(&self) -> Result<openraft::Config, ConfigError> {
        let r = &self.raft;
        let config = openraft::Config {
            cluster_name: "openraft-memory".into(),
            heartbeat_interval: r.heartbeat_interval.as_millis() as u64,
            election_timeout_min: r.election_timeout_min.as_millis() as u64,
            election_timeout_max: r.election_timeout_max.as_millis() as u64,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(r.snapshot_after_logs),
            max_in_snapshot_log_to_keep: r.logs_to_keep,
            install_snapshot_timeout: (r.rpc_timeout.as_millis() as u64).max(1000) * 5,
            max_payload_entries: MAX_ENTRIES_PER_APPEND,
            ..Default::default()
        };
        config.validate().map_err(|e| ConfigError::Invalid {
            key: "raft",
            problem: e.to_string(),
        })
    }
}

fn default_node_name(env: &HashMap<String, String>) -> String {
    let from_env = ["POD_NAME", "HOSTNAME"]
        .iter()
        .filter_map(|k| env.get(*k))
        .find(|v| !v.is_empty());
    if let Some(name) = from_env {
        return name.clone();
    }
    // A pod's hostname is its name; the kernel knows it even where $HOSTNAME is unset.
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node-0".to_owned())
}

#[cfg(test)]
mod tests;
