#!/usr/bin/env bash
# openraft-memory against OpenRaft's own example (examples/raft-kv-memstore), in one run on
# one machine with one load generator (issue 20):
#   1. builds both in release: ours from this checkout, the example from a checkout of the
#      OpenRaft repository you name (OPENRAFT_SRC; never vendored here);
#   2. starts one 3-node in-memory cluster at a time on loopback and drives its leader with
#      `wrk -t2` and the same Lua helpers (a new record / key per request): ROUNDS rounds of
#      64 connections and 1 connection, DURATION each, alternating the systems so machine
#      noise hits both alike; for ours also writes sent to a follower (forwarded);
#   3. reads the CPU the cluster's own processes spent (utime + stime from /proc, summed over
#      the three nodes) around each point and divides it by the acknowledged writes;
#   4. then, with both clusters running side by side (ours idle while the example is
#      loaded and the other way round), SLICES short 1-connection slices (SLICE each),
#      alternating between the two: the p50 of a lone write moves with the host from one
#      minute to the next by as much as the gap being measured, and slices taken seconds
#      apart see the same host;
#   5. prints the tables, with ratios to the example, and writes them to target/bench/.
# Not part of the test suite: the numbers depend on the machine and what else runs on it.
#
# Usage: OPENRAFT_SRC=/path/to/openraft scripts/bench-compare.sh
#        DURATION=10s ROUNDS=2 WORKER_THREADS=0 ...   (0: the runtime's default threads)
#        SLICES=10 SLICE=2s ...                       (the interleaved 1-connection slices)
#        BASELINE_BIN=/tmp/openraft-memory-old ...    (also runs that build of ours, e.g. from
#                                                      an earlier commit, in the same rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OPENRAFT_SRC:?set OPENRAFT_SRC to a checkout of github.com/databendlabs/openraft}"
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-2}
SLICES=${SLICES:-10}
SLICE=${SLICE:-2s}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
out=target/bench
mkdir -p "$out"
stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
report="$out/compare-$stamp.md"
example_dir="$OPENRAFT_SRC/examples/raft-kv-memstore"

cargo build --release --quiet --bin openraft-memory
# The OpenRaft repository pins a nightly toolchain (rust-toolchain); its example builds with
# the stable one this project uses, which is also the only one a machine without internet has.
toolchain=$(rustup show active-toolchain 2>/dev/null | cut -d' ' -f1 || true)
RUSTUP_TOOLCHAIN=${EXAMPLE_TOOLCHAIN:-${toolchain:-stable}} \
  cargo build --release --quiet --manifest-path "$example_dir/Cargo.toml"
BIN=target/release/openraft-memory
BASELINE_BIN=${BASELINE_BIN:-}
if [ -n "$BASELINE_BIN" ]; then
  [ -x "$BASELINE_BIN" ] || { echo "BASELINE_BIN=$BASELINE_BIN is not an executable" >&2; exit 1; }
  # local-cluster.sh and pgrep tell the builds apart by their paths.
  BASELINE_BIN=$(realpath "$BASELINE_BIN")
fi
EXAMPLE="$example_dir/target/release/raft-key-value"
hz=$(getconf CLK_TCK)

pids=()
stop_all() {
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  pids=()
}
trap stop_all EXIT INT TERM

# cpu_ticks PID... : utime + stime of the processes, in clock ticks.
cpu_ticks() {
  local total=0 p
  for p in "$@"; do
    # Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
    read -r -a f < <(sed 's/^.*) //' "/proc/$p/stat")
    total=$((total + f[11] + f[12]))
  done
  echo "$total"
}

# point NAME URL SCRIPT CONNS PID... : one wrk point; prints "req/s p50 p99 errors cpu_us_per_write".
point() {
  local name=$1 url=$2 script=$3 conns=$4
  shift 4
  local before after line
  before=$(cpu_ticks "$@")
  # wrk refuses more threads than connections.
  local threads=$((conns < 2 ? 1 : 2))
  line=$(wrk -t"$threads" -c"$conns" -d"$DURATION" -s "$script" "$url" 2>&1 | grep '^WRK' || true)
  after=$(cpu_ticks "$@")
  [ -n "$line" ] || { echo "wrk produced no summary for $name" >&2; echo "0 0 0 0 0"; return; }
  set -- $line
  python3 - "$2" "$3" "$4" "$5" "$((after - before))" "$hz" "$DURATION" <<'EOF'
import sys
rps, p50, p99, errors, ticks, hz, duration = sys.argv[1:]
seconds = float(duration.rstrip("s"))
acked = max(float(rps) * seconds - float(errors), 1)
print(rps, p50, p99, errors, f"{int(ticks) / int(hz) * 1e6 / acked:.0f}")
EOF
}

# start_ours BIN : a local 3-node cluster of that build.
start_ours() {
  local bin=$1
  WORKER_THREADS=${WORKER_THREADS:-1} BIN=$bin scripts/local-cluster.sh 3 >"$out/compare-ours.log" 2>&1 &
  pids+=($!)
  . scripts/lib.sh
  wait_ready 8080 8081 8082 || { echo "our cluster is not ready; see $out/compare-ours.log" >&2; exit 1; }
  leader_i=$(leader_index)
  ours_leader=http://127.0.0.1:$((8080 + leader_i))
  ours_follower=http://127.0.0.1:$((8080 + (leader_i + 1) % 3))
  mapfile -t ours_pids < <(pgrep -f "$bin serve --node-name node-")
}

