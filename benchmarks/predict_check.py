"""The export served from its files alone gives the report's accuracy (issue 17, defect 4).

    python -m benchmarks.predict_check --workdir=runs/mnist --dataset=mnist \\
        --data_dir=../shared/data/tfds

Writes the *raw* test split of a TFDS dataset (uint8 images, as TFDS gives them, no
normalisation) to ``<workdir>/predict_check/test_raw.npz``, runs ``kdprune-predict`` on the
export's product (a child process: ``python -m pipelines.cli.predict``, which knows nothing of the
run but the files in the export folder), and compares the accuracy of its ``prediction`` column
with the product's ``test_accuracy`` in ``report.json``. Prints both and the number of rows that
differ in count; exits 1 if the two accuracies differ.
"""

import csv
import json
import os
import subprocess
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A finished run directory.")
flags.DEFINE_string("name", "default", "The student's name (its export folder).")
flags.DEFINE_string("dataset", "mnist", "The TFDS dataset the run used.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir.")
flags.DEFINE_string("split", "test", "The split the report's test figures are on.")
flags.mark_flag_as_required("workdir")


def main(argv):
  del argv
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  import pipelines.data.datasets  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import  (digits)
  export_dir = os.path.join(FLAGS.workdir, "export", FLAGS.name)
  with open(os.path.join(export_dir, "report.json")) as f:
    report = json.load(f)
  product = next(m for m in report["models"] if m["name"] == report["product"])
  out_dir = os.path.join(FLAGS.workdir, "predict_check")
  os.makedirs(out_dir, exist_ok=True)
  x, y = tfds.as_numpy(tfds.load(FLAGS.dataset, split=FLAGS.split, data_dir=FLAGS.data_dir,
                                 as_supervised=True, batch_size=-1))
  raw = os.path.join(out_dir, "test_raw.npz")
  np.savez(raw, x=x, y=y)
  predictions = os.path.join(out_dir, "predictions.csv")
  command = [sys.executable, "-m", "pipelines.cli.predict",
             "--model=%s" % os.path.join(export_dir, report["product"] + ".tflite"),
             "--input=%s" % raw, "--output=%s" % predictions]
  done = subprocess.run(command, capture_output=True, text=True)
  if done.returncode != 0:
    raise SystemExit("kdprune-predict failed: %s" % done.stderr[-2000:])
  with open(predictions) as f:
    predicted = np.array([int(row["prediction"]) for row in csv.DictReader(f)])
  served = float(np.mean(predicted == y.reshape(-1)))
  print(json.dumps({"examples": int(len(y)), "kdprune_predict_accuracy": served,
                    "report_test_accuracy": product["test_accuracy"],
                    "correct_predict": int(np.sum(predicted == y.reshape(-1))),
                    "correct_report": int(round(product["test_accuracy"] * len(y))),
                    "command": " ".join(command)}, indent=2))
  if abs(served - product["test_accuracy"]) > 0.5 / len(y):
    raise SystemExit(1)


if __name__ == "__main__":
  app.run(main)
