"""The seed regression experiment: teacher, unpruned and pruned (0.75) students, with and without
distillation, their validation and test MSE side by side.

  python -m benchmarks.regression_seed --flagfile=launch/presets/seed_regression.cfg \
      --workdir=runs/seed_regression

Uses (or first trains) the teacher in --workdir, then trains four students
with every other flag as given: ``unpruned_hard`` and ``unpruned_distilled``
(``--final_sparsity=0``), ``pruned_hard`` and ``pruned_distilled``
(``--final_sparsity`` of the flags, 0.75 in the preset); ``*_hard`` learn from
the labels alone (``--distill=false``). Prints JSON, then a table. Reruns
reuse finished stages (the manifest); pass --force to retrain the students.
"""

import dataclasses
import json
import time

from absl import flags

from benchmarks import common
from pipelines.cli import app as cli
from pipelines.cli import flags as kflags

FLAGS = flags.FLAGS
COLUMNS = ("val_mse", "test_mse", "test_mae", "sparsity", "nonzero_params", "epochs_run",
           "train_seconds")


def main(argv):
  del argv
  start = time.time()
  sparsity = kflags.student_config_from_flags().pruning.final_sparsity
  base, t_config, results = common.teacher_and_students(
      (name, lambda b, s=s, e=enabled: common.with_distill(b, e, final_sparsity=s))
      for name, s, enabled in (("unpruned_hard", 0.0, False), ("unpruned_distilled", 0.0, True),
                               ("pruned_hard", sparsity, False),
                               ("pruned_distilled", sparsity, True)))
  report = {
      "dataset": base.data.dataset, "task": base.data.task, "alpha": base.distill.alpha,
      "teacher_model": dataclasses.asdict(t_config.model),
      "student_model": dataclasses.asdict(base.model),
      "models": {k: {c: v.get(c) for c in COLUMNS + ("params", "val_mae")}
                 for k, v in results.items()},
      "wall_seconds": round(time.time() - start, 1),
  }
  print(json.dumps(report, indent=2))
  print("\n%-20s %10s %10s %10s %9s %10s %7s" % ("model", "val MSE", "test MSE", "test MAE",
                                                  "sparsity", "nonzero", "epochs"))
  for k, v in results.items():
    print("%-20s %10.5f %10.5f %10.5f %9s %10d %7d" % (
        k, v["val_mse"], v["test_mse"], v["test_mae"],
        "%.3f" % v["sparsity"] if "sparsity" in v else "-",
        v.get("nonzero_params", v["params"]), v["epochs_run"]))


if __name__ == "__main__":
  cli.entry(main, "regression_seed")
