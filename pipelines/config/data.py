"""Where the data comes from and how it is split and normalised. Imports no TensorFlow."""

import dataclasses
import os
from typing import Optional, Tuple

from pipelines.config.base import SEED_RANGE, is_seed
from pipelines.config.errors import ConfigError

DEFAULT_DATASET = "digits"
NPZ_PREFIX = "npz:"
CSV_PREFIX = "csv:"
IMAGES_PREFIX = "images:"
TFRECORD_PREFIX = "tfrecord:"
SYNTHETIC_REGRESSION = "synthetic_regression"
NORMALIZATIONS = ("auto", "none", "standardize", "maxabs")
TASKS = ("classification", "regression")
REGRESSION_LOSSES = ("mse", "mae")
SPLIT_ROLES = ("train", "validation", "test")
CACHE_MODES = ("auto", "memory", "disk", "none")  # pipelines/data/caching.py


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the data comes from and how it is split and normalised.

  Attributes:
    dataset: ``digits`` (embedded default), a TFDS name such as ``mnist`` or
      ``cifar10`` (optionally ``name/config:version``), ``npz:/path/file.npz``,
      ``images:/path/folder``, ``tfrecord:/path/folder``,
      ``csv:/path/file.csv`` (numeric columns, one of them ``target_column``) or
      ``synthetic_regression[:n_samples=...,n_features=...,n_informative=...,noise=...,seed=...]``
      (scikit-learn's ``make_regression``, reimplemented in numpy).
    data_dir: TFDS data directory (``None``: TFDS' default, ``~/tensorflow_datasets``).
    validation_fraction: share of train held out for validation when the source
      has no validation split; in (0, 1).
    seed: seeds the validation carve-out, the training shuffle and initialisation.
    normalization: ``auto`` (uint8 -> [0, 1]; CSV features standardized; other
      inputs as they are), ``none``, ``standardize`` (per-channel / per-feature
      mean and std fitted on train) or ``maxabs`` (each feature divided by its
      largest absolute value on train).
    image_size: ``(height, width)`` to resize images to, required for TFDS
      datasets whose images vary in size; ``None`` keeps the stored size.
    num_classes: for ``.npz`` sources, the number of classes (``None``: max label + 1).
    train_examples: use only the first N training examples (0: all); for smoke runs.
    cache: ``False`` (``--nocache``, ``--cache=none``): no example cache at all; ``True``:
      cache as ``cache_mode`` says.
    cache_mode: ``auto`` (memory when the decoded splits fit ``cache_budget_mb``, else a file
      cache under the run directory), ``memory``, ``disk`` or ``none``
      (:mod:`pipelines.data.caching`). Kept apart from ``cache`` so that the fingerprints of runs
      made before the modes existed do not change; how examples are cached never changes them,
      so it is no part of any fingerprint (``--cache=disk`` on a finished run reruns nothing).
    cache_budget_mb: the memory budget of ``auto`` in MiB (0: ``min(2 GiB, RAM / 4)``); it also
      bounds the training shuffle buffer (an eighth of it), so it is part of the fingerprint
      when set.
    task: ``classification`` (integer labels, logits out) or ``regression``
      (real-valued targets, one output per target).
    regression_loss: ``mse`` or ``mae``: the loss every stage trains on and
      early-stops by for ``regression`` (both are reported).
    target_column: the CSV column holding the label or target.
    test_fraction: share of a single-table source (``csv:``,
      ``synthetic_regression``) held out as the test split (seeded by ``seed``).
    splits: ``(("train", spec), ("validation", spec), ("test", spec))``: which TFDS split (with
      TFDS' slicing, e.g. ``train[:95%]``) plays each role, for datasets whose test split has
      no labels (``imagenet2012``: test=validation) or that need another layout; ``()``: train
      and test by name, validation if the dataset has one (else carved from train).
  """

  dataset: str = DEFAULT_DATASET
  data_dir: Optional[str] = None
  validation_fraction: float = 0.1
  seed: int = 0
  normalization: str = "auto"
  image_size: Optional[Tuple[int, int]] = None
  num_classes: Optional[int] = None
  train_examples: int = 0
  cache: bool = True
  cache_mode: str = "auto"
  cache_budget_mb: int = 0
  task: str = "classification"
  regression_loss: str = "mse"
  target_column: Optional[str] = None
  test_fraction: float = 0.2
  splits: Tuple[Tuple[str, str], ...] = ()
  tfrecord_image_key: str = "image/encoded"
  tfrecord_label_key: str = "image/class/label"
  tfrecord_features_key: str = "features"

  LATER_FIELDS = ("task", "regression_loss", "target_column", "test_fraction", "splits",
                  "tfrecord_image_key", "tfrecord_label_key",
                  "tfrecord_features_key", "cache_budget_mb")  # see resolved()
  RUNTIME_FIELDS = ("cache_mode",)  # examples are the same however they are cached

  def absolute_paths(self) -> dict:
    """``data_dir`` and the path inside ``dataset`` (``npz:``, ``csv:``, ``images:``,
    ``tfrecord:``) made absolute, for :func:`resolved` (fingerprints and manifests)."""
    out = {}
    if self.data_dir:
      out["data_dir"] = os.path.abspath(self.data_dir)
    for prefix in (NPZ_PREFIX, CSV_PREFIX, IMAGES_PREFIX, TFRECORD_PREFIX):
      if self.dataset.startswith(prefix):
        out["dataset"] = prefix + os.path.abspath(self.dataset[len(prefix):])
    return out

  @property
  def npz_path(self) -> Optional[str]:
    return self.dataset[len(NPZ_PREFIX):] if self.dataset.startswith(NPZ_PREFIX) else None

  @property
  def csv_path(self) -> Optional[str]:
    return self.dataset[len(CSV_PREFIX):] if self.dataset.startswith(CSV_PREFIX) else None

  @property
  def images_path(self) -> Optional[str]:
    return self.dataset[len(IMAGES_PREFIX):] if self.dataset.startswith(IMAGES_PREFIX) else None

  @property
  def tfrecord_path(self) -> Optional[str]:
    return (self.dataset[len(TFRECORD_PREFIX):] if self.dataset.startswith(TFRECORD_PREFIX)
            else None)

  @property
  def cache_policy(self) -> str:
    """The cache mode in force: ``none`` when ``cache`` is off, else ``cache_mode``."""
    return self.cache_mode if self.cache else "none"

  @property
  def is_synthetic(self) -> bool:
    return self.dataset.split(":", 1)[0] == SYNTHETIC_REGRESSION

  @property
  def regression(self) -> bool:
    return self.task == "regression"

  def validate(self) -> None:
    """Raises ConfigError for values that can be judged without touching data."""
    if not self.dataset:
      raise ConfigError("--dataset is empty; use digits, a TFDS name, npz:/path/file.npz, "
                        "csv:/path/file.csv, images:/path/folder, tfrecord:/path/folder or "
                        "synthetic_regression")
    if self.npz_path == "":
      raise ConfigError("--dataset=npz: needs a path, e.g. npz:/data/my_data.npz")
    if self.csv_path == "":
      raise ConfigError("--dataset=csv: needs a path, e.g. csv:/data/my_data.csv")
    if self.tfrecord_path == "":
      raise ConfigError("--dataset=tfrecord: needs a folder, e.g. tfrecord:/data/records (train*, "
                        "test* and optionally validation* files)")
    if self.images_path == "":
      raise ConfigError("--dataset=images: needs a folder, e.g. images:/data/photos (class folders "
                        "inside, or train/ and test/ with class folders)")
    if not is_seed(self.seed):
      raise ConfigError("--seed=%s must be in %s" % (self.seed, SEED_RANGE))
    if self.task not in TASKS:
      raise ConfigError("--task=%s is not one of %s" % (self.task, ", ".join(TASKS)))
    if self.regression_loss not in REGRESSION_LOSSES:
      raise ConfigError("--regression_loss=%s is not one of %s" % (
          self.regression_loss, ", ".join(REGRESSION_LOSSES)))
    if self.csv_path is not None and not self.target_column:
      raise ConfigError("--dataset=csv:%s needs --target_column=<name of the label/target "
                        "column>" % self.csv_path)
    if self.target_column and self.csv_path is None:
      raise ConfigError("--target_column is for --dataset=csv:...; %s has its own labels" % (
          self.dataset,))
    single_table = self.csv_path is not None or self.is_synthetic or self.images_path is not None
    if not 0.0 < self.test_fraction < 1.0:
      raise ConfigError("--test_fraction=%s must be in (0, 1)" % self.test_fraction)
    if self.test_fraction != 0.2 and not single_table:
      raise ConfigError("--test_fraction is for csv:, images: (one folder of classes) and "
                        "synthetic_regression datasets; %s has its own test split" % self.dataset)
    if self.is_synthetic and not self.regression:
      raise ConfigError("--dataset=%s is a regression dataset; pass --task=regression" % (
          self.dataset,))
    tabular = single_table or self.npz_path is not None or self.tfrecord_path is not None
    if self.normalization == "maxabs" and not tabular:
      raise ConfigError("--normalization=maxabs is for arrays (npz:, csv:, synthetic_regression); "
                        "use standardize for --dataset=%s" % self.dataset)
    if self.regression and not tabular:
      raise ConfigError("--task=regression needs tabular data: npz:/path/file.npz, "
                        "csv:/path/file.csv or synthetic_regression; --dataset=%s is none of "
                        "them (TFDS datasets are read as classification)" % self.dataset)
    if self.regression and self.num_classes is not None:
      raise ConfigError("--num_classes is for classification; --task=regression has one output "
                        "per target")
    if not 0.0 < self.validation_fraction < 1.0:
      raise ConfigError("--validation_fraction=%s must be in (0, 1)" % self.validation_fraction)
    if self.normalization not in NORMALIZATIONS:
      raise ConfigError("--normalization=%s is not one of %s" % (
          self.normalization, ", ".join(NORMALIZATIONS)))
    if self.image_size is not None and (len(self.image_size) != 2 or min(self.image_size) < 1):
      raise ConfigError("--image_size=%s must be two positive integers, e.g. 32,32" % (
          ",".join(map(str, self.image_size)),))
    if self.num_classes is not None and self.num_classes < 2:
      raise ConfigError("--num_classes=%s must be at least 2" % self.num_classes)
    if self.splits:
      roles = [role for role, _ in self.splits]
      unknown = [r for r in roles if r not in SPLIT_ROLES]
      if unknown or len(set(roles)) != len(roles) or not {"train", "test"} <= set(roles):
        raise ConfigError("--splits=%s must name train and test (and optionally validation) "
                          "once each, as role=split, e.g. train=train,validation=validation,"
                          "test=validation" % ",".join("%s=%s" % kv for kv in self.splits))
      if (self.npz_path is not None or self.csv_path is not None or self.is_synthetic or
          self.images_path is not None or self.tfrecord_path is not None):
        raise ConfigError("--splits is for TFDS datasets; --dataset=%s has its own splits" % (
            self.dataset,))
    if self.cache_mode not in CACHE_MODES:
      raise ConfigError("--cache=%s is not one of %s" % (self.cache_mode, ", ".join(CACHE_MODES)))
    if self.cache_budget_mb < 0:
      raise ConfigError("--cache_budget_mb=%s must be >= 0 (0: min(2 GiB, RAM / 4))" % (
          self.cache_budget_mb,))
    if self.train_examples < 0:
      raise ConfigError("--train_examples=%s must be >= 0 (0 means all)" % self.train_examples)

  def source_identity(self) -> dict:
    """What identifies the data on disk, for fingerprints (a changed file reruns stages)."""
    for kind, value in (("npz", self.npz_path), ("csv", self.csv_path)):
      if value is None:
        continue
      path = os.path.abspath(value)
      try:
        st = os.stat(path)
        return {kind: path, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
      except OSError:
        return {kind: path, "missing": True}
    if self.is_synthetic:
      return {"synthetic": self.dataset}
    folder = self.images_path if self.images_path is not None else self.tfrecord_path
    if folder is not None:  # the folder: how many files, their bytes, the latest change
      count = size = latest = 0
      for base, _, names in os.walk(folder):
        for name in names:
          try:
            st = os.stat(os.path.join(base, name))
          except OSError:
            continue
          count, size, latest = count + 1, size + st.st_size, max(latest, st.st_mtime_ns)
      return {self.dataset.split(":", 1)[0]: os.path.abspath(folder), "files": count,
              "bytes": size, "mtime_ns": latest}
    return {"tfds": self.dataset,
            "data_dir": os.path.abspath(self.data_dir) if self.data_dir else None}
