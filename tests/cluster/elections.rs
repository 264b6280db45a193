//! Elections and availability under partitions: a leader cut off from its quorum refuses
//! at once (check-quorum), a follower names the leader it cannot reach, and pre-votes keep
//! a node that cannot win from raising the term.

use std::time::{Duration, Instant};

use openraft_memory::pb::client;
use openraft_memory::pb::peer;
use openraft_memory::pb::peer::raft_peer_client::RaftPeerClient;
use serde_json::Value;
use tonic::Code;

use super::{env, post};
use crate::util::{Cluster, Node, RAFT_PORT, client as http, json_student, wait_for};

/// A gRPC create on `node` that must be refused; answers the status.
async fn refused_grpc_create(node: &Node, id: i64) -> tonic::Status {
    let mut g = node.grpc().await;
    g.create_student(client::CreateStudentRequest {
        student: Some(client::Student {
            id,
            name: format!("s{id}"),
            score: 1.0,
            ..Default::default()
        }),
    })
    .await
    .expect_err("refused")
}

/// Check-quorum: a leader whose followers are gone stops taking writes once it has not
/// heard from a quorum for an election timeout, and says so at once instead of letting
/// every write wait out `raft.write_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_its_quorum_refuses_writes_at_once_as_not_applied() {
    // A write timeout far beyond the election timeout: an answer within it can only come
    // from check-quorum.
    let mut c = Cluster::new(3, env(&[("OPENRAFT_MEMORY__RAFT__WRITE_TIMEOUT", "20s")]));
    c.start_all();
    let leader = c.wait_stable(&[0, 1, 2], 3).await;
    for i in 0..3 {
        if i != leader {
            c.nodes[i].kill();
        }
    }
    let l = &c.nodes[leader];
    // A write proposed just before the leader notices may still be in flight: it ends when
    // the leader sees it is cut off, as an unknown outcome, well before the write timeout.
    let started = Instant::now();
    let r = post(l, &json_student(1, "x", 1.0)).await;
    let elapsed = started.elapsed();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");

    // Readiness says why.
    let ready: Value = wait_for(
        "readyz names the lost quorum",
        Duration::from_secs(10),
        || async {
            let r = http().get(format!("{}/readyz", l.http())).send().await.ok()?;
            if r.status() != 503 {
                return None;
            }
            let body: Value = r.json().await.ok()?;
            body["reason"]
                .as_str()
                .is_some_and(|s| s.contains("quorum"))
                .then_some(body)
        },
    )
    .await;
    assert!(
        ready["reason"].as_str().is_some_and(|s| s.contains("cut off")),
        "{ready}"
    );

    // From now on nothing is proposed: REST says no-leader, retryable, and fast.
    let started = Instant::now();
    let body: Value = post(l, &json_student(2, "y", 1.0))
        .await
        .json()
        .await
        .expect("problem");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        body["type"].as_str().is_some_and(|t| t.ends_with("/no-leader")),
        "{body}"
    );
    assert_eq!(body["retryable"], true);
    let err = refused_grpc_create(l, 3).await;
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.metadata()
            .get(openraft_memory::pb::NOT_APPLIED_HEADER)
            .is_some(),
        "{err:?}"
    );
    // A linearizable read needs the same quorum.
    let r = http()
        .get(format!("{}/students/1", l.http()))
        .send()
        .await
        .expect("read");
    assert_eq!(r.status(), 503);

    // The node stays up, and the metrics show the cut-off.
    let r = http()
        .get(format!("{}/livez", l.http()))
        .send()
        .await
        .expect("livez");
    assert_eq!(r.status(), 200);
    let text = http()
        .get(format!("{}/metrics", l.http()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        text.lines().any(|l| l == "openraft_memory_raft_leader_cut_off 1"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("openraft_memory_raft_quorum_lost_total ") && !l.ends_with(" 0")),
        "{text}"
    );
}

