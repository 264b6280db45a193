//! Generated protobuf code for the client API (`proto/student.proto`), the peer protocol
//! (`proto/peer.proto`) and disk mode's on-disk records (`proto/storage.proto`), and the
//! conversions between peer messages and OpenRaft / model types.

pub mod convert;

pub use convert::MissingField;

/// Module tree mirroring the protobuf packages, so generated cross-package paths resolve.
#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::unwrap_used)]
pub mod openraft_memory {
    /// `openraft_memory.v1`: the client API.
    pub mod v1 {
        tonic::include_proto!("openraft_memory.v1");
    }
    /// `openraft_memory.storage.v1`: disk mode's on-disk records.
    pub mod storage {
        /// Version 1 of the on-disk formats.
        pub mod v1 {
            tonic::include_proto!("openraft_memory.storage.v1");
        }
    }
    /// `openraft_memory.peer.v1`: the peer protocol.
    pub mod peer {
        /// Version 1 of the peer protocol.
        pub mod v1 {
            tonic::include_proto!("openraft_memory.peer.v1");
        }
    }
}

pub use openraft_memory::peer::v1 as peer;
pub use openraft_memory::storage::v1 as storage;
pub use openraft_memory::v1 as client;

/// The encoded file descriptors of both protocols, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("openraft_memory_descriptor");

/// gRPC metadata naming the Raft node id a Raft RPC is meant for. An address can outlive a
/// node id (a pod restarted in memory mode comes back empty under a new id at the same
/// name); without this check the new process would answer for the old id, and the leader
/// would see that id's log go backwards.
pub const TARGET_NODE_HEADER: &str = "x-raft-target-node";

/// gRPC metadata on an `UNAVAILABLE` answer that guarantees nothing was applied, so the
/// caller may retry a write safely. Without it an `UNAVAILABLE` may be a connection that
/// broke after the request was sent. Part of both the client and the peer contract.
pub const NOT_APPLIED_HEADER: &str = "x-openraft-memory-not-applied";

/// An `UNAVAILABLE` status marked as "nothing was applied" (see [`NOT_APPLIED_HEADER`]).
pub fn not_applied(message: impl Into<String>) -> tonic::Status {
    let mut status = tonic::Status::unavailable(message);
    status.metadata_mut().insert(
        NOT_APPLIED_HEADER,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    status
}

/// gRPC metadata on a `no-leader` answer naming the node the answering node believes leads
/// (its name), when it knows one it cannot reach; [`LEADER_ID_HEADER`] carries its Raft id.
/// Clients may send the request there directly.
pub const LEADER_HEADER: &str = "x-openraft-memory-leader";
/// The Raft id of the node in [`LEADER_HEADER`].
pub const LEADER_ID_HEADER: &str = "x-openraft-memory-leader-id";

/// Adds the believed leader's name and id to `metadata`, if there is one (names that are
/// not valid metadata are left out: the hint is advice, never needed).
pub fn tell_leader(metadata: &mut tonic::metadata::MetadataMap, believed: Option<(u64, &str)>) {
    let Some((id, name)) = believed else {
        return;
    };
    if let Ok(name) = name.parse() {
        metadata.insert(LEADER_HEADER, name);
    }
    if let Ok(id) = id.to_string().parse() {
        metadata.insert(LEADER_ID_HEADER, id);
    }
}
