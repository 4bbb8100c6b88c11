"""Dynamic (RigL-style) against magnitude pruning over several seeds: mean and spread.

  python -m benchmarks.dynamic_vs_magnitude --workdir=runs/dvm --sparsities=0.9,0.95 \
      --student_seeds=1,2,3 --mask_update_every=20
  python -m benchmarks.dynamic_vs_magnitude --flagfile=launch/presets/mnist_quick.cfg \
      --workdir=runs/dvm_mnist --data_dir=/work/shared/data/tfds --train_examples=12000 ...

Uses (or first trains) the teacher of ``--workdir``, then trains one float
student per sparsity x method x seed (``student/s<sparsity>_<method>_s<seed>``,
every other flag equal; ``--student_seed`` varies initialisation and
shuffling, the split and the teacher stay those of ``--seed``) and prints per
sparsity and method the test accuracy (mean, sample standard deviation, per
seed) and, for dynamic, the mask revisions and the regrown weights in total
and still active at the end (``regrown_surviving``). Student stage only (no
QAT/export): the int8 comparison is :mod:`benchmarks.pruning_methods`. Finished
students are reused (the manifest); pass --force to retrain.
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
flags.DEFINE_list("student_seeds", ["1", "2", "3"], "One student per seed (--student_seed) for "
                  "each sparsity and method.")

METHODS = ("magnitude", "dynamic")


def _seeds(values):
  try:
    seeds = [int(v) for v in values]
  except ValueError:
    raise ConfigError("--student_seeds=%s must be integers, e.g. 1,2,3" % ",".join(values)) from None
  if not seeds or not all(map(configs.is_seed, seeds)) or len(set(seeds)) != len(seeds):
    raise ConfigError("--student_seeds=%s must be distinct integers in %s" % (
        ",".join(values), configs.SEED_RANGE))
  return seeds


def _sparsities(values):
  try:
    out = [float(v) for v in values]
  except ValueError:
    raise ConfigError("--sparsities=%s must be numbers" % ",".join(values)) from None
  if not out or not all(0.0 < s < 1.0 for s in out):
    raise ConfigError("--sparsities=%s must be in (0, 1)" % ",".join(values))
  return out


def name_of(sparsity: float, method: str, seed: int) -> str:
  return "s%.3f_%s_s%d" % (sparsity, method, seed)


def _variants(sparsities, seeds):
  out = []
  for s in sparsities:
    for method in METHODS:
      for seed in seeds:
        out.append((name_of(s, method, seed), lambda b, s=s, m=method, seed=seed: dataclasses.replace(
            b, pruning=dataclasses.replace(b.pruning, final_sparsity=s, method=m),
            train=dataclasses.replace(b.train, seed=seed))))
  return out


def _spread(values):
  return round(statistics.stdev(values), 4) if len(values) > 1 else 0.0


def main(argv):
  del argv
  seeds, sparsities = _seeds(FLAGS.student_seeds), _sparsities(FLAGS.sparsities)
  start = time.time()
  base, _, results = common.teacher_and_students(_variants(sparsities, seeds))
  rows = []
  for s in sparsities:
    for method in METHODS:
      runs = [results[name_of(s, method, seed)] for seed in seeds]
      acc = [r["test_accuracy"] for r in runs]
      row = {"sparsity": s, "method": method, "seeds": seeds,
             "test_accuracy": [round(a, 4) for a in acc],
             "mean": round(statistics.fmean(acc), 4), "sd": _spread(acc),
             "measured_sparsity": [r["sparsity"] for r in runs],
             "epochs_run": [r["epochs_run"] for r in runs]}
      if method == "dynamic":
        row.update({k: [r.get(k) for r in runs] for k in (
            "mask_revisions", "regrown_total", "regrown_surviving")})
      rows.append(row)
  report = {"dataset": base.data.dataset, "student": dataclasses.asdict(base.model),
            "teacher_test_accuracy": results["teacher"].get("test_accuracy"),
            "pruning": {"begin": base.pruning.begin, "end": base.pruning.end,
                        "mask_update_every": base.pruning.mask_update_every,
                        "mask_update_end": base.pruning.mask_update_end,
                        "drop_fraction": base.pruning.drop_fraction},
            "epochs": base.train.epochs, "rows": rows,
            "wall_seconds": round(time.time() - start, 1)}
  print(json.dumps(report, indent=2))
  print("\n%-9s %-10s %-17s %-30s %s" % ("sparsity", "method", "test acc mean+-sd", "per seed",
                                         "regrown total / surviving (revisions)"))
  for r in rows:
    extra = ""
    if r["method"] == "dynamic":
      extra = " ".join("%s/%s (%s)" % t for t in zip(r["regrown_total"], r["regrown_surviving"],
                                                     r["mask_revisions"]))
    print("%-9.3f %-10s %6.2f%% +- %4.2f    %-30s %s" % (
        r["sparsity"], r["method"], 100 * r["mean"], 100 * r["sd"],
        " ".join("%.2f" % (100 * a) for a in r["test_accuracy"]), extra))


if __name__ == "__main__":
  cli.entry(main, "dynamic_vs_magnitude")
