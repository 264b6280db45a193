//! The client API against a real cluster: CRUD over REST and gRPC on the leader and a
//! follower, and the error contract (problem+json and gRPC codes) for every bad input.

use std::time::Duration;

use openraft_memory::pb::client;
use serde_json::{Value, json};
use tonic::Code;

use super::{env, get_json, post};
use crate::util::{Cluster, Node, client as http, fields, fresh_ip, json_student, wait_for};

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

    // Every node answers a linearizable read with the write just acknowledged, at the
    // same revision.
    let mut revisions = Vec::new();
    for n in &c.nodes {
        let (status, body) = get_json(format!("{}/students/2", n.http())).await;
        assert_eq!(status, 200, "{}", n.name);
        assert_eq!(fields(&body), json_student(2, "Grace", 88.0));
        revisions.extend(body["revision"].as_u64());
    }
    assert_eq!(revisions.len(), 3, "every answer has a revision");
    assert!(
        revisions[0] > 0 && revisions.iter().all(|r| *r == revisions[0]),
        "{revisions:?}"
    );
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
                ..Default::default()
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
                ..Default::default()
            }),
            ..Default::default()
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
    g.delete_student(client::DeleteStudentRequest {
        id: 100,
        ..Default::default()
    })
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
            ..Default::default()
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
        .delete_student(client::DeleteStudentRequest {
            id: 999,
            ..Default::default()
        })
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
    let (_, before) = get_json(format!("{}/students/7", node.http())).await;
    assert_eq!(fields(&before), json_student(7, "Ada", 1.0));
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
    // The whole error table runs in process (tests/rest_contract.rs); over real HTTP, one
    // case from each layer: the JSON extractor, the body limit, the router's fallback.
    let cases: Vec<(reqwest::Response, u16, &str)> = vec![
        (raw("{not json").await, 400, "malformed"),
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
    assert_eq!(body, before, "same fields, same revision");
    let (_, page) = get_json(format!("{}/students", node.http())).await;
    assert_eq!(page["students"].as_array().map(Vec::len), Some(1));
}

/// `runtime.worker_threads = 1` runs each node on tokio's current-thread scheduler (what
/// `scripts/local-cluster.sh` uses): the whole node — Raft, replication, forwarding, both
/// client ports, a graceful stop — must work on that one thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_on_one_thread_per_node_serves_and_stops() {
    let one_thread = vec![(
        "OPENRAFT_MEMORY__RUNTIME__WORKER_THREADS".to_string(),
        "1".to_string(),
    )];
    let mut c = Cluster::new(3, one_thread);
    c.start_all();
    let leader = c.wait_stable(&[0, 1, 2], 3).await;
    let follower = (leader + 1) % 3;
    for n in &c.nodes {
        let log = std::fs::read_to_string(&n.log).unwrap_or_default();
        // The log is coloured: drop the escape sequences before looking for the field.
        let mut parts = log.split('\u{1b}');
        let mut plain = parts.next().unwrap_or_default().to_owned();
        for p in parts {
            plain.push_str(p.split_once('m').map_or(p, |(_, rest)| rest));
        }
        assert!(
            plain.contains("runtime started worker_threads=1"),
            "{}: {}",
            n.name,
            n.log_tail()
        );
    }
    assert_eq!(
        post(&c.nodes[leader], &json_student(1, "Ada", 91.5))
            .await
            .status(),
        201
    );
    assert_eq!(
        post(&c.nodes[follower], &json_student(2, "Grace", 88.0))
            .await
            .status(),
        201
    );
    for n in &c.nodes {
        let (status, body) = get_json(format!("{}/students/2", n.http())).await;
        assert_eq!(status, 200, "{}", n.name);
        assert_eq!(fields(&body), json_student(2, "Grace", 88.0));
    }
    let mut grpc = c.nodes[follower].grpc().await;
    let got = grpc
        .get_student(client::GetStudentRequest {
            id: 1,
            ..Default::default()
        })
        .await
        .expect("gRPC get on a one-thread follower")
        .into_inner();
    assert_eq!(got.name, "Ada");

    c.nodes[leader].signal("TERM");
    assert_eq!(
        c.nodes[leader].wait_exit(Duration::from_secs(10)).await,
        Some(0),
        "{}",
        c.nodes[leader].log_tail()
    );
}
