#!/usr/bin/env bash
# Starts a local cluster of N nodes (default 3) on loopback and stops it on Ctrl-C.
#   node i: REST 127.0.0.1:(8080+i)  client gRPC 127.0.0.1:(25051+10*i)  peer 127.0.0.1:(25052+10*i)
#   (below Linux's ephemeral range, 32768-60999: a port there can be taken at any moment by
#   an outgoing connection, which is how node-1 once failed to bind 50062)
# Usage: scripts/local-cluster.sh [N]        (BIN=path/to/openraft-memory to skip the build)
#        STORAGE=disk scripts/local-cluster.sh  (disk mode; data in target/local-cluster/node-i/,
#                                                kept across runs: delete it to start afresh)
#        WORKER_THREADS=2 scripts/local-cluster.sh  (threads per node; default: the machine's
#                                                    CPUs shared out, at least 1 each)
#        TLS=1 scripts/local-cluster.sh  (mutual TLS between the nodes, HTTPS and gRPC TLS for
#                                         clients, bearer tokens: a development CA, certificates
#                                         and one token per role in target/local-cluster/tls/)
set -euo pipefail
n=${1:-3}
cd "$(dirname "$0")/.."
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN=target/release/openraft-memory
fi
peers=""
for i in $(seq 0 $((n - 1))); do
  peers+="${peers:+,}127.0.0.1:$((25052 + 10 * i))"
done
# The nodes share this machine's CPUs: with a full set of threads each, their workers keep
# waking and preempting one another, which costs throughput and lone-write latency (the
# measurement is in docs/performance.md).
threads=${WORKER_THREADS:-$(( $(nproc) / n > 0 ? $(nproc) / n : 1 ))}
pids=()
stop() {
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM EXIT
mkdir -p target/local-cluster
tls_dir=target/local-cluster/tls
scheme=http
curl_tls=()
if [ "${TLS:-0}" = 1 ]; then
  names=$(seq -s, -f 'node-%g' 0 $((n - 1)))
  "$BIN" certs --out "$tls_dir" --names "$names" --tokens --if-missing >/dev/null
  scheme=https
  curl_tls=(--cacert "$tls_dir/ca.crt" -H "Authorization: Bearer $(cat "$tls_dir/admin.token")")
fi
for i in $(seq 0 $((n - 1))); do
  tls_env=()
  if [ "$scheme" = https ]; then
    tls_env=(
      OPENRAFT_MEMORY__TLS__PEER__CERT="$tls_dir/node-$i.crt" OPENRAFT_MEMORY__TLS__PEER__KEY="$tls_dir/node-$i.key"
      OPENRAFT_MEMORY__TLS__PEER__CA="$tls_dir/ca.crt"
      OPENRAFT_MEMORY__TLS__CLIENT__CERT="$tls_dir/node-$i.crt" OPENRAFT_MEMORY__TLS__CLIENT__KEY="$tls_dir/node-$i.key"
      OPENRAFT_MEMORY__AUTH__TOKENS_FILE="$tls_dir/tokens"
    )
  fi
  storage=()
  if [ "${STORAGE:-memory}" = disk ]; then
    storage=(--storage disk --data-dir "target/local-cluster/node-$i")
  fi
  env "${tls_env[@]}" "$BIN" serve --node-name "node-$i" "${storage[@]}" --worker-threads "$threads" \
    --http-addr "127.0.0.1:$((8080 + i))" \
    --grpc-addr "127.0.0.1:$((25051 + 10 * i))" \
    --raft-addr "127.0.0.1:$((25052 + 10 * i))" \
    --peers "$peers" >"target/local-cluster/node-$i.log" 2>&1 &
  pids+=($!)
  echo "node-$i: REST $scheme://127.0.0.1:$((8080 + i))  gRPC 127.0.0.1:$((25051 + 10 * i))  log target/local-cluster/node-$i.log"
done
echo "waiting for all nodes to be ready (Ctrl-C stops the cluster)"
# A node that dies (a port already taken, a bad flag) or never gets ready fails the script
# loudly, with its last log lines, instead of leaving a half-formed cluster waiting.
fail() {
  echo "error: node-$1 $2; its last log lines (target/local-cluster/node-$1.log):" >&2
  tail -n 20 "target/local-cluster/node-$1.log" >&2 || true
  exit 1
}
for i in $(seq 0 $((n - 1))); do
  ready=no
  for _ in $(seq 1 150); do
    for j in $(seq 0 $((n - 1))); do
      kill -0 "${pids[$j]}" 2>/dev/null || fail "$j" "exited"
    done
    if curl -sf "${curl_tls[@]}" "$scheme://127.0.0.1:$((8080 + i))/readyz" >/dev/null 2>&1; then
      ready=yes
      break
    fi
    sleep 0.2
  done
  [ "$ready" = yes ] || fail "$i" "was not ready within 30 s"
done
curl -s "${curl_tls[@]}" "$scheme://127.0.0.1:8080/cluster" && echo
if [ "$scheme" = https ]; then
  echo "TLS and tokens are on; e.g.:"
  echo "  curl --cacert $tls_dir/ca.crt -H \"Authorization: Bearer \$(cat $tls_dir/admin.token)\" https://127.0.0.1:8080/cluster"
fi
wait
