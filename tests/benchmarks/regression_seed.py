"""The seed regression experiment: teacher, unpruned and pruned (0.75) students, with and without
distillation, their validation and test MSE side by side.

  python -m tests.benchmarks.regression_seed --flagfile=launch/presets/seed_regression.cfg \
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

from pipelines import cli, stage, student, teacher

FLAGS = flags.FLAGS
COLUMNS = ("val_mse", "test_mse", "test_mae", "sparsity", "nonzero_params", "epochs_run",
           "train_seconds")


def main(argv):
  del argv
  workdir = FLAGS.workdir
  t_config = teacher.config_from_flags()
  start = time.time()
  t = stage.execute("teacher", teacher.run, t_config, workdir, teacher.fingerprint_inputs(t_config))
  base = student.config_from_flags()
  results = {"teacher": t.entry["metrics"]}
  for name, sparsity, enabled in (("unpruned_hard", 0.0, False),
                                  ("unpruned_distilled", 0.0, True),
                                  ("pruned_hard", base.pruning.final_sparsity, False),
                                  ("pruned_distilled", base.pruning.final_sparsity, True)):
    config = dataclasses.replace(
        base, name=name, distill=dataclasses.replace(base.distill, enabled=enabled),
        pruning=dataclasses.replace(base.pruning, final_sparsity=sparsity))
    outcome = stage.execute(config.stage, student.run, config, workdir,
                            student.fingerprint_inputs(config, workdir), force=FLAGS.force)
    results[name] = outcome.entry["metrics"]
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
