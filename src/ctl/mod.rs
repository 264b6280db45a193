//! `openraft-memory ctl`: the command-line client, over the REST API of any node (like
//! etcdctl): records, cluster status and membership, backups and watch. Endpoints are tried
//! in turn; output is a table or JSON; exit codes say what kind of failure it was
//! ([`client::exit`]).

mod backups;
pub mod client;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::{Value, json};

use client::{Client, CtlError};

/// The help text's examples and exit codes.
const AFTER_HELP: &str = "\
Examples:
  export OPENRAFT_MEMORY_ENDPOINTS=http://127.0.0.1:8080,http://127.0.0.1:8081,http://127.0.0.1:8082
  openraft-memory ctl student create --id 1 --name Ada --score 91.5
  openraft-memory ctl student get 1 -o json
  openraft-memory ctl student update 1 --score 95 --if-revision 7
  openraft-memory ctl student list --all
  openraft-memory ctl student delete 1
  openraft-memory ctl cluster status
  openraft-memory ctl cluster members
  openraft-memory ctl cluster add --name node-3 --addr 10.0.0.4:50052
  openraft-memory ctl cluster remove 4711
  openraft-memory ctl backup save ./backup.bin
  openraft-memory ctl backup restore ./backup.bin      (into a new, empty cluster)
  openraft-memory ctl backup list --target s3://db-backups/prod
  openraft-memory ctl backup save --target s3://db-backups/prod
  openraft-memory ctl backup restore --target s3://db-backups/prod   (the newest usable one)
  openraft-memory ctl watch --from 1

Exit codes: 0 ok, 1 failed, 2 usage or invalid input, 3 not found, 4 conflict (exists, revision mismatch,
membership refused), 5 unavailable (unreachable, no leader, timeout: retry), 6 denied
(token), 7 compacted (watch: list again, then watch from the list's revision + 1).";

/// `ctl`'s flags and command.
#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
pub struct CtlArgs {
    /// REST endpoints, tried in turn (comma-separated URLs; host:port means http://).
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        env = "OPENRAFT_MEMORY_ENDPOINTS",
        default_value = "http://127.0.0.1:8080"
    )]
    pub endpoints: Vec<String>,
    /// Bearer token (when the nodes have auth.tokens_file).
    #[arg(long, global = true, env = "OPENRAFT_MEMORY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA bundle (PEM) to trust for https:// endpoints.
    #[arg(long, global = true, env = "OPENRAFT_MEMORY_CACERT")]
    pub cacert: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Deadline of each request (not of backups and watches).
    #[arg(long, global = true, value_parser = humantime::parse_duration, default_value = "10s")]
    pub timeout: Duration,
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// The API's JSON, one document (or, for watch, one line per event).
    Json,
}

/// What `ctl` does.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Create, read, update, delete and list records.
    #[command(subcommand)]
    Student(StudentCmd),
    /// Cluster status and membership.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Save a backup of the cluster, or load one into a new cluster.
    #[command(subcommand)]
    Backup(BackupCmd),
    /// Print record changes as they happen (resuming on another endpoint if one fails).
    Watch(watch::WatchArgs),
}

/// `ctl student ...`.
#[derive(Debug, Subcommand)]
pub enum StudentCmd {
    /// Create a record.
    Create {
        #[arg(long)]
        id: i64,
        #[arg(long)]
        name: String,
        #[arg(long)]
        score: f32,
    },
    /// Read a record.
    Get {
        id: i64,
        /// Read this node's state without asking the leader (fast, possibly stale).
        #[arg(long)]
        local: bool,
    },
    /// Replace a record's name and/or score (a field not given keeps its value).
    Update {
        id: i64,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        score: Option<f32>,
        /// Apply only if the record is at this revision (exit 4 otherwise). Without it, a
        /// partial update still applies only to the revision it read.
        #[arg(long)]
        if_revision: Option<u64>,
    },
    /// Delete a record.
    Delete {
        id: i64,
        /// Delete only if the record is at this revision (exit 4 otherwise).
        #[arg(long)]
        if_revision: Option<u64>,
    },
    /// List records in id order.
    List {
        /// Records per page (1-1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Only ids greater than this.
        #[arg(long)]
        after: Option<i64>,
        /// Every page, not just the first.
        #[arg(long)]
        all: bool,
    },
}

/// `ctl cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// The answering node's view: leader, members, indexes, revision.
    Status,
    /// The voters and learners.
    Members,
    /// The current leader.
    Leader,
    /// Add a node (it joins as a learner and is promoted once caught up).
    Add {
        /// Its node name.
        #[arg(long)]
        name: String,
        /// Its peer address, host:port.
        #[arg(long)]
        addr: String,
    },
    /// Remove a member by Raft node id (see `cluster members`).
    Remove { id: u64 },
}

