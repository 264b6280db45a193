//! Concurrent clients: create / update / conditional update / delete / linearizable get on
//! a small id set, through REST or gRPC, against random nodes, recording every operation
//! with its real invocation and completion times and an outcome we can trust (or
//! `Unknown`). A conditional update names the revision the client last saw of that id
//! (`If-Match` / `expected_revision`), so some match and some are refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use openraft_memory::pb::client as pb;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tonic::Code;

use openraft_memory::pb::NOT_APPLIED_HEADER;

use crate::checker::{Call, Op, Ret, Rev, Value};

/// Per-request timeout: above the nodes' write timeout, so a slow commit is an answer.
const TIMEOUT: Duration = Duration::from_secs(4);

pub struct Workload {
    pub clients: usize,
    pub ids: i64,
    pub seed: u64,
    /// Read with `consistency=local` (not linearizable): to show the checker catches it.
    pub local_reads: bool,
    /// `--tls`: the CA the clients trust.
    pub ca: Option<String>,
}

/// The endpoints clients may use, refreshed as nodes come and go.
pub type Targets = Arc<std::sync::RwLock<Vec<(String, String)>>>;

fn micros(t0: Instant) -> u64 {
    t0.elapsed().as_micros() as u64
}

/// How a REST answer maps to an outcome. Only answers that prove what happened are
/// definite; a 503 or 500 may follow a commit that the client never heard about.
fn rest_outcome(call: &Call, status: u16, body: &serde_json::Value) -> Ret {
    let revision = body["revision"].as_u64();
    match (call, status) {
        (Call::Create(_), 201) | (Call::Update(_) | Call::UpdateIf(..), 200) => {
            revision.map_or(Ret::Unknown, Ret::Written)
        }
        (Call::Delete, 204) => Ret::Done,
        (Call::Create(_), 409) => Ret::Exists,
        (Call::UpdateIf(..), 412) => Ret::Mismatch(body["current_revision"].as_u64()),
        (Call::Update(_) | Call::Delete | Call::Get, 404) => Ret::NotFound,
        (Call::Get, 200) => match (body["name"].as_str(), body["score"].as_f64(), revision) {
            (Some(n), Some(s), Some(r)) => Ret::Found((n.to_owned(), (s as f32).to_bits()), r),
            _ => Ret::Unknown,
        },
        _ => Ret::Unknown,
    }
}

/// The server's word that nothing was applied (a safe retry): REST problem type
/// `no-leader`, gRPC `UNAVAILABLE` with the not-applied marker.
fn rest_not_applied(status: u16, body: &serde_json::Value) -> bool {
    status == 503 && body["type"].as_str().is_some_and(|t| t.ends_with("/no-leader"))
}

fn grpc_not_applied(status: &tonic::Status) -> bool {
    status.code() == Code::Unavailable && status.metadata().get(NOT_APPLIED_HEADER).is_some()
}

fn grpc_outcome(call: &Call, result: Result<Option<pb::Student>, tonic::Status>) -> Ret {
    match (call, result) {
        (Call::Get, Ok(Some(s))) => Ret::Found((s.name, s.score.to_bits()), s.revision),
        (Call::Delete, Ok(_)) => Ret::Done,
        (_, Ok(Some(s))) => Ret::Written(s.revision),
        (_, Ok(None)) => Ret::Unknown,
        (Call::Create(_), Err(s)) if s.code() == Code::AlreadyExists => Ret::Exists,
        (Call::UpdateIf(..), Err(s)) if s.code() == Code::FailedPrecondition => Ret::Mismatch(
            s.metadata()
                .get("current-revision")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
        ),
        (_, Err(s)) if s.code() == Code::NotFound => Ret::NotFound,
        _ => Ret::Unknown,
    }
}

/// True when the request certainly never reached a server (connection refused).
/// `None` from [`one`] means "certainly not applied": such operations are left out.
fn never_sent(e: &reqwest::Error) -> bool {
    e.is_connect()
}

