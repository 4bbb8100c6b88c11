"""Memory that does not grow with the data: peak RSS of the student stage at two dataset sizes.

  python -m benchmarks.data_memory --sizes=5000,50000 --out=/tmp/kdprune-data-memory

For each size N, writes a synthetic TFRecord set (``tfrecord:``, TF-slim keys) of 64x64x3 JPEGs
in 100 classes (4 training files of N examples in all, one test file of 1000; validation carved
from train), trains a tiny teacher for one epoch, then runs the student stage (one epoch,
teacher outputs cached in the store on disk, ``--cache_budget_mb`` small enough that ``auto``
picks the file cache) in its own process and reads that process' peak RSS (``wait4``'s
``ru_maxrss``). Prints, per N, the peak RSS, the teacher-output store's size on disk and the
size expected (training examples x 100 classes x 2 bytes), then the difference of the peaks.
Goal (issue 19): the peaks differ by less than 200 MB.
"""

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = 100
TEST_EXAMPLES = 1000
TRAIN_FILES = 4


def write_records(folder: str, n: int, seed: int = 0) -> None:
  """Synthetic 64x64x3 JPEGs: a class-dependent colour and stripe pattern plus noise."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from models.compat import tf  # pylint: disable=g-import-not-at-top
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  palette = rng.integers(0, 256, size=(CLASSES, 3))
  yy, xx = np.mgrid[0:64, 0:64]

  def example(label):
    stripes = ((xx * (1 + label % 7) + yy * (label // 7 % 5)) // 8) % 2
    image = palette[label][None, None, :] * (0.5 + 0.5 * stripes[..., None])
    image = np.clip(image + rng.normal(0, 24, size=(64, 64, 3)), 0, 255).astype(np.uint8)
    return tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[tf.io.encode_jpeg(image, quality=90).numpy()])),
        "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
    })).SerializeToString()

  def write(name, count):
    with tf.io.TFRecordWriter(os.path.join(folder, name)) as w:
      for _ in range(count):
        w.write(example(int(rng.integers(0, CLASSES))))
  for i in range(TRAIN_FILES):
    lo, hi = n * i // TRAIN_FILES, n * (i + 1) // TRAIN_FILES
    write("train-%05d-of-%05d" % (i, TRAIN_FILES), hi - lo)
  write("test-00000-of-00001", TEST_EXAMPLES)


def run(args, measure=False):
  """Runs ``python -m <args>`` in the repository; returns (seconds, peak RSS in MiB or None)."""
  start = time.time()
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.Popen([sys.executable, "-m"] + args, cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  out = []
  for line in proc.stdout:
    out.append(line)
    if line.startswith("[data]"):
      print("  " + line.rstrip(), flush=True)
  _, status, usage = os.wait4(proc.pid, 0)
  proc.returncode = os.waitstatus_to_exitcode(status)
  if proc.returncode:
    sys.stderr.write("".join(out[-40:]))
    raise SystemExit("%s failed (exit %d)" % (" ".join(args[:1]), proc.returncode))
  return time.time() - start, (usage.ru_maxrss / 1024.0 if measure else None)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", default="5000,50000")
  parser.add_argument("--out", default="/tmp/kdprune-data-memory")
  parser.add_argument("--cache_budget_mb", type=int, default=256)
  args = parser.parse_args()
  results = []
  for n in [int(s) for s in args.sizes.split(",")]:
    folder = os.path.join(args.out, "records-%d" % n)
    workdir = os.path.join(args.out, "run-%d" % n)
    if not os.path.exists(os.path.join(folder, "test-00000-of-00001")):
      start = time.time()
      write_records(folder, n)
      print("N=%d: wrote the records in %.0f s" % (n, time.time() - start), flush=True)
    data = ["--workdir=%s" % workdir, "--dataset=tfrecord:%s" % folder,
            "--num_classes=%d" % CLASSES, "--cache_budget_mb=%d" % args.cache_budget_mb,
            "--batch_size=128", "--progress=none"]
    teacher_s, _ = run(["pipelines.cli.teacher"] + data + [
        "--teacher_model=cnn", "--teacher_width=8", "--teacher_depth=1", "--teacher_epochs=1"])
    student_s, peak = run(["pipelines.cli.student", "--force"] + data + [
        "--student_model=cnn", "--student_width=4", "--student_depth=1", "--student_epochs=1",
        "--teacher_outputs=cached", "--final_sparsity=0.5"], measure=True)
    stores = [os.path.join(root, "") for root, _, files in os.walk(
        os.path.join(workdir, "teacher", "logits")) if "meta.json" in files]
    meta = json.load(open(os.path.join(stores[0], "meta.json")))
    store_bytes = sum(os.path.getsize(os.path.join(stores[0], f)) for f in os.listdir(stores[0])
                      if f != "meta.json")
    expected = meta["num_examples"] * CLASSES * 2
    row = {"examples": n, "train_examples": meta["num_examples"],
           "student_peak_rss_mb": round(peak, 1), "store_bytes": store_bytes,
           "store_expected_bytes": expected, "teacher_seconds": round(teacher_s, 1),
           "student_seconds": round(student_s, 1)}
    results.append(row)
    print(json.dumps(row), flush=True)
  if len(results) >= 2:
    diff = results[-1]["student_peak_rss_mb"] - results[0]["student_peak_rss_mb"]
    print("peak RSS of the student stage: %s; difference %.1f MB (goal < 200 MB)" % (
        ", ".join("N=%d %.1f MB" % (r["examples"], r["student_peak_rss_mb"]) for r in results),
        diff))
  for r in results:
    print("N=%d: teacher-output store %d bytes on disk, expected %d (%s)" % (
        r["examples"], r["store_bytes"], r["store_expected_bytes"],
        "equal" if r["store_bytes"] == r["store_expected_bytes"] else "DIFFERENT"))


if __name__ == "__main__":
  main()
