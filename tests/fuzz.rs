//! Property-based fuzzing on stable Rust (proptest): every decoder that reads bytes from a
//! peer or a file gets arbitrary and structurally mutated input and must answer `Ok` or a
//! clear error, never panic, loop or blow up memory. `PROPTEST_CASES` sets the number of
//! cases per target (default 4096: about 20 s for all of them in a debug build); a failing case is
//! saved under `tests/fuzz.proptest-regressions` and replayed on every later run, so a
//! crash found once stays a regression test. Real files from a disk-mode node in
//! `tests/fuzz-corpus/` are the seeds the file decoders are mutated from.
//!
//! Memory is measured, not guessed: this binary counts every allocation, and the decoding
//! targets check what decoding allocated against the input's size (the amplification a hostile peer gets
//! from a message of a given size; `RaftSettings::peer_message_limit` caps the size).

use std::alloc::System;
use std::sync::{Mutex, MutexGuard, PoisonError};

use openraft_memory::pb::convert::log_id_from_pb;
use openraft_memory::pb::{peer, storage};
use openraft_memory::store::disk::{decode_snapshot, framed, replay_journal};
use openraft_memory::store::{LogStore, StateMachineStore, read_backup};
use openraft_memory::{Command, Entry, Vote};
use proptest::prelude::*;
use prost::Message;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The targets run one at a time, so a measured decode counts only its own allocations.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The most a decoder may allocate per input byte (plus a fixed allowance). The worst case
/// is an AppendEntries of empty entries: 2 bytes each on the wire, ~136 bytes each decoded
/// (the entry struct and its share of the vector's growth), 68 per byte measured. So a
/// message at the peer message cap (`RaftSettings::peer_message_limit`) costs at most 80
/// times its size.
const MAX_AMPLIFICATION: usize = 80;
const ALLOWANCE: usize = 4 << 10;

/// The worst bytes allocated per input byte seen so far (beyond the allowance).
static WORST: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Runs `f` and returns every heap byte it allocated (an upper bound of its peak).
fn allocated_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let region = Region::new(GLOBAL);
    let out = f();
    (out, region.change().bytes_allocated)
}

