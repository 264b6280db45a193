#!/usr/bin/env bash
# The REST contract against a live node: validates api/openapi.json with a real OpenAPI
# validator, then lets schemathesis generate requests from it (valid and invalid, a bounded
# number per operation) against a single node on loopback and check every answer: a status
# the document lists, a body matching its schema and content type, headers as documented.
# A 5xx fails the run unless the document lists it for that operation (503 no-leader /
# timeout; 500 only where a backup cannot be taken).
#
# Usage: scripts/api-check.sh [max-examples per operation, default 40]
# Needs: pip install openapi-spec-validator schemathesis; a built target/debug/openraft-memory.
set -euo pipefail
cd "$(dirname "$0")/.."
examples=${1:-40}
bin=${OPENRAFT_MEMORY_BIN:-target/debug/openraft-memory}

echo "== openapi-spec-validator api/openapi.json"
openapi-spec-validator api/openapi.json

work=$(mktemp -d)
node_pid=""
cleanup() {
  [ -n "$node_pid" ] && kill "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port=18480
export OPENRAFT_MEMORY__NODE__NAME=api-0
export OPENRAFT_MEMORY__HTTP__ADDR=127.0.0.1:$port
export OPENRAFT_MEMORY__GRPC__ADDR=127.0.0.1:18481
export OPENRAFT_MEMORY__RAFT__ADDR=127.0.0.1:18482
"$bin" serve >"$work/node.log" 2>&1 &
node_pid=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { cat "$work/node.log"; echo "node not ready"; exit 1; }

echo "== schemathesis ($examples examples per operation)"
# POST /cluster/members is left out: every generated body would add an unreachable learner
# and wait out the catch-up deadline; tests/cluster covers membership against real nodes.
# not_a_server_error is left out because status_code_conformance already fails any status,
# 5xx included, that the operation does not document, while the documented 503 (no leader,
# not committed in time) is a correct answer.
# GET /students/watch is left out: a watch is an endless stream, so every example would
# wait out the request timeout; tests/cluster/watch.rs covers it, bad input included.
# positive_data_acceptance is left out: JSON Schema cannot say "not blank after trimming",
# so a schema-valid name of spaces is rightly refused with 400.
status=0
schemathesis run "http://127.0.0.1:$port/openapi.json" \
  --checks all \
  --exclude-checks not_a_server_error,positive_data_acceptance \
  --exclude-operation-id add_member --exclude-operation-id watch_students \
  --max-examples "$examples" --seed 1 --workers 1 \
  --request-timeout 10 --warnings off \
  --report-dir "$work/report" || status=$?
if [ "$status" -ne 0 ]; then
  echo "-- node log (last 40 lines)"
  tail -40 "$work/node.log"
fi
exit "$status"
