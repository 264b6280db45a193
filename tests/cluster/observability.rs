//! Observability against real parts: an OTLP trace receiver (a tonic server implementing
//! the collector's TraceService) and a real Prometheus server scraping a cluster and
//! evaluating every PromQL expression of the dashboard and the alert rules.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use serde_json::Value;
use tokio_stream::wrappers::TcpListenerStream;

use crate::util::{Cluster, Node, client as http, fresh_ip, json_student, wait_for};

/// One received span: (service name, span name, trace id).
type ReceivedSpan = (String, String, Vec<u8>);

/// Spans received by the in-test collector.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().expect("spans");
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .map(|v| format!("{:?}", v.value))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    spans.push((service.clone(), span.name, span.trace_id));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn env(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_sent_to_a_follower_is_one_trace_across_both_nodes() {
    let listener = tokio::net::TcpListener::bind((fresh_ip(), 4317))
        .await
        .expect("bind otlp");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let receiver = Receiver::default();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(receiver.clone()))
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::spawn(server);

    let mut c = Cluster::new(3, vec![]);
    for (i, n) in c.nodes.iter_mut().enumerate() {
        n.extra_env = env(&[
            ("OPENRAFT_MEMORY__TRACING__OTLP_ENDPOINT", endpoint.clone()),
            ("OPENRAFT_MEMORY__TRACING__SERVICE_NAME", format!("node-{i}")),
        ]);
    }
    c.start_all();
    let leader = c.wait_stable(&[0, 1, 2], 3).await;
    let follower = (leader + 1) % 3;
    let r = http()
        .post(format!("{}/students", c.nodes[follower].http()))
        .json(&json_student(42, "Traced", 77.0))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 201);

    let (leader_svc, follower_svc) = (format!("node-{leader}"), format!("node-{follower}"));
    // The batch exporter flushes every few seconds.
    let trace = wait_for(
        "spans of one trace from both nodes",
        Duration::from_secs(20),
        || {
            let spans = receiver.spans.lock().expect("spans").clone();
            let (leader_svc, follower_svc) = (leader_svc.clone(), follower_svc.clone());
            async move {
                let mut by_trace: HashMap<Vec<u8>, HashSet<(String, String)>> = HashMap::new();
                for (svc, name, trace) in spans {
                    by_trace.entry(trace).or_default().insert((svc, name));
                }
                by_trace.into_values().find(|s| {
                    s.iter()
                        .any(|(svc, n)| svc.contains(&follower_svc) && n == "forward_write")
                        && s.iter()
                            .any(|(svc, n)| svc.contains(&leader_svc) && n == "forwarded_client_write")
                })
            }
        },
    )
    .await;
    let names: HashSet<&str> = trace.iter().map(|(_, n)| n.as_str()).collect();
    assert!(
        names.contains("create_student"),
        "the REST handler span is the root: {names:?}"
    );
    assert!(
        names.contains("raft_client_write"),
        "the leader's Raft write is in the trace: {names:?}"
    );
}

/// Every PromQL expression of the dashboard, with Grafana's variables filled in.
fn dashboard_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/dashboards/openraft-memory.json"
    ))
    .expect("dashboard");
    let dash: Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("expr");
            let expr = expr
                .replace("$__rate_interval", "20s")
                .replace("$job", ".*")
                .replace("$instance", ".*");
            out.push((panel["title"].as_str().unwrap_or_default().to_owned(), expr));
        }
    }
    assert!(out.len() >= 20, "dashboard has its panels");
    out
}

fn alert_exprs() -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/alerts.yml");
    let text = std::fs::read_to_string(path).expect("alerts");
    // The rules file is small and regular: an `expr:` line, possibly folded over the
    // following more-indented lines.
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut alert = String::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        if let Some(name) = line.strip_prefix("- alert: ") {
            alert = name.to_owned();
        }
        if let Some(rest) = line.strip_prefix("expr:") {
            let mut expr = rest.trim().trim_start_matches(">-").trim().to_owned();
            let indent = lines[i].len() - lines[i].trim_start().len();
            while i + 1 < lines.len() && lines[i + 1].len() - lines[i + 1].trim_start().len() > indent {
                i += 1;
                expr.push(' ');
                expr.push_str(lines[i].trim());
            }
            out.push((alert.clone(), expr.trim().to_owned()));
        }
        i += 1;
    }
    let alerts = lines.iter().filter(|l| l.trim().starts_with("- alert: ")).count();
    assert!(alerts >= 9, "the rules file lost alerts: {alerts}");
    assert_eq!(out.len(), alerts, "every alert has an expression: {out:?}");
    out
}

struct Prometheus {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_prometheus(targets: &[String]) -> Prometheus {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/alerts.yml");
    let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\nscrape_configs:\n  - job_name: openraft-memory\n    static_configs:\n      - targets: [{}]\n",
        targets.join(", ")
    );
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, config).expect("config");
    let addr = format!("{}:9090", fresh_ip());
    let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
    let child = std::process::Command::new("prometheus")
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("prometheus must be installed (.ci/run installs Debian's package)");
    Prometheus {
        child,
        url: format!("http://{addr}"),
        _dir: dir,
    }
}

