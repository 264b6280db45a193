//! The settings: defaults, layering, derived values and validation messages.

use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_are_a_single_local_node() {
    let s = Settings::load(Sources::default()).expect("defaults load");
    assert_eq!(s.http.addr.to_string(), "127.0.0.1:8080");
    assert_eq!(s.grpc.addr.to_string(), "127.0.0.1:50051");
    assert!(s.cluster.peers.is_empty());
    assert!(!s.node.name.is_empty());
    assert_eq!(s.advertise_addr(), "127.0.0.1:50052");
    s.openraft_config().expect("valid raft config");
}

#[test]
fn layers_apply_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        "[http]\naddr = \"127.0.0.1:9000\"\n[grpc]\naddr = \"127.0.0.1:9001\"\n",
    )
    .expect("write");
    let s = Settings::load(Sources {
        file: Some(file),
        env: env(&[
            ("OPENRAFT_MEMORY__GRPC__ADDR", "127.0.0.1:9101"),
            ("OPENRAFT_MEMORY__CLUSTER__PEERS", "a-1:1,b-2:2"),
            ("OPENRAFT_MEMORY__RAFT__HEARTBEAT_INTERVAL", "50ms"),
            ("POD_NAME", "db-2"),
        ]),
        overrides: vec![("grpc.addr", "127.0.0.1:9201".into())],
    })
    .expect("loads");
    assert_eq!(s.http.addr.to_string(), "127.0.0.1:9000");
    assert_eq!(s.grpc.addr.to_string(), "127.0.0.1:9201");
    assert_eq!(s.cluster.peers, vec!["a-1:1", "b-2:2"]);
    assert_eq!(s.raft.heartbeat_interval, Duration::from_millis(50));
    assert_eq!(s.raft.commit_hold, Duration::from_millis(2));
    assert_eq!(s.node.name, "db-2");
}

#[test]
fn dns_discovery_advertises_the_pod_name_under_the_service() {
    let s = Settings::load(Sources {
        env: env(&[
            ("POD_NAME", "db-1"),
            ("OPENRAFT_MEMORY__DISCOVERY__MODE", "dns"),
            ("OPENRAFT_MEMORY__DISCOVERY__DNS_NAME", "db.ns.svc.cluster.local"),
            ("OPENRAFT_MEMORY__DISCOVERY__DNS_SERVER", "127.0.0.1:5353"),
        ]),
        ..Default::default()
    })
    .expect("loads");
    assert_eq!(s.advertise_addr(), "db-1.db.ns.svc.cluster.local:50052");
    assert_eq!(
        s.discovery.dns_server,
        Some("127.0.0.1:5353".parse().expect("addr"))
    );
    let err = Settings::load(Sources {
        env: env(&[("POD_NAME", "db-1"), ("OPENRAFT_MEMORY__DISCOVERY__MODE", "dns")]),
        ..Default::default()
    })
    .expect_err("dns without a name");
    assert!(err.to_string().contains("discovery.dns_name"), "{err}");
    let err = Settings::load(Sources {
        env: env(&[("OPENRAFT_MEMORY__DISCOVERY__DNS_SERVER", "nope")]),
        ..Default::default()
    })
    .expect_err("bad server");
    assert!(err.to_string().contains("dns_server"), "{err}");
}

#[test]
fn write_batching_limits_default_by_storage_mode_and_refuse_zero_batches() {
    let s = Settings::load(Sources::default()).expect("defaults load");
    assert_eq!((s.raft.max_batch_writes, s.raft.max_in_flight_batches), (256, 4));
    let disk = Settings::load(Sources {
        env: env(&[
            ("OPENRAFT_MEMORY__STORAGE__MODE", "disk"),
            ("OPENRAFT_MEMORY__STORAGE__DATA_DIR", "/tmp/x"),
        ]),
        ..Default::default()
    })
    .expect("disk loads");
    assert_eq!(disk.raft.max_in_flight_batches, 2);
    let set = Settings::load(Sources {
        env: env(&[("OPENRAFT_MEMORY__RAFT__MAX_IN_FLIGHT_BATCHES", "7")]),
        ..Default::default()
    })
    .expect("explicit value loads");
    assert_eq!(set.raft.max_in_flight_batches, 7);
    let err = Settings::load(Sources {
        env: env(&[("OPENRAFT_MEMORY__RAFT__MAX_BATCH_WRITES", "0")]),
        ..Default::default()
    })
    .expect_err("zero is refused");
    assert!(err.to_string().contains("raft.max_batch_writes"), "{err}");
}

