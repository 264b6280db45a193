//! The REST extractors: axum's JSON body, path and query extractors whose rejections become
//! [`ApiError`]s (and so problem+json) in one place, instead of in every handler.

use axum::extract::rejection::{JsonRejection, MissingJsonContentType, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::node::RaftNode;

/// A JSON body (`Content-Type: application/json`, unknown fields refused by the type), at
/// most `http.max_body_bytes` long.
pub(super) struct Body<T>(pub T);

impl<T: DeserializeOwned> FromRequest<RaftNode> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, node: &RaftNode) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(JsonRejection::from(MissingJsonContentType::default()).into());
        }
        // The limit is applied here rather than by a `DefaultBodyLimit` router layer: every
        // router layer wraps each route in one more boxed service, cloned and boxed again
        // for every request. A declared length over the limit is refused before any read.
        let limit = node.settings().http.max_body_bytes;
        let bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|e| body_error(e, limit))?;
        // serde_json alone, not axum's `Json`: that one decodes every body through
        // serde_path_to_error, which cost ~4 % of a node's instructions per write under
        // callgrind. A body that fails is decoded once more through `Json`, whose message
        // names the field.
        match serde_json::from_slice(&bytes) {
            Ok(v) => Ok(Body(v)),
            Err(_) => axum::Json::<T>::from_bytes(&bytes)
                .map(|axum::Json(v)| Body(v))
                .map_err(ApiError::from),
        }
    }
}

/// Why a body could not be read: over the limit, or the connection failed mid-body.
fn body_error(e: axum::Error, limit: usize) -> ApiError {
    let e = e.into_inner();
    if e.is::<http_body_util::LengthLimitError>() {
        ApiError::PayloadTooLarge(format!(
            "request body too large: over {limit} bytes (http.max_body_bytes)"
        ))
    } else {
        ApiError::BadRequest(format!("cannot read the request body: {e}"))
    }
}

/// `Content-Type` is `application/json` or `application/<something>+json`, parameters
/// allowed: what axum's `Json` accepts.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    // What nearly every client sends, before the general parse.
    if value.as_bytes() == b"application/json" {
        return true;
    }
    let Ok(value) = value.to_str() else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.trim().eq_ignore_ascii_case("application") && {
        let subtype = subtype.trim();
        subtype.eq_ignore_ascii_case("json")
            || subtype
                .rsplit_once('+')
                .is_some_and(|(_, suffix)| suffix.eq_ignore_ascii_case("json"))
    }
}

/// A path parameter (the record or member id: every route has one integer parameter).
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub(super) struct PathId<T>(pub T);

/// Query parameters.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub(super) struct Params<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge(format!("request body too large: {}", r.body_text()))
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                ApiError::UnsupportedMediaType("expected a body with `Content-Type: application/json`".into())
            }
            _ => ApiError::BadRequest(r.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::BadRequest(format!(
            "the id in the path must be an integer: {}",
            r.body_text()
        ))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::BadRequest(r.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(ct: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, ct.parse().expect("header value"));
        h
    }

    #[test]
    fn json_content_types_are_those_axum_accepts() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/problem+json",
        ] {
            assert!(is_json(&with(ok)), "{ok}");
        }
        for bad in [
            "text/json",
            "application/jsonx",
            "application/",
            "json",
            "text/plain; x=application/json",
        ] {
            assert!(!is_json(&with(bad)), "{bad}");
        }
        assert!(!is_json(&HeaderMap::new()), "no header");
    }
}
