"""The int8 student against the float teacher, measured on the exported files.

  python -m benchmarks.int8_goals --flagfile=launch/presets/mnist.cfg --workdir=runs/mnist

Runs the whole pipeline (teacher -> student -> QAT -> export; finished stages
are reused through the manifest, --force retrains) and prints, from the
export report, the int8 student's accuracy gap to the float teacher, its
sparsity inside the .tflite, and the gzip-size and batch-1 latency ratios,
each beside its goal (issue 4, MNIST preset): gap <= 0.3 points with the
teacher >= 99.2 %, sparsity >= 0.90, gzip >= 50x smaller, latency >= 10x lower.
"""

import json
import os
import time

from absl import flags

from pipelines.cli import app as cli
from pipelines.cli import flags as kflags
from pipelines.stages import export, pipeline

FLAGS = flags.FLAGS


def main(argv):
  del argv
  config = kflags.pipeline_config_from_flags()
  start = time.time()
  pipeline.run(config, FLAGS.workdir, force=FLAGS.force)
  path = os.path.join(FLAGS.workdir, export.NAME, config.export.name, "report.json")
  with open(path) as f:
    report = json.load(f)
  models = {m["name"]: m for m in report["models"]}
  teacher, product = models["teacher_float"], models[report["product"]]
  c = report["comparison"]
  checks = [
      ("teacher test accuracy", teacher["test_accuracy"] * 100, ">=", 99.2, "%"),
      ("int8 gap to teacher (points)", -c["accuracy_delta_points"], "<=", 0.3, ""),
      ("int8 sparsity in .tflite", product["sparsity"], ">=", 0.90, ""),
      ("gzip size ratio teacher/int8", c["gzip_ratio"], ">=", 50.0, "x"),
      ("batch-1 latency ratio teacher/int8", c["latency_ratio"], ">=", 10.0, "x"),
  ]
  out = {"report": path, "wall_seconds": round(time.time() - start, 1),
         "machine": report["machine"],
         "models": {k: {f: m[f] for f in ("test_accuracy", "tflite_bytes", "tflite_gzip_bytes",
                                          "latency_ms", "sparsity", "nonzero_params")}
                    for k, m in models.items()},
         "goals": {name: {"value": round(v, 4), "goal": "%s %s" % (op, goal),
                          "met": v >= goal if op == ">=" else v <= goal}
                   for name, v, op, goal, _ in checks}}
  print(json.dumps(out, indent=2))
  print()
  for name, v, op, goal, unit in checks:
    met = v >= goal if op == ">=" else v <= goal
    print("%-36s %9.3f%-2s goal %s %g%s  %s" % (name, v, unit, op, goal, unit,
                                                 "met" if met else "NOT MET"))


if __name__ == "__main__":
  cli.entry(main, "int8_goals")
