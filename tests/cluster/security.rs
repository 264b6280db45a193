//! Security against real processes: three nodes over mutual TLS with per-node certificates
//! (each names only its own address), HTTPS and gRPC TLS with bearer tokens, peers refused
//! by certificate, and rotation of certificates, CA bundle and tokens without a restart.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use openraft_memory::pb::client::student_service_client::StudentServiceClient;
use openraft_memory::pb::peer;
use openraft_memory::pb::peer::raft_peer_client::RaftPeerClient;
use openraft_memory::security::auth::hash_token;
use openraft_memory::security::certs::{DevCa, Validity};
use serde_json::Value;
use tonic::Code;

use super::tls::{Pair, Pki, client_config, grpc_channel, https, https_as, node_env, presented, replace};
use super::util::{Cluster, GRPC_PORT, HTTP_PORT, RAFT_PORT, fresh_ip, json_student, wait_for};

const ADMIN: &str = "admin-token-0123456789";
const WRITER: &str = "write-token-0123456789";
const READER: &str = "read-token-0123456789";

/// A TLS cluster, its CA and tokens.
struct Secure {
    c: Cluster,
    pki: Pki,
    pairs: Vec<Pair>,
    tokens: PathBuf,
    rest: reqwest::Client,
}

fn tokens_text(entries: &[(&str, &str, &str)]) -> String {
    entries
        .iter()
        .map(|(token, role, name)| format!("{} {role} {name}\n", hash_token(token)))
        .collect()
}

impl Secure {
    fn start(n: usize) -> Secure {
        let pki = Pki::new("test CA");
        let ca = pki.ca_file();
        let tokens = pki.dir.path().join("tokens");
        replace(
            &tokens,
            &tokens_text(&[
                (ADMIN, "admin", "root"),
                (WRITER, "write", "app"),
                (READER, "read", "viewer"),
            ]),
        );
        let mut c = Cluster::new(n, vec![]);
        let mut pairs = Vec::new();
        for (i, node) in c.nodes.iter_mut().enumerate() {
            // Each certificate names only its node's address: identities are distinct.
            let pair = pki.issue(&format!("node-{i}"), &[node.ip.to_string()], Validity::Days(1));
            node.extra_env.extend(node_env(&pair, &ca));
            node.extra_env.push((
                "OPENRAFT_MEMORY__AUTH__TOKENS_FILE".into(),
                tokens.display().to_string(),
            ));
            pairs.push(pair);
        }
        c.start_all();
        let rest = https(pki.ca.cert_pem());
        Secure {
            c,
            pki,
            pairs,
            tokens,
            rest,
        }
    }

    fn url(&self, i: usize, path: &str) -> String {
        format!("https://{}:{HTTP_PORT}{path}", self.c.nodes[i].ip)
    }

    fn addr(&self, i: usize, port: u16) -> SocketAddr {
        SocketAddr::new(self.c.nodes[i].ip.into(), port)
    }

