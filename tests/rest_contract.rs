//! The REST error contract, in process: a single-node cluster built by `server::build` (its
//! listeners bound but unused) and the real router driven with `tower::ServiceExt::oneshot`.
//! Every bad input answers RFC 9457 problem+json with the right status, and loses nothing.
//! (`tests/cluster/api.rs` checks the same contract over real HTTP on a spawned process.)

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use openraft_memory::config::{Settings, Sources};
use openraft_memory::server::{self, Server};
use openraft_memory::{RaftNode, router};
use serde_json::{Value, json};
use tower::ServiceExt;

/// A node on loopback with ephemeral ports and a 1 KiB body limit.
async fn node(initialise: bool) -> Server {
    let overrides = vec![
        ("node.name", "solo-0".into()),
        ("http.addr", "127.0.0.1:0".into()),
        ("grpc.addr", "127.0.0.1:0".into()),
        ("raft.addr", "127.0.0.1:0".into()),
        ("http.max_body_bytes", 1024.into()),
        ("raft.write_timeout", "1s".into()),
    ];
    let settings = Settings::load(Sources {
        overrides,
        ..Sources::default()
    })
    .expect("settings");
    let server = server::build(settings).await.expect("node builds");
    if initialise {
        let node = server.node();
        let members = BTreeMap::from([(node.id(), node.member().clone())]);
        node.raft().initialize(members).await.expect("initialises");
        node.raft()
            .wait(Some(Duration::from_secs(10)))
            .current_leader(node.id(), "leads itself")
            .await
            .expect("becomes leader");
    }
    server
}

/// Sends one request; answers the status, the content type and the JSON body.
async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    content_type: Option<&str>,
    body: &str,
) -> (StatusCode, String, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let req = req.body(Body::from(body.to_owned())).expect("request");
    let resp = app.clone().oneshot(req).await.expect("the router answers");
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, ct, body)
}

const JSON: Option<&str> = Some("application/json");

/// One row of the error table: what it checks, the request, and the status it must get.
type Case<'a> = (&'a str, Method, &'a str, Option<&'a str>, &'a str, u16);

fn assert_problem(what: &str, (status, ct, body): &(StatusCode, String, Value), want: u16) {
    assert_eq!(status.as_u16(), want, "{what}: {body}");
    assert_eq!(ct, "application/problem+json", "{what}");
    assert_eq!(body["status"], want, "{what}");
    for field in ["type", "title", "detail"] {
        assert!(
            body[field].as_str().is_some_and(|t| !t.is_empty()),
            "{what}: `{field}` is missing in {body}"
        );
    }
}

