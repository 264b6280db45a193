//! Limits against real sockets: on the REST port, clients that never finish their headers
//! (slowloris) are cut off while others are served, and the connection cap holds; on the
//! client gRPC port, the connection cap, the request bound, the stream limit and keepalive; and on
//! the peer port, a snapshot stream larger than `raft.max_snapshot_bytes`, and messages over
//! the peer message cap or built to amplify.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::env;
use crate::metrics::{samples, value};
use crate::util::{HTTP_PORT, Node, client as http, fresh_ip};

/// A connection that sent a request line and one header, and never the rest.
async fn slow_client(node: &Node) -> TcpStream {
    let mut s = TcpStream::connect((node.ip, HTTP_PORT)).await.expect("connect");
    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("partial headers");
    s
}

/// The node's Prometheus exposition.
pub(crate) async fn metrics_text(node: &Node) -> String {
    http()
        .get(format!("{}/metrics", node.http()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body")
}

/// True once the server closed `s` (EOF or reset) within `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_while_others_are_served_and_the_connection_cap_holds() {
    let mut node = Node::new(
        "solo",
        fresh_ip(),
        vec![],
        env(&[
            ("OPENRAFT_MEMORY__HTTP__HEADER_READ_TIMEOUT", "1s"),
            ("OPENRAFT_MEMORY__HTTP__MAX_CONNECTIONS", "40"),
        ]),
    );
    node.start();
    node.wait_ready().await;

    // Thirty slowloris connections: a normal client is still answered meanwhile.
    let mut slow = Vec::new();
    for _ in 0..30 {
        slow.push(slow_client(&node).await);
    }
    for _ in 0..5 {
        assert!(
            node.ready().await,
            "a normal client is served beside the slow ones"
        );
    }
    // Every slow connection is closed once its time for headers is up.
    for s in &mut slow {
        assert!(
            closed_within(s, Duration::from_secs(10)).await,
            "a slow client was cut off"
        );
    }

    // An idle keep-alive connection is closed after the same timeout (hyper starts it while
    // waiting for the next request's headers): http.header_read_timeout is the idle timeout.
    let mut idle = TcpStream::connect((node.ip, HTTP_PORT)).await.expect("connect");
    idle.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.expect("an answer");
    assert_eq!(&first, b"HTTP/1.1 200");
    assert!(
        closed_within(&mut idle, Duration::from_secs(10)).await,
        "an idle keep-alive connection was closed"
    );

    // At the cap, one more connection is closed at once; slots come back as slow ones go.
    let mut held = Vec::new();
    for _ in 0..40 {
        held.push(slow_client(&node).await);
    }
    let mut extra = TcpStream::connect((node.ip, HTTP_PORT)).await.expect("connect");
    let _ = extra.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        closed_within(&mut extra, Duration::from_millis(900)).await,
        "over the cap: closed before any header timeout"
    );
    for s in &mut held {
        assert!(closed_within(s, Duration::from_secs(10)).await);
    }
    assert!(
        node.ready().await,
        "served again once the slow connections are gone"
    );

    let text = metrics_text(&node).await;
    let s = samples(&text);
    let connections = value(&s, r#"openraft_memory_rejected_total{reason="connections"}"#);
    let timeouts = value(&s, r#"openraft_memory_rejected_total{reason="header_timeout"}"#);
    assert!(connections.is_some_and(|n| n >= 1.0), "{connections:?}");
    assert!(
        timeouts.is_some_and(|n| n >= 70.0),
        "every slow client counted: {timeouts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_streams_over_the_cap_or_damaged_are_refused_and_change_nothing() {
    use openraft_memory::pb::peer::raft_peer_client::RaftPeerClient;
    use openraft_memory::pb::peer::{self, snapshot_chunk::Kind};
    let mut node = Node::new(
        "solo",
        fresh_ip(),
        vec![],
        env(&[("OPENRAFT_MEMORY__RAFT__MAX_SNAPSHOT_BYTES", "1048576")]),
    );
    node.start();
    node.wait_ready().await;
    let r = http()
        .post(format!("{}/students", node.http()))
        .json(&crate::util::json_student(1, "Ada", 1.0))
        .send()
        .await
        .expect("write");
    assert_eq!(r.status(), 201);
    let id = node.cluster().await.expect("cluster")["node"]["id"]
        .as_u64()
        .expect("id");

    // A forged snapshot stream addressed to this node: a header, then `data` in chunks.
    let stream = |crc32: Option<u32>, data: Vec<Vec<u8>>| {
        let header = peer::SnapshotChunk {
            kind: Some(Kind::Header(peer::SnapshotHeader {
                vote: Some(peer::Vote {
                    leader_id: Some(peer::LeaderId { term: 99, node_id: 7 }),
                    committed: true,
                }),
                meta: Some(peer::SnapshotMeta {
                    last_log_id: None,
                    last_membership: Some(peer::StoredMembership {
                        log_id: None,
                        membership: Some(peer::Membership::default()),
                    }),
                    snapshot_id: "forged".into(),
                }),
                crc32,
            })),
        };
        let data = data.into_iter().map(|d| peer::SnapshotChunk {
            kind: Some(Kind::Data(d)),
        });
        let mut req = tonic::Request::new(futures::stream::iter(std::iter::once(header).chain(data)));
        req.metadata_mut()
            .insert("x-raft-target-node", id.to_string().parse().expect("ascii"));
        req
    };
    let mut peer_client = RaftPeerClient::connect(format!("http://{}:{}", node.ip, crate::util::RAFT_PORT))
        .await
        .expect("peer connect");
    // 2 MiB in 64 KiB chunks against a 1 MiB cap.
    let err = peer_client
        .install_snapshot(stream(Some(0), vec![vec![0u8; 64 << 10]; 32]))
        .await
        .expect_err("over the cap");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("raft.max_snapshot_bytes"), "{err:?}");

    // Under the cap but damaged: a checksum that does not match, or none at all, or data
    // that matches its checksum and is no snapshot (a field of wire type 7 does not exist).
    let garbage = vec![0xffu8; 100];
    let err = peer_client
        .install_snapshot(stream(Some(crc32fast::hash(&garbage) ^ 1), vec![garbage.clone()]))
        .await
        .expect_err("checksum mismatch");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("checksum"), "{err:?}");
    let err = peer_client
        .install_snapshot(stream(None, vec![garbage.clone()]))
        .await
        .expect_err("no checksum");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("crc32"), "{err:?}");
    let err = peer_client
        .install_snapshot(stream(Some(crc32fast::hash(&garbage)), vec![garbage]))
        .await
        .expect_err("undecodable");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("does not decode"), "{err:?}");

    assert!(node.ready().await, "the node keeps serving");
    let body: serde_json::Value = http()
        .get(format!("{}/students/1", node.http()))
        .send()
        .await
        .expect("read")
        .json()
        .await
        .expect("json");
    assert_eq!(body["name"], "Ada", "the record is intact");
    let text = metrics_text(&node).await;
    let n = value(
        &samples(&text),
        r#"openraft_memory_rejected_total{reason="snapshot_size"}"#,
    );
    assert_eq!(n, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_port_caps_connections_and_bounds_a_request() {
    // Ordinal 0 with a peer that never answers never initialises: a write waits for a
    // leader, longer than grpc.request_timeout.
    let mut node = Node::new(
        "db-0",
        fresh_ip(),
        vec![format!("{}:{}", fresh_ip(), crate::util::RAFT_PORT)],
        env(&[
            ("OPENRAFT_MEMORY__GRPC__REQUEST_TIMEOUT", "300ms"),
            ("OPENRAFT_MEMORY__GRPC__MAX_CONNECTIONS", "3"),
            ("OPENRAFT_MEMORY__RAFT__WRITE_TIMEOUT", "5s"),
        ]),
    );
    node.start();
    crate::util::wait_for("the REST port answers", Duration::from_secs(20), || async {
        let r = http().get(format!("{}/livez", node.http())).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(node.grpc().await);
    }
    use openraft_memory::pb::client::{CreateStudentRequest, Student};
    let started = std::time::Instant::now();
    let err = clients[0]
        .create_student(CreateStudentRequest {
            student: Some(Student {
                id: 1,
                name: "Ada".into(),
                score: 1.0,
                ..Default::default()
            }),
        })
        .await
        .expect_err("no leader");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    assert!(
        err.message().contains("grpc.request_timeout"),
        "the request bound fired: {err}"
    );
    eprintln!("bounded after {:?}", started.elapsed());

    // A fourth connection is closed at once; the three keep working.
    let fourth =
        tonic::transport::Channel::from_shared(format!("http://{}:{}", node.ip, crate::util::GRPC_PORT))
            .expect("uri")
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await;
    if let Ok(channel) = fourth {
        let mut c = openraft_memory::pb::client::student_service_client::StudentServiceClient::new(channel);
        let r = c
            .get_student(openraft_memory::pb::client::GetStudentRequest {
                id: 1,
                consistency: openraft_memory::pb::client::Consistency::Local as i32,
            })
            .await;
        assert!(r.is_err(), "a connection over the cap was served");
    }
    for c in &mut clients {
        let r = c
            .get_student(openraft_memory::pb::client::GetStudentRequest {
                id: 1,
                consistency: openraft_memory::pb::client::Consistency::Local as i32,
            })
            .await;
        assert!(
            r.is_ok() || r.as_ref().is_err_and(|e| e.code() == tonic::Code::NotFound),
            "{r:?}"
        );
    }
    let text = metrics_text(&node).await;
    let s = samples(&text);
    let refused = value(&s, r#"openraft_memory_rejected_total{reason="grpc_connections"}"#);
    assert!(refused.is_some_and(|n| n >= 1.0), "{refused:?}");
}

/// Peak resident memory of a process (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}

/// The peer message cap follows `raft.max_batch_writes` (here 16 writes: the 2 MiB floor).
/// A message over it is refused before it is read; the most amplifying message under it
/// (nothing but empty entries, ~70 bytes of memory per byte) costs what `tests/fuzz.rs`
/// measured and no more, is refused for its content, and the node serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_messages_over_the_cap_are_refused_unread_and_amplifying_ones_cost_a_bounded_amount() {
    use openraft_memory::pb::peer;
    use openraft_memory::pb::peer::raft_peer_client::RaftPeerClient;
    let mut node = Node::new(
        "solo",
        fresh_ip(),
        vec![],
        env(&[("OPENRAFT_MEMORY__RAFT__MAX_BATCH_WRITES", "16")]),
    );
    node.start();
    node.wait_ready().await;
    let id = node.cluster().await.expect("cluster")["node"]["id"]
        .as_u64()
        .expect("id");
    let pid = node.pid().expect("pid");
    let limit: usize = 2 << 20;
    let mut c = RaftPeerClient::connect(format!("http://{}:{}", node.ip, crate::util::RAFT_PORT))
        .await
        .expect("peer connect")
        .max_encoding_message_size(64 << 20);
    // Empty entries take 2 bytes each on the wire.
    let empties = |n: usize| {
        let mut req = tonic::Request::new(peer::AppendEntriesRequest {
            vote: Some(peer::Vote {
                leader_id: Some(peer::LeaderId { term: 1, node_id: 7 }),
                committed: true,
            }),
            prev_log_id: None,
            entries: vec![peer::Entry::default(); n],
            leader_commit: None,
        });
        req.metadata_mut()
            .insert("x-raft-target-node", id.to_string().parse().expect("ascii"));
        req
    };
    let before = peak_rss(pid);
    let err = c.append_entries(empties(limit)).await.expect_err("over the cap");
    // tonic's answer for a message over the decoding limit.
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
    assert!(err.message().contains("too large"), "{err:?}");
    let unread = peak_rss(pid);
    let err = c
        .append_entries(empties(limit / 2 - 4096))
        .await
        .expect_err("empty entries are invalid");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let after = peak_rss(pid);
    eprintln!(
        "peak RSS: {} MiB at start, {} MiB after a {} MiB message over the cap, {} MiB after a {} MiB amplifying one",
        before >> 20,
        unread >> 20,
        (2 * limit) >> 20,
        after >> 20,
        limit >> 20
    );
    assert!(
        unread - before < 16 << 20,
        "a refused message grew the peak by {} MiB",
        (unread - before) >> 20
    );
    assert!(
        after - before <= 80 * limit as u64,
        "an amplifying message grew the peak by {} MiB",
        (after - before) >> 20
    );
    assert!(node.ready().await, "the node keeps serving");
}

/// What a raw HTTP/2 client that never answers anything saw on the client gRPC port.
#[derive(Debug, Default)]
struct Http2Seen {
    /// SETTINGS_MAX_CONCURRENT_STREAMS from the server's SETTINGS frame.
    max_streams: Option<u32>,
    /// Whether the server sent a PING (not an ACK).
    pinged: bool,
    /// When the server closed the connection, from the connection's start.
    closed_after: Option<Duration>,
}

/// Opens an HTTP/2 connection (preface and empty SETTINGS), then only reads frames until
/// the server closes it or `limit` passes; answers nothing, not even PINGs.
async fn silent_http2_client(node: &Node, limit: Duration) -> Http2Seen {
    let started = std::time::Instant::now();
    let mut s = TcpStream::connect((node.ip, crate::util::GRPC_PORT))
        .await
        .expect("connect");
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("preface");
    let mut seen = Http2Seen::default();
    let read = async {
        loop {
            let mut header = [0u8; 9];
            if s.read_exact(&mut header).await.is_err() {
                return;
            }
            let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let mut payload = vec![0u8; len];
            if s.read_exact(&mut payload).await.is_err() {
                return;
            }
            match (header[3], header[4] & 1) {
                (0x4, 0) => {
                    for setting in payload.chunks_exact(6) {
                        if u16::from_be_bytes([setting[0], setting[1]]) == 0x3 {
                            seen.max_streams = Some(u32::from_be_bytes([
                                setting[2], setting[3], setting[4], setting[5],
                            ]));
                        }
                    }
                }
                (0x6, 0) => seen.pinged = true,
                _ => {}
            }
        }
    };
    if tokio::time::timeout(limit, read).await.is_ok() {
        seen.closed_after = Some(started.elapsed());
    }
    seen
}

/// The client gRPC port tells each connection `grpc.max_concurrent_streams`, pings a
/// connection every `grpc.keepalive_interval`, and closes one that does not answer within
/// `grpc.keepalive_timeout` (a client gone without a FIN must not hold a connection slot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_port_limits_streams_and_drops_connections_that_do_not_answer_pings() {
    let mut node = Node::new(
        "solo",
        fresh_ip(),
        vec![],
        env(&[
            ("OPENRAFT_MEMORY__GRPC__MAX_CONCURRENT_STREAMS", "7"),
            ("OPENRAFT_MEMORY__GRPC__KEEPALIVE_INTERVAL", "500ms"),
            ("OPENRAFT_MEMORY__GRPC__KEEPALIVE_TIMEOUT", "500ms"),
        ]),
    );
    node.start();
    node.wait_ready().await;
    let seen = silent_http2_client(&node, Duration::from_secs(10)).await;
    eprintln!("{seen:?}");
    assert_eq!(seen.max_streams, Some(7), "{seen:?}");
    assert!(seen.pinged, "the server pinged the idle connection: {seen:?}");
    let closed = seen.closed_after.expect("the silent connection was closed");
    assert!(
        closed >= Duration::from_millis(900),
        "not before a ping went unanswered: {closed:?}"
    );
}
