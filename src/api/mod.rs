//! The inbound edges: REST ([`rest`]), client gRPC ([`grpc`]) and the peer service
//! ([`peer`]). All call [`crate::node::RaftNode`] and map failures through
//! [`error::ApiError`] exactly once each (problem+json, `Status`).

pub mod accept;
pub mod authz;
pub mod error;
mod extract;
pub mod grpc;
pub mod listen;
pub mod peer;
pub mod rest;
mod watch;

/// Default page size of list calls.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest page size of list calls.
pub const MAX_PAGE_SIZE: usize = 1000;

/// Converts a write outcome to the record it produced, or the matching client error.
pub(crate) fn outcome(
    r: crate::model::CommandResult,
) -> Result<Option<crate::model::Record>, error::ApiError> {
    use crate::model::CommandResult;
    use error::ApiError;
    match r {
        CommandResult::Created(s) | CommandResult::Updated(s) => Ok(Some(s)),
        CommandResult::Deleted(_) => Ok(None),
        CommandResult::NotFound(id) => Err(ApiError::NotFound(format!("no student with id {id}"))),
        CommandResult::AlreadyExists(id) => Err(ApiError::AlreadyExists(format!(
            "a student with id {id} exists already"
        ))),
        CommandResult::RevisionMismatch { id, current } => Err(ApiError::PreconditionFailed {
            detail: match current {
                Some(rev) => format!(
                    "student {id} is at revision {rev}, not the one expected; nothing was changed \
                     (read it again and retry with its current revision)"
                ),
                None => format!("no student with id {id}, so no revision can match; nothing was changed"),
            },
            current,
        }),
        // A single command never yields a batch outcome: the node unpacks batches.
        CommandResult::Batch(_) => Err(ApiError::Node(crate::node::NodeError::Internal(
            "a single write produced a batch outcome".into(),
        ))),
    }
}
