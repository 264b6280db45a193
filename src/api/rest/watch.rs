//! `GET /students/watch`: the changes of records as Server-Sent Events. Each revision is one
//! `changes` event whose `id` is the revision, so an `EventSource` that reconnects sends
//! `Last-Event-ID` and resumes exactly after the last revision it received; `progress`
//! events (also with an `id`) say the watcher is current; an `error` event carries the
//! problem that ended the stream.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::super::error::{ApiError, Problem};
use super::super::extract::Params;
use super::students::TAG;
use crate::model::{Record, validate_id};
use crate::node::RaftNode;
use crate::store::watch::{Change, WatchEvent};

/// The query of a watch.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct WatchParams {
    /// The first revision whose changes to send; absent or 0: from the next write applied.
    /// A `Last-Event-ID` header (an `EventSource` reconnecting) takes precedence.
    from: Option<u64>,
    /// Only this record's changes.
    #[param(minimum = 1)]
    id: Option<i64>,
}

/// The data of a `changes` event: what one revision did.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct WatchChanges {
    /// The log index of the write; also the event's `id`.
    revision: u64,
    /// In the order the write's commands ran (a batch may change several records).
    changes: Vec<ChangeBody>,
}

/// One record's change.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ChangeBody {
    /// `put` (created or replaced) or `delete`.
    #[serde(rename = "type")]
    kind: ChangeKind,
    /// `put`: the record as it now is; `delete`: the record as it was until this revision.
    record: Record,
}

/// What a change did.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum ChangeKind {
    Put,
    Delete,
}

/// The data of a `progress` event.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct WatchProgress {
    /// Nothing the watch asked for changed up to and including this revision.
    revision: u64,
}

/// The revision to start from: after `Last-Event-ID` if sent, else `from`.
fn start(headers: &HeaderMap, from: Option<u64>) -> Result<u64, ApiError> {
    let Some(last) = headers.get("last-event-id") else {
        return Ok(from.unwrap_or(0));
    };
    last.to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|rev| rev + 1)
        .ok_or_else(|| {
            ApiError::BadRequest(
                "`Last-Event-ID` must be a revision (the `id` of an event this stream sent)".into(),
            )
        })
}

fn event(item: Result<WatchEvent, crate::node::NodeError>) -> Event {
    let (name, id, data) = match item {
        Ok(WatchEvent::Changes(c)) => {
            let body = WatchChanges {
                revision: c.revision,
                changes: c
                    .changes
                    .iter()
                    .map(|ch| match ch {
                        Change::Put(r) => ChangeBody {
                            kind: ChangeKind::Put,
                            record: r.clone(),
                        },
                        Change::Delete(r) => ChangeBody {
                            kind: ChangeKind::Delete,
                            record: r.clone(),
                        },
                    })
                    .collect(),
            };
            ("changes", Some(c.revision), serde_json::to_string(&body))
        }
        Ok(WatchEvent::Progress(revision)) => (
            "progress",
            Some(revision),
            serde_json::to_string(&WatchProgress { revision }),
        ),
        Err(e) => ("error", None, serde_json::to_string(&ApiError::Node(e).problem())),
    };
    // Plain data always serializes; were it not to, the client still learns the stream broke.
    let data = data.unwrap_or_else(|e| format!("{{\"detail\":\"cannot encode the event: {e}\"}}"));
    let event = Event::default().event(name).data(data);
    match id {
        Some(id) => event.id(id.to_string()),
        None => event,
    }
}

/// Watch record changes
///
/// Streams every change from revision `from` on as Server-Sent Events, in revision order and
/// each once, from whichever node is asked. Events: `changes` (data `WatchChanges`, `id` =
/// revision), `progress` (data `WatchProgress`: sent once caught up and whenever idle for
/// `watch.progress_interval`), `error` (data: a problem; the stream ends — `compacted` when
/// the watcher fell behind the retained history, `shutting-down` when the node stops).
/// Resume with `Last-Event-ID` or `from` = the last revision received + 1.
#[utoipa::path(
    get, path = "/students/watch", tag = TAG,
    params(WatchParams, ("Last-Event-ID" = Option<String>, Header, description = "The `id` of the last event received: resume after it")),
    responses(
        (status = 200, description = "An endless `text/event-stream` of `changes`, `progress` and (last) `error` events", content_type = "text/event-stream", body = String),
        (status = 400, description = "A bad `from`, `id` or `Last-Event-ID`, or an unknown query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "`from` is older than this node's change history: `oldest_revision` is the oldest it can start from (list the records again and watch from the list's `revision` + 1)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`watch.max_watchers` streams are open, or the node is shutting down; `retryable` is true", body = Problem, content_type = "application/problem+json"),
        super::Refused,
    ),
)]
#[tracing::instrument(skip_all)]
pub(super) async fn watch_students(
    State(node): State<RaftNode>,
    headers: HeaderMap,
    Params(params): Params<WatchParams>,
) -> Result<Response, ApiError> {
    let from = start(&headers, params.from)?;
    if let Some(id) = params.id {
        validate_id(id)?;
    }
    let watcher = node.watch(from, params.id)?;
    let events = super::super::watch::metered(node.metrics(), watcher, "rest")
        .map(|item| Ok::<_, std::convert::Infallible>(event(item)));
    Ok(Sse::new(events).into_response())
}
