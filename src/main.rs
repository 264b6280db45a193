//! The `openraft-memory` binary: parses the command line, loads settings, starts logging
//! and runs a node until SIGTERM or SIGINT.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use openraft_memory::config::{Overrides, Settings, Sources};

/// A Raft-replicated store of student records.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a node (the default).
    Serve(Box<ServeArgs>),
    /// Check a local node's health: exit 0 when it answers 200 (for images without curl).
    Probe(ProbeArgs),
    /// Talk to a running cluster: records, cluster status and membership, backups, watch.
    Ctl(Box<openraft_memory::ctl::CtlArgs>),
    /// Load a running cluster and report throughput and latency percentiles.
    Bench(Box<openraft_memory::bench::BenchArgs>),
    /// Make a development CA, a certificate per node and (with --tokens) a tokens file.
    #[command(
        after_help = "Example: openraft-memory certs --out ./dev-tls --names node-0,node-1,node-2 --tokens\n\
        Then: OPENRAFT_MEMORY__TLS__PEER__CERT=./dev-tls/node-0.crt ...__KEY=./dev-tls/node-0.key \
        ...__CA=./dev-tls/ca.crt (and the same for tls.client), auth.tokens_file=./dev-tls/tokens.\n\
        Not for production: the CA key is written next to the certificates."
    )]
    Certs(CertsArgs),
    /// Print a new bearer token and the line that grants it a role in auth.tokens_file.
    Token(TokenArgs),
    /// Print the REST API's OpenAPI 3.1 document (what GET /openapi.json serves).
    #[command(after_help = "Example: openraft-memory openapi > api/openapi.json")]
    Openapi,
}

#[derive(Args, Debug)]
struct CertsArgs {
    /// Directory to write ca.crt, ca.key, NAME.crt and NAME.key into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Comma-separated node names; each certificate names its node, localhost and loopback.
    #[arg(long, value_delimiter = ',', required = true)]
    names: Vec<String>,
    /// Further names every certificate carries (e.g. *.db.default.svc.cluster.local).
    #[arg(long, value_delimiter = ',')]
    san: Vec<String>,
    /// Also write a tokens file and one token per role (admin, write, read, metrics).
    #[arg(long)]
    tokens: bool,
    /// Do nothing if OUT already holds ca.crt (a one-shot container run at every start).
    #[arg(long)]
    if_missing: bool,
    /// Give the files to UID:GID (e.g. 65532:65532, the image's user).
    #[arg(long, value_parser = parse_owner)]
    chown: Option<(u32, u32)>,
}

fn parse_owner(raw: &str) -> Result<(u32, u32), String> {
    let (uid, gid) = raw.split_once(':').ok_or("expected UID:GID, e.g. 65532:65532")?;
    let id = |s: &str| s.parse::<u32>().map_err(|_| format!("`{s}` is not a numeric id"));
    Ok((id(uid)?, id(gid)?))
}

#[derive(Args, Debug)]
struct TokenArgs {
    /// The role the token grants.
    #[arg(long, value_parser = ["read", "write", "admin", "metrics"])]
    role: String,
    /// A name for the token (shown in logs and 403 answers).
    #[arg(long)]
    name: String,
}

fn run_certs(args: &CertsArgs) -> ExitCode {
    use openraft_memory::security::certs::{DevSetOptions, write_dev_set};
    if args.if_missing && args.out.join("ca.crt").exists() {
        println!("{} holds a CA already; nothing written", args.out.display());
        return ExitCode::SUCCESS;
    }
    let options = DevSetOptions {
        sans: args.san.clone(),
        tokens: args.tokens,
        owner: args.chown,
    };
    match write_dev_set(&args.out, &args.names, &options) {
        Ok(files) => {
            for file in files {
                println!("{}", file.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("openraft-memory certs: {e}");
            ExitCode::from(1)
        }
    }
}

fn run_token(args: &TokenArgs) -> ExitCode {
    use openraft_memory::security::auth;
    let token = auth::new_token();
    println!("token: {token}");
    println!(
        "line for auth.tokens_file: {} {} {}",
        auth::hash_token(&token),
        args.role,
        args.name
    );
    ExitCode::SUCCESS
}

#[derive(Args, Debug)]
struct ProbeArgs {
    /// `live` (/livez) or `ready` (/readyz).
    #[arg(value_parser = ["live", "ready"])]
    what: String,
    /// The node's REST address.
    #[arg(long, default_value = "127.0.0.1:8080", env = "OPENRAFT_MEMORY_PROBE_ADDR")]
    addr: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 3)]
    timeout_secs: u64,
    /// Speak HTTPS (the default when OPENRAFT_MEMORY__TLS__CLIENT__CERT is set, as in the
    /// node's own container).
    #[arg(long, env = "OPENRAFT_MEMORY_PROBE_TLS")]
    tls: bool,
}

