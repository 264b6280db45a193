//! Watch streams against real nodes: every change exactly once and in revision order across
//! a leader kill with the watcher resuming on another node (gRPC), Server-Sent Events with
//! `Last-Event-ID` resume on a follower, the `compacted` refusal on both APIs, and a watcher
//! that stops reading being cut off while a reading one and the writes go on.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft_memory::pb::client;
use serde_json::{Value, json};
use tonic::Code;

use super::{env, get_json, post};
use crate::metrics::{samples, value};
use crate::util::{Cluster, Node, client as http, fresh_ip, json_student, wait_for};

/// One change as a watcher received it: (revision, put?, id, score).
type Seen = (u64, bool, i64, f32);

/// Watches from revision 1 over gRPC, starting on `order[0]` and moving to the next node
/// whenever a stream breaks, resuming after the last revision received, until a change to
/// `last_id` arrives. Returns every change received and how many times it resumed.
async fn watch_through_failures(addrs: Vec<String>, last_id: i64) -> (Vec<Seen>, usize) {
    let mut seen: Vec<Seen> = Vec::new();
    let mut next = 1;
    let mut resumes = 0;
    for attempt in 0.. {
        assert!(attempt < 200, "the watcher could not reconnect");
        let addr = &addrs[attempt % addrs.len()];
        let Ok(mut g) = client::student_service_client::StudentServiceClient::connect(addr.clone()).await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(stream) = g
            .watch_students(client::WatchRequest {
                start_revision: next,
                id: None,
            })
            .await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if attempt > 0 {
            resumes += 1;
        }
        let mut stream = stream.into_inner();
        while let Ok(Some(resp)) = stream.message().await {
            if resp.events.is_empty() {
                continue; // progress
            }
            assert!(
                resp.revision >= next,
                "revision {} after {}",
                resp.revision,
                next - 1
            );
            next = resp.revision + 1;
            for e in resp.events {
                let s = e.student.expect("an event carries its record");
                let put = e.r#type == client::EventType::Put as i32;
                seen.push((resp.revision, put, s.id, s.score));
                if s.id == last_id {
                    return (seen, resumes);
                }
            }
        }
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_resuming_across_a_leader_kill_gets_every_change_once_in_order() {
    let mut c = Cluster::new(3, vec![]);
    c.start_all();
    let leader = c.wait_stable(&[0, 1, 2], 3).await;
    let grpc = |n: &Node| format!("http://{}:{}", n.ip, crate::util::GRPC_PORT);
    // The watcher starts on the leader, the node about to be killed.
    let mut order = vec![grpc(&c.nodes[leader])];
    order.extend((0..3).filter(|&i| i != leader).map(|i| grpc(&c.nodes[i])));
    const LAST: i64 = 10_000;
    let watcher = tokio::spawn(watch_through_failures(order, LAST));

    // Writes through every node: creates, then an update and a delete of some of them.
    // An acknowledged write's revision is in its answer; one whose outcome is unknown (the
    // kill) may or may not appear, but only as what it would have written.
    let mut acked: BTreeMap<u64, Vec<(bool, i64, f32)>> = BTreeMap::new();
    let mut attempted: BTreeSet<(bool, i64, u32)> = BTreeSet::new();
    let mut killed = None;
    for i in 1..=120i64 {
        if i == 60 {
            c.nodes[leader].kill();
            killed = Some(leader);
        }
        let live: Vec<usize> = (0..3).filter(|&n| Some(n) != killed).collect();
        let node = &c.nodes[live[i as usize % live.len()]];
        let score = (i % 100) as f32;
        attempted.insert((true, i, score as u32));
        let r = post(node, &json_student(i, "w", score)).await;
        if r.status() == 201 {
            let body: Value = r.json().await.expect("body");
            let rev = body["revision"].as_u64().expect("revision");
            acked.entry(rev).or_default().push((true, i, score));
        }
        if i % 10 == 0 {
            let r = http()
                .put(format!("{}/students/{}", node.http(), i - 5))
                .json(&json!({"name": "w", "score": 100.0}))
                .send()
                .await
                .expect("put");
            attempted.insert((true, i - 5, 100));
            if r.status() == 200 {
                let body: Value = r.json().await.expect("body");
                acked
                    .entry(body["revision"].as_u64().expect("revision"))
                    .or_default()
                    .push((true, i - 5, 100.0));
            }
            let r = http()
                .delete(format!("{}/students/{}", node.http(), i - 9))
                .send()
                .await
                .expect("delete");
            attempted.insert((false, i - 9, 0));
            assert!(r.status() != 404 || killed.is_some(), "{}", r.status());
        }
    }
    // The last write, retried until acknowledged: the watcher stops when it sees it.
    let survivor = &c.nodes[(0..3).find(|&n| Some(n) != killed).expect("a survivor")];
    wait_for("the final write", Duration::from_secs(20), || async {
        let r = post(survivor, &json_student(LAST, "last", 1.0)).await;
        (r.status() == 201 || r.status() == 409).then_some(())
    })
    .await;
    let (seen, resumes) = tokio::time::timeout(Duration::from_secs(30), watcher)
        .await
        .expect("the watcher saw the final write")
        .expect("watcher task");
    assert!(
        resumes >= 1,
        "the watcher never had to resume: the kill proved nothing"
    );

    // In revision order, no revision delivered twice.
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "out of order");
    let mut per_rev: BTreeMap<u64, Vec<(bool, i64, f32)>> = BTreeMap::new();
    for &(rev, put, id, score) in &seen {
        per_rev.entry(rev).or_default().push((put, id, score));
    }
    let distinct: BTreeSet<(u64, bool, i64)> = seen.iter().map(|&(r, p, id, _)| (r, p, id)).collect();
    assert_eq!(distinct.len(), seen.len(), "a change was delivered twice");
    // Every acknowledged write is there, at its revision.
    for (rev, writes) in &acked {
        for w in writes {
            assert!(
                per_rev.get(rev).is_some_and(|got| got.contains(w)),
                "acknowledged write {w:?} at revision {rev} missing from the watch"
            );
        }
    }
    // And nothing that was never attempted.
    for &(_, put, id, score) in &seen {
        let key = if put {
            (true, id, score as u32)
        } else {
            (false, id, 0)
        };
        assert!(id == LAST || attempted.contains(&key), "invented change {key:?}");
    }
    // The deletes of acknowledged creates that the watch reports match the records' absence.
    let (_, page) = get_json(format!("{}/students?limit=1000", survivor.http())).await;
    let live: BTreeSet<i64> = page["students"]
        .as_array()
        .expect("students")
        .iter()
        .filter_map(|s| s["id"].as_i64())
        .collect();
    let mut replayed = BTreeSet::new();
    for &(_, put, id, _) in &seen {
        if put {
            replayed.insert(id);
        } else {
            replayed.remove(&id);
        }
    }
    assert_eq!(replayed, live, "replaying the watch rebuilds the store's ids");
    eprintln!(
        "{} changes over {} revisions, {resumes} resume(s)",
        seen.len(),
        per_rev.len()
    );
}

/// One Server-Sent Event: (event, id, data).
type Sse = (String, Option<String>, String);

/// Reads events from an SSE response until `until` says stop (or the stream ends).
async fn read_sse(
    r: &mut reqwest::Response,
    buf: &mut String,
    mut until: impl FnMut(&Sse) -> bool,
) -> Vec<Sse> {
    let mut out = Vec::new();
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut event, mut id, mut data) = (String::from("message"), None, String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            let e = (event, id, data);
            let stop = until(&e);
            out.push(e);
            if stop {
                return out;
            }
        }
        match tokio::time::timeout(Duration::from_secs(15), r.chunk()).await {
            Ok(Ok(Some(bytes))) => buf.push_str(&String::from_utf8_lossy(&bytes)),
            Ok(_) => return out,
            Err(_) => panic!("no event within 15 s; got {out:?}"),
        }
    }
}

