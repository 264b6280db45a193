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

    // Nothing above changed the one record.
    let (status, _, body) = call(&app, Method::GET, "/students/7", None, "").await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"id": 7, "name": "Ada", "score": 1.0}))
    );
    let (_, _, page) = call(&app, Method::GET, "/students", None, "").await;
    assert_eq!(page["students"].as_array().map(Vec::len), Some(1), "{page}");
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
