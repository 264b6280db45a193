//! The cluster routes: status, membership changes and the streamed backup. Their
//! `#[utoipa::path]` entries are the OpenAPI document's, as for the student routes.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;

use super::super::error::{ApiError, Problem};
use super::super::extract::{Body, PathId};
use crate::model::Member;
use crate::node::{ClusterInfo, RaftNode};

/// The OpenAPI tag of these routes.
pub(super) const TAG: &str = "cluster";

/// This node's view of the cluster.
#[utoipa::path(
    get, path = "/cluster", tag = TAG,
    responses(
        (status = 200, description = "This node, the leader, the members, log indexes and the store's revision", body = ClusterInfo),
        super::Refused,
    ),
)]
pub(super) async fn cluster(State(node): State<RaftNode>) -> Json<ClusterInfo> {
    Json(node.cluster_info())
}

/// Admin: a consistent backup of every record, in the snapshot-file format that
/// `--restore-from` reads. Taken after a read barrier, so it holds every write acknowledged
/// before the request (and possibly later ones).
#[utoipa::path(
    get, path = "/cluster/snapshot", tag = TAG,
    responses(
        (status = 200, description = "The backup file, streamed", content_type = "application/octet-stream", body = String,
         headers(("x-openraft-memory-records" = u64, description = "How many records it holds"))),
        (status = 500, description = "The backup could not be taken (the log says why)", body = Problem, content_type = "application/problem+json"),
        super::Refused,
        (status = 503, description = "No leader confirmed the read point the backup starts from; retryable", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn backup(State(node): State<RaftNode>) -> Result<Response, ApiError> {
    node.read_barrier().await?;
    let sm = node.state_machine().clone();
    // Sizing the body (one encoding pass over every record) is CPU work: off the runtime.
    let backup = tokio::task::spawn_blocking(move || sm.backup())
        .await
        .map_err(|e| {
            ApiError::Node(crate::node::NodeError::Internal(format!(
                "backup task failed: {e}"
            )))
        })?
        .map_err(|e| {
            ApiError::Node(crate::node::NodeError::Internal(format!(
                "cannot take a backup: {e}"
            )))
        })?;
    let (records, len, index) = (backup.records(), backup.len, backup.index);
    tracing::info!(records, bytes = len, index, "backup taken; streaming it");
    // Encoded piece by piece as the client reads: memory stays at one chunk per download.
    let chunks = backup
        .chunks(BACKUP_CHUNK_BYTES)
        .map(|c| Ok::<_, std::convert::Infallible>(bytes::Bytes::from(c)));
    Ok((
        StatusCode::OK,
        [
            (http::header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (http::header::CONTENT_LENGTH, len.to_string()),
            (
                http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"openraft-memory-{index}.snapshot\""),
            ),
            (
                http::HeaderName::from_static("x-openraft-memory-records"),
                records.to_string(),
            ),
        ],
        axum::body::Body::from_stream(futures::stream::iter(chunks)),
    )
        .into_response())
}

/// Bytes per piece of a streamed backup.
const BACKUP_CHUNK_BYTES: usize = 64 << 10;

/// A node to add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AddMemberBody {
    /// Its Raft node id.
    id: u64,
    /// Its node name (`<name>-<ordinal>`).
    #[schema(min_length = 1)]
    name: String,
    /// Its peer address, `host:port`.
    #[schema(min_length = 1, example = "db-3.db:50052")]
    addr: String,
}

/// Admin: adds a learner, waits until it caught up, promotes it to voter.
#[utoipa::path(
    post, path = "/cluster/members", tag = TAG,
    request_body = AddMemberBody,
    responses(
        (status = 200, description = "The node is a voter; the cluster as it is now", body = ClusterInfo),
        (status = 400, description = "Bad JSON, an unknown or missing field, or an empty name or address", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Refused: another membership change is in progress, or it would break the cluster; retryable", body = Problem, content_type = "application/problem+json"),
        super::BodyRefused,
        super::Refused,
        (status = 503, description = "No leader, or the node did not catch up in time; retryable", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn add_member(
    State(node): State<RaftNode>,
    Body(body): Body<AddMemberBody>,
) -> Result<Response, ApiError> {
    if body.name.trim().is_empty() || body.addr.trim().is_empty() {
        return Err(ApiError::BadRequest("`name` and `addr` must not be empty".into()));
    }
    node.join(
        body.id,
        Member {
            name: body.name,
            addr: body.addr,
        },
    )
    .await?;
    Ok((StatusCode::OK, Json(node.cluster_info())).into_response())
}

/// Admin: removes a member at once.
#[utoipa::path(
    delete, path = "/cluster/members/{id}", tag = TAG,
    params(("id" = u64, Path, description = "The member's Raft node id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "The id is not an unsigned integer", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No member has this id", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Refused: another membership change is in progress, or too few voters would remain", body = Problem, content_type = "application/problem+json"),
        super::Refused,
        (status = 503, description = "No leader; retryable", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn remove_member(
    State(node): State<RaftNode>,
    PathId(id): PathId<u64>,
) -> Result<StatusCode, ApiError> {
    node.remove_member(id).await?;
    Ok(StatusCode::NO_CONTENT)
}
