//! Authorization at the client edges: which role each REST route and gRPC method needs,
//! and the checks that run before any handler. The decision itself is
//! [`crate::security::auth::authorize`]; this module only reads the credentials (a bearer
//! token, the connection's client certificate) and renders a refusal once per protocol.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::accept::ConnInfo;
use super::error::ApiError;
use crate::metrics::Metrics;
use crate::node::RaftNode;
use crate::security::Security;
use crate::security::auth::{Denied, Policy, Role, authorize};

/// The role a REST route needs (`None`: anyone).
fn rest_role(method: &Method, route: Option<&str>, anonymous_metrics: bool) -> Option<Role> {
    match route {
        // The API contract is public, like the probes: it holds no data.
        Some("/livez" | "/readyz" | "/openapi.json") => None,
        Some("/metrics") if anonymous_metrics => None,
        Some("/metrics") => Some(Role::Metrics),
        Some(r) if r.starts_with("/cluster/members") || r == "/cluster/snapshot" => Some(Role::Admin),
        Some(r) if r.starts_with("/students") && !matches!(*method, Method::GET | Method::HEAD) => {
            Some(Role::Write)
        }
        // Reads, and anything unrouted (a stranger learns nothing from a 404 either).
        _ => Some(Role::Read),
    }
}

/// The role a gRPC method needs (`None`: anyone).
fn grpc_role(path: &str) -> Option<Role> {
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
    match service {
        "grpc.health.v1.Health" => None,
        s if s.starts_with("grpc.reflection.") => Some(Role::Admin),
        "openraft_memory.v1.StudentService"
            if matches!(method, "GetStudent" | "ListStudents" | "WatchStudents") =>
        {
            Some(Role::Read)
        }
        _ => Some(Role::Write),
    }
}

/// The token of an `Authorization: Bearer <token>` header; an error for any other scheme.
fn bearer(value: Option<&axum::http::HeaderValue>) -> Result<Option<&str>, Denied> {
    let Some(value) = value else { return Ok(None) };
    let text = value.to_str().unwrap_or_default();
    match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            Ok(Some(token.trim()))
        }
        _ => Err(Denied::Unauthenticated(
            "the Authorization header must be `Bearer <token>`".into(),
        )),
    }
}

fn check(
    security: &Security,
    metrics: &Metrics,
    port: &'static str,
    parts: (&http::HeaderMap, &http::Extensions),
    needed: Option<Role>,
) -> Result<(), Denied> {
    let policy = security.policy();
    let (headers, extensions) = parts;
    let cert = extensions.get::<ConnInfo>().and_then(|c| c.cert.as_deref());
    let outcome = bearer(headers.get(http::header::AUTHORIZATION)).and_then(|token| {
        // Only the tokens policy reads them (no lock taken otherwise).
        let tokens = if policy == Policy::Tokens {
            security.tokens()
        } else {
            None
        };
        authorize(policy, tokens.as_deref(), token, cert, needed)
    });
    if let Err(denied) = &outcome {
        let reason = match denied {
            Denied::Unauthenticated(_) => "unauthenticated",
            Denied::Forbidden { .. } => "forbidden",
        };
        metrics.auth_denied_total.with_label_values(&[port, reason]).inc();
    }
    outcome.map(drop)
}

/// The REST side, run by the REST edge's one middleware (`api::rest::observe`): refuses a
/// request its caller may not make (401 with `WWW-Authenticate: Bearer`, or 403) before
/// the handler runs, and otherwise runs it.
pub async fn rest(node: &RaftNode, req: Request, next: Next) -> Response {
    let security = node.security();
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str());
    let needed = rest_role(req.method(), route, security.anonymous_metrics());
    match check(
        security,
        node.metrics(),
        "rest",
        (req.headers(), req.extensions()),
        needed,
    ) {
        Ok(()) => next.run(req).await,
        Err(denied) => {
            // Take in the body the client is sending before answering: an HTTP/2 stream
            // answered while its body is still arriving is reset, and clients such as curl
            // then report the reset instead of the 401 (seen through Docker's port proxy).
            // Bounded by the body limit and a second, so a refused client gets little.
            let limit = node.settings().http.max_body_bytes;
            let body = axum::body::to_bytes(req.into_body(), limit);
            let _ = tokio::time::timeout(DRAIN_REFUSED_BODY, body).await;
            ApiError::Denied(denied).into_response()
        }
    }
}

