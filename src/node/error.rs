//! Why the node could not do what it was asked, and the peer protocol's wire form of it.
//! The tonic mappings below are the peer contract (`api::peer` answers with
//! [`error_to_status`], the forwarding side inverts it with [`status_to_error`]).

use tonic::Code;

use crate::NodeId;
use crate::model::Member;

/// Why the node could not do what it was asked. The edges map each kind to a status once.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    /// No leader is known or reachable; the caller may retry.
    #[error("no leader is available: {0}")]
    NoLeader(String),
    /// This node is not the leader (peer-level answer; clients never see it).
    #[error("this node is not the leader")]
    NotLeader {
        /// The leader this node knows of, if any.
        leader: Option<(NodeId, Member)>,
    },
    /// The operation did not finish in time; a write may or may not have been applied.
    #[error("{0}")]
    Timeout(String),
    /// A membership change was refused.
    #[error("{0}")]
    Membership(String),
    /// No member has this id.
    #[error("no member with id {0}")]
    UnknownMember(NodeId),
    /// Something that should not happen (a Raft fatal error, a malformed peer answer).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Maps a peer's answer (or a transport failure) to a [`NodeError`].
pub fn status_to_error(status: tonic::Status, peer: &Member) -> NodeError {
    match status.code() {
        Code::FailedPrecondition => NodeError::NotLeader { leader: None },
        Code::DeadlineExceeded => NodeError::Timeout(format!(
            "{} did not answer in time; a write may or may not be applied: {}",
            peer.name,
            status.message()
        )),
        Code::Unavailable => NodeError::NoLeader(format!(
            "leader {} is unreachable: {}",
            peer.name,
            status.message()
        )),
        Code::Aborted => NodeError::Membership(status.message().to_owned()),
        _ => NodeError::Internal(format!(
            "{} answered {:?}: {}",
            peer.name,
            status.code(),
            status.message()
        )),
    }
}

use crate::pb::{NOT_APPLIED_HEADER, not_applied};

/// Like [`status_to_error`], for a forwarded write: a transport failure may have happened
/// after the leader received the write, so only a marked refusal counts as "not applied".
pub fn write_status_to_error(status: tonic::Status, peer: &Member) -> NodeError {
    if status.code() == Code::Unavailable && status.metadata().get(NOT_APPLIED_HEADER).is_none() {
        return NodeError::Timeout(format!(
            "lost contact with the leader {} during the write; it may or may not have been applied: {}",
            peer.name,
            status.message()
        ));
    }
    status_to_error(status, peer)
}

/// Maps a [`NodeError`] to the status a peer returns, so [`status_to_error`] can invert it.
pub fn error_to_status(e: NodeError) -> tonic::Status {
    match e {
        NodeError::NotLeader { .. } => tonic::Status::failed_precondition("not the leader"),
        NodeError::NoLeader(m) => not_applied(m),
        NodeError::Timeout(m) => tonic::Status::deadline_exceeded(m),
        NodeError::Membership(m) => tonic::Status::aborted(m),
        NodeError::UnknownMember(id) => tonic::Status::not_found(format!("no member with id {id}")),
        NodeError::Internal(m) => tonic::Status::internal(m),
    }
}
