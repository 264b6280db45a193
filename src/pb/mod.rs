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