/// Everything the peer service does with an AppendEntries before OpenRaft sees it.
fn convert_append(req: peer::AppendEntriesRequest) -> Result<(), String> {
    let vote = Vote::try_from(req.vote.ok_or("no vote")?).map_err(|e| e.to_string())?;
    let _ = vote;
    log_id_from_pb(req.prev_log_id).map_err(|e| e.to_string())?;
    log_id_from_pb(req.leader_commit).map_err(|e| e.to_string())?;
    for e in req.entries {
        Entry::try_from(e).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A small but structurally rich AppendEntries: nested batches, extreme indexes and terms.
fn append_request() -> impl Strategy<Value = peer::AppendEntriesRequest> {
    let log_id = (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(term, node, index)| peer::LogId {
        leader_id: Some(peer::LeaderId { term, node_id: node }),
        index,
    });
    let student =
        (any::<i64>(), ".{0,40}", any::<f32>(), any::<u64>()).prop_map(|(id, name, score, revision)| {
            openraft_memory::pb::client::Student {
                id,
                name,
                score,
                revision,
            }
        });
    let leaf = prop_oneof![
        student.clone().prop_map(|s| peer::Command {
            op: Some(peer::command::Op::Create(s))
        }),
        student.clone().prop_map(|s| peer::Command {
            op: Some(peer::command::Op::Update(s))
        }),
        (prop::option::of(student), any::<u64>()).prop_map(|(student, expected_revision)| peer::Command {
            op: Some(peer::command::Op::UpdateIf(peer::UpdateIf {
                student,
                expected_revision
            }))
        }),
        any::<i64>().prop_map(|id| peer::Command {
            op: Some(peer::command::Op::Delete(id))
        }),
        (any::<i64>(), any::<u64>()).prop_map(|(id, expected_revision)| peer::Command {
            op: Some(peer::command::Op::DeleteIf(peer::DeleteIf {
                id,
                expected_revision
            }))
        }),
        Just(peer::Command { op: None }),
    ];
    let command = leaf.prop_recursive(4, 32, 8, |inner| {
        prop::collection::vec(inner, 0..8).prop_map(|commands| peer::Command {
            op: Some(peer::command::Op::Batch(peer::CommandBatch { commands })),
        })
    });
    let entry =
        (prop::option::of(log_id.clone()), prop::option::of(command)).prop_map(|(log_id, c)| peer::Entry {
            log_id,
            payload: c.map(peer::entry::Payload::Normal),
        });
    (
        prop::option::of((any::<u64>(), any::<u64>(), any::<bool>())),
        prop::option::of(log_id.clone()),
        prop::collection::vec(entry, 0..16),
        prop::option::of(log_id),
    )
        .prop_map(
            |(vote, prev_log_id, entries, leader_commit)| peer::AppendEntriesRequest {
                vote: vote.map(|(term, node_id, committed)| peer::Vote {
                    leader_id: Some(peer::LeaderId { term, node_id }),
                    committed,
                }),
                prev_log_id,
                entries,
                leader_commit,
            },
        )
}

/// Flips, drops or inserts a few bytes.
fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(at, kind, value) in edits {
        if bytes.is_empty() {
            bytes.push(value);
            continue;
        }
        let at = at % bytes.len();
        match kind % 3 {
            0 => bytes[at] ^= value.max(1),
            1 => {
                bytes.remove(at);
            }
            _ => bytes.insert(at, value),
        }
    }
    bytes
}

/// Runs `body` on `PROPTEST_CASES` (default 256) inputs from `strategy`, holding the
/// binary-wide lock for the whole run (input generation included), so a measured decode
/// counts only its own allocations. Failures persist beside this file and replay first.
fn fuzz<S: Strategy>(strategy: S, body: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    let _one_at_a_time = serial();
    run_cases(strategy, body);
}

/// [`fuzz`] for a caller that already holds the lock.
fn run_cases<S: Strategy>(strategy: S, body: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    // Thousands of cases per target: ~20 s in all on the CI machine (debug build).
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(4096);
    let config = ProptestConfig {
        cases,
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::SourceParallel("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    if let Err(e) = runner.run(&strategy, body) {
        panic!("{e}");
    }
}

/// Fails the case when decoding `len` bytes allocated more than the amplification bound.
fn within_bound(what: &str, len: usize, used: usize) -> Result<(), TestCaseError> {
    let ratio = used.saturating_sub(ALLOWANCE) / len.max(1);
    if ratio > WORST.fetch_max(ratio, std::sync::atomic::Ordering::Relaxed) {
        eprintln!("{what}: {len} bytes allocated {used} bytes while decoding (new worst)");
    }
    prop_assert!(
        used <= MAX_AMPLIFICATION * len + ALLOWANCE,
        "{what}: {len} bytes took {used} bytes to decode"
    );
    Ok(())
}

#[test]
fn peer_messages_decode_or_fail_cleanly_from_arbitrary_bytes() {
    fuzz(prop::collection::vec(any::<u8>(), 0..4096), |bytes| {
        let len = bytes.len();
        let b = bytes.as_slice();
        let decoders: [(&str, &dyn Fn()); 7] = [
            ("AppendEntries", &|| {
                if let Ok(req) = peer::AppendEntriesRequest::decode(b) {
                    let _ = convert_append(req);
                }
            }),
            ("ClientWrite", &|| {
                if let Ok(req) = peer::ClientWriteRequest::decode(b) {
                    let _ = req.command.map(Command::try_from);
                }
            }),
            ("SnapshotChunk", &|| {
                let _ = peer::SnapshotChunk::decode(b);
            }),
            ("Vote", &|| {
                if let Ok(v) = peer::VoteRequest::decode(b) {
                    let _ = v.vote.map(Vote::try_from);
                    let _ = log_id_from_pb(v.last_log_id);
                }
            }),
            ("PreVote", &|| {
                let _ = peer::PreVoteRequest::decode(b);
            }),
            ("TimeoutNow", &|| {
                if let Ok(t) = peer::TimeoutNowRequest::decode(b) {
                    let _ = log_id_from_pb(t.last_log_id);
                }
            }),
            ("Join", &|| {
                let _ = peer::JoinRequest::decode(b);
            }),
        ];
        for (name, decode) in decoders {
            let ((), used) = allocated_during(decode);
            within_bound(name, len, used)?;
        }
        Ok(())
    });
}

#[test]
fn mutated_append_entries_decode_or_fail_cleanly() {
    let edits = prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..6);
    fuzz((append_request(), edits), |(req, edits)| {
        let bytes = mutate(req.encode_to_vec(), &edits);
        let (_, used) =
            allocated_during(|| peer::AppendEntriesRequest::decode(bytes.as_slice()).map(convert_append));
        within_bound("AppendEntries", bytes.len(), used)
    });
}

#[test]
fn snapshot_files_and_backups_decode_or_fail_cleanly() {
    fuzz(
        (prop::collection::vec(any::<u8>(), 0..2048), any::<bool>()),
        |(bytes, with_magic)| {
            let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let path = dir.path().join("snapshot");
            let mut content = if with_magic {
                b"ORMSNAP1".to_vec()
            } else {
                Vec::new()
            };
            content.extend_from_slice(&bytes);
            let _ = decode_snapshot(&path, &content);
            std::fs::write(&path, &content).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let _ = read_backup(&path);
            let _ = StateMachineStore::open(path);
            Ok(())
        },
    );
}

#[test]
fn journals_replay_or_fail_cleanly() {
    let records = prop::collection::vec(journal_record(), 0..12);
    let tail = prop::collection::vec(any::<u8>(), 0..64);
    fuzz((records, tail), |(records, tail)| {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let path = dir.path().join("raft-log");
        // A fresh journal (its magic), then well-framed records with hostile contents, then
        // arbitrary bytes (a torn or foreign tail).
        replay_journal(&path).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut bytes = std::fs::read(&path).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for r in &records {
            bytes.extend_from_slice(&framed(r).expect("small record"));
        }
        bytes.extend_from_slice(&tail);
        std::fs::write(&path, &bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let _ = replay_journal(&path);
        let _ = LogStore::open(&path, ());
        Ok(())
    });
}

fn journal_record() -> impl Strategy<Value = storage::JournalRecord> {
    use storage::journal_record::Op;
    let extreme = prop_oneof![
        Just(0u64),
        Just(1u64),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        any::<u64>()
    ];
    let log_id = (extreme.clone(), extreme.clone()).prop_map(|(term, index)| peer::LogId {
        leader_id: Some(peer::LeaderId { term, node_id: 1 }),
        index,
    });
    prop_oneof![
        prop::option::of(log_id.clone()).prop_map(|log_id| Op::Append(peer::Entry {
            log_id,
            payload: Some(peer::entry::Payload::Blank(peer::Empty {})),
        })),
        extreme.clone().prop_map(Op::TruncateFrom),
        log_id.clone().prop_map(Op::PurgeUpto),
        (extreme.clone(), any::<bool>()).prop_map(|(term, committed)| Op::Vote(peer::Vote {
            leader_id: Some(peer::LeaderId { term, node_id: 1 }),
            committed,
        })),
        prop::option::of(log_id).prop_map(|l| Op::Committed(storage::Committed { log_id: l })),
    ]
    .prop_map(|op| storage::JournalRecord { op: Some(op) })
}

/// The committed corpus (`tests/fuzz-corpus/<kind>/`): real files from a disk-mode node.
fn corpus() -> Vec<(String, Vec<u8>)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus");
    let mut files = Vec::new();
    for kind in ["journal", "snapshot", "backup"] {
        let dir = std::fs::read_dir(root.join(kind)).expect("the corpus directory is committed");
        for f in dir {
            let path = f.expect("corpus entry").path();
            files.push((kind.to_owned(), std::fs::read(&path).expect("corpus file")));
        }
    }
    files.sort();
    files
}

/// Decodes one corpus-shaped file of `kind` from a scratch copy (replay cuts torn tails off
/// in place), answering whether it decoded.
fn decode_file(kind: &str, bytes: &[u8]) -> Result<bool, TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let path = dir.path().join(kind);
    std::fs::write(&path, bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    Ok(match kind {
        "journal" => {
            let replayed = replay_journal(&path).map(|r| !r.records.is_empty());
            replayed.unwrap_or(false) && LogStore::open(&path, ()).is_ok()
        }
        "snapshot" => decode_snapshot(&path, bytes).is_ok() && StateMachineStore::open(path).is_ok(),
        _ => read_backup(&path).is_ok_and(|students| !students.is_empty()),
    })
}

/// Every corpus file decodes as it is (so the seeds are meaningful), and a few flipped,
/// dropped or inserted bytes anywhere in it decode or fail with an error, never a panic.
#[test]
fn corpus_files_decode_as_they_are_and_fail_cleanly_when_mutated() {
    let files = corpus();
    assert_eq!(files.len(), 3, "a journal, a snapshot and a backup");
    for (kind, bytes) in &files {
        assert!(
            decode_file(kind, bytes).expect("scratch dir"),
            "the committed {kind} decodes"
        );
    }
    let edits = prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6);
    fuzz((prop::sample::select(files), edits), |((kind, bytes), edits)| {
        decode_file(&kind, &mutate(bytes, &edits)).map(|_| ())
    });
}

