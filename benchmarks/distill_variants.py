"""Distillation variants on one teacher: hard labels, plain distillation, + feature hints,
+ mixup, dynamic pruning; each student through QAT and the int8 export.

  python -m benchmarks.distill_variants --flagfile=launch/presets/mnist.cfg --workdir=runs/mnist
  python -m benchmarks.distill_variants ... --variants=plain,hints --hint=relu_3:relu_3_2:0.5
  python -m benchmarks.distill_variants --flagfile=launch/presets/mnist_5kb.cfg \\
      --workdir=runs/mnist --variants=plain,hard --student_seeds=0,1,2 --hint=relu_3:relu_3:0.5

Uses (or first trains) the teacher of --workdir, then trains the named students
``student/hard`` (``--distill=false``), ``student/plain`` (the flags as given),
``student/hints`` (``--feature_distill=--hint``), ``student/mixup`` (``--mixup=--mixup_alpha``),
``student/hints_mixup`` (both) and ``student/dynamic`` (``--pruning_method=dynamic``), every
other flag equal, and runs QAT (with the same distillation settings) and the export for each.
With ``--student_seeds`` each variant is trained once per seed (``--student_seed``: the
student's initialisation, shuffling and augmentation; the validation split and the teacher stay
those of ``--seed``), as ``<variant>_s<seed>``, and the summary gives each variant's mean and
standard deviation over the seeds. Prints the test accuracy of the float student and of its int8
.tflite, the int8 test errors and the gzipped bytes. Reruns reuse finished stages; --force
retrains.
"""

import dataclasses
import json
import os
import statistics
import time

from absl import flags

from pipelines import config as configs
from pipelines.cli import app as cli
from pipelines.cli import flags as kflags
from pipelines.config.errors import ConfigError
from pipelines.runtime import execute as stage
from pipelines.stages import export, qat, student, teacher

FLAGS = flags.FLAGS
# The MNIST preset's lenet teacher and cnn student: both end their third block at 7x7.
flags.DEFINE_string("hint", "relu_3:relu_3_2:0.5", "The feature hint of the hints variants "
                    "(TEACHER_LAYER:STUDENT_LAYER[:WEIGHT]).")
flags.DEFINE_float("mixup_alpha", 0.2, "--mixup of the mixup variants.")
VARIANTS = ("hard", "plain", "hints", "mixup", "hints_mixup", "dynamic")
flags.DEFINE_list("variants", ["hard", "plain", "hints", "hints_mixup"], "Which to run, of %s."
                  % ", ".join(VARIANTS))
flags.DEFINE_list("student_seeds", [], "Train each variant once per seed (--student_seed); "
                  "empty: once with the flags' seed.")


def _student(variant: str, base: configs.StudentConfig) -> configs.StudentConfig:
  d = base.distill
  hint = configs.parse_feature_distill([FLAGS.hint])
  if variant == "dynamic":
    return dataclasses.replace(base, pruning=dataclasses.replace(base.pruning, method="dynamic"))
  return dataclasses.replace(base, distill={
      "hard": dataclasses.replace(d, enabled=False),
      "plain": d,
      "hints": dataclasses.replace(d, feature_distill=hint),
      "mixup": dataclasses.replace(d, mixup=FLAGS.mixup_alpha),
      "hints_mixup": dataclasses.replace(d, feature_distill=hint, mixup=FLAGS.mixup_alpha),
  }[variant])


def _seeds(values):
  try:
    seeds = [int(v) for v in values]
  except ValueError:
    raise ConfigError("--student_seeds=%s must be integers, e.g. 0,1,2" % ",".join(values)) from None
  if not all(map(configs.is_seed, seeds)) or len(set(seeds)) != len(seeds):
    raise ConfigError("--student_seeds=%s must be distinct integers in %s" % (
        ",".join(values), configs.SEED_RANGE))
  return seeds


