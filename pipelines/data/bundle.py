"""Datasets: TFDS by name, the embedded ``digits`` default, the user's ``.npz`` or CSV, or the
synthetic regression dataset.

Every source ends in the same :class:`DatasetBundle`: unbatched, cached
train / validation / test ``tf.data`` pipelines of ``(x float32, y int32)``
(``y float32 [targets]`` for regression),
plus the input shape, the number of classes and the number of examples per
split. When the source has no validation split one is carved from train,
deterministically (``validation_fraction``, ``seed``). The source is checked
first (:mod:`pipelines.sources`), so a bad one fails before any example is read.

Example:
  >>> bundle = load(DataConfig(dataset="digits"))          # doctest: +SKIP
  >>> bundle.input_shape, bundle.num_classes               # doctest: +SKIP
  ((8, 8, 1), 10)
  >>> for x, y in bundle.batches("train", 32, shuffle=True).take(1): ...  # doctest: +SKIP
"""

import dataclasses
from typing import Callable, Dict, Tuple

import numpy as np

from models.compat import tf
from pipelines.config import DEFAULT_DATASET, NORMALIZATIONS, DataConfig  # noqa: F401
from pipelines.data import sources
from pipelines.data.sources import carve_indices  # noqa: F401  (re-exported)

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
    return self._raw(name).map(self.normalize, num_parallel_calls=tf.data.AUTOTUNE)

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
    with one row per example, in the split's order, e.g. teacher logits) is
    zipped with the examples *before* shuffling, so each example keeps its own
    row; batches are then ``(x, (y, extra))``.
    """
    ds = self._raw(split)
    if extras is not None:
      if len(extras) != self.num_examples[split]:
        raise ValueError("%d extra rows for %d %s examples" % (
            len(extras), self.num_examples[split], split))
      ds = tf.data.Dataset.zip((ds, tf.data.Dataset.from_tensor_slices(extras)))
    if shuffle:
      buffer = max(1, min(self.num_examples[split], _MAX_SHUFFLE_BUFFER))
      ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if extras is not None:  # ((x, y), extra) -> (x, (y, extra)), once per batch
      ds = ds.map(lambda xy, extra: (xy[0], (xy[1], extra)))
    ds = ds.map(self.normalize, num_parallel_calls=tf.data.AUTOTUNE)
    if augment != "none":
      transform = augmenter(augment, self.input_shape, seed)
      ds = ds.map(lambda x, y: (transform(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    # In-memory data has no files to shard: under multi-worker training each worker takes its
    # share of every global batch (the batch size stays global).
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)

  def head(self, split: str, count: int) -> Tuple[np.ndarray, np.ndarray]:
    """The first ``count`` normalised examples of ``split`` as arrays ``(x, y)``.

    Reads the split to its end: a partial read of an in-memory ``cache()``
    (``take(k)``, ``next(iter(...))``) can race with the next reader, which then
    finds the cache completed with only the examples read so far (seen as "Input
    dataset was expected to contain 359 elements but contained only 1").
    """
    xs, ys, have = [], [], 0
    for x, y in self.batches(split, 256):
      if have < count:
        xs.append(x.numpy()[:count - have])
        ys.append(y.numpy()[:count - have])
        have += len(xs[-1])
    return np.concatenate(xs), np.concatenate(ys)

  def sample(self, split: str, count: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """``count`` normalised examples of ``split`` drawn uniformly without replacement, seeded.

    The indices are drawn from the split's known size (same ``seed``, same
    examples), then one streaming pass keeps only those rows: memory holds the
    sample, not the split, and a class-sorted file still gives every class
    (:meth:`head` would give the first ``count``, one class). Returned in
    storage order. Reads the split to its end, like :meth:`head`.
    """
    n = self.num_examples[split]
    count = max(0, min(count, n))
    wanted = np.sort(np.random.default_rng(seed).choice(n, size=count, replace=False))
    xs, ys, start = [], [], 0
    for x, y in self.batches(split, 256):
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

  def describe(self) -> dict:
    """JSON-able summary for metrics and manifests."""
    return {
        "name": self.name,
        "source": self.source,
        "input_shape": list(self.input_shape),
        "num_classes": self.num_classes,
        "num_examples": dict(self.num_examples),
        "validation_source": self.validation_source,
        "task": self.task,
    }


def load(config: DataConfig) -> DatasetBundle:
  """Builds the bundle for ``config``; raises ConfigError for a bad source."""
  source = sources.resolve(config)
  if source.arrays is not None:
    return _from_arrays(config, source)
  return _from_tfds(config, source)


def _carved(config: DataConfig) -> str:
  return "carved from train (fraction %g, seed %d)" % (config.validation_fraction, config.seed)


def _from_arrays(config: DataConfig, source: sources.Source) -> DatasetBundle:
  arrays = source.arrays
  x_train, y_train = arrays["x_train"], arrays["y_train"]
  if "x_val" in arrays:
    x_val, y_val = arrays["x_val"], arrays["y_val"]
    validation_source = "x_val/y_val"
  else:
    tr, va = carve_indices(len(x_train), config.validation_fraction, config.seed)
    x_val, y_val = x_train[va], y_train[va]
    x_train, y_train = x_train[tr], y_train[tr]
    validation_source = _carved(config)
  if config.train_examples:
    x_train, y_train = x_train[:config.train_examples], y_train[:config.train_examples]

  raw = {
      "train": (x_train, y_train),
      "validation": (x_val, y_val),
      "test": (arrays["x_test"], arrays["y_test"]),
  }
  mode = config.normalization
  if mode == "auto" and source.kind == "csv":
    mode = "standardize"  # tabular columns come in arbitrary units
  stats = None
  if mode == "standardize":
    stats = _moments_numpy(x_train)
  elif mode == "maxabs":
    stats = _max_abs_numpy(x_train)
  splits = {}
  for name, (x, y) in raw.items():
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    splits[name] = ds.cache() if config.cache else ds
  return DatasetBundle(
      name=config.dataset, source=source.kind, raw=splits,
      normalize=_normalizer(mode, x_train.dtype, stats),
      input_shape=source.input_shape, num_classes=source.num_classes,
      num_examples={k: int(len(v[0])) for k, v in raw.items()},
      validation_source=validation_source, task=config.task)


def _from_tfds(config: DataConfig, source: sources.Source) -> DatasetBundle:
  builder = source.builder
  info = builder.info

  def read(split):
    ds = builder.as_dataset(split=split, shuffle_files=False)
    return ds.map(lambda ex: (ex[source.input_key], tf.cast(ex[source.label_key], tf.int32)))

  n_train = _num_examples(info, "train", read)
  if "validation" in source.splits:
    train, validation = read("train"), read("validation")
    counts = {"train": n_train, "validation": _num_examples(info, "validation", read)}
    validation_source = "validation split"
  else:
    tr_idx, va_idx = carve_indices(n_train, config.validation_fraction, config.seed)
    mask = np.zeros(n_train, dtype=bool)
    mask[va_idx] = True
    is_val = tf.constant(mask)
    indexed = read("train").enumerate()
    train = indexed.filter(lambda i, ex: tf.logical_not(tf.gather(is_val, i))).map(_drop_index)
    validation = indexed.filter(lambda i, ex: tf.gather(is_val, i)).map(_drop_index)
    counts = {"train": len(tr_idx), "validation": len(va_idx)}
    validation_source = _carved(config)
  test = read("test")
  counts["test"] = _num_examples(info, "test", read)
  if config.train_examples:
    train = train.take(config.train_examples)
    counts["train"] = min(counts["train"], config.train_examples)

  splits = {"train": train, "validation": validation, "test": test}
  if config.image_size is not None:
    size = tuple(int(s) for s in config.image_size)
    dtype = tf.as_dtype(source.input_dtype)

    def resize(x, y):
      x = tf.image.resize(x, size, antialias=True)
      if dtype.is_integer:
        x = tf.round(tf.clip_by_value(x, dtype.min, dtype.max))
      return tf.cast(x, dtype), y
    splits = {k: v.map(resize, num_parallel_calls=tf.data.AUTOTUNE) for k, v in splits.items()}

  if config.cache:  # cache the compact decoded form; normalising is cheap
    splits = {k: v.cache() for k, v in splits.items()}
  stats = _moments_dataset(splits["train"]) if config.normalization == "standardize" else None
  return DatasetBundle(
      name=config.dataset, source="tfds", raw=splits,
      normalize=_normalizer(config.normalization, source.input_dtype, stats),
      input_shape=source.input_shape, num_classes=source.num_classes,
      num_examples={k: int(v) for k, v in counts.items()},
      validation_source=validation_source)


def augmenter(kind: str, input_shape, seed: int = 0):
  """A batch transform for training images: ``shift`` or ``flip_shift``.

  ``shift`` translates each image by up to 10% of its height and width (zero
  fill, as the background of digits); ``flip_shift`` also flips horizontally.

  Raises:
    ConfigError: for inputs that are not images.
  """
  from models.compat import keras  # pylint: disable=g-import-not-at-top
  from pipelines.config.errors import ConfigError  # pylint: disable=g-import-not-at-top
  if len(input_shape) != 3:
    raise ConfigError("augmentation %r needs images [H, W, C]; the data has shape %s" % (
        kind, tuple(input_shape)))
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


def _num_examples(info, split, read):
  n = int(info.splits[split].num_examples) if split in info.splits else 0
  if n > 0:
    return n
  # Metadata without counts (e.g. under tfds.testing.mock_data): count once.
  return int(read(split).reduce(np.int64(0), lambda c, _: c + 1).numpy())


def _drop_index(i, example):
  del i
  return example


def _normalizer(mode: str, dtype, stats):
  """Returns ``(x, y) -> (float32 x, y)`` for ``mode``."""
  if mode == "standardize":
    mean, std = (tf.constant(s, tf.float32) for s in stats)
    return lambda x, y: ((tf.cast(x, tf.float32) - mean) / std, y)
  if mode == "maxabs":
    scale = tf.constant(1.0 / stats, tf.float32)
    return lambda x, y: (tf.cast(x, tf.float32) * scale, y)
  if mode == "auto" and np.dtype(dtype) == np.uint8:
    return lambda x, y: (tf.cast(x, tf.float32) * (1.0 / 255.0), y)
  return lambda x, y: (tf.cast(x, tf.float32), y)


def _moments_numpy(x: np.ndarray):
  flat = x.reshape(-1, x.shape[-1]).astype(np.float64)
  mean, std = flat.mean(axis=0), flat.std(axis=0)
  return mean.astype(np.float32), np.where(std > 1e-8, std, 1.0).astype(np.float32)


def _max_abs_numpy(x: np.ndarray):
  """Per-feature largest absolute value (1 where a feature is all zero)."""
  top = np.abs(x.reshape(-1, x.shape[-1]).astype(np.float64)).max(axis=0)
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
