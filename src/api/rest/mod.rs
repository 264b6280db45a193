//! The REST API (axum): student CRUD and list ([`students`]), watch streams ([`watch`]), cluster status, membership
//! and backups ([`admin`]), health, metrics and the OpenAPI document (here). Bodies are JSON
//! with unknown fields rejected; errors are problem+json.
//!
//! Every documented route is registered through utoipa-axum's `routes!`, which takes the
//! path and method from the handler's `#[utoipa::path]`: the router and the OpenAPI
//! document are built from the same entries, so a route cannot exist undocumented or be
//! documented at another path. `api/openapi.json` is that document, committed, and a test
//! fails when the two differ.

mod admin;
mod students;
mod watch;

use std::sync::LazyLock;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, FailureDetail, Problem};
use crate::node::RaftNode;

/// The document's fixed parts: info, tags, the shared schemas and the token scheme.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "openraft-memory",
        description = "A Raft-replicated store of student records. Any node serves every route; \
followers forward writes to the leader. Reads are linearizable unless `consistency=local`. \
Errors are RFC 9457 problem+json. When tokens are configured, send `Authorization: Bearer <token>`.",
        license(name = "MIT OR Apache-2.0"),
    ),
    tags(
        (name = "students", description = "Student records, with revisions and conditional writes"),
        (name = "cluster", description = "Cluster status, membership and backups"),
        (name = "operations", description = "Health, metrics and this document"),
    ),
    components(schemas(Problem, watch::WatchChanges, watch::WatchProgress)),
    modifiers(&BearerToken),
    security((), ("bearer" = [])),
)]
struct ApiDoc;

/// Adds the bearer-token scheme (`security.tokens_file`).
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token from `security.tokens_file`; needed only when tokens are configured",
                    ))
                    .build(),
            ),
        );
    }
}

/// The refusals of authorization, which any route but the probes can answer once tokens
/// are configured (`security.tokens_file`).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Only the document uses it: answers are built by `ApiError`.
enum Refused {
    /// A token is required (tokens are configured) and none or an unknown one was sent
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthenticated(Problem),
    /// The token's role may not do this (the README's role table says which role each route needs)
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
}

/// The retryable 503 of every route that needs the leader.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Only the document uses it.
enum Unavailable {
    /// No leader is reachable, the write was not committed within `raft.write_timeout` (it may or may not be applied), or the node is overloaded; `retryable` is true and `Retry-After` is set
    #[response(status = 503, content_type = "application/problem+json")]
    NoLeader(Problem),
}

/// The refusals of a JSON body before it is parsed.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Only the document uses it.
enum BodyRefused {
    /// The body is larger than `http.max_body_bytes`
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// The body is not `application/json`
    #[response(status = 415, content_type = "application/problem+json")]
    NotJson(Problem),
}

/// Every documented route, with its OpenAPI entry.
fn routes() -> OpenApiRouter<RaftNode> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(students::list_students, students::create_student))
        .routes(routes!(watch::watch_students))
        .routes(routes!(
            students::get_student,
            students::update_student,
            students::delete_student
        ))
        .routes(routes!(admin::cluster))
        .routes(routes!(admin::backup))
        .routes(routes!(admin::add_member))
        .routes(routes!(admin::remove_member))
        .routes(routes!(livez))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(serve_openapi))
}

/// The document rendered once: it does not depend on the node.
static OPENAPI_JSON: LazyLock<String> = LazyLock::new(|| {
    let doc = routes().split_for_parts().1;
    // Serializing plain data structures cannot fail; were it to, the document says so.
    doc.to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot render the OpenAPI document: {e}\"}}"))
});

/// The OpenAPI 3.1 document of the REST API as JSON, exactly as `GET /openapi.json` serves
/// it and `api/openapi.json` holds it.
pub fn openapi_json() -> &'static str {
    OPENAPI_JSON.as_str()
}

/// Builds the REST router for `node`.
pub fn router(node: RaftNode) -> Router {
    let (router, _) = routes().split_for_parts();
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // One middleware, not one per concern: each router layer wraps every route in one
        // more boxed service, cloned and boxed again per request (the body limit is applied
        // by the `Body` extractor for the same reason).
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

/// Records request metrics by route template, bounds the handling time and authorizes
/// (`api::authz`) inside that bound.
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
    let resp = match tokio::time::timeout(timeout, super::authz::rest(&node, req, next)).await {
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

/// A probe's answer.
#[derive(Serialize, ToSchema)]
struct Health {
    /// `ok` / `failed` (livez), `ready` / `not ready` (readyz).
    status: &'static str,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// Liveness: the Raft core runs.
#[utoipa::path(
    get, path = "/livez", tag = "operations", security(()),
    responses(
        (status = 200, description = "The Raft core runs", body = Health),
        (status = 503, description = "The Raft core stopped; `reason` says why", body = Health),
    ),
)]
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

/// Readiness: this node can serve.
#[utoipa::path(
    get, path = "/readyz", tag = "operations", security(()),
    responses(
        (status = 200, description = "A voter that heard from the leader recently and applied its commit index", body = Health),
        (status = 503, description = "Not ready; `reason` says why", body = Health),
    ),
)]
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

/// Prometheus metrics.
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = 401, description = "A token is required and none or an unknown one was sent (`security.anonymous_metrics = false`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token's role may not read metrics", body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn metrics(State(node): State<RaftNode>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        node.metrics().render(),
    )
        .into_response()
}

/// This document.
#[utoipa::path(
    get, path = "/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = Object)),
)]
async fn serve_openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::MethodNotAllowed(format!("{} does not accept {}", req.uri().path(), req.method()))
}

async fn not_found(req: Request) -> ApiError {
    ApiError::NotFound(format!("no route for {} {}", req.method(), req.uri().path()))
}
