//! Prometheus metrics (prefix `openraft_memory_`): Raft state fed from OpenRaft's metrics
//! channel, request counters and latency histograms fed by the API middleware, peer RPC
//! timings fed by the network client, and process metrics. Labels are bounded: route
//! templates, method names, status codes and peer names — never ids or raw paths.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Latency buckets from 100 µs to 10 s: loopback writes take well under a millisecond, a
/// write waiting out an election takes seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every metric of a node. Cheap to clone (the collectors are reference-counted).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// This node's Raft id (changes at every start in memory mode).
    pub raft_node_id: IntGauge,
    /// Current Raft term.
    pub raft_term: IntGauge,
    /// 1 for the current server state, 0 for the others.
    pub raft_state: IntGaugeVec,
    /// 1 on the leader.
    pub raft_is_leader: IntGauge,
    /// 1 when this node knows a leader.
    pub raft_has_leader: IntGauge,
    /// Times the known leader changed.
    pub raft_leader_changes_total: IntCounter,
    /// 1 while this node leads but no quorum of voters has answered it (check-quorum).
    pub raft_leader_cut_off: IntGauge,
    /// Times this node, leading, lost contact with its quorum.
    pub raft_quorum_lost_total: IntCounter,
    /// Elections this node started itself (its leader went silent, or a round stalled).
    pub raft_campaigns_started_total: IntCounter,
    /// Last log index.
    pub raft_last_log_index: IntGauge,
    /// Committed index as known to this node.
    pub raft_committed_index: IntGauge,
    /// Last applied index.
    pub raft_applied_index: IntGauge,
    /// Index covered by the last snapshot.
    pub raft_snapshot_index: IntGauge,
    /// Entries each follower is behind the leader's last log index (leader only).
    pub raft_replication_lag_entries: IntGaugeVec,
    /// Voters in the membership.
    pub raft_voters: IntGauge,
    /// Learners in the membership.
    pub raft_learners: IntGauge,
    /// Records in the state machine.
    pub students: IntGauge,
    /// REST requests by method, route template and status.
    pub http_requests_total: IntCounterVec,
    /// Requests or connections refused by a limit, by reason.
    pub rejected_total: IntCounterVec,
    /// REST latency by method and route template.
    pub http_request_duration: HistogramVec,
    /// Client gRPC requests by method and status code.
    pub grpc_requests_total: IntCounterVec,
    /// Client gRPC latency by method.
    pub grpc_request_duration: HistogramVec,
    /// Time from proposing a write to its result being applied.
    pub raft_client_write_duration: Histogram,
    /// Outgoing peer RPC latency by RPC and peer name.
    pub peer_rpc_duration: HistogramVec,
    /// Readers served by each shared read-index round (how well reads are batched).
    pub read_index_rounds: Histogram,
    /// Leadership confirmations for reads vouched for by the leader lease.
    pub lease_confirmations: IntCounter,
    /// Commit notices the leader held that the next AppendEntries carried.
    pub commit_notices_carried: IntCounter,
    /// Commit notices the leader held that a heartbeat had to deliver.
    pub commit_notices_flushed: IntCounter,
    /// Leadership confirmations for reads made by a heartbeat round.
    pub heartbeat_confirmations: IntCounter,
    /// Client writes proposed together in one log entry (or one forwarded request).
    pub write_batch_size: Histogram,
    /// Disk mode: journal records made durable by one sync (group commit).
    pub log_sync_records: Histogram,
    /// Disk mode: time to write and sync one group of journal records.
    pub log_sync_duration: Histogram,
    /// Loads of the security files by part (`peer`, `client`, `tokens`) and result.
    pub security_reloads_total: IntCounterVec,
    /// Expiry (Unix seconds) of the certificates in use, by file.
    pub certificate_expiry: IntGaugeVec,
    /// TLS handshakes that failed, by listener (`peer`, `http`, `grpc`).
    pub tls_handshake_failures_total: IntCounterVec,
    /// Requests refused by authorization, by port and reason.
    pub auth_denied_total: IntCounterVec,
    /// Open watch streams, by API (`rest`, `grpc`).
    pub watchers: IntGaugeVec,
    /// Changes sent to watchers, by API.
    pub watch_events_sent_total: IntCounterVec,
    /// Watch streams this node ended, by reason (`fell_behind`, `shutdown`).
    pub watchers_cut_off_total: IntCounterVec,
    /// `backup.interval` in seconds (0: scheduled backups are off).
    pub backup_interval_seconds: IntGauge,
    /// When the newest backup this node knows of was taken (Unix seconds; 0: none).
    pub backup_last_success_timestamp_seconds: IntGauge,
    /// The revision the newest backup this node knows of holds.
    pub backup_last_success_revision: IntGauge,
    /// Size of the last backup this node uploaded.
    pub backup_last_size_bytes: IntGauge,
    /// Time to take and upload a backup.
    pub backup_duration_seconds: Histogram,
    /// Backups this node uploaded.
    pub backups_total: IntCounter,
    /// Failed backup steps, by reason.
    pub backup_failures_total: IntCounterVec,
}