def _summary(rows, variants, seeds):
  out = {}
  for variant in variants:
    runs = [rows["%s_s%d" % (variant, s)] for s in seeds]
    out[variant] = {}
    for key in ("int8", "int8_errors", "gzip_bytes", "float"):
      values = [r[key] for r in runs]
      out[variant][key] = {"mean": round(statistics.fmean(values), 5),
                           "stdev": round(statistics.stdev(values), 5) if len(values) > 1 else 0.0}
  return out


def main(argv):
  del argv
  unknown = [v for v in FLAGS.variants if v not in VARIANTS]
  if unknown:
    raise ConfigError("--variants: unknown %s (choose from %s)" % (", ".join(unknown),
                                                                   ", ".join(VARIANTS)))
  seeds = _seeds(FLAGS.student_seeds)
  workdir = FLAGS.workdir
  start = time.time()
  t = stage.run_stage(teacher.STAGE, kflags.teacher_config_from_flags(), workdir)
  s_base, q_base = kflags.student_config_from_flags(), kflags.qat_config_from_flags()
  e_base = kflags.export_config_from_flags()
  rows = {"teacher": {"float": t.entry["metrics"]["test_accuracy"]}}
  runs = [(v, None) for v in FLAGS.variants] if not seeds else [
      (v, s) for s in seeds for v in FLAGS.variants]
  for variant, seed in runs:
    began = time.time()
    name = variant if seed is None else "%s_s%d" % (variant, seed)
    s_config = dataclasses.replace(_student(variant, s_base), name=name)
    q_config = dataclasses.replace(q_base, name=name, distill=s_config.distill)
    if seed is not None:
      s_config = dataclasses.replace(s_config, train=dataclasses.replace(s_config.train, seed=seed))
      q_config = dataclasses.replace(q_config, train=dataclasses.replace(q_config.train, seed=seed))
    s = stage.run_stage(student.STAGE, s_config, workdir, force=FLAGS.force)
    stage.run_stage(qat.STAGE, q_config, workdir, force=FLAGS.force)
    e = stage.run_stage(export.STAGE, dataclasses.replace(e_base, name=name), workdir,
                        force=FLAGS.force)
    int8 = e.entry["metrics"]["test_accuracy"]
    with open(os.path.join(workdir, "export", name, "report.json")) as f:
      n_test = json.load(f)["test_examples"]
    rows[name] = {"float": s.entry["metrics"]["test_accuracy"], "int8": int8,
                  "int8_errors": round((1 - int8) * n_test),
                  "gzip_bytes": e.entry["metrics"]["tflite_gzip_bytes"],
                  "sparsity": s.entry["metrics"]["sparsity"],
                  "seconds": round(time.time() - began, 1)}
  report = {"hint": FLAGS.hint, "mixup": FLAGS.mixup_alpha, "results": rows,
            "wall_seconds": round(time.time() - start, 1)}
  if seeds:
    report["student_seeds"] = seeds
    report["summary"] = _summary(rows, FLAGS.variants, seeds)
  print(json.dumps(report, indent=2))
  print("\n%-16s %8s %8s %7s %7s %9s" % ("student", "float", "int8", "errors", "gzip",
                                         "sparsity"))
  for name, row in rows.items():
    if name == "teacher":
      print("%-16s %8.4f" % (name, row["float"]))
      continue
    print("%-16s %8.4f %8.4f %7d %7s %9s" % (name, row["float"], row["int8"], row["int8_errors"],
                                             row["gzip_bytes"], row["sparsity"]))
  for variant, s in report.get("summary", {}).items():
    print("%-16s int8 %.4f +- %.4f, errors %.1f +- %.1f, %.0f +- %.0f bytes (seeds %s)" % (
        variant, s["int8"]["mean"], s["int8"]["stdev"], s["int8_errors"]["mean"],
        s["int8_errors"]["stdev"], s["gzip_bytes"]["mean"], s["gzip_bytes"]["stdev"],
        ",".join(map(str, seeds))))


if __name__ == "__main__":
  cli.entry(main, "distill_variants")
