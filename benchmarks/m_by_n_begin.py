"""2:4 (m:n) pruning with the pattern chosen at step 1 against at ``--pruning_begin``, over seeds.

  python -m benchmarks.m_by_n_begin --flagfile=launch/presets/mnist.cfg --workdir=runs/mnist \\
      --pruning_structure=m_by_n --final_sparsity=0.5 --student_seeds=1,2,3

Issue 17, defect 2: tfmot chooses an m:n mask once, when its step counter is 1, so before the fix
the 2:4 pattern came from the student's random initial weights whatever ``--pruning_begin`` said.
``--pruning_begin=0 --pruning_frequency=1`` still does exactly that (the pattern at step 1:
"step1"); the flags' ``--pruning_begin`` (the preset's 0.1 of training) is the fix ("begin"). Uses (or first trains)
the teacher of ``--workdir``, then one float student per variant x seed
(``student/mbyn_<variant>_s<seed>``, every other flag equal, ``--student_seed`` varying
initialisation and shuffling), and prints the test accuracy per variant (mean, sample standard
deviation, per seed), the step the pattern was applied at and the measured sparsity. Student
stage only; finished students are reused (the manifest), --force retrains.
"""

import dataclasses
import json
import statistics
import time

from absl import flags

from benchmarks import common
# Also defines --student_seeds (one student per seed for each variant).
from benchmarks.dynamic_vs_magnitude import _seeds, _spread
from pipelines.cli import app as cli

FLAGS = flags.FLAGS


def main(argv):
  del argv
  seeds = _seeds(FLAGS.student_seeds)
  start = time.time()
  variants = []
  for label in ("step1", "begin"):
    for seed in seeds:
      def change(b, label=label, seed=seed):
        # step1: the first step of tfmot's grid, begin 0 and frequency 1, is step 1.
        pruning = (dataclasses.replace(b.pruning, structure="m_by_n", begin="0", frequency=1)
                   if label == "step1" else dataclasses.replace(b.pruning, structure="m_by_n"))
        return dataclasses.replace(b, pruning=pruning, train=dataclasses.replace(b.train, seed=seed))
      variants.append(("mbyn_%s_s%d" % (label, seed), change))
  base, _, results = common.teacher_and_students(variants)
  rows = []
  for label in ("step1", "begin"):
    runs = [results["mbyn_%s_s%d" % (label, seed)] for seed in seeds]
    acc = [r["test_accuracy"] for r in runs]
    rows.append({"variant": label, "pruning_begin": "0" if label == "step1" else base.pruning.begin,
                 "pruning_frequency": 1 if label == "step1" else base.pruning.frequency,
                 "seeds": seeds, "test_accuracy": [round(a, 4) for a in acc],
                 "mean": round(statistics.fmean(acc), 4), "sd": _spread(acc),
                 "applied_step": [r.get("m_by_n_applied_step") for r in runs],
                 "measured_sparsity": [r["sparsity"] for r in runs]})
  print(json.dumps({"dataset": base.data.dataset, "student": dataclasses.asdict(base.model),
                    "teacher_test_accuracy": results["teacher"].get("test_accuracy"),
                    "m_by_n": list(base.pruning.m_by_n), "epochs": base.train.epochs,
                    "rows": rows, "wall_seconds": round(time.time() - start, 1)}, indent=2))
  print("\n%-7s %-14s %-17s %-24s %s" % ("variant", "pruning_begin", "test acc mean+-sd",
                                         "per seed", "applied at step"))
  for r in rows:
    print("%-7s %-14s %6.2f%% +- %4.2f    %-24s %s" % (
        r["variant"], r["pruning_begin"], 100 * r["mean"], 100 * r["sd"],
        " ".join("%.2f" % (100 * a) for a in r["test_accuracy"]),
        " ".join(str(s) for s in r["applied_step"])))


if __name__ == "__main__":
  cli.entry(main, "m_by_n_begin")
