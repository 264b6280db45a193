//! Wiring: builds the storage, Raft, the peer network and the three listeners, then runs
//! until the shutdown future resolves and shuts down in this order:
//! fail readiness → hand over leadership → stop the client listeners and drain → stop Raft
//! → stop the peer listener.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::accept::{Accept, incoming};
use crate::api::authz::GrpcLayer;
use crate::api::grpc::StudentGrpc;
use crate::api::peer::PeerService;
use crate::config::{ConfigError, RestoreSource, Settings, StorageMode};
use crate::discovery::Discovery;
use crate::metrics::Metrics;
use crate::model::Member;
use crate::network::{CommitHold, LinkTiming, PeerClients, PeerNetwork};
use crate::node::{NodeParts, RaftNode};
use crate::pb::client::student_service_server::StudentServiceServer;
use crate::pb::peer::raft_peer_server::RaftPeerServer;
use crate::security::Security;
use crate::store::disk::DataDir;
use crate::store::{LogStore, StateMachineStore};
use crate::{NodeId, Raft};

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Bad settings.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not bind.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The DNS resolver could not be set up.
    #[error(transparent)]
    Discovery(crate::discovery::DiscoveryError),
    /// Disk storage could not be opened (the message names the file).
    #[error("storage: {0}")]
    Storage(#[from] crate::store::disk::DiskError),
    /// A certificate, key or tokens file could not be loaded.
    #[error(transparent)]
    Security(#[from] crate::security::SecurityError),
    /// The backup target cannot be used.
    #[error(transparent)]
    Backup(crate::backup::BackupError),
    /// OpenRaft refused to start.
    #[error("raft failed to start: {0}")]
    Raft(String),
    /// A listener failed while serving.
    #[error("{what} server failed: {message}")]
    Serve {
        /// Which listener.
        what: &'static str,
        /// What went wrong.
        message: String,
    },
}

/// A node with its listeners bound, ready to run.
pub struct Server {
    node: RaftNode,
    http: TcpListener,
    grpc: TcpListener,
    peer: TcpListener,
    /// The bound REST address (useful when the configured port was 0).
    pub http_addr: SocketAddr,
    /// The bound client gRPC address.
    pub grpc_addr: SocketAddr,
    /// The bound peer address.
    pub raft_addr: SocketAddr,
    /// Disk mode: the locked data directory, released when the server stops.
    data_dir: Option<DataDir>,
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { what, addr, source })
}

/// A fresh Raft node id. In memory mode every process start gets a new one, so a restarted
/// node never reuses an id whose log it lost. Kept below 2^53 so JSON clients read it exactly.
fn fresh_node_id() -> NodeId {
    rand::random_range(1..(1u64 << 53))
}

/// Server reflection for the client port: it lists only what that port serves (the peer
/// protocol shares the descriptor set but is served on the peer port).
fn client_reflection() -> tonic_reflection::server::Builder<'static> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .include_reflection_service(false)
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET);
    for name in CLIENT_SERVICES {
        builder = builder.with_service_name(*name);
    }
    builder
}

