#!/usr/bin/env bash
# kdprune on one machine: the whole pipeline (or one stage) with every local device.
#
#   launch/local.sh runs/demo                                   # embedded digits, defaults
#   launch/local.sh runs/mnist --flagfile=launch/presets/mnist.cfg
#   KDPRUNE_COMMAND=kdprune-student launch/local.sh runs/demo --student_name=wide --student_width=32
#
# --strategy=auto picks mirrored on a machine with several GPUs and one_device otherwise; rerun the
# same command after an interruption: finished stages are skipped, a killed stage resumes from its
# last epoch backup. Output is also kept in <workdir>/launch.log.
set -euo pipefail
workdir=${1:?usage: $0 WORKDIR [flags...]}
shift
command=${KDPRUNE_COMMAND:-kdprune-pipeline}
mkdir -p "$workdir"
"$command" --workdir="$workdir" --strategy="${KDPRUNE_STRATEGY:-auto}" "$@" 2>&1 | tee -a "$workdir/launch.log"
exit "${PIPESTATUS[0]}"