#[test]
fn worker_threads_default_to_the_cpus_and_refuse_absurd_counts() {
    let s = Settings::load(Sources::default()).expect("defaults load");
    assert_eq!(s.runtime.worker_threads, 0);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(s.runtime.threads(), cpus);
    let one = Settings::load(Sources {
        overrides: vec![("runtime.worker_threads", "1".into())],
        ..Default::default()
    })
    .expect("an explicit count loads");
    assert_eq!(one.runtime.threads(), 1);
    let err = Settings::load(Sources {
        env: env(&[("OPENRAFT_MEMORY__RUNTIME__WORKER_THREADS", "5000")]),
        ..Default::default()
    })
    .expect_err("too many threads");
    assert!(err.to_string().contains("runtime.worker_threads"), "{err}");
    let err = Settings::load(Sources {
        env: env(&[("OPENRAFT_MEMORY__RUNTIME__WORKER_THREADS", "many")]),
        ..Default::default()
    })
    .expect_err("not a number");
    assert!(err.to_string().contains("worker_threads"), "{err}");
}

/// The config the Helm chart renders (committed in deploy/kubernetes) must load.
#[test]
fn the_helm_charts_config_loads() {
    let rendered = include_str!("../../deploy/kubernetes/openraft-memory.yaml");
    let toml: String = rendered
        .lines()
        .skip_while(|l| !l.contains("config.toml: |"))
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .map(|l| format!("{}\n", &l[4..]))
        .collect();
    assert!(toml.contains("[discovery]"), "found the ConfigMap: {toml}");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("config.toml");
    std::fs::write(&file, toml).expect("write");
    let s = Settings::load(Sources {
        file: Some(file),
        env: env(&[("POD_NAME", "openraft-memory-1")]),
        ..Default::default()
    })
    .expect("the chart's config is valid");
    assert_eq!(s.discovery.mode, DiscoveryMode::Dns);
    assert_eq!(
        s.advertise_addr(),
        "openraft-memory-1.openraft-memory-headless.default.svc.cluster.local:50052"
    );
    assert_eq!(s.http.addr.to_string(), "0.0.0.0:8080");
}

#[test]
fn bad_values_name_the_key() {
    let err = Settings::load(Sources {
        env: env(&[("OPENRAFT_MEMORY__HTTP__ADDR", "not-an-address")]),
        ..Default::default()
    })
    .expect_err("must fail");
    assert!(err.to_string().contains("http.addr"), "{err}");

    let err = Settings::load(Sources {
        env: env(&[("OPENRAFT_MEMORY__RAFT__ELECTION_TIMEOUT_MAX", "10ms")]),
        ..Default::default()
    })
    .expect_err("must fail");
    assert!(err.to_string().contains("raft.election_timeout_max"), "{err}");

    let err = Settings::load(Sources {
        overrides: vec![("cluster.peers", vec!["127.0.0.1:1".to_string()].into())],
        env: env(&[("POD_NAME", "nameless")]),
        ..Default::default()
    })
    .expect_err("must fail");
    assert!(err.to_string().contains("node.name"), "{err}");

    let err = Settings::load(Sources {
        env: env(&[("OPENRAFT_MEMORY__HTTP__NO_SUCH_KEY", "1")]),
        ..Default::default()
    })
    .expect_err("unknown keys are rejected");
    assert!(err.to_string().contains("no_such_key"), "{err}");
}

fn load_err(pairs: &[(&str, &str)]) -> String {
    Settings::load(Sources {
        env: env(pairs),
        ..Default::default()
    })
    .expect_err("must fail")
    .to_string()
}