/// The amplifying message a hostile peer would send: as many entries as fit, each as small
/// as protobuf allows. What decoding it allocates per byte, times the peer message cap, is
/// the most one such message can cost a node.
#[test]
fn the_most_amplifying_append_entries_stays_within_the_bound() {
    let _one_at_a_time = serial();
    let vote = peer::Vote {
        leader_id: Some(peer::LeaderId { term: 1, node_id: 1 }),
        committed: true,
    };
    let mut shapes: Vec<(&str, Vec<u8>)> = Vec::new();
    // Empty entries (field 3, length 0): the most structs per byte; conversion stops at the
    // first one (no log id), so this measures prost alone.
    let mut empty = peer::AppendEntriesRequest {
        vote: Some(vote),
        ..Default::default()
    }
    .encode_to_vec();
    for _ in 0..100_000 {
        empty.extend_from_slice(&[0x1a, 0x00]);
    }
    shapes.push(("empty entries", empty));
    // Minimal valid blank entries: every one decodes and converts.
    let entries = (1..=20_000u64)
        .map(|index| peer::Entry {
            log_id: Some(peer::LogId {
                leader_id: Some(peer::LeaderId { term: 1, node_id: 1 }),
                index,
            }),
            payload: Some(peer::entry::Payload::Blank(peer::Empty {})),
        })
        .collect();
    let blank = peer::AppendEntriesRequest {
        vote: Some(vote),
        entries,
        ..Default::default()
    };
    shapes.push(("blank entries", blank.encode_to_vec()));
    for (what, bytes) in shapes {
        let (_, used) =
            allocated_during(|| peer::AppendEntriesRequest::decode(bytes.as_slice()).map(convert_append));
        let per_byte = used as f64 / bytes.len() as f64;
        eprintln!(
            "{what}: {} bytes allocated {used} bytes ({per_byte:.1} per byte)",
            bytes.len()
        );
        assert!(
            used <= MAX_AMPLIFICATION * bytes.len(),
            "{what}: {} bytes took {used} bytes to decode ({per_byte:.1} per byte)",
            bytes.len()
        );
    }
}