/// The gRPC services of the client port.
pub const CLIENT_SERVICES: &[&str] = &[
    "openraft_memory.v1.StudentService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Builds a node: binds the three listeners and starts Raft.
pub async fn build(settings: Settings) -> Result<Server, ServerError> {
    let settings = Arc::new(settings);
    let http = bind("http", settings.http.addr).await?;
    let grpc = bind("grpc", settings.grpc.addr).await?;
    let peer = bind("raft", settings.raft.addr).await?;
    let local = |l: &TcpListener, what| {
        l.local_addr().map_err(|source| ServerError::Bind {
            what,
            addr: settings.http.addr,
            source,
        })
    };
    let (http_addr, grpc_addr, raft_addr) = (
        local(&http, "http")?,
        local(&grpc, "grpc")?,
        local(&peer, "raft")?,
    );

    let mut advertised = settings.as_ref().clone();
    advertised.raft.addr = raft_addr;
    let member = Member {
        name: settings.node.name.clone(),
        addr: advertised.advertise_addr(),
    };
    let metrics = Metrics::new();
    // Only a node that may initialise a cluster reads the backup: ordinal 0, or a node
    // without an ordinal that runs alone. The others ignore it, so one setting (the chart's
    // `restore`, an `extraEnv`) can reach every pod.
    let may_initialise = match crate::model::ordinal_of(&settings.node.name) {
        Some(ordinal) => ordinal == 0,
        None => settings.cluster.peers.is_empty(),
    };
    match settings.storage.restore_source() {
        RestoreSource::Nothing => {}
        RestoreSource::File(backup) if may_initialise => {
            // Fail at start-up, not minutes later when ordinal 0 initialises.
            let records = crate::store::read_backup(&backup)?.len();
            tracing::info!(backup = %backup.display(), records, "backup checked; it is loaded if this node initialises the cluster");
        }
        // Fetched only when this node does initialise: an object store that is down must
        // not stop a restarted ordinal 0 that only rejoins its cluster.
        RestoreSource::Object(_) | RestoreSource::Latest if may_initialise => {
            tracing::info!(restore_from = %settings.storage.restore_from,
                "the backup is fetched from object storage and checked if this node initialises the cluster");
        }
        _ => {
            tracing::info!(restore_from = %settings.storage.restore_from,
                "ignoring storage.restore_from: only ordinal 0 initialises a cluster");
        }
    }
    if !settings.backup.target.is_empty() {
        crate::backup::Target::open(&settings.backup.target).map_err(ServerError::Backup)?;
    }
    let (id, log_store, sm, data_dir) = match settings.storage.mode {
        StorageMode::Memory => (
            fresh_node_id(),
            LogStore::default(),
            StateMachineStore::default(),
            None,
        ),
        StorageMode::Disk => {
            let dir = DataDir::open(&settings.storage.data_dir)?;
            let (id, new) = dir.node_id(fresh_node_id)?;
            tracing::info!(dir = %dir.path().display(), node_id = id, new,
                "disk mode: {}", if new { "new data directory, new Raft id" } else { "keeping the persisted Raft id" });
            let log_store = LogStore::open(&dir.journal_path(), metrics.clone())?;
            let sm = StateMachineStore::open(dir.snapshot_path())?;
            (id, log_store, sm, Some(dir))
        }
    };
    sm.watch_hub().set_capacity(settings.watch.history);
    let discovery = Discovery::from_settings(&settings, &member.addr).map_err(ServerError::Discovery)?;
    let security = Security::load(
        settings.tls.clone(),
        settings.auth.clone(),
        Box::new(metrics.clone()),
    )?;
    if settings.tls.peer.insecure && !security.peer_tls() {
        tracing::warn!(raft_addr = %settings.raft.addr, "tls.peer.insecure: the peer port is plaintext and unauthenticated; anyone who reaches it can join, remove members or overwrite the log");
    }
    let raft = &settings.raft;
    let link = LinkTiming::for_raft(
        raft.heartbeat_interval,
        raft.election_timeout_min,
        raft.rpc_timeout,
    );
    let peers = PeerClients::new(
        link,
        settings.raft.peer_message_limit(),
        metrics.clone(),
        discovery.resolver().clone(),
        security.clone(),
    );
    let lease = Arc::new(crate::lease::LeaderLease::default());
    let hold = Arc::new(CommitHold::new(
        raft.commit_hold,
        raft.heartbeat_interval,
        metrics.commit_notices_carried.clone(),
        metrics.commit_notices_flushed.clone(),
    ));
    let network = PeerNetwork {
        id,
        clients: peers.clone(),
        lease: lease.clone(),
        hold: hold.clone(),
    };
    let config = Arc::new(settings.openraft_config()?);
    let log = log_store.clone();
    let raft = Raft::new(id, config, network, log_store, sm.clone())
        .await
        .map_err(|e| ServerError::Raft(e.to_string()))?;
    tracing::info!(node_id = id, member = %member, %http_addr, %grpc_addr, %raft_addr, "node started");
    let node = RaftNode::new(NodeParts {
        id,
        member,
        raft,
        log,
        sm,
        peers,
        lease,
        hold,
        discovery,
        settings,
        metrics,
        security,
    });
    Ok(Server {
        node,
        http,
        grpc,
        peer,
        http_addr,
        grpc_addr,
        raft_addr,
        data_dir,
    })
}

impl Server {
    /// The node handle.
    pub fn node(&self) -> &RaftNode {
        &self.node
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully within the configured
    /// deadline.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        // Held until Raft has stopped writing, then released with the lock.
        let _data_dir = self.data_dir;
        let node = self.node.clone();
        let deadline = node.settings().shutdown.deadline;
        let (stop_clients_tx, stop_clients) = watch::channel(false);
        let (stop_peer_tx, stop_peer) = watch::channel(false);

        let security = node.security().clone();
        let metrics = node.metrics().clone();
        let peer_tls = {
            let security = security.clone();
            move || security.peer().map(|p| p.server)
        };
        let client_tls = {
            let security = security.clone();
            move || security.client()
        };
        let handshake_timeout = node.settings().http.header_read_timeout;
        let peer_accept = Accept {
            name: "peer",
            handshake_timeout: node.settings().raft.rpc_timeout,
            max_connections: None,
        };
        let peer_incoming = incoming(self.peer, peer_tls, peer_accept, metrics.clone());
        let max_peer_message = node.settings().raft.peer_message_limit();
        let peer_server = tonic::transport::Server::builder()
            .add_service(
                RaftPeerServer::new(PeerService::new(node.clone()))
                    .max_decoding_message_size(max_peer_message)
                    .max_encoding_message_size(max_peer_message),
            )
            .serve_with_incoming_shutdown(peer_incoming, wait_for(stop_peer.clone()));
        let reloader = tokio::spawn(security.clone().watch(stop_peer.clone()));
        let peer_task = tokio::spawn(peer_server);

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let reflection_err = |e: tonic_reflection::server::Error| ServerError::Serve {
            what: "grpc",
            message: format!("reflection: {e}"),
        };
        // Both reflection versions: grpcurl and Postman speak v1, older grpcurl, Evans and
        // Python's grpcio-reflection only v1alpha.
        let reflection_v1 = client_reflection().build_v1().map_err(reflection_err)?;
        let reflection_v1alpha = client_reflection().build_v1alpha().map_err(reflection_err)?;
        let g = &node.settings().grpc;
        let grpc_accept = Accept {
            name: "grpc",
            handshake_timeout,
            max_connections: Some((g.max_connections, "grpc_connections")),
        };
        let grpc_incoming = incoming(self.grpc, client_tls.clone(), grpc_accept, metrics.clone());
        let grpc_server = tonic::transport::Server::builder()
            .max_concurrent_streams(Some(g.max_concurrent_streams))
            .http2_keepalive_interval(Some(g.keepalive_interval))
            .http2_keepalive_timeout(Some(g.keepalive_timeout))
            .layer(GrpcLayer::new(security.clone(), metrics.clone()))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(StudentServiceServer::new(StudentGrpc::new(node.clone())))
            .serve_with_incoming_shutdown(grpc_incoming, wait_for(stop_clients.clone()));
        let grpc_task = tokio::spawn(grpc_server);

        let app = crate::api::rest::router(node.clone());
        let limits = crate::api::listen::Limits {
            header_read_timeout: node.settings().http.header_read_timeout,
            max_connections: node.settings().http.max_connections,
        };
        let http_task = tokio::spawn(crate::api::listen::serve(
            self.http,
            app,
            limits,
            node.metrics().clone(),
            client_tls,
            wait_for(stop_clients.clone()),
        ));

        let formation = tokio::spawn(crate::cluster::form(node.clone(), stop_clients.clone()));
        let feeder = tokio::spawn(feed_metrics(node.clone(), stop_clients.clone()));
        let reconciler = tokio::spawn(crate::cluster::reconcile(node.clone(), stop_clients.clone()));
        let pruner = tokio::spawn(crate::cluster::prune_channels(node.clone(), stop_clients.clone()));
        let backups = tokio::spawn(crate::backup::schedule(node.clone(), stop_clients.clone()));
        node.take_over_elections();
        let commit_flusher = tokio::spawn({
            let node = node.clone();
            let stop = stop_clients.clone();
            async move { node.flush_held_commits(stop).await }
        });
        let quorum_check = tokio::spawn({
            let node = node.clone();
            let stop = stop_clients.clone();
            async move { node.check_quorum(stop).await }
        });
        let health = tokio::spawn(report_health(
            node.clone(),
            health_reporter.clone(),
            stop_clients.clone(),
        ));

        shutdown.await;
        let started = Instant::now();
        tracing::info!(?deadline, "shutdown: failing readiness");
        node.begin_shutdown();
        health_reporter
            .set_not_serving::<StudentServiceServer<StudentGrpc>>()
            .await;
        health_reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;

        crate::cluster::hand_over_leadership(&node, deadline / 2).await;

        // Watch streams never end by themselves: the drain below would wait for them.
        node.state_machine().watch_hub().close();
        let _ = stop_clients_tx.send(true);
        let remaining = deadline.saturating_sub(started.elapsed());
        let drained = tokio::time::timeout(remaining, async {
            let _ = tokio::join!(
                http_task,
                grpc_task,
                formation,
                feeder,
                health,
                reconciler,
                pruner,
                quorum_check,
                commit_flusher,
                backups
            );
        })
        .await;
        if drained.is_err() {
            tracing::warn!("client connections did not drain before the deadline");
        }
        if let Err(e) = tokio::time::timeout(Duration::from_secs(2), node.raft().shutdown()).await {
            tracing::warn!(error = %e, "raft did not stop in time");
        }
        let _ = stop_peer_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(1), peer_task).await;
        reloader.abort();
        tracing::info!(elapsed = ?started.elapsed(), "shutdown complete");
        Ok(())
    }
}