/// A follower that cannot reach the leader it knows refuses at once as not-applied and
/// names that leader, so a client can try it directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_cannot_reach_its_leader_names_it() {
    // Long election timeouts keep the paused leader the one the followers believe in for
    // a few seconds: the window this test looks at.
    let mut c = Cluster::new(
        3,
        env(&[
            ("OPENRAFT_MEMORY__RAFT__ELECTION_TIMEOUT_MIN", "4s"),
            ("OPENRAFT_MEMORY__RAFT__ELECTION_TIMEOUT_MAX", "6s"),
            ("OPENRAFT_MEMORY__RAFT__WRITE_TIMEOUT", "20s"),
        ]),
    );
    c.start_all();
    let leader = c.wait_stable(&[0, 1, 2], 3).await;
    let info = c.nodes[leader].cluster().await.expect("cluster");
    let leader_id = info["node"]["id"].as_u64().expect("id");
    let leader_name = c.nodes[leader].name.clone();
    let follower = (leader + 1) % 3;
    let f = &c.nodes[follower];
    assert_eq!(post(f, &json_student(1, "a", 1.0)).await.status(), 201);

    c.nodes[leader].signal("STOP");
    let started = Instant::now();
    let body: Value = wait_for("a refusal naming the leader", Duration::from_secs(10), || async {
        let r = post(f, &json_student(2, "b", 1.0)).await;
        let body: Value = r.json().await.ok()?;
        (body["type"].as_str().is_some_and(|t| t.ends_with("/no-leader")) && body["leader"].is_object())
            .then_some(body)
    })
    .await;
    // Well inside the write timeout: the dead link was noticed, not waited out.
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(body["retryable"], true, "{body}");
    assert_eq!(body["leader"]["id"], leader_id, "{body}");
    assert_eq!(body["leader"]["name"], leader_name.as_str(), "{body}");

    let err = refused_grpc_create(f, 3).await;
    assert_eq!(err.code(), Code::Unavailable);
    let md = err.metadata();
    assert!(
        md.get(openraft_memory::pb::NOT_APPLIED_HEADER).is_some(),
        "{err:?}"
    );
    assert_eq!(
        md.get(openraft_memory::pb::LEADER_HEADER)
            .and_then(|v| v.to_str().ok()),
        Some(leader_name.as_str()),
        "{err:?}"
    );
    assert_eq!(
        md.get(openraft_memory::pb::LEADER_ID_HEADER)
            .and_then(|v| v.to_str().ok()),
        Some(leader_id.to_string().as_str()),
        "{err:?}"
    );
    c.nodes[leader].signal("CONT");
}

/// Asks `node` for a pre-vote for `candidate` whose log ends at (`term`, `index`).
async fn pre_vote(node: &Node, candidate: u64, last: Option<(u64, u64)>) -> peer::PreVoteResponse {
    let id = node.cluster().await.expect("cluster")["node"]["id"]
        .as_u64()
        .expect("id");
    let mut c = RaftPeerClient::connect(format!("http://{}:{RAFT_PORT}", node.ip))
        .await
        .expect("peer connect");
    let mut req = tonic::Request::new(peer::PreVoteRequest {
        candidate,
        last_log_id: last.map(|(term, index)| peer::LogId {
            leader_id: Some(peer::LeaderId {
                term,
                node_id: candidate,
            }),
            index,
        }),
    });
    req.metadata_mut()
        .insert("x-raft-target-node", id.to_string().parse().expect("ascii"));
    c.pre_vote(req).await.expect("pre-vote answered").into_inner()
}

/// Asks `node` to campaign now on behalf of `leader` in `term`, whose log ends at
/// (`last_term`, `index`) (the leadership-transfer RPC).
async fn timeout_now(
    node: &Node,
    leader: u64,
    term: u64,
    last: Option<(u64, u64)>,
) -> peer::TimeoutNowResponse {
    let id = node.cluster().await.expect("cluster")["node"]["id"]
        .as_u64()
        .expect("id");
    let mut c = RaftPeerClient::connect(format!("http://{}:{RAFT_PORT}", node.ip))
        .await
        .expect("peer connect");
    let mut req = tonic::Request::new(peer::TimeoutNowRequest {
        leader,
        term,
        last_log_id: last.map(|(term, index)| peer::LogId {
            leader_id: Some(peer::LeaderId {
                term,
                node_id: leader,
            }),
            index,
        }),
    });
    req.metadata_mut()
        .insert("x-raft-target-node", id.to_string().parse().expect("ascii"));
    c.timeout_now(req)
        .await
        .expect("timeout-now answered")
        .into_inner()
}

fn term_of(info: &Value) -> u64 {
    info["node"]["term"].as_u64().expect("term")
}

