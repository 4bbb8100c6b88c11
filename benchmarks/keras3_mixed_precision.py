"""A Keras 3 student's epoch time with and without --mixed_precision.

  python -m benchmarks.keras3_mixed_precision --flagfile=launch/presets/mnist.cfg --workdir=runs/k3mp

Uses (or first trains) the teacher of ``--workdir``, then trains the flags' student as a Keras 3
model (``--student_keras=3``, or the Keras 3 file of ``--student_path``) twice with every other
flag equal: ``--student_name=float32`` and ``--student_name=mixed`` (``--mixed_precision``: Keras
3's mixed_float16 policy and loss scaling). Prints per run the student's seconds per epoch (the
fit alone), its optimizer, test accuracy and sparsity, and the ratio of the epoch times. Mixed
precision pays on GPUs with float16 units (tensor cores); on a CPU it is expected to be slower.
Finished stages are reused (the manifest); pass --force to rerun them.
"""

import dataclasses
import json

from benchmarks import common
from pipelines.cli import app as cli

RUNS = (("float32", False), ("mixed", True))


def _keras3(base, mixed: bool):
  return dataclasses.replace(base, keras=3 if base.path is None else base.keras,
                             train=dataclasses.replace(base.train, mixed_precision=mixed))


def main(argv):
  del argv
  _, _, results = common.teacher_and_students(
      [(name, lambda base, mixed=mixed: _keras3(base, mixed)) for name, mixed in RUNS])
  rows = [{"run": name, "mixed_precision": results[name].get("mixed_precision"),
           "optimizer": results[name].get("optimizer"),
           "seconds_per_epoch": results[name].get("seconds_per_epoch"),
           "epochs_run": results[name].get("epochs_run"),
           "test_accuracy": results[name].get("test_accuracy"),
           "sparsity": results[name].get("sparsity")} for name, _ in RUNS]
  ratio = (round(rows[1]["seconds_per_epoch"] / rows[0]["seconds_per_epoch"], 3)
           if rows[0]["seconds_per_epoch"] and rows[1]["seconds_per_epoch"] else None)
  print(json.dumps({"rows": rows, "mixed_over_float32": ratio}, indent=2))
  print("\n%-8s %-20s %10s %7s %9s %9s" % ("run", "optimizer", "s/epoch", "epochs", "test acc",
                                           "sparsity"))
  for r in rows:
    print("%-8s %-20s %10s %7s %9.4f %9.4f" % (r["run"], r["optimizer"], r["seconds_per_epoch"],
                                               r["epochs_run"], r["test_accuracy"],
                                               r["sparsity"]))
  print("mixed / float32 epoch time: %sx" % ratio)


if __name__ == "__main__":
  cli.entry(main, "keras3_mixed_precision")
