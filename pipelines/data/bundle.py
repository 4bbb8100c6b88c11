"""Datasets: every kind of source (:mod:`pipelines.data.sources`) ends in the same
:class:`DatasetBundle`: unbatched train / validation / test ``tf.data`` pipelines of
``(x float32, y int32)`` (``y float32 [targets]`` for regression), cached as ``--cache`` says
(:mod:`pipelines.data.caching`), plus the input shape, the number of classes and the number of
examples per split. When the source has no validation split one is carved from train,
deterministically (``validation_fraction``, ``seed``). The source is checked first, so a bad one
fails before any example is read; its kind's module builds its raw pipelines, and the carve,
resize, cache and normalisation here are the same for every kind.

Example:
  >>> bundle = load(DataConfig(dataset="digits"))          # doctest: +SKIP
  >>> bundle.input_shape, bundle.num_classes               # doctest: +SKIP
  ((8, 8, 1), 10)
  >>> for x, y in bundle.batches("train", 32, shuffle=True).take(1): ...  # doctest: +SKIP
"""

import dataclasses
import functools
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from models.compat import keras, plain, tf
from pipelines.config import DEFAULT_DATASET, NORMALIZATIONS, DataConfig  # noqa: F401
from pipelines.config.errors import ConfigError
from pipelines.data import caching, sources, tfrecords
from pipelines.data.base import carve_indices, plan  # noqa: F401  (carve_indices re-exported)

_MAX_SHUFFLE_BUFFER = 65536


