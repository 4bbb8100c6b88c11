"""TFDS datasets by name (and the embedded ``digits``), checked without reading examples.

TFDS imports TensorFlow lazily, so unknown names and unprepared datasets are
refused in about a second.
"""

import contextlib
import difflib
import logging
import os

import numpy as np

from pipelines.config.data import DataConfig
from pipelines.config.errors import ConfigError
from pipelines.data.base import Read, Source, SourceKind, UnknownSource, first_line


def tfds_module():
  """``tensorflow_datasets`` with kdprune's own builders (``digits``) registered."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  import pipelines.data.datasets  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  return tfds


class Tfds(SourceKind):
  """Any other ``--dataset``: a TFDS name, ``name/config:version``; the embedded ``digits``."""

  name, usage = "tfds", "a TFDS name (digits, mnist, ...)"

  def resolve(self, config: DataConfig) -> Source:
    return _resolve(self, config)

  def split_sizes(self, source: Source):
    splits = source.payload["builder"].info.splits
    if not splits:
      return None
    sizes = {role: int(splits[spec].num_examples) for role, spec in source.payload["roles"].items()}
    return sizes if sizes.get("train") and sizes.get("test") else None

  def read(self, source: Source, config: DataConfig) -> Read:
    """Each role's split as ``(input, int32 label)``; counted by reading where the metadata has
    no counts (e.g. under ``tfds.testing.mock_data``)."""
    from models.compat import plain, tf  # pylint: disable=g-import-not-at-top  (reading)
    builder, (input_key, label_key) = source.payload["builder"], source.payload["keys"]
    roles = source.payload["roles"]
    splits = {role: builder.as_dataset(split=spec, shuffle_files=False).map(
        plain(lambda ex: (ex[input_key], tf.cast(ex[label_key], tf.int32))))
              for role, spec in roles.items()}
    sizes = self.split_sizes(source) or {  # no counts recorded: count once
        role: int(ds.reduce(np.int64(0), lambda c, _: c + 1)) for role, ds in splits.items()}
    return Read(splits, sizes, validation_source="validation split" if roles.get(
        "validation") == "validation" else "split %s" % roles.get("validation"))


def _resolve(kind: Tfds, config: DataConfig) -> Source:
  """The prepared builder, its input and label keys and the split each role reads."""
  tfds = tfds_module()
  flag = "--dataset=%s" % config.dataset
  try:
    builder = tfds.builder(config.dataset, data_dir=config.data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    # The error lists the registered names ("\t- mnist"); tfds.list_builders()
    # would import TensorFlow and probe GCS over the network.
    known = [l.strip()[2:] for l in str(e).splitlines() if l.strip().startswith("- ")]
    base = config.dataset.split("/")[0].split(":")[0]
    names = sorted(set(known) | {"digits", "synthetic_regression"})
    close = difflib.get_close_matches(base, names, n=3)
    hint = (" (did you mean %s?)" % " or ".join(close)) if close else ""
    raise UnknownSource("%s: no such TFDS dataset%s" % (flag, hint)) from None
  except Exception as e:  # bad version/config strings and the like
    raise ConfigError("%s: %s" % (flag, first_line(e))) from None

  info = builder.info
  keys = info.supervised_keys
  if not keys or len(keys) != 2 or not all(isinstance(k, str) for k in keys):
    raise ConfigError("%s: has no (input, label) supervised keys; kdprune needs "
                      "classification data" % flag)
  input_key, label_key = keys
  input_feature, label_feature = info.features[input_key], info.features[label_key]
  if not hasattr(label_feature, "num_classes"):
    raise ConfigError("%s: label %r is not a class label; kdprune needs classification data" % (
        flag, label_key))
  shape = tuple(input_feature.shape)
  if len(shape) not in (1, 3):
    raise ConfigError("%s: input %r has shape %s; expected images [H, W, C] or vectors" % (
        flag, input_key, shape))
  if len(shape) == 3 and shape[2] is None:
    raise ConfigError("%s: images have an unknown number of channels" % flag)
  if config.image_size is not None:
    if len(shape) != 3:
      raise ConfigError("--image_size is only for images; %s has shape %s" % (flag, shape))
    shape = (int(config.image_size[0]), int(config.image_size[1]), shape[2])
  elif None in shape:
    raise ConfigError("%s: images vary in size %s; pass --image_size=H,W to resize them" % (
        flag, shape))

  with _quiet_absl():  # TFDS warns about half-made folders while checking
    prepared = builder.is_prepared()
  if not prepared:
    where = builder.data_dir if config.data_dir else "the TFDS data directory"
    try:
      _prepare(tfds, builder, quiet=config.dataset == "digits")
    except Exception as e:
      # Several workers of one run may prepare it at once: TFDS renames a finished
      # preparation into place, and the losers find the destination taken.
      builder = tfds.builder(config.dataset, data_dir=config.data_dir)
      with _quiet_absl():
        prepared = builder.is_prepared()
      if not prepared:
        raise ConfigError("%s: not prepared in %s and could not be prepared (%s); pass "
                          "--data_dir=<a prepared TFDS directory>" % (
                              flag, where, first_line(e))) from None
    info = builder.info

  splits = tuple(sorted(info.splits.keys()))
  if not splits:
    # No recorded split metadata (e.g. under tfds.testing.mock_data): assume the
    # standard names; reading a missing one still fails with TFDS' own message.
    splits = ("test", "train")
  if config.splits:
    roles = dict(config.splits)
  else:
    roles = {"train": "train", "test": "test"}
    if "validation" in splits:
      roles["validation"] = "validation"
  for role, spec in roles.items():
    base = spec.split("[", 1)[0]
    where = ("--splits=%s=%s" % (role, spec)) if config.splits else flag
    if base not in splits:
      raise ConfigError("%s: %s has no %r split (it has: %s)%s" % (
          where, config.dataset, base, ", ".join(splits),
          "" if config.splits else "; name the splits with --splits=train=...,test=..."))
    if "[" in spec and info.splits:
      try:
        info.splits[spec]  # TFDS parses the slicing
      except (ValueError, KeyError) as e:
        raise ConfigError("%s: %s" % (where, first_line(e))) from None
  given = ",".join("%s=%s" % kv for kv in config.splits)
  if roles["train"] in (roles["test"], roles.get("validation")):
    raise ConfigError("--splits=%s: train and %s read the same split" % (
        given, "test" if roles["train"] == roles["test"] else "validation"))
  if roles.get("validation") == roles["test"]:
    logging.getLogger("kdprune").warning(
        "[data] warning: --splits=%s: validation and test read the same split, so early stopping "
        "chooses on the data the test figures come from; carve validation from train instead "
        "(e.g. train=train[:98%%],validation=train[98%%:],test=%s)", given, roles["test"])
  return Source(kind=kind, input_shape=tuple(int(d) for d in shape),
                num_classes=int(label_feature.num_classes),
                input_dtype=np.dtype(input_feature.np_dtype),
                class_names=_class_names(label_feature),
                payload={"builder": builder, "keys": (input_key, label_key), "roles": roles})


def _class_names(label_feature):
  """``ClassLabel.names`` (``"0"``.. ``"N-1"`` when the dataset names no classes), or None."""
  try:
    names = tuple(str(n) for n in label_feature.names)
  except Exception:  # pylint: disable=broad-except
    return None
  return names if len(names) == int(label_feature.num_classes) else None


@contextlib.contextmanager
def _quiet_absl():
  """Raises absl's Python logger to ERROR inside the block."""
  logger = logging.getLogger("absl")
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


def _prepare(tfds, builder, quiet: bool) -> None:
  """Runs ``download_and_prepare``; the embedded dataset is prepared silently (about 1 s)."""
  from models import compat  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  if not quiet:
    builder.download_and_prepare()
    return
  with _quiet_absl(), open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), \
      contextlib.redirect_stderr(devnull):
    tfds.disable_progress_bar()
    try:
      builder.download_and_prepare()
    finally:
      tfds.enable_progress_bar()
  print("[data] prepared %s in %s (first use)" % (builder.name, builder.data_dir))


TFDS = Tfds()