fn sse_client() -> reqwest::Client {
    // No overall timeout: a watch lasts as long as the test reads it.
    reqwest::Client::builder().build().expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_on_a_follower_resume_after_the_last_event_id() {
    let mut c = Cluster::new(3, env(&[("OPENRAFT_MEMORY__WATCH__PROGRESS_INTERVAL", "300ms")]));
    c.start_all();
    let leader = c.wait_stable(&[0, 1, 2], 3).await;
    let follower = &c.nodes[(leader + 1) % 3];
    let url = format!("{}/students/watch", follower.http());
    let mut r = sse_client().get(&url).send().await.expect("watch");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut buf = String::new();
    // Caught up at once: the first event is a progress with the current revision.
    let first = read_sse(&mut r, &mut buf, |_| true).await;
    assert_eq!(first[0].0, "progress", "{first:?}");

    // Writes on the leader arrive on the follower's stream, with the revisions they got.
    let mut revs = Vec::new();
    for i in 1..=3 {
        let body: Value = post(&c.nodes[leader], &json_student(i, "sse", 10.0))
            .await
            .json()
            .await
            .expect("created");
        revs.push(body["revision"].as_u64().expect("revision"));
    }
    let events = read_sse(&mut r, &mut buf, |e| {
        e.0 == "changes" && e.1 == Some(revs[1].to_string())
    })
    .await;
    let changes: Vec<&Sse> = events.iter().filter(|e| e.0 == "changes").collect();
    assert_eq!(changes.len(), 2, "{events:?}");
    let data: Value = serde_json::from_str(&changes[0].2).expect("json data");
    assert_eq!(data["revision"], revs[0]);
    assert_eq!(data["changes"][0]["type"], "put");
    assert_eq!(data["changes"][0]["record"]["id"], 1);
    assert_eq!(data["changes"][0]["record"]["revision"], revs[0]);
    drop(r);

    // Reconnecting with Last-Event-ID (as EventSource does) resumes after it: the third
    // create, then a delete with the record as it was, and an idle progress.
    let del = http()
        .delete(format!("{}/students/2", c.nodes[leader].http()))
        .send()
        .await
        .expect("delete");
    assert_eq!(del.status(), 204);
    let mut r = sse_client()
        .get(format!("{url}?from=1"))
        .header("last-event-id", revs[1].to_string())
        .send()
        .await
        .expect("resume");
    let mut buf = String::new();
    let events = read_sse(&mut r, &mut buf, |e| e.0 == "progress").await;
    let changes: Vec<Value> = events
        .iter()
        .filter(|e| e.0 == "changes")
        .map(|e| serde_json::from_str(&e.2).expect("json"))
        .collect();
    assert_eq!(changes.len(), 2, "{events:?}");
    assert_eq!(changes[0]["revision"], revs[2]);
    assert_eq!(changes[1]["changes"][0]["type"], "delete");
    assert_eq!(changes[1]["changes"][0]["record"]["id"], 2);
    assert_eq!(changes[1]["changes"][0]["record"]["revision"], revs[1]);
    // Idle: progress events keep coming at the interval, naming the revision reached.
    let more = read_sse(&mut r, &mut buf, |e| e.0 == "progress").await;
    let p: Value = serde_json::from_str(&more.last().expect("progress").2).expect("json");
    assert!(p["revision"].as_u64() >= changes[1]["revision"].as_u64(), "{p}");

    // A filtered watch sees only its record.
    let mut r = sse_client()
        .get(format!("{url}?from=1&id=3"))
        .send()
        .await
        .expect("filtered");
    let mut buf = String::new();
    let events = read_sse(&mut r, &mut buf, |e| e.0 == "progress").await;
    let ids: Vec<Value> = events
        .iter()
        .filter(|e| e.0 == "changes")
        .map(|e| serde_json::from_str::<Value>(&e.2).expect("json")["changes"][0]["record"]["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!(3)]);

    // Bad input is a problem, not a stream.
    for bad in ["?from=-1", "?id=0", "?nope=1"] {
        let (status, p) = get_json(format!("{url}{bad}")).await;
        assert_eq!(status, 400, "{bad}: {p}");
    }
    let r = http()
        .get(&url)
        .header("last-event-id", "x")
        .send()
        .await
        .expect("bad id");
    assert_eq!(r.status(), 400);
    let text = crate::limits::metrics_text(follower).await;
    let s = samples(&text);
    assert!(value(&s, "openraft_memory_watch_events_sent_total{api=\"rest\"}").unwrap_or(0.0) >= 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_start_is_refused_and_a_watcher_that_stops_reading_is_cut_off() {
    let mut node = Node::new(
        "solo",
        fresh_ip(),
        vec![],
        env(&[("OPENRAFT_MEMORY__WATCH__HISTORY", "200")]),
    );
    node.start();
    node.wait_ready().await;
    for chunk in 0..10 {
        let node = &node;
        let writes =
            (1..=25).map(|i| async move { post(node, &json_student(chunk * 25 + i, "c", 1.0)).await });
        for r in futures::future::join_all(writes).await {
            assert_eq!(r.status(), 201);
        }
    }
    // REST: 410 with the oldest revision it can start from; starting there works.
    let url = format!("{}/students/watch", node.http());
    let (status, p) = get_json(format!("{url}?from=1")).await;
    assert_eq!(status, 410, "{p}");
    assert!(
        p["type"].as_str().is_some_and(|t| t.ends_with("/compacted")),
        "{p}"
    );
    let oldest = p["oldest_revision"].as_u64().expect("oldest_revision");
    assert!(oldest > 1, "{p}");
    let mut r = sse_client()
        .get(format!("{url}?from={oldest}"))
        .send()
        .await
        .expect("watch");
    let mut buf = String::new();
    let events = read_sse(&mut r, &mut buf, |e| e.0 == "changes").await;
    let first: Value = serde_json::from_str(&events.last().expect("changes").2).expect("json");
    assert!(first["revision"].as_u64() >= Some(oldest), "{first}");
    drop(r);
    // gRPC: OUT_OF_RANGE with `oldest-revision`.
    let mut g = node.grpc().await;
    let err = match g
        .watch_students(client::WatchRequest {
            start_revision: 1,
            id: None,
        })
        .await
    {
        Ok(_) => panic!("a compacted start was accepted"),
        Err(e) => e,
    };
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert_eq!(
        err.metadata()
            .get("oldest-revision")
            .and_then(|v| v.to_str().ok()),
        Some(oldest.to_string().as_str())
    );

    // A watcher that never reads while a reading one keeps up: the stalled one falls
    // behind the 200 retained changes and is cut off; the writes and the reader go on. Its
    // HTTP/2 windows are small, so the server can send it little before it must wait (a
    // raw TCP client would make the kernel's socket buffers, megabytes, the limit).
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}:{}", node.ip, crate::util::GRPC_PORT))
            .expect("uri")
            .initial_stream_window_size(Some(4096))
            .initial_connection_window_size(Some(4096))
            .connect()
            .await
            .expect("connect");
    let mut stalled = client::student_service_client::StudentServiceClient::new(channel)
        .watch_students(client::WatchRequest {
            start_revision: 0,
            id: None,
        })
        .await
        .expect("stalled watcher")
        .into_inner();
    let mut reader = g
        .watch_students(client::WatchRequest {
            start_revision: 0,
            id: None,
        })
        .await
        .expect("reader")
        .into_inner();
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reading = tokio::spawn({
        let received = received.clone();
        async move {
            loop {
                let resp = reader.message().await?;
                let Some(resp) = resp else {
                    return Ok::<_, tonic::Status>(());
                };
                received.fetch_add(resp.events.len(), std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    let name = "n".repeat(250);
    let h = http();
    let cut_off = |n: &Node| {
        let n_http = n.http();
        let h = h.clone();
        async move {
            let text = h
                .get(format!("{n_http}/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let v = value(
                &samples(&text),
                "openraft_memory_watchers_cut_off_total{reason=\"fell_behind\"}",
            )?;
            (v >= 1.0).then_some(())
        }
    };
    let mut written = 0;
    let mut id = 1000;
    // Written until the stalled watcher is cut off: how much the socket buffers absorb
    // first depends on the kernel, so the test waits on the cut-off itself.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while cut_off(&node).await.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the stalled watcher was never cut off after {written} writes"
        );
        let writes = (0..16).map(|_| {
            id += 1;
            let body = json_student(id, &name, 2.0);
            let url = format!("{}/students", node.http());
            let h = h.clone();
            async move { h.post(url).json(&body).send().await.map(|r| r.status().as_u16()) }
        });
        for status in futures::future::join_all(writes).await {
            assert_eq!(status.ok(), Some(201), "a write failed while a watcher stalled");
            written += 1;
        }
    }
    // The reader got every one of them and is still watching.
    wait_for(
        "the reading watcher to receive every write",
        Duration::from_secs(20),
        || async { (received.load(std::sync::atomic::Ordering::SeqCst) == written).then_some(()) },
    )
    .await;
    assert!(
        !reading.is_finished(),
        "the reading watcher was ended: {:?}",
        reading.await
    );
    // The stalled watcher, read at last, gets what was buffered for it, then the reason.
    let mut buffered = 0;
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(10), stalled.message()).await {
            Ok(Ok(Some(resp))) => buffered += resp.events.len(),
            Ok(other) => break other,
            Err(_) => panic!("the stalled watcher was not ended"),
        }
    };
    let status = end.expect_err("ended with a status");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("fell behind"), "{status:?}");
    assert!(buffered < written, "it was sent everything: nothing stalled");
    eprintln!(
        "stalled watcher cut off after {written} writes of ~330 bytes, {buffered} changes buffered for it"
    );
}
