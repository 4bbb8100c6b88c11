"""Distillation gain: the same student, same pruning schedule, distilled vs hard labels only.

  python -m benchmarks.distill_gain --flagfile=launch/presets/mnist.cfg --workdir=runs/mnist
  python -m benchmarks.distill_gain ... --student_seeds=0,1,2,3,4   # repeated

Uses (or first trains) the teacher in --workdir, then trains two students,
``student/distilled`` and ``student/hard_labels`` (``--distill=false``), with every
other flag equal, and prints their test errors and the ratio
errors(distilled) / errors(hard labels). Goal on the MNIST preset: <= 0.85.

With ``--student_seeds`` each pair is trained once per seed (``--student_seed``:
initialisation, shuffling, dropout; the validation split and the teacher stay
those of ``--seed``), as ``distilled_s<seed>`` / ``hard_labels_s<seed>``; the
ratio is then that of the mean errors, with the per-seed figures beside it.
Reruns reuse finished stages (the manifest); pass --force to retrain.
"""

import dataclasses
import json
import statistics
import time

from absl import flags

from benchmarks import common
from pipelines import config as configs
from pipelines.cli import app as cli
from pipelines.config.errors import ConfigError

FLAGS = flags.FLAGS
flags.DEFINE_list("student_seeds", [], "Train each student once per seed (--student_seed) and "
                  "compare mean errors; empty: one pair with the flags' seed.")

KINDS = (("distilled", True), ("hard_labels", False))


def _variants(seeds):
  if not seeds:
    return [(kind, lambda b, e=enabled: common.with_distill(b, e)) for kind, enabled in KINDS]
  out = []
  for seed in seeds:
    for kind, enabled in KINDS:
      out.append(("%s_s%d" % (kind, seed), lambda b, e=enabled, s=seed: dataclasses.replace(
          common.with_distill(b, e), train=dataclasses.replace(b.train, seed=s))))
  return out


def _seeds(values):
  """``--student_seeds`` as integers, refused before the teacher trains if any is not a seed."""
  try:
    seeds = [int(v) for v in values]
  except ValueError:
    raise ConfigError("--student_seeds=%s must be integers, e.g. 1,2,3" % (
        ",".join(values),)) from None
  if not all(map(configs.is_seed, seeds)) or len(set(seeds)) != len(seeds):
    raise ConfigError("--student_seeds=%s must be distinct integers in %s" % (
        ",".join(values), configs.SEED_RANGE))
  return seeds


def main(argv):
  del argv
  workdir = FLAGS.workdir
  seeds = _seeds(FLAGS.student_seeds)
  start = time.time()
  base, _, results = common.teacher_and_students(_variants(seeds))
  n_test = results["teacher"].get("test_examples") or _test_examples(workdir)
  errors = {k: round((1 - v["test_accuracy"]) * n_test) for k, v in results.items()}
  names = {kind: (["%s_s%d" % (kind, s) for s in seeds] if seeds else [kind])
           for kind, _ in KINDS}
  mean = {kind: statistics.fmean(errors[n] for n in names[kind]) for kind in names}
  ratio = mean["distilled"] / max(1, mean["hard_labels"])
  report = {
      "dataset": base.data.dataset, "test_examples": n_test,
      "student": dataclasses.asdict(base.model), "target_sparsity": base.pruning.target,
      "temperature": base.distill.temperature, "alpha": base.distill.alpha,
      "student_seeds": seeds or [base.train.seed_or(base.data.seed)],
      "errors": errors, "mean_errors": mean, "ratio_distilled_over_hard": round(ratio, 3),
      "accuracy": {k: round(v["test_accuracy"], 4) for k, v in results.items()},
      "sparsity": {k: v["sparsity"] for k, v in results.items() if k != "teacher"},
      "model_sparsity": {k: v.get("model_sparsity") for k, v in results.items()
                         if k != "teacher"},
      "nonzero_params": {k: v["nonzero_params"] for k, v in results.items() if k != "teacher"},
      "params": results[names["distilled"][0]]["params"],
      "wall_seconds": round(time.time() - start, 1),
  }
  if len(seeds) > 1:
    report["stdev_errors"] = {kind: round(statistics.stdev(errors[n] for n in names[kind]), 1)
                              for kind in names}
    report["ratio_per_seed"] = [round(errors["distilled_s%d" % s] /
                                      max(1, errors["hard_labels_s%d" % s]), 3) for s in seeds]
  print(json.dumps(report, indent=2))
  print("\n%-16s %8s %7s %9s" % ("model", "accuracy", "errors", "sparsity"))
  for k in ["teacher"] + names["distilled"] + names["hard_labels"]:
    print("%-16s %8.4f %7d %9s" % (k, results[k]["test_accuracy"], errors[k],
                                   results[k].get("sparsity", "-")))
  if seeds:
    print("mean errors: distilled %.1f, hard labels %.1f over seeds %s" % (
        mean["distilled"], mean["hard_labels"], ",".join(map(str, seeds))))
  print("errors distilled / hard labels: %.3f (goal <= 0.85)" % ratio)


def _test_examples(workdir):
  with open("%s/teacher/metrics.json" % workdir) as f:
    return json.load(f)["data"]["num_examples"]["test"]


if __name__ == "__main__":
  cli.entry(main, "distill_gain")
