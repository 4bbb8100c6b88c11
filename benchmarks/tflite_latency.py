"""Batch-1, one-thread TFLite latency: int8 student against the float teacher, same run.

  python -m benchmarks.tflite_latency --workdir=runs/mnist48 [--student_name=default]

Loads the exported files of a finished export stage and times them on one
input of the model's shape, interleaved (rounds of teacher then student, ``--latency_rounds`` x
``--latency_runs`` invokes each after warm-up) on one thread with one test
example, so both see the same machine load. Prints the median and p90 of each
file and the teacher/student ratio (issue 4's goal: >= 10x).
"""

import json
import os

import numpy as np
from absl import flags

from pipelines.cli import app as cli
from pipelines.runtime import rundir

FLAGS = flags.FLAGS
flags.DEFINE_integer("latency_rounds", 5, "Interleaved rounds of timing per file.")


def interleaved(blobs: dict, example) -> dict:
  """Times each TFLite file of ``blobs`` (name -> bytes) at batch 1 on one thread, in
  ``--latency_rounds`` interleaved rounds of ``--latency_runs`` invokes after warm-up, so all see
  the same machine load. Returns ``{"rounds", "runs_per_round", "median_ms", "spread_ms"}``."""
  from pipelines.export import tflite as tflite_tools  # pylint: disable=g-import-not-at-top
  times = {k: [] for k in blobs}
  for _ in range(FLAGS.latency_rounds):
    for k, blob in blobs.items():
      times[k].append(tflite_tools.latency(blob, example, runs=FLAGS.latency_runs,
                                           warmup=FLAGS.latency_warmup)["median"])
  return {"rounds": FLAGS.latency_rounds, "runs_per_round": FLAGS.latency_runs,
          "median_ms": {k: round(float(np.median(v)), 4) for k, v in times.items()},
          "spread_ms": {k: [round(min(v), 4), round(max(v), 4)] for k, v in times.items()}}


def main(argv):
  del argv
  from pipelines.export import tflite as tflite_tools  # pylint: disable=g-import-not-at-top
  from pipelines.stages import export  # pylint: disable=g-import-not-at-top
  run_dir = rundir.RunDir(FLAGS.workdir)
  stage = "%s/%s" % (export.NAME, FLAGS.student_name)
  path = os.path.join(run_dir.stage_dir(stage), "report.json")
  if not os.path.exists(path):
    raise SystemExit("no export report at %s; run kdprune-pipeline --workdir=%s first" % (
        path, FLAGS.workdir))
  with open(path) as f:
    report = json.load(f)
  models = {m["name"]: m for m in report["models"]}
  files = {"teacher_float": models["teacher_float"], "student_int8": models[report["product"]]}
  blobs = {}
  for k, m in files.items():
    with open(run_dir.abspath(m["file"]), "rb") as f:
      blobs[k] = f.read()
  # One input in [0, 1) of the model's shape: the latency of these models does not depend on
  # the values, and no dataset flags are needed.
  shape = tflite_tools.interpreter(blobs["teacher_float"]).get_input_details()[0]["shape"][1:]
  example = np.random.default_rng(0).random(shape).astype(np.float32)
  out = {"report": path, "machine": report.get("machine"), **interleaved(blobs, example)}
  out["ratio_teacher_over_student"] = round(
      out["median_ms"]["teacher_float"] / out["median_ms"]["student_int8"], 2)
  print(json.dumps(out, indent=2))
  print()
  for k in blobs:
    print("%-14s %9.4f ms (round medians %.4f-%.4f)  %s" % (
        k, out["median_ms"][k], *out["spread_ms"][k], files[k]["file"]))
  print("%-14s %9.2fx lower for the int8 student (goal >= 10x)" % (
      "ratio", out["ratio_teacher_over_student"]))


if __name__ == "__main__":
  cli.entry(main, "tflite_latency")