#[test]
fn errors_show_what_a_valid_value_looks_like() {
    let e = load_err(&[("OPENRAFT_MEMORY__STORAGE__MODE", "bogus")]);
    assert!(
        e.contains("storage.mode") && e.contains("`memory`, `disk`"),
        "{e}"
    );
    let e = load_err(&[("OPENRAFT_MEMORY__DISCOVERY__MODE", "consul")]);
    assert!(e.contains("`static`, `dns`"), "{e}");
    let e = load_err(&[("OPENRAFT_MEMORY__LOG__FORMAT", "xml")]);
    assert!(e.contains("`text`, `json`"), "{e}");
    let e = load_err(&[("OPENRAFT_MEMORY__RAFT__WRITE_TIMEOUT", "5")]);
    assert!(
        e.contains("raft.write_timeout") && e.contains("`5s`, `250ms`"),
        "{e}"
    );
    let e = load_err(&[("OPENRAFT_MEMORY__HTTP__ADDR", "localhost:8080")]);
    assert!(e.contains("http.addr") && e.contains("not `localhost`"), "{e}");
    let e = load_err(&[("OPENRAFT_MEMORY__RAFT__ELECTION_TIMEOUT_MIN", "5s")]);
    assert!(
        e.contains("raft.election_timeout_max")
            && e.contains("350ms")
            && e.contains("raft.election_timeout_min")
            && e.contains("5s"),
        "both keys and both values: {e}"
    );
    let e = load_err(&[("OPENRAFT_MEMORY__RAFT__COMMIT_HOLD", "50ms")]);
    assert!(
        e.contains("raft.commit_hold") && e.contains("raft.heartbeat_interval") && e.contains("50ms"),
        "a hold as long as a heartbeat is refused: {e}"
    );
    // Upper case values of a choice are accepted, as a user would expect.
    let s = Settings::load(Sources {
        env: env(&[("OPENRAFT_MEMORY__STORAGE__MODE", "Memory")]),
        ..Default::default()
    })
    .expect("case does not matter");
    assert_eq!(s.storage.mode, StorageMode::Memory);
}

#[test]
fn an_unknown_environment_variable_of_ours_is_named_and_a_look_alike_is_warned_about() {
    let e = load_err(&[("OPENRAFT_MEMORY__HTTP__ADRR", "127.0.0.1:1")]);
    assert!(
        e.contains("OPENRAFT_MEMORY__HTTP__ADRR")
            && e.contains("settings in `http`: addr, header_read_timeout"),
        "{e}"
    );
    let e = load_err(&[("OPENRAFT_MEMORY__HTTPS__ADDR", "127.0.0.1:1")]);
    assert!(e.contains("no section `https`"), "{e}");
    let s = Settings::load(Sources {
        env: env(&[("OPENRAFT_MEMORY_HTTP_ADDR", "127.0.0.1:1")]),
        ..Default::default()
    })
    .expect("a look-alike is not an error");
    assert_eq!(s.http.addr.to_string(), "127.0.0.1:8080", "and it is not applied");
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains("OPENRAFT_MEMORY_HTTP_ADDR") && w.contains("double underscores")),
        "{:?}",
        s.warnings
    );
}

#[test]
fn a_reachable_peer_port_needs_peer_tls_or_an_explicit_insecure() {
    let err = load_err(&[("OPENRAFT_MEMORY__RAFT__ADDR", "0.0.0.0:50052")]);
    assert!(
        err.contains("raft.addr") && err.contains("tls.peer.insecure"),
        "{err}"
    );
    let insecure = Settings::load(Sources {
        env: env(&[
            ("OPENRAFT_MEMORY__RAFT__ADDR", "0.0.0.0:50052"),
            ("OPENRAFT_MEMORY__TLS__PEER__INSECURE", "true"),
        ]),
        ..Default::default()
    });
    assert!(insecure.is_ok(), "insecure is an explicit choice: {insecure:?}");
    let with_tls = Settings::load(Sources {
        env: env(&[
            ("OPENRAFT_MEMORY__RAFT__ADDR", "0.0.0.0:50052"),
            ("OPENRAFT_MEMORY__TLS__PEER__CERT", "/c.crt"),
            ("OPENRAFT_MEMORY__TLS__PEER__KEY", "/c.key"),
            ("OPENRAFT_MEMORY__TLS__PEER__CA", "/ca.crt"),
            (
                "OPENRAFT_MEMORY__TLS__PEER__ALLOWED_NAMES",
                "ops.example,admin.example",
            ),
        ]),
        ..Default::default()
    })
    .expect("peer TLS settings load (the files are read by the server)");
    assert_eq!(with_tls.tls.peer.allowed_names, ["ops.example", "admin.example"]);
}

