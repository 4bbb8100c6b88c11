"""Distillation variants on one teacher: hard labels, plain distillation, + feature hints,
+ mixup; each student through QAT and the int8 export.

  python -m benchmarks.distill_variants --flagfile=launch/presets/mnist.cfg --workdir=runs/mnist
  python -m benchmarks.distill_variants ... --variants=plain,hints --hint=relu_3:relu_3_2:0.5

Uses (or first trains) the teacher of --workdir, then trains the named students
``student/hard``, ``student/plain``, ``student/hints`` (``--feature_distill=--hint``) and
``student/hints_mixup`` (also ``--mixup=--mixup_alpha``), every other flag equal, and runs QAT
(with the same distillation settings) and the export for each. Prints the test accuracy of the
float student and of its int8 .tflite. Reruns reuse finished stages; --force retrains.
"""

import dataclasses
import json
import time

from absl import flags

from pipelines import config as configs
from pipelines.cli import app as cli
from pipelines.cli import flags as kflags
from pipelines.runtime import execute as stage
from pipelines.stages import export, qat, student, teacher

FLAGS = flags.FLAGS
# The MNIST preset's lenet teacher and cnn student: both end their third block at 7x7.
flags.DEFINE_string("hint", "relu_3:relu_3_2:0.5", "The feature hint of the hints variants "
                    "(TEACHER_LAYER:STUDENT_LAYER[:WEIGHT]).")
flags.DEFINE_float("mixup_alpha", 0.2, "--mixup of the hints_mixup variant.")
flags.DEFINE_list("variants", ["hard", "plain", "hints", "hints_mixup"], "Which to run.")


def _distill(variant: str, base: configs.DistillConfig) -> configs.DistillConfig:
  hint = configs.parse_feature_distill([FLAGS.hint])
  return {
      "hard": dataclasses.replace(base, enabled=False),
      "plain": base,
      "hints": dataclasses.replace(base, feature_distill=hint),
      "hints_mixup": dataclasses.replace(base, feature_distill=hint, mixup=FLAGS.mixup_alpha),
  }[variant]


def main(argv):
  del argv
  workdir = FLAGS.workdir
  start = time.time()
  t = stage.run_stage(teacher.STAGE, kflags.teacher_config_from_flags(), workdir)
  s_base, q_base = kflags.student_config_from_flags(), kflags.qat_config_from_flags()
  e_base = kflags.export_config_from_flags()
  rows = {"teacher": {"float": t.entry["metrics"]["test_accuracy"]}}
  for variant in FLAGS.variants:
    began = time.time()
    d = _distill(variant, s_base.distill)
    s = stage.run_stage(student.STAGE, dataclasses.replace(s_base, name=variant, distill=d),
                        workdir, force=FLAGS.force)
    stage.run_stage(qat.STAGE, dataclasses.replace(q_base, name=variant, distill=d), workdir,
                    force=FLAGS.force)
    e = stage.run_stage(export.STAGE, dataclasses.replace(e_base, name=variant), workdir,
                        force=FLAGS.force)
    rows[variant] = {"float": s.entry["metrics"]["test_accuracy"],
                     "int8": e.entry["metrics"]["test_accuracy"],
                     "sparsity": s.entry["metrics"]["sparsity"],
                     "seconds": round(time.time() - began, 1)}
  print(json.dumps({"hint": FLAGS.hint, "mixup": FLAGS.mixup_alpha, "results": rows,
                    "wall_seconds": round(time.time() - start, 1)}, indent=2))
  print("\n%-12s %8s %8s %9s" % ("student", "float", "int8", "sparsity"))
  for name, row in rows.items():
    print("%-12s %8.4f %8s %9s" % (name, row["float"], "%.4f" % row["int8"] if "int8" in row
                                   else "-", row.get("sparsity", "-")))


if __name__ == "__main__":
  cli.entry(main, "distill_variants")
