#!/usr/bin/env bash
# The performance benchmark (issue 7), in one run on one machine, with one load generator:
#   1. builds release: the server and the ceiling server (examples/echo.rs, axum + JSON, no
#      consensus);
#   2. starts the ceiling server and a local 3-node in-memory cluster;
#   3. loads each with `openraft-memory bench` (closed loop; DURATION per point) at 1, 16, 64
#      and 256 connections: REST creates to the ceiling and to the leader, then forwarded
#      writes (to a follower), linearizable and local reads, and gRPC creates at 64;
#   4. if wrk is installed, repeats the create points with `wrk -t2` (the issue's method);
#   5. prints the ratios to the ceiling and writes everything to target/bench/.
# Not part of the test suite: the numbers depend on the machine and on what else runs.
#
# Usage: scripts/bench.sh            DURATION=5s CONNS="1 16 64" scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNS=${CONNS:-"1 16 64 256"}
out=target/bench
mkdir -p "$out"
stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
report="$out/results-$stamp.md"
json="$out/results-$stamp.jsonl"

cargo build --release --quiet --bin openraft-memory --example echo
BIN=target/release/openraft-memory
ECHO=target/release/examples/echo

pids=()
cleanup() {
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

"$ECHO" 127.0.0.1:9090 2>"$out/echo.log" &
pids+=($!)
BIN=$BIN scripts/local-cluster.sh 3 >"$out/cluster.log" 2>&1 &
pids+=($!)

echo "waiting for the ceiling server and the cluster"
for _ in $(seq 1 150); do
  ready=0
  for p in 8080 8081 8082; do
    curl -sf "http://127.0.0.1:$p/readyz" >/dev/null 2>&1 && ready=$((ready + 1))
  done
  [ "$ready" = 3 ] && curl -sf -o /dev/null -X POST -H 'content-type: application/json' \
    -d '{"id":1,"name":"x","score":1}' http://127.0.0.1:9090/students && break
  sleep 0.2
done
[ "$ready" = 3 ] || { echo "cluster not ready; see $out/cluster.log" >&2; exit 1; }

# node-i: REST 8080+i, peer 25052+10i (scripts/local-cluster.sh)
leader_raft=$(curl -s http://127.0.0.1:8080/cluster | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"]["addr"])')
leader_i=$(( (${leader_raft##*:} - 25052) / 10 ))
follower_i=$(( (leader_i + 1) % 3 ))
leader=127.0.0.1:$((8080 + leader_i))
follower=127.0.0.1:$((8080 + follower_i))
leader_grpc=127.0.0.1:$((25051 + 10 * leader_i))
echo "leader node-$leader_i ($leader), follower node-$follower_i ($follower)"

# bench LABEL TARGET ARGS... : one point with the built-in driver; appends JSON and a row.
rows=()
bench() {
  local label=$1 target=$2
  shift 2
  local r
  r=$("$BIN" bench --targets "$target" --duration "$DURATION" --json "$@")
  echo "{\"label\":\"$label\",\"report\":$(echo "$r" | tr -d '\n ')}" >>"$json"
  local row
  row=$(echo "$r" | python3 -c '
import json, sys
r = json.load(sys.stdin); l = r["latency_ms"]; e = sum(r["errors"].values())
print("%.0f %.3f %.3f %d" % (r["throughput"], l["p50"], l["p99"], e))')
  rows+=("$label $row")
  printf '%-34s %10s req/s  p50 %7s ms  p99 %7s ms  errors %s\n' "$label" $row
}

echo "== built-in driver (openraft-memory bench), $DURATION per point"
for c in $CONNS; do
  bench "ceiling create c=$c" 127.0.0.1:9090 --workload create -c "$c"
  bench "leader create c=$c" "$leader" --workload create -c "$c"
done
bench "follower create c=64" "$follower" --workload create -c 64
bench "ceiling get c=64" 127.0.0.1:9090 --workload get -c 64 --records 1
bench "leader get linearizable c=64" "$leader" --workload get -c 64
bench "follower get linearizable c=64" "$follower" --workload get -c 64
bench "follower get local c=64" "$follower" --workload get -c 64 --local-reads
bench "leader grpc create c=64" "$leader_grpc" --protocol grpc --workload create -c 64

wrk_rows=()
if command -v wrk >/dev/null 2>&1; then
  echo "== wrk -t2 (the issue's method), $DURATION per point"
  for c in $CONNS; do
    t=2; [ "$c" -lt 2 ] && t=1
    for pair in "ceiling:127.0.0.1:9090" "leader:$leader"; do
      name=${pair%%:*}; addr=${pair#*:}
      line=$(wrk -t"$t" -c"$c" -d"$DURATION" -s scripts/wrk/create-student.lua "http://$addr" | grep '^WRK' | cut -d' ' -f2-)
      wrk_rows+=("wrk $name create c=$c $line")
      printf '%-34s %10s req/s  p50 %7s ms  p99 %7s ms  errors %s\n' "wrk $name create c=$c" $line
    done
  done
fi

# Ratios against the ceiling measured in this same run.
{
  echo "# openraft-memory benchmark, $stamp"
  echo
  echo "Machine: $(nproc) cores, $(uname -sr); load generator and all servers share it."
  echo "Command: DURATION=$DURATION CONNS=\"$CONNS\" scripts/bench.sh"
  echo
  echo "| point | req/s | p50 ms | p99 ms | errors | × ceiling |"
  echo "|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}" "${wrk_rows[@]}" | python3 -c '
import sys
rows = [l.split() for l in sys.stdin if l.strip()]
def key(words): return " ".join(words)
data = {}
for r in rows:
    label = " ".join(r[:-4]); data[label] = r[-4:]
def ceiling(label):
    parts = label.split()
    c = parts[-1]
    prefix = "wrk " if label.startswith("wrk ") else ""
    kind = "get" if " get" in label else "create"
    return data.get(f"{prefix}ceiling {kind} {c}")
for label, (tput, p50, p99, err) in data.items():
    ceil = ceiling(label)
    ratio = f"{float(tput) / float(ceil[0]):.2f}" if ceil and float(ceil[0]) > 0 and "ceiling" not in label else ""
    print(f"| {label} | {tput} | {p50} | {p99} | {err} | {ratio} |")
'
} >"$report"
echo
cat "$report"
echo
echo "results: $report (table), $json (driver JSON)"
