//! Kubernetes lifecycle scenarios on the StatefulSet harness: bootstrap in any start order,
//! pod replacement, rolling restart, scale up and down, DNS outage, leader SIGTERM.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::sts::StatefulSet;
use crate::util::{client as http, json_student, wait_for};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A client writing new records to the given pods in turn until stopped (or 60 s pass),
/// remembering which writes were acknowledged and how many failed.
struct Writer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(Vec<i64>, Vec<String>)>,
}

impl Writer {
    fn start(urls: Arc<Mutex<Vec<String>>>, first_id: i64) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            openraft_memory::security::tls::install_default_provider();
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(8))
                .build()
                .expect("client");
            let (mut acked, mut errors) = (Vec::new(), Vec::new());
            let started = Instant::now();
            let mut id = first_id;
            while !flag.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(60) {
                let targets = urls.lock().expect("urls").clone();
                let url = &targets[(id as usize) % targets.len()];
                id += 1;
                match client
                    .post(format!("{url}/students"))
                    .json(&json_student(id, "w", 1.0))
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 201 => acked.push(id),
                    Ok(r) => errors.push(format!("{url}: {}", r.status())),
                    Err(e) => errors.push(format!("{url}: {e}")),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (acked, errors)
        });
        Writer { stop, task }
    }

    async fn finish(self) -> (Vec<i64>, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("writer")
    }
}

/// Every acknowledged id is readable (linearizably) through `url`.
async fn assert_all_present(url: &str, acked: &[i64]) {
    let mut ids = Vec::new();
    let mut after: Option<i64> = None;
    loop {
        let page_url = match after {
            Some(a) => format!("{url}/students?limit=1000&after={a}"),
            None => format!("{url}/students?limit=1000"),
        };
        let page: Value = http()
            .get(page_url)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        ids.extend(
            page["students"]
                .as_array()
                .expect("students")
                .iter()
                .filter_map(|s| s["id"].as_i64()),
        );
        match page["next_after"].as_i64() {
            Some(a) => after = Some(a),
            None => break,
        }
    }
    let missing: Vec<&i64> = acked.iter().filter(|id| !ids.contains(id)).collect();
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
}

