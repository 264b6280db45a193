//! The client gRPC API: `openraft_memory.v1.StudentService`. Health (`grpc.health.v1`) and
//! reflection are served beside it by [`crate::server`].

use std::future::Future;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::error::ApiError;
use super::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use crate::model::{Command, Record, Student, validate_id};
use crate::node::{Consistency, RaftNode};
use crate::pb::client;
use crate::pb::client::student_service_server::StudentService;
use crate::store::watch::{Change, WatchEvent};

/// The `StudentService` implementation for one node.
#[derive(Clone)]
pub struct StudentGrpc {
    node: RaftNode,
}

impl StudentGrpc {
    /// A service answering for `node`.
    pub fn new(node: RaftNode) -> Self {
        StudentGrpc { node }
    }

    /// Runs one call's body, timed and counted by method and status code. The timer is a
    /// drop guard, so a call whose client went away is still timed.
    async fn measured<T>(
        &self,
        method: &'static str,
        body: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<T, Status> {
        let m = self.node.metrics();
        let _timer = m.grpc_request_duration.with_label_values(&[method]).start_timer();
        let timeout = self.node.settings().grpc.request_timeout;
        let result = match tokio::time::timeout(timeout, body).await {
            Ok(r) => r,
            Err(_) => Err(ApiError::Node(crate::node::NodeError::Timeout(format!(
                "request not handled within {timeout:?} (grpc.request_timeout); a write may or may not be applied"
            )))),
        }
        .map_err(Status::from);
        let code = result.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok);
        m.grpc_requests_total
            .with_label_values(&[method, code_name(code)])
            .inc();
        if let Err(status) = &result
            && matches!(code, tonic::Code::Unavailable | tonic::Code::Internal)
        {
            // The server-side failures (REST's 5xx), with their reason.
            tracing::warn!(
                method,
                code = code_name(code),
                detail = status.message(),
                "request failed"
            );
        }
        result
    }

    async fn write(&self, cmd: Command) -> Result<Option<Record>, ApiError> {
        super::outcome(self.node.write(cmd).await?)
    }
}

/// The canonical upper-snake name of a gRPC code: a bounded metric label.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

fn consistency(raw: i32) -> Result<Consistency, ApiError> {
    match client::Consistency::try_from(raw) {
        Ok(client::Consistency::Unspecified | client::Consistency::Linearizable) => {
            Ok(Consistency::Linearizable)
        }
        Ok(client::Consistency::Local) => Ok(Consistency::Local),
        Err(_) => Err(ApiError::BadRequest(format!("unknown consistency value {raw}"))),
    }
}

fn required(student: Option<client::Student>) -> Result<client::Student, ApiError> {
    student.ok_or_else(|| ApiError::BadRequest("`student` is required".into()))
}

fn internal(what: &str) -> ApiError {
    ApiError::Node(crate::node::NodeError::Internal(format!(
        "{what} returned no record"
    )))
}

/// One watch item as a `WatchResponse`, or the status that ends the stream.
fn watch_response(item: Result<WatchEvent, crate::node::NodeError>) -> Result<client::WatchResponse, Status> {
    match item {
        Ok(WatchEvent::Changes(c)) => Ok(client::WatchResponse {
            revision: c.revision,
            events: c
                .changes
                .iter()
                .map(|ch| {
                    let (kind, record) = match ch {
                        Change::Put(r) => (client::EventType::Put, r),
                        Change::Delete(r) => (client::EventType::Delete, r),
                    };
                    client::WatchEvent {
                        r#type: kind.into(),
                        student: Some(record.clone().into()),
                    }
                })
                .collect(),
        }),
        Ok(WatchEvent::Progress(revision)) => Ok(client::WatchResponse {
            revision,
            events: Vec::new(),
        }),
        Err(e) => Err(ApiError::Node(e).into()),
    }
}

