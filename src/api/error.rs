//! The one error type of the client APIs and its two renderings: RFC 9457
//! `application/problem+json` for REST and `tonic::Status` for gRPC.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::model::ValidationError;
use crate::node::NodeError;
use crate::security::auth::Denied;

/// Why a client request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field failed validation.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// The request could not be parsed (bad JSON, unknown field, bad parameter).
    #[error("{0}")]
    BadRequest(String),
    /// The body is larger than the configured limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The body is not JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// No such record or member.
    #[error("{0}")]
    NotFound(String),
    /// The route exists, but not with this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The record exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// A conditional write found another revision (or no record): nothing changed.
    #[error("{detail}")]
    PreconditionFailed {
        /// What was expected and found.
        detail: String,
        /// The record's revision now, if it exists.
        current: Option<u64>,
    },
    /// The cluster could not serve the request.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// Authorization refused the request.
    #[error(transparent)]
    Denied(#[from] Denied),
}

/// An RFC 9457 problem details object.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI reference naming the problem type.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the problem type.
    pub title: &'static str,
    /// The HTTP status code.
    pub status: u16,
    /// What happened in this occurrence, for a person to act on.
    pub detail: String,
    /// Whether retrying the same request later may succeed.
    pub retryable: bool,
    /// On `no-leader`: the node this one believes leads but cannot reach (or this node,
    /// cut off from a quorum), so a client may try it directly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<LeaderHint>,
    /// On `precondition-failed`: the record's revision now (absent when it does not exist).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<u64>,
    /// On `compacted`: the oldest revision a watch can start from on this node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_revision: Option<u64>,
}

/// The leader a `no-leader` answer believes in.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LeaderHint {
    /// Its Raft node id.
    pub id: crate::NodeId,
    /// Its node name.
    pub name: String,
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str, bool) {
        use crate::store::watch::WatchError as W;
        use NodeError as N;
        match self {
            ApiError::Validation(_) => (StatusCode::BAD_REQUEST, "invalid-field", "Invalid field", false),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request", "Bad request", false),
            ApiError::PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
                false,
            ),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                false,
            ),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found", false),
            ApiError::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                false,
            ),
            ApiError::AlreadyExists(_) => (StatusCode::CONFLICT, "already-exists", "Already exists", false),
            ApiError::PreconditionFailed { .. } => (
                StatusCode::PRECONDITION_FAILED,
                "precondition-failed",
                "Revision does not match",
                false,
            ),
            ApiError::Denied(Denied::Unauthenticated(_)) => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Authentication required",
                false,
            ),
            ApiError::Denied(Denied::Forbidden { .. }) => {
                (StatusCode::FORBIDDEN, "forbidden", "Forbidden", false)
            }
            ApiError::Node(N::NoLeader { .. } | N::NotLeader { .. }) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "no-leader",
                "No leader available",
                true,
            ),
            ApiError::Node(N::Timeout(_)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "Not committed in time",
                true,
            ),
            ApiError::Node(N::Membership(_)) => (
                StatusCode::CONFLICT,
                "membership-change",
                "Membership change refused",
                true,
            ),
            ApiError::Node(N::UnknownMember(_)) => (StatusCode::NOT_FOUND, "not-found", "Not found", false),
            ApiError::Node(N::Overloaded(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "overloaded", "Overloaded", true)
            }
            ApiError::Node(N::Watch(W::Compacted { .. } | W::FellBehind { .. })) => {
                (StatusCode::GONE, "compacted", "Revision compacted", false)
            }
            ApiError::Node(N::Watch(W::Closed { .. })) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting-down",
                "Node shutting down",
                true,
            ),
            ApiError::Node(N::Internal(_)) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                true,
            ),
        }
    }

    /// The problem details object for this error.
    pub fn problem(&self) -> Problem {
        let (status, slug, title, retryable) = self.parts();
        Problem {
            kind: format!("https://openraft-memory.dev/problems/{slug}"),
            title,
            status: status.as_u16(),
            detail: self.to_string(),
            retryable,
            leader: match self {
                ApiError::Node(NodeError::NoLeader {
                    believed: Some((id, m)),
                    ..
                }) => Some(LeaderHint {
                    id: *id,
                    name: m.name.clone(),
                }),
                _ => None,
            },
            current_revision: match self {
                ApiError::PreconditionFailed { current, .. } => *current,
                _ => None,
            },
            oldest_revision: self.oldest_revision(),
        }
    }

    fn oldest_revision(&self) -> Option<u64> {
        use crate::store::watch::WatchError as W;
        match self {
            ApiError::Node(NodeError::Watch(W::Compacted { oldest, .. } | W::FellBehind { oldest, .. })) => {
                Some(*oldest)
            }
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let detail = FailureDetail(problem.detail.clone());
        let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, axum::Json(problem)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"openraft-memory\""),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        // For the request log (the REST middleware): rendering an answer does not log.
        resp.extensions_mut().insert(detail);
        resp
    }
}

