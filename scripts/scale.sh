#!/usr/bin/env bash
# Scale of data (issue 7): loads RECORDS records (default 1,000,000) into a local 3-node
# in-memory cluster, then reports resident memory per node, the last snapshot's build time,
# and how long an empty fourth node takes to join and catch up (through a snapshot: the
# log behind it has been compacted). Not part of the test suite.
#
# Usage: scripts/scale.sh            RECORDS=200000 scripts/scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
RECORDS=${RECORDS:-1000000}
out=target/scale
mkdir -p "$out"
cargo build --release --quiet --bin openraft-memory
BIN=target/release/openraft-memory

pids=()
cleanup() {
  kill -TERM "${pids[@]}" 2>/dev/null || true
  pkill -TERM -f "node-name node-3" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM
BIN=$BIN scripts/local-cluster.sh 3 >"$out/cluster.log" 2>&1 &
pids+=($!)
wait_ready 8080 8081 8082 || { echo "cluster not ready; see $out/cluster.log" >&2; exit 1; }
leader=127.0.0.1:$((8080 + $(leader_index)))

echo "== loading $RECORDS records through $leader"
start=$(date +%s%N)
"$BIN" bench --targets "$leader" --workload create -c 64 --requests "$RECORDS" --warmup 0s
load_ms=$(( ($(date +%s%N) - start) / 1000000 ))

rss() { awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$(pgrep -f "node-name $1 " | head -1)/status"; }
echo "== resident memory with $RECORDS records"
for i in 0 1 2; do echo "node-$i: $(rss node-$i) MB"; done

snap=$(grep -h "built snapshot" target/local-cluster/node-*.log | sed 's/\x1b\[[0-9;]*m//g' | tail -1)
echo "== last snapshot built: $snap"

echo "== an empty node joins and catches up"
# Its own loopback address: under this much connection churn an outgoing socket on
# 127.0.0.1 may already hold any port of the ephemeral range (the peer ports are in it).
peers=127.0.0.1:25052,127.0.0.1:25062,127.0.0.1:25072,127.0.0.4:50052
join_start=$(date +%s%N)
"$BIN" serve --node-name node-3 --http-addr 127.0.0.4:8080 --grpc-addr 127.0.0.4:50051 \
  --raft-addr 127.0.0.4:50052 --peers "$peers" >"$out/node-3.log" 2>&1 &
for _ in $(seq 1 1200); do
  n=$(curl -sf "http://127.0.0.4:8080/metrics" 2>/dev/null | awk '/^openraft_memory_students / {print $2}')
  if [ "${n:-0}" -ge "$RECORDS" ] && curl -sf http://127.0.0.4:8080/readyz >/dev/null 2>&1; then break; fi
  sleep 0.1
done
join_ms=$(( ($(date +%s%N) - join_start) / 1000000 ))
echo "node-3 ready with ${n:-0} records after ${join_ms} ms ($(rss node-3) MB resident)"
grep -h "received snapshot\|installing snapshot" "$out/node-3.log" | sed 's/\x1b\[[0-9;]*m//g' | tail -2
echo
echo "summary: records=$RECORDS load_ms=$load_ms rss_mb=$(rss node-0),$(rss node-1),$(rss node-2),$(rss node-3) join_catch_up_ms=$join_ms" | tee "$out/summary.txt"