/// The REST router, in process (as in `tests/rest_contract.rs`), with arbitrary methods,
/// paths, queries and bodies: every answer is a success or a problem+json error, and no
/// input makes the node fail (no 5xx but 503, which a busy or leaderless node may give).
/// The membership and backup routes are left out: they act on the cluster itself.
#[test]
fn the_rest_router_answers_any_request_with_a_success_or_a_problem() {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let _one_at_a_time = serial();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let app = runtime.block_on(async {
        let overrides = vec![
            ("node.name", "fuzz-0".into()),
            ("http.addr", "127.0.0.1:0".into()),
            ("grpc.addr", "127.0.0.1:0".into()),
            ("raft.addr", "127.0.0.1:0".into()),
            ("http.max_body_bytes", 4096.into()),
            ("raft.write_timeout", "1s".into()),
        ];
        let settings = openraft_memory::config::Settings::load(openraft_memory::config::Sources {
            overrides,
            ..Default::default()
        })
        .expect("settings");
        let server = openraft_memory::server::build(settings)
            .await
            .expect("node builds");
        let node = server.node().clone();
        let members = std::collections::BTreeMap::from([(node.id(), node.member().clone())]);
        node.raft().initialize(members).await.expect("initialises");
        node.raft()
            .wait(Some(std::time::Duration::from_secs(10)))
            .current_leader(node.id(), "leads itself")
            .await
            .expect("becomes leader");
        (openraft_memory::router(node), server)
    });
    let (app, _server) = app;
    let method = prop_oneof![
        Just("GET"),
        Just("POST"),
        Just("PUT"),
        Just("DELETE"),
        Just("PATCH"),
        Just("HEAD"),
        Just("OPTIONS"),
        Just("FROB")
    ];
    let id = prop_oneof![
        any::<i64>().prop_map(|i| i.to_string()),
        Just("0".to_owned()),
        Just("-1".to_owned()),
        Just("99999999999999999999".to_owned()),
        "[a-z%0-9.]{0,12}",
    ];
    let path = prop_oneof![
        Just("/students".to_owned()),
        id.prop_map(|i| format!("/students/{i}")),
        Just("/cluster".to_owned()),
        Just("/readyz".to_owned()),
        Just("/livez".to_owned()),
        "/[a-z/%.]{0,24}",
    ];
    let query = prop_oneof![
        Just(String::new()),
        (any::<i64>(), any::<i64>()).prop_map(|(l, a)| format!("?limit={l}&after={a}")),
        "\\?(consistency|limit|after)=[a-z0-9%]{0,10}",
        "\\?[ -~]{0,20}",
    ];
    let body = prop_oneof![
        Just(Vec::new()),
        (any::<i64>(), ".{0,300}", any::<f64>()).prop_map(|(id, name, score)| {
            serde_json::json!({"id": id, "name": name, "score": score})
                .to_string()
                .into_bytes()
        }),
        prop::collection::vec(any::<u8>(), 0..512),
    ];
    let content_type = prop_oneof![
        Just(Some("application/json")),
        Just(None),
        Just(Some("text/plain"))
    ];
    run_cases(
        (method, path, query, body, content_type),
        |(method, path, query, body, content_type)| {
            let mut req = Request::builder().method(method).uri(format!("{path}{query}"));
            if let Some(ct) = content_type {
                req = req.header("content-type", ct);
            }
            let Ok(req) = req.body(Body::from(body)) else {
                return Ok(()); // not a valid HTTP request at all: no router ever sees it
            };
            let (status, problem) = runtime.block_on(async {
                let resp = app.clone().oneshot(req).await.expect("the router answers");
                let status = resp.status();
                let problem = resp
                    .headers()
                    .get("content-type")
                    .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
                let _ = resp.into_body().collect().await;
                (status, problem)
            });
            prop_assert!(
                !status.is_server_error() || status.as_u16() == 503,
                "{method} {path}{query}: {status}"
            );
            prop_assert!(
                status.as_u16() < 400 || problem || method == "HEAD",
                "{method} {path}{query}: {status} without problem+json"
            );
            Ok(())
        },
    );
}

