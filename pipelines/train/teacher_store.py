"""The teacher's outputs over the training split, on disk: written once, streamed with their
examples through the shuffle, read again by later stages (the student's store serves QAT).

A store is a folder (``<workdir>/teacher/logits/<key>/``)::

  meta.json                  written last: the store is complete when it exists
  values-00000-of-00002      rows of ``width`` little-endian float16 values (float32 for
  values-00001-of-00002      regression, whose predictions may exceed float16's range)
  classes-0000i-of-0000W     top-k only: rows of k int16 class ids (int32 above 32767 classes)

Shard ``i`` of ``W`` holds the training examples ``[i * N // W, (i + 1) * N // W)`` in the
split's fixed order; under multi-worker training each worker computes and writes its own shard
(the one exception to "only the chief writes the run directory": each worker writes only its
own files), then every worker reads the whole store, since each trains on its share of
batches drawn from the whole shuffled split.

A row of logits beyond float16's range (+-65504) is stored less its largest logit (the softmax
at every temperature is unchanged; :func:`_fit_float16`), with a warning.

Full form (``topk=0``, or ``topk >= classes``): a row is the teacher's ``C`` logits, size
``N x C x 2`` bytes. Top-k form (``--teacher_topk=K``, ``K < C``): a row is the K largest logits
``z_K`` (in descending order) and then one *rest bucket*
``r = T * logsumexp(z_j / T for j not in K)``, so that ``softmax([z_K, r] / T)`` is exactly the
teacher's probability of each top-k class and the total probability of all the others, at the
distillation temperature ``T`` (the store is keyed by T); size ``N x (K + 1) x 2`` bytes plus the
class ids, ``N x K x 2``. :func:`pipelines.train.losses.distillation_loss` takes that form.
"""

import contextlib
import json
import os
from typing import Optional

import numpy as np

from models.compat import plain, tf
from pipelines.runtime import distribute, progress, rundir

META = "meta.json"
FORMAT = 1
FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504


def topk_for(topk: int, classes: int) -> int:
  """The K a store keeps: 0 (the full logits) when ``topk`` is 0 or covers every class."""
  return 0 if not topk or topk >= classes else int(topk)


def store_path(base: str, topk: int, temperature: float) -> str:
  """The folder of the store at ``base`` for ``topk`` (a top-k store is also keyed by T)."""
  return base if not topk else "%s-top%d-T%g" % (base, topk, temperature)


class TeacherStore:
  """A complete store: its metadata and the ``tf.data`` stream of its rows."""

  def __init__(self, path: str, meta: dict):
    self.path = path
    self.meta = meta

  @property
  def num_examples(self) -> int:
    return int(self.meta["num_examples"])

  @property
  def topk(self) -> int:
    return int(self.meta["topk"])

  def files(self, kind: str):
    return [os.path.join(self.path, s[kind]) for s in self.meta["shards"]]

  def nbytes(self) -> int:
    """Bytes of the shard files (without ``meta.json``)."""
    kinds = ("values", "classes") if self.topk else ("values",)
    return sum(os.path.getsize(f) for kind in kinds for f in self.files(kind))

  def dataset(self) -> tf.data.Dataset:
    """One element per training example, in the split's order: the row of logits (full form),
    or ``(values [K + 1], classes [K])`` (top-k form), with its count declared."""
    width, dtype = int(self.meta["width"]), tf.as_dtype(self.meta["dtype"])

    def rows(files, width, dtype):
      ds = tf.data.FixedLengthRecordDataset(files, width * dtype.size, buffer_size=1 << 20)
      return ds.map(plain(lambda r: tf.reshape(tf.io.decode_raw(r, dtype, little_endian=True),
                                               [width])), num_parallel_calls=tf.data.AUTOTUNE)
    values = rows(self.files("values"), width, dtype)
    if self.topk:
      classes = rows(self.files("classes"), self.topk, tf.as_dtype(self.meta["class_dtype"]))
      values = tf.data.Dataset.zip((values, classes.map(plain(lambda c: tf.cast(c, tf.int32)))))
    return values.apply(tf.data.experimental.assert_cardinality(self.num_examples))

  def arrays(self):
    """The whole store as numpy arrays (for tests and small stores)."""
    values = np.concatenate([np.fromfile(f, dtype=np.dtype(self.meta["dtype"]).newbyteorder("<"))
                             for f in self.files("values")]).reshape(self.num_examples, -1)
    if not self.topk:
      return values
    classes = np.concatenate([np.fromfile(f, dtype=np.dtype(self.meta["class_dtype"]))
                              for f in self.files("classes")]).reshape(self.num_examples, -1)
    return values, classes


