//! Limits on the REST port against real sockets: clients that never finish their headers
//! (slowloris) are cut off while others are served, and the connection cap holds.

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

    let text = http()
        .get(format!("{}/metrics", node.http()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    let s = samples(&text);
    let connections = value(&s, r#"openraft_memory_rejected_total{reason="connections"}"#);
    let timeouts = value(&s, r#"openraft_memory_rejected_total{reason="header_timeout"}"#);
    assert!(connections.is_some_and(|n| n >= 1.0), "{connections:?}");
    assert!(
        timeouts.is_some_and(|n| n >= 70.0),
        "every slow client counted: {timeouts:?}"
    );
}