@dataclasses.dataclass
class DatasetBundle:
  """Train / validation / test pipelines and what a model needs to know about them.

  ``raw`` holds each split as cached examples in their compact stored form
  (e.g. uint8 images) and ``normalize`` maps ``(x, y)`` to ``(float32 x, int32
  y)``; it works on single examples and on batches. :meth:`batches` shuffles
  and batches the raw examples and normalises whole batches (vectorised, much
  cheaper than per example). ``train`` / ``validation`` / ``test`` are the
  normalised unbatched examples, in a fixed order.
  """

  name: str
  source: str
  raw: Dict[str, tf.data.Dataset]
  normalize: Callable
  input_shape: Tuple[int, ...]
  num_classes: int
  num_examples: Dict[str, int]
  validation_source: str
  task: str = "classification"  # or "regression": y holds float targets, num_classes outputs
  # What ``normalize`` does, as explicit numbers (:func:`normalization_spec`): the statistics
  # fitted on train live here, so an export can record them (``preprocessing.json``).
  normalization: dict = dataclasses.field(default_factory=lambda: {"kind": "none"})
  input_dtype: str = "float32"  # dtype of the raw (stored) inputs, before ``normalize``
  class_names: Optional[Tuple[str, ...]] = None  # None: "0" .. "N-1"
  feature_names: Optional[Tuple[str, ...]] = None  # CSV feature columns, in order
  image_size: Optional[Tuple[int, int]] = None  # --image_size: raw images are resized to it
  file_shards: Dict[str, int] = dataclasses.field(default_factory=dict)  # split -> files read
  test_source: Optional[str] = None  # how kdprune carved the test split; None: the source's own
  # Each split before its cache (:mod:`pipelines.data.caching`): what :meth:`head` reads.
  uncached: Dict[str, tf.data.Dataset] = dataclasses.field(default_factory=dict)
  cache_note: str = ""  # the cache mode chosen and why
  # The memory budget (--cache_budget_mb): the shuffle buffer holds at most an eighth of it.
  memory_budget: int = dataclasses.field(default_factory=caching.default_budget_bytes)
  # ``() -> (min, max)`` of the raw training inputs (array sources; computed when asked: one
  # pass over train), recorded by :meth:`preprocessing`; None where it would cost a pass over
  # files.
  input_range: Optional[Callable[[], Tuple[float, float]]] = None

  @property
  def train(self) -> tf.data.Dataset:
    return self.split("train")

  @property
  def validation(self) -> tf.data.Dataset:
    return self.split("validation")

  @property
  def test(self) -> tf.data.Dataset:
    return self.split("test")

  def split(self, name: str) -> tf.data.Dataset:
    """The normalised, unbatched examples of ``name`` in their fixed order."""
    return self._raw(name).map(plain(self.normalize), num_parallel_calls=tf.data.AUTOTUNE)

  def _raw(self, name: str) -> tf.data.Dataset:
    """The cached examples of ``name``, with their exact count declared to tf.data.

    A known cardinality lets Keras size epochs (progress bars from epoch 1,
    ``steps_per_execution``); a wrong count fails loudly at the end of an epoch.
    """
    if name not in self.raw:
      raise ValueError("unknown split %r" % name)
    return self.raw[name].apply(
        tf.data.experimental.assert_cardinality(self.num_examples[name]))

  def batches(self, split: str, batch_size: int, shuffle: bool = False, seed: int = 0,
              drop_remainder: bool = False, augment: str = "none",
              extras=None) -> tf.data.Dataset:
    """Batched, normalised, prefetched pipeline of ``split``.

    Reshuffled each epoch when ``shuffle``; ``augment`` (see :func:`augmenter`)
    transforms each normalised batch afresh every epoch. ``extras`` (an array
    with one row per example, in the split's order, e.g. teacher logits, or a
    ``tf.data.Dataset`` of such rows with its count known, e.g. a teacher-output
    store streamed from disk) is zipped with the examples *before* shuffling,
    so each example keeps its own row; batches are then ``(x, (y, extra))``.
    """
    ds = self._raw(split)
    if extras is not None:
      if isinstance(extras, tf.data.Dataset):  # streamed rows (a teacher-output store)
        rows = int(extras.cardinality())
      else:
        rows, extras = len(extras), tf.data.Dataset.from_tensor_slices(extras)
      if rows != self.num_examples[split]:
        raise ValueError("%d extra rows for %d %s examples" % (
            rows, self.num_examples[split], split))
      ds = tf.data.Dataset.zip((ds, extras))
    if shuffle:
      buffer = max(1, min(self.num_examples[split], self.shuffle_buffer(ds.element_spec)))
      ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if extras is not None:  # ((x, y), extra) -> (x, (y, extra)), once per batch
      ds = ds.map(plain(lambda xy, extra: (xy[0], (xy[1], extra))))
    ds = ds.map(plain(self.normalize), num_parallel_calls=tf.data.AUTOTUNE)
    if augment != "none":
      transform = augmenter(augment, self.input_shape, seed)
      ds = ds.map(plain(lambda x, y: (transform(x), y)), num_parallel_calls=tf.data.AUTOTUNE)
    # Under multi-worker training each worker takes its share of every global batch (the batch
    # size stays global): by file when the split is read straight from at least as many files as
    # there are workers and nothing is zipped to its examples by position, else by example.
    options = tf.data.Options()
    policy = tf.data.experimental.AutoShardPolicy.DATA
    if extras is None and self.file_shards.get(split, 0) >= max(2, tfrecords.cluster_workers()):
      policy = tf.data.experimental.AutoShardPolicy.FILE
    options.experimental_distribute.auto_shard_policy = policy
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)

  def shuffle_buffer(self, element_spec) -> int:
    """Examples the training shuffle holds: at most 65536 and at most ``memory_budget / 8``
    bytes of them (256 MiB by default: all of MNIST or CIFAR-10, a window of larger data)."""
    per = caching.example_bytes(element_spec)
    cap = _MAX_SHUFFLE_BUFFER if not per else self.memory_budget // (8 * per)
    return max(1, min(_MAX_SHUFFLE_BUFFER, cap))

  def head(self, split: str, count: int) -> Tuple[np.ndarray, np.ndarray]:
    """The first ``count`` normalised examples of ``split`` as arrays ``(x, y)``.

    Reads only those examples (``take(count)``), from the split before its cache: a partial
    read of a cache that is still being filled could leave it completed with only the examples
    read so far (seen as "Input dataset was expected to contain 359 elements but contained only
    1"), and reading the split to its end would cost a pass over the whole split.
    """
    if split not in self.raw:
      raise ValueError("unknown split %r" % split)
    ds = self.uncached.get(split, self.raw[split]).take(max(0, int(count)))
    xs, ys = [], []
    for x, y in ds.batch(256).map(plain(self.normalize)):
      xs.append(x.numpy())
      ys.append(y.numpy())
    if not xs:
      raise ValueError("no %s examples" % split)
    return np.concatenate(xs), np.concatenate(ys)

  def sample(self, split: str, count: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """``count`` normalised examples of ``split`` drawn uniformly without replacement, seeded.

    The indices are drawn from the split's known size (same ``seed``, same
    examples), then one streaming pass keeps only those rows: memory holds the
    sample, not the split, and a class-sorted file still gives every class
    (:meth:`head` would give the first ``count``, one class). Returned in
    storage order. Reads the split a batch at a time up to the last wanted row, from the
    split before its cache (see :meth:`head`).
    """
    n = self.num_examples[split]
    count = max(0, min(count, n))
    wanted = np.sort(np.random.default_rng(seed).choice(n, size=count, replace=False))
    xs, ys, start = [], [], 0
    last = int(wanted[-1]) + 1 if count else 0
    ds = self.uncached.get(split, self.raw[split]).take(last)  # as head(): not the cache
    for x, y in ds.batch(256).map(plain(self.normalize)):
      size = int(x.shape[0])
      lo, hi = np.searchsorted(wanted, [start, start + size])
      if hi > lo:
        rows = wanted[lo:hi] - start
        xs.append(x.numpy()[rows])
        ys.append(y.numpy()[rows])
      start += size
    if not xs:
      raise ValueError("no %s examples to sample" % split)
    return np.concatenate(xs), np.concatenate(ys)

  def steps_per_epoch(self, batch_size: int, split: str = "train",
                      drop_remainder: bool = False) -> int:
    n = self.num_examples[split]
    return n // batch_size if drop_remainder else -(-n // batch_size)

  def preprocessing(self) -> dict:
    """How raw inputs become what the model takes, as JSON-able explicit numbers.

    ``input``: the shape and dtype of one raw example (an image ``[H, W, C]``
    or a feature vector); ``resize`` (images resized to ``--image_size``
    before anything else, bilinear with antialiasing, rounded and clipped back
    to the raw integer dtype); ``normalization`` (:func:`normalization_spec`);
    ``feature_columns`` (CSV sources: the columns, in the model's order);
    ``class_names`` (classification: one per output).
    """
    out = {
        "task": self.task,
        "dataset": self.name,
        "source": self.source,
        "input": {"shape": [int(d) for d in self.input_shape], "dtype": self.input_dtype,
                  "layout": "image HWC" if len(self.input_shape) == 3 else "features"},
        "resize": None if self.image_size is None else {
            "size": [int(s) for s in self.image_size], "method": "bilinear", "antialias": True,
            "then": "round and clip to the raw dtype's range" if np.dtype(
                self.input_dtype).kind in "iu" else "none"},
        "normalization": self.normalization,
    }
    if self.input_range is not None:  # what training saw: kdprune-predict warns beyond it
      lo, hi = self.input_range()
      out["input"]["range"] = [float(lo), float(hi)]
    if self.feature_names is not None:
      out["feature_columns"] = list(self.feature_names)
    if self.task == "regression":
      out["outputs"] = {"kind": "values", "targets": int(self.num_classes)}
    else:
      names = self.class_names or tuple(str(i) for i in range(self.num_classes))
      out["outputs"] = {"kind": "logits", "classes": int(self.num_classes),
                        "probability": "softmax of the outputs"}
      out["class_names"] = list(names)
    return out

  def describe(self) -> dict:
    """JSON-able summary for metrics and manifests."""
    return {
        "name": self.name,
        "source": self.source,
        "input_shape": list(self.input_shape),
        "num_classes": self.num_classes,
        "num_examples": dict(self.num_examples),
        "validation_source": self.validation_source,
        "test_source": self.test_source or "the source's own test split",
        "task": self.task,
        **({"class_names": list(self.class_names)} if self.class_names else {}),
    }


def load(config: DataConfig) -> DatasetBundle:
  """Builds the bundle for ``config``; raises ConfigError for a bad source.

  The source's kind (:data:`pipelines.data.sources.KINDS`) checks it and builds its raw
  pipelines (:meth:`~pipelines.data.base.SourceKind.read`); then, the same for every kind: the
  validation carve and ``--train_examples`` (:func:`~pipelines.data.base.plan`), ``--image_size``,
  the cache and the normalisation fitted on train.
  """
  source = sources.resolve(config)
  read = source.kind.read(source, config)
  counts, train_rows, validation_rows = plan(read.sizes, config)
  pick = read.pick or functools.partial(_positions, read.splits.get("train"), read.sizes["train"])
  raw = {"train": pick(train_rows), "test": read.splits["test"],
         "validation": read.splits["validation"] if validation_rows is None else pick(
             validation_rows)}
  uncached = {k: _sized(raw[k], config, source) for k in ("train", "validation", "test")}
  splits, note = caching.cache_splits(config, uncached, counts,
                                      carved=validation_rows is not None and read.pick is None)
  mode = source.kind.auto_normalization if config.normalization == "auto" else config.normalization
  stats, x = None, read.x_train  # fitted on train: the array's rows, else the cached split
  if mode == "standardize":
    stats = _moments_dataset(splits["train"]) if x is None else _moments_numpy(x, train_rows)
  elif mode == "maxabs":
    stats = _max_abs_dataset(splits["train"]) if x is None else _max_abs_numpy(x, train_rows)
  spec = normalization_spec(mode, source.input_dtype, stats)
  return DatasetBundle(
      name=config.dataset, source=source.kind.name, raw=splits, normalize=normalizer(spec),
      input_shape=source.input_shape, num_classes=source.num_classes, num_examples=counts,
      validation_source=read.validation_source if validation_rows is None else (
          "carved from train (fraction %g, seed %d)" % (config.validation_fraction, config.seed)),
      test_source=source.test_source, task=config.task, normalization=spec,
      input_dtype=np.dtype(source.input_dtype).name,
      class_names=source.class_names, feature_names=source.feature_names,
      image_size=None if config.image_size is None else tuple(int(s) for s in config.image_size),
      file_shards=read.file_shards, uncached=uncached, cache_note=note,
      memory_budget=caching.budget_bytes(config.cache_budget_mb),
      input_range=None if x is None else lambda: _range_numpy(x, train_rows))


def _positions(stream: tf.data.Dataset, n: int, rows: np.ndarray) -> tf.data.Dataset:
  """The examples at the sorted positions ``rows`` of ``stream`` (``n`` examples): a filter over
  the stream that ends at the last one."""
  if rows[-1] == len(rows) - 1:  # the first len(rows): all of them, or --train_examples
    return stream.take(len(rows))
  mask = np.zeros(n, dtype=bool)
  mask[rows] = True
  keep = tf.constant(mask)
  return stream.enumerate().filter(plain(lambda i, ex: tf.gather(keep, i))).map(
      plain(_drop_index)).take(len(rows))


def _sized(ds: tf.data.Dataset, config: DataConfig, source) -> tf.data.Dataset:
  """Raw images resized to ``--image_size``, or given their shape where decoding leaves it
  unknown; other inputs as they are."""
  if config.image_size is not None:
    size = tuple(int(s) for s in config.image_size)
    return ds.map(plain(lambda x, y: (resize_raw(x, size, source.input_dtype), y)),
                  num_parallel_calls=tf.data.AUTOTUNE)
  if ds.element_spec[0].shape.is_fully_defined():
    return ds
  shape = source.input_shape
  return ds.map(plain(lambda x, y: (tf.ensure_shape(x, shape), y)),
                num_parallel_calls=tf.data.AUTOTUNE)


def augmenter(kind: str, input_shape, seed: int = 0):
  """A batch transform for training images: ``shift``, ``flip_shift`` or ``crop_flip``.

  ``shift`` translates each image by up to 10% of its height and width (zero
  fill, as the background of digits); ``flip_shift`` also flips horizontally;
  ``crop_flip`` is the natural-image recipe (Inception-style random resized crop,
  then a horizontal flip).

  Raises:
    ConfigError: for inputs that are not images.
  """
  if len(input_shape) != 3:
    raise ConfigError("augmentation %r needs images [H, W, C]; the data has shape %s" % (
        kind, tuple(input_shape)))
  if kind == "crop_flip":
    return _crop_flip(input_shape, seed)
  layers = []
  if kind == "flip_shift":
    layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
  if kind in ("shift", "flip_shift"):
    layers.append(keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed + 1))
  if not layers:
    raise ConfigError("unknown augmentation %r" % kind)

  def transform(x):
    for layer in layers:
      x = layer(x, training=True)
    return x
  return transform


