"""The same preset on MNIST from TFDS, from PNG class folders and from TFRecords (issue 19).

    python -m benchmarks.mnist_sources --workdir=/tmp/mnist-sources \\
        --pipeline_args="--flagfile=launch/presets/mnist_quick.cfg"

Writes MNIST from ``--data_dir`` (TFDS) out twice, once, under ``<workdir>/data/``:

* ``png/train/<class>/<i>.png`` and ``png/test/<class>/<i>.png`` (the layout of Keras'
  ``image_dataset_from_directory`` and TFDS' ``ImageFolder``);
* ``tfrecord/train-0000i-of-00008`` and ``tfrecord/test-0000i-of-00002``: ``tf.train.Example``
  records with the TF-slim / Model Garden keys (``image/encoded`` PNG bytes,
  ``image/class/label``);

then runs ``python -m pipelines.cli.pipeline`` with the same ``--pipeline_args`` on
``--dataset=mnist``, ``--dataset=images:<png>`` and ``--dataset=tfrecord:<tfrecord>`` (each its own
run directory and child process) and prints, per source, the teacher's, the student's and the
int8 file's test accuracy and the wall time. The validation split is carved from train in each
case (``--validation_fraction``), so the three see different validation examples: compare within
seed noise.
"""

import json
import os
import shlex
import subprocess
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Folder for the data copies and the three run directories.")
flags.DEFINE_string("data_dir", "../shared/data/tfds", "TFDS data_dir with a prepared mnist.")
flags.DEFINE_string("pipeline_args", "--flagfile=launch/presets/mnist_quick.cfg",
                    "Flags of every pipeline run.")
flags.DEFINE_list("sources", ["tfds", "images", "tfrecord"], "Which sources to run.")
flags.DEFINE_bool("reuse", False, "Read a source's finished run directory instead of running it "
                  "again (its wall is then the stages' recorded time, without process start-up).")
flags.mark_flag_as_required("workdir")

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_copies(root: str) -> dict:
  """Writes the PNG folders and the TFRecords once (skipped when their marker exists)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  png, records = os.path.join(root, "png"), os.path.join(root, "tfrecord")
  marker = os.path.join(root, "written.json")
  if os.path.exists(marker):
    with open(marker) as f:
      return json.load(f)
  counts = {}
  for split, shards in (("train", 8), ("test", 2)):
    x, y = tfds.as_numpy(tfds.load("mnist", split=split, data_dir=FLAGS.data_dir,
                                   as_supervised=True, batch_size=-1))
    os.makedirs(records, exist_ok=True)
    writers = [tf.io.TFRecordWriter(os.path.join(records, "%s-%05d-of-%05d" % (split, i, shards)))
               for i in range(shards)]
    for i, (image, label) in enumerate(zip(x, y)):
      encoded = tf.io.encode_png(image).numpy()
      folder = os.path.join(png, split, str(int(label)))
      os.makedirs(folder, exist_ok=True)
      with open(os.path.join(folder, "%05d.png" % i), "wb") as f:
        f.write(encoded)
      example = tf.train.Example(features=tf.train.Features(feature={
          "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
          "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
      }))
      writers[i % shards].write(example.SerializeToString())
    for w in writers:
      w.close()
    counts[split] = int(len(y))
  out = {"png": png, "tfrecord": records, "examples": counts}
  with open(marker, "w") as f:
    json.dump(out, f)
  return out


def run_source(name: str, dataset_flags, workdir: str) -> dict:
  run_dir = os.path.join(workdir, "run-" + name)
  command = [sys.executable, "-m", "pipelines.cli.pipeline", "--workdir=%s" % run_dir, "--force",
             "--progress=none"] + shlex.split(FLAGS.pipeline_args) + dataset_flags
  manifest = os.path.join(run_dir, "manifest.json")
  stages = None
  if FLAGS.reuse and os.path.exists(manifest):
    with open(manifest) as f:
      stages = json.load(f)["stages"]
    if not all(v.get("status") == "done" for v in stages.values()) or len(stages) < 4:
      stages = None
  if stages is None:
    start = time.perf_counter()
    with open(os.path.join(workdir, name + ".log"), "w") as log:
      done = subprocess.run(command, cwd=_REPO, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
      raise SystemExit("%s failed (exit %d): see %s" % (name, done.returncode,
                                                        os.path.join(workdir, name + ".log")))
    with open(manifest) as f:
      stages = json.load(f)["stages"]
  else:
    wall = sum(v["wall_seconds"] for v in stages.values())
  metric = lambda prefix: next(v["metrics"]["test_accuracy"] for k, v in stages.items()  # noqa: E731
                               if k.split("/")[0] == prefix)
  return {"teacher": metric("teacher"), "student": metric("student"), "qat": metric("qat"),
          "int8": metric("export"), "wall_s": round(wall, 1), "command": " ".join(command)}


def main(argv):
  del argv
  workdir = os.path.abspath(FLAGS.workdir)
  os.makedirs(workdir, exist_ok=True)
  data_dir = os.path.abspath(os.path.join(_REPO, FLAGS.data_dir))
  copies = write_copies(os.path.join(workdir, "data"))
  flags_by_source = {
      "tfds": ["--dataset=mnist", "--data_dir=%s" % data_dir],
      "images": ["--dataset=images:%s" % copies["png"]],
      "tfrecord": ["--dataset=tfrecord:%s" % copies["tfrecord"], "--num_classes=10"],
  }
  results = {}
  for name in FLAGS.sources:
    print("running %s ..." % name, flush=True)
    results[name] = run_source(name, flags_by_source[name], workdir)
  print("\n%-10s %9s %9s %9s %9s %9s" % ("source", "teacher", "student", "QAT", "int8", "wall s"))
  for name, r in results.items():
    print("%-10s %8.2f%% %8.2f%% %8.2f%% %8.2f%% %9.1f" % (
        name, 100 * r["teacher"], 100 * r["student"], 100 * r["qat"], 100 * r["int8"],
        r["wall_s"]))
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump({"pipeline_args": FLAGS.pipeline_args, "results": results}, f, indent=2)


if __name__ == "__main__":
  app.run(main)
