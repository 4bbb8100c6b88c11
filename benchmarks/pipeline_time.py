"""Wall time of the whole pipeline, from a fresh process to the final table.

  python -m benchmarks.pipeline_time --workdir=/tmp/kdprune-time
  python -m benchmarks.pipeline_time --workdir=/tmp/kdprune-time-mnist --goal_seconds=300 \
      --pipeline_args="--flagfile=launch/presets/mnist_quick.cfg"

Runs ``python -m pipelines.cli.pipeline --workdir=<workdir> --force <--pipeline_args>``
as a child process (so TensorFlow's import and the dataset preparation count,
as they do for a user), then prints the total wall time, each stage's time from
the manifest, and the goal (issue 6: default dataset <= 90 s, MNIST preset <= 300 s).
"""

import json
import os
import shlex
import subprocess
import sys
import time

from absl import flags

from pipelines.cli import app as cli

FLAGS = flags.FLAGS
flags.DEFINE_float("goal_seconds", 90.0, "The goal for the whole pipeline's wall time.")
flags.DEFINE_string("pipeline_args", "", "Further flags for the pipeline, e.g. "
                    "\"--flagfile=launch/presets/mnist_quick.cfg\".")


def main(argv):
  del argv
  extra = shlex.split(FLAGS.pipeline_args)
  command = [sys.executable, "-m", "pipelines.cli.pipeline", "--workdir=%s" % FLAGS.workdir,
             "--force", "--progress=none"] + extra
  start = time.time()
  done = subprocess.run(command, capture_output=True, text=True)
  wall = time.time() - start
  if done.returncode != 0:
    sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
    raise SystemExit("pipeline failed (exit %d): %s" % (done.returncode, " ".join(command)))
  with open(os.path.join(FLAGS.workdir, "manifest.json")) as f:
    stages = json.load(f)["stages"]
  per_stage = {name: e.get("wall_seconds") for name, e in stages.items()}
  out = {"command": " ".join(command), "wall_seconds": round(wall, 1),
         "stage_seconds": per_stage, "goal_seconds": FLAGS.goal_seconds,
         "met": wall <= FLAGS.goal_seconds, "cpus": os.cpu_count()}
  print(json.dumps(out, indent=2))
  print()
  for name, seconds in per_stage.items():
    print("%-24s %8.1f s" % (name, seconds or 0.0))
  print("%-24s %8.1f s  goal <= %g s  %s" % ("whole pipeline (process)", wall, FLAGS.goal_seconds,
                                             "met" if out["met"] else "NOT MET"))


if __name__ == "__main__":
  cli.entry(main, "pipeline_time")
