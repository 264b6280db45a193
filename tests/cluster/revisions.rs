//! Revisions and conditional writes against a real 3-node cluster: read-modify-write with
//! `If-Match` (REST) and `expected_revision` (gRPC) from every node never loses an update,
//! and a stale condition is refused as FAILED_PRECONDITION with the current revision.

use std::time::Instant;

use openraft_memory::pb::client;
use serde_json::json;
use tonic::Code;

use super::{get_json, post};
use crate::util::{Cluster, client as http, json_student};

/// Increments the record's score once by read-modify-write over REST: read (linearizable),
/// write with `If-Match` the revision read, retry from the read on 412. Returns the retries.
async fn increment_rest(base: &str, id: i64) -> u32 {
    let mut conflicts = 0;
    loop {
        let (status, rec) = get_json(format!("{base}/students/{id}")).await;
        assert_eq!(status, 200, "{rec}");
        let (score, rev) = (
            rec["score"].as_f64().expect("score"),
            rec["revision"].as_u64().expect("revision"),
        );
        let r = http()
            .put(format!("{base}/students/{id}"))
            .header("if-match", format!("\"{rev}\""))
            .json(&json!({"name": rec["name"], "score": score + 1.0}))
            .send()
            .await
            .expect("put");
        match r.status().as_u16() {
            200 => return conflicts,
            412 => conflicts += 1,
            other => panic!("read-modify-write got {other}: {:?}", r.text().await),
        }
    }
}

/// The same over gRPC with `expected_revision`.
async fn increment_grpc(
    g: &mut client::student_service_client::StudentServiceClient<tonic::transport::Channel>,
    id: i64,
) -> u32 {
    let mut conflicts = 0;
    loop {
        let rec = g
            .get_student(client::GetStudentRequest {
                id,
                ..Default::default()
            })
            .await
            .expect("get")
            .into_inner();
        let write = g
            .update_student(client::UpdateStudentRequest {
                student: Some(client::Student {
                    score: rec.score + 1.0,
                    ..rec.clone()
                }),
                expected_revision: rec.revision,
            })
            .await;
        match write {
            Ok(updated) => {
                assert!(updated.get_ref().revision > rec.revision);
                return conflicts;
            }
            Err(s) if s.code() == Code::FailedPrecondition => {
                let current = s.metadata().get("current-revision").and_then(|v| v.to_str().ok());
                assert!(
                    current
                        .and_then(|c| c.parse::<u64>().ok())
                        .is_some_and(|c| c > rec.revision),
                    "{s:?}"
                );
                conflicts += 1;
            }
            Err(s) => panic!("read-modify-write got {s:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_clients_incrementing_with_if_match_never_lose_an_increment() {
    let mut c = Cluster::new(3, vec![]);
    c.start_all();
    c.wait_stable(&[0, 1, 2], 3).await;
    assert_eq!(
        post(&c.nodes[0], &json_student(1, "counter", 0.0)).await.status(),
        201
    );

    const CLIENTS: usize = 8;
    const EACH: usize = 10;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        // Spread over the nodes: most writes are forwarded, every node checks revisions the same.
        let node = &c.nodes[i % 3];
        let base = node.http();
        let mut grpc = (i % 2 == 1).then_some(node.grpc().await);
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0;
            for _ in 0..EACH {
                conflicts += match grpc.as_mut() {
                    Some(g) => increment_grpc(g, 1).await,
                    None => increment_rest(&base, 1).await,
                };
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await.expect("client task");
    }
    let (_, rec) = get_json(format!("{}/students/1", c.nodes[2].http())).await;
    eprintln!(
        "{CLIENTS} clients x {EACH} increments: {conflicts} conflicts retried, {:?}",
        started.elapsed()
    );
    assert_eq!(
        rec["score"],
        (CLIENTS * EACH) as f64,
        "every increment counted once: {rec}"
    );
    assert!(
        conflicts > 0,
        "the clients did contend (otherwise this test proves nothing)"
    );

    // A stale expected revision on a delete, through a follower: refused, record kept.
    let mut g = c.nodes[1].grpc().await;
    let rev = rec["revision"].as_u64().expect("revision");
    let s = g
        .delete_student(client::DeleteStudentRequest {
            id: 1,
            expected_revision: rev - 1,
        })
        .await
        .expect_err("stale");
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    assert_eq!(
        s.metadata().get("current-revision").and_then(|v| v.to_str().ok()),
        Some(rev.to_string().as_str())
    );
    g.delete_student(client::DeleteStudentRequest {
        id: 1,
        expected_revision: rev,
    })
    .await
    .expect("the current revision deletes");
}
