"""The same student through tfmot (tf_keras) and through kdprune's Keras 3 backend, side by side.

  python -m benchmarks.keras3_vs_tfmot --flagfile=launch/presets/mnist.cfg --workdir=runs/k3

Uses (or first trains) the teacher of ``--workdir``, then runs student -> qat -> export twice
with every flag equal: ``--student_name=tfmot`` (tf_keras, tfmot's pruning, tfmot's QAT) and
``--student_name=keras3`` (``--student_keras=3``: the same family built with Keras 3, pruned by
``pipelines/prune/keras3.py`` on tfmot's schedule, int8 by full-integer post-training quantization
at the export). Prints per flow the int8 test accuracy and the share of zeros among the weights,
both measured on the exported ``.tflite``, whether it is integer-only, and the wall time of the
three stages; then the differences (the goals: accuracy within 0.2 points, zeros within 0.01,
wall time at most 1.3x tfmot's). Finished stages are reused (the manifest); pass --force to
rerun them.
"""

import dataclasses
import json
import time

from absl import flags

from pipelines.cli import app as cli
from pipelines.cli import flags as kflags
from pipelines.runtime import execute as stage
from pipelines.runtime import rundir
from pipelines.stages import export, qat, student, teacher

FLAGS = flags.FLAGS
FLOWS = (("tfmot", 2), ("keras3", 3))


def _flow(name: str, keras: int, workdir: str) -> dict:
  s_config = dataclasses.replace(kflags.student_config_from_flags(), name=name, keras=keras)
  q_config = dataclasses.replace(kflags.qat_config_from_flags(), name=name)
  e_config = dataclasses.replace(kflags.export_config_from_flags(), name=name)
  began = time.time()
  seconds = {}
  entries = {}
  for kind, st, config in (("student", student.STAGE, s_config), ("qat", qat.STAGE, q_config),
                           ("export", export.STAGE, e_config)):
    start = time.time()
    outcome = stage.run_stage(st, config, workdir, force=FLAGS.force)
    seconds[kind] = round(time.time() - start, 1) if outcome.ran else None
    entries[kind] = outcome.entry
  e = entries["export"]["metrics"]
  with open(rundir.RunDir(workdir).abspath(entries["export"]["artifacts"]["report"])) as f:
    product = json.load(f)["product_ops"]
  return {
      "flow": name, "keras": keras,
      "student_test_accuracy": entries["student"]["metrics"]["test_accuracy"],
      "qat": entries["qat"]["metrics"].get("scheme"),
      "int8_test_accuracy": e["test_accuracy"], "zeros_in_file": e["sparsity"],
      "integer_only": product["integer_only"], "tflite_gzip_bytes": e["tflite_gzip_bytes"],
      "epochs_run": entries["student"]["metrics"].get("epochs_run"),
      "stage_seconds": seconds,
      "wall_seconds": round(time.time() - began, 1) if all(
          v is not None for v in seconds.values()) else None,
  }


def main(argv):
  del argv
  workdir = FLAGS.workdir
  t = stage.run_stage(teacher.STAGE, kflags.teacher_config_from_flags(), workdir)
  rows = [_flow(name, keras, workdir) for name, keras in FLOWS]
  tfmot_row, k3 = rows
  diff = {
      "int8_accuracy_points": round(100 * (k3["int8_test_accuracy"] -
                                           tfmot_row["int8_test_accuracy"]), 3),
      "zeros": round(k3["zeros_in_file"] - tfmot_row["zeros_in_file"], 4),
      "wall_ratio": (round(k3["wall_seconds"] / tfmot_row["wall_seconds"], 3)
                     if k3["wall_seconds"] and tfmot_row["wall_seconds"] else None),
  }
  print(json.dumps({"teacher_test_accuracy": t.entry["metrics"].get("test_accuracy"),
                    "rows": rows, "keras3_minus_tfmot": diff}, indent=2))
  print("\n%-7s %-6s %9s %9s %7s %8s %s" % ("flow", "qat", "int8 acc", "zeros", "int8only",
                                           "wall s", "student/qat/export s"))
  for r in rows:
    print("%-7s %-6s %8.2f%% %9.4f %7s %8s %s" % (
        r["flow"], r["qat"], 100 * r["int8_test_accuracy"], r["zeros_in_file"],
        r["integer_only"], r["wall_seconds"], r["stage_seconds"]))
  print("keras3 - tfmot: int8 accuracy %+.2f points, zeros %+.4f, wall time %sx" % (
      diff["int8_accuracy_points"], diff["zeros"], diff["wall_ratio"]))


if __name__ == "__main__":
  cli.entry(main, "keras3_vs_tfmot")
