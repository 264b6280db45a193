//! Cluster tests against real processes on loopback. This file: formation (a lone node,
//! three started together, ordinal 0 waiting for a silent peer) and the helpers the
//! modules share; [`api`], [`backup`], [`ctl`], [`elections`], [`failover`], [`hostile`], [`metrics`], [`durable`], [`k8s`],
//! [`observability`], [`perf`], [`restore`], [`revisions`], [`security`], [`watch`] hold the rest.

mod api;
mod backup;
mod ctl;
mod durable;
mod elections;
mod failover;
mod hostile;
mod k8s;
mod limits;
mod metrics;
mod observability;
mod perf;
mod restore;
mod revisions;
mod security;
mod sts;
mod tls;
mod util;
mod watch;

use std::time::{Duration, Instant};

use serde_json::Value;
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
    let mut reflection = ServerReflectionClient::new(channel.clone());
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
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    let mut served: Vec<String> = openraft_memory::server::CLIENT_SERVICES
        .iter()
        .map(|s| s.to_string())
        .collect();
    served.sort();
    assert_eq!(names, served, "exactly what the client port serves (no RaftPeer)");

    // v1alpha too (older grpcurl, Evans, grpcio-reflection), down to a symbol's file.
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as AlphaClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as AlphaRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse as AlphaResponse;
    let mut alpha = AlphaClient::new(channel);
    let req = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(AlphaRequest::FileContainingSymbol(
            "openraft_memory.v1.StudentService".into(),
        )),
    };
    let mut stream = alpha
        .server_reflection_info(futures::stream::iter(vec![req]))
        .await
        .expect("v1alpha reflection")
        .into_inner();
    let resp = stream.message().await.expect("message").expect("one response");
    assert!(
        matches!(resp.message_response, Some(AlphaResponse::FileDescriptorResponse(f)) if !f.file_descriptor_proto.is_empty()),
        "v1alpha answers a symbol lookup"
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
    // A normal formation warns about nothing: peers not started yet and the first election
    // are expected, not an operator's concern.
    for n in &c.nodes {
        let log = std::fs::read_to_string(&n.log).expect("log");
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| (l.contains("WARN") || l.contains("ERROR")) && l.contains("openraft_memory"))
            .collect();
        assert!(
            warnings.is_empty(),
            "{} warned during formation: {warnings:#?}",
            n.name
        );
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_is_said_once_and_exits_2() {
    let ip = fresh_ip();
    let mut first = Node::new("first", ip, vec![], vec![]);
    first.start();
    first.wait_ready().await;
    let mut second = Node::new("second", ip, vec![], vec![]);
    second.start();
    assert_eq!(second.wait_exit(Duration::from_secs(10)).await, Some(2));
    let log = std::fs::read_to_string(&second.log).expect("log");
    assert_eq!(
        log.matches("Address already in use").count(),
        1,
        "said once:\n{log}"
    );
    assert!(log.contains("cannot listen"), "{log}");
    assert!(first.ready().await, "the first node keeps serving");
}