def open_store(path: str, num_examples: int, classes: int, topk: int,
               temperature: float) -> Optional[TeacherStore]:
  """The complete store at ``path`` if it holds what is asked, else None."""
  try:
    with open(os.path.join(path, META)) as f:
      meta = json.load(f)
  except (OSError, ValueError):
    return None
  want = {"format": FORMAT, "num_examples": int(num_examples), "classes": int(classes),
          "topk": int(topk)}
  if any(meta.get(k) != v for k, v in want.items()):
    return None
  if topk and meta.get("temperature") != float(temperature):
    return None
  store = TeacherStore(path, meta)
  widths = {"values": (int(meta["width"]), np.dtype(meta["dtype"]).itemsize)}
  if topk:
    widths["classes"] = (int(topk), np.dtype(meta["class_dtype"]).itemsize)
  for kind, (width, itemsize) in widths.items():  # every shard whole (a truncated one: rewrite)
    for shard, name in zip(meta["shards"], store.files(kind)):
      if not os.path.exists(name) or os.path.getsize(name) != shard["count"] * width * itemsize:
        return None
  return store


def shard_range(num_examples: int, index: int, count: int):
  """The examples ``[lo, hi)`` of shard ``index`` of ``count``."""
  return num_examples * index // count, num_examples * (index + 1) // count


def _names(index: int, count: int):
  return ("values-%05d-of-%05d" % (index, count), "classes-%05d-of-%05d" % (index, count))


def _fit_float16(values: np.ndarray):
  """``values`` (rows of logits) as float16 can hold them, and how many rows were changed.

  A row with a value beyond +-65504 (float16 would store inf) is shifted by its largest value: a
  softmax is the same for ``z`` and ``z - max(z)``, at every temperature, and so is the top-k
  form's (its rest bucket is a logsumexp of the same logits). What is then still below -65504 is
  set to -65504: its probability was below exp(-65504 / T) of the top class's either way.
  """
  beyond = np.any(np.abs(values) > FLOAT16_MAX, axis=1)
  if not beyond.any():
    return values, 0
  values = values.copy()
  values[beyond] -= values[beyond].max(axis=1, keepdims=True)
  return np.maximum(values, -FLOAT16_MAX), int(beyond.sum())