/// `ctl backup ...`.
#[derive(Debug, Subcommand)]
pub enum BackupCmd {
    /// Stream a consistent backup of the cluster to FILE (written whole or not at all), or
    /// upload it to --target as the scheduled backups are.
    Save {
        #[arg(required_unless_present = "target", conflicts_with = "target")]
        file: Option<PathBuf>,
        /// Object storage (s3://bucket/prefix, gs://bucket/prefix, file:///dir).
        #[arg(long, env = "OPENRAFT_MEMORY_BACKUP_TARGET")]
        target: Option<String>,
    },
    /// Load a backup's records into a new cluster, which must be empty; records get new
    /// revisions. From FILE, or from --target: the newest usable backup, or --name.
    Restore {
        #[arg(required_unless_present = "target", conflicts_with = "target")]
        file: Option<PathBuf>,
        /// Object storage to restore from.
        #[arg(long, env = "OPENRAFT_MEMORY_BACKUP_TARGET")]
        target: Option<String>,
        /// With --target: this backup (a name from `backup list`) instead of the newest.
        #[arg(long, requires = "target")]
        name: Option<String>,
        /// Records written concurrently.
        #[arg(long, default_value_t = 32)]
        parallel: usize,
    },
    /// List the backups under --target, newest first.
    List {
        /// Object storage (s3://bucket/prefix, gs://bucket/prefix, file:///dir).
        #[arg(long, env = "OPENRAFT_MEMORY_BACKUP_TARGET")]
        target: String,
    },
}

/// Runs `ctl`; the exit code is 0 or one of [`client::exit`].
pub async fn run(args: CtlArgs) -> u8 {
    match dispatch(&args).await {
        Ok(()) => 0,
        Err(e) => {
            match (&e, args.output) {
                (CtlError::Api { problem, .. }, Output::Json) if !problem.is_null() => {
                    eprintln!("{problem}");
                }
                _ => eprintln!("openraft-memory ctl: {e}"),
            }
            e.exit_code()
        }
    }
}

async fn dispatch(args: &CtlArgs) -> Result<(), CtlError> {
    let ca = match &args.cacert {
        Some(p) => {
            Some(std::fs::read(p).map_err(|e| CtlError::Usage(format!("--cacert {}: {e}", p.display())))?)
        }
        None => None,
    };
    let c = Client::new(&args.endpoints, args.token.clone(), ca.as_deref(), args.timeout)?;
    let out = args.output;
    match &args.command {
        CtlCommand::Student(cmd) => student(&c, cmd, out).await,
        CtlCommand::Cluster(cmd) => cluster(&c, cmd, out).await,
        CtlCommand::Backup(cmd) => backups::run(&c, cmd, out).await,
        CtlCommand::Watch(w) => watch::run(&c, w, out).await,
    }
}

async fn student(c: &Client, cmd: &StudentCmd, out: Output) -> Result<(), CtlError> {
    let if_match = |rev: Option<u64>| -> Vec<(&str, String)> {
        rev.map(|r| vec![("if-match", format!("\"{r}\""))])
            .unwrap_or_default()
    };
    match cmd {
        StudentCmd::Create { id, name, score } => {
            let body = json!({"id": id, "name": name, "score": score});
            let rec = c.json(Method::POST, "/students", Some(&body), &[]).await?;
            print_records(&[rec], out, false);
        }
        StudentCmd::Get { id, local } => {
            let q = if *local { "?consistency=local" } else { "" };
            let rec = c
                .json(Method::GET, &format!("/students/{id}{q}"), None, &[])
                .await?;
            print_records(&[rec], out, false);
        }
        StudentCmd::Update {
            id,
            name,
            score,
            if_revision,
        } => {
            let (name, score, revision) = match (name, score) {
                (Some(n), Some(s)) => (json!(n), json!(s), *if_revision),
                _ => {
                    // A partial update is a read-modify-write: conditional on what it read.
                    let cur = c.json(Method::GET, &format!("/students/{id}"), None, &[]).await?;
                    let read_rev = cur["revision"].as_u64();
                    (
                        name.as_ref().map_or(cur["name"].clone(), |n| json!(n)),
                        score.map_or(cur["score"].clone(), |s| json!(s)),
                        if_revision.or(read_rev),
                    )
                }
            };
            let body = json!({"name": name, "score": score});
            let rec = c
                .json(
                    Method::PUT,
                    &format!("/students/{id}"),
                    Some(&body),
                    &if_match(revision),
                )
                .await?;
            print_records(&[rec], out, false);
        }
        StudentCmd::Delete { id, if_revision } => {
            c.json(
                Method::DELETE,
                &format!("/students/{id}"),
                None,
                &if_match(*if_revision),
            )
            .await?;
            if out == Output::Json {
                println!("{}", json!({"deleted": id}));
            } else {
                println!("deleted {id}");
            }
        }
        StudentCmd::List { limit, after, all } => {
            let mut after = *after;
            let mut records = Vec::new();
            let mut revision = Value::Null;
            loop {
                let mut path = format!("/students?limit={limit}");
                if let Some(a) = after {
                    path.push_str(&format!("&after={a}"));
                }
                let page = c.json(Method::GET, &path, None, &[]).await?;
                records.extend(page["students"].as_array().cloned().unwrap_or_default());
                if revision.is_null() {
                    revision = page["revision"].clone();
                }
                after = page["next_after"].as_i64();
                if !*all || after.is_none() {
                    break;
                }
            }
            match out {
                Output::Json => println!(
                    "{}",
                    json!({"students": records, "next_after": after, "revision": revision})
                ),
                Output::Table => {
                    print_records(&records, out, true);
                    if let Some(a) = after {
                        eprintln!("(more: --after {a}, or --all)");
                    }
                }
            }
        }
    }
    Ok(())
}