impl crate::security::Observer for Metrics {
    fn reloaded(&self, part: &'static str, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.security_reloads_total
            .with_label_values(&[part, result])
            .inc();
    }

    fn expires(&self, file: &std::path::Path, not_after: i64) {
        self.certificate_expiry
            .with_label_values(&[file.display().to_string().as_str()])
            .set(not_after);
    }
}

impl crate::store::disk::SyncObserver for Metrics {
    fn synced(&self, records: usize, seconds: f64) {
        self.log_sync_records.observe(records as f64);
        self.log_sync_duration.observe(seconds);
    }
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::with_opts(Opts::new(name, help).namespace("openraft_memory")).expect("valid metric");
    registry.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::with_opts(Opts::new(name, help).namespace("openraft_memory")).expect("valid metric");
    registry.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g =
        IntGaugeVec::new(Opts::new(name, help).namespace("openraft_memory"), labels).expect("valid metric");
    registry.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c =
        IntCounterVec::new(Opts::new(name, help).namespace("openraft_memory"), labels).expect("valid metric");
    registry.register(Box::new(c.clone())).expect("unique metric");
    c
}

/// Buckets for counts of things served together (batch sizes).
const SIZE_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(
        HistogramOpts::new(name, help)
            .namespace("openraft_memory")
            .buckets(buckets),
    )
    .expect("valid metric");
    registry.register(Box::new(h.clone())).expect("unique metric");
    h
}

fn histogram_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help)
            .namespace("openraft_memory")
            .buckets(LATENCY_BUCKETS.to_vec()),
        labels,
    )
    .expect("valid metric");
    registry.register(Box::new(h.clone())).expect("unique metric");
    h
}