async fn one(
    http: &reqwest::Client,
    grpc: &mut Option<pb::student_service_client::StudentServiceClient<tonic::transport::Channel>>,
    rest_url: &str,
    use_grpc: bool,
    local_reads: bool,
    id: i64,
    call: &Call,
) -> Option<Ret> {
    let consistency = if local_reads {
        pb::Consistency::Local
    } else {
        pb::Consistency::Linearizable
    };
    if use_grpc && let Some(g) = grpc.as_mut() {
        let student = |v: &Value| pb::Student {
            id,
            name: v.0.clone(),
            score: f32::from_bits(v.1),
            revision: 0,
        };
        let fut = async {
            match call {
                Call::Create(v) => g
                    .create_student(pb::CreateStudentRequest {
                        student: Some(student(v)),
                    })
                    .await
                    .map(|r| Some(r.into_inner())),
                Call::Update(v) => g
                    .update_student(pb::UpdateStudentRequest {
                        student: Some(student(v)),
                        expected_revision: 0,
                    })
                    .await
                    .map(|r| Some(r.into_inner())),
                Call::UpdateIf(v, expected) => g
                    .update_student(pb::UpdateStudentRequest {
                        student: Some(student(v)),
                        expected_revision: *expected,
                    })
                    .await
                    .map(|r| Some(r.into_inner())),
                Call::Delete => g
                    .delete_student(pb::DeleteStudentRequest {
                        id,
                        expected_revision: 0,
                    })
                    .await
                    .map(|_| None),
                Call::Get => g
                    .get_student(pb::GetStudentRequest {
                        id,
                        consistency: consistency as i32,
                    })
                    .await
                    .map(|r| Some(r.into_inner())),
            }
        };
        return match tokio::time::timeout(TIMEOUT, fut).await {
            Ok(Err(s)) if grpc_not_applied(&s) => None,
            Ok(r) => Some(grpc_outcome(call, r)),
            Err(_) => Some(Ret::Unknown),
        };
    }
    let url = format!("{rest_url}/students");
    let req = match call {
        Call::Create(v) => http
            .post(&url)
            .json(&json!({"id": id, "name": v.0, "score": f32::from_bits(v.1)})),
        Call::Update(v) => http
            .put(format!("{url}/{id}"))
            .json(&json!({"name": v.0, "score": f32::from_bits(v.1)})),
        Call::UpdateIf(v, expected) => http
            .put(format!("{url}/{id}"))
            .header("if-match", format!("\"{expected}\""))
            .json(&json!({"name": v.0, "score": f32::from_bits(v.1)})),
        Call::Delete => http.delete(format!("{url}/{id}")),
        Call::Get if local_reads => http.get(format!("{url}/{id}?consistency=local")),
        Call::Get => http.get(format!("{url}/{id}")),
    };
    match req.timeout(TIMEOUT).send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let body = resp.json::<serde_json::Value>().await.unwrap_or_default();
            if rest_not_applied(status, &body) {
                return None;
            }
            Some(rest_outcome(call, status, &body))
        }
        Err(e) if never_sent(&e) => None,
        Err(_) => Some(Ret::Unknown),
    }
}

/// What the clients did: the recorded history, and how many operations they attempted in
/// all (including those left out of the history because nothing certain came back).
pub struct Load {
    pub history: Vec<Op>,
    pub attempts: u64,
}

/// Runs `clients` clients until `stop`; returns every recorded operation.
pub async fn run(w: &Workload, targets: Targets, stop: Arc<AtomicBool>, t0: Instant) -> Load {
    let mut tasks = Vec::new();
    for client in 0..w.clients {
        let targets = targets.clone();
        let stop = stop.clone();
        let ids = w.ids;
        let local_reads = w.local_reads;
        let ca = w.ca.clone();
        let mut rng = StdRng::seed_from_u64(w.seed.wrapping_mul(1000).wrapping_add(client as u64));
        tasks.push(tokio::spawn(async move {
            let http = crate::tls::http_client(ca.as_deref(), None);
            let mut history = Vec::new();
            let mut attempts = 0u64;
            let mut seq = 0u64;
            // The revision this client last saw of each id: what its conditional updates name.
            let mut seen: std::collections::HashMap<i64, Rev> = std::collections::HashMap::new();
            while !stop.load(Ordering::SeqCst) {
                let endpoints = targets.read().expect("targets").clone();
                if endpoints.is_empty() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                let (rest_url, grpc_url) = endpoints[rng.random_range(0..endpoints.len())].clone();
                let id = rng.random_range(1..=ids);
                seq += 1;
                let value: Value = (
                    format!("c{client}-{seq}"),
                    (rng.random_range(0..=100) as f32).to_bits(),
                );
                let call = match (rng.random_range(0..10), seen.get(&id)) {
                    (0..=1, _) => Call::Create(value),
                    (2, Some(&rev)) | (3, Some(&rev)) => Call::UpdateIf(value, rev),
                    (2..=4, _) => Call::Update(value),
                    (5, _) => Call::Delete,
                    _ => Call::Get,
                };
                let use_grpc = rng.random_bool(0.5);
                attempts += 1;
                let mut grpc = if use_grpc {
                    tokio::time::timeout(
                        Duration::from_secs(1),
                        crate::tls::grpc_channel(grpc_url, ca.as_deref()),
                    )
                    .await
                    .ok()
                    .flatten()
                    .map(pb::student_service_client::StudentServiceClient::new)
                } else {
                    None
                };
                if use_grpc && grpc.is_none() {
                    // Could not connect: nothing was sent.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                let start = micros(t0);
                let Some(ret) = one(&http, &mut grpc, &rest_url, use_grpc, local_reads, id, &call).await
                else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let end = micros(t0);
                match ret {
                    Ret::Written(r) | Ret::Found(_, r) | Ret::Mismatch(Some(r)) => {
                        seen.insert(id, r);
                    }
                    _ => {}
                }
                // A read without an answer says nothing: leave it out.
                if !(call == Call::Get && ret == Ret::Unknown) {
                    history.push(Op {
                        client,
                        id,
                        call,
                        ret,
                        start,
                        end,
                    });
                }
            }
            (history, attempts)
        }));
    }
    let mut load = Load {
        history: Vec::new(),
        attempts: 0,
    };
    for t in tasks {
        let (history, attempts) = t.await.unwrap_or_default();
        load.history.extend(history);
        load.attempts += attempts;
    }
    load
}
