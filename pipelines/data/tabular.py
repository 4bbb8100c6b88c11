"""Tables: CSV files and the seed experiment's synthetic regression data, read as arrays
(:class:`pipelines.data.arrays.Arrays`). Imports no TensorFlow."""

import csv
import os
from typing import Tuple

import numpy as np

from pipelines.config.data import CSV_PREFIX, SYNTHETIC_REGRESSION, DataConfig
from pipelines.config.errors import ConfigError
from pipelines.data.arrays import Arrays, check_arrays, split_table
from pipelines.data.base import Source, carved_test, first_line


class Csv(Arrays):
  """``--dataset=csv:FILE``: numeric columns, one of them ``--target_column``; the test split is
  held out with ``--seed``, and ``--normalization=auto`` standardizes the columns."""

  name, prefix, usage = "csv", CSV_PREFIX, "csv:/path/file.csv"
  seeded, auto_normalization = True, "standardize"  # tabular columns come in arbitrary units

  def resolve(self, config: DataConfig) -> Source:
    flag = "--dataset=csv:%s" % config.csv_path
    if config.image_size is not None:
      raise ConfigError("--image_size is for TFDS image datasets, not %s" % flag)
    x, y = load_csv(config.csv_path, config.target_column)
    arrays = check_arrays(flag, split_table(x, y, config, flag), config.num_classes, config.task)
    source = self.source(arrays)
    source.feature_names = tuple(csv_feature_names(config.csv_path, config.target_column))
    source.test_source = carved_test("the CSV file", config)
    return source


class Synthetic(Arrays):
  """``--dataset=synthetic_regression[:name=value,...]``: the seed experiment's data:
  ``make_regression``, normalised as the article does it (``x / abs(x).max(axis=0)``,
  ``y / abs(y).max()``, over all samples), then a test split."""

  name, usage, seeded = "synthetic", SYNTHETIC_REGRESSION, True

  def claims(self, dataset: str) -> bool:
    return dataset.split(":", 1)[0] == SYNTHETIC_REGRESSION

  def resolve(self, config: DataConfig) -> Source:
    if config.image_size is not None:
      raise ConfigError("--image_size is for TFDS image datasets, not --dataset=%s" %
                        config.dataset)
    p = synthetic_params(config.dataset)
    x, y = make_regression(p["n_samples"], p["n_features"], p["n_informative"], p["noise"],
                           p["seed"])
    x = x / np.where(np.abs(x).max(axis=0) > 0, np.abs(x).max(axis=0), 1.0)
    y = y / max(float(np.abs(y).max()), 1e-12)
    flag = "--dataset=%s" % config.dataset
    arrays = split_table(x.astype(np.float32), y.astype(np.float32), config, flag)
    source = self.source(check_arrays(flag, arrays, task="regression"))
    source.test_source = carved_test("the generated table", config)
    return source


def csv_header(path: str) -> list:
  """The column names of a CSV's header row (stripped), as :func:`load_csv` reads them."""
  with open(path, newline="", encoding="utf-8-sig") as f:
    for row in csv.reader(f):
      if any(c.strip() for c in row):
        return [c.strip() for c in row]
  return []


def csv_feature_names(path: str, target_column: str) -> list:
  """The feature columns of a CSV in the order the model sees them: every column but the target."""
  return [c for c in csv_header(path) if c != target_column]


def load_csv(path: str, target_column: str) -> Tuple[np.ndarray, np.ndarray]:
  """Reads a CSV with a header row and numeric cells: ``(features float32 [N, F], target [N])``.

  Every column but ``target_column`` is a feature. Empty or non-numeric
  cells, ragged rows and a missing target column are refused with a one-line
  ConfigError naming the file, the row and the column.
  """
  flag = "--dataset=csv:%s" % path
  if not os.path.isfile(path):
    raise ConfigError("%s: no such file" % flag)
  try:
    with open(path, newline="", encoding="utf-8-sig") as f:
      rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise ConfigError("%s: not a readable CSV file (%s)" % (flag, first_line(e))) from None
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


CSV, SYNTHETIC = Csv(), Synthetic()
