#!/usr/bin/env bash
# What TLS and tokens cost: the local 3-node cluster, first plaintext, then with mutual TLS
# between the nodes, HTTPS and bearer tokens (TLS=1 scripts/local-cluster.sh), driven by the
# same `openraft-memory bench` against the leader, in one run. Prints writes and reads at
# 64 connections for both and the ratio TLS / plaintext.
#   scripts/bench-tls.sh                 (BIN=path to skip the build; DURATION=10s; CONNECTIONS=64)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN=target/release/openraft-memory
fi
duration=${DURATION:-10s}
conns=${CONNECTIONS:-64}
tls_dir=target/local-cluster/tls
out=$(mktemp -d)
cluster_pid=""
stop_cluster() {
  if [ -n "$cluster_pid" ]; then
    kill -TERM "$cluster_pid" 2>/dev/null || true
    wait "$cluster_pid" 2>/dev/null || true
    cluster_pid=""
  fi
}
trap 'stop_cluster; rm -rf "$out"' EXIT

for mode in plain tls; do
  tls=0; flags=(); scheme=http; curl_tls=()
  if [ "$mode" = tls ]; then
    tls=1; scheme=https
  fi
  BIN="$BIN" TLS=$tls scripts/local-cluster.sh >"$out/cluster-$mode.log" 2>&1 &
  cluster_pid=$!
  if [ "$mode" = tls ]; then
    for _ in $(seq 1 100); do [ -f "$tls_dir/admin.token" ] && break; sleep 0.1; done
    flags=(--cacert "$tls_dir/ca.crt" --token "$(cat "$tls_dir/admin.token")")
    curl_tls=(--cacert "$tls_dir/ca.crt")
  fi
  for _ in $(seq 1 300); do
    grep -q '"voters"' "$out/cluster-$mode.log" 2>/dev/null && break
    kill -0 "$cluster_pid" 2>/dev/null || { cat "$out/cluster-$mode.log"; exit 1; }
    sleep 0.1
  done
  leader=$(curl -s "${curl_tls[@]}" -H "Authorization: Bearer $(cat "$tls_dir/admin.token" 2>/dev/null || true)" \
    "$scheme://127.0.0.1:8080/cluster" | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"]["name"].split("-")[1])')
  target=127.0.0.1:$((8080 + leader))
  "$BIN" bench --targets "$target" --workload create -c "$conns" --duration "$duration" --json "${flags[@]}" >"$out/$mode-writes.json"
  "$BIN" bench --targets "$target" --workload get -c "$conns" --duration "$duration" --records 1000 --json "${flags[@]}" >"$out/$mode-reads.json"
  stop_cluster
done

python3 - "$out" "$conns" <<'PY'
import json, sys
out, conns = sys.argv[1], sys.argv[2]
r = {f"{m}-{w}": json.load(open(f"{out}/{m}-{w}.json")) for m in ("plain", "tls") for w in ("writes", "reads")}
print(f"| mode | writes/s @{conns} | p99 ms | reads/s @{conns} | p99 ms |")
print("|---|---|---|---|---|")
for m in ("plain", "tls"):
    w, rd = r[f"{m}-writes"], r[f"{m}-reads"]
    print(f"| {m} | {w['throughput']:.0f} | {w['latency_ms']['p99']:.2f} | {rd['throughput']:.0f} | {rd['latency_ms']['p99']:.2f} |")
print(f"| tls / plain | {r['tls-writes']['throughput'] / r['plain-writes']['throughput']:.3f} | | "
      f"{r['tls-reads']['throughput'] / r['plain-reads']['throughput']:.3f} | |")
for k, v in r.items():
    if v["errors"]:
        print(f"errors in {k}: {v['errors']}")
PY