#[test]
fn tls_settings_that_do_not_fit_together_are_named() {
    let err = load_err(&[("OPENRAFT_MEMORY__TLS__PEER__CERT", "/c.crt")]);
    assert!(err.contains("tls.peer") && err.contains("together"), "{err}");
    let err = load_err(&[("OPENRAFT_MEMORY__TLS__CLIENT__CERT", "/c.crt")]);
    assert!(err.contains("tls.client") && err.contains("together"), "{err}");
    let err = load_err(&[("OPENRAFT_MEMORY__TLS__CLIENT__CA", "/ca.crt")]);
    assert!(err.contains("tls.client.ca"), "{err}");
    let err = load_err(&[("OPENRAFT_MEMORY__TLS__RELOAD_INTERVAL", "10ms")]);
    assert!(err.contains("tls.reload_interval"), "{err}");
    for key in [
        "OPENRAFT_MEMORY__GRPC__REQUEST_TIMEOUT",
        "OPENRAFT_MEMORY__GRPC__KEEPALIVE_INTERVAL",
    ] {
        let err = load_err(&[(key, "0s")]);
        assert!(err.contains("grpc."), "{key}: {err}");
    }
    for key in [
        "OPENRAFT_MEMORY__GRPC__MAX_CONCURRENT_STREAMS",
        "OPENRAFT_MEMORY__GRPC__MAX_CONNECTIONS",
        "OPENRAFT_MEMORY__RAFT__MAX_QUEUED_WRITES",
        "OPENRAFT_MEMORY__RAFT__MAX_QUEUED_READS",
    ] {
        let err = load_err(&[(key, "0")]);
        assert!(err.contains("must be at least 1"), "{key}: {err}");
    }
}

#[test]
fn backup_targets_and_restore_sources_are_checked() {
    let s = Settings::load(Sources {
        env: env(&[
            ("OPENRAFT_MEMORY__BACKUP__TARGET", "s3://db-backups/prod"),
            ("OPENRAFT_MEMORY__STORAGE__RESTORE_FROM", "latest"),
        ]),
        ..Default::default()
    })
    .expect("a target and restore from latest");
    assert_eq!(s.backup.interval, Duration::from_secs(600));
    assert_eq!(s.backup.keep, 10);
    assert_eq!(s.storage.restore_source(), RestoreSource::Latest);
    let source = |v: &str| {
        Settings::load(Sources {
            env: env(&[("OPENRAFT_MEMORY__STORAGE__RESTORE_FROM", v)]),
            ..Default::default()
        })
        .expect("loads")
        .storage
        .restore_source()
    };
    assert_eq!(source(""), RestoreSource::Nothing);
    assert_eq!(source("/b.snapshot"), RestoreSource::File("/b.snapshot".into()));
    assert_eq!(
        source("gs://b/p/openraft-memory-1-2-3.snapshot"),
        RestoreSource::Object("gs://b/p/openraft-memory-1-2-3.snapshot".into())
    );
    for (pairs, key, says) in [
        (
            vec![("OPENRAFT_MEMORY__BACKUP__TARGET", "ftp://x/y")],
            "backup.target",
            "s3://bucket/prefix",
        ),
        (
            vec![("OPENRAFT_MEMORY__BACKUP__TARGET", "s3://")],
            "backup.target",
            "names no bucket",
        ),
        (
            vec![("OPENRAFT_MEMORY__BACKUP__TARGET", "file://relative/dir")],
            "backup.target",
            "absolute path",
        ),
        (
            vec![
                ("OPENRAFT_MEMORY__BACKUP__TARGET", "s3://b/p"),
                ("OPENRAFT_MEMORY__BACKUP__INTERVAL", "100ms"),
            ],
            "backup.interval",
            "at least 1s",
        ),
        (
            vec![
                ("OPENRAFT_MEMORY__BACKUP__TARGET", "s3://b/p"),
                ("OPENRAFT_MEMORY__BACKUP__KEEP", "0"),
            ],
            "backup.keep",
            "at least 1",
        ),
        (
            vec![("OPENRAFT_MEMORY__STORAGE__RESTORE_FROM", "latest")],
            "storage.restore_from",
            "backup.target",
        ),
        (
            vec![("OPENRAFT_MEMORY__STORAGE__RESTORE_FROM", "http://x/y")],
            "storage.restore_from",
            "s3://",
        ),
    ] {
        let err = load_err(&pairs);
        assert!(err.contains(key) && err.contains(says), "{pairs:?}: {err}");
    }
}
