//! The Prometheus exposition of a real cluster: every metric family present, with values
//! that agree with what the test did.

use std::time::Duration;

use openraft_memory::pb::client;

use super::post;
use crate::util::{Cluster, Node, client as http, json_student, wait_for};

/// Parses Prometheus text into (name{labels}, value) pairs.
pub(crate) fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

pub(crate) fn value(s: &[(String, f64)], key: &str) -> Option<f64> {
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
