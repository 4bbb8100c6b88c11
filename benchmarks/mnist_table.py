"""The preset's table: float teacher, pruned student, PQAT int8 student and the PTQ baselines.

  python -m benchmarks.mnist_table --flagfile=launch/presets/mnist.cfg --workdir=runs/mnist48

Runs the pipeline (finished stages are reused through the manifest) and prints
every exported model measured on its own file: test accuracy through the
TFLite interpreter, raw and gzipped size, batch-1 one-thread latency, sparsity
and nonzero weights read from the file, plus the Keras-side accuracies of the
teacher, the pruned student and the QAT model. JSON first, then the table.
"""

import json
import os

from absl import flags

from pipelines.cli import app as cli
from pipelines.cli import flags as kflags
from pipelines.export import report as report_lib
from pipelines.runtime import rundir
from pipelines.stages import pipeline

FLAGS = flags.FLAGS

FIELDS = ("test_accuracy", "tflite_bytes", "tflite_gzip_bytes", "latency_ms", "sparsity",
          "nonzero_params", "weight_dtypes")


def main(argv):
  del argv
  config = kflags.pipeline_config_from_flags()
  pipeline.run(config, FLAGS.workdir, force=FLAGS.force)
  run_dir = rundir.RunDir(FLAGS.workdir)
  with open(os.path.join(run_dir.stage_dir("export/" + config.export.name), "report.json")) as f:
    report = json.load(f)
  keras_side = {}
  for stage in ("teacher", "student/" + config.student.name, "qat/" + config.qat.name):
    entry = run_dir.entry(stage) or {}
    keras_side[stage] = {k: entry.get("metrics", {}).get(k)
                         for k in ("test_accuracy", "sparsity", "params", "nonzero_params")}
  out = {"workdir": run_dir.workdir, "machine": report.get("machine"),
         "test_examples": report.get("test_examples"), "keras": keras_side,
         "tflite": [{"name": m["name"], **{k: m.get(k) for k in FIELDS}}
                    for m in report["models"]],
         "comparison": report.get("comparison")}
  print(json.dumps(out, indent=2))
  print()
  for stage, m in keras_side.items():
    print("keras %-22s test accuracy %s  sparsity %s" % (
        stage, "%.2f%%" % (100 * m["test_accuracy"]) if m["test_accuracy"] is not None else "-",
        "%.3f" % m["sparsity"] if m.get("sparsity") is not None else "-"))
  print()
  print(report_lib.table(FLAGS.workdir, config.export.name))


if __name__ == "__main__":
  cli.entry(main, "mnist_table")