def _crop_flip(input_shape, seed: int, scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3)):
  """Random resized crop (area ``scale`` of the image, aspect ``ratio``) back to the input size,
  then a random horizontal flip; per image, vectorised over the batch, seeded."""
  height, width = int(input_shape[0]), int(input_shape[1])
  generator = tf.random.Generator.from_seed(seed)

  def transform(x):
    n = tf.shape(x)[0]
    area = generator.uniform([n], scale[0], scale[1])
    log_r = generator.uniform([n], np.log(ratio[0]), np.log(ratio[1]))
    aspect = tf.exp(log_r) * (height / width)  # relative box: w / h in image fractions
    h = tf.minimum(1.0, tf.sqrt(area / aspect))
    w = tf.minimum(1.0, tf.sqrt(area * aspect))
    y0 = generator.uniform([n]) * (1.0 - h)
    x0 = generator.uniform([n]) * (1.0 - w)
    boxes = tf.stack([y0, x0, y0 + h, x0 + w], axis=1)
    crops = tf.image.crop_and_resize(x, boxes, tf.range(n), (height, width))
    flip = generator.uniform([n]) < 0.5
    return tf.where(flip[:, None, None, None], tf.image.flip_left_right(crops), crops)
  return transform


def _drop_index(i, example):
  del i
  return example


