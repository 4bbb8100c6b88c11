"""Resolving and checking a data source before any work. Imports no TensorFlow.

:func:`resolve` turns a :class:`DataConfig` into a :class:`Source`: a TFDS
builder that exists, holds image-classification data and is prepared (the
embedded ``digits`` is prepared on first use, offline), or the arrays of a
user ``.npz`` that passed every check (keys, shapes, dtypes, label range,
NaN/inf). Every problem is a one-line :class:`ConfigError` naming the flag or
file. TFDS imports TensorFlow lazily, so unknown names and unprepared datasets
are refused in about a second.
"""

import os
from typing import Optional

from pipelines.config.data import (
  CSV_PREFIX,
  IMAGES_PREFIX,
  NPZ_PREFIX,
  TFRECORD_PREFIX,
  DataConfig,
)
from pipelines.config.errors import ConfigError
from pipelines.data.arrays import resolve_npz
from pipelines.data.images import resolve_images
from pipelines.data.tfrecords import resolve_tfrecord
from pipelines.data.base import Source, carve_indices, carve_size  # noqa: F401  (re-exported)
from pipelines.data.tabular import resolve_csv, resolve_synthetic
from pipelines.data.tfds_source import KINDS, resolve_tfds

_LAST: dict = {}


def resolve(config: DataConfig) -> Source:
  """Checks ``config``'s source and returns it; the last result is memoised."""
  config.validate()
  key = (config.dataset, config.data_dir, config.num_classes, config.image_size, config.task,
         config.splits, config.tfrecord_image_key, config.tfrecord_label_key,
         config.tfrecord_features_key,
         config.target_column, config.test_fraction, config.seed if config.is_synthetic or
         config.csv_path or config.images_path else None, repr(config.source_identity()))
  if _LAST.get("key") == key:
    return _LAST["source"]
  _refuse_bare_path(config.dataset)
  if config.npz_path is not None:
    source = resolve_npz(config)
  elif config.csv_path is not None:
    source = resolve_csv(config)
  elif config.is_synthetic:
    source = resolve_synthetic(config)
  elif config.images_path is not None:
    source = resolve_images(config)
  elif config.tfrecord_path is not None:
    source = resolve_tfrecord(config)
  else:
    source = resolve_tfds(config)
  _LAST.clear()
  _LAST.update(key=key, source=source)
  return source


def _refuse_bare_path(dataset: str) -> None:
  """A file or folder given without its kind's prefix: one line with the prefix it needs (TFDS
  would fail to parse it as a builder name)."""
  looks_like_path = dataset.startswith((os.sep, ".", "~"))
  if ":" in dataset.split(os.sep)[0] or not (looks_like_path or os.sep in dataset):
    return  # a prefixed source, or a TFDS name ("mnist", "mnist:3.0.1")
  path = os.path.expanduser(dataset)
  if not os.path.exists(path):
    if looks_like_path:
      raise ConfigError("--dataset=%s: no such file or folder" % dataset)
    return  # "name/config" is a TFDS name
  if os.path.isdir(path):
    entries = os.listdir(path)
    records = any(".tfrecord" in f or f.endswith(".tfrec") for f in entries)
    prefix = TFRECORD_PREFIX if records else IMAGES_PREFIX
  else:
    ext = os.path.splitext(path)[1].lower()
    prefix = {".npz": NPZ_PREFIX, ".csv": CSV_PREFIX}.get(ext)
    if prefix is None:
      raise ConfigError("--dataset=%s is a file kdprune does not read; %s" % (dataset, KINDS))
  raise ConfigError("--dataset=%s is a %s: pass --dataset=%s%s (%s)" % (
      dataset, "folder" if os.path.isdir(path) else "file", prefix, dataset, KINDS))


def check_augment(config: DataConfig, augment: str, flag: str) -> None:
  """Refuses image augmentation for data that is not images."""
  if augment != "none":
    shape = resolve(config).input_shape
    if len(shape) != 3:
      raise ConfigError("%s=%s needs images [H, W, C]; --dataset=%s has inputs of shape %s" % (
          flag, augment, config.dataset, shape))


def split_sizes(config: DataConfig) -> Optional[dict]:
  """Examples per split as :func:`pipelines.data.bundle.load` will give them, without TensorFlow.

  ``None`` when the source records no counts (e.g. under ``tfds.testing.mock_data``).
  """
  source = resolve(config)
  if source.arrays is not None:
    a = source.arrays
    n_train, n_test = len(a["x_train"]), len(a["x_test"])
    n_val = len(a["x_val"]) if "x_val" in a else None
  elif source.records is not None:
    counts = source.records["counts"]
    n_train, n_test, n_val = counts["train"], counts["test"], counts.get("validation")
  elif source.files is not None:
    n_train, n_test = len(source.files["train"][0]), len(source.files["test"][0])
    n_val = len(source.files["validation"][0]) if "validation" in source.files else None
  else:
    splits = source.builder.info.splits
    if not splits:
      return None
    counts = {role: int(splits[spec].num_examples) for role, spec in source.roles.items()}
    if not counts.get("train") or not counts.get("test"):
      return None
    n_train, n_test, n_val = counts["train"], counts["test"], counts.get("validation")
  if n_val is None:
    n_val = carve_size(n_train, config.validation_fraction)
    n_train -= n_val
  if config.train_examples:
    n_train = min(n_train, config.train_examples)
  return {"train": n_train, "validation": n_val, "test": n_test}
