//! `ctl watch`: follows `GET /students/watch` (Server-Sent Events), printing each change,
//! and resumes on the next endpoint after the last revision received when a stream breaks
//! or its node shuts down.

use clap::Args;
use reqwest::Method;
use serde_json::Value;

use super::Output;
use super::client::{self, Client, CtlError};

/// `ctl watch`'s flags.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The first revision to print changes of (default: from the next write).
    #[arg(long)]
    from: Option<u64>,
    /// Only this record's changes.
    #[arg(long)]
    id: Option<i64>,
    /// Stop after this many changes (default: run until interrupted).
    #[arg(long)]
    count: Option<u64>,
    /// Also print progress events (the revision the node has reached).
    #[arg(long)]
    progress: bool,
}

/// How one connection's stream ended.
enum End {
    /// Printed `--count` changes.
    Done,
    /// The stream broke or the node stopped: try the next endpoint.
    Broken(String),
}

/// Watches until `--count` changes are printed, a non-retryable problem ends it, or every
/// endpoint has failed in a row.
pub async fn run(c: &Client, args: &WatchArgs, out: Output) -> Result<(), CtlError> {
    let mut next = args.from.unwrap_or(0);
    let mut printed = 0u64;
    let mut failures = 0;
    let mut last_failure = String::new();
    let endpoints = c.endpoints().to_vec();
    for endpoint in endpoints.iter().cycle() {
        if failures >= endpoints.len() * 3 {
            return Err(CtlError::Unreachable(last_failure));
        }
        let mut url = format!("{endpoint}/students/watch?from={next}");
        if let Some(id) = args.id {
            url.push_str(&format!("&id={id}"));
        }
        let resp = match c.request(Method::GET, &url).send().await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                let err = client::problem(r).await;
                match &err {
                    CtlError::Api { status, .. } if status.as_u16() == 503 => {
                        failures += 1;
                        last_failure = format!("{endpoint}: {err}");
                        continue;
                    }
                    _ => return Err(err),
                }
            }
            Err(e) => {
                failures += 1;
                last_failure = format!("{endpoint}: {}", client::describe(&e));
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            }
        };
        match follow(resp, args, out, &mut next, &mut printed).await? {
            End::Done => return Ok(()),
            End::Broken(why) => {
                failures = 0;
                eprintln!("openraft-memory ctl: {endpoint}: {why}; resuming from revision {next}");
            }
        }
    }
    Ok(())
}

/// Prints one stream's events; `next` is kept at the revision to resume from.
async fn follow(
    mut resp: reqwest::Response,
    args: &WatchArgs,
    out: Output,
    next: &mut u64,
    printed: &mut u64,
) -> Result<End, CtlError> {
    // Bytes, not text: a chunk may end inside a multi-byte character.
    let mut buf: Vec<u8> = Vec::new();
    loop {
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = buf.drain(..end + 2).collect();
            let block = String::from_utf8_lossy(&block);
            let (mut event, mut data) = (String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            let data: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
            match event.as_str() {
                "changes" => {
                    let revision = data["revision"].as_u64().unwrap_or(*next);
                    *next = revision + 1;
                    for change in data["changes"].as_array().cloned().unwrap_or_default() {
                        print_change(revision, &change, out);
                        *printed += 1;
                        if args.count.is_some_and(|n| *printed >= n) {
                            return Ok(End::Done);
                        }
                    }
                }
                "progress" => {
                    if let Some(rev) = data["revision"].as_u64() {
                        *next = (*next).max(rev + 1);
                        if args.progress {
                            match out {
                                Output::Json => {
                                    println!("{}", serde_json::json!({"type": "progress", "revision": rev}))
                                }
                                Output::Table => println!("{rev:>10}  PROGRESS"),
                            }
                        }
                    }
                }
                "error" if client::kind(&data) == Some("shutting-down") => {
                    return Ok(End::Broken("the node is shutting down".into()));
                }
                "error" => {
                    return Err(CtlError::Api {
                        status: reqwest::StatusCode::from_u16(data["status"].as_u64().unwrap_or(500) as u16)
                            .unwrap_or(reqwest::StatusCode::INTERNAL_SERVER_ERROR),
                        detail: data["detail"].as_str().unwrap_or("the watch ended").to_owned(),
                        problem: data,
                    });
                }
                _ => {}
            }
        }
        match resp.chunk().await {
            Ok(Some(bytes)) => buf.extend_from_slice(&bytes),
            Ok(None) => return Ok(End::Broken("the stream ended".into())),
            Err(e) => return Ok(End::Broken(client::describe(&e))),
        }
    }
}

fn print_change(revision: u64, change: &Value, out: Output) {
    let record = &change["record"];
    match out {
        Output::Json => println!(
            "{}",
            serde_json::json!({"revision": revision, "type": change["type"], "record": record})
        ),
        Output::Table => println!(
            "{revision:>10}  {:<6}  {}  {}  {}",
            change["type"].as_str().unwrap_or("?").to_uppercase(),
            record["id"],
            record["name"].as_str().unwrap_or_default(),
            record["score"],
        ),
    }
}