    async fn info(&self, i: usize) -> Option<Value> {
        let r = self
            .rest
            .get(self.url(i, "/cluster"))
            .bearer_auth(READER)
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// Waits until every node sees all voters and the same leader; returns its index.
    async fn wait_formed(&self) -> usize {
        let n = self.c.nodes.len();
        wait_for(
            "a TLS cluster with every node a voter",
            Duration::from_secs(40),
            || async {
                let mut leader = None;
                for i in 0..n {
                    let info = self.info(i).await?;
                    if info["voters"].as_array()?.len() != n {
                        return None;
                    }
                    let name = info["leader"]["name"].as_str()?.to_owned();
                    if leader.get_or_insert(name.clone()) != &name {
                        return None;
                    }
                }
                let name = leader?;
                self.c.nodes.iter().position(|node| node.name == name)
            },
        )
        .await
    }

    /// Node `i`'s metrics text, through `client`.
    async fn metrics(&self, client: &reqwest::Client, i: usize) -> Option<String> {
        client
            .get(self.url(i, "/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()
    }

    /// Gives every node a new certificate from `ca` for its own address.
    fn reissue(&self, ca: &DevCa) {
        for (i, pair) in self.pairs.iter().enumerate() {
            let fresh = ca
                .issue(&[self.c.nodes[i].ip.to_string()], Validity::Days(1))
                .expect("issue");
            replace(&pair.key, &fresh.key);
            replace(&pair.cert, &fresh.cert);
        }
    }

    async fn status(&self, req: reqwest::RequestBuilder) -> u16 {
        req.send().await.expect("request").status().as_u16()
    }

    /// A peer client presenting `identity` (or none) to node `i`'s peer port.
    async fn peer(
        &self,
        i: usize,
        ca_pem: &str,
        identity: Option<&openraft_memory::security::certs::Issued>,
    ) -> Option<RaftPeerClient<tonic::transport::Channel>> {
        let config = client_config(ca_pem, identity, &[b"h2"]);
        grpc_channel(self.addr(i, RAFT_PORT), config)
            .await
            .ok()
            .map(RaftPeerClient::new)
    }
}

fn with_target<T>(msg: T, id: u64) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert(
        openraft_memory::pb::TARGET_NODE_HEADER,
        id.to_string().parse().expect("header"),
    );
    req
}

fn bearer<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_mutual_tls_serve_https_and_grpc_to_token_holders_by_role() {
    let s = Secure::start(3);
    let leader = s.wait_formed().await;
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;

    // CRUD through a follower (forwarded to the leader over peer mTLS).
    let r = &s.rest;
    let created = r
        .post(s.url(follower, "/students"))
        .bearer_auth(WRITER)
        .json(&json_student(1, "Ada", 91.5));
    assert_eq!(s.status(created).await, 201);
    let read = r
        .get(s.url(other, "/students/1"))
        .bearer_auth(READER)
        .send()
        .await
        .expect("get");
    assert_eq!(read.status(), 200);
    assert_eq!(read.json::<Value>().await.expect("json")["name"], "Ada");
    let update = r
        .put(s.url(other, "/students/1"))
        .bearer_auth(WRITER)
        .json(&serde_json::json!({"name": "Ada L", "score": 95.0}));
    assert_eq!(s.status(update).await, 200);

    // No token: 401 with a Bearer challenge, as problem+json; unknown token likewise.
    let anon = r
        .post(s.url(follower, "/students"))
        .json(&json_student(2, "Bo", 1.0))
        .send()
        .await
        .expect("post");
    assert_eq!(anon.status(), 401);
    assert_eq!(
        anon.headers()["www-authenticate"],
        "Bearer realm=\"openraft-memory\""
    );
    assert_eq!(anon.headers()["content-type"], "application/problem+json");
    let problem: Value = anon.json().await.expect("problem");
    assert!(
        problem["detail"].as_str().is_some_and(|d| d.contains("Bearer")),
        "{problem}"
    );
    let wrong = r.get(s.url(0, "/students/1")).bearer_auth("not-a-token");
    assert_eq!(s.status(wrong).await, 401);
    // A read token cannot write; a write token cannot change membership or take backups.
    let ro = r
        .post(s.url(0, "/students"))
        .bearer_auth(READER)
        .json(&json_student(2, "Bo", 1.0))
        .send()
        .await
        .expect("post");
    assert_eq!(ro.status(), 403);
    let body: Value = ro.json().await.expect("problem");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("viewer") && d.contains("write")),
        "{body}"
    );
    let add = r
        .post(s.url(0, "/cluster/members"))
        .bearer_auth(WRITER)
        .json(&serde_json::json!({"name": "x-9", "addr": "127.0.0.1:1"}));
    assert_eq!(s.status(add).await, 403);
    assert_eq!(
        s.status(r.get(s.url(0, "/cluster/snapshot")).bearer_auth(WRITER))
            .await,
        403
    );
    assert_eq!(
        s.status(r.get(s.url(0, "/cluster/snapshot")).bearer_auth(ADMIN))
            .await,
        200
    );
    let remove_unknown = r.delete(s.url(0, "/cluster/members/12345")).bearer_auth(ADMIN);
    assert_eq!(s.status(remove_unknown).await, 404, "admin may manage members");
    // Health, readiness and (by default) metrics need no token.
    for path in ["/livez", "/readyz", "/metrics"] {
        assert_eq!(
            s.status(r.get(s.url(follower, path))).await,
            200,
            "{path} is anonymous"
        );
    }
    let metrics = s.metrics(r, 0).await.expect("metrics");
    assert!(
        metrics.contains("openraft_memory_auth_denied_total{port=\"rest\",reason=\"forbidden\"}"),
        "refusals are counted"
    );
    assert!(
        metrics.contains("openraft_memory_certificate_expiry_timestamp_seconds{file="),
        "expiry is exported"
    );

