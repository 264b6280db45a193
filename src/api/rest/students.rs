//! The student routes: create, read, update, delete and list records, with revisions as
//! `ETag`s and `If-Match` conditions. Each handler's `#[utoipa::path]` is its entry in the
//! OpenAPI document, and the router is built from those entries, so the two cannot differ.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::super::error::{ApiError, Problem};
use super::super::extract::{Body, Params, PathId};
use super::super::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, outcome};
use crate::model::{Command, Record, Student, validate_id};
use crate::node::{Consistency, RaftNode};

/// The OpenAPI tag of these routes.
pub(super) const TAG: &str = "students";

/// A new record.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
    /// Primary key, at least 1.
    #[schema(minimum = 1, example = 1)]
    id: i64,
    /// 1 to 256 characters after trimming; stored trimmed.
    #[schema(min_length = 1, max_length = 1024, example = "Ada")]
    name: String,
    /// A finite number from 0 to 100.
    #[schema(minimum = 0, maximum = 100, example = 91.5)]
    score: f32,
}

/// A record's new fields (the id is in the path).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateBody {
    /// 1 to 256 characters after trimming; stored trimmed.
    #[schema(min_length = 1, max_length = 1024, example = "Ada L.")]
    name: String,
    /// A finite number from 0 to 100.
    #[schema(minimum = 0, maximum = 100, example = 99)]
    score: f32,
}

/// How a read is served: `linearizable` (the default) sees every write acknowledged before
/// it; `local` reads this node's applied state, fast and possibly stale.
#[derive(Debug, Default, Deserialize, Clone, Copy, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum ConsistencyParam {
    #[default]
    Linearizable,
    Local,
}

impl From<ConsistencyParam> for Consistency {
    fn from(c: ConsistencyParam) -> Self {
        match c {
            ConsistencyParam::Linearizable => Consistency::Linearizable,
            ConsistencyParam::Local => Consistency::Local,
        }
    }
}

/// The query of a single read.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ReadParams {
    /// `linearizable` (default) or `local`.
    #[serde(default)]
    #[param(inline)]
    consistency: ConsistencyParam,
}

/// The query of a list call.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListParams {
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Only ids greater than this: the previous page's `next_after`.
    after: Option<i64>,
    /// `linearizable` (default) or `local`.
    #[serde(default)]
    #[param(inline)]
    consistency: ConsistencyParam,
}

/// One page of records, in id order.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ListBody {
    /// The records.
    students: Vec<Record>,
    /// The `after` of the next page; `null` on the last page.
    next_after: Option<i64>,
    /// The store's revision this page was read at: watch from `revision + 1` to follow on.
    revision: u64,
}

/// A record as an answer: its JSON and its revision as a strong `ETag`.
fn with_etag(status: StatusCode, record: Record) -> Response {
    // Built by hand rather than from a `(status, headers, body)` tuple: the tuple converts
    // and checks each header through `IntoResponseParts`, a cost on every write.
    let etag = header::HeaderValue::try_from(format!("\"{}\"", record.revision));
    let mut resp = Json(record).into_response();
    *resp.status_mut() = status;
    if let Ok(etag) = etag {
        resp.headers_mut().insert(header::ETAG, etag);
    }
    resp
}

/// The revision an `If-Match` header asks for: one strong entity tag (`"17"`, as `ETag`
/// gives it) or `*` (any current record, which PUT and DELETE require anyway). A list of
/// tags or a weak one is refused rather than half-honoured: a condition the server does
/// not evaluate must not look like one it did.
fn if_match(headers: &axum::http::HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(raw) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::BadRequest(
            "`If-Match` must be one revision in quotes, as the ETag header gives it (`If-Match: \"17\"`), or `*`"
                .into(),
        )
    };
    let value = raw.to_str().map_err(|_| bad())?.trim();
    if value == "*" {
        return Ok(None);
    }
    let tag = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .ok_or_else(bad)?;
    tag.parse::<u64>().map(Some).map_err(|_| bad())
}

