#!/usr/bin/env bash
# A/B comparison of two server binaries on this machine, alternating, so that drift in
# what else the machine runs hits both alike: ROUNDS times, for A then B (B then A on even
# rounds), start a local 3-node in-memory cluster with that binary, load its leader with
# REST creates at 64 connections and linearizable gets at 64 connections, stop it. The
# load driver is always B's `bench` subcommand. Prints each run, the median per binary
# and B / A.
#
# Usage: scripts/ab.sh OLD_BIN NEW_BIN         ROUNDS=5 DURATION=10s scripts/ab.sh A B
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
A=$1
B=$2
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
out=target/ab
mkdir -p "$out"
results="$out/results-$(date -u +%Y-%m-%dT%H%M%SZ).txt"

run_one() { # run_one NAME BIN
  local name=$1 bin=$2
  BIN=$bin scripts/local-cluster.sh 3 >"$out/cluster-$name.log" 2>&1 &
  local cluster=$!
  if ! wait_ready 8080 8081 8082; then
    kill -TERM "$cluster" 2>/dev/null || true
    wait "$cluster" 2>/dev/null || true
    echo "cluster of $name not ready; see $out/cluster-$name.log" >&2
    exit 1
  fi
  local leader=127.0.0.1:$((8080 + $(leader_index)))
  local w r
  w=$("$B" bench --targets "$leader" --workload create -c 64 --duration "$DURATION" --json |
    python3 -c 'import json,sys; print("%.0f" % json.load(sys.stdin)["throughput"])')
  r=$("$B" bench --targets "$leader" --workload get -c 64 --duration "$DURATION" --json |
    python3 -c 'import json,sys; print("%.0f" % json.load(sys.stdin)["throughput"])')
  kill -TERM "$cluster" 2>/dev/null || true
  wait "$cluster" 2>/dev/null || true
  echo "$name writes@64 $w reads@64 $r" | tee -a "$results"
}

for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then
    run_one A "$A"
    run_one B "$B"
  else
    run_one B "$B"
    run_one A "$A"
  fi
done

python3 - "$results" <<'EOF'
import statistics, sys
runs = {"A": {"w": [], "r": []}, "B": {"w": [], "r": []}}
for line in open(sys.argv[1]):
    name, _, w, _, r = line.split()
    runs[name]["w"].append(float(w)); runs[name]["r"].append(float(r))
for k, label in (("w", "writes@64"), ("r", "reads@64")):
    a, b = statistics.median(runs["A"][k]), statistics.median(runs["B"][k])
    print(f"{label}: A median {a:.0f} req/s, B median {b:.0f} req/s, B/A {b / a:.3f}")
EOF
echo "runs: $results"