def write_shard(path: str, teacher, bundle, batch_size: int, topk: int, temperature: float,
                index: int = 0, count: int = 1) -> dict:
  """Runs ``teacher`` over shard ``index`` of ``count`` of the training split and writes its
  rows (a batch at a time: memory holds one batch); returns the shard's metadata entry."""
  n = bundle.num_examples["train"]
  lo, hi = shard_range(n, index, count)
  regression = bundle.task == "regression"
  dtype = np.dtype("<f4" if regression else "<f2")
  class_dtype = np.dtype("<i2" if bundle.num_classes <= 32767 else "<i4")
  if (lo, hi) == (0, n):
    ds = bundle.raw["train"]  # one whole pass: fills the split's cache on the way
  else:  # part of the split: read before the cache (a partial read must not complete it)
    ds = bundle.uncached.get("train", bundle.raw["train"]).skip(lo).take(hi - lo)
  ds = ds.batch(batch_size).map(plain(bundle.normalize), num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.prefetch(tf.data.AUTOTUNE)
  t = float(temperature)

  @tf.function(reduce_retracing=True)
  def outputs(x):
    z = tf.cast(teacher(x, training=False), tf.float32)
    if not topk:
      return z, tf.zeros([tf.shape(z)[0], 0], tf.int32)
    top, ids = tf.math.top_k(z, k=topk)
    picked = tf.reduce_sum(tf.one_hot(ids, tf.shape(z)[1], dtype=tf.float32), axis=1) > 0
    rest = t * tf.reduce_logsumexp(tf.where(picked, -np.inf, z / t), axis=1, keepdims=True)
    return tf.concat([top, rest], axis=1), ids

  values_name, classes_name = _names(index, count)
  written = shifted = 0
  os.makedirs(path, exist_ok=True)
  # The full form has no class ids: no file is made for them (one made and removed again raced
  # with another writer of the same store doing the same, as kdprune-search --parallel does).
  with rundir.atomic_path(os.path.join(path, values_name)) as values_tmp, \
      (rundir.atomic_path(os.path.join(path, classes_name)) if topk
       else contextlib.nullcontext()) as classes_tmp:
    with open(values_tmp, "wb") as vf, \
        (open(classes_tmp, "wb") if topk else contextlib.nullcontext()) as cf:
      for x, _ in ds:
        values, ids = outputs(x)
        values = values.numpy()
        if dtype.itemsize == 2:
          values, rows = _fit_float16(values)
          shifted += rows
        vf.write(values.astype(dtype).tobytes())
        if topk:
          cf.write(ids.numpy().astype(class_dtype).tobytes())
        written += int(values.shape[0])
  if shifted:
    progress.warn("[teacher outputs] the teacher's logits of %d training examples lie beyond "
                  "float16's range (+-%g); stored less their largest logit, which leaves the "
                  "softmax the student learns from as it was" % (shifted, FLOAT16_MAX))
  if written != hi - lo:
    raise RuntimeError("the teacher produced %d outputs for the %d training examples %d-%d" % (
        written, hi - lo, lo, hi))
  return {"start": lo, "count": hi - lo, "values": values_name,
          **({"classes": classes_name} if topk else {}),
          "dtype": dtype.name, "class_dtype": class_dtype.name}


def open_or_write(path: str, teacher, bundle, batch_size: int, topk: int,
                  temperature: float) -> TeacherStore:
  """The store at ``path``, written first when it is missing or holds something else.

  Under multi-worker training each worker writes its own shard, then (after a barrier) the
  chief writes ``meta.json`` and every worker opens the store after a second barrier.
  """
  n, classes = bundle.num_examples["train"], bundle.num_classes
  topk = topk_for(topk, classes)
  store = open_store(path, n, classes, topk, temperature)
  if store is not None:
    return store
  index, count = distribute.worker_index_and_count()
  entry = write_shard(path, teacher, bundle, batch_size, topk, temperature, index, count)
  distribute.barrier()
  if distribute.is_chief():
    shards = []
    for i in range(count):
      lo, hi = shard_range(n, i, count)
      values_name, classes_name = _names(i, count)
      shards.append({"start": lo, "count": hi - lo, "values": values_name,
                     **({"classes": classes_name} if topk else {})})
    meta = {"format": FORMAT, "num_examples": n, "classes": classes, "topk": topk,
            "width": topk + 1 if topk else int(bundle.num_classes), "dtype": entry["dtype"],
            "class_dtype": entry["class_dtype"], "shards": shards,
            **({"temperature": float(temperature)} if topk else {})}
    rundir.write_json(os.path.join(path, META), meta)
  distribute.barrier()
  store = open_store(path, n, classes, topk, temperature)
  if store is None:
    raise RuntimeError("the teacher-output store %s is incomplete after writing it" % path)
  return store
