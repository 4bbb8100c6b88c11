"""Distillation gain: the same student, same pruning schedule, distilled vs hard labels only.

  python -m tests.benchmarks.distill_gain --flagfile=launch/presets/mnist.cfg --workdir=runs/mnist

Uses (or first trains) the teacher in --workdir, then trains two students,
``student/distilled`` and ``student/hard_labels`` (``--distill=false``), with every
other flag equal, and prints their test errors and the ratio
errors(distilled) / errors(hard labels). Goal on the MNIST preset: <= 0.85.
Reruns reuse finished stages (the manifest); pass --force to retrain.
"""

import dataclasses
import json
import time

from absl import flags

from pipelines import cli
from tests.benchmarks import common

FLAGS = flags.FLAGS


def main(argv):
  del argv
  workdir = FLAGS.workdir
  start = time.time()
  base, _, results = common.teacher_and_students(
      (name, lambda b, e=enabled: common.with_distill(b, e))
      for name, enabled in (("distilled", True), ("hard_labels", False)))
  n_test = results["teacher"].get("test_examples") or _test_examples(workdir)
  errors = {k: round((1 - v["test_accuracy"]) * n_test) for k, v in results.items()}
  ratio = errors["distilled"] / max(1, errors["hard_labels"])
  report = {
      "dataset": base.data.dataset, "test_examples": n_test,
      "student": dataclasses.asdict(base.model), "target_sparsity": base.pruning.target,
      "temperature": base.distill.temperature, "alpha": base.distill.alpha,
      "errors": errors, "ratio_distilled_over_hard": round(ratio, 3),
      "accuracy": {k: round(v["test_accuracy"], 4) for k, v in results.items()},
      "sparsity": {k: results[k]["sparsity"] for k in ("distilled", "hard_labels")},
      "nonzero_params": {k: results[k]["nonzero_params"] for k in ("distilled", "hard_labels")},
      "params": results["distilled"]["params"], "wall_seconds": round(time.time() - start, 1),
  }
  print(json.dumps(report, indent=2))
  print("\n%-12s %8s %7s %9s" % ("model", "accuracy", "errors", "sparsity"))
  for k in ("teacher", "distilled", "hard_labels"):
    print("%-12s %8.4f %7d %9s" % (k, results[k]["test_accuracy"], errors[k],
                                   results[k].get("sparsity", "-")))
  print("errors distilled / hard labels: %.3f (goal <= 0.85)" % ratio)


def _test_examples(workdir):
  with open("%s/teacher/metrics.json" % workdir) as f:
    return json.load(f)["data"]["num_examples"]["test"]


if __name__ == "__main__":
  cli.entry(main, "distill_gain")
