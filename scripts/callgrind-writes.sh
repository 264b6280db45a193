#!/usr/bin/env bash
# Instructions per acknowledged write on one node, counted by valgrind's callgrind: a figure
# the shared machine's noise does not move (the same binary and load give the same count to
# a fraction of a percent), so a change of a few percent in the write path can be seen,
# which wall-clock runs here cannot resolve (they swing ±15 %).
#
#   scripts/callgrind-writes.sh [BIN] [CONNS]      (defaults: target/release/openraft-memory, 64)
#   LABEL=before scripts/callgrind-writes.sh ...   (keeps the profile in target/callgrind/LABEL)
#
# Starts a single-node cluster (memory, one worker thread) under callgrind, warms it up with
# 5 s of `wrk` creates, zeroes the counters, counts 10 s more, and prints the instructions
# per write and the mean writes per log entry (batching changes the per-write cost, so
# compare runs with similar batch sizes). `callgrind_annotate target/callgrind/LABEL/cg.out.1`
# shows where they went. Needs valgrind and wrk. Not part of the test suite.
set -eu
cd "$(dirname "$0")/.."
bin=${1:-target/release/openraft-memory}
conns=${2:-64}
label=${LABEL:-c$conns}
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
[ -x "$bin" ] || { echo "no binary at $bin (cargo build --release)" >&2; exit 1; }
dir=target/callgrind/$label
rm -rf "$dir"
mkdir -p "$dir"
port=${PORT:-18580}
url=http://127.0.0.1:$port

valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" "$bin" serve --worker-threads 1 \
  --node-name callgrind-0 --http-addr "127.0.0.1:$port" --grpc-addr "127.0.0.1:$((port + 1))" \
  --raft-addr "127.0.0.1:$((port + 2))" >"$dir/node.log" 2>&1 &
vg=$!
trap 'kill -INT $vg 2>/dev/null || true; wait $vg 2>/dev/null || true' EXIT
for _ in $(seq 1 240); do
  curl -sf "$url/readyz" >/dev/null && break
  kill -0 $vg 2>/dev/null || { echo "the node exited; see $dir/node.log" >&2; exit 1; }
  sleep 0.5
done
curl -sf "$url/readyz" >/dev/null || { echo "the node never got ready; see $dir/node.log" >&2; exit 1; }

run_wrk() { wrk -t1 -c"$conns" -d"$1" -s scripts/wrk/create-student.lua "$url"; }
run_wrk 5s >/dev/null 2>&1 || true
callgrind_control -z $vg >/dev/null
run_wrk 10s >"$dir/wrk.txt" 2>&1 || true
callgrind_control -d $vg >/dev/null
batches=$(curl -sf "$url/metrics" | grep -E '^openraft_memory_write_batch_size_(sum|count)' || true)

writes=$(awk '/requests in/ {print $1}' "$dir/wrk.txt")
[ -n "$writes" ] && [ "$writes" -gt 0 ] || { echo "wrk made no requests; see $dir/wrk.txt" >&2; exit 1; }
# The dump taken while the node ran (cg.out.1): its totals are the 10 s of load.
instructions=$(callgrind_annotate "$dir/cg.out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
per_batch=$(echo "$batches" | awk '/_sum/ {s = $2} /_count/ {c = $2} END {if (c > 0) printf "%.1f", s / c; else print "?"}')
echo "$label: $writes writes at $conns connections, $((instructions / writes)) instructions per write, $per_batch writes per log entry (profile: $dir/cg.out.1)"
