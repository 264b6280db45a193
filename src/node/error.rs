//! Why the node could not do what it was asked, and what a failed call to the leader
//! means for this node's caller. The wire form of both lives in the transport
//! (`network::peer` decodes a peer's answer) and the edges (`api` encodes an answer).

use crate::NodeId;
use crate::model::Member;
use crate::network::PeerError;

/// Why the node could not do what it was asked. The edges map each kind to a status once.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    /// No leader is known or reachable; nothing was applied and the caller may retry.
    #[error("no leader is available: {reason}")]
    NoLeader {
        /// Why, for a person to act on.
        reason: String,
        /// The node this one believes leads, when it knows one but cannot reach it (or it
        /// is this node, cut off from a quorum): clients may try it directly.
        believed: Option<(NodeId, Member)>,
    },
    /// This node is not the leader (peer-level answer; clients never see it).
    #[error("this node is not the leader")]
    NotLeader {
        /// The leader this node knows of, if any.
        leader: Option<(NodeId, Member)>,
    },
    /// Too much is waiting already; nothing was proposed and the caller may retry later.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The operation did not finish in time; a write may or may not have been applied.
    #[error("{0}")]
    Timeout(String),
    /// A membership change was refused.
    #[error("{0}")]
    Membership(String),
    /// No member has this id.
    #[error("no member with id {0}")]
    UnknownMember(NodeId),
    /// A watch cannot start or go on (compacted, fell behind, shutting down).
    #[error(transparent)]
    Watch(#[from] crate::store::watch::WatchError),
    /// Something that should not happen (a Raft fatal error, a malformed peer answer).
    #[error("internal error: {0}")]
    Internal(String),
}

impl NodeError {
    /// [`NodeError::NoLeader`] without a believed leader.
    pub fn no_leader(reason: impl Into<String>) -> Self {
        NodeError::NoLeader {
            reason: reason.into(),
            believed: None,
        }
    }
}

impl From<PeerError> for NodeError {
    /// What a failed call to the leader means for this node's caller.
    fn from(e: PeerError) -> Self {
        match e {
            PeerError::NotLeader { .. } => NodeError::NotLeader { leader: None },
            PeerError::Unreachable { peer, message } => {
                NodeError::no_leader(format!("leader {peer} is unreachable: {message}"))
            }
            PeerError::ContactLost { peer, message } => NodeError::Timeout(format!(
                "lost contact with the leader {peer} during the write; it may or may not have been applied: {message}"
            )),
            PeerError::Timeout { peer, message } => NodeError::Timeout(format!(
                "{peer} did not answer in time; a write may or may not be applied: {message}"
            )),
            PeerError::Refused(m) => NodeError::Membership(m),
            PeerError::UnknownMember(id) => NodeError::UnknownMember(id),
            e @ (PeerError::NotFound(_) | PeerError::Unexpected { .. }) => NodeError::Internal(e.to_string()),
        }
    }
}