async fn forms_one_cluster(order: &[usize], gap: Duration, dns_delay: Option<Duration>) {
    let mut sts = StatefulSet::new(3, vec![]);
    if dns_delay.is_none() {
        sts.publish(&[0, 1, 2]);
    } else {
        sts.publish(&[]);
    }
    for &i in order {
        sts.pods[i].start();
        tokio::time::sleep(gap).await;
    }
    if let Some(d) = dns_delay {
        tokio::time::sleep(d).await;
        sts.publish(&[0, 1, 2]);
    }
    sts.wait_members(&[0, 1, 2]).await;
    // Exactly one cluster: only ordinal 0 ever initialised.
    assert_eq!(sts.log_count(0, "initialised a new cluster"), 1);
    assert_eq!(sts.log_count(1, "initialised a new cluster"), 0);
    assert_eq!(sts.log_count(2, "initialised a new cluster"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_parallel_start_forms_one_cluster() {
    forms_one_cluster(&[0, 1, 2], Duration::ZERO, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_reverse_order_start_forms_one_cluster() {
    forms_one_cluster(&[2, 1, 0], Duration::from_millis(700), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_pod0_last_forms_one_cluster() {
    forms_one_cluster(&[1, 2, 0], Duration::from_millis(1500), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_late_dns_records_form_one_cluster() {
    forms_one_cluster(&[0, 1, 2], Duration::ZERO, Some(Duration::from_secs(3))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_pod0_restarted_empty_on_a_new_ip_joins_the_existing_cluster() {
    let mut sts = StatefulSet::new(3, vec![]);
    sts.publish(&[0, 1, 2]);
    for p in &mut sts.pods {
        p.start();
    }
    sts.wait_members(&[0, 1, 2]).await;
    for id in 1..=20 {
        let r = http()
            .post(format!("{}/students", sts.pods[(id % 3) as usize].http()))
            .json(&json_student(id, "r", 2.0))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 201);
    }
    let old_id = sts.pods[0].cluster().await.expect("cluster")["node"]["id"].as_u64();
    sts.pods[0].kill();
    // The replacement pod gets a new IP, as on Kubernetes: peers must re-resolve its name.
    sts.pods[0].ip = crate::util::fresh_ip();
    sts.publish(&[0, 1, 2]);
    sts.pods[0].start();
    sts.wait_members(&[0, 1, 2]).await;
    let info = sts.pods[0].cluster().await.expect("cluster");
    assert_ne!(info["node"]["id"].as_u64(), old_id);
    let ids = crate::util::voter_ids(&info);
    assert!(
        !ids.contains(&old_id.expect("old id")),
        "stale id still a member: {ids:?}"
    );
    assert_eq!(
        sts.log_count(0, "initialised a new cluster"),
        1,
        "the restart must join, not initialise"
    );
    assert_all_present(&sts.pods[0].http(), &(1..=20).collect::<Vec<_>>()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_rolling_restart_under_writes_loses_nothing() {
    let mut sts = StatefulSet::new(3, vec![]);
    sts.publish(&[0, 1, 2]);
    for p in &mut sts.pods {
        p.start();
    }
    sts.wait_members(&[0, 1, 2]).await;
    let urls = Arc::new(Mutex::new(sts.pods.iter().map(|p| p.http()).collect::<Vec<_>>()));
    let writer = Writer::start(urls.clone(), 0);
    // Like the StatefulSet controller: highest ordinal first, each pod ready before the next.
    for i in [2, 1, 0] {
        let others: Vec<String> = (0..3).filter(|j| *j != i).map(|j| sts.pods[j].http()).collect();
        *urls.lock().expect("urls") = others; // the Service stops routing to a terminating pod
        sts.pods[i].signal("TERM");
        assert_eq!(sts.pods[i].wait_exit(Duration::from_secs(25)).await, Some(0));
        sts.pods[i].start();
        sts.wait_members(&[0, 1, 2]).await;
        *urls.lock().expect("urls") = sts.pods.iter().map(|p| p.http()).collect();
    }
    let (acked, errors) = writer.finish().await;
    eprintln!(
        "rolling restart: {} writes acknowledged, {} failed: {errors:?}",
        acked.len(),
        errors.len()
    );
    assert!(acked.len() >= 10, "the writer made progress");
    for p in &sts.pods {
        assert_all_present(&p.http(), &acked).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_scale_up_and_down_follows_dns_after_the_grace_period() {
    let grace = Duration::from_secs(3);
    let mut sts = StatefulSet::new(
        3,
        env(&[
            ("OPENRAFT_MEMORY__CLUSTER__SCALE_DOWN_GRACE", "3s"),
            ("OPENRAFT_MEMORY__CLUSTER__RECONCILE_INTERVAL", "300ms"),
        ]),
    );
    sts.publish(&[0, 1, 2]);
    for p in &mut sts.pods {
        p.start();
    }
    sts.wait_members(&[0, 1, 2]).await;

    // Scale up: two new ordinals join and become voters without any manual step.
    sts.add_pod();
    sts.add_pod();
    sts.publish(&[0, 1, 2, 3, 4]);
    sts.pods[3].start();
    sts.pods[4].start();
    sts.wait_members(&[0, 1, 2, 3, 4]).await;

    // A pod that restarts quickly (absent from DNS for less than the grace period) stays.
    sts.publish(&[0, 1, 2, 3]);
    sts.pods[4].kill();
    let gone_at = Instant::now();
    tokio::time::sleep(grace / 3).await;
    sts.publish(&[0, 1, 2, 3, 4]);
    sts.pods[4].start();
    let names = sts.voter_names(0).await.expect("voters");
    assert!(
        gone_at.elapsed() < grace && names.contains(&"db-4".to_string()),
        "{names:?}"
    );
    sts.wait_members(&[0, 1, 2, 3, 4]).await;

    // Scale down: records removed, pods gone; after the grace period the leader removes
    // them one at a time.
    sts.publish(&[0, 1, 2]);
    sts.pods[3].kill();
    sts.pods[4].kill();
    let started = Instant::now();
    sts.wait_members(&[0, 1, 2]).await;
    assert!(
        started.elapsed() >= grace,
        "removed before the grace period: {:?}",
        started.elapsed()
    );

    // Never below the minimum (3): a third pod gone for longer than the grace period stays a voter.
    sts.publish(&[0, 1]);
    sts.pods[2].kill();
    tokio::time::sleep(grace * 2).await;
    let names = sts.voter_names(0).await.expect("voters");
    assert_eq!(names, vec!["db-0", "db-1", "db-2"]);
    let leader_log: usize = (0..2)
        .map(|i| sts.log_count(i, "would go below cluster.min_voters"))
        .sum();
    assert!(leader_log >= 1, "the leader says why it keeps the member");

    // The explicit admin call removes a member at once, below the automatic floor.
    let id = {
        let info = sts.pods[0].cluster().await.expect("cluster");
        info["voters"]
            .as_array()
            .expect("voters")
            .iter()
            .find(|v| v["name"] == "db-2")
            .and_then(|v| v["id"].as_u64())
            .expect("db-2 id")
    };
    let r = http()
        .delete(format!("{}/cluster/members/{id}", sts.pods[1].http()))
        .send()
        .await
        .expect("delete member");
    assert_eq!(r.status(), 204);
    assert_eq!(sts.voter_names(0).await.expect("voters"), vec!["db-0", "db-1"]);
    let r = http()
        .delete(format!("{}/cluster/members/{id}", sts.pods[1].http()))
        .send()
        .await
        .expect("delete member");
    assert_eq!(r.status(), 404, "removing an unknown member is a clear 404");
    let body: Value = r.json().await.expect("problem");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&id.to_string())),
        "the problem names the member: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_dns_unreachable_at_start_then_forms() {
    let mut sts = StatefulSet::new(3, vec![]);
    for p in &mut sts.pods {
        p.start();
    }
    // No DNS server yet: the pods keep retrying and say so, without flooding the log.
    wait_for(
        "a discovery failure is logged",
        Duration::from_secs(10),
        || async {
            (0..3)
                .all(|i| sts.log_count(i, "peer discovery failed") >= 1)
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in 0..3 {
        let n = sts.log_count(i, "peer discovery failed");
        assert!(
            n <= 2,
            "discovery failures are rate-limited, got {n} lines in ~4s on db-{i}"
        );
        assert!(!sts.pods[i].ready().await);
    }
    sts.publish(&[0, 1, 2]);
    sts.wait_members(&[0, 1, 2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_sigterm_to_the_leader_under_load_moves_leadership() {
    let mut sts = StatefulSet::new(3, vec![]);
    sts.publish(&[0, 1, 2]);
    for p in &mut sts.pods {
        p.start();
    }
    let leader = sts.wait_members(&[0, 1, 2]).await;
    let urls = Arc::new(Mutex::new(sts.pods.iter().map(|p| p.http()).collect::<Vec<_>>()));
    let writer = Writer::start(urls.clone(), 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent_at = Instant::now();
    sts.pods[leader].signal("TERM");
    let code = sts.pods[leader].wait_exit(Duration::from_secs(25)).await;
    let took = sent_at.elapsed();
    *urls.lock().expect("urls") = (0..3)
        .filter(|j| *j != leader)
        .map(|j| sts.pods[j].http())
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acked, errors) = writer.finish().await;
    eprintln!(
        "leader SIGTERM: exit {code:?} after {took:?}; {} acked, errors: {errors:?}",
        acked.len()
    );
    assert_eq!(code, Some(0));
    assert!(
        took < Duration::from_secs(20),
        "exits within the shutdown deadline"
    );
    assert!(sts.log_count(leader, "leadership moved") == 1);
    // Only writes that hit the closed listener itself may fail.
    assert!(
        errors.len() <= 5,
        "at most a handful of retryable errors: {errors:?}"
    );
    let survivor = (leader + 1) % 3;
    assert_all_present(&sts.pods[survivor].http(), &acked).await;
}