    // Plaintext to the TLS port fails cleanly, and the node keeps serving.
    let plain = super::util::client()
        .get(format!("http://{}:{HTTP_PORT}/livez", s.c.nodes[0].ip))
        .send()
        .await;
    assert!(
        plain.map(|r| r.status() != 200).unwrap_or(true),
        "plaintext HTTP must not be served"
    );
    assert_eq!(s.status(r.get(s.url(0, "/livez"))).await, 200);

    // gRPC: the same roles; health is anonymous.
    let channel = grpc_channel(
        s.addr(follower, GRPC_PORT),
        client_config(s.pki.ca.cert_pem(), None, &[b"h2"]),
    )
    .await
    .expect("grpc over TLS");
    let mut grpc = StudentServiceClient::new(channel.clone());
    use openraft_memory::pb::client::{CreateStudentRequest, GetStudentRequest};
    let create = |id, token: Option<&str>| {
        let msg = CreateStudentRequest {
            student: Some(openraft_memory::pb::client::Student {
                id,
                name: "Cy".into(),
                score: 10.0,
                ..Default::default()
            }),
        };
        match token {
            Some(t) => bearer(msg, t),
            None => tonic::Request::new(msg),
        }
    };
    let err = grpc.create_student(create(3, None)).await.expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    let err = grpc
        .create_student(create(3, Some(READER)))
        .await
        .expect_err("read token");
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    grpc.create_student(create(3, Some(WRITER)))
        .await
        .expect("write token writes");
    let got = grpc
        .get_student(bearer(
            GetStudentRequest {
                id: 3,
                ..Default::default()
            },
            READER,
        ))
        .await
        .expect("read");
    assert_eq!(got.into_inner().name, "Cy");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health needs no token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_without_a_members_certificate_are_refused_and_change_nothing() {
    let s = Secure::start(3);
    let leader = s.wait_formed().await;
    let created = s
        .rest
        .post(s.url(leader, "/students"))
        .bearer_auth(WRITER)
        .json(&json_student(1, "Ada", 1.0));
    assert_eq!(s.status(created).await, 201);
    let before = s.info(leader).await.expect("cluster");
    let leader_id = before["node"]["id"].as_u64().expect("id");
    let ca = s.pki.ca.cert_pem().to_owned();

    // No certificate, another CA's, an expired one: the handshake itself fails.
    let stranger = DevCa::new("someone else's CA").expect("CA");
    let foreign = stranger
        .issue(&[s.c.nodes[1].ip.to_string()], Validity::Days(1))
        .expect("issue");
    let expired = s
        .pki
        .issue("expired", &[s.c.nodes[1].ip.to_string()], Validity::Expired)
        .issued;
    for (what, identity) in [
        ("no certificate", None),
        ("another CA", Some(&foreign)),
        ("expired", Some(&expired)),
    ] {
        let refused = match s.peer(leader, &ca, identity).await {
            None => true,
            Some(mut p) => p.status(peer::StatusRequest {}).await.is_err(),
        };
        assert!(refused, "a peer with {what} was served");
    }

    // The right CA but a name that is no member's: every member-only RPC is refused.
    let outsider = s
        .pki
        .issue("outsider", &[fresh_ip().to_string()], Validity::Days(1))
        .issued;
    let mut p = s
        .peer(leader, &ca, Some(&outsider))
        .await
        .expect("handshake with a CA certificate");
    let denied = |r: Result<(), tonic::Status>, what: &str| {
        let e = r.expect_err(what);
        assert_eq!(e.code(), Code::PermissionDenied, "{what}: {e}");
    };
    denied(
        p.vote(with_target(peer::VoteRequest::default(), leader_id))
            .await
            .map(drop),
        "Vote",
    );
    denied(
        p.append_entries(with_target(peer::AppendEntriesRequest::default(), leader_id))
            .await
            .map(drop),
        "AppendEntries",
    );
    let chunks = futures::stream::iter(vec![peer::SnapshotChunk::default()]);
    denied(
        p.install_snapshot(with_target(chunks, leader_id)).await.map(drop),
        "InstallSnapshot",
    );
    denied(
        p.client_write(peer::ClientWriteRequest::default())
            .await
            .map(drop),
        "forwarded write",
    );
    denied(
        p.read_index(peer::ReadIndexRequest {}).await.map(drop),
        "ReadIndex",
    );
    denied(
        p.remove_member(peer::RemoveMemberRequest { node_id: leader_id })
            .await
            .map(drop),
        "RemoveMember",
    );
    // Joining under a member's address is refused, even with a member's own certificate:
    // node-2's certificate cannot replace node-1.
    let node1 = s.c.nodes[1].ip;
    let join_as_node1 = |p: &mut RaftPeerClient<_>| {
        let req = peer::JoinRequest {
            node_id: 77,
            member: Some(peer::Member {
                name: "db-1".into(),
                addr: format!("{node1}:{RAFT_PORT}"),
            }),
        };
        let mut p = p.clone();
        async move { p.join(req).await.map(drop) }
    };
    denied(
        join_as_node1(&mut p).await,
        "Join as db-1 with an outsider's certificate",
    );
    let node2_cert = s.pairs[2].issued.clone();
    let mut p2 = s
        .peer(leader, &ca, Some(&node2_cert))
        .await
        .expect("member handshake");
    denied(
        join_as_node1(&mut p2).await,
        "Join as db-1 with db-2's certificate",
    );
    // Plaintext to the TLS peer port fails cleanly.
    let plaintext = tonic::transport::Endpoint::from_shared(format!("http://{}", s.addr(leader, RAFT_PORT)))
        .expect("uri")
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await;
    if let Ok(channel) = plaintext {
        let answer = RaftPeerClient::new(channel).status(peer::StatusRequest {}).await;
        assert!(answer.is_err(), "the peer port answered plaintext");
    }
    // Status is open to any certificate of the CA (bootstrap probing uses it).
    p.status(peer::StatusRequest {})
        .await
        .expect("status with a CA certificate");

    let after = s.info(leader).await.expect("cluster");
    assert_eq!(
        super::util::voter_ids(&after),
        super::util::voter_ids(&before),
        "membership unchanged"
    );
    assert_eq!(after["learners"], before["learners"]);
    let list: Value = s
        .rest
        .get(s.url(leader, "/students"))
        .bearer_auth(READER)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(
        list["students"].as_array().map(Vec::len),
        Some(1),
        "records unchanged: {list}"
    );
    // The cluster still writes.
    let again = s
        .rest
        .post(s.url(leader, "/students"))
        .bearer_auth(WRITER)
        .json(&json_student(2, "Bo", 2.0));
    assert_eq!(s.status(again).await, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_ca_bundles_and_tokens_rotate_without_a_restart() {
    let s = Arc::new(Secure::start(3));
    let leader = s.wait_formed().await;
    let follower = (leader + 1) % 3;
    let first = presented(s.addr(0, RAFT_PORT), s.pki.ca.cert_pem())
        .await
        .expect("handshake");
    // Clients trust the old and the new CA throughout, as an operator's would while the
    // servers move from one to the other.
    let new_ca = DevCa::new("rotated CA").expect("CA");
    let bundle = format!("{}{}", s.pki.ca.cert_pem(), new_ca.cert_pem());
    let rest = https(&bundle);

    // Writes through a follower run throughout; the longest stretch without a success is
    // measured (forwarding crosses the rotated peer links).
    let running = Arc::new(AtomicBool::new(true));
    let writer = tokio::spawn({
        let (s, running, rest) = (s.clone(), running.clone(), rest.clone());
        async move {
            let (mut id, mut last_ok, mut worst) = (1000, Instant::now(), Duration::ZERO);
            while running.load(Ordering::SeqCst) {
                id += 1;
                let req = rest
                    .post(s.url(follower, "/students"))
                    .bearer_auth(WRITER)
                    .json(&json_student(id, "w", 1.0));
                if matches!(req.send().await, Ok(r) if r.status() == 201) {
                    worst = worst.max(last_ok.elapsed());
                    last_ok = Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            worst.max(last_ok.elapsed())
        }
    });

    // 1. New certificates from the same CA: the next handshake presents the new serial.
    s.reissue(&s.pki.ca);
    wait_for(
        "node-0 presents its new certificate",
        Duration::from_secs(10),
        || async {
            let now = presented(s.addr(0, RAFT_PORT), s.pki.ca.cert_pem()).await?;
            (now.serial != first.serial).then_some(())
        },
    )
    .await;

    // 2. A new CA: bundle both, move every node to the new CA's certificates, then drop the
    //    old CA. A certificate of the old CA is refused afterwards.
    replace(&s.pki.ca_file(), &bundle);
    let old_ca_cert = s
        .pki
        .ca
        .issue(&[s.c.nodes[1].ip.to_string()], Validity::Days(1))
        .expect("issue");
    wait_for("the bundle is loaded", Duration::from_secs(10), || async {
        let m = s.metrics(&rest, 0).await?;
        m.lines()
            .find(|l| {
                l.starts_with("openraft_memory_security_reloads_total{part=\"peer\",result=\"success\"}")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .filter(|n| *n >= 3.0)
    })
    .await;
    s.reissue(&new_ca);
    wait_for(
        "node-2 presents a certificate of the new CA",
        Duration::from_secs(10),
        || async { presented(s.addr(2, RAFT_PORT), new_ca.cert_pem()).await.map(drop) },
    )
    .await;
    replace(&s.pki.ca_file(), new_ca.cert_pem());
    wait_for(
        "a certificate of the dropped CA is refused",
        Duration::from_secs(10),
        || async {
            match s.peer(0, new_ca.cert_pem(), Some(&old_ca_cert)).await {
                None => Some(()),
                Some(mut p) => p.status(peer::StatusRequest {}).await.is_err().then_some(()),
            }
        },
    )
    .await;

    // 3. A broken tokens file keeps the last good one; a new file revokes a token.
    replace(&s.tokens, "this is not a tokens file\n");
    wait_for(
        "the bad tokens file is noticed",
        Duration::from_secs(10),
        || async {
            let m = s.metrics(&rest, 0).await?;
            m.contains("openraft_memory_security_reloads_total{part=\"tokens\",result=\"failure\"}")
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        s.status(rest.get(s.url(0, "/cluster")).bearer_auth(READER)).await,
        200,
        "last good tokens still apply"
    );
    replace(
        &s.tokens,
        &tokens_text(&[(ADMIN, "admin", "root"), (WRITER, "write", "app")]),
    );
    wait_for(
        "the revoked read token gets 401",
        Duration::from_secs(5),
        || async {
            let code = rest
                .get(s.url(0, "/cluster"))
                .bearer_auth(READER)
                .send()
                .await
                .ok()?
                .status();
            (code == 401).then_some(())
        },
    )
    .await;

    running.store(false, Ordering::SeqCst);
    let worst = writer.await.expect("writer");
    eprintln!("longest stretch without a successful write during rotation: {worst:?}");
    assert!(
        worst < Duration::from_secs(3),
        "writes stalled for {worst:?} during rotation"
    );
    // No node restarted: each still runs and serves with the new CA.
    let rest = https(new_ca.cert_pem());
    for i in 0..3 {
        let r = rest
            .get(s.url(i, "/readyz"))
            .send()
            .await
            .expect("readyz with the new CA");
        assert_eq!(r.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_map_to_roles_metrics_can_need_a_role_and_sighup_reloads_at_once() {
    const METRICS: &str = "metrics-token-0123456789";
    let pki = Pki::new("client CA");
    let ca = pki.ca_file();
    let mut node = super::util::Node::new("solo", fresh_ip(), vec![], vec![]);
    let server = pki.issue("server", &[node.ip.to_string()], Validity::Days(1));
    let tokens = pki.dir.path().join("tokens");
    let lines = |with_metrics: bool| {
        let mut t = tokens_text(&[(WRITER, "write", "app")]);
        if with_metrics {
            t.push_str(&tokens_text(&[(METRICS, "metrics", "prometheus")]));
        }
        t.push_str("cert:ops-client admin ops\n");
        t
    };
    replace(&tokens, &lines(true));
    let p = |s: &std::path::Path| s.display().to_string();
    node.extra_env.extend([
        ("OPENRAFT_MEMORY__TLS__CLIENT__CERT".into(), p(&server.cert)),
        ("OPENRAFT_MEMORY__TLS__CLIENT__KEY".into(), p(&server.key)),
        ("OPENRAFT_MEMORY__TLS__CLIENT__CA".into(), p(&ca)),
        // Only SIGHUP can make it notice a change within this test.
        ("OPENRAFT_MEMORY__TLS__RELOAD_INTERVAL".into(), "1h".into()),
        ("OPENRAFT_MEMORY__AUTH__TOKENS_FILE".into(), p(&tokens)),
        ("OPENRAFT_MEMORY__AUTH__ANONYMOUS_METRICS".into(), "false".into()),
    ]);
    node.start();
    let plain = https(pki.ca.cert_pem());
    let url = |path: &str| format!("https://{}:{HTTP_PORT}{path}", node.ip);
    wait_for(
        "the node is ready over HTTPS",
        Duration::from_secs(20),
        || async {
            let r = plain.get(url("/readyz")).send().await.ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
    let code =
        |req: reqwest::RequestBuilder| async move { req.send().await.expect("request").status().as_u16() };

    // /metrics needs the metrics role here; that role can do nothing else.
    assert_eq!(code(plain.get(url("/metrics"))).await, 401);
    assert_eq!(code(plain.get(url("/metrics")).bearer_auth(METRICS)).await, 200);
    assert_eq!(
        code(plain.get(url("/students/1")).bearer_auth(METRICS)).await,
        403
    );
    // A client certificate mapped to admin needs no token; an unmapped one is refused.
    let ops = pki
        .ca
        .issue(&["ops-client".into()], Validity::Days(1))
        .expect("issue");
    let as_ops = https_as(pki.ca.cert_pem(), Some(&ops));
    assert_eq!(
        code(as_ops.get(url("/cluster/snapshot"))).await,
        200,
        "ops is admin by certificate"
    );
    let nobody = pki
        .ca
        .issue(&["nobody".into()], Validity::Days(1))
        .expect("issue");
    let as_nobody = https_as(pki.ca.cert_pem(), Some(&nobody));
    assert_eq!(code(as_nobody.get(url("/cluster"))).await, 401);
    // Server reflection is admin-only.
    let channel = grpc_channel(
        SocketAddr::new(node.ip.into(), GRPC_PORT),
        client_config(pki.ca.cert_pem(), None, &[b"h2"]),
    )
    .await
    .expect("grpc");
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    let list = || tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut reflection = ServerReflectionClient::new(channel);
    let err = reflection
        .server_reflection_info(bearer(futures::stream::iter(vec![list()]), WRITER))
        .await
        .expect_err("a write token may not list services");
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");

    // SIGHUP re-reads the tokens file at once (the poll interval is an hour).
    replace(&tokens, &lines(false));
    node.signal("HUP");
    wait_for(
        "the revoked metrics token gets 401 after SIGHUP",
        Duration::from_secs(5),
        || async {
            let r = plain
                .get(url("/metrics"))
                .bearer_auth(METRICS)
                .send()
                .await
                .ok()?;
            (r.status() == 401).then_some(())
        },
    )
    .await;
    assert!(node.is_running(), "SIGHUP reloads; it does not stop the node");
}

/// Under peer TLS only the leader can check a joiner's certificate (a member forwarding the
/// join presents its own). An empty ordinal 0, restarted after the leader moved, must find
/// and join through the new leader, whichever member it is. Before the fix it asked the
/// first member in its peer list, which forwarded the join and was refused forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_ordinal_zero_rejoins_through_the_leader_over_tls() {
    let mut s = Secure::start(3);
    let first = s.wait_formed().await;
    assert_eq!(s.c.nodes[first].name, "db-0", "ordinal 0 leads first");
    s.c.nodes[0].kill();
    s.c.nodes[0].start();
    let leader = s.wait_formed().await;
    assert_ne!(
        s.c.nodes[leader].name, "db-0",
        "a new leader took over while db-0 was away"
    );
    let info = s.info(0).await.expect("db-0 answers");
    assert_eq!(info["node"]["state"], "Follower", "{info}");
}
