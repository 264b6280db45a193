//! What a worker sends and how: the operation mix (fresh creates in a worker's own id
//! block, updates and gets over pre-created records) and one connection per worker, REST
//! (HTTP/1.1 keep-alive) or gRPC.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rand::Rng;
use tokio::net::TcpStream;

use super::{Protocol, Workload};
use crate::pb::client as pb;
use crate::pb::client::student_service_client::StudentServiceClient;

/// One request to send.
#[derive(Debug, Clone, Copy)]
pub(super) enum Op {
    Create(i64),
    Update(i64),
    Get(i64),
}

/// Draws the next operation for a worker.
#[derive(Debug, Clone, Copy)]
pub(super) struct OpSource {
    pub(super) workload: Workload,
    /// First id of this run's id space: fresh creates count up from here per worker.
    pub(super) base: i64,
    pub(super) worker: i64,
    pub(super) seq: i64,
    pub(super) records: i64,
    pub(super) read_percent: u8,
}

/// Ids per worker for fresh creates: far more than any run sends.
pub(super) const IDS_PER_WORKER: i64 = 1 << 32;

impl OpSource {
    pub(super) fn next<R: Rng>(&mut self, rng: &mut R) -> Op {
        let (base, records) = (self.base, self.records.max(1));
        let existing = |rng: &mut R| base + rng.random_range(0..records);
        match self.workload {
            Workload::Create => {
                self.seq += 1;
                // Pre-created records take the first block; worker w creates in block w+1.
                Op::Create(self.base + (self.worker + 1) * IDS_PER_WORKER + self.seq)
            }
            Workload::Update => Op::Update(existing(rng)),
            Workload::Get => Op::Get(existing(rng)),
            Workload::Mixed if rng.random_range(0..100u8) < self.read_percent => Op::Get(existing(rng)),
            Workload::Mixed => Op::Update(existing(rng)),
        }
    }
}

/// How to reach a node: the API, TLS (the CA to trust) and the bearer token.
#[derive(Clone)]
pub(super) struct Dial {
    protocol: Protocol,
    tls: Option<Arc<rustls::ClientConfig>>,
    auth: Auth,
}

/// Adds the bearer token to every gRPC request.
#[derive(Clone)]
pub(super) struct Auth(Option<http::HeaderValue>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0
            && let Ok(v) = tonic::metadata::MetadataValue::try_from(v.as_bytes())
        {
            req.metadata_mut().insert("authorization", v);
        }
        Ok(req)
    }
}

type Grpc =
    StudentServiceClient<tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Auth>>;

/// A connection to one node, over the chosen API.
pub(super) enum Conn {
    Rest {
        host: String,
        auth: Option<http::HeaderValue>,
        sender: http1::SendRequest<Full<Bytes>>,
    },
    Grpc(Grpc),
}

impl Dial {
    pub(super) fn new(args: &super::BenchArgs) -> Result<Dial, super::BenchError> {
        Dial::over(args, args.protocol)
    }

    /// As [`Dial::new`], but over `protocol` whatever `--protocol` says (the watchers).
    pub(super) fn over(args: &super::BenchArgs, protocol: Protocol) -> Result<Dial, super::BenchError> {
        let usage = |e: String| super::BenchError::Usage(e);
        let tls = match &args.cacert {
            None => None,
            Some(ca) => {
                let pem = std::fs::read(ca).map_err(|e| usage(format!("{}: {e}", ca.display())))?;
                let alpn: &[&[u8]] = match protocol {
                    Protocol::Rest => &[b"http/1.1"],
                    Protocol::Grpc => &[b"h2"],
                };
                let config = crate::security::tls::client_trusting(&pem, None, alpn)
                    .map_err(|e| usage(format!("{}: {e}", ca.display())))?;
                Some(config)
            }
        };
        let auth = match &args.token {
            None => None,
            Some(t) => Some(
                http::HeaderValue::try_from(format!("Bearer {t}"))
                    .map_err(|_| usage("--token must be printable ASCII".into()))?,
            ),
        };
        Ok(Dial {
            protocol,
            tls,
            auth: Auth(auth),
        })
    }

    pub(super) async fn open(&self, target: &str) -> Result<Conn, String> {
        let connect = |e: &dyn std::fmt::Display| format!("connect {target}: {e}");
        match self.protocol {
            Protocol::Rest => {
                let handshake = |e: hyper::Error| format!("handshake {target}: {e}");
                let sender = if let Some(config) = &self.tls {
                    let stream = crate::security::tls::connect(config.clone(), target)
                        .await
                        .map_err(|e| connect(&e))?;
                    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.map_err(handshake)?;
                    tokio::spawn(conn);
                    sender
                } else {
                    let stream = TcpStream::connect(target).await.map_err(|e| connect(&e))?;
                    let _ = stream.set_nodelay(true);
                    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.map_err(handshake)?;
                    tokio::spawn(conn);
                    sender
                };
                Ok(Conn::Rest {
                    host: target.to_owned(),
                    auth: self.auth.0.clone(),
                    sender,
                })
            }
            Protocol::Grpc => {
                let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{target}"))
                    .map_err(|e| format!("bad target {target}: {e}"))?
                    .tcp_nodelay(true);
                let channel = match &self.tls {
                    None => endpoint.connect().await.map_err(|e| connect(&e))?,
                    Some(config) => crate::security::tls::channel(endpoint, target, config.clone())
                        .await
                        .map_err(|e| connect(&e))?,
                };
                Ok(Conn::Grpc(StudentServiceClient::with_interceptor(
                    channel,
                    self.auth.clone(),
                )))
            }
        }
    }
}