async fn run_probe(args: ProbeArgs) -> ExitCode {
    let path = if args.what == "live" { "/livez" } else { "/readyz" };
    let timeout = std::time::Duration::from_secs(args.timeout_secs);
    let tls =
        args.tls || std::env::var("OPENRAFT_MEMORY__TLS__CLIENT__CERT").is_ok_and(|v| !v.trim().is_empty());
    match openraft_memory::probe::probe(&args.addr, path, timeout, tls).await {
        Ok(body) => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("openraft-memory probe: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run_bench(args: &openraft_memory::bench::BenchArgs) -> ExitCode {
    match openraft_memory::bench::run(args).await {
        Ok(report) if args.json => match serde_json::to_string_pretty(&report) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("openraft-memory bench: {e}");
                ExitCode::from(1)
            }
        },
        Ok(report) => {
            print!("{}", report.table());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("openraft-memory bench: {e}");
            ExitCode::from(1)
        }
    }
}

/// Flags of `serve`; each overrides the config key named in its help.
#[derive(Args, Debug, Default)]
struct ServeArgs {
    /// TOML config file.
    #[arg(long, env = "OPENRAFT_MEMORY_CONFIG")]
    config: Option<PathBuf>,
    /// Node name; a trailing -N is the ordinal (node.name).
    #[arg(long)]
    node_name: Option<String>,
    /// REST listen address (http.addr).
    #[arg(long)]
    http_addr: Option<String>,
    /// Client gRPC listen address (grpc.addr).
    #[arg(long)]
    grpc_addr: Option<String>,
    /// Peer gRPC listen address (raft.addr).
    #[arg(long)]
    raft_addr: Option<String>,
    /// Host peers use to reach this node (raft.advertise_host).
    #[arg(long)]
    advertise_host: Option<String>,
    /// Comma-separated peer addresses, host:port of their peer port (cluster.peers).
    #[arg(long, value_delimiter = ',')]
    peers: Option<Vec<String>>,
    /// Peer discovery (discovery.mode).
    #[arg(long, value_parser = ["static", "dns"], ignore_case = true)]
    discovery: Option<String>,
    /// Headless Service DNS name; peers are its `_raft._tcp` SRV records (discovery.dns_name).
    #[arg(long)]
    dns_name: Option<String>,
    /// DNS server IP:PORT instead of /etc/resolv.conf (discovery.dns_server).
    #[arg(long)]
    dns_server: Option<String>,
    /// OTLP/gRPC endpoint for traces, e.g. http://localhost:4317 (tracing.otlp_endpoint).
    #[arg(long)]
    otlp_endpoint: Option<String>,
    /// Where the Raft log and snapshots live (storage.mode).
    #[arg(long, value_parser = ["memory", "disk"], ignore_case = true)]
    storage: Option<String>,
    /// Disk mode's data directory (storage.data_dir).
    #[arg(long)]
    data_dir: Option<String>,
    /// Backup ordinal 0 seeds a new cluster from: a file, an object URL, or `latest` under
    /// backup.target (storage.restore_from).
    #[arg(long)]
    restore_from: Option<String>,
    /// Scheduled backups to s3://bucket/prefix, gs://bucket/prefix or file:///dir
    /// (backup.target).
    #[arg(long)]
    backup_target: Option<String>,
    /// Log format (log.format).
    #[arg(long, value_parser = ["text", "json"], ignore_case = true)]
    log_format: Option<String>,
    /// Async worker threads, 0 for one per CPU (runtime.worker_threads).
    #[arg(long)]
    worker_threads: Option<String>,
}

