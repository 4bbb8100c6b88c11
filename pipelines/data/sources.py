"""The kinds of data source, and resolving and checking one before any work. Imports no
TensorFlow.

:data:`KINDS` lists every :class:`~pipelines.data.base.SourceKind`; the first that claims
``--dataset`` checks it (:func:`resolve`), counts its splits (:func:`split_sizes`) and builds
its tf.data pipelines (:func:`pipelines.data.bundle.load`). Every problem is a one-line
:class:`ConfigError` naming the flag or file; TFDS imports TensorFlow lazily, so unknown names and
unprepared datasets are refused in about a second.
"""

import os
from typing import Optional

from pipelines.config.data import DataConfig
from pipelines.config.errors import ConfigError
from pipelines.data.arrays import NPZ
from pipelines.data.base import Source, SourceKind, UnknownSource, carve_indices, plan  # noqa: F401
from pipelines.data.images import IMAGES
from pipelines.data.tabular import CSV, SYNTHETIC
from pipelines.data.tfds_source import TFDS
from pipelines.data.tfrecords import TFRECORD

KINDS = (NPZ, CSV, SYNTHETIC, IMAGES, TFRECORD, TFDS)  # TFDS last: it claims any other name
# Every kind of --dataset, for the messages that refuse one.
EVERY_KIND = "use %s or %s" % (", ".join(k.usage for k in KINDS[:-1]), KINDS[-1].usage)
_LAST: dict = {}


def kind_of(dataset: str) -> SourceKind:
  """The kind that claims ``dataset``."""
  return next(kind for kind in KINDS if kind.claims(dataset))


def resolve(config: DataConfig) -> Source:
  """Checks ``config``'s source and returns it; the last result is memoised."""
  config.validate()
  kind = kind_of(config.dataset)
  key = (config.dataset, config.data_dir, config.num_classes, config.image_size, config.task,
         config.splits, config.tfrecord_image_key, config.tfrecord_label_key,
         config.tfrecord_features_key, config.target_column, config.test_fraction,
         config.seed if kind.seeded else None, repr(config.source_identity()))
  if _LAST.get("key") == key:
    return _LAST["source"]
  _refuse_bare_path(config.dataset)
  try:
    source = kind.resolve(config)
  except UnknownSource as e:
    raise ConfigError("%s; %s" % (e, EVERY_KIND)) from None
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
    records = any(".tfrecord" in f or f.endswith(".tfrec") for f in os.listdir(path))
    prefix = (TFRECORD if records else IMAGES).prefix
  else:
    ext = os.path.splitext(path)[1].lower()
    prefix = {".npz": NPZ.prefix, ".csv": CSV.prefix}.get(ext)
    if prefix is None:
      raise ConfigError("--dataset=%s is a file kdprune does not read; %s" % (
          dataset, EVERY_KIND))
  raise ConfigError("--dataset=%s is a %s: pass --dataset=%s%s (%s)" % (
      dataset, "folder" if os.path.isdir(path) else "file", prefix, dataset, EVERY_KIND))


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
  sizes = source.kind.split_sizes(source)
  return None if sizes is None else plan(sizes, config)[0]
