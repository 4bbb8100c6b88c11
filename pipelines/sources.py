"""Resolving and checking a data source before any work. Imports no TensorFlow.

:func:`resolve` turns a :class:`DataConfig` into a :class:`Source`: a TFDS
builder that exists, holds image-classification data and is prepared (the
embedded ``digits`` is prepared on first use, offline), or the arrays of a
user ``.npz`` that passed every check (keys, shapes, dtypes, label range,
NaN/inf). Every problem is a one-line :class:`ConfigError` naming the flag or
file. TFDS imports TensorFlow lazily, so unknown names and unprepared datasets
are refused in about a second.
"""

import dataclasses
import difflib
import os
from typing import Any, Optional, Tuple

import numpy as np

from pipelines.configs import DataConfig
from pipelines.errors import ConfigError


@dataclasses.dataclass
class Source:
  """A checked data source."""

  kind: str  # "tfds", "npz", "csv" or "synthetic"
  input_shape: Tuple[int, ...]
  num_classes: int
  input_dtype: np.dtype
  builder: Any = None  # tfds.core.DatasetBuilder, for kind == "tfds"
  input_key: Optional[str] = None
  label_key: Optional[str] = None
  splits: Tuple[str, ...] = ()
  arrays: Optional[dict] = None  # for the array sources (npz, csv, synthetic)


_LAST: dict = {}


def resolve(config: DataConfig) -> Source:
  """Checks ``config``'s source and returns it; the last result is memoised."""
  config.validate()
  key = (config.dataset, config.data_dir, config.num_classes, config.image_size, config.task,
         config.target_column, config.test_fraction, config.seed if config.is_synthetic or
         config.csv_path else None, repr(config.source_identity()))
  if _LAST.get("key") == key:
    return _LAST["source"]
  if config.npz_path is not None:
    source = _resolve_npz(config)
  elif config.csv_path is not None:
    source = _resolve_csv(config)
  elif config.is_synthetic:
    source = _resolve_synthetic(config)
  else:
    source = _resolve_tfds(config)
  _LAST.clear()
  _LAST.update(key=key, source=source)
  return source


def check_augment(config: DataConfig, augment: str, flag: str) -> None:
  """Refuses image augmentation for data that is not images."""
  if augment != "none":
    shape = resolve(config).input_shape
    if len(shape) != 3:
      raise ConfigError("%s=%s needs images [H, W, C]; --dataset=%s has inputs of shape %s" % (
          flag, augment, config.dataset, shape))


def carve_size(n: int, fraction: float) -> int:
  """How many of ``n`` training examples :func:`carve_indices` holds out."""
  if n < 2:
    raise ConfigError("cannot carve a validation split from %d training example(s)" % n)
  return min(n - 1, max(1, int(round(n * fraction))))


def split_sizes(config: DataConfig) -> Optional[dict]:
  """Examples per split as :func:`pipelines.data.load` will give them, without TensorFlow.

  ``None`` when the source records no counts (e.g. under ``tfds.testing.mock_data``).
  """
  source = resolve(config)
  if source.arrays is not None:
    a = source.arrays
    n_train, n_test = len(a["x_train"]), len(a["x_test"])
    n_val = len(a["x_val"]) if "x_val" in a else None
  else:
    splits = source.builder.info.splits
    counts = {k: int(splits[k].num_examples) for k in source.splits if k in splits}
    if not counts.get("train") or not counts.get("test"):
      return None
    n_train, n_test, n_val = counts["train"], counts["test"], counts.get("validation")
  if n_val is None:
    n_val = carve_size(n_train, config.validation_fraction)
    n_train -= n_val
  if config.train_examples:
    n_train = min(n_train, config.train_examples)
  return {"train": n_train, "validation": n_val, "test": n_test}