/// The detail of a failed request's problem, carried in the response's extensions so the
/// middleware that observes every request can log server-side failures with their reason.
#[derive(Debug, Clone)]
pub struct FailureDetail(pub String);

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        use NodeError as N;
        use tonic::Code;
        let code = match &e {
            ApiError::Validation(_) | ApiError::BadRequest(_) => Code::InvalidArgument,
            ApiError::PayloadTooLarge(_) => Code::ResourceExhausted,
            ApiError::UnsupportedMediaType(_) => Code::InvalidArgument,
            ApiError::NotFound(_) | ApiError::Node(N::UnknownMember(_)) => Code::NotFound,
            ApiError::MethodNotAllowed(_) => Code::Unimplemented,
            ApiError::AlreadyExists(_) => Code::AlreadyExists,
            ApiError::PreconditionFailed { current, .. } => {
                let mut status = tonic::Status::failed_precondition(e.to_string());
                if let Some(rev) = current {
                    // Machine-readable beside the message, as REST's `current_revision`.
                    status.metadata_mut().insert("current-revision", (*rev).into());
                }
                return status;
            }
            ApiError::Denied(Denied::Unauthenticated(_)) => Code::Unauthenticated,
            ApiError::Denied(Denied::Forbidden { .. }) => Code::PermissionDenied,
            // Nothing was applied: marked, so clients know a retry is safe.
            ApiError::Node(N::NoLeader { believed, .. }) => {
                let mut status = crate::pb::not_applied(e.to_string());
                let believed = believed.as_ref().map(|(id, m)| (*id, m.name.as_str()));
                crate::pb::tell_leader(status.metadata_mut(), believed);
                return status;
            }
            ApiError::Node(N::NotLeader { .. }) => return crate::pb::not_applied(e.to_string()),
            // The write may have been applied: UNAVAILABLE without the not-applied marker.
            ApiError::Node(N::Timeout(_)) => Code::Unavailable,
            ApiError::Node(N::Membership(_)) => Code::FailedPrecondition,
            // Refused before proposing: RESOURCE_EXHAUSTED says "back off", and nothing applied.
            ApiError::Node(N::Overloaded(_)) => Code::ResourceExhausted,
            ApiError::Node(N::Watch(crate::store::watch::WatchError::Closed { .. })) => Code::Unavailable,
            ApiError::Node(N::Watch(_)) => {
                let mut status = tonic::Status::out_of_range(e.to_string());
                if let Some(rev) = e.oldest_revision() {
                    status.metadata_mut().insert("oldest-revision", rev.into());
                }
                return status;
            }
            ApiError::Node(N::Internal(_)) => Code::Internal,
        };
        tonic::Status::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::auth::Role;

    #[test]
    fn refusals_render_with_their_status_headers_and_codes() {
        let overloaded = ApiError::Node(NodeError::Overloaded("queue full".into()));
        let p = overloaded.problem();
        assert_eq!((p.status, p.retryable), (503, true));
        assert!(p.kind.ends_with("/overloaded"));
        let resp = ApiError::Node(NodeError::Overloaded("queue full".into())).into_response();
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        assert_eq!(
            tonic::Status::from(overloaded).code(),
            tonic::Code::ResourceExhausted
        );

        let anon = || ApiError::Denied(Denied::Unauthenticated("no token".into()));
        let resp = anon().into_response();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            resp.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"openraft-memory\""
        );
        assert_eq!(tonic::Status::from(anon()).code(), tonic::Code::Unauthenticated);

        let forbidden = || {
            ApiError::Denied(Denied::Forbidden {
                name: "viewer".into(),
                role: Role::Read,
                needed: Role::Write,
            })
        };
        let resp = forbidden().into_response();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert!(!resp.headers().contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(
            tonic::Status::from(forbidden()).code(),
            tonic::Code::PermissionDenied
        );
    }
}
