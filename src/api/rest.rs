//! The REST API (axum): student CRUD and list, cluster status and membership, health and
//! metrics. Bodies are JSON with unknown fields rejected; errors are problem+json.

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, FailureDetail};
use super::extract::{Body, Params, PathId};
use super::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, outcome};
use crate::model::{Command, Member, Record, Student, validate_id};
use crate::node::{Consistency, RaftNode};

/// Builds the REST router for `node`.
pub fn router(node: RaftNode) -> Router {
    let max_body = node.settings().http.max_body_bytes;
    Router::new()
        .route("/students", get(list_students).post(create_student))
        .route(
            "/students/{id}",
            get(get_student).put(update_student).delete(delete_student),
        )
        .route("/cluster", get(cluster))
        .route("/cluster/snapshot", get(backup))
        .route("/cluster/members", axum::routing::post(add_member))
        .route("/cluster/members/{id}", delete(remove_member))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(node.clone(), super::authz::rest))
        .layer(middleware::from_fn_with_state(node.clone(), observe))
        .with_state(node)
}

/// A bounded metric label for a request method: any client can send a custom method, and
/// each distinct label value is a new time series.
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// Records request metrics by route template and bounds the handling time.
async fn observe(State(node): State<RaftNode>, req: Request, next: Next) -> Response {
    // Cheap clones (a standard method is inline, a matched path is shared): no allocation.
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or("unmatched", |p| p.as_str());
    let method_label = method_label(&method);
    let m = node.metrics();
    // A drop guard: a request whose client went away is still timed.
    let _timer = m
        .http_request_duration
        .with_label_values(&[method_label, route])
        .start_timer();
    let timeout = node.settings().http.request_timeout;
    let resp = match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::Node(crate::node::NodeError::Timeout(format!(
            "request not handled within {timeout:?}"
        )))
        .into_response(),
    };
    m.http_requests_total
        .with_label_values(&[method_label, route, resp.status().as_str()])
        .inc();
    if resp.status().is_server_error() {
        let detail = resp
            .extensions()
            .get::<FailureDetail>()
            .map_or("", |d| d.0.as_str());
        tracing::warn!(%method, route, status = resp.status().as_u16(), detail, "request failed");
    }
    resp
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    id: i64,
    name: String,
    score: f32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    name: String,
    score: f32,
}

#[derive(Debug, Default, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum ConsistencyParam {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadParams {
    #[serde(default)]
    consistency: ConsistencyParam,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    limit: Option<usize>,
    after: Option<i64>,
    #[serde(default)]
    consistency: ConsistencyParam,
}

#[derive(Debug, Serialize)]
struct ListBody {
    students: Vec<Record>,
    next_after: Option<i64>,
}

/// A record as an answer: its JSON and its revision as a strong `ETag`.
fn with_etag(status: StatusCode, record: Record) -> Response {
    let etag = format!("\"{}\"", record.revision);
    (status, [(header::ETAG, etag)], Json(record)).into_response()
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

#[tracing::instrument(skip_all, fields(id = body.id))]
async fn create_student(
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
    let location = format!("/students/{}", student.student.id);
    let mut resp = with_etag(StatusCode::CREATED, student);
    if let Ok(v) = header::HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

#[tracing::instrument(skip_all)]
async fn get_student(
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

#[tracing::instrument(skip_all)]
async fn update_student(
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

#[tracing::instrument(skip_all)]
async fn delete_student(
    State(node): State<RaftNode>,
    PathId(id): PathId<i64>,
    headers: axum::http::HeaderMap,
) -> Result<StatusCode, ApiError> {
    let id = validate_id(id)?;
    let expected = if_match(&headers)?;
    outcome(node.write(Command::Delete { id, expected }).await?)?;
    Ok(StatusCode::NO_CONTENT)
}

#[tracing::instrument(skip_all)]
async fn list_students(
    State(node): State<RaftNode>,
    Params(params): Params<ListParams>,
) -> Result<Json<ListBody>, ApiError> {
    let limit = params.limit.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "`limit` must be between 1 and {MAX_PAGE_SIZE}, got {limit}"
        )));
    }
    let (students, more) = node.list(params.after, limit, params.consistency.into()).await?;
    let next_after = if more {
        students.last().map(|r| r.student.id)
    } else {
        None
    };
    Ok(Json(ListBody { students, next_after }))
}

async fn cluster(State(node): State<RaftNode>) -> Json<crate::node::ClusterInfo> {
    Json(node.cluster_info())
}

/// Admin: a consistent backup of every record, in the snapshot-file format that
/// `--restore-from` reads. Taken after a read barrier, so it holds every write acknowledged
/// before the request (and possibly later ones).
async fn backup(State(node): State<RaftNode>) -> Result<Response, ApiError> {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddMemberBody {
    id: u64,
    name: String,
    addr: String,
}

async fn add_member(
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

async fn remove_member(
    State(node): State<RaftNode>,
    PathId(id): PathId<u64>,
) -> Result<StatusCode, ApiError> {
    node.remove_member(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

async fn livez(State(node): State<RaftNode>) -> Response {
    let running = node.raft().metrics().borrow().running_state.clone();
    match running {
        Ok(()) => Json(Health {
            status: "ok",
            reason: None,
        })
        .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "failed",
                reason: Some(format!("raft core stopped: {e}")),
            }),
        )
            .into_response(),
    }
}

async fn readyz(State(node): State<RaftNode>) -> Response {
    match node.readiness().await {
        Ok(()) => Json(Health {
            status: "ready",
            reason: None,
        })
        .into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "not ready",
                reason: Some(reason),
            }),
        )
            .into_response(),
    }
}

async fn metrics(State(node): State<RaftNode>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        node.metrics().render(),
    )
        .into_response()
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::MethodNotAllowed(format!("{} does not accept {}", req.uri().path(), req.method()))
}

async fn not_found(req: Request) -> ApiError {
    ApiError::NotFound(format!("no route for {} {}", req.method(), req.uri().path()))
}
