//! Cluster tests against real processes on loopback: formation, CRUD over REST and gRPC on
//! leaders and followers, error contracts, failover, rejoin through a snapshot, graceful
//! leader shutdown and writes without quorum.

mod durable;
mod k8s;
mod observability;
mod perf;
mod sts;
mod util;

use std::time::{Duration, Instant};

use openraft_memory::pb::client;
use serde_json::{Value, json};
use tonic::Code;
use util::{Cluster, Node, client as http, fresh_ip, json_student, wait_for};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn post(node: &Node, body: &Value) -> reqwest::Response {
    http()
        .post(format!("{}/students", node.http()))
        .json(body)
        .send()
        .await
        .expect("post")
}

async fn get_json(url: String) -> (u16, Value) {
    let r = http().get(url).send().await.expect("get");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_without_peers_initialises_itself() {
    let mut node = Node::new("solo", fresh_ip(), vec![], vec![]);
    node.start();
    wait_for("single node ready", Duration::from_secs(20), || async {
        node.ready().await.then_some(())
    })
    .await;
    let r = post(&node, &json_student(1, "Ada", 91.5)).await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["location"], "/students/1");
    let c = node.cluster().await.expect("cluster");
    assert_eq!(c["voters"].as_array().map(Vec::len), Some(1));
    assert_eq!(c["leader"]["name"], "solo");

    // grpc.health.v1 follows readiness, and reflection lists the client service.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}:{}", node.ip, util::GRPC_PORT))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "openraft_memory.v1.StudentService"] {
        let status = wait_for("health SERVING", Duration::from_secs(10), || {
            let mut h = health.clone();
            async move {
                let r = h
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: service.into(),
                    })
                    .await
                    .ok()?
                    .into_inner();
                (r.status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
                    .then_some(r)
            }
        })
        .await;
        assert_eq!(status.status, 1);
    }
    let err = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .expect_err("unknown service");
    assert_eq!(err.code(), Code::NotFound);

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel);
    let req = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(futures::stream::iter(vec![req]))
        .await
        .expect("reflection")
        .into_inner();
    let resp = stream.message().await.expect("message").expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"openraft_memory.v1.StudentService".to_string()),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_started_together_form_exactly_one_cluster() {
    let started = Instant::now();
    let mut c = Cluster::new(3, vec![]);
    c.start_all();
    let leader = c.wait_stable(&[0, 1, 2], 3).await;
    eprintln!("3-voter cluster ready after {:?}", started.elapsed());
    // Every node reports the same voter ids: one cluster, not three.
    let mut voter_sets = Vec::new();
    for n in &c.nodes {
        let info = n.cluster().await.expect("cluster");
        voter_sets.push(util::voter_ids(&info));
    }
    assert!(voter_sets.windows(2).all(|w| w[0] == w[1]), "{voter_sets:?}");
    assert_eq!(
        c.nodes[leader].name, "db-0",
        "ordinal 0 bootstraps and leads first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_over_rest_and_grpc_on_leader_and_follower() {
    let mut c = Cluster::new(3, vec![]);
    c.start_all();
    let leader = c.wait_stable(&[0, 1, 2], 3).await;
    let follower = (leader + 1) % 3;
    let (l, f) = (&c.nodes[leader], &c.nodes[follower]);

    // REST: create on the leader and on a follower (forwarded).
    assert_eq!(post(l, &json_student(1, "Ada", 91.5)).await.status(), 201);
    let r = post(f, &json_student(2, "  Grace  ", 88.0)).await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.json::<Value>().await.expect("json")["name"], "Grace");
    assert_eq!(post(f, &json_student(2, "Dup", 1.0)).await.status(), 409);

    // Every node answers a linearizable read with the write just acknowledged.
    for n in &c.nodes {
        let (status, body) = get_json(format!("{}/students/2", n.http())).await;
        assert_eq!(status, 200, "{}", n.name);
        assert_eq!(body, json_student(2, "Grace", 88.0));
    }
    // Update through a follower, delete through the leader.
    let r = http()
        .put(format!("{}/students/1", f.http()))
        .json(&json!({"name": "Ada L.", "score": 99.0}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 200);
    for n in &c.nodes {
        let (_, body) = get_json(format!("{}/students/1", n.http())).await;
        assert_eq!(body["name"], "Ada L.", "{}", n.name);
    }
    let r = http()
        .delete(format!("{}/students/1", l.http()))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 204);
    let r = http()
        .delete(format!("{}/students/1", f.http()))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 404);
    for n in &c.nodes {
        let (status, _) = get_json(format!("{}/students/1", n.http())).await;
        assert_eq!(status, 404, "{}", n.name);
    }
    let r = http()
        .put(format!("{}/students/1", f.http()))
        .json(&json!({"name": "Gone", "score": 1.0}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 404);

    // List with pagination, ordered by id.
    for id in 10..=14 {
        assert_eq!(
            post(f, &json_student(id, &format!("s{id}"), 50.0)).await.status(),
            201
        );
    }
    let mut seen = Vec::new();
    let mut after: Option<i64> = None;
    loop {
        let url = match after {
            Some(a) => format!("{}/students?limit=2&after={a}", f.http()),
            None => format!("{}/students?limit=2", f.http()),
        };
        let (status, page) = get_json(url).await;
        assert_eq!(status, 200);
        let students = page["students"].as_array().expect("students").clone();
        assert!(students.len() <= 2);
        seen.extend(students.iter().filter_map(|s| s["id"].as_i64()));
        match page["next_after"].as_i64() {
            Some(a) => after = Some(a),
            None => break,
        }
    }
    assert_eq!(seen, vec![2, 10, 11, 12, 13, 14]);
    let (status, page) = get_json(format!("{}/students?consistency=local&limit=1000", l.http())).await;
    assert_eq!(status, 200);
    assert_eq!(page["students"].as_array().map(Vec::len), Some(6));

    // gRPC: the same operations, through the follower.
    let mut g = f.grpc().await;
    let created = g
        .create_student(client::CreateStudentRequest {
            student: Some(client::Student {
                id: 100,
                name: "Linus".into(),
                score: 70.0,
            }),
        })
        .await
        .expect("grpc create")
        .into_inner();
    assert_eq!(created.name, "Linus");
    let err = g
        .create_student(client::CreateStudentRequest {
            student: Some(created.clone()),
        })
        .await
        .expect_err("duplicate");
    assert_eq!(err.code(), Code::AlreadyExists);
    let mut gl = l.grpc().await;
    let got = gl
        .get_student(client::GetStudentRequest {
            id: 100,
            consistency: client::Consistency::Linearizable as i32,
        })
        .await
        .expect("grpc get")
        .into_inner();
    assert_eq!(got, created);
    let updated = g
        .update_student(client::UpdateStudentRequest {
            student: Some(client::Student {
                id: 100,
                name: "Linus T.".into(),
                score: 71.5,
            }),
        })
        .await
        .expect("grpc update")
        .into_inner();
    assert_eq!(updated.score, 71.5);
    let page = g
        .list_students(client::ListStudentsRequest {
            page_size: 3,
            page_token: String::new(),
            consistency: 0,
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(
        page.students.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![2, 10, 11]
    );
    assert_eq!(page.next_page_token, "11");
    let page = g
        .list_students(client::ListStudentsRequest {
            page_size: 100,
            page_token: page.next_page_token,
            consistency: client::Consistency::Local as i32,
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(page.students.last().map(|s| s.id), Some(100));
    assert!(page.next_page_token.is_empty());
    g.delete_student(client::DeleteStudentRequest { id: 100 })
        .await
        .expect("grpc delete");
    let err = gl
        .get_student(client::GetStudentRequest {
            id: 100,
            consistency: 0,
        })
        .await
        .expect_err("deleted");
    assert_eq!(err.code(), Code::NotFound);

    // gRPC validation and not-found codes.
    let bad = |id, name: &str, score| client::CreateStudentRequest {
        student: Some(client::Student {
            id,
            name: name.into(),
            score,
        }),
    };
    for req in [
        bad(0, "x", 1.0),
        bad(5, "", 1.0),
        bad(5, "x", f32::NAN),
        bad(5, "x", 101.0),
    ] {
        assert_eq!(
            g.create_student(req).await.expect_err("invalid").code(),
            Code::InvalidArgument
        );
    }
    let err = g
        .create_student(client::CreateStudentRequest { student: None })
        .await
        .expect_err("missing");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = g
        .delete_student(client::DeleteStudentRequest { id: 999 })
        .await
        .expect_err("nf");
    assert_eq!(err.code(), Code::NotFound);
    let err = g
        .list_students(client::ListStudentsRequest {
            page_size: 5000,
            ..Default::default()
        })
        .await
        .expect_err("bad page size");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = g
        .list_students(client::ListStudentsRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad token");
    assert_eq!(err.code(), Code::InvalidArgument);

    // All nodes converge on the same records.
    let mut views = Vec::new();
    for n in &c.nodes {
        let (_, page) = get_json(format!("{}/students?limit=1000", n.http())).await;
        views.push(page["students"].clone());
    }
    assert!(views.windows(2).all(|w| w[0] == w[1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_errors_are_problem_json_with_the_right_status() {
    let mut node = Node::new(
        "solo-0",
        fresh_ip(),
        vec![],
        env(&[("OPENRAFT_MEMORY__HTTP__MAX_BODY_BYTES", "1024")]),
    );
    node.start();
    wait_for("ready", Duration::from_secs(20), || async {
        node.ready().await.then_some(())
    })
    .await;
    assert_eq!(post(&node, &json_student(7, "Ada", 1.0)).await.status(), 201);
    let raw = |body: &'static str| {
        let url = format!("{}/students", node.http());
        async move {
            http()
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("post")
        }
    };
    let cases: Vec<(reqwest::Response, u16, &str)> = vec![
        (raw("{not json").await, 400, "malformed"),
        (
            raw(r#"{"id":1,"name":"a","score":1,"extra":true}"#).await,
            400,
            "unknown field",
        ),
        (raw(r#"{"id":1,"name":"a"}"#).await, 400, "missing field"),
        (
            raw(r#"{"id":1,"name":"a","score":"NaN"}"#).await,
            400,
            "NaN string",
        ),
        (
            raw(r#"{"id":1,"name":"a","score":1e39}"#).await,
            400,
            "overflowing score",
        ),
        (
            raw(r#"{"id":1,"name":"a","score":100.01}"#).await,
            400,
            "score above 100",
        ),
        (
            raw(r#"{"id":1,"name":"a","score":-1}"#).await,
            400,
            "negative score",
        ),
        (raw(r#"{"id":1,"name":"   ","score":1}"#).await, 400, "blank name"),
        (raw(r#"{"id":0,"name":"a","score":1}"#).await, 400, "id zero"),
        (raw(r#"{"id":7,"name":"a","score":1}"#).await, 409, "duplicate id"),
        (
            http()
                .post(format!("{}/students", node.http()))
                .header("content-type", "application/json")
                .body(format!(r#"{{"id":1,"name":"{}","score":1}}"#, "x".repeat(2000)))
                .send()
                .await
                .expect("post"),
            413,
            "body over limit",
        ),
        (
            http()
                .post(format!("{}/students", node.http()))
                .body(r#"{"id":1,"name":"a","score":1}"#)
                .send()
                .await
                .expect("post"),
            415,
            "no content type",
        ),
        (
            http()
                .get(format!("{}/students/12345", node.http()))
                .send()
                .await
                .expect("get"),
            404,
            "unknown id",
        ),
        (
            http()
                .get(format!("{}/students/abc", node.http()))
                .send()
                .await
                .expect("get"),
            400,
            "non-integer id",
        ),
        (
            http()
                .get(format!("{}/students?limit=0", node.http()))
                .send()
                .await
                .expect("get"),
            400,
            "limit 0",
        ),
        (
            http()
                .get(format!("{}/students?limit=5000", node.http()))
                .send()
                .await
                .expect("get"),
            400,
            "limit too big",
        ),
        (
            http()
                .get(format!("{}/students/7?consistency=eventual", node.http()))
                .send()
                .await
                .expect("get"),
            400,
            "bad consistency",
        ),
        (
            http()
                .put(format!("{}/students/7", node.http()))
                .json(&json!({"name": "a", "score": 1, "id": 8}))
                .send()
                .await
                .expect("put"),
            400,
            "id in update body",
        ),
        (
            http()
                .get(format!("{}/nowhere", node.http()))
                .send()
                .await
                .expect("get"),
            404,
            "unknown route",
        ),
    ];
    for (resp, status, what) in cases {
        assert_eq!(resp.status().as_u16(), status, "{what}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "{what}"
        );
        let body: Value = resp.json().await.expect("problem body");
        assert_eq!(body["status"], status, "{what}");
        assert!(body["type"].as_str().is_some_and(|t| !t.is_empty()), "{what}");
        assert!(body["title"].as_str().is_some_and(|t| !t.is_empty()), "{what}");
        assert!(
            body["detail"].as_str().is_some_and(|t| !t.is_empty()),
            "{what}: {body}"
        );
    }
    // Nothing above changed the record that was there.
    let (_, body) = get_json(format!("{}/students/7", node.http())).await;
    assert_eq!(body, json_student(7, "Ada", 1.0));
    let (_, page) = get_json(format!("{}/students", node.http())).await;
    assert_eq!(page["students"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_leader_fails_over_and_rejoins_through_a_snapshot() {
    // Compact aggressively so the restarted node must catch up through a snapshot.
    let mut c = Cluster::new(
        3,
        env(&[
            ("OPENRAFT_MEMORY__RAFT__SNAPSHOT_AFTER_LOGS", "20"),
            ("OPENRAFT_MEMORY__RAFT__LOGS_TO_KEEP", "5"),
        ]),
    );
    c.start_all();
    let leader = c.wait_stable(&[0, 1, 2], 3).await;
    let old_id = c.nodes[leader].cluster().await.expect("cluster")["node"]["id"]
        .as_u64()
        .expect("id");
    let mut acked = Vec::new();
    for id in 1..=60 {
        let n = &c.nodes[(leader + id as usize) % 3];
        if post(n, &json_student(id, &format!("s{id}"), 10.0)).await.status() == 201 {
            acked.push(id);
        }
    }
    assert_eq!(acked.len(), 60, "all writes succeed on a healthy cluster");

    c.nodes[leader].kill();
    let killed_at = Instant::now();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let s0 = survivors[0];
    let mut next = 1000;
    wait_for(
        "a write through a survivor succeeds",
        Duration::from_secs(15),
        || {
            next += 1;
            let n = &c.nodes[s0];
            async move { (post(n, &json_student(next, "after", 1.0)).await.status() == 201).then_some(()) }
        },
    )
    .await;
    eprintln!(
        "failover: first successful write {:?} after kill -9 of the leader",
        killed_at.elapsed()
    );
    for &s in &survivors {
        for id in &acked {
            let (status, _) = get_json(format!("{}/students/{id}", c.nodes[s].http())).await;
            assert_eq!(status, 200, "acknowledged write {id} lost on {}", c.nodes[s].name);
        }
    }

    // Restart the killed node empty: it joins under a new id, catches up, the old id goes.
    c.nodes[leader].start();
    c.wait_stable(&[0, 1, 2], 3).await;
    let info = c.nodes[leader].cluster().await.expect("cluster");
    let new_id = info["node"]["id"].as_u64().expect("id");
    assert_ne!(new_id, old_id, "a restarted memory node must not reuse its id");
    let voter_ids = util::voter_ids(&info);
    assert!(
        voter_ids.contains(&new_id) && !voter_ids.contains(&old_id),
        "{voter_ids:?}"
    );
    assert!(
        info["indexes"]["snapshot"].as_u64().is_some(),
        "caught up through a snapshot: {info}"
    );
    for id in &acked {
        let (status, _) = get_json(format!(
            "{}/students/{id}?consistency=local",
            c.nodes[leader].http()
        ))
        .await;
        assert_eq!(status, 200, "record {id} missing on the rejoined node");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_the_leader_moves_leadership_and_exits_zero() {
    let mut c = Cluster::new(3, vec![]);
    c.start_all();
    let leader = c.wait_stable(&[0, 1, 2], 3).await;
    let other = (leader + 1) % 3;
    let old_leader_name = c.nodes[leader].name.clone();
    c.nodes[leader].signal("TERM");
    // The survivors see another leader while the old leader is still shutting down.
    let code = {
        let watcher = &c.nodes[other];
        let seen = wait_for("a new leader", Duration::from_secs(15), || async {
            let info = watcher.cluster().await?;
            let l = info["leader"]["name"].as_str()?.to_owned();
            (l != old_leader_name).then_some(l)
        })
        .await;
        eprintln!("new leader after SIGTERM: {seen}");
        c.nodes[leader].wait_exit(Duration::from_secs(25)).await
    };
    assert_eq!(code, Some(0));
    let log = std::fs::read_to_string(&c.nodes[leader].log).expect("log");
    assert!(
        log.contains("leadership moved"),
        "the leader handed over before exiting:\n{log}"
    );
    assert_eq!(
        post(&c.nodes[other], &json_student(1, "after", 1.0))
            .await
            .status(),
        201
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_without_quorum_fail_fast_with_503_and_unavailable() {
    let mut c = Cluster::new(3, env(&[("OPENRAFT_MEMORY__RAFT__WRITE_TIMEOUT", "2s")]));
    c.start_all();
    let leader = c.wait_stable(&[0, 1, 2], 3).await;
    for i in 0..3 {
        if i != leader {
            c.nodes[i].kill();
        }
    }
    let l = &c.nodes[leader];
    let started = Instant::now();
    let r = post(l, &json_student(1, "x", 1.0)).await;
    let elapsed = started.elapsed();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r_body = r;
    assert!(elapsed < Duration::from_secs(8), "took {elapsed:?}");
    let mut g = l.grpc().await;
    let err = g
        .create_student(client::CreateStudentRequest {
            student: Some(client::Student {
                id: 2,
                name: "y".into(),
                score: 1.0,
            }),
        })
        .await
        .expect_err("no quorum");
    assert_eq!(err.code(), Code::Unavailable);
    // The leader proposed the write: it may still commit, so it is not marked "not applied".
    assert!(
        err.metadata()
            .get(openraft_memory::pb::NOT_APPLIED_HEADER)
            .is_none()
    );
    let body: Value = r_body.json().await.expect("problem");
    assert!(
        body["type"].as_str().is_some_and(|t| t.ends_with("/timeout")),
        "{body}"
    );
    // The node stays up and says why it is not ready.
    let r = http()
        .get(format!("{}/livez", l.http()))
        .send()
        .await
        .expect("livez");
    assert_eq!(r.status(), 200);
    let r = wait_for("readyz turns 503", Duration::from_secs(10), || async {
        let r = http().get(format!("{}/readyz", l.http())).send().await.ok()?;
        (r.status() == 503).then_some(r)
    })
    .await;
    let body: Value = r.json().await.expect("json");
    assert!(body["reason"].as_str().is_some_and(|s| !s.is_empty()));
}

/// Parses Prometheus text into (name{labels}, value) pairs.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

fn value(s: &[(String, f64)], key: &str) -> Option<f64> {
    s.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_exported_with_plausible_values() {
    let mut c = Cluster::new(3, vec![]);
    c.start_all();
    let leader = c.wait_stable(&[0, 1, 2], 3).await;
    for id in 1..=5 {
        assert_eq!(
            post(&c.nodes[(leader + 1) % 3], &json_student(id, "m", 1.0))
                .await
                .status(),
            201
        );
    }
    let mut g = c.nodes[leader].grpc().await;
    g.get_student(client::GetStudentRequest {
        id: 1,
        consistency: 0,
    })
    .await
    .expect("get");

    let scrape = |n: &Node| {
        let url = format!("{}/metrics", n.http());
        async move {
            http()
                .get(url)
                .send()
                .await
                .expect("scrape")
                .text()
                .await
                .expect("text")
        }
    };
    let names = [
        "raft_term",
        "raft_state",
        "raft_is_leader",
        "raft_has_leader",
        "raft_leader_changes_total",
        "raft_last_log_index",
        "raft_committed_index",
        "raft_applied_index",
        "raft_snapshot_index",
        "raft_voters",
        "raft_learners",
        "students",
        "http_requests_total",
        "http_request_duration_seconds",
        "raft_client_write_duration_seconds",
        "build_info",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_cpu_seconds_total",
    ];
    let mut leaders = 0;
    for (i, n) in c.nodes.iter().enumerate() {
        // Wait until this node has applied the writes, then check every metric.
        let text = wait_for("students gauge reaches 5", Duration::from_secs(10), || async {
            let t = scrape(n).await;
            (value(&samples(&t), "openraft_memory_students") == Some(5.0)).then_some(t)
        })
        .await;
        for name in names {
            assert!(
                text.contains(&format!("# TYPE openraft_memory_{name} ")),
                "{} lacks {name}",
                n.name
            );
        }
        let s = samples(&text);
        leaders += value(&s, "openraft_memory_raft_is_leader").unwrap_or(0.0) as i32;
        assert_eq!(value(&s, "openraft_memory_raft_has_leader"), Some(1.0));
        assert_eq!(value(&s, "openraft_memory_raft_voters"), Some(3.0));
        assert_eq!(value(&s, "openraft_memory_raft_learners"), Some(0.0));
        assert!(value(&s, "openraft_memory_raft_term").unwrap_or(0.0) >= 1.0);
        let applied = value(&s, "openraft_memory_raft_applied_index").unwrap_or(0.0);
        assert!(
            applied >= 5.0,
            "applied index advanced past the writes: {applied}"
        );
        assert!(value(&s, "openraft_memory_raft_committed_index").unwrap_or(0.0) >= applied);
        let state = if i == leader { "leader" } else { "follower" };
        assert_eq!(
            value(&s, &format!("openraft_memory_raft_state{{state=\"{state}\"}}")),
            Some(1.0)
        );
        if i == leader {
            let lags: Vec<&(String, f64)> = s
                .iter()
                .filter(|(k, _)| k.starts_with("openraft_memory_raft_replication_lag_entries{"))
                .collect();
            assert_eq!(lags.len(), 2, "one lag series per follower: {lags:?}");
            let grpc = value(
                &s,
                "openraft_memory_grpc_requests_total{code=\"OK\",method=\"GetStudent\"}",
            );
            assert_eq!(grpc, Some(1.0));
        }
        if i == leader || i == (leader + 1) % 3 {
            // The leader replicates, the follower forwarded writes and read indexes: both
            // timed their peer calls.
            assert!(text.contains("# TYPE openraft_memory_peer_rpc_duration_seconds histogram"));
        }
        if i == (leader + 1) % 3 {
            let created = value(
                &s,
                "openraft_memory_http_requests_total{method=\"POST\",route=\"/students\",status=\"201\"}",
            );
            assert_eq!(created, Some(5.0), "request counter counts by route template");
        }
    }
    assert_eq!(leaders, 1, "exactly one node reports raft_is_leader 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_without_leader_refuses_writes_as_not_applied() {
    let mut c = Cluster::new(3, vec![]);
    c.start_all();
    let leader = c.wait_stable(&[0, 1, 2], 3).await;
    let survivor = (leader + 1) % 3;
    for i in 0..3 {
        if i != survivor {
            c.nodes[i].kill();
        }
    }
    let f = &c.nodes[survivor];
    // Once it notices the leader is gone, the follower says "no leader": nothing was
    // proposed, so a retry is safe, and the answer says so.
    let body = wait_for("a no-leader answer", Duration::from_secs(15), || async {
        let body: Value = post(f, &json_student(9, "x", 1.0)).await.json().await.ok()?;
        body["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("/no-leader"))
            .then_some(body)
    })
    .await;
    assert_eq!(body["status"], 503);
    assert_eq!(body["retryable"], true);
    let mut g = f.grpc().await;
    let err = g
        .create_student(client::CreateStudentRequest {
            student: Some(client::Student {
                id: 10,
                name: "y".into(),
                score: 1.0,
            }),
        })
        .await
        .expect_err("no leader");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.metadata()
            .get(openraft_memory::pb::NOT_APPLIED_HEADER)
            .is_some()
    );
}

/// Raft RPCs name the node id they are for; a node refuses those meant for another id (a
/// predecessor at the same address), or an empty restarted node could vote for a candidate
/// that lacks committed entries. The chaos checker found exactly that before votes were
/// checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_rpcs_for_another_node_id_are_refused() {
    use openraft_memory::pb::peer;
    use openraft_memory::pb::peer::raft_peer_client::RaftPeerClient;
    let mut node = Node::new("solo", fresh_ip(), vec![], vec![]);
    node.start();
    wait_for("ready", Duration::from_secs(20), || async {
        node.ready().await.then_some(())
    })
    .await;
    let my_id = node.cluster().await.expect("cluster")["node"]["id"]
        .as_u64()
        .expect("id");
    let mut peer_client = RaftPeerClient::connect(format!("http://{}:{}", node.ip, util::RAFT_PORT))
        .await
        .expect("peer connect");
    let vote = || peer::VoteRequest {
        vote: Some(peer::Vote {
            leader_id: Some(peer::LeaderId { term: 99, node_id: 7 }),
            committed: false,
        }),
        last_log_id: None,
    };
    fn addressed<T>(target: u64, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.metadata_mut()
            .insert("x-raft-target-node", target.to_string().parse().expect("ascii"));
        req
    }
    let err = peer_client
        .vote(addressed(my_id + 1, vote()))
        .await
        .expect_err("wrong id");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("is not here"), "{}", err.message());
    // Not addressed at all: refused as well, never processed in whoever's name.
    let err = peer_client.vote(vote()).await.expect_err("no target header");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("x-raft-target-node"), "{}", err.message());
    let append = peer::AppendEntriesRequest {
        vote: vote().vote,
        prev_log_id: None,
        entries: vec![],
        leader_commit: None,
    };
    let err = peer_client
        .append_entries(addressed(my_id + 1, append))
        .await
        .expect_err("wrong id");
    assert_eq!(err.code(), Code::Unavailable);
    // Addressed correctly, the same vote is processed (and refused on its merits: the
    // candidate's empty log is behind this node's).
    let resp = peer_client
        .vote(addressed(my_id, vote()))
        .await
        .expect("processed")
        .into_inner();
    assert!(!resp.vote_granted);
    // The node kept serving.
    assert!(node.ready().await);
}

/// A peer that accepts connections but never answers (a paused or partitioned process looks
/// like this) may be a member of a running cluster, so ordinal 0 must not initialise a
/// second one beside it: it waits, says why, and initialises only once that peer answers
/// that it belongs to no cluster. (The client-side bound of `network::client::within` keeps
/// the probe itself from hanging on such a peer.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinal_zero_waits_for_a_silent_peer_before_bootstrapping() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let silent_ip = fresh_ip();
    let listener = std::net::TcpListener::bind((silent_ip, util::RAFT_PORT)).expect("bind silent peer");
    listener.set_nonblocking(true).expect("nonblocking");
    let quiet = Arc::new(AtomicBool::new(true));
    let silent_peer = std::thread::spawn({
        let quiet = quiet.clone();
        move || {
            let mut held = Vec::new();
            while quiet.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => held.push(conn), // keep it open, never write a byte
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
    });
    let zero_ip = fresh_ip();
    let mut zero = Node::new(
        "db-0",
        zero_ip,
        vec![format!("{silent_ip}:{}", util::RAFT_PORT)],
        vec![],
    );
    zero.start();
    // Long past the 1 s bootstrap probe, ordinal 0 is still waiting and names the peer.
    wait_for(
        "ordinal 0 to say it waits for the silent peer",
        Duration::from_secs(20),
        || async {
            let log = std::fs::read_to_string(&zero.log).ok()?;
            (log.contains("not initialising") && log.contains(&silent_ip.to_string())).then_some(())
        },
    )
    .await;
    let info = wait_for("ordinal 0 serves /cluster", Duration::from_secs(10), || {
        zero.cluster()
    })
    .await;
    assert!(
        info["leader"].is_null(),
        "initialised despite a silent peer: {info}"
    );
    assert!(!zero.ready().await, "ready without a cluster");

    // The peer comes back as an empty node: now every peer has answered "no cluster".
    quiet.store(false, Ordering::SeqCst);
    silent_peer.join().expect("silent peer thread");
    let mut one = Node::new(
        "db-1",
        silent_ip,
        vec![format!("{zero_ip}:{}", util::RAFT_PORT)],
        vec![],
    );
    one.start();
    wait_for(
        "ordinal 0 initialises, and db-1 joins as a voter",
        Duration::from_secs(30),
        || async {
            let info = zero.cluster().await?;
            (info["leader"]["name"] == "db-0" && util::voter_ids(&info).len() == 2).then_some(())
        },
    )
    .await;
}