def normalization_spec(mode: str, dtype, stats) -> dict:
  """The normalisation of ``mode`` (with the ``stats`` fitted on train) as explicit numbers.

  Every kind starts from ``float32(x)`` and computes in float32, over the last
  axis (channels of an image, features of a vector):

  * ``{"kind": "none"}``: ``float32(x)``;
  * ``{"kind": "scale", "scale": 1/255}``: ``float32(x) * float32(scale)`` (uint8 inputs);
  * ``{"kind": "standardize", "mean": [...], "std": [...]}``: ``(float32(x) - mean) / std``;
  * ``{"kind": "maxabs", "max_abs": [...], "scale": [...]}``: ``float32(x) * scale`` with
    ``scale = float32(1) / max_abs`` (both recorded).

  The numbers are float32 values written exactly (a JSON double holds a float32
  exactly), so a server that follows the formula computes bit-identical inputs.
  """
  def floats(values):
    return [float(v) for v in np.asarray(values, np.float32).reshape(-1)]
  if mode == "standardize":
    mean, std = stats
    return {"kind": "standardize", "mean": floats(mean), "std": floats(std),
            "formula": "(float32(x) - mean) / std, per last axis"}
  if mode == "maxabs":
    top = np.asarray(stats, np.float32)
    return {"kind": "maxabs", "max_abs": floats(top), "scale": floats(np.float32(1.0) / top),
            "formula": "float32(x) * scale, per last axis (scale = 1 / max_abs)"}
  if mode == "auto" and np.dtype(dtype) == np.uint8:
    return {"kind": "scale", "scale": 1.0 / 255.0, "formula": "float32(x) * float32(scale)"}
  return {"kind": "none", "formula": "float32(x)"}


