//! openraft-memory: a Raft-replicated store of student records.
//!
//! # Layout
//! - [`model`]: the record, the commands that change it, their outcomes, and validation.
//! - [`pb`]: generated protobuf types (client and peer protocols) and their conversions to
//!   the Raft and model types.
//! - [`store`]: OpenRaft storage: the in-memory log and the state machine with snapshots.
//! - [`network`]: the peer transport: the gRPC client OpenRaft replicates through, and the
//!   peer gRPC service that receives Raft RPCs, forwarded writes, reads and joins.
//! - [`node`]: one running member: the Raft handle plus what the APIs need (write with
//!   forwarding, linearizable reads, cluster status, readiness).
//! - [`cluster`]: cluster formation and upkeep: bootstrap, join, stale-member removal and
//!   leadership transfer on shutdown.
//! - [`api`]: the client edges: REST (axum) and gRPC (tonic) with their error mapping.
//! - [`config`]: layered, validated settings.
//! - [`discovery`]: static or DNS (SRV) peer discovery, and host resolution for peer
//!   connections.
//! - [`quorum`]: majority arithmetic over joint voter configurations.
//! - [`lease`]: the leader lease's bookkeeping (who accepted this leader when).
//! - [`metrics`]: Prometheus metrics.
//! - [`telemetry`]: logging and tracing set-up.
//! - [`probe`]: the `probe` subcommand, a health check for images without curl.
//! - [`bench`]: the `bench` subcommand, a load driver with latency percentiles.
//! - [`server`]: builds everything, binds the listeners and runs until shutdown.

pub mod api;
pub mod bench;
pub mod cluster;
pub mod config;
pub mod discovery;
pub mod lease;
pub mod metrics;
pub mod model;
pub mod network;
pub mod node;
pub mod pb;
pub mod probe;
pub mod quorum;
pub mod server;
pub mod store;
pub mod telemetry;

use std::io::Cursor;

pub use model::Member;

openraft::declare_raft_types!(
    /// The Raft type configuration of this service.
    pub TypeConfig:
        D = model::Command,
        R = Option<model::CommandResult>,
        NodeId = NodeId,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A Raft node id. In memory mode a process draws a fresh one at every start.
pub type NodeId = u64;
/// The Raft handle of this service.
pub type Raft = openraft::Raft<TypeConfig>;
/// A Raft log id.
pub type LogId = openraft::LogId<NodeId>;
/// A Raft vote.
pub type Vote = openraft::Vote<NodeId>;
/// A Raft log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A cluster membership (joint config plus member addresses).
pub type Membership = openraft::Membership<NodeId, Member>;
/// A membership with the log id that introduced it.
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;
/// A snapshot with its data.
pub type Snapshot = openraft::Snapshot<TypeConfig>;
/// A storage error.
pub type StorageError = openraft::StorageError<NodeId>;