/// The client gRPC `ListStudents`, called in process on a node holding 300 records, with
/// arbitrary page sizes, page tokens and consistency values: every call is a page within
/// the size asked for (1000 at most) or `INVALID_ARGUMENT` with a short message, never
/// another code, and following `next_page_token` never repeats a record.
#[test]
fn grpc_list_parameters_answer_a_page_or_invalid_argument() {
    use openraft_memory::pb::client::ListStudentsRequest;
    use openraft_memory::pb::client::student_service_server::StudentService;

    let _one_at_a_time = serial();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (service, _server) = runtime.block_on(async {
        let overrides = vec![
            ("node.name", "fuzz-grpc-0".into()),
            ("http.addr", "127.0.0.1:0".into()),
            ("grpc.addr", "127.0.0.1:0".into()),
            ("raft.addr", "127.0.0.1:0".into()),
        ];
        let settings = openraft_memory::config::Settings::load(openraft_memory::config::Sources {
            overrides,
            ..Default::default()
        })
        .expect("settings");
        let server = openraft_memory::server::build(settings)
            .await
            .expect("node builds");
        let node = server.node().clone();
        let members = std::collections::BTreeMap::from([(node.id(), node.member().clone())]);
        node.raft().initialize(members).await.expect("initialises");
        node.raft()
            .wait(Some(std::time::Duration::from_secs(10)))
            .current_leader(node.id(), "leads itself")
            .await
            .expect("becomes leader");
        for id in 1..=300 {
            node.raft()
                .client_write(Command::Create(openraft_memory::Student {
                    id: id * 7 - 1000,
                    name: "fuzz".into(),
                    score: 1.0,
                }))
                .await
                .expect("written");
        }
        (openraft_memory::StudentGrpc::new(node), server)
    });
    let page_size = prop_oneof![
        any::<i32>(),
        -2..1002i32,
        Just(0),
        Just(1000),
        Just(1001),
        Just(i32::MIN)
    ];
    let page_token = prop_oneof![
        Just(String::new()),
        any::<i64>().prop_map(|i| i.to_string()),
        (-1010..1200i64).prop_map(|i| i.to_string()),
        Just("99999999999999999999".to_owned()),
        ".{0,300}",
    ];
    let consistency = prop_oneof![any::<i32>(), 0..4i32];
    run_cases(
        (page_size, page_token, consistency),
        |(page_size, page_token, consistency)| {
            let request = ListStudentsRequest {
                page_size,
                page_token: page_token.clone(),
                consistency,
            };
            let answer = runtime.block_on(service.list_students(tonic::Request::new(request)));
            match answer {
                Ok(page) => {
                    let page = page.into_inner();
                    let asked = if page_size == 0 { 100 } else { page_size as usize };
                    prop_assert!(page.students.len() <= asked.min(1000));
                    let after = page_token.parse::<i64>().ok();
                    prop_assert!(page.students.iter().all(|s| after.is_none_or(|a| s.id > a)));
                    prop_assert!(page.students.windows(2).all(|w| w[0].id < w[1].id));
                    if let Some(last) = page.students.last() {
                        prop_assert!(
                            page.next_page_token.is_empty() || page.next_page_token == last.id.to_string()
                        );
                    }
                }
                Err(status) => {
                    prop_assert_eq!(status.code(), tonic::Code::InvalidArgument, "{:?}", status);
                    prop_assert!(status.message().len() < 400, "{}", status.message());
                }
            }
            Ok(())
        },
    );
}
