//! Faults against a real cluster: a killed leader (failover, rejoin through a snapshot),
//! a leader's graceful shutdown, writes without a quorum or a leader, and Raft RPCs meant
//! for another incarnation of a node.

use std::time::{Duration, Instant};

use openraft_memory::pb::client;
use serde_json::Value;
use tonic::Code;

use super::{env, get_json, post};
use crate::util::{Cluster, Node, fresh_ip, json_student, wait_for};

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
    let voter_ids = crate::util::voter_ids(&info);
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
    // Through a transfer: one caught-up follower was asked to campaign at once (rather
    // than both waiting for their leases to run out), and it did.
    assert!(
        log.contains("asked a caught-up voter to campaign now"),
        "the leader transferred leadership:\n{log}"
    );
    let asked: Vec<String> = (0..3)
        .filter(|i| *i != leader)
        .map(|i| std::fs::read_to_string(&c.nodes[i].log).expect("log"))
        .filter(|l| l.contains("the leader is handing over to this node"))
        .collect();
    assert_eq!(
        asked.len(),
        1,
        "exactly one follower campaigned on the leader's request"
    );
    assert_eq!(
        post(&c.nodes[other], &json_student(1, "after", 1.0))
            .await
            .status(),
        201
    );
}

/// The whole cluster stopped at once: whoever leads at each moment may hand over to a
/// voter that is itself stopping, but nobody waits out the shutdown deadline for a
/// hand-over that cannot happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_whole_cluster_does_not_wait_for_a_hand_over_nobody_can_take() {
    let mut c = Cluster::new(3, vec![]);
    c.start_all();
    c.wait_stable(&[0, 1, 2], 3).await;
    let signalled = Instant::now();
    for n in &c.nodes {
        n.signal("TERM");
    }
    for n in &mut c.nodes {
        assert_eq!(
            n.wait_exit(Duration::from_secs(25)).await,
            Some(0),
            "{} exits cleanly",
            n.name
        );
    }
    // The shutdown deadline is 20 s; half of it bounds the hand-over wait.
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "the nodes waited for a hand-over: {:?}",
        signalled.elapsed()
    );
    for n in &c.nodes {
        let log = std::fs::read_to_string(&n.log).expect("log");
        assert!(
            !log.contains("leadership did not move before the deadline"),
            "{}:\n{log}",
            n.name
        );
    }
}

/// A leader whose followers are gone learns that nobody can take over (their status does
/// not answer) and stops without waiting for a hand-over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_followers_stopped_does_not_wait_for_a_hand_over() {
    let mut c = Cluster::new(3, vec![]);
    c.start_all();
    let leader = c.wait_stable(&[0, 1, 2], 3).await;
    for i in (0..3).filter(|i| *i != leader) {
        c.nodes[i].signal("TERM");
        assert_eq!(c.nodes[i].wait_exit(Duration::from_secs(25)).await, Some(0));
    }
    c.nodes[leader].signal("TERM");
    assert_eq!(c.nodes[leader].wait_exit(Duration::from_secs(25)).await, Some(0));
    let log = std::fs::read_to_string(&c.nodes[leader].log).expect("log");
    assert!(
        log.contains("no other voter can take over"),
        "the leader saw its followers stopped and did not wait for a hand-over:\n{log}"
    );
    assert!(
        !log.contains("leadership did not move before the deadline"),
        "{log}"
    );
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
                ..Default::default()
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
    let mut peer_client = RaftPeerClient::connect(format!("http://{}:{}", node.ip, crate::util::RAFT_PORT))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_write_gets_the_client_checks_and_changes_nothing_when_refused() {
    use openraft_memory::pb::peer::raft_peer_client::RaftPeerClient;
    use openraft_memory::pb::peer::{self, command::Op};
    let mut node = Node::new("solo", fresh_ip(), vec![], vec![]);
    node.start();
    node.wait_ready().await;
    let mut peer_client = RaftPeerClient::connect(format!("http://{}:{}", node.ip, crate::util::RAFT_PORT))
        .await
        .expect("peer connect");
    let student = |id, name: &str, score| client::Student {
        id,
        name: name.into(),
        score,
        ..Default::default()
    };
    let write = |op| peer::ClientWriteRequest {
        command: Some(peer::Command { op: Some(op) }),
    };
    let refused = [
        ("NaN score", write(Op::Create(student(1, "a", f32::NAN)))),
        ("score above 100", write(Op::Create(student(1, "a", 1000.0)))),
        ("blank name", write(Op::Create(student(1, "  ", 1.0)))),
        ("untrimmed name", write(Op::Update(student(1, " a ", 1.0)))),
        ("id zero", write(Op::Delete(0))),
        (
            "a batch larger than raft.max_batch_writes",
            write(Op::Batch(peer::CommandBatch {
                commands: vec![
                    peer::Command {
                        op: Some(Op::Delete(1))
                    };
                    100_000
                ],
            })),
        ),
    ];
    for (what, req) in refused {
        let err = peer_client.client_write(req).await.expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
    }
    let (_, page) = get_json(format!("{}/students", node.http())).await;
    assert_eq!(
        page["students"].as_array().map(Vec::len),
        Some(0),
        "nothing was applied: {page}"
    );
    let ok = peer_client
        .client_write(write(Op::Create(student(1, "Ada", 1.0))))
        .await
        .expect("a valid forwarded write");
    assert!(ok.into_inner().result.is_some());
}