impl Conn {
    /// Sends one request; `Err` carries the failure reason used as the error bucket.
    pub(super) async fn send(&mut self, op: Op, local_reads: bool) -> Result<(), String> {
        match self {
            Conn::Rest { host, auth, sender } => {
                let (method, path, body) = match op {
                    Op::Create(id) => (
                        "POST",
                        "/students".to_owned(),
                        format!(r#"{{"id":{id},"name":"bench {id}","score":42.5}}"#),
                    ),
                    Op::Update(id) => (
                        "PUT",
                        format!("/students/{id}"),
                        format!(r#"{{"name":"bench {id}","score":17.25}}"#),
                    ),
                    Op::Get(id) if local_reads => {
                        ("GET", format!("/students/{id}?consistency=local"), String::new())
                    }
                    Op::Get(id) => ("GET", format!("/students/{id}"), String::new()),
                };
                let mut req = http::Request::builder()
                    .method(method)
                    .uri(path)
                    .header(http::header::HOST, host.as_str());
                if !body.is_empty() {
                    req = req.header(http::header::CONTENT_TYPE, "application/json");
                }
                if let Some(auth) = auth {
                    req = req.header(http::header::AUTHORIZATION, auth.clone());
                }
                let req = req
                    .body(Full::new(Bytes::from(body)))
                    .map_err(|e| format!("request: {e}"))?;
                sender.ready().await.map_err(|e| format!("connection: {e}"))?;
                let resp = sender
                    .send_request(req)
                    .await
                    .map_err(|e| format!("transport: {e}"))?;
                let status = resp.status();
                // Read the whole body so the connection can carry the next request.
                resp.into_body()
                    .collect()
                    .await
                    .map_err(|e| format!("body: {e}"))?;
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("HTTP {}", status.as_u16()))
                }
            }
            Conn::Grpc(client) => {
                let student = |id: i64, score: f32| pb::Student {
                    id,
                    name: format!("bench {id}"),
                    score,
                    revision: 0,
                };
                let r = match op {
                    Op::Create(id) => client
                        .create_student(pb::CreateStudentRequest {
                            student: Some(student(id, 42.5)),
                        })
                        .await
                        .map(drop),
                    Op::Update(id) => client
                        .update_student(pb::UpdateStudentRequest {
                            student: Some(student(id, 17.25)),
                            expected_revision: 0,
                        })
                        .await
                        .map(drop),
                    Op::Get(id) => {
                        let consistency = if local_reads {
                            pb::Consistency::Local
                        } else {
                            pb::Consistency::Linearizable
                        };
                        client
                            .get_student(pb::GetStudentRequest {
                                id,
                                consistency: consistency as i32,
                            })
                            .await
                            .map(drop)
                    }
                };
                r.map_err(|s| format!("gRPC {:?}", s.code()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_use_disjoint_id_blocks_per_worker() {
        let mut rng = rand::rng();
        let mut a = OpSource {
            workload: Workload::Create,
            base: 1 << 40,
            worker: 0,
            seq: 0,
            records: 10,
            read_percent: 0,
        };
        let mut b = OpSource { worker: 1, ..a };
        let ids = |s: &mut OpSource, rng: &mut rand::rngs::ThreadRng| -> Vec<i64> {
            (0..100)
                .map(|_| match s.next(rng) {
                    Op::Create(id) => id,
                    other => panic!("unexpected {other:?}"),
                })
                .collect()
        };
        let (ia, ib) = (ids(&mut a, &mut rng), ids(&mut b, &mut rng));
        assert!(ia.iter().all(|id| !ib.contains(id)));
        // None of them hits the pre-created block.
        assert!(ia.iter().chain(&ib).all(|id| *id >= (1 << 40) + IDS_PER_WORKER));
    }

    #[test]
    fn mixed_respects_the_read_share_and_stays_in_the_precreated_range() {
        let mut rng = rand::rng();
        let mut s = OpSource {
            workload: Workload::Mixed,
            base: 1000,
            worker: 3,
            seq: 0,
            records: 50,
            read_percent: 100,
        };
        for _ in 0..200 {
            match s.next(&mut rng) {
                Op::Get(id) => assert!((1000..1050).contains(&id)),
                other => panic!("all reads expected, got {other:?}"),
            }
        }
        s.read_percent = 0;
        assert!((0..200).all(|_| matches!(s.next(&mut rng), Op::Update(_))));
    }
}
