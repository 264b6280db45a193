//! `openraft-memory ctl` end to end against a real 3-node cluster: every subcommand, its
//! output in both formats and its exit codes, including not found, conflicts (exists, a
//! stale `--if-revision`), an unreachable first endpoint, no leader, and a backup saved
//! from one cluster and restored into a new one.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::util::{Cluster, Node, fresh_ip, wait_for};

/// Runs `ctl` with `args` against `endpoints`: (exit code, stdout, stderr).
fn ctl(endpoints: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_openraft-memory"))
        .arg("ctl")
        .args(args)
        .env("OPENRAFT_MEMORY_ENDPOINTS", endpoints)
        .env_remove("OPENRAFT_MEMORY_TOKEN")
        .output()
        .expect("run ctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(endpoints: &str, args: &[&str]) -> String {
    let (code, out, err) = ctl(endpoints, args);
    assert_eq!(code, 0, "ctl {args:?}: {err}");
    out
}

fn json(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ctl_command_works_against_a_cluster_and_fails_with_the_documented_codes() {
    let mut c = Cluster::new(3, vec![]);
    c.start_all();
    let leader = c.wait_stable(&[0, 1, 2], 3).await;
    // The first endpoint is a port nothing listens on: every command moves to the next.
    let dead = format!("http://{}:1", fresh_ip());
    let eps = format!(
        "{dead},{}",
        c.nodes.iter().map(Node::http).collect::<Vec<_>>().join(",")
    );
    let eps = eps.as_str();

    // Records: create, conflict, get, partial update, stale revision, list, delete.
    let out = ok(
        eps,
        &[
            "student", "create", "--id", "1", "--name", "Ada", "--score", "91.5",
        ],
    );
    assert!(
        out.lines().next().is_some_and(|h| h.starts_with("ID")),
        "a table: {out}"
    );
    assert!(out.contains("Ada") && out.contains("91.5"), "{out}");
    let (code, _, err) = ctl(
        eps,
        &["student", "create", "--id", "1", "--name", "Ada", "--score", "1"],
    );
    assert_eq!(code, 4, "exists: {err}");
    assert!(err.contains("exists already"), "{err}");
    let rec = json(&ok(eps, &["student", "get", "1", "-o", "json"]));
    assert_eq!(
        (rec["name"].as_str(), rec["score"].as_f64()),
        (Some("Ada"), Some(91.5))
    );
    let rev = rec["revision"].as_u64().expect("revision");
    let updated = json(&ok(
        eps,
        &["student", "update", "1", "--score", "95", "-o", "json"],
    ));
    assert_eq!(
        (updated["name"].as_str(), updated["score"].as_f64()),
        (Some("Ada"), Some(95.0)),
        "the name kept"
    );
    assert!(updated["revision"].as_u64() > Some(rev));
    let stale = rev.to_string();
    let (code, _, err) = ctl(
        eps,
        &[
            "student",
            "update",
            "1",
            "--name",
            "X",
            "--score",
            "1",
            "--if-revision",
            &stale,
        ],
    );
    assert_eq!(code, 4, "stale revision: {err}");
    assert!(err.contains("revision"), "{err}");
    let (code, _, err) = ctl(eps, &["student", "delete", "1", "--if-revision", &stale]);
    assert_eq!(code, 4, "{err}");
    let (code, _, err) = ctl(eps, &["student", "get", "404"]);
    assert_eq!(code, 3, "not found: {err}");
    let (code, _, err) = ctl(
        eps,
        &["student", "create", "--id", "2", "--name", " ", "--score", "1"],
    );
    assert_eq!(code, 2, "invalid field: {err}");
    assert!(err.contains("name"), "{err}");
    for id in 2..=5 {
        ok(
            eps,
            &[
                "student",
                "create",
                "--id",
                &id.to_string(),
                "--name",
                "s",
                "--score",
                "1",
            ],
        );
    }
    let page = json(&ok(
        eps,
        &["student", "list", "--limit", "2", "--all", "-o", "json"],
    ));
    let ids: Vec<i64> = page["students"]
        .as_array()
        .expect("students")
        .iter()
        .filter_map(|s| s["id"].as_i64())
        .collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 5], "--all follows every page");
    assert!(page["revision"].as_u64().is_some());
    let table = ok(eps, &["student", "list", "--limit", "2"]);
    assert_eq!(table.lines().count(), 3, "a header and one page: {table}");
    ok(eps, &["student", "delete", "5"]);
    let (code, _, _) = ctl(eps, &["student", "delete", "5"]);
    assert_eq!(code, 3);

    // Cluster.
    let status = ok(eps, &["cluster", "status"]);
    assert!(status.contains(&c.nodes[leader].name), "{status}");
    let members = json(&ok(eps, &["cluster", "members", "-o", "json"]));
    let members = members.as_array().expect("members");
    assert_eq!(members.len(), 3);
    assert_eq!(members.iter().filter(|m| m["leader"] == true).count(), 1);
    let l = json(&ok(eps, &["cluster", "leader", "-o", "json"]));
    assert_eq!(l["name"].as_str(), Some(c.nodes[leader].name.as_str()));
    let (code, _, err) = ctl(eps, &["cluster", "remove", "12345"]);
    assert_eq!(code, 3, "unknown member: {err}");

    // Watch: the changes so far, in revision order, as JSON lines.
    let out = ok(eps, &["watch", "--from", "1", "--count", "7", "-o", "json"]);
    let events: Vec<Value> = out.lines().map(json).collect();
    assert_eq!(events.len(), 7, "{out}");
    assert!(
        events
            .windows(2)
            .all(|w| w[0]["revision"].as_u64() <= w[1]["revision"].as_u64())
    );
    assert_eq!(
        (events[0]["type"].as_str(), events[0]["record"]["name"].as_str()),
        (Some("put"), Some("Ada"))
    );

    // Backup from this cluster, restored into a new one.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("backup.bin");
    let file_s = file.to_str().expect("path");
    let out = ok(eps, &["backup", "save", file_s]);
    assert!(out.contains("saved 4 records"), "{out}");
    let mut fresh = Node::new("fresh", fresh_ip(), vec![], vec![]);
    fresh.start();
    fresh.wait_ready().await;
    let out = ok(&fresh.http(), &["backup", "restore", file_s]);
    assert!(out.contains("restored 4 records"), "{out}");
    let restored = json(&ok(&fresh.http(), &["student", "list", "-o", "json"]));
    let names = |v: &Value| -> Vec<(i64, String)> {
        v.as_array()
            .expect("students")
            .iter()
            .map(|s| {
                (
                    s["id"].as_i64().unwrap_or(0),
                    s["name"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    };
    let mut expected = names(&page["students"]);
    expected.retain(|(id, _)| *id != 5);
    assert_eq!(names(&restored["students"]), expected);
    let (code, _, err) = ctl(&fresh.http(), &["backup", "restore", file_s]);
    assert_eq!(code, 2, "a restore into a cluster with records is refused: {err}");
    std::fs::write(dir.path().join("bad.bin"), b"not a backup").expect("write");
    let (code, _, err) = ctl(
        &fresh.http(),
        &[
            "backup",
            "restore",
            dir.path().join("bad.bin").to_str().expect("path"),
        ],
    );
    assert_eq!(code, 1, "{err}");

    // The same through object storage (a directory target): save, list, restore the newest.
    let target = format!("file://{}", dir.path().join("objects").display());
    let out = ok(eps, &["backup", "save", "--target", &target]);
    assert!(out.contains("uploaded") && out.contains(".snapshot"), "{out}");
    let listed = json(&ok(eps, &["backup", "list", "--target", &target, "-o", "json"]));
    let listed = listed.as_array().expect("a list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0]["revision"].as_u64() > Some(0) && listed[0]["bytes"].as_u64() > Some(0));
    let mut fresh2 = Node::new("fresh2", fresh_ip(), vec![], vec![]);
    fresh2.start();
    fresh2.wait_ready().await;
    let out = ok(&fresh2.http(), &["backup", "restore", "--target", &target]);
    assert!(out.contains("restored 4 records"), "{out}");
    let restored = json(&ok(&fresh2.http(), &["student", "list", "-o", "json"]));
    assert_eq!(names(&restored["students"]), expected);
    let empty = format!("file://{}", dir.path().join("nothing-here").display());
    let (code, _, err) = ctl(&fresh2.http(), &["backup", "restore", "--target", &empty]);
    assert_eq!(code, 3, "no backups under the target is not found: {err}");
    let (code, _, err) = ctl(eps, &["backup", "list", "--target", "ftp://nowhere/x"]);
    assert_eq!(code, 2, "a bad target is a usage error: {err}");

    // No leader: two of three nodes gone; the survivor refuses, the others are unreachable.
    let survivor = (leader + 1) % 3;
    for i in 0..3 {
        if i != survivor {
            c.nodes[i].kill();
        }
    }
    // A write fails as unavailable (exit 5) once the survivor notices, never as success.
    wait_for("a write to fail with exit 5", Duration::from_secs(30), || async {
        let (code, _, err) = ctl(
            eps,
            &[
                "--timeout",
                "5s",
                "student",
                "create",
                "--id",
                "9",
                "--name",
                "n",
                "--score",
                "1",
            ],
        );
        assert_ne!(code, 0, "a write without a quorum succeeded: {err}");
        (code == 5 && (err.contains("leader") || err.contains("reached") || err.contains("commit")))
            .then_some(())
    })
    .await;
    let (code, _, _) = ctl(&dead, &["cluster", "status"]);
    assert_eq!(code, 5, "unreachable");
    // Usage errors are 2, with the help's examples a flag away.
    let (code, _, _) = ctl(eps, &["student", "get"]);
    assert_eq!(code, 2);
    let help = ok(eps, &["--help"]);
    assert!(
        help.contains("Examples:") && help.contains("Exit codes:"),
        "{help}"
    );
}
