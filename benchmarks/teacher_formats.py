"""One teacher trained outside kdprune, saved three ways, each imported and distilled (issue 18).

    python -m benchmarks.teacher_formats --workdir=/tmp/teacher-formats
    python -m benchmarks.teacher_formats --workdir=/tmp/teacher-formats-mnist --dataset=mnist \\
        --data_dir=../shared/data/tfds --pipeline_args="--flagfile=launch/presets/mnist_quick.cfg"

Trains a small CNN with plain tf_keras on the training split exactly as kdprune feeds it
(``pipelines.data.bundle``, so the input scaling matches), then saves it as a tf_keras ``.keras``
file, as a Keras 3 ``.keras`` file (the same architecture built with Keras 3 and given the same
weights) and as a TF SavedModel (``tf.saved_model.save``). For each file it evaluates the file on
the test split with its own library (tf_keras, Keras 3, ``tf.saved_model.load``), runs
``python -m pipelines.cli.pipeline --teacher_path=FILE`` in a child process (its own run
directory), and prints the imported teacher's ``test_accuracy`` from ``teacher/metrics.json``
beside the independent figure, and the pruned int8 student's accuracy and sparsity measured on
its ``.tflite``. Exits 1 if an imported teacher's figure differs from the independent one.
"""

import json
import os
import shlex
import subprocess
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Folder for the teacher files and the three run directories.")
flags.DEFINE_string("dataset", "digits", "Dataset (kdprune's --dataset).")
flags.DEFINE_string("data_dir", None, "TFDS data_dir (kdprune's --data_dir).")
flags.DEFINE_integer("epochs", 10, "Epochs of the outside teacher.")
flags.DEFINE_string("pipeline_args", "", "Further flags of every kdprune-pipeline run.")
flags.mark_flag_as_required("workdir")

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _arrays(bundle, split):
  import numpy as np  # pylint: disable=g-import-not-at-top
  xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in bundle.batches(split, 512)])
  return np.concatenate(xs), np.concatenate(ys).reshape(-1)


def _layers(lib, shape, classes):
  return [lib.layers.Input(shape), lib.layers.Conv2D(32, 3, activation="relu", padding="same"),
          lib.layers.MaxPooling2D(), lib.layers.Flatten(),
          lib.layers.Dense(64, activation="relu"), lib.layers.Dense(classes)]


def write_teachers(root: str) -> dict:
  """Trains the outside teacher; returns ``{format: (path, independent test accuracy)}``."""
  import keras as keras3  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from models.compat import keras, tf  # pylint: disable=g-import-not-at-top
  from pipelines.config.data import DataConfig  # pylint: disable=g-import-not-at-top
  from pipelines.data import bundle as data_lib  # pylint: disable=g-import-not-at-top
  bundle = data_lib.load(DataConfig(dataset=FLAGS.dataset, data_dir=FLAGS.data_dir))
  x, y = _arrays(bundle, "train")
  xt, yt = _arrays(bundle, "test")
  keras.utils.set_random_seed(0)
  model = keras.Sequential(_layers(keras, bundle.input_shape, bundle.num_classes))
  model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  model.fit(x, y, epochs=FLAGS.epochs, batch_size=64, verbose=0)
  os.makedirs(root, exist_ok=True)
  paths = {"tf_keras": os.path.join(root, "teacher_tf_keras.keras"),
           "keras3": os.path.join(root, "teacher_keras3.keras"),
           "savedmodel": os.path.join(root, "teacher_savedmodel")}
  model.save(paths["tf_keras"])
  k3 = keras3.Sequential(_layers(keras3, bundle.input_shape, bundle.num_classes))
  k3.set_weights(model.get_weights())
  k3.save(paths["keras3"])
  tf.saved_model.save(model, paths["savedmodel"])
  accuracy = lambda logits: float(np.mean(np.argmax(logits, -1) == yt))  # noqa: E731
  loaded = tf.saved_model.load(paths["savedmodel"]).signatures["serving_default"]
  independent = {
      "tf_keras": accuracy(keras.models.load_model(paths["tf_keras"]).predict(xt, verbose=0)),
      "keras3": accuracy(np.asarray(keras3.models.load_model(paths["keras3"]).predict(
          xt, verbose=0))),
      "savedmodel": accuracy(list(loaded(tf.constant(xt)).values())[0].numpy()),
  }
  return {k: (paths[k], independent[k]) for k in paths}


def main(argv):
  del argv
  root = os.path.abspath(FLAGS.workdir)
  teachers = write_teachers(os.path.join(root, "teachers"))
  data_flags = ["--dataset=%s" % FLAGS.dataset] + (
      ["--data_dir=%s" % FLAGS.data_dir] if FLAGS.data_dir else [])
  rows, ok = [], True
  for kind, (path, independent) in teachers.items():
    run_dir = os.path.join(root, "run-" + kind)
    command = [sys.executable, "-m", "pipelines.cli.pipeline", "--workdir=%s" % run_dir,
               "--teacher_path=%s" % path, "--force", "--progress=none"] + data_flags + \
        shlex.split(FLAGS.pipeline_args)
    done = subprocess.run(command, cwd=_REPO, capture_output=True, text=True)
    if done.returncode != 0:
      raise SystemExit("%s: kdprune-pipeline failed: %s" % (kind, done.stderr[-2000:]))
    with open(os.path.join(run_dir, "teacher", "metrics.json")) as f:
      imported = json.load(f)["test_accuracy"]
    with open(os.path.join(run_dir, "export", "default", "report.json")) as f:
      report = json.load(f)
    product = next(m for m in report["models"] if m["name"] == report["product"])
    same = abs(imported - independent) < 1e-9
    ok = ok and same
    rows.append((kind, independent, imported, same, product["test_accuracy"],
                 product["sparsity"], product["tflite_gzip_bytes"]))
  print("%-11s %12s %12s %5s %10s %9s %9s" % ("format", "independent", "metrics.json", "same",
                                               "int8 acc", "sparsity", "gzip B"))
  for kind, ind, imp, same, acc, sp, gz in rows:
    print("%-11s %11.4f%% %11.4f%% %5s %9.2f%% %9.3f %9d" % (kind, 100 * ind, 100 * imp, same,
                                                          100 * acc, sp, gz))
  if not ok:
    raise SystemExit(1)


if __name__ == "__main__":
  app.run(main)