def normalizer(spec: dict) -> Callable:
  """Returns ``(x, y) -> (float32 x, y)`` computing :func:`normalization_spec`'s ``spec``."""
  kind = spec["kind"]
  if kind == "standardize":
    mean, std = (tf.constant(np.asarray(spec[k], np.float32)) for k in ("mean", "std"))
    return lambda x, y: ((tf.cast(x, tf.float32) - mean) / std, y)
  if kind in ("maxabs", "scale"):
    scale = tf.constant(np.asarray(spec["scale"], np.float32))
    return lambda x, y: (tf.cast(x, tf.float32) * scale, y)
  if kind != "none":
    raise ValueError("unknown normalization kind %r" % kind)
  return lambda x, y: (tf.cast(x, tf.float32), y)


def _blocks(x: np.ndarray, index: Optional[np.ndarray], rows: int = 4096):
  """``x[index]`` (all of ``x`` when None) as float64 blocks of ``[rows x features]``."""
  index = np.arange(len(x)) if index is None else index
  for start in range(0, len(index), rows):
    block = np.asarray(x[index[start:start + rows]], np.float64)
    yield block.reshape(-1, x.shape[-1])


def _moments_numpy(x: np.ndarray, index: Optional[np.ndarray] = None):
  """Per-last-axis mean/std of ``x[index]``; a mapped or large array a block at a time (it is not
  copied), an in-memory one in one float64 pass as before (the same numbers to the last bit)."""
  if not isinstance(x, np.memmap) and x.size <= (1 << 25):
    flat = (x if index is None else x[index]).reshape(-1, x.shape[-1]).astype(np.float64)
    mean, std = flat.mean(axis=0), flat.std(axis=0)
    return mean.astype(np.float32), np.where(std > 1e-8, std, 1.0).astype(np.float32)
  n, total, squares = 0, 0.0, 0.0
  shift = np.asarray(x[index[:1] if index is not None else slice(0, 1)], np.float64).reshape(
      -1, x.shape[-1]).mean(axis=0)  # shifted sums: no cancellation for large means
  for block in _blocks(x, index):
    d = block - shift
    n, total, squares = n + len(d), total + d.sum(axis=0), squares + (d * d).sum(axis=0)
  mean_d = total / n
  mean, std = shift + mean_d, np.sqrt(np.maximum(squares / n - mean_d ** 2, 0.0))
  return mean.astype(np.float32), np.where(std > 1e-8, std, 1.0).astype(np.float32)