/// Prints records as a table (with a header) or as JSON (one document; an array for lists).
fn print_records(records: &[Value], out: Output, list: bool) {
    if out == Output::Json {
        match (list, records) {
            (false, [one]) => println!("{one}"),
            _ => println!("{}", Value::Array(records.to_vec())),
        }
        return;
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                r["id"].to_string(),
                r["name"].as_str().unwrap_or_default().to_owned(),
                r["score"].to_string(),
                r["revision"].to_string(),
            ]
        })
        .collect();
    print_table(&["ID", "NAME", "SCORE", "REVISION"], &rows);
}

/// Aligned columns.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

async fn cluster(c: &Client, cmd: &ClusterCmd, out: Output) -> Result<(), CtlError> {
    match cmd {
        ClusterCmd::Status => {
            let info = c.json(Method::GET, "/cluster", None, &[]).await?;
            if out == Output::Json {
                println!("{info}");
                return Ok(());
            }
            let leader = &info["leader"];
            let rows = vec![
                vec![
                    "node".into(),
                    format!(
                        "{} ({})",
                        text(&info["node"]["name"]),
                        text(&info["node"]["state"])
                    ),
                ],
                vec!["term".into(), info["node"]["term"].to_string()],
                vec![
                    "leader".into(),
                    if leader.is_null() {
                        "none".into()
                    } else {
                        format!("{} {}", text(&leader["name"]), text(&leader["addr"]))
                    },
                ],
                vec![
                    "voters".into(),
                    info["voters"].as_array().map_or(0, Vec::len).to_string(),
                ],
                vec![
                    "learners".into(),
                    info["learners"].as_array().map_or(0, Vec::len).to_string(),
                ],
                vec!["committed".into(), info["indexes"]["committed"].to_string()],
                vec!["applied".into(), info["indexes"]["applied"].to_string()],
                vec!["revision".into(), info["revision"].to_string()],
            ];
            print_table(&["FIELD", "VALUE"], &rows);
        }
        ClusterCmd::Members => {
            let info = c.json(Method::GET, "/cluster", None, &[]).await?;
            let leader = info["leader"]["id"].clone();
            let mut rows = Vec::new();
            let mut members = Vec::new();
            for (role, key) in [("voter", "voters"), ("learner", "learners")] {
                for m in info[key].as_array().cloned().unwrap_or_default() {
                    let is_leader = m["id"] == leader;
                    rows.push(vec![
                        m["id"].to_string(),
                        text(&m["name"]),
                        text(&m["addr"]),
                        role.into(),
                        if is_leader { "*".into() } else { String::new() },
                    ]);
                    members.push(json!({"id": m["id"], "name": m["name"], "addr": m["addr"], "role": role, "leader": is_leader}));
                }
            }
            match out {
                Output::Json => println!("{}", Value::Array(members)),
                Output::Table => print_table(&["ID", "NAME", "ADDR", "ROLE", "LEADER"], &rows),
            }
        }
        ClusterCmd::Leader => {
            let info = c.json(Method::GET, "/cluster", None, &[]).await?;
            let leader = &info["leader"];
            if leader.is_null() {
                return Err(CtlError::Api {
                    status: reqwest::StatusCode::SERVICE_UNAVAILABLE,
                    detail: format!("{} knows no leader now", text(&info["node"]["name"])),
                    problem: Value::Null,
                });
            }
            match out {
                Output::Json => println!("{leader}"),
                Output::Table => print_table(
                    &["ID", "NAME", "ADDR"],
                    &[vec![
                        leader["id"].to_string(),
                        text(&leader["name"]),
                        text(&leader["addr"]),
                    ]],
                ),
            }
        }
        ClusterCmd::Add { name, addr } => {
            let body = json!({"name": name, "addr": addr});
            let answer = c.json(Method::POST, "/cluster/members", Some(&body), &[]).await?;
            match out {
                Output::Json => println!("{answer}"),
                Output::Table => println!("added {name} ({addr})"),
            }
        }
        ClusterCmd::Remove { id } => {
            let answer = c
                .json(Method::DELETE, &format!("/cluster/members/{id}"), None, &[])
                .await?;
            match out {
                Output::Json => println!("{answer}"),
                Output::Table => println!("removed {id}"),
            }
        }
    }
    Ok(())
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}
