# Helpers shared by the scripts that drive a local cluster (scripts/local-cluster.sh).
# Source it: `. scripts/lib.sh`.

# wait_ready PORT... : waits up to 30 s until every REST port on 127.0.0.1 answers /readyz.
wait_ready() {
  local ready
  for _ in $(seq 1 150); do
    ready=0
    for p in "$@"; do
      curl -sf "http://127.0.0.1:$p/readyz" >/dev/null 2>&1 && ready=$((ready + 1))
    done
    [ "$ready" = $# ] && return 0
    sleep 0.2
  done
  return 1
}

# leader_index : the ordinal of the local cluster's leader (its peer port is 25052 + 10i).
leader_index() {
  local raft
  raft=$(curl -s http://127.0.0.1:8080/cluster | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"]["addr"])')
  echo $(((${raft##*:} - 25052) / 10))
}