def resize_raw(images, size, dtype):
  """Raw images (``[H, W, C]`` or a batch of them) resized to ``size`` as every ``--image_size``
  source is: bilinear with antialiasing, rounded and clipped back into an integer ``dtype``
  (what ``preprocessing.json`` records as ``resize``; ``kdprune-predict`` resizes the same way)."""
  dtype = tf.as_dtype(dtype)
  x = tf.image.resize(images, size, antialias=True)
  if dtype.is_integer:
    x = tf.round(tf.clip_by_value(x, dtype.min, dtype.max))
  return tf.cast(x, dtype)


def _range_numpy(x: np.ndarray, index: Optional[np.ndarray] = None) -> Tuple[float, float]:
  """The smallest and largest value of ``x[index]``, a block at a time."""
  lo, hi = np.inf, -np.inf
  for block in _blocks(x, index):
    if block.size:
      lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
  return lo, hi


def _max_abs_numpy(x: np.ndarray, index: Optional[np.ndarray] = None):
  """Per-feature largest absolute value (1 where a feature is all zero), a block at a time."""
  top = np.zeros(x.shape[-1], np.float64)
  for block in _blocks(x, index):
    top = np.maximum(top, np.abs(block).max(axis=0))
  return np.where(top > 0, top, 1.0).astype(np.float32)


def _moments_dataset(ds: tf.data.Dataset):
  """Per-last-axis mean/std of the inputs of ``ds`` in one streaming pass."""
  def step(acc, xy):
    x = tf.cast(tf.reshape(xy[0], [-1, tf.shape(xy[0])[-1]]), tf.float64)
    return (acc[0] + tf.cast(tf.shape(x)[0], tf.float64),
            acc[1] + tf.reduce_sum(x, axis=0), acc[2] + tf.reduce_sum(x * x, axis=0))
  channels = ds.element_spec[0].shape[-1]
  init = (tf.constant(0.0, tf.float64), tf.zeros([channels], tf.float64),
          tf.zeros([channels], tf.float64))
  n, s, ss = ds.reduce(init, step)
  mean = (s / n).numpy()
  std = np.sqrt(np.maximum((ss / n).numpy() - mean ** 2, 0.0))
  return mean.astype(np.float32), np.where(std > 1e-8, std, 1.0).astype(np.float32)


def _max_abs_dataset(ds: tf.data.Dataset):
  """Per-last-axis largest absolute value of the inputs of ``ds`` (1 where all zero), one pass."""
  channels = ds.element_spec[0].shape[-1]
  top = ds.reduce(tf.zeros([channels], tf.float32), lambda top, xy: tf.maximum(top, tf.reduce_max(
      tf.abs(tf.reshape(tf.cast(xy[0], tf.float32), [-1, channels])), axis=0))).numpy()
  return np.where(top > 0, top, 1.0).astype(np.float32)