async fn wait_for(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Keeps the gRPC health status in line with readiness.
async fn report_health(
    node: RaftNode,
    reporter: tonic_health::server::HealthReporter,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let status = match node.readiness().await {
            Ok(()) => tonic_health::ServingStatus::Serving,
            Err(_) => tonic_health::ServingStatus::NotServing,
        };
        reporter.set_service_status("", status).await;
        reporter
            .set_service_status("openraft_memory.v1.StudentService", status)
            .await;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// The shortest interval between two updates of the Raft gauges.
const METRICS_COALESCE: Duration = Duration::from_millis(50);

/// Mirrors OpenRaft's metrics channel into the Prometheus gauges.
async fn feed_metrics(node: RaftNode, mut stop: watch::Receiver<bool>) {
    let mut rx = node.raft().metrics();
    let m = node.metrics().clone();
    let mut last_leader = None;
    loop {
        let rm = rx.borrow_and_update().clone();
        m.raft_node_id.set(rm.id as i64);
        m.raft_term.set(rm.current_term as i64);
        for (state, name) in [
            (ServerState::Leader, "leader"),
            (ServerState::Follower, "follower"),
            (ServerState::Candidate, "candidate"),
            (ServerState::Learner, "learner"),
            (ServerState::Shutdown, "shutdown"),
        ] {
            m.raft_state
                .with_label_values(&[name])
                .set(i64::from(rm.state == state));
        }
        m.raft_is_leader.set(i64::from(rm.state == ServerState::Leader));
        m.raft_has_leader.set(i64::from(rm.current_leader.is_some()));
        if rm.current_leader.is_some() && rm.current_leader != last_leader {
            if last_leader.is_some() {
                m.raft_leader_changes_total.inc();
            }
            last_leader = rm.current_leader;
        }
        let last_log = rm.last_log_index.unwrap_or(0);
        m.raft_last_log_index.set(last_log as i64);
        m.raft_applied_index
            .set(rm.last_applied.map_or(0, |l| l.index) as i64);
        m.raft_snapshot_index
            .set(rm.snapshot.map_or(0, |l| l.index) as i64);
        m.raft_committed_index
            .set(node.committed_index().unwrap_or(0) as i64);
        let membership = rm.membership_config.membership();
        m.raft_voters.set(membership.voter_ids().count() as i64);
        m.raft_learners.set(membership.learner_ids().count() as i64);
        m.raft_replication_lag_entries.reset();
        if let Some(repl) = &rm.replication {
            for (peer, matched) in repl {
                if *peer == rm.id {
                    continue;
                }
                let name = membership.get_node(peer).map_or("unknown", |n| n.name.as_str());
                let lag = last_log.saturating_sub(matched.map_or(0, |l| l.index));
                m.raft_replication_lag_entries
                    .with_label_values(&[name])
                    .set(lag as i64);
            }
        }
        m.students.set(node.state_machine().len() as i64);
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        // OpenRaft publishes metrics on every applied batch; under load that is thousands
        // of times a second. Coalesce: the watch channel keeps only the newest value, and
        // nothing scrapes more often than this.
        tokio::time::sleep(METRICS_COALESCE).await;
    }
}
