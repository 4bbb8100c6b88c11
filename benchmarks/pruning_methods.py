"""Dynamic (RigL-style) against magnitude pruning: the same students, int8 accuracy side by side.

  python -m benchmarks.pruning_methods --flagfile=launch/presets/mnist.cfg \
      --workdir=runs/mnist48 --sparsities=0.9,0.95

Runs ``kdprune-sweep`` over ``--sparsities`` x {magnitude, dynamic} (one
teacher; each student through student -> QAT -> export; finished stages are
reused) and prints, per sparsity, the int8 .tflite test accuracy of both
methods, their float students, the sparsity inside the files, and how many
weights dynamic pruning regrew. The published result to compare with: RigL
beats magnitude pruning at high sparsity on ImageNet (Evci et al. 2020).
"""

import dataclasses
import json
import os

from absl import flags

from pipelines.cli import app as cli
from pipelines.cli import flags as kflags
from pipelines.runtime import rundir
from pipelines.stages import sweep

FLAGS = flags.FLAGS


def main(argv):
  del argv
  base = kflags.pipeline_config_from_flags()
  config = dataclasses.replace(kflags.sweep_config_from_flags(), structures=("unstructured",),
                               methods=("magnitude", "dynamic"))
  out = sweep.run(base, config, FLAGS.workdir, force=FLAGS.force)
  by = {(e["target_sparsity"], e["method"]): e for e in out["students"]}
  rows = []
  for s in config.sparsities:
    mag, dyn = by[(s, "magnitude")], by[(s, "dynamic")]
    with open(rundir.RunDir(FLAGS.workdir).abspath(
        os.path.join("student", dyn["student"], "metrics.json"))) as f:
      revisions = json.load(f)
    rows.append({
        "sparsity": s,
        "magnitude": {k: mag[k] for k in ("student", "test_accuracy", "float_student_accuracy",
                                          "sparsity", "tflite_gzip_bytes")},
        "dynamic": {**{k: dyn[k] for k in ("student", "test_accuracy", "float_student_accuracy",
                                           "sparsity", "tflite_gzip_bytes")},
                    "mask_revisions": revisions.get("mask_revisions"),
                    "regrown_total": revisions.get("regrown_total"),
                    "regrown_surviving": revisions.get("regrown_surviving")},
        "int8_delta_points": round(100 * (dyn["test_accuracy"] - mag["test_accuracy"]), 3),
    })
  teacher = out.get("teacher") or {}
  print(json.dumps({"workdir": out["workdir"], "teacher": teacher, "rows": rows,
                    "sweep_wall_seconds": out["wall_seconds"]}, indent=2))
  print()
  print("teacher (float .tflite): %.2f%%" % (100 * teacher.get("test_accuracy", float("nan"))))
  print("%-9s %-24s %-24s %-8s %s" % ("sparsity", "magnitude int8 (float)", "dynamic int8 (float)",
                                      "delta", "regrown (revisions)"))
  for r in rows:
    m, d = r["magnitude"], r["dynamic"]
    print("%-9.3f %6.2f%% (%6.2f%%)         %6.2f%% (%6.2f%%)         %+6.2f   %s (%s)" % (
        r["sparsity"], 100 * m["test_accuracy"], 100 * m["float_student_accuracy"],
        100 * d["test_accuracy"], 100 * d["float_student_accuracy"], r["int8_delta_points"],
        d["regrown_total"], d["mask_revisions"]))


if __name__ == "__main__":
  cli.entry(main, "pruning_methods")