def carve_indices(n: int, fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
  """Deterministic seeded split of ``range(n)``: returns sorted ``(train_idx, val_idx)``.

  The validation part has ``round(n * fraction)`` examples (at least 1 and at
  most ``n - 1``). The same ``(n, fraction, seed)`` always gives the same split.
  """
  n_val = carve_size(n, fraction)
  perm = np.random.default_rng(seed).permutation(n)
  return np.sort(perm[n_val:]), np.sort(perm[:n_val])


# ----------------------------------------------------------------------------
# .npz files.


def _resolve_npz(config: DataConfig) -> Source:
  arrays = load_npz_arrays(config.npz_path, config.num_classes, config.task)
  if config.image_size is not None:
    raise ConfigError("--image_size is for TFDS image datasets; resize the arrays of %s instead"
                      % config.npz_path)
  return _array_source("npz", arrays)


def _array_source(kind: str, arrays: dict) -> Source:
  x = arrays["x_train"]
  return Source(kind=kind, input_shape=tuple(int(d) for d in x.shape[1:]),
                num_classes=int(arrays["num_classes"]), input_dtype=x.dtype, arrays=arrays)


def load_npz_arrays(path: str, num_classes: Optional[int] = None,
                    task: str = "classification") -> dict:
  """Reads and checks a user ``.npz``; returns a dict of arrays plus ``num_classes``.

  Required keys: ``x_train``, ``y_train``, ``x_test``, ``y_test``; optional
  ``x_val`` and ``y_val`` (both or neither). ``x`` arrays are numeric with the
  same per-example shape (``[N, H, W]`` is read as greyscale ``[N, H, W, 1]``);
  ``y`` arrays hold one integer class id in ``[0, num_classes)`` per example,
  or for ``task="regression"`` finite real targets, ``[N]`` or ``[N, targets]``
  (``num_classes`` is then the number of targets: the model's outputs).
  """
  flag = "--dataset=npz:%s" % path
  if not os.path.exists(path):
    raise ConfigError("%s: no such file" % flag)
  try:
    with np.load(path, allow_pickle=False) as npz:
      arrays = {k: npz[k] for k in npz.files}
  except Exception as e:  # zipfile.BadZipFile, ValueError (pickled objects), OSError...
    raise ConfigError("%s: not a readable .npz file (%s)" % (flag, _first_line(e))) from None

  required = ["x_train", "y_train", "x_test", "y_test"]
  missing = [k for k in required if k not in arrays]
  if missing:
    raise ConfigError("%s: missing key(s) %s (found: %s)" % (
        flag, ", ".join(missing), ", ".join(sorted(arrays)) or "none"))
  if ("x_val" in arrays) != ("y_val" in arrays):
    raise ConfigError("%s: x_val and y_val must be given together" % flag)
  return check_arrays(flag, arrays, num_classes, task)


def check_arrays(flag: str, arrays: dict, num_classes: Optional[int] = None,
                 task: str = "classification") -> dict:
  """Checks the ``x_<split>`` / ``y_<split>`` arrays of a source (see :func:`load_npz_arrays`).

  Returns the checked arrays (labels as int32, regression targets as float32
  ``[N, targets]``) plus ``num_classes``; raises a ConfigError starting with ``flag``.
  """
  regression = task == "regression"
  splits = ["train", "test"] + (["val"] if "x_val" in arrays else [])
  feature_shape = target_shape = None
  out = {}
  for s in splits:
    x, y = arrays["x_" + s], arrays["y_" + s]
    if x.dtype.kind not in "biuf":
      raise ConfigError("%s: x_%s has dtype %s; expected numbers" % (flag, s, x.dtype))
    if x.ndim < 2:
      raise ConfigError("%s: x_%s has shape %s; expected [examples, features...]" % (
          flag, s, x.shape))
    if len(x) == 0:
      raise ConfigError("%s: x_%s is empty" % (flag, s))
    if regression:
      if y.ndim == 1:
        y = y[:, None]
      if y.ndim != 2:
        raise ConfigError("%s: y_%s has shape %s; expected one target [N] or several [N, "
                          "targets] per example" % (flag, s, y.shape))
    elif y.ndim == 2 and y.shape[1] == 1:
      y = y[:, 0]
    if not regression and y.ndim != 1:
      raise ConfigError("%s: y_%s has shape %s; expected one class id per example" % (
          flag, s, y.shape))
    if len(y) != len(x):
      raise ConfigError("%s: x_%s has %d examples but y_%s has %d" % (flag, s, len(x), s, len(y)))
    if x.ndim == 3:  # [N, H, W] greyscale images -> [N, H, W, 1]
      x = x[..., None]
    if feature_shape is None:
      feature_shape = x.shape[1:]
    elif x.shape[1:] != feature_shape:
      raise ConfigError("%s: x_%s examples have shape %s but x_train's have %s" % (
          flag, s, x.shape[1:], feature_shape))
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
      raise ConfigError("%s: x_%s contains NaN or infinite values" % (flag, s))
    if regression:
      if y.dtype.kind not in "biuf":
        raise ConfigError("%s: y_%s has dtype %s; expected real-valued targets" % (
            flag, s, y.dtype))
      if not np.all(np.isfinite(y)):
        raise ConfigError("%s: y_%s contains NaN or infinite targets" % (flag, s))
      if target_shape is None:
        target_shape = y.shape[1:]
      elif y.shape[1:] != target_shape:
        raise ConfigError("%s: y_%s has %d targets per example but y_train has %d" % (
            flag, s, y.shape[1], target_shape[0]))
      out["x_" + s], out["y_" + s] = x, y.astype(np.float32)
      continue
    if y.dtype.kind not in "biuf":
      raise ConfigError("%s: y_%s has dtype %s; expected integer class ids" % (flag, s, y.dtype))
    if y.dtype.kind == "f" and not (np.all(np.isfinite(y)) and np.all(y == np.round(y))):
      raise ConfigError("%s: y_%s holds non-integer values; expected class ids (for real-valued "
                        "targets pass --task=regression)" % (flag, s))
    if y.min() < 0:
      raise ConfigError("%s: y_%s has label %d; labels must be >= 0" % (flag, s, int(y.min())))
    out["x_" + s], out["y_" + s] = x, y.astype(np.int32)

  if regression:
    out["num_classes"] = int(target_shape[0])
    return out
  max_label = max(int(out["y_" + s].max()) for s in splits)
  if num_classes is None:
    num_classes = max(2, max_label + 1)
  elif max_label >= num_classes:
    worst = max(splits, key=lambda s: int(out["y_" + s].max()))
    raise ConfigError("%s: y_%s has label %d, out of range for --num_classes=%d" % (
        flag, worst, max_label, num_classes))
  out["num_classes"] = num_classes
  return out


def _split_table(x: np.ndarray, y: np.ndarray, config: DataConfig, flag: str) -> dict:
  """Train / test arrays of a single table: ``test_fraction`` held out by a permutation seeded
  with ``--seed`` (validation is carved from train later, as for any source)."""
  if len(x) < 3:
    raise ConfigError("%s: %d rows; need at least 3 (train, validation, test)" % (flag, len(x)))
  train_idx, test_idx = carve_indices(len(x), config.test_fraction, config.seed)
  return {"x_train": x[train_idx], "y_train": y[train_idx],
          "x_test": x[test_idx], "y_test": y[test_idx]}


# ----------------------------------------------------------------------------
# CSV files.


def _resolve_csv(config: DataConfig) -> Source:
  flag = "--dataset=csv:%s" % config.csv_path
  if config.image_size is not None:
    raise ConfigError("--image_size is for TFDS image datasets, not %s" % flag)
  x, y = load_csv(config.csv_path, config.target_column)
  arrays = check_arrays(flag, _split_table(x, y, config, flag), config.num_classes, config.task)
  return _array_source("csv", arrays)


def load_csv(path: str, target_column: str) -> Tuple[np.ndarray, np.ndarray]:
  """Reads a CSV with a header row and numeric cells: ``(features float32 [N, F], target [N])``.

  Every column but ``target_column`` is a feature. Empty or non-numeric
  cells, ragged rows and a missing target column are refused with a one-line
  ConfigError naming the file, the row and the column.
  """
  import csv  # pylint: disable=g-import-not-at-top
  flag = "--dataset=csv:%s" % path
  if not os.path.isfile(path):
    raise ConfigError("%s: no such file" % flag)
  try:
    with open(path, newline="", encoding="utf-8-sig") as f:
      rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise ConfigError("%s: not a readable CSV file (%s)" % (flag, _first_line(e))) from None
  if not rows:
    raise ConfigError("%s: the file is empty" % flag)
  header = [c.strip() for c in rows[0]]
  if target_column not in header:
    raise ConfigError("%s: no column %r (--target_column); the header has: %s" % (
        flag, target_column, ", ".join(header)))
  if len(set(header)) != len(header):
    raise ConfigError("%s: the header names a column twice" % flag)
  if len(header) < 2:
    raise ConfigError("%s: needs at least one feature column besides %r" % (flag, target_column))
  if len(rows) < 2:
    raise ConfigError("%s: has a header but no data rows" % flag)
  values = np.empty((len(rows) - 1, len(header)), dtype=np.float64)
  for i, row in enumerate(rows[1:]):
    line = i + 2  # 1-based, after the header
    if len(row) != len(header):
      raise ConfigError("%s: row %d has %d cells but the header has %d columns" % (
          flag, line, len(row), len(header)))
    for j, cell in enumerate(row):
      try:
        values[i, j] = float(cell)
      except ValueError:
        raise ConfigError("%s: row %d, column %r: %r is not a number (kdprune reads numeric "
                          "columns only; encode categories as numbers first)" % (
                              flag, line, header[j], cell.strip())) from None
  bad = ~np.isfinite(values)
  if bad.any():
    i, j = np.argwhere(bad)[0]
    raise ConfigError("%s: row %d, column %r is NaN or infinite" % (flag, i + 2, header[j]))
  t = header.index(target_column)
  features = np.delete(values, t, axis=1).astype(np.float32)
  return features, values[:, t]


# ----------------------------------------------------------------------------
# The synthetic regression dataset.

SYNTHETIC_DEFAULTS = {"n_samples": 10000, "n_features": 1000, "n_informative": 500,
                      "noise": 3.0, "seed": 0}


def synthetic_params(dataset: str) -> dict:
  """``synthetic_regression:n_samples=2000,noise=1`` -> the full parameter dict (defaults: the
  seed experiment's 10,000 samples, 1,000 features, 500 informative, noise 3, seed 0)."""
  params = dict(SYNTHETIC_DEFAULTS)
  _, _, spec = dataset.partition(":")
  for item in filter(None, (p.strip() for p in spec.split(","))):
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or key not in params:
      raise ConfigError("--dataset=%s: %r must be one of %s as name=value" % (
          dataset, item, ", ".join("%s=" % k for k in SYNTHETIC_DEFAULTS)))
    try:
      params[key] = float(value) if key == "noise" else int(value)
    except ValueError:
      raise ConfigError("--dataset=%s: %s=%s is not a number" % (dataset, key, value)) from None
  if params["n_samples"] < 3 or params["n_features"] < 1:
    raise ConfigError("--dataset=%s: needs n_samples >= 3 and n_features >= 1" % dataset)
  if not 0 <= params["n_informative"] <= params["n_features"]:
    raise ConfigError("--dataset=%s: n_informative must be in [0, n_features]" % dataset)
  if params["noise"] < 0:
    raise ConfigError("--dataset=%s: noise must be >= 0" % dataset)
  return params


def make_regression(n_samples: int, n_features: int, n_informative: int, noise: float,
                    seed: int) -> Tuple[np.ndarray, np.ndarray]:
  """scikit-learn's ``make_regression`` (well-conditioned inputs, one target, bias 0, shuffled),
  reimplemented in numpy with the same random stream: for the same ``seed`` (its
  ``random_state``) it returns the same arrays.

  ``X`` is standard normal; ``y = X @ w + noise * N(0, 1)`` with ``w`` zero
  except ``n_informative`` coefficients drawn from ``U(0, 100)``; then the rows
  and the feature columns are shuffled.
  """
  rng = np.random.RandomState(seed)
  x = rng.standard_normal(size=(n_samples, n_features))
  truth = np.zeros((n_features, 1))
  truth[:n_informative, :] = 100 * rng.uniform(size=(n_informative, 1))
  y = x @ truth
  if noise > 0.0:
    y = y + rng.normal(scale=noise, size=y.shape)
  rows = np.arange(n_samples)
  rng.shuffle(rows)
  x, y = x[rows], y[rows]
  columns = np.arange(n_features)
  rng.shuffle(columns)
  x[:, :] = x[:, columns]
  return x, np.squeeze(y, axis=1)


def _resolve_synthetic(config: DataConfig) -> Source:
  """The seed experiment's data: ``make_regression``, normalised as the article does it
  (``x / abs(x).max(axis=0)``, ``y / abs(y).max()``, over all samples), then a test split."""
  if config.image_size is not None:
    raise ConfigError("--image_size is for TFDS image datasets, not --dataset=%s" % config.dataset)
  p = synthetic_params(config.dataset)
  x, y = make_regression(p["n_samples"], p["n_features"], p["n_informative"], p["noise"],
                         p["seed"])
  x = x / np.where(np.abs(x).max(axis=0) > 0, np.abs(x).max(axis=0), 1.0)
  y = y / max(float(np.abs(y).max()), 1e-12)
  flag = "--dataset=%s" % config.dataset
  arrays = _split_table(x.astype(np.float32), y.astype(np.float32), config, flag)
  return _array_source("synthetic", check_arrays(flag, arrays, task="regression"))


# ----------------------------------------------------------------------------
# TFDS.


def tfds_module():
  """``tensorflow_datasets`` with kdprune's own builders (``digits``) registered."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  import pipelines.datasets  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  return tfds


def _resolve_tfds(config: DataConfig) -> Source:
  tfds = tfds_module()
  flag = "--dataset=%s" % config.dataset
  try:
    builder = tfds.builder(config.dataset, data_dir=config.data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    # The error lists the registered names ("\t- mnist"); tfds.list_builders()
    # would import TensorFlow and probe GCS over the network.
    known = [l.strip()[2:] for l in str(e).splitlines() if l.strip().startswith("- ")]
    base = config.dataset.split("/")[0].split(":")[0]
    close = difflib.get_close_matches(base, known + ["digits", "synthetic_regression"], n=3)
    hint = (" (did you mean %s?)" % " or ".join(close)) if close else ""
    raise ConfigError("%s: no such TFDS dataset%s; use digits, a TFDS name, npz:/path/file.npz, "
                      "csv:/path/file.csv or synthetic_regression" % (flag, hint)) from None
  except Exception as e:  # bad version/config strings and the like
    raise ConfigError("%s: %s" % (flag, _first_line(e))) from None

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
                              flag, where, _first_line(e))) from None
    info = builder.info

  splits = tuple(sorted(info.splits.keys()))
  if not splits:
    # No recorded split metadata (e.g. under tfds.testing.mock_data): assume the
    # standard names; reading a missing one still fails with TFDS' own message.
    splits = ("test", "train")
  for needed in ("train", "test"):
    if needed not in splits:
      raise ConfigError("%s: has no %r split (it has: %s)" % (flag, needed, ", ".join(splits)))
  return Source(kind="tfds", input_shape=tuple(int(d) for d in shape),
                num_classes=int(label_feature.num_classes),
                input_dtype=np.dtype(input_feature.np_dtype), builder=builder,
                input_key=input_key, label_key=label_key, splits=splits)


class _quiet_absl:  # pylint: disable=invalid-name
  """Raises absl's Python logger to ERROR inside the block."""

  def __enter__(self):
    import logging  # pylint: disable=g-import-not-at-top
    self._logger = logging.getLogger("absl")
    self._level = self._logger.level
    self._logger.setLevel(logging.ERROR)

  def __exit__(self, *exc):
    self._logger.setLevel(self._level)


def _prepare(tfds, builder, quiet: bool) -> None:
  """Runs ``download_and_prepare``; the embedded dataset is prepared silently (about 1 s)."""
  import contextlib  # pylint: disable=g-import-not-at-top
  from pipelines import compat  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
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


def _first_line(e: Exception) -> str:
  text = str(e).strip()
  return text.splitlines()[0] if text else type(e).__name__