/// How long a refused request's body is read before the refusal is sent anyway.
const DRAIN_REFUSED_BODY: std::time::Duration = std::time::Duration::from_secs(1);

/// The gRPC side: a tower layer over the client port's services.
#[derive(Clone)]
pub struct GrpcLayer {
    security: Arc<Security>,
    metrics: Metrics,
}

impl GrpcLayer {
    /// Authorizes with `security`, counting refusals in `metrics`.
    pub fn new(security: Arc<Security>, metrics: Metrics) -> Self {
        GrpcLayer { security, metrics }
    }
}

impl<S> tower::Layer<S> for GrpcLayer {
    type Service = Grpc<S>;

    fn layer(&self, inner: S) -> Grpc<S> {
        Grpc {
            inner,
            layer: self.clone(),
        }
    }
}

/// [`GrpcLayer`]'s service.
#[derive(Clone)]
pub struct Grpc<S> {
    inner: S,
    layer: GrpcLayer,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Grpc<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let needed = grpc_role(req.uri().path());
        let l = &self.layer;
        match check(
            &l.security,
            &l.metrics,
            "grpc",
            (req.headers(), req.extensions()),
            needed,
        ) {
            Ok(()) => Box::pin(self.inner.call(req)),
            Err(denied) => {
                let status = tonic::Status::from(ApiError::Denied(denied));
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_the_roles_the_readme_lists() {
        let get = &Method::GET;
        assert_eq!(rest_role(get, Some("/livez"), false), None);
        assert_eq!(rest_role(get, Some("/readyz"), false), None);
        assert_eq!(rest_role(get, Some("/metrics"), true), None);
        assert_eq!(rest_role(get, Some("/metrics"), false), Some(Role::Metrics));
        assert_eq!(rest_role(get, Some("/students/{id}"), true), Some(Role::Read));
        assert_eq!(
            rest_role(&Method::PUT, Some("/students/{id}"), true),
            Some(Role::Write)
        );
        assert_eq!(
            rest_role(&Method::POST, Some("/cluster/members"), true),
            Some(Role::Admin)
        );
        assert_eq!(rest_role(get, Some("/cluster/snapshot"), true), Some(Role::Admin));
        assert_eq!(rest_role(get, Some("/cluster"), true), Some(Role::Read));
        assert_eq!(rest_role(get, Some("/students/watch"), true), Some(Role::Read));
        assert_eq!(rest_role(get, Some("/openapi.json"), false), None);
        assert_eq!(rest_role(get, None, true), Some(Role::Read));
        assert_eq!(grpc_role("/grpc.health.v1.Health/Check"), None);
        assert_eq!(
            grpc_role("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Some(Role::Admin)
        );
        assert_eq!(
            grpc_role("/openraft_memory.v1.StudentService/ListStudents"),
            Some(Role::Read)
        );
        assert_eq!(
            grpc_role("/openraft_memory.v1.StudentService/WatchStudents"),
            Some(Role::Read)
        );
        assert_eq!(
            grpc_role("/openraft_memory.v1.StudentService/DeleteStudent"),
            Some(Role::Write)
        );
    }

    #[test]
    fn only_bearer_tokens_are_read() {
        let v = |s: &'static str| axum::http::HeaderValue::from_static(s);
        assert_eq!(bearer(Some(&v("Bearer abc"))), Ok(Some("abc")));
        assert_eq!(bearer(Some(&v("bearer  abc "))), Ok(Some("abc")));
        assert!(bearer(Some(&v("Basic abc"))).is_err());
        assert!(bearer(Some(&v("Bearer "))).is_err());
        assert_eq!(bearer(None), Ok(None));
    }
}
