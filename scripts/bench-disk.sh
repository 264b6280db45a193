#!/usr/bin/env bash
# Disk-mode write benchmark against etcd (issue 8), in one run on one machine:
#   1. builds release and starts a local 3-node cluster in disk mode (data under $DATA);
#   2. starts a 3-member etcd cluster (Debian's etcd-server) with its data on the same disk;
#   3. loads the leader of each with `wrk -t2` and a Lua body script at 1, 16 and 64
#      connections (REST creates of new records; etcd v3 puts of new keys through its JSON
#      gateway), DURATION per point;
#   4. prints throughput, p50 and p99 side by side with the ratio, and writes them to
#      target/bench/disk-<time>.md.
# Needs wrk and etcd-server (apt-get install wrk etcd-server). Not part of the test suite.
#
# Usage: scripts/bench-disk.sh          DURATION=5s CONNS="1 16 64" DATA=/mnt/disk/x scripts/bench-disk.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNS=${CONNS:-"1 16 64"}
DATA=${DATA:-target/bench-disk}
out=target/bench
mkdir -p "$out"
report="$out/disk-$(date -u +%Y-%m-%dT%H%M%SZ).md"
for tool in wrk etcd curl python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "needs $tool (apt-get install wrk etcd-server curl)" >&2; exit 1; }
done

cargo build --release --quiet --bin openraft-memory
rm -rf "$DATA" target/local-cluster/node-*
mkdir -p "$DATA"

pids=()
cleanup() {
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# Our cluster: node-i REST 127.0.0.1:(8080+i), peer :(25052+10i); data target/local-cluster/node-i.
if [ "$DATA" != target/bench-disk ]; then
  echo "note: our nodes keep their data in target/local-cluster/; put target/ on the same disk as \$DATA" >&2
fi
STORAGE=disk BIN=target/release/openraft-memory scripts/local-cluster.sh 3 >"$out/disk-cluster.log" 2>&1 &
pids+=($!)

# etcd: member i client 127.0.0.1:(23791+i), peer :(23801+i).
initial=""
for i in 0 1 2; do initial+="${initial:+,}e$i=http://127.0.0.1:$((23801 + i))"; done
for i in 0 1 2; do
  etcd --name "e$i" --data-dir "$DATA/etcd-$i" \
    --listen-client-urls "http://127.0.0.1:$((23791 + i))" \
    --advertise-client-urls "http://127.0.0.1:$((23791 + i))" \
    --listen-peer-urls "http://127.0.0.1:$((23801 + i))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((23801 + i))" \
    --initial-cluster "$initial" --initial-cluster-state new \
    --log-level error >"$out/etcd-$i.log" 2>&1 &
  pids+=($!)
done

echo "waiting for both clusters"
for _ in $(seq 1 200); do
  ready=0
  for p in 8080 8081 8082; do curl -sf "http://127.0.0.1:$p/readyz" >/dev/null 2>&1 && ready=$((ready + 1)); done
  for p in 23791 23792 23793; do curl -sf "http://127.0.0.1:$p/health" 2>/dev/null | grep -q true && ready=$((ready + 1)); done
  [ "$ready" = 6 ] && break
  sleep 0.2
done
[ "$ready" = 6 ] || { echo "clusters not ready; see $out/disk-cluster.log and $out/etcd-*.log" >&2; exit 1; }

leader_raft=$(curl -s http://127.0.0.1:8080/cluster | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"]["addr"])')
ours=127.0.0.1:$((8080 + (${leader_raft##*:} - 25052) / 10))
etcd_leader=""
for p in 23791 23792 23793; do
  is_leader=$(curl -s -X POST -d '{}' "http://127.0.0.1:$p/v3/maintenance/status" |
    python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["leader"] == s["header"]["member_id"])')
  [ "$is_leader" = True ] && etcd_leader=127.0.0.1:$p
done
[ -n "$etcd_leader" ] || { echo "no etcd leader" >&2; exit 1; }
echo "our leader $ours, etcd leader $etcd_leader"


# One point: wrk against ADDR with SCRIPT at C connections → "req/s p50 p99 errors".
point() {
  local addr=$1 script=$2 c=$3 t=2
  [ "$c" -lt 2 ] && t=1
  wrk -t"$t" -c"$c" -d"$DURATION" -s "$script" "http://$addr" | grep '^WRK' | cut -d' ' -f2-
}

{
  echo "# Disk mode vs etcd $(etcd --version | head -1 | awk '{print $3}'), $(date -u +%Y-%m-%d), $(nproc) cores, wrk -t2, $DURATION per point"
  echo
  echo "| conns | openraft-memory disk req/s | p50 ms | p99 ms | errors | etcd req/s | p50 ms | p99 ms | errors | throughput ratio |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
} >"$report"
for c in $CONNS; do
  read -r o_rps o_p50 o_p99 o_err <<<"$(point "$ours" scripts/wrk/create-student.lua "$c")"
  read -r e_rps e_p50 e_p99 e_err <<<"$(point "$etcd_leader" scripts/wrk/etcd-put.lua "$c")"
  ratio=$(python3 -c "print('%.2f' % ($o_rps / max($e_rps, 1)))")
  echo "| $c | $o_rps | $o_p50 | $o_p99 | $o_err | $e_rps | $e_p50 | $e_p99 | $e_err | ${ratio}× |" >>"$report"
  printf 'c=%-4s ours %7s req/s p50 %6s p99 %7s err %s | etcd %7s req/s p50 %6s p99 %7s err %s | %s×\n' \
    "$c" "$o_rps" "$o_p50" "$o_p99" "$o_err" "$e_rps" "$e_p50" "$e_p99" "$e_err" "$ratio"
done
syncs=$(curl -s "http://$ours/metrics" | python3 -c '
import sys
v = {l.split()[0]: float(l.split()[1]) for l in sys.stdin if l.startswith("openraft_memory_log_sync_records_")}
print("%.0f syncs, %.1f records per sync" % (v.get("openraft_memory_log_sync_records_count", 0),
  v.get("openraft_memory_log_sync_records_sum", 0) / max(v.get("openraft_memory_log_sync_records_count", 1), 1)))')
echo "leader journal: $syncs" | tee -a "$report"
echo "written to $report"