/// The stream `WatchStudents` answers with.
type WatchStream = std::pin::Pin<Box<dyn Stream<Item = Result<client::WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl StudentService for StudentGrpc {
    type WatchStudentsStream = WatchStream;

    /// Not `measured`: the call lasts as long as the watch, so only its start is counted.
    #[tracing::instrument(skip_all)]
    async fn watch_students(
        &self,
        request: Request<client::WatchRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let req = request.into_inner();
        let started = (|| {
            if let Some(id) = req.id {
                validate_id(id)?;
            }
            Ok::<_, ApiError>(self.node.watch(req.start_revision, req.id)?)
        })()
        .map_err(Status::from);
        let code = started.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok);
        self.node
            .metrics()
            .grpc_requests_total
            .with_label_values(&["WatchStudents", code_name(code)])
            .inc();
        let watcher = started?;
        let stream = super::watch::metered(self.node.metrics(), watcher, "grpc").map(watch_response);
        Ok(Response::new(Box::pin(stream)))
    }

    #[tracing::instrument(skip_all)]
    async fn create_student(
        &self,
        request: Request<client::CreateStudentRequest>,
    ) -> Result<Response<client::Student>, Status> {
        self.measured("CreateStudent", async {
            let s = required(request.into_inner().student)?;
            let student = Student::validated(s.id, &s.name, s.score)?;
            let created = self
                .write(Command::Create(student))
                .await?
                .ok_or_else(|| internal("create"))?;
            Ok::<_, ApiError>(Response::new(created.into()))
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn get_student(
        &self,
        request: Request<client::GetStudentRequest>,
    ) -> Result<Response<client::Student>, Status> {
        self.measured("GetStudent", async {
            let req = request.into_inner();
            let id = validate_id(req.id)?;
            let student = self
                .node
                .get(id, consistency(req.consistency)?)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("no student with id {id}")))?;
            Ok::<_, ApiError>(Response::new(student.into()))
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn update_student(
        &self,
        request: Request<client::UpdateStudentRequest>,
    ) -> Result<Response<client::Student>, Status> {
        self.measured("UpdateStudent", async {
            let req = request.into_inner();
            let s = required(req.student)?;
            let student = Student::validated(s.id, &s.name, s.score)?;
            let expected = (req.expected_revision != 0).then_some(req.expected_revision);
            let updated = self
                .write(Command::Update { student, expected })
                .await?
                .ok_or_else(|| internal("update"))?;
            Ok::<_, ApiError>(Response::new(updated.into()))
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn delete_student(
        &self,
        request: Request<client::DeleteStudentRequest>,
    ) -> Result<Response<client::DeleteStudentResponse>, Status> {
        self.measured("DeleteStudent", async {
            let req = request.into_inner();
            let id = validate_id(req.id)?;
            let expected = (req.expected_revision != 0).then_some(req.expected_revision);
            self.write(Command::Delete { id, expected }).await?;
            Ok::<_, ApiError>(Response::new(client::DeleteStudentResponse {}))
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn list_students(
        &self,
        request: Request<client::ListStudentsRequest>,
    ) -> Result<Response<client::ListStudentsResponse>, Status> {
        self.measured("ListStudents", async {
            let req = request.into_inner();
            let limit = match req.page_size {
                0 => DEFAULT_PAGE_SIZE,
                n if n < 0 || n as usize > MAX_PAGE_SIZE => {
                    return Err(ApiError::BadRequest(format!(
                        "`page_size` must be between 0 and {MAX_PAGE_SIZE}, got {n}"
                    )));
                }
                n => n as usize,
            };
            let after = if req.page_token.is_empty() {
                None
            } else {
                Some(req.page_token.parse::<i64>().map_err(|_| {
                    // Echo a bounded prefix: the message travels in a header.
                    let shown: String = req.page_token.chars().take(40).collect();
                    let more = if shown.len() < req.page_token.len() {
                        "…"
                    } else {
                        ""
                    };
                    ApiError::BadRequest(format!(
                        "`page_token` `{shown}{more}` is not a token this API issued"
                    ))
                })?)
            };
            let (students, more, revision) = self
                .node
                .list(after, limit, consistency(req.consistency)?)
                .await?;
            let next_page_token = match (more, students.last()) {
                (true, Some(last)) => last.student.id.to_string(),
                _ => String::new(),
            };
            Ok(Response::new(client::ListStudentsResponse {
                students: students.into_iter().map(Into::into).collect(),
                next_page_token,
                revision,
            }))
        })
        .await
    }
}