/// A pre-vote changes nothing and is granted only when a real vote could be: never while
/// a leader is heard (by the leader itself, or by a follower within its lease), and never
/// to a candidate whose log is behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_votes_are_refused_while_a_leader_is_heard_or_for_a_shorter_log() {
    let mut c = Cluster::new(3, vec![]);
    c.start_all();
    let leader = c.wait_stable(&[0, 1, 2], 3).await;
    assert_eq!(
        post(&c.nodes[leader], &json_student(1, "a", 1.0)).await.status(),
        201
    );
    let follower = (leader + 1) % 3;
    let stranger = 4242;
    let far_ahead = Some((1_000, 1_000_000));
    let r = pre_vote(&c.nodes[leader], stranger, far_ahead).await;
    assert!(!r.granted && r.reason.contains("leads"), "{r:?}");
    let r = pre_vote(&c.nodes[follower], stranger, far_ahead).await;
    assert!(!r.granted && r.reason.contains("heard from the leader"), "{r:?}");
    let term = term_of(&c.nodes[leader].cluster().await.expect("cluster"));

    // The followers gone, the leader is cut off: it lets a candidate go ahead, but only
    // one whose log is at least as long as its own.
    for i in 0..3 {
        if i != leader {
            c.nodes[i].kill();
        }
    }
    let l = &c.nodes[leader];
    let r = wait_for(
        "the cut-off leader grants a pre-vote",
        Duration::from_secs(10),
        || async {
            let r = pre_vote(l, stranger, far_ahead).await;
            r.granted.then_some(r)
        },
    )
    .await;
    assert!(r.reason.is_empty(), "{r:?}");
    let r = pre_vote(l, stranger, None).await;
    assert!(!r.granted && r.reason.contains("before this node's"), "{r:?}");
    // Nothing changed: the same term, still leading (and still refusing writes).
    let info = l.cluster().await.expect("cluster");
    assert_eq!(term_of(&info), term, "{info}");
    assert_eq!(info["node"]["state"], "Leader", "{info}");
}

/// Only the leader a voter follows may make it campaign at once, and only when the voter
/// holds the leader's whole log; a refused request changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_now_is_refused_unless_the_followed_leader_asks_for_a_log_the_voter_holds() {
    let mut c = Cluster::new(3, vec![]);
    c.start_all();
    let leader = c.wait_stable(&[0, 1, 2], 3).await;
    assert_eq!(
        post(&c.nodes[leader], &json_student(1, "a", 1.0)).await.status(),
        201
    );
    let info = c.nodes[leader].cluster().await.expect("cluster");
    let (leader_id, term) = (info["node"]["id"].as_u64().expect("id"), term_of(&info));
    let follower = &c.nodes[(leader + 1) % 3];

    let r = timeout_now(follower, 4242, term, None).await;
    assert!(!r.started && r.reason.contains("does not follow 4242"), "{r:?}");
    let r = timeout_now(follower, leader_id, term + 1, None).await;
    assert!(!r.started && r.reason.contains("does not follow"), "{r:?}");
    let r = timeout_now(follower, leader_id, term, Some((term, 1_000_000))).await;
    assert!(!r.started && r.reason.contains("before the leader's"), "{r:?}");
    let r = timeout_now(&c.nodes[leader], leader_id, term, None).await;
    assert!(!r.started && r.reason.contains("leads"), "{r:?}");

    for n in &c.nodes {
        let info = n.cluster().await.expect("cluster");
        assert_eq!(term_of(&info), term, "{info}");
        assert_eq!(info["leader"]["id"].as_u64(), Some(leader_id), "{info}");
    }
}

/// A node that cannot win an election does not start one: the last of three voters,
/// alone, keeps its term however long it waits (OpenRaft's own timer would have raised it
/// a dozen times), and when a second voter is back the two elect a leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_survivor_keeps_its_term_and_elects_once_a_voter_is_back() {
    let mut c = Cluster::new(3, vec![]);
    for n in &mut c.nodes {
        n.use_disk();
    }
    c.start_all();
    let leader = c.wait_stable(&[0, 1, 2], 3).await;
    assert_eq!(
        post(&c.nodes[leader], &json_student(1, "a", 1.0)).await.status(),
        201
    );
    let survivor = (leader + 1) % 3;
    let returner = (leader + 2) % 3;
    let term = term_of(&c.nodes[survivor].cluster().await.expect("cluster"));
    c.nodes[leader].kill();
    c.nodes[returner].kill();
    // Ten election timeouts (fast_env: at most 600 ms) with nobody to vote for it.
    let s = &c.nodes[survivor];
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        let info = s.cluster().await.expect("cluster");
        assert_eq!(term_of(&info), term, "the survivor raised its term: {info}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let text = http()
        .get(format!("{}/metrics", s.http()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        text.lines()
            .any(|l| l == "openraft_memory_raft_campaigns_started_total 0"),
        "{text}"
    );

    // A second voter with its log back: one of the two wins.
    let gone = c.nodes[leader].name.clone();
    c.nodes[returner].start();
    let info = wait_for("a new leader is elected", Duration::from_secs(20), || async {
        let info = c.nodes[survivor].cluster().await?;
        (info["leader"]["name"].as_str().is_some_and(|n| n != gone)).then_some(info)
    })
    .await;
    // One election; a split round (both campaign at once) may add a term or two.
    assert!(term_of(&info) > term, "{info}");
    assert_eq!(
        post(&c.nodes[survivor], &json_student(2, "b", 1.0))
            .await
            .status(),
        201
    );
}
