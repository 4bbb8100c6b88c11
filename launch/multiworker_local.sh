#!/usr/bin/env bash
# Try kdprune's multi-worker path on one machine: N workers on localhost ports, each running the
# same command with its own TF_CONFIG (MultiWorkerMirroredStrategy; worker 0 is the chief and the
# only one that writes the run directory).
#
#   launch/multiworker_local.sh 2 kdprune-pipeline --workdir=runs/mw
#
# Worker logs go to $KDPRUNE_LOG_DIR (default: a new temporary folder); worker 0's log is printed
# at the end. Ports start at $KDPRUNE_BASE_PORT (default 23456). Exits non-zero if any worker fails.
set -euo pipefail
n=${1:?usage: $0 NUM_WORKERS command [flags...]}
shift
[[ $# -gt 0 ]] || { echo "usage: $0 NUM_WORKERS command [flags...]" >&2; exit 2; }
base=${KDPRUNE_BASE_PORT:-23456}
logs=${KDPRUNE_LOG_DIR:-$(mktemp -d -t kdprune-workers-XXXX)}
mkdir -p "$logs"
hosts=""
for ((i = 0; i < n; i++)); do hosts+="\"localhost:$((base + i))\","; done
hosts="[${hosts%,}]"
pids=()
for ((i = 0; i < n; i++)); do
  TF_CONFIG="{\"cluster\": {\"worker\": $hosts}, \"task\": {\"type\": \"worker\", \"index\": $i}}" \
    "$@" --strategy=multi_worker >"$logs/worker-$i.log" 2>&1 &
  pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null || true' INT TERM
status=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    status=1
    echo "worker $i failed; its log: $logs/worker-$i.log" >&2
    tail -n 5 "$logs/worker-$i.log" >&2 || true
  fi
done
cat "$logs/worker-0.log"
echo "worker logs: $logs" >&2
exit $status
