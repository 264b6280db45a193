//! openraft-memory: a Raft-replicated store of student records.
//!
//! # Layout
//! The layers, each using only those above it in this list (`tests/layers.rs` checks it;
//! ARCHITECTURE.md explains each):
//! - `model`, `quorum`: the record and its commands; majority arithmetic.
//! - [`config`], [`pb`], `lease`: settings; the protobuf types and wire headers; the
//!   leader lease's bookkeeping.
//! - [`store`], `discovery`, [`telemetry`]: OpenRaft storage (memory or disk); peer
//!   discovery and name resolution; logging and tracing.
//! - `metrics`: Prometheus metrics.
//! - `network`: outbound peer calls: the transport OpenRaft replicates through and the
//!   typed client of the node's own peer calls.
//! - `node`: one running member: writes (batched, routed to the leader), linearizable
//!   reads, membership, readiness.
//! - [`backup`]: backups in object storage: the leader's schedule, retention, fetching
//!   one for a restore.
//! - `cluster`: formation and upkeep: bootstrap, join, stale-member removal, hand-over.
//! - `api`: the inbound edges: REST, client gRPC, the peer service.
//! - [`server`]: builds everything, binds the listeners and runs until shutdown.
//! - [`mod@bench`], [`probe`], [`ctl`]: the `bench`, `probe` and `ctl` subcommands.

// The public surface is what the binary, the examples and the integration tests use:
// settings, the wire types, building and running a server, the subcommands, and storage
// (the journal benchmark). Everything else is internal and may change freely.
mod api;
pub mod backup;
pub mod bench;
mod cluster;
pub mod config;
pub mod ctl;
mod discovery;
mod lease;
mod metrics;
mod model;
mod network;
mod node;
pub mod pb;
pub mod probe;
mod quorum;
pub mod security;
pub mod server;
pub mod store;
pub mod telemetry;

pub use api::grpc::StudentGrpc;
pub use api::rest::{openapi_json, router};
pub use model::{Command, CommandResult, Student};
pub use node::{ClusterInfo, Consistency, NodeError, RaftNode};

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
