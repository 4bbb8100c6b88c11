#!/usr/bin/env bash
# One task of a kdprune search: the command every launcher runs (SLURM array, Kubernetes Indexed
# Job, or by hand).
#
#   launch/search_task.sh INDEX COUNT WORKDIR [flags...]     # task INDEX of COUNT
#   launch/search_task.sh collect COUNT WORKDIR [flags...]   # pick the best of the finished chains
#
# Every task must get the same flags (they decide the chains and the fingerprints). Task 0 trains
# the teacher (or reuses it); the others wait for it. The task that finishes last collects; the
# collect step does it again, harmlessly. PYTHON (default python3) runs kdprune from this checkout.
set -euo pipefail
index=${1:?usage: search_task.sh INDEX|collect COUNT WORKDIR [flags...]}
count=${2:?usage: search_task.sh INDEX|collect COUNT WORKDIR [flags...]}
workdir=${3:?usage: search_task.sh INDEX|collect COUNT WORKDIR [flags...]}
shift 3
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
if [[ "$index" == collect ]]; then
  exec "${PYTHON:-python3}" -m pipelines.cli.search --workdir="$workdir" --collect "$@"
fi
exec "${PYTHON:-python3}" -m pipelines.cli.search --workdir="$workdir" \
  --task_index="$index" --num_tasks="$count" "$@"