#[utoipa::path(
    post, path = "/students", tag = TAG,
    request_body = CreateBody,
    responses(
        (status = 201, description = "Created; `Location` names it", body = Record, headers(("Location" = String, description = "`/students/<id>`"), ("ETag" = String, description = "The record's revision, quoted: send it back as `If-Match`"))),
        (status = 400, description = "Bad JSON, an unknown or missing field, or a field out of range", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A record with this id exists", body = Problem, content_type = "application/problem+json"),
        super::BodyRefused,
        super::Refused,
        super::Unavailable,
    ),
)]
#[tracing::instrument(skip_all, fields(id = body.id))]
pub(super) async fn create_student(
    State(node): State<RaftNode>,
    Body(body): Body<CreateBody>,
) -> Result<Response, ApiError> {
    let student = Student::validated(body.id, &body.name, body.score)?;
    let created = outcome(node.write(Command::Create(student)).await?)?;
    let student = created.ok_or_else(|| {
        ApiError::Node(crate::node::NodeError::Internal(
            "create returned no record".into(),
        ))
    })?;
    let location = header::HeaderValue::try_from(format!("/students/{}", student.student.id));
    let mut resp = with_etag(StatusCode::CREATED, student);
    if let Ok(v) = location {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

#[utoipa::path(
    get, path = "/students/{id}", tag = TAG,
    params(("id" = i64, Path, description = "The record's id, at least 1"), ReadParams),
    responses(
        (status = 200, description = "The record", body = Record, headers(("ETag" = String, description = "The record's revision, quoted: send it back as `If-Match`"))),
        (status = 400, description = "The id is not an integer of at least 1, or an unknown query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No record has this id", body = Problem, content_type = "application/problem+json"),
        super::Refused,
        super::Unavailable,
    ),
)]
#[tracing::instrument(skip_all)]
pub(super) async fn get_student(
    State(node): State<RaftNode>,
    PathId(id): PathId<i64>,
    Params(params): Params<ReadParams>,
) -> Result<Response, ApiError> {
    let id = validate_id(id)?;
    node.get(id, params.consistency.into())
        .await?
        .map(|r| with_etag(StatusCode::OK, r))
        .ok_or_else(|| ApiError::NotFound(format!("no student with id {id}")))
}

#[utoipa::path(
    put, path = "/students/{id}", tag = TAG,
    params(("id" = i64, Path, description = "The record's id, at least 1"), ("If-Match" = Option<String>, Header, description = "Apply only if the record's revision is this one: one strong tag as `ETag` gives it (`\"17\"`) or `*`")),
    request_body = UpdateBody,
    responses(
        (status = 200, description = "The record as replaced, with its new revision", body = Record, headers(("ETag" = String, description = "The record's revision, quoted: send it back as `If-Match`"))),
        (status = 400, description = "Bad JSON, an unknown field, a field out of range, or an `If-Match` that is not one strong tag or `*`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No record has this id", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "`If-Match` named another revision (`current_revision` says which) or the record does not exist; nothing changed", body = Problem, content_type = "application/problem+json"),
        super::BodyRefused,
        super::Refused,
        super::Unavailable,
    ),
)]
#[tracing::instrument(skip_all)]
pub(super) async fn update_student(
    State(node): State<RaftNode>,
    PathId(id): PathId<i64>,
    headers: axum::http::HeaderMap,
    Body(body): Body<UpdateBody>,
) -> Result<Response, ApiError> {
    let expected = if_match(&headers)?;
    let student = Student::validated(id, &body.name, body.score)?;
    let updated = outcome(node.write(Command::Update { student, expected }).await?)?;
    updated.map(|r| with_etag(StatusCode::OK, r)).ok_or_else(|| {
        ApiError::Node(crate::node::NodeError::Internal(
            "update returned no record".into(),
        ))
    })
}

#[utoipa::path(
    delete, path = "/students/{id}", tag = TAG,
    params(("id" = i64, Path, description = "The record's id, at least 1"), ("If-Match" = Option<String>, Header, description = "Apply only if the record's revision is this one: one strong tag as `ETag` gives it (`\"17\"`) or `*`")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "The id is not an integer of at least 1, or a malformed `If-Match`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No record has this id", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "`If-Match` named another revision or the record does not exist; nothing changed", body = Problem, content_type = "application/problem+json"),
        super::Refused,
        super::Unavailable,
    ),
)]
#[tracing::instrument(skip_all)]
pub(super) async fn delete_student(
    State(node): State<RaftNode>,
    PathId(id): PathId<i64>,
    headers: axum::http::HeaderMap,
) -> Result<StatusCode, ApiError> {
    let id = validate_id(id)?;
    let expected = if_match(&headers)?;
    outcome(node.write(Command::Delete { id, expected }).await?)?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get, path = "/students", tag = TAG,
    params(ListParams),
    responses(
        (status = 200, description = "A page of records in id order", body = ListBody),
        (status = 400, description = "`limit` outside 1-1000, a non-integer `after`, or an unknown query parameter", body = Problem, content_type = "application/problem+json"),
        super::Refused,
        super::Unavailable,
    ),
)]
#[tracing::instrument(skip_all)]
pub(super) async fn list_students(
    State(node): State<RaftNode>,
    Params(params): Params<ListParams>,
) -> Result<Json<ListBody>, ApiError> {
    let limit = params.limit.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "`limit` must be between 1 and {MAX_PAGE_SIZE}, got {limit}"
        )));
    }
    let (students, more, revision) = node.list(params.after, limit, params.consistency.into()).await?;
    let next_after = if more {
        students.last().map(|r| r.student.id)
    } else {
        None
    };
    Ok(Json(ListBody {
        students,
        next_after,
        revision,
    }))
}