async fn query(prom: &Prometheus, expr: &str) -> Option<Value> {
    let r = http()
        .get(format!("{}/api/v1/query", prom.url))
        .query(&[("query", expr)])
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_cluster_and_every_dashboard_and_alert_query_works() {
    // Scheduled backups to a directory, so the backup panels have data too.
    let backups = tempfile::tempdir().expect("tempdir");
    let mut c = Cluster::new(
        3,
        super::env(&[
            (
                "OPENRAFT_MEMORY__BACKUP__TARGET",
                &format!("file://{}", backups.path().display()),
            ),
            ("OPENRAFT_MEMORY__BACKUP__INTERVAL", "2s"),
            ("OPENRAFT_MEMORY__BACKUP__KEEP", "2"),
        ]),
    );
    c.start_all();
    let leader = c.wait_stable(&[0, 1, 2], 3).await;
    let targets: Vec<String> = c
        .nodes
        .iter()
        .map(|n| n.http().trim_start_matches("http://").to_owned())
        .collect();
    let prom = start_prometheus(&targets);

    // Keep traffic flowing across several scrapes so rate() windows have two samples.
    let mut round = 1;
    let dash = dashboard_exprs();
    let missing = wait_for(
        "every dashboard query returns data",
        Duration::from_secs(60),
        || {
            round += 1;
            let (c, dash, prom) = (&c, &dash, &prom);
            let fut = workload(&c.nodes, round);
            async move {
                fut.await;
                let mut missing = Vec::new();
                for (title, expr) in dash {
                    let v = query(prom, expr).await?;
                    assert_eq!(
                        v["status"], "success",
                        "dashboard panel `{title}`: `{expr}` is invalid: {v}"
                    );
                    if v["data"]["result"].as_array().is_none_or(|r| r.is_empty()) {
                        missing.push(format!("{title}: {expr}"));
                    }
                }
                missing.is_empty().then_some(missing)
            }
        },
    )
    .await;
    assert!(missing.is_empty());

    // Alert expressions are valid, and on a healthy cluster none of them fires.
    for (alert, expr) in alert_exprs() {
        let v = query(&prom, &expr).await.expect("query");
        assert_eq!(v["status"], "success", "alert {alert}: `{expr}` is invalid: {v}");
        assert!(
            v["data"]["result"].as_array().is_some_and(|r| r.is_empty()),
            "alert {alert} matches on a healthy cluster: {v}"
        );
    }
    // The dashboard's leader panel names the node that leads.
    let v = query(&prom, "max by (instance) (openraft_memory_raft_is_leader == 1)")
        .await
        .expect("query");
    let instance = v["data"]["result"][0]["metric"]["instance"]
        .as_str()
        .expect("one leader")
        .to_owned();
    assert_eq!(instance, targets[leader]);

    // The loaded rules are the project's alerts, all of them.
    let rules: Value = http()
        .get(format!("{}/api/v1/rules", prom.url))
        .send()
        .await
        .expect("rules")
        .json()
        .await
        .expect("json");
    let loaded = rules["data"]["groups"][0]["rules"].as_array().map(Vec::len);
    assert_eq!(loaded, Some(alert_exprs().len()));
}

/// Traffic for every panel: writes and reads over REST and gRPC, 4xx and gRPC errors.
async fn workload(nodes: &[Node], round: i64) {
    use openraft_memory::pb::client;
    for i in 0..20 {
        let id = round * 100 + i;
        let n = &nodes[(id % 3) as usize];
        http()
            .post(format!("{}/students", n.http()))
            .json(&json_student(id, "p", 1.0))
            .send()
            .await
            .ok();
        http()
            .get(format!("{}/students/{id}", n.http()))
            .send()
            .await
            .ok();
        http()
            .get(format!("{}/students/999999", n.http()))
            .send()
            .await
            .ok();
    }
    let mut g = nodes[0].grpc().await;
    for id in 0..5 {
        let _ = g
            .get_student(client::GetStudentRequest {
                id: round * 100 + id,
                consistency: 0,
            })
            .await;
        let _ = g
            .get_student(client::GetStudentRequest {
                id: 999_999,
                consistency: 0,
            })
            .await;
        let student = client::Student {
            id: 1_000_000 + round * 100 + id,
            name: "g".into(),
            score: 2.0,
            ..Default::default()
        };
        let _ = g
            .create_student(client::CreateStudentRequest {
                student: Some(student),
            })
            .await;
        let _ = g.list_students(client::ListStudentsRequest::default()).await;
    }
}

fn promtool(args: &[&str]) -> String {
    let out = std::process::Command::new("promtool")
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus"))
        .output()
        .expect("promtool must be installed (.ci/run installs Debian's prometheus package)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let rules = alert_exprs().len();
    let check = promtool(&["check", "rules", "alerts.yml"]);
    assert!(
        check.contains(&format!("SUCCESS: {rules} rules found")),
        "{check}"
    );
    assert!(promtool(&["check", "config", "prometheus.yml"]).contains("SUCCESS"));
    // alerts_test.yml: the no-leader, cut-off-leader and lagging-node alerts fire when they
    // should, not before.
    promtool(&["test", "rules", "alerts_test.yml"]);
}