impl ServeArgs {
    fn overrides(&self) -> Overrides {
        let mut o: Overrides = Vec::new();
        let mut set = |key, v: &Option<String>| {
            if let Some(v) = v {
                o.push((key, v.clone().into()));
            }
        };
        set("node.name", &self.node_name);
        set("http.addr", &self.http_addr);
        set("grpc.addr", &self.grpc_addr);
        set("raft.addr", &self.raft_addr);
        set("raft.advertise_host", &self.advertise_host);
        set("log.format", &self.log_format);
        set("storage.mode", &self.storage);
        set("storage.data_dir", &self.data_dir);
        set("storage.restore_from", &self.restore_from);
        set("backup.target", &self.backup_target);
        set("tracing.otlp_endpoint", &self.otlp_endpoint);
        set("discovery.mode", &self.discovery);
        set("discovery.dns_name", &self.dns_name);
        set("discovery.dns_server", &self.dns_server);
        set("runtime.worker_threads", &self.worker_threads);
        if let Some(peers) = &self.peers {
            o.push(("cluster.peers", peers.clone().into()));
        }
        o
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the node");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A runtime for the `probe` and `bench` subcommands (the node's own is sized by its settings).
fn default_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()
}

/// Where the flags' settings also come from, for `serve --help`.
const LAYERS: &str = "Every flag sets the config key named in its help. The same keys come from a TOML \
file (--config) and from the environment as OPENRAFT_MEMORY__SECTION__KEY (e.g. \
OPENRAFT_MEMORY__HTTP__ADDR=0.0.0.0:8080); flags win over the environment, which wins over \
the file, which wins over the defaults.";

/// The command line as clap sees it: each serve flag's help names its default (read from
/// the built-in defaults, so it cannot drift), and the top level lists the commands only.
fn command() -> clap::Command {
    use clap::CommandFactory;
    let with_default = |a: clap::Arg| {
        let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
        let key = help
            .rsplit_once('(')
            .and_then(|(_, k)| k.strip_suffix(')').or_else(|| k.strip_suffix(").")));
        match key.and_then(openraft_memory::config::default_of) {
            Some(d) if !d.is_empty() => a.help(format!("{help} [default: {d}]")),
            _ => a,
        }
    };
    Cli::command()
        .mut_args(|a| match a.get_id().as_str() {
            "help" | "version" => a,
            _ => a.hide(true),
        })
        .after_help("With no command, runs `serve`; its flags: openraft-memory serve --help")
        .mut_subcommand("serve", |c| c.mut_args(with_default).after_help(LAYERS))
}

/// jemalloc instead of the system allocator: every request, log entry and replication
/// message allocates, and under callgrind glibc's malloc and free were a fifth to a quarter
/// of a node's instructions per write; jemalloc took 13-16 % off the total, mimalloc less
/// (docs/performance.md). Not on MSVC, where jemalloc does not build.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    use clap::FromArgMatches;
    let cli = match Cli::from_arg_matches(&command().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let args = match cli.command {
        Some(Cmd::Serve(a)) => *a,
        Some(Cmd::Probe(p)) => return with_runtime(default_runtime(), run_probe(p)),
        Some(Cmd::Bench(b)) => return with_runtime(default_runtime(), run_bench(&b)),
        Some(Cmd::Ctl(c)) => {
            return with_runtime(default_runtime(), async move {
                ExitCode::from(openraft_memory::ctl::run(*c).await)
            });
        }
        Some(Cmd::Certs(c)) => return run_certs(&c),
        Some(Cmd::Token(t)) => return run_token(&t),
        Some(Cmd::Openapi) => {
            println!("{}", openraft_memory::openapi_json());
            return ExitCode::SUCCESS;
        }
        None => cli.serve,
    };
    let settings = match Settings::load(Sources {
        file: args.config.clone(),
        env: std::env::vars().collect(),
        overrides: args.overrides(),
    }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("openraft-memory: {e}");
            return ExitCode::from(2);
        }
    };
    let threads = settings.runtime.threads();
    // One thread: the current-thread scheduler, which runs every task on this thread
    // without the work-stealing machinery (no task queues shared between threads to lock
    // or steal from), and so spends fewer instructions per task wake-up.
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    with_runtime(runtime, serve(settings, threads))
}

fn with_runtime(
    runtime: std::io::Result<tokio::runtime::Runtime>,
    main: impl Future<Output = ExitCode>,
) -> ExitCode {
    match runtime {
        Ok(rt) => rt.block_on(main),
        Err(e) => {
            eprintln!("openraft-memory: cannot start the async runtime: {e}");
            ExitCode::from(1)
        }
    }
}

async fn serve(settings: Settings, worker_threads: usize) -> ExitCode {
    let _telemetry = match openraft_memory::telemetry::init(&settings.log, &settings.tracing) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("openraft-memory: {e}");
            return ExitCode::from(2);
        }
    };
    tracing::info!(worker_threads, "runtime started");
    for warning in &settings.warnings {
        tracing::warn!("{warning}");
    }
    let server = match openraft_memory::server::build(settings).await {
        Ok(s) => s,
        Err(e) => {
            // Once, through the log (which goes to stderr); exit 2 like every start-up error.
            tracing::error!("cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    match server.run(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("openraft-memory: {e}");
            ExitCode::from(1)
        }
    }
}