impl Metrics {
    /// Creates and registers every metric in a fresh registry. The names are static and
    /// distinct, so registration cannot fail; the `expect`s document that.
    #[allow(clippy::expect_used)]
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let r = &registry;
        let raft_leader_changes_total = IntCounter::with_opts(
            Opts::new(
                "raft_leader_changes_total",
                "Times the leader known to this node changed",
            )
            .namespace("openraft_memory"),
        )
        .expect("valid metric");
        registry
            .register(Box::new(raft_leader_changes_total.clone()))
            .expect("unique metric");
        let raft_client_write_duration = histogram(
            r,
            "raft_client_write_duration_seconds",
            "Time from proposing a write to Raft until it is applied",
            LATENCY_BUCKETS.to_vec(),
        );
        let read_index_rounds = histogram(
            r,
            "read_index_round_readers",
            "Linearizable readers served by one shared read-index round",
            SIZE_BUCKETS.to_vec(),
        );
        let read_confirmations = counter_vec(
            r,
            "read_confirmations_total",
            "Leadership confirmations for linearizable reads, by the leader lease or a heartbeat round",
            &["via"],
        );
        let write_batch_size = histogram(
            r,
            "write_batch_size",
            "Client writes proposed together as one log entry or forwarded request",
            SIZE_BUCKETS.to_vec(),
        );
        let log_sync_records = histogram(
            r,
            "log_sync_records",
            "Disk mode: Raft log journal records made durable by one fdatasync (group commit)",
            SIZE_BUCKETS.to_vec(),
        );
        let log_sync_duration = histogram(
            r,
            "log_sync_duration_seconds",
            "Disk mode: time to write and fdatasync one group of Raft log journal records",
            LATENCY_BUCKETS.to_vec(),
        );
        let build_info = gauge_vec(r, "build_info", "Build information; always 1", &["version"]);
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::new(
                std::process::id() as i32,
                "openraft_memory",
            );
            registry.register(Box::new(pc)).expect("unique metric");
        }
        let commit_notices = counter_vec(
            r,
            "commit_notices_held_total",
            "Commit-only AppendEntries held back, by how they reached the follower: carried (by the next AppendEntries) or flushed (by a heartbeat after raft.commit_hold, or for a follower's read)",
            &["delivery"],
        );
        Metrics {
            commit_notices_carried: commit_notices.with_label_values(&["carried"]),
            commit_notices_flushed: commit_notices.with_label_values(&["flushed"]),
            log_sync_records,
            log_sync_duration,
            read_index_rounds,
            lease_confirmations: read_confirmations.with_label_values(&["lease"]),
            heartbeat_confirmations: read_confirmations.with_label_values(&["heartbeat"]),
            write_batch_size,
            rejected_total: counter_vec(
                r,
                "rejected_total",
                "Requests or connections refused by a limit, by reason",
                &["reason"],
            ),
            raft_node_id: gauge(r, "raft_node_id", "This node's Raft node id"),
            raft_term: gauge(r, "raft_term", "Current Raft term"),
            raft_state: gauge_vec(
                r,
                "raft_state",
                "1 for this node's current Raft server state",
                &["state"],
            ),
            raft_is_leader: gauge(r, "raft_is_leader", "1 if this node is the leader"),
            raft_has_leader: gauge(r, "raft_has_leader", "1 if this node knows a current leader"),
            raft_leader_changes_total,
            raft_leader_cut_off: gauge(
                r,
                "raft_leader_cut_off",
                "1 while this node leads but no quorum of voters has answered it for election_timeout_min",
            ),
            raft_quorum_lost_total: counter(
                r,
                "raft_quorum_lost_total",
                "Times this node, leading, lost contact with a quorum of voters",
            ),
            raft_campaigns_started_total: counter(
                r,
                "raft_campaigns_started_total",
                "Elections this node started itself: its leader was silent for longer than election_timeout_max, or an election round stayed undecided",
            ),
            raft_last_log_index: gauge(
                r,
                "raft_last_log_index",
                "Index of the last entry in this node's log",
            ),
            raft_committed_index: gauge(
                r,
                "raft_committed_index",
                "Highest log index known to be committed",
            ),
            raft_applied_index: gauge(
                r,
                "raft_applied_index",
                "Index of the last entry applied to the state machine",
            ),
            raft_snapshot_index: gauge(
                r,
                "raft_snapshot_index",
                "Last log index covered by the current snapshot",
            ),
            raft_replication_lag_entries: gauge_vec(
                r,
                "raft_replication_lag_entries",
                "Entries a peer is behind the leader's last log index (reported by the leader)",
                &["peer"],
            ),
            raft_voters: gauge(r, "raft_voters", "Voters in the current membership"),
            raft_learners: gauge(r, "raft_learners", "Learners in the current membership"),
            students: gauge(r, "students", "Student records in this node's state machine"),
            http_requests_total: counter_vec(
                r,
                "http_requests_total",
                "REST requests by method, route template and status",
                &["method", "route", "status"],
            ),
            http_request_duration: histogram_vec(
                r,
                "http_request_duration_seconds",
                "REST request latency by method and route template",
                &["method", "route"],
            ),
            grpc_requests_total: counter_vec(
                r,
                "grpc_requests_total",
                "Client gRPC requests by method and status code",
                &["method", "code"],
            ),
            grpc_request_duration: histogram_vec(
                r,
                "grpc_request_duration_seconds",
                "Client gRPC request latency by method",
                &["method"],
            ),
            raft_client_write_duration,
            peer_rpc_duration: histogram_vec(
                r,
                "peer_rpc_duration_seconds",
                "Outgoing peer RPC latency by RPC and peer name",
                &["rpc", "peer"],
            ),
            security_reloads_total: counter_vec(
                r,
                "security_reloads_total",
                "Loads of the TLS and tokens files by part (peer, client, tokens) and result",
                &["part", "result"],
            ),
            certificate_expiry: gauge_vec(
                r,
                "certificate_expiry_timestamp_seconds",
                "When the certificates in use expire (Unix seconds; the earliest in each file)",
                &["file"],
            ),
            tls_handshake_failures_total: counter_vec(
                r,
                "tls_handshake_failures_total",
                "TLS handshakes that failed (no or untrusted certificate, plaintext, timeout), by listener",
                &["listener"],
            ),
            auth_denied_total: counter_vec(
                r,
                "auth_denied_total",
                "Requests refused by authorization, by port (rest, grpc, peer) and reason",
                &["port", "reason"],
            ),
            watchers: gauge_vec(r, "watchers", "Open watch streams, by API (rest, grpc)", &["api"]),
            watch_events_sent_total: counter_vec(
                r,
                "watch_events_sent_total",
                "Record changes sent to watchers, by API (rest, grpc)",
                &["api"],
            ),
            watchers_cut_off_total: counter_vec(
                r,
                "watchers_cut_off_total",
                "Watch streams ended by this node, by reason (fell_behind: the history dropped changes the watcher had not read; shutdown)",
                &["reason"],
            ),
            backup_interval_seconds: gauge(
                r,
                "backup_interval_seconds",
                "backup.interval in seconds (0: scheduled backups are off)",
            ),
            backup_last_success_timestamp_seconds: gauge(
                r,
                "backup_last_success_timestamp_seconds",
                "When the newest backup in the target was taken, as the leader knows it (Unix seconds; 0: none yet)",
            ),
            backup_last_success_revision: gauge(
                r,
                "backup_last_success_revision",
                "The revision (log index) the newest backup in the target holds",
            ),
            backup_last_size_bytes: gauge(
                r,
                "backup_last_size_bytes",
                "Size of the last backup this node uploaded",
            ),
            backup_duration_seconds: histogram(
                r,
                "backup_duration_seconds",
                "Time to take and upload one scheduled backup",
                vec![
                    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
                ],
            ),
            backups_total: counter(r, "backups_total", "Scheduled backups this node uploaded"),
            backup_failures_total: counter_vec(
                r,
                "backup_failures_total",
                "Failed backup steps by reason (snapshot, upload, list, retention, target)",
                &["reason"],
            ),
            registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