#[tokio::test]
async fn every_bad_input_is_problem_json_with_the_right_status_and_changes_nothing() {
    let server = node(true).await;
    let app = router(server.node().clone());
    let ada = r#"{"id":7,"name":"Ada","score":1}"#;
    let created = call(&app, Method::POST, "/students", JSON, ada).await;
    assert_eq!(created.0, StatusCode::CREATED, "{}", created.2);

    let long_name = format!(r#"{{"id":1,"name":"{}","score":1}}"#, "x".repeat(2000));
    // One row per bad input; kept one line each so the table reads as a table.
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("malformed JSON", Method::POST, "/students", JSON, "{not json", 400),
        ("unknown field", Method::POST, "/students", JSON, r#"{"id":1,"name":"a","score":1,"extra":true}"#, 400),
        ("missing field", Method::POST, "/students", JSON, r#"{"id":1,"name":"a"}"#, 400),
        ("NaN as a string", Method::POST, "/students", JSON, r#"{"id":1,"name":"a","score":"NaN"}"#, 400),
        ("overflowing score", Method::POST, "/students", JSON, r#"{"id":1,"name":"a","score":1e39}"#, 400),
        ("score above 100", Method::POST, "/students", JSON, r#"{"id":1,"name":"a","score":100.01}"#, 400),
        ("negative score", Method::POST, "/students", JSON, r#"{"id":1,"name":"a","score":-1}"#, 400),
        ("blank name", Method::POST, "/students", JSON, r#"{"id":1,"name":"   ","score":1}"#, 400),
        ("id zero", Method::POST, "/students", JSON, r#"{"id":0,"name":"a","score":1}"#, 400),
        ("negative id", Method::POST, "/students", JSON, r#"{"id":-3,"name":"a","score":1}"#, 400),
        ("duplicate id", Method::POST, "/students", JSON, r#"{"id":7,"name":"a","score":1}"#, 409),
        ("body over the limit", Method::POST, "/students", JSON, &long_name, 413),
        ("no content type", Method::POST, "/students", None, r#"{"id":1,"name":"a","score":1}"#, 415),
        ("wrong content type", Method::POST, "/students", Some("text/plain"), r#"{"id":1,"name":"a","score":1}"#, 415),
        ("unknown id", Method::GET, "/students/12345", None, "", 404),
        ("non-integer id", Method::GET, "/students/abc", None, "", 400),
        ("id zero in the path", Method::GET, "/students/0", None, "", 400),
        ("limit 0", Method::GET, "/students?limit=0", None, "", 400),
        ("limit too big", Method::GET, "/students?limit=5000", None, "", 400),
        ("non-integer after", Method::GET, "/students?after=x", None, "", 400),
        ("unknown consistency", Method::GET, "/students/7?consistency=eventual", None, "", 400),
        ("id in an update body", Method::PUT, "/students/7", JSON, r#"{"id":8,"name":"a","score":1}"#, 400),
        ("update of an unknown id", Method::PUT, "/students/99", JSON, r#"{"name":"a","score":1}"#, 404),
        ("delete of an unknown id", Method::DELETE, "/students/99", None, "", 404),
        ("removal of an unknown member", Method::DELETE, "/cluster/members/99", None, "", 404),
        ("unknown route", Method::GET, "/nowhere", None, "", 404),
        ("a method the route does not serve", Method::PATCH, "/students/7", JSON, "{}", 405),
    ];
    for (what, method, uri, ct, body, want) in cases {
        let answer = call(&app, method.clone(), uri, *ct, body).await;
        assert_problem(what, &answer, *want);
    }

    // Nothing above changed the one record, not even its revision.
    let revision = created.2["revision"]
        .as_u64()
        .expect("a created record has a revision");
    let (status, _, body) = call(&app, Method::GET, "/students/7", None, "").await;
    assert_eq!(
        (status, body),
        (
            StatusCode::OK,
            json!({"id": 7, "name": "Ada", "score": 1.0, "revision": revision})
        )
    );
    let (_, _, page) = call(&app, Method::GET, "/students", None, "").await;
    assert_eq!(page["students"].as_array().map(Vec::len), Some(1), "{page}");
}

/// Sends one request with extra headers; answers the status, the `ETag` and the JSON body.
async fn call_with(
    app: &Router,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, Option<String>, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if !body.is_empty() {
        req = req.header("content-type", "application/json");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body.to_owned())).expect("request"))
        .await
        .expect("the router answers");
    let status = resp.status();
    let etag = resp
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        etag,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn writes_with_if_match_apply_only_at_the_revision_the_etag_gave() {
    let server = node(true).await;
    let app = router(server.node().clone());
    let tag = |r: u64| format!("\"{r}\"");
    let (status, etag, body) = call_with(
        &app,
        Method::POST,
        "/students",
        &[],
        r#"{"id":7,"name":"Ada","score":1}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let r1 = body["revision"].as_u64().expect("revision");
    assert!(r1 > 0);
    assert_eq!(etag, Some(tag(r1)), "the ETag is the revision, quoted");
    let (_, etag, _) = call_with(&app, Method::GET, "/students/7", &[], "").await;
    assert_eq!(etag, Some(tag(r1)));

    let put = |if_match: String, score: u32| {
        let app = app.clone();
        async move {
            let body = format!(r#"{{"name":"Ada","score":{score}}}"#);
            call_with(
                &app,
                Method::PUT,
                "/students/7",
                &[("if-match", &if_match)],
                &body,
            )
            .await
        }
    };
    // A revision that is not the record's: 412, the current revision named, nothing changed.
    let (status, _, problem) = put(tag(r1 + 100), 2).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{problem}");
    assert_eq!(problem["current_revision"], r1);
    assert_eq!(problem["retryable"], false);
    assert!(
        problem["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("/precondition-failed"))
    );
    // Forms the server does not evaluate are refused, not ignored.
    for bad in [
        format!("W/{}", tag(r1)),
        format!("{}, \"1\"", tag(r1)),
        "17".into(),
        "\"x\"".into(),
    ] {
        let (status, _, problem) = put(bad.clone(), 3).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {problem}");
        assert!(
            problem["detail"].as_str().is_some_and(|d| d.contains("If-Match")),
            "{problem}"
        );
    }
    let (_, _, unchanged) = call_with(&app, Method::GET, "/students/7", &[], "").await;
    assert_eq!(
        (unchanged["score"].as_f64(), unchanged["revision"].as_u64()),
        (Some(1.0), Some(r1))
    );

    // The right revision applies and moves it on; the old one is stale from then on.
    let (status, etag, body) = put(tag(r1), 4).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r2 = body["revision"].as_u64().expect("revision");
    assert!(r2 > r1);
    assert_eq!(etag, Some(tag(r2)));
    let (status, _, problem) = put(tag(r1), 5).await;
    assert_eq!(
        (status, problem["current_revision"].as_u64()),
        (StatusCode::PRECONDITION_FAILED, Some(r2))
    );
    // `*` matches any current record.
    let (status, _, body) = put("*".into(), 6).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r3 = body["revision"].as_u64().expect("revision");

    let delete = |if_match: String| {
        let app = app.clone();
        async move {
            call_with(
                &app,
                Method::DELETE,
                "/students/7",
                &[("if-match", &if_match)],
                "",
            )
            .await
        }
    };
    assert_eq!(delete(tag(r2)).await.0, StatusCode::PRECONDITION_FAILED);
    assert_eq!(delete(tag(r3)).await.0, StatusCode::NO_CONTENT);
    // Gone: no revision can match, and the problem has no current revision to offer.
    let (status, _, problem) = delete(tag(r3)).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{problem}");
    assert!(problem.get("current_revision").is_none(), "{problem}");

    // `/cluster` reports the store's revision: at least the last change.
    let (_, _, info) = call_with(&app, Method::GET, "/cluster", &[], "").await;
    assert!(info["revision"].as_u64().is_some_and(|r| r > r3), "{info}");
}

#[tokio::test]
async fn a_node_without_a_leader_refuses_writes_and_reads_as_retryable_503s() {
    let server = node(false).await;
    let node: &RaftNode = server.node();
    let app = router(node.clone());
    let write = call(
        &app,
        Method::POST,
        "/students",
        JSON,
        r#"{"id":1,"name":"a","score":1}"#,
    )
    .await;
    assert_problem("write without a leader", &write, 503);
    let read = call(&app, Method::GET, "/students/1", None, "").await;
    assert_problem("linearizable read without a leader", &read, 503);
    // A local read needs no leader: this node's (empty) state answers.
    let (status, _, _) = call(&app, Method::GET, "/students/1?consistency=local", None, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = call(&app, Method::GET, "/readyz", None, "").await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "not ready without a leader"
    );
}

#[tokio::test]
async fn custom_methods_do_not_create_metric_series() {
    let server = node(true).await;
    let app = router(server.node().clone());
    for i in 0..20 {
        let method = Method::from_bytes(format!("CUSTOM{i}").as_bytes()).expect("method");
        let (status, ct, _) = call(&app, method, "/students", None, "").await;
        assert!(status.is_client_error(), "{status}");
        assert_eq!(ct, "application/problem+json");
    }
    let resp = app
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).expect("request"))
        .await
        .expect("metrics");
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec(),
    )
    .expect("utf-8");
    assert!(!text.contains("CUSTOM"), "a client-chosen method became a label");
    assert!(
        text.contains(r#"method="other""#),
        "custom methods are counted as `other`"
    );
}

/// The committed contract, `api/openapi.json`, is what the code generates and what a node
/// serves: a change to a route, a schema or an error that is not committed there fails here.
#[tokio::test]
async fn the_served_openapi_document_is_the_committed_one() {
    let server = node(false).await;
    let app = router(server.node().clone());
    let req = Request::builder()
        .uri("/openapi.json")
        .body(Body::empty())
        .expect("request");
    let resp = app.oneshot(req).await.expect("the router answers");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let served = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(
        std::str::from_utf8(&served).ok(),
        Some(openraft_memory::openapi_json())
    );
    let committed = include_str!("../api/openapi.json");
    assert!(
        committed.trim_end() == openraft_memory::openapi_json(),
        "api/openapi.json is out of date: regenerate it with \
         `cargo run -q -- openapi > api/openapi.json` and commit it"
    );
    let doc: Value = serde_json::from_slice(&served).expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    // Every route the router serves is in it, with the problem answers it can give.
    for (path, method) in [
        ("/students", "post"),
        ("/students", "get"),
        ("/students/{id}", "get"),
        ("/students/{id}", "put"),
        ("/students/{id}", "delete"),
        ("/cluster", "get"),
        ("/cluster/snapshot", "get"),
        ("/cluster/members", "post"),
        ("/cluster/members/{id}", "delete"),
        ("/livez", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is undocumented"
        );
    }
    let put = &doc["paths"]["/students/{id}"]["put"]["responses"];
    for code in ["200", "400", "404", "412", "503"] {
        assert!(
            put[code].is_object(),
            "PUT /students/{{id}} does not document {code}"
        );
    }
    assert!(put["412"]["content"]["application/problem+json"].is_object());
}
