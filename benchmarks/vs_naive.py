"""kdprune's MNIST quality preset against the naive tutorial recipe, one after the other, same machine.

    python -m benchmarks.vs_naive --workdir=/tmp/vs-naive                 # the must-show (issue 20)
    python -m benchmarks.vs_naive --workdir=/tmp/vs-naive-quick \\
        --preset=launch/presets/mnist_quick.cfg --naive_args="--epochs_scale=0.2"   # a short check

Runs, each as a child process of this one (so each pays TensorFlow's import, as a user does):

1. ``python -m benchmarks.naive_recipe`` (nothing from kdprune: the public tfmot pruning and PQAT
   tutorials and the Keras distillation example glued together on MNIST);
2. ``python -m pipelines.cli.pipeline --flagfile=<preset> --workdir=<workdir>/kdprune --force``.

Then prints both walls, both int8 accuracies and gzipped sizes (measured on the ``.tflite`` files
by each run), the wall ratio (kdprune / naive, goal <= 1.0), the accuracy gain of kdprune's int8
student in points (goal >= 0.8) and how much smaller kdprune's int8 student is than its float
teacher ``.tflite`` gzipped (goal >= 50x), and kdprune's time by phase. ``--out`` writes it all
as JSON. Which one runs first alternates with ``--order`` so a warm disk cache favours neither.
"""

import json
import os
import shlex
import subprocess
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Folder for both runs (kdprune's run directory and the "
                    "naive recipe's files).")
flags.DEFINE_string("preset", "launch/presets/mnist.cfg", "kdprune's flagfile.")
flags.DEFINE_string("data_dir", "../shared/data/tfds", "TFDS data_dir with a prepared mnist "
                    "(both runs read it).")
flags.DEFINE_string("pipeline_args", "", "Further flags for kdprune-pipeline.")
flags.DEFINE_string("naive_args", "", "Further flags for benchmarks.naive_recipe.")
flags.DEFINE_enum("order", "naive_first", ("naive_first", "kdprune_first"), "Which runs first.")
flags.DEFINE_string("out", None, "Write the figures as JSON here.")
flags.mark_flag_as_required("workdir")

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOALS = {"wall_ratio": 1.0, "accuracy_gain_points": 0.8, "smaller_than_float_teacher": 50.0}


def _timed(command, log_path):
  start = time.perf_counter()
  with open(log_path, "w") as log:
    done = subprocess.run(command, cwd=_REPO, stdout=log, stderr=subprocess.STDOUT, text=True)
  wall = time.perf_counter() - start
  if done.returncode != 0:
    with open(log_path) as f:
      sys.stderr.write(f.read()[-4000:])
    raise SystemExit("failed (exit %d): %s (log: %s)" % (done.returncode, " ".join(command),
                                                        log_path))
  return wall


def run_naive(workdir):
  out = os.path.join(workdir, "naive.json")
  command = [sys.executable, "-m", "benchmarks.naive_recipe", "--out=%s" % out,
             "--workdir=%s" % os.path.join(workdir, "naive"), "--data_dir=%s" % FLAGS.data_dir]
  os.makedirs(os.path.join(workdir, "naive"), exist_ok=True)
  wall = _timed(command + shlex.split(FLAGS.naive_args), os.path.join(workdir, "naive.log"))
  with open(out) as f:
    r = json.load(f)
  return {"wall_s": round(wall, 1), "int8_accuracy": r["student_int8_accuracy"],
          "int8_gzip_bytes": r["student_int8_gzip_bytes"],
          "teacher_float_gzip_bytes": r["teacher_float_gzip_bytes"],
          "teacher_accuracy": r["teacher_float_accuracy"], "phases_s": r["wall_s"]}


def run_kdprune(workdir):
  run_dir = os.path.join(workdir, "kdprune")
  command = [sys.executable, "-m", "pipelines.cli.pipeline", "--flagfile=%s" % FLAGS.preset,
             "--workdir=%s" % run_dir, "--data_dir=%s" % FLAGS.data_dir, "--force",
             "--progress=none"] + shlex.split(FLAGS.pipeline_args)
  wall = _timed(command, os.path.join(workdir, "kdprune.log"))
  with open(os.path.join(run_dir, "manifest.json")) as f:
    stages = json.load(f)["stages"]
  export = next(v for k, v in stages.items() if k.startswith("export/"))
  with open(os.path.join(run_dir, export["artifacts"]["report"])) as f:
    report = json.load(f)
  models = {m["name"]: m for m in report["models"]}
  product = models[report["product"]]
  teacher = models.get("teacher_float")
  return {"wall_s": round(wall, 1), "int8_accuracy": product["test_accuracy"],
          "int8_gzip_bytes": product["tflite_gzip_bytes"],
          "teacher_float_gzip_bytes": teacher["tflite_gzip_bytes"] if teacher else None,
          "teacher_accuracy": teacher["test_accuracy"] if teacher else None,
          "sparsity": product["sparsity"],
          "phases_s": {k: v.get("phases") for k, v in stages.items()}}


def main(argv):
  del argv
  workdir = os.path.abspath(FLAGS.workdir)
  os.makedirs(workdir, exist_ok=True)
  runs = {}
  for name in (("naive", "kdprune") if FLAGS.order == "naive_first" else ("kdprune", "naive")):
    print("running %s ..." % name, flush=True)
    runs[name] = (run_naive if name == "naive" else run_kdprune)(workdir)
  naive, kd = runs["naive"], runs["kdprune"]
  figures = {
      "wall_ratio": round(kd["wall_s"] / naive["wall_s"], 3),
      "accuracy_gain_points": round(100 * (kd["int8_accuracy"] - naive["int8_accuracy"]), 2),
      "smaller_than_float_teacher": (round(kd["teacher_float_gzip_bytes"] / kd["int8_gzip_bytes"], 1)
                                     if kd["teacher_float_gzip_bytes"] else None),
  }
  met = {k: (figures[k] is not None and (figures[k] <= g if k == "wall_ratio" else figures[k] >= g))
         for k, g in GOALS.items()}
  print()
  print("%-10s %10s %10s %12s %16s" % ("", "wall (s)", "int8 acc", "int8 gzip B", "float teacher gz"))
  for name, r in (("naive", naive), ("kdprune", kd)):
    print("%-10s %10.1f %9.2f%% %12d %16s" % (name, r["wall_s"], 100 * r["int8_accuracy"],
                                             r["int8_gzip_bytes"], r["teacher_float_gzip_bytes"]))
  print()
  for k, g in GOALS.items():
    print("%-28s %10s   goal %s %s: %s" % (k, figures[k], "<=" if k == "wall_ratio" else ">=", g,
                                          "met" if met[k] else "MISSED"))
  print()
  from pipelines.runtime import timing  # pylint: disable=g-import-not-at-top  (no TensorFlow)
  print("kdprune by phase (s):")
  order = ("teacher", "student", "qat", "export")
  print(timing.table(sorted(kd["phases_s"].items(), key=lambda kv: order.index(kv[0].split("/")[0]))))
  print("naive by phase (s): %s" % json.dumps(naive["phases_s"]))
  result = {"preset": FLAGS.preset, "pipeline_args": FLAGS.pipeline_args,
            "naive_args": FLAGS.naive_args, "order": FLAGS.order, "naive": naive, "kdprune": kd,
            "figures": figures, "goals": GOALS, "met": met, "cpu_count": os.cpu_count()}
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      json.dump(result, f, indent=2)
      f.write("\n")


if __name__ == "__main__":
  app.run(main)