start_example() {
  local i
  for i in 1 2 3; do
    RUST_LOG=error "$EXAMPLE" --id "$i" --api-addr "127.0.0.1:2100$i" --raft-addr "127.0.0.1:2200$i" \
      >"$out/compare-example-$i.log" 2>&1 &
    pids+=($!)
    example_pids+=($!)
  done
  local rpc=(curl -sf -H 'content-type: application/json')
  for _ in $(seq 1 100); do "${rpc[@]}" http://127.0.0.1:21001/metrics >/dev/null 2>&1 && break; sleep 0.1; done
  "${rpc[@]}" -d '[]' http://127.0.0.1:21001/init >/dev/null
  for i in 2 3; do
    "${rpc[@]}" -d "{\"node_id\": $i, \"api_addr\": \"127.0.0.1:2100$i\", \"raft_addr\": \"127.0.0.1:2200$i\"}" \
      http://127.0.0.1:21001/add-learner >/dev/null
  done
  "${rpc[@]}" -d '[1, 2, 3]' http://127.0.0.1:21001/change-membership >/dev/null
}

declare -A results
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round: OpenRaft example"
  example_pids=()
  start_example
  for c in 64 1; do
    results[example,$c,$round]=$(point example http://127.0.0.1:21001 scripts/wrk/kv-set.lua "$c" "${example_pids[@]}")
  done
  stop_all
  for build in ours ${BASELINE_BIN:+baseline}; do
    echo "round $round: openraft-memory ($build)"
    bin=$BIN
    [ "$build" = ours ] || bin=$BASELINE_BIN
    fwd=forwarded
    [ "$build" = ours ] || fwd=baseline-forwarded
    start_ours "$bin"
    for c in 64 1; do
      results[$build,$c,$round]=$(point "$build" "$ours_leader" scripts/wrk/create-student.lua "$c" "${ours_pids[@]}")
    done
    results[$fwd,64,$round]=$(point "$fwd" "$ours_follower" scripts/wrk/create-student.lua 64 "${ours_pids[@]}")
    stop_all
  done
done

{
  echo "# openraft-memory vs OpenRaft raft-kv-memstore ($(git -C "$OPENRAFT_SRC" log -1 --format=%h 2>/dev/null || echo '?')), $(date -u +%Y-%m-%d), $(nproc) cores, wrk -t2 (-t1 at 1 connection), $DURATION per point, worker threads ${WORKER_THREADS:-1} per node${BASELINE_BIN:+; baseline: $BASELINE_BIN}"
  echo
  echo "| round | system | conns | req/s | p50 ms | p99 ms | errors | CPU µs / write | req/s ratio | CPU ratio | p50 ratio |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  for round in $(seq 1 "$ROUNDS"); do
    for c in 64 1; do
      read -r e_rps e_p50 _ _ e_cpu <<<"${results[example,$c,$round]}"
      for sys in example ours forwarded baseline baseline-forwarded; do
        [ -n "${results[$sys,$c,$round]:-}" ] || continue
        read -r rps p50 p99 err cpu <<<"${results[$sys,$c,$round]}"
        ratios=$(python3 -c "r,c,p,er,ec,ep=map(float,'$rps $cpu $p50 $e_rps $e_cpu $e_p50'.split()); q=lambda a,b: f'{a/b:.2f}x' if b else 'n/a'; print(f'{q(r,er)} | {q(c,ec)} | {q(p,ep)}')")
        echo "| $round | $sys | $c | $rps | $p50 | $p99 | $err | $cpu | $ratios |"
      done
    done
  done
} | tee "$report"

# Interleaved 1-connection slices, both clusters up: the example's on ports 2100x/2200x,
# ours on 808x/25052+10i, so they do not collide.
echo "interleaved 1-connection slices: $SLICES x $SLICE per system"
example_pids=()
start_example
start_ours "$BIN"
slices=()
for i in $(seq 1 "$SLICES"); do
  e=$(wrk -t1 -c1 -d"$SLICE" -s scripts/wrk/kv-set.lua http://127.0.0.1:21001 2>&1 | grep '^WRK' || true)
  o=$(wrk -t1 -c1 -d"$SLICE" -s scripts/wrk/create-student.lua "$ours_leader" 2>&1 | grep '^WRK' || true)
  [ -n "$e" ] && [ -n "$o" ] || { echo "wrk produced no summary in slice $i" >&2; continue; }
  slices+=("$(echo "$e" | cut -d' ' -f3) $(echo "$o" | cut -d' ' -f3)")
done
stop_all
{
  echo
  echo "## 1-connection p50, $SLICES interleaved slices of $SLICE each (example, then ours)"
  echo
  printf '%s\n' "${slices[@]}" | python3 -c '
import statistics, sys
pairs = [tuple(map(float, l.split())) for l in sys.stdin if l.strip()]
if not pairs:
    sys.exit("no slices")
print("| slice | example p50 ms | ours p50 ms | ratio |")
print("|---|---|---|---|")
for i, (e, o) in enumerate(pairs, 1):
    print(f"| {i} | {e:.3f} | {o:.3f} | {o / e:.2f}x |")
ratios = [o / e for e, o in pairs]
em, om = statistics.median(e for e, _ in pairs), statistics.median(o for _, o in pairs)
print(f"| median | {em:.3f} | {om:.3f} | {statistics.median(ratios):.2f}x (median of the ratios) |")
'
} | tee -a "$report"
echo "written to $report"
